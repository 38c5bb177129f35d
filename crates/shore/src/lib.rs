//! The shore service: receives progress batches, stores them durably and acknowledges them,
//! queues bundles for vessels, and hands progress on (the cloud Moodle, CSV export).
//!
//! - [`store`]: its own SQLite database (vessel registry, batches, records, bundle queue);
//! - [`serve`]: the HTTPS API (`POST /v1/sync`, `GET /v1/bundles/ID` with Range, `GET /v1/health`);
//! - [`content`]: course content kept ashore, per-vessel copies of course bundles, answers to
//!   `need_files`;
//! - [`forward`]: progress into the cloud Moodle; [`course`]: retiring a course fleet-wide;
//!   [`crew`]: a seafarer's progress following them to another vessel;
//! - [`dashboard`]: the fleet page and its JSON behind an operator login;
//! - [`spec`]: the operator's bundle spec (TOML) for `vessel-sync bundle build`;
//! - `config`: `shore.toml` ([`ShoreConfig`]);
//! - `intake`: batch intake shared by HTTPS and file mode ([`intake`]);
//! - `vessels`: the registry's operator commands (`shore vessel add|rekey|revoke`);
//! - `status`: the fleet view ([`fleet_view`]) and `shore status`;
//! - this module: the operator commands `shore push`, `ingest` and `export`.
//!
//! May import: `base`, `wire`, `moodle` (the cloud Moodle's web services). Never `vessel`:
//! shore meets the vessel only in `wire` (batches, with their `command_reports`; bundles).
//!
//! Intake invariants: a batch is verified (the vessel's own key, addressed to shore, sent by the
//! vessel that authenticated, every member's digest) and decoded completely before anything is
//! stored; it is then stored in one transaction (all or nothing), records deduplicated by id; a
//! sequence seen before with other content is refused as a replay; the acknowledgement covers
//! only contiguous sequences.

#![deny(missing_docs)]
mod config;
pub mod content;
pub mod course;
pub mod crew;
pub mod dashboard;
pub mod forward;
mod intake;
pub mod migrate;
pub mod serve;
pub mod spec;
mod status;
pub mod store;
mod vessels;

pub use config::{ShoreConfig, ShoreSettings};
pub use intake::{Intake, Refusal, intake};
pub use status::{Fleet, VesselStatus, fleet_view, status};
pub use vessels::{new_token, vessel_add, vessel_rekey, vessel_revoke};

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use base::clock::{Clock, format_time, parse_time};
use base::exit;
use intake::refuse;
use store::Queued;
use wire::envelope::{self, CommandEntry, Draft, Keyring, Kind, Limits, PublicKey, SecretKey};
use wire::progress::Record;
use wire::progress::record::format_id;

pub use wire::{RECORDS_MEMBER, SHORE};

