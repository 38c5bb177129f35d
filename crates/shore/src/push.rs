//! `shore push`: an operator's signed command bundle queued for its recipient (one vessel or
//! the fleet). Shore checks it as the vessels will (signature, certificate, grants) before it
//! queues anything; a bundle of course content is kept in parts for per-vessel copies, and a
//! crew list makes the seafarers it names follow their progress to the vessel.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::Queued;
use crate::{ShoreConfig, content, crew};
use wire::envelope::{self, Keyring, Kind, Limits, PublicKey, SecretKey};

/// What `shore push` queued.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The bundle's id.
    pub bundle_id: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its recipient: a vessel id, or `*` for the fleet.
    pub recipient: String,
    /// Its number in the queue.
    pub queue_id: i64,
    /// For a bundle of course content: what shore kept of it for per-vessel copies.
    pub content: Option<content::Kept>,
    /// What following the crew list did (one line per seafarer moved, or why not).
    pub crew: Vec<String>,
}

/// Checks the signed bundle at `bundle` and queues it for its recipient.
pub fn push(cfg: &ShoreConfig, bundle: &Path, now: i64) -> Result<Pushed> {
    let refused =
        |e: &dyn std::fmt::Display| Error::Refused(format!("{}: refused: {e}", bundle.display()));
    let load = |paths: &[PathBuf]| -> Result<Vec<PublicKey>> {
        paths
            .iter()
            .map(|p| PublicKey::load(p).map_err(|e| Error::Config(e.to_string())))
            .collect()
    };
    let listed = Keyring::new(load(&cfg.shore.trusted)?);
    let roots = Keyring::new(load(&cfg.shore.root)?);
    if listed.is_empty() && roots.is_empty() {
        return Err(Error::Config(
            "[shore] trusted and root list no key: shore only queues bundles it can verify".into(),
        ));
    }
    let resolve = |bytes: &[u8]| {
        let base = listed.iter().chain(roots.iter()).cloned().collect();
        envelope::trust::keyring_with_carried(bytes, base, &roots)
    };
    let opened =
        envelope::open_with(bundle, &resolve, &Limits::default()).map_err(|e| refused(&e))?;
    let m = opened.manifest.clone();
    // The vessels apply the same rules; refusing here saves a trip across the link.
    envelope::trust::authorize(&m, &opened.signer.id, &roots, &listed, None, now, 0)
        .map_err(|e| refused(&e))?;
    if m.kind != Kind::Commands {
        return Err(Error::Refused("not a command bundle".into()));
    }
    // Shore numbers the bundles it signs itself (acks, retirements, crew moves) in the
    // stream of its own key; an operator's bundle in that stream would take their numbers.
    if let Some(own) = cfg.shore.signing_key.as_deref() {
        if SecretKey::load(own).is_ok_and(|k| k.id == opened.signer.id) {
            return Err(Error::Refused(format!(
                "{}: refused: it is signed with shore's own key ([shore] signing_key {}), whose sequence numbers shore uses for the bundles it signs itself; sign operator bundles with an operator key ('vessel-sync keygen')",
                bundle.display(),
                own.display()
            )));
        }
    }
    let by_content = m.files.iter().any(|f| f.may_omit);
    let (manifest_bytes, signature) = (opened.manifest_bytes.clone(), opened.signature);
    let bundles_dir = cfg.shore.state_dir.join("bundles");
    let parts = bundles_dir.join(format!(".{}.d.part", m.id));
    if parts.exists() {
        std::fs::remove_dir_all(&parts).map_err(Error::io(&parts))?;
    }
    let lists = crew_lists(&m);
    // A crew list is read from the extracted members only: `args.file` must name one.
    if let Some(f) = lists
        .iter()
        .find(|f| !m.files.iter().any(|e| &e.name == *f))
    {
        return Err(Error::Refused(format!(
            "{}: refused: upsert_users names file {:?}, which is not a member of the bundle",
            bundle.display(),
            base::text::clip(f, 100)
        )));
    }
    let lists_dir = if !lists.is_empty() && !by_content {
        let tmp = cfg.shore.state_dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(Error::io(&tmp))?;
        Some(tempfile::tempdir_in(&tmp).map_err(Error::io(&tmp))?)
    } else {
        None
    };
    // A bundle with course content is kept in parts, for per-vessel copies.
    let extracted = match &lists_dir {
        Some(d) => Some(d.path()),
        None => by_content.then_some(parts.as_path()),
    };
    opened.extract(extracted).map_err(|e| refused(&e))?;
    let members: Vec<crew::Member> = match extracted {
        Some(dir) => lists
            .iter()
            .flat_map(|f| crew::list_members(&dir.join(f)))
            .collect(),
        None => vec![],
    };
    let db = cfg.open()?;
    let name = format!("{}.vsb", m.id);
    let dest = bundles_dir.join(&name);
    let data = std::fs::read(bundle).map_err(Error::io(bundle))?;
    base::fsutil::atomic_write(&dest, &data).map_err(Error::io(&dest))?;
    let q = Queued {
        id: 0,
        recipient: m.recipient.clone(),
        bundle_id: m.id.clone(),
        file: name,
        size: data.len() as u64,
        sha256: hex::encode(Sha256::digest(&data)),
    };
    let kept = if by_content {
        Some(
            content::keep_pushed(cfg, &db, &manifest_bytes, &signature, &m, &parts, now)
                .map_err(Error::Failed)?,
        )
    } else {
        None
    };
    let queue_id = db.enqueue_bundle(&q, now)?;
    if by_content {
        let members: Vec<(String, String, u64)> = m
            .files
            .iter()
            .filter(|f| f.may_omit)
            .map(|f| (f.name.clone(), f.sha256.clone(), f.size))
            .collect();
        db.set_queue_content(queue_id, &members)?;
    }
    let crew = crew::follow_crew_list(cfg, &db, &m.recipient, &members, now);
    Ok(Pushed {
        bundle_id: m.id,
        bytes: data.len() as u64,
        recipient: m.recipient,
        queue_id,
        content: kept,
        crew,
    })
}

/// The crew lists a bundle for one vessel carries (its `upsert_users` files): a crew list may
/// name seafarers who sailed on other vessels (a crew change). A fleet-wide bundle has none.
fn crew_lists(m: &envelope::Manifest) -> Vec<String> {
    if m.recipient == envelope::manifest::FLEET {
        return vec![];
    }
    m.commands
        .iter()
        .filter(|c| c.kind == "upsert_users")
        .filter_map(|c| {
            c.args
                .get("file")
                .and_then(|f| f.as_str())
                .map(String::from)
                .or_else(|| c.files.first().cloned())
        })
        .collect()
}
