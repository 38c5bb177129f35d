//! Watching and admitting bundles: [`scan`] says which inbox files are ready (settled, or
//! committed whole by the agent itself); this file admits them.
//!
//! Admission of one file, in order, each step safe to repeat after a crash:
//! 1. verify signature, policy and the signer's rules ([`crate::trust`]); extract into `work/.ID.part`, then rename to `work/ID`;
//! 2. one transaction: classify against the journal, record bundle + commands + audit;
//! 3. move the file to `archive/ID.vsb`; record that it is archived.
//!
//! A crash after 1 leaves the file in the inbox and an orphan work directory (removed at start);
//! after 2 the file is re-read, recognised as journaled-not-archived and just archived. Rejected
//! files move to `quarantine/` with `NAME.reason.txt` beside them; local faults (disk full) leave
//! the file where it is for the next scan.

mod scan;

use std::fs;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::store::{Admission, NewBundle, NewCommand, Store, StoreError};
use crate::trust::{Authority, Trust};
use base::clock::format_time;
use base::failpoint;
use base::fsutil;
use wire::envelope::{self, Manifest, Rejection, VerifyError};

pub use scan::{Scan, Scanner, ignored_name};

/// Extension of archived bundles.
pub const BUNDLE_EXT: &str = "vsb";

/// What happened to one inbox file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// Journaled (ready or waiting for a missing sequence).
    Journaled {
        /// Bundle id.
        id: String,
        /// Whether it waits for a gap.
        waiting: bool,
    },
    /// The same bundle again; recorded and removed.
    Duplicate(String),
    /// Finished an admission interrupted by a crash.
    Recovered(String),
    /// Refused; moved to quarantine with a reason file.
    Quarantined {
        /// The stable code.
        code: String,
        /// Where it went.
        to: PathBuf,
    },
    /// A local fault; the file stays for the next scan.
    LeftForLater(String),
}

/// Errors that stop admission (the store failing); bundle faults are outcomes, not errors.
pub type Result<T> = std::result::Result<T, StoreError>;

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn new_bundle(m: &Manifest, sha: &str, source: &str) -> NewBundle {
    NewBundle {
        id: m.id.clone(),
        issuer: m.issuer.clone(),
        recipient: m.recipient.clone(),
        sequence: m.sequence,
        manifest_sha256: sha.to_string(),
        source_name: source.to_string(),
        created_at: base::clock::parse_time(&m.created).unwrap_or(0),
        expires_at: m.expires.as_deref().and_then(base::clock::parse_time),
        commands: m
            .commands
            .iter()
            .map(|c| NewCommand {
                cmd_id: c.id.clone(),
                kind: c.kind.clone(),
                args: serde_json::Value::Object(c.args.clone()).to_string(),
                files: serde_json::to_string(&c.files).unwrap_or_else(|_| "[]".into()),
            })
            .collect(),
    }
}

/// The work directory of a bundle: the one place a bundle id names a path on board (with
/// [`archive_path`]). Admission refuses ids that are not one plain component
/// ([`wire::ids::check_id`]); a journal row from before that check with such an id gets a name
/// that stays inside `work/` and holds nothing.
pub fn work_dir(cfg: &Config, bundle_id: &str) -> PathBuf {
    cfg.paths.work.join(safe_component(bundle_id))
}

/// Where a bundle's file is kept once journaled.
pub fn archive_path(cfg: &Config, bundle_id: &str) -> PathBuf {
    cfg.paths
        .archive
        .join(format!("{}.{BUNDLE_EXT}", safe_component(bundle_id)))
}

fn safe_component(id: &str) -> &str {
    if wire::ids::check_id("bundle id", id).is_ok() {
        id
    } else {
        ".refused-id"
    }
}