/// Hex SHA-256 of a file.
pub(crate) fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Hex SHA-256 of a token, as stored in the registry.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// `shore push`: queues a signed bundle for its recipient.
pub fn push(cfg: &ShoreConfig, bundle: &Path, now: i64) -> i32 {
    let run = || -> Result<String, String> {
        let load = |paths: &[PathBuf]| -> Result<Vec<PublicKey>, String> {
            paths
                .iter()
                .map(|p| PublicKey::load(p).map_err(|e| e.to_string()))
                .collect()
        };
        let listed = Keyring::new(load(&cfg.shore.trusted)?);
        let roots = Keyring::new(load(&cfg.shore.root)?);
        if listed.is_empty() && roots.is_empty() {
            return Err(
                "[shore] trusted and root list no key: shore only queues bundles it can verify"
                    .into(),
            );
        }
        let resolve = |bytes: &[u8]| {
            let base = listed.iter().chain(roots.iter()).cloned().collect();
            envelope::trust::keyring_with_carried(bytes, base, &roots)
        };
        let opened = envelope::open_with(bundle, &resolve, &Limits::default())
            .map_err(|e| format!("{}: refused: {e}", bundle.display()))?;
        let m = opened.manifest.clone();
        // The vessels apply the same rules; refusing here saves a trip across the link.
        envelope::trust::authorize(&m, &opened.signer.id, &roots, &listed, None, now, 0)
            .map_err(|e| format!("{}: refused: {e}", bundle.display()))?;
        if m.kind != Kind::Commands {
            return Err("not a command bundle".into());
        }
        // Shore numbers the bundles it signs itself (acks, retirements, crew moves) in the
        // stream of its own key; an operator's bundle in that stream would take their numbers.
        if let Some(own) = cfg.shore.signing_key.as_deref() {
            if SecretKey::load(own).is_ok_and(|k| k.id == opened.signer.id) {
                return Err(format!(
                    "{}: refused: it is signed with shore's own key ([shore] signing_key {}), whose sequence numbers shore uses for the bundles it signs itself; sign operator bundles with an operator key ('vessel-sync keygen')",
                    bundle.display(),
                    own.display()
                ));
            }
        }
        let by_content = m.files.iter().any(|f| f.may_omit);
        let (manifest_bytes, signature) = (opened.manifest_bytes.clone(), opened.signature);
        let bundles_dir = cfg.shore.state_dir.join("bundles");
        let parts = bundles_dir.join(format!(".{}.d.part", m.id));
        if parts.exists() {
            std::fs::remove_dir_all(&parts).map_err(|e| format!("{}: {e}", parts.display()))?;
        }
        // A crew list for one vessel may name seafarers who sailed on others (a crew change).
        let lists: Vec<String> = if m.recipient == envelope::manifest::FLEET {
            vec![]
        } else {
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
        };
        // A crew list is read from the extracted members only: `args.file` must name one.
        if let Some(f) = lists
            .iter()
            .find(|f| !m.files.iter().any(|e| &e.name == *f))
        {
            return Err(format!(
                "{}: refused: upsert_users names file {:?}, which is not a member of the bundle",
                bundle.display(),
                base::text::clip(f, 100)
            ));
        }
        let lists_dir = if !lists.is_empty() && !by_content {
            let tmp = cfg.shore.state_dir.join("tmp");
            std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            Some(tempfile::tempdir_in(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?)
        } else {
            None
        };
        // A bundle with course content is kept in parts, for per-vessel copies.
        let extracted = match &lists_dir {
            Some(d) => Some(d.path()),
            None => by_content.then_some(parts.as_path()),
        };
        opened
            .extract(extracted)
            .map_err(|e| format!("{}: refused: {e}", bundle.display()))?;
        let crew: Vec<crew::Member> = match extracted {
            Some(dir) => lists
                .iter()
                .flat_map(|f| crew::list_members(&dir.join(f)))
                .collect(),
            None => vec![],
        };
        let db = cfg.open()?;
        let name = format!("{}.vsb", m.id);
        let dest = cfg.shore.state_dir.join("bundles").join(&name);
        let data = std::fs::read(bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
        base::fsutil::atomic_write(&dest, &data).map_err(|e| format!("{}: {e}", dest.display()))?;
        let q = Queued {
            id: 0,
            recipient: m.recipient.clone(),
            bundle_id: m.id.clone(),
            file: name,
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(&data)),
        };
        let mut note = String::new();
        if by_content {
            let kept =
                content::keep_pushed(cfg, &db, &manifest_bytes, &signature, &m, &parts, now)?;
            note = format!(
                "; {} course content file(s), {} carried: each vessel is sent only those it does not hold",
                kept.listed, kept.carried
            );
            if kept.unknown > 0 {
                note.push_str(&format!(
                    " ({} neither carried nor kept ashore: a vessel lacking them cannot be sent them; push a bundle that carries them)",
                    kept.unknown
                ));
            }
        }
        let id = db.enqueue_bundle(&q, now).map_err(|e| e.to_string())?;
        if by_content {
            let members: Vec<(String, String, u64)> = m
                .files
                .iter()
                .filter(|f| f.may_omit)
                .map(|f| (f.name.clone(), f.sha256.clone(), f.size))
                .collect();
            db.set_queue_content(id, &members)
                .map_err(|e| e.to_string())?;
        }
        for line in crew::follow_crew_list(cfg, &db, &m.recipient, &crew, now) {
            note.push_str(&format!("\n{line}"));
        }
        Ok(format!(
            "queued bundle {} ({} bytes) for {} as #{id}; it is offered at the vessel's next sync{note}",
            m.id,
            data.len(),
            if m.recipient == envelope::manifest::FLEET {
                "every vessel".to_string()
            } else {
                format!("vessel {}", m.recipient)
            }
        ))
    };
    match run() {
        Ok(msg) => {
            println!("{msg}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::DATAERR
        }
    }
}

/// `shore ingest DIR`: takes batch files a carrier delivered, stores them, and writes a signed
/// `ack` bundle per vessel into `out` for the carrier to take back.
pub fn ingest(cfg: &ShoreConfig, dir: &Path, out: &Path, clock: &dyn Clock) -> i32 {
    let run = || -> Result<(u64, u64), String> {
        let key_path = cfg
            .shore
            .signing_key
            .as_ref()
            .ok_or("[shore] signing_key is required for ingest: it signs the ack bundles")?;
        let key = SecretKey::load(key_path).map_err(|e| e.to_string())?;
        let db = std::sync::Mutex::new(cfg.open()?);
        let store = || {
            db.lock()
                .map_err(|_| "the shore store's lock is poisoned".to_string())
        };
        std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
        let done = dir.join("done");
        let refused = dir.join("refused");
        for d in [&done, &refused] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "vsb"))
            .collect();
        names.sort();
        let vessels = store()?.vessels().map_err(|e| e.to_string())?;
        let mut touched = std::collections::BTreeSet::new();
        let (mut ok, mut bad) = (0, 0);
        for path in names {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // The sender's key decides; the manifest is read under every active vessel's key.
            let vessel = vessels.iter().filter(|v| v.revoked_at.is_none()).find(|v| {
                PublicKey::parse(&v.pubkey, Path::new("registry"))
                    .ok()
                    .and_then(|k| {
                        envelope::open(&path, &Keyring::new([k]), &Limits::default()).ok()
                    })
                    .is_some_and(|o| o.manifest.sender == v.id)
            });
            let result = match vessel {
                None => Err(refuse(
                    422,
                    "unknown_key",
                    "not signed by any registered, active vessel",
                )),
                Some(v) => {
                    intake(cfg, &db, v, &path, "file", clock.now()).map(|i| (v.id.clone(), i))
                }
            };
            match result {
                Ok((vid, i)) => {
                    println!(
                        "{name}: vessel {vid} batch {} stored ({:?}); acknowledged up to {}",
                        i.seq, i.stored, i.acked_seq
                    );
                    touched.insert(vid);
                    ok += 1;
                    base::fsutil::move_file(&path, &base::fsutil::free_name(&done, &name))
                        .map_err(|e| e.to_string())?;
                }
                Err(r) => {
                    println!("{name}: refused ({}): {}", r.code, r.message);
                    bad += 1;
                    let dest = base::fsutil::free_name(&refused, &name);
                    base::fsutil::move_file(&path, &dest).map_err(|e| e.to_string())?;
                    let _ = std::fs::write(
                        dest.with_extension("reason.txt"),
                        format!("{}: {}\n", r.code, r.message),
                    );
                }
            }
        }
        for vid in touched {
            let db = store()?;
            let v = db
                .vessel(&vid)
                .map_err(|e| e.to_string())?
                .ok_or("vessel vanished")?;
            let seq = db.next_ack_bundle_seq(&vid).map_err(|e| e.to_string())?;
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
            envelope::write_envelope(&draft, &key, clock.now(), &file)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            println!(
                "wrote {} (ack up to batch {} for {vid})",
                file.display(),
                v.acked_seq
            );
        }
        Ok((ok, bad))
    };
    match run() {
        Ok((_, 0)) => exit::OK,
        Ok(_) => exit::DATAERR,
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}

/// `shore export`: the records not exported by an earlier run (or, with `since`, every record
/// received since a time, again), as formula-safe CSV, one row per record id.
pub fn export(cfg: &ShoreConfig, since: Option<&str>, out: &Path, now: i64) -> i32 {
    let run = || -> Result<u64, String> {
        let since_t = since
            .map(|since| {
                parse_time(since)
                    .or_else(|| since.parse::<i64>().ok())
                    .ok_or_else(|| {
                        format!(
                            "--since {since:?}: use RFC 3339 (2026-11-01T00:00:00Z) or Unix seconds"
                        )
                    })
            })
            .transpose()?;
        let db = cfg.open()?;
        let tmp = base::fsutil::temp_path(out);
        let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
        let header = [
            "vessel",
            "record_id",
            "kind",
            "learner",
            "course",
            "activity",
            "learner_legacy_id",
            "course_legacy_id",
            "activity_legacy_id",
            "value",
            "time",
            "received_at",
        ];
        w.write_record(header).map_err(|e| e.to_string())?;
        let mut failed = None;
        let mut row_out = |vessel: &str, id: &[u8], r: Record, at: i64| {
            let mut idb = [0u8; 16];
            if id.len() == 16 {
                idb.copy_from_slice(id);
            }
            let row = [
                vessel.to_string(),
                format_id(&idb),
                r.kind.name().to_string(),
                r.user,
                r.course,
                r.item,
                r.user_legacy,
                r.course_legacy,
                r.item_legacy,
                r.value,
                format_time(r.time),
                format_time(at),
            ];
            let safe: Vec<String> = row.iter().map(|c| base::csvrow::csv_safe(c)).collect();
            if let Err(e) = w.write_record(&safe) {
                failed.get_or_insert(e.to_string());
            }
        };
        let (n, cursor) = match since_t {
            Some(t) => (
                db.records_since(t, &mut row_out)
                    .map_err(|e| e.to_string())?,
                None,
            ),
            None => {
                let (n, top) = db
                    .records_after(
                        db.export_cursor().map_err(|e| e.to_string())?,
                        |v, id, r, at, _| row_out(v, id, r, at),
                    )
                    .map_err(|e| e.to_string())?;
                (n, Some(top))
            }
        };
        if let Some(e) = failed {
            return Err(e);
        }
        let buf = w.into_inner().map_err(|e| e.to_string())?;
        let file = buf.into_inner().map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        base::fsutil::commit_temp(&tmp, out).map_err(|e| e.to_string())?;
        // Only once the file is safely in place: a run that failed exports the same again.
        if let Some(top) = cursor {
            db.set_export_cursor(top).map_err(|e| e.to_string())?;
        }
        let _ = db.audit(
            &forward::operator(),
            "export",
            &format!(
                "{n} record(s) to {}{}",
                out.display(),
                since
                    .map(|s| format!(" (again, since {s})"))
                    .unwrap_or_default()
            ),
            now,
        );
        Ok(n)
    };
    match run() {
        Ok(n) => {
            println!("{n} records written to {}", out.display());
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}
