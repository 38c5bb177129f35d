//! `shore ingest DIR`: batch files a carrier delivered (file mode), each checked and stored as
//! an HTTPS upload would be, then moved to `done/` or `refused/` (with its reason beside it);
//! a signed `ack` bundle per vessel is written for the carrier to take back.

use std::path::{Path, PathBuf};

use base::clock::Clock;
use wire::SHORE;
use wire::envelope::{self, CommandEntry, Draft, Keyring, Kind, Limits, PublicKey, SecretKey};

use crate::ShoreConfig;
use crate::error::{Error, Result};
use crate::intake::{Intake, Refusal, intake};

/// What became of one delivered file.
#[derive(Debug)]
pub enum FileOutcome {
    /// Stored (or known already) for `vessel`.
    Stored {
        /// The vessel that sent it.
        vessel: String,
        /// What intake did.
        intake: Intake,
    },
    /// Refused, and moved to `refused/` with a `.reason.txt` beside it.
    Refused(Refusal),
}

/// An `ack` bundle written for a carrier to take back.
#[derive(Debug)]
pub struct AckWritten {
    /// The file.
    pub file: PathBuf,
    /// The vessel it is for.
    pub vessel: String,
    /// The batch it acknowledges up to.
    pub acked_seq: u64,
}

/// What `shore ingest` did.
#[derive(Debug, Default)]
pub struct Ingested {
    /// Each delivered file (its name) and what became of it, in name order.
    pub files: Vec<(String, FileOutcome)>,
    /// The ack bundles written.
    pub acks: Vec<AckWritten>,
}

impl Ingested {
    /// How many files were refused.
    pub fn refused(&self) -> usize {
        self.files
            .iter()
            .filter(|(_, o)| matches!(o, FileOutcome::Refused(_)))
            .count()
    }
}

/// Takes the `.vsb` files in `dir`, stores them, and writes an ack bundle per vessel into `out`.
pub fn ingest(cfg: &ShoreConfig, dir: &Path, out: &Path, clock: &dyn Clock) -> Result<Ingested> {
    let key_path = cfg.shore.signing_key.as_ref().ok_or_else(|| {
        Error::Config("[shore] signing_key is required for ingest: it signs the ack bundles".into())
    })?;
    let key = SecretKey::load(key_path).map_err(|e| Error::Config(e.to_string()))?;
    let db = std::sync::Mutex::new(cfg.open()?);
    let store = || {
        db.lock()
            .map_err(|_| Error::Failed("the shore store's lock is poisoned".into()))
    };
    std::fs::create_dir_all(out).map_err(Error::io(out))?;
    let done = dir.join("done");
    let refused = dir.join("refused");
    for d in [&done, &refused] {
        std::fs::create_dir_all(d).map_err(Error::io(d))?;
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "vsb"))
        .collect();
    names.sort();
    let vessels = store()?.vessels()?;
    let mut touched = std::collections::BTreeSet::new();
    let mut report = Ingested::default();
    for path in names {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The sender's key decides; the manifest is read under every active vessel's key.
        let vessel = vessels.iter().filter(|v| v.revoked_at.is_none()).find(|v| {
            PublicKey::parse(&v.pubkey, Path::new("registry"))
                .ok()
                .and_then(|k| envelope::open(&path, &Keyring::new([k]), &Limits::default()).ok())
                .is_some_and(|o| o.manifest.sender == v.id)
        });
        let result = match vessel {
            None => Err(Refusal::UnknownKey(
                "not signed by any registered, active vessel".into(),
            )),
            Some(v) => intake(cfg, &db, v, &path, "file", clock.now()).map(|i| (v.id.clone(), i)),
        };
        match result {
            Ok((vessel, intake)) => {
                touched.insert(vessel.clone());
                base::fsutil::move_file(&path, &base::fsutil::free_name(&done, &name))
                    .map_err(Error::io(&path))?;
                report
                    .files
                    .push((name, FileOutcome::Stored { vessel, intake }));
            }
            Err(r) => {
                let dest = base::fsutil::free_name(&refused, &name);
                base::fsutil::move_file(&path, &dest).map_err(Error::io(&path))?;
                let _ = std::fs::write(
                    dest.with_extension("reason.txt"),
                    format!("{}: {}\n", r.code(), r.message()),
                );
                report.files.push((name, FileOutcome::Refused(r)));
            }
        }
    }
    for vid in touched {
        let db = store()?;
        let v = db
            .vessel(&vid)?
            .ok_or_else(|| Error::Failed(format!("vessel {vid} vanished from the registry")))?;
        let seq = db.next_ack_bundle_seq(&vid)?;
        let mut args = serde_json::Map::new();
        args.insert("acked_seq".into(), v.acked_seq.into());
        let draft = Draft {
            kind: Kind::Commands,
            sender: SHORE.into(),
            recipient: vid.clone(),
            sequence: seq,
            not_before: None,
            expires: None,
            commands: vec![CommandEntry {
                id: String::new(),
                kind: "ack".into(),
                args,
                files: vec![],
            }],
            files: vec![],
            id: None,
        };
        let file = out.join(format!("{vid}-ack-{seq}.vsb"));
        envelope::write_envelope(&draft, &key, clock.now(), &file).map_err(Error::io(&file))?;
        report.acks.push(AckWritten {
            file,
            vessel: vid,
            acked_seq: v.acked_seq,
        });
    }
    Ok(report)
}