/// Verifies and journals one settled inbox file; `progress` is called while members stream.
pub fn admit(
    store: &mut Store,
    cfg: &Config,
    path: &Path,
    now: i64,
    progress: &mut dyn FnMut(),
) -> Result<Admitted> {
    let name = file_name(path);
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => {
            let why = Rejection::NotAFile(envelope::read::describe_type(meta.file_type()));
            return quarantine(store, cfg, path, &why, None, now);
        }
        Ok(_) => {}
        Err(e) => return Ok(Admitted::LeftForLater(format!("{}: {e}", path.display()))),
    }
    let trust = {
        let tx = store.begin()?;
        Trust::load(cfg, &tx)?
    };
    let opened = match envelope::open_with(path, &|b| trust.keyring_for(b), &cfg.limits) {
        Ok(o) => o,
        Err(VerifyError::Rejected(r)) => return quarantine(store, cfg, path, &r, None, now),
        Err(VerifyError::Local(e)) => return Ok(Admitted::LeftForLater(e)),
    };
    let skew = i64::try_from(cfg.inbox.clock_skew).unwrap_or(i64::MAX);
    if let Err(r) = envelope::check_policy(&opened.manifest, &cfg.vessel_id, now, skew) {
        let m = opened.manifest.clone();
        return quarantine(store, cfg, path, &r, Some(&m), now);
    }
    let m = opened.manifest.clone();
    let authority = match trust.authorize(&m, &opened.signer.id, now, skew) {
        Ok(a) => a,
        Err(r) => return quarantine(store, cfg, path, &r, Some(&m), now),
    };
    let revoked = {
        let tx = store.begin()?;
        Trust::revoked(&tx, &m.issuer, &m.recipient, m.sequence)?
    };
    if let Some(r) = revoked {
        return quarantine(store, cfg, path, &r, Some(&m), now);
    }
    let sha = opened.manifest_sha256.clone();
    let admission = {
        let tx = store.begin()?;
        tx.classify(&m.id, &sha, &m.issuer, &m.recipient, m.sequence)?
    };
    match admission {
        Admission::Known {
            same_content: false,
            ..
        } => {
            return quarantine(
                store,
                cfg,
                path,
                &Rejection::IdReused(m.id.clone()),
                Some(&m),
                now,
            );
        }
        Admission::Replay { previous } => {
            let r = Rejection::Replay {
                issuer: m.issuer.clone(),
                recipient: m.recipient.clone(),
                sequence: m.sequence,
                previous,
            };
            return quarantine(store, cfg, path, &r, Some(&m), now);
        }
        Admission::Known {
            archived: false, ..
        } => {
            archive(store, cfg, path, &m.id)?;
            return Ok(Admitted::Recovered(m.id));
        }
        Admission::Known { archived: true, .. } => {
            // The same signed bundle again, carrying content members its waiting commands lack
            // (shore's answer to a need_files request): those members go into its work
            // directory and its commands are woken.
            let supplied = match supplement(cfg, opened, &m) {
                Ok(n) => n,
                Err(VerifyError::Rejected(r)) => {
                    return quarantine(store, cfg, path, &r, Some(&m), now);
                }
                Err(VerifyError::Local(e)) => return Ok(Admitted::LeftForLater(e)),
            };
            if supplied > 0 {
                store.write(|tx| {
                    tx.wake_waiting(&m.id, now)?;
                    tx.audit(now, &m.issuer, Some(&m.id), None, "bundle_supplied", "ok",
                        &format!("file {name} brought {supplied} content file(s) that bundle {}'s waiting commands lacked", m.id))
                })?;
                if let Err(e) = fs::remove_file(path) {
                    tracing::warn!(file = %path.display(), error = %e, "could not remove a supplement bundle file");
                }
                return Ok(Admitted::Duplicate(m.id));
            }
            store.write(|tx| {
                tx.audit(now, &m.issuer, Some(&m.id), None, "bundle_duplicate", "ignored",
                    &format!("file {name} holds bundle {} (sequence {}), which was already received; not applied again", m.id, m.sequence))
            })?;
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!(file = %path.display(), error = %e, "could not remove a duplicate bundle file");
            }
            return Ok(Admitted::Duplicate(m.id));
        }
        Admission::Early { missing } if m.sequence - missing > cfg.inbox.max_sequence_gap => {
            let r = Rejection::SequenceGap {
                issuer: m.issuer.clone(),
                sequence: m.sequence,
                next: missing,
                gap: m.sequence - missing,
                max: cfg.inbox.max_sequence_gap,
            };
            return quarantine(store, cfg, path, &r, Some(&m), now);
        }
        Admission::Late | Admission::InOrder | Admission::Early { .. } => {}
    }

    // Extract into a fresh private directory, then rename into place.
    let final_dir = work_dir(cfg, &m.id);
    let tmp_dir = cfg
        .paths
        .work
        .join(format!(".{}.part", safe_component(&m.id)));
    for d in [&tmp_dir, &final_dir] {
        if d.exists() {
            if let Err(e) = fs::remove_dir_all(d) {
                return Ok(Admitted::LeftForLater(format!(
                    "cannot clear {}: {e}",
                    d.display()
                )));
            }
        }
    }
    if let Err(e) = fs::create_dir_all(&tmp_dir) {
        return Ok(Admitted::LeftForLater(format!(
            "cannot create {}: {e}",
            tmp_dir.display()
        )));
    }
    match opened.extract_with(Some(&tmp_dir), progress) {
        Ok(_) => {}
        Err(err) => {
            let _ = fs::remove_dir_all(&tmp_dir);
            return match err {
                VerifyError::Rejected(r) => quarantine(store, cfg, path, &r, Some(&m), now),
                VerifyError::Local(e) => Ok(Admitted::LeftForLater(e)),
            };
        }
    }
    if let Err(e) = fsutil::commit_temp(&tmp_dir, &final_dir) {
        let _ = fs::remove_dir_all(&tmp_dir);
        return Ok(Admitted::LeftForLater(format!(
            "cannot move extracted files into place: {e}"
        )));
    }
    failpoint::hit("admit.after-extract");

    let bundle = new_bundle(&m, &sha, &name);
    let gap = i64::try_from(cfg.inbox.gap_timeout).unwrap_or(i64::MAX);
    let state = store.write(|tx| {
        // Classified again inside the writing transaction: the journal is the authority.
        let admission = tx.classify(&m.id, &sha, &m.issuer, &m.recipient, m.sequence)?;
        if let Authority::Certified(Some(cert)) = &authority {
            if tx.remember_cert(cert, &format!("carried by bundle {}", m.id), now)? {
                tx.audit(
                    now,
                    &m.issuer,
                    Some(&m.id),
                    None,
                    "key_trusted",
                    "certificate",
                    &format!("{}; carried by this bundle", cert.body.summary()),
                )?;
            }
        }
        tx.admit(&bundle, &admission, gap, now)
    })?;
    failpoint::hit("admit.after-journal");
    archive(store, cfg, path, &m.id)?;
    failpoint::hit("admit.after-archive");
    Ok(Admitted::Journaled {
        id: m.id,
        waiting: state == crate::store::BundleState::Waiting,
    })
}

/// Moves the `may_omit` members a re-delivered bundle carries into its work directory where
/// they are missing (while its commands still run). Returns how many were added.
fn supplement(
    cfg: &Config,
    opened: envelope::Opened,
    m: &envelope::Manifest,
) -> std::result::Result<u64, VerifyError> {
    let dir = work_dir(cfg, &m.id);
    let lacking: Vec<&envelope::FileEntry> = m
        .files
        .iter()
        .filter(|f| f.may_omit && !dir.join(&f.name).is_file())
        .collect();
    if !dir.is_dir() || lacking.is_empty() {
        return Ok(0);
    }
    let tmp = cfg
        .paths
        .work
        .join(format!(".{}.supplement", safe_component(&m.id)));
    let local = |e: std::io::Error| VerifyError::Local(format!("{}: {e}", tmp.display()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(local)?;
    }
    let result = opened.extract(Some(&tmp)).and_then(|_| {
        let mut added = 0;
        for f in lacking {
            let from = tmp.join(&f.name);
            if !from.is_file() {
                continue;
            }
            let to = dir.join(&f.name);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(local)?;
            }
            fs::rename(&from, &to).map_err(local)?;
            added += 1;
        }
        Ok(added)
    });
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// Makes a journaled bundle's work directory again from its archived file (verified again,
/// as at admission), for a command the IT officer retried after its bundle was cleaned up.
/// The error says what is missing.
pub fn restore_work_dir(
    store: &mut Store,
    cfg: &Config,
    bundle_id: &str,
) -> std::result::Result<(), String> {
    let file = archive_path(cfg, bundle_id);
    let trust = store
        .begin()
        .map_err(|e| e.to_string())
        .and_then(|tx| Trust::load(cfg, &tx).map_err(|e| e.to_string()))?;
    let opened = envelope::open_with(&file, &|b| trust.keyring_for(b), &cfg.limits).map_err(|e| {
        format!(
            "the bundle's files are gone and its archived copy {} cannot be used ({e}); ask shore to send the bundle again",
            file.display()
        )
    })?;
    if opened.manifest.id != bundle_id {
        return Err(format!("{} holds another bundle", file.display()));
    }
    let final_dir = work_dir(cfg, bundle_id);
    let tmp_dir = cfg
        .paths
        .work
        .join(format!(".{}.part", safe_component(bundle_id)));
    let local = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    if tmp_dir.exists() {
        fs::remove_dir_all(&tmp_dir).map_err(|e| local(&tmp_dir, e))?;
    }
    fs::create_dir_all(&tmp_dir).map_err(|e| local(&tmp_dir, e))?;
    if let Err(e) = opened.extract(Some(&tmp_dir)) {
        let _ = fs::remove_dir_all(&tmp_dir);
        return Err(format!("{}: {e}", file.display()));
    }
    fsutil::commit_temp(&tmp_dir, &final_dir).map_err(|e| local(&final_dir, e))
}

fn archive(store: &mut Store, cfg: &Config, path: &Path, id: &str) -> Result<()> {
    let dest = archive_path(cfg, id);
    match fsutil::move_file(path, &dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            // Journaled already; the file stays in the inbox and the next scan archives it.
            tracing::warn!(bundle_id = id, error = %e, "could not move the bundle to the archive; will retry");
            return Ok(());
        }
    }
    store.write(|tx| tx.mark_archived(id))
}

/// Moves a refused file to quarantine with a reason file, and records it.
pub fn quarantine(
    store: &mut Store,
    cfg: &Config,
    path: &Path,
    why: &Rejection,
    m: Option<&Manifest>,
    now: i64,
) -> Result<Admitted> {
    let name = file_name(path);
    let dest = fsutil::free_name(&cfg.paths.quarantine, &name);
    let dest_name = file_name(&dest);
    let mut text = format!(
        "vessel-sync refused this file and did not apply anything from it.\n\n\
         File:     {name}\nRefused:  {}\nVessel:   {}\nReason:   {why}\nCode:     {}\n",
        format_time(now),
        cfg.vessel_id,
        why.code()
    );
    if let Some(m) = m {
        text.push_str(&format!(
            "Bundle:   {} (issuer {}, sequence {} for {:?}, created {})\n",
            m.id, m.issuer, m.sequence, m.recipient, m.created
        ));
    }
    text.push_str(
        "\nNothing else needs doing on board. Tell the shore operator the reason above; a corrected\n\
         bundle can be dropped into the inbox as usual. This file is kept here for inspection\n\
         ('vessel-sync bundle inspect FILE') and may be deleted.\n",
    );
    let reason_path = cfg.paths.quarantine.join(format!("{dest_name}.reason.txt"));
    if let Err(e) = fsutil::atomic_write(&reason_path, text.as_bytes()) {
        return Ok(Admitted::LeftForLater(format!(
            "cannot write to quarantine: {e}"
        )));
    }
    if let Err(e) = fsutil::move_file(path, &dest) {
        return Ok(Admitted::LeftForLater(format!(
            "cannot move {name} to quarantine: {e}"
        )));
    }
    let actor = m.map_or("unknown", |m| m.issuer.as_str());
    store.write(|tx| {
        tx.audit(
            now,
            actor,
            m.map(|m| m.id.as_str()),
            None,
            "bundle_rejected",
            why.code(),
            &format!("file {name}: {why} (moved to quarantine as {dest_name})"),
        )
    })?;
    tracing::warn!(file = %name, code = why.code(), reason = %why, "bundle quarantined");
    Ok(Admitted::Quarantined {
        code: why.code().to_string(),
        to: dest,
    })
}
