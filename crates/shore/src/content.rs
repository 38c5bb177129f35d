//! Course content ashore: a pushed bundle's omittable members (course content files listed
//! `may_omit`, see `docs/bundle-format.md`, "Course backups by content") are kept by SHA-256 in
//! `STATE_DIR/content/`, and its other members and signed manifest in `STATE_DIR/bundles/ID.d/`.
//! From them shore writes, per vessel, a copy of the bundle that leaves out the content that
//! vessel holds (what it downloaded before), and answers a vessel's `need_files` request with
//! a copy carrying what it lacks. Every copy holds the operator's manifest and signature
//! verbatim: shore re-signs nothing, and the vessel checks each member against that manifest.

use std::path::{Path, PathBuf};

use crate::ShoreConfig;
use crate::store::{Queued, ShoreStore};
use wire::envelope::{self, FileEntry, Manifest, NeedFiles};

fn content_path(cfg: &ShoreConfig, sha256: &str) -> PathBuf {
    cfg.shore.state_dir.join("content").join(sha256)
}

fn parts_dir(cfg: &ShoreConfig, bundle_id: &str) -> PathBuf {
    cfg.shore
        .state_dir
        .join("bundles")
        .join(format!("{bundle_id}.d"))
}

/// Most copies shore writes a day to answer one vessel's needs of one bundle.
pub const MAX_NEED_COPIES_A_DAY: u64 = 4;

/// What [`keep_pushed`] found.
#[derive(Debug, Default, Clone)]
pub struct Kept {
    /// Omittable members listed.
    pub listed: u64,
    /// Of those, carried by the pushed file.
    pub carried: u64,
    /// Listed but neither carried nor kept ashore from an earlier push: a vessel lacking them
    /// cannot be helped.
    pub unknown: u64,
}

/// Keeps what shore needs to make per-vessel copies of a pushed bundle: its manifest and
/// signature, its members, and its omittable members by content. `extracted` holds every
/// member the file carried (verified).
pub fn keep_pushed(
    cfg: &ShoreConfig,
    db: &ShoreStore,
    manifest_bytes: &[u8],
    signature: &[u8; 64],
    m: &Manifest,
    extracted: &Path,
    now: i64,
) -> Result<Kept, String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let store = cfg.shore.state_dir.join("content");
    std::fs::create_dir_all(&store).map_err(|e| io(&store, e))?;
    let mut kept = Kept::default();
    for f in m.files.iter().filter(|f| f.may_omit) {
        kept.listed += 1;
        let from = extracted.join(&f.name);
        let to = content_path(cfg, &f.sha256);
        if from.is_file() {
            kept.carried += 1;
            if !to.is_file() {
                std::fs::rename(&from, &to).map_err(|e| io(&to, e))?;
            }
            db.add_content(&f.sha256, f.size, now)
                .map_err(|e| e.to_string())?;
        } else if !db.has_content(&f.sha256).map_err(|e| e.to_string())? {
            kept.unknown += 1;
        }
    }
    std::fs::write(
        extracted.join(envelope::manifest::MANIFEST_NAME),
        manifest_bytes,
    )
    .map_err(|e| io(extracted, e))?;
    std::fs::write(
        extracted.join(envelope::manifest::SIGNATURE_NAME),
        signature,
    )
    .map_err(|e| io(extracted, e))?;
    let dest = parts_dir(cfg, &m.id);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| io(&dest, e))?;
    }
    std::fs::rename(extracted, &dest).map_err(|e| io(&dest, e))?;
    Ok(kept)
}

/// Writes a copy of bundle `bundle_id` carrying its required members and the omittable ones
/// `carry` selects (those shore keeps), as `STATE_DIR/bundles/NAME`. Returns (size, sha256,
/// content members carried).
fn write_copy(
    cfg: &ShoreConfig,
    bundle_id: &str,
    carry: &dyn Fn(&FileEntry) -> bool,
    name: &str,
) -> Result<(u64, String, u64), String> {
    let dir = parts_dir(cfg, bundle_id);
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let mpath = dir.join(envelope::manifest::MANIFEST_NAME);
    let manifest_bytes = std::fs::read(&mpath).map_err(|e| io(&mpath, e))?;
    let spath = dir.join(envelope::manifest::SIGNATURE_NAME);
    let sig: [u8; 64] = std::fs::read(&spath)
        .map_err(|e| io(&spath, e))?
        .try_into()
        .map_err(|_| format!("{}: not a 64-byte signature", spath.display()))?;
    let m: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| format!("{}: {e}", mpath.display()))?;
    let mut members = Vec::new();
    let mut carried = 0;
    for f in &m.files {
        if !f.may_omit {
            members.push((f.clone(), dir.join(&f.name)));
        } else if carry(f) {
            let p = content_path(cfg, &f.sha256);
            if p.is_file() {
                members.push((f.clone(), p));
                carried += 1;
            }
        }
    }
    let created = base::clock::parse_time(&m.created).unwrap_or(0);
    let out = cfg.shore.state_dir.join("bundles").join(name);
    let size = envelope::repack(&manifest_bytes, &sig, &members, created, &out)
        .map_err(|e| io(&out, e))?;
    let sha = base::fsutil::file_sha256(&out).map_err(|e| io(&out, e))?;
    Ok((size, sha, carried))
}

/// The bundle as offered to `vessel`: for a bundle with content members, a copy without the
/// content the vessel holds (made once per vessel and kept, so a resumed download reads the
/// same bytes); any other bundle as queued.
pub fn offer(
    cfg: &ShoreConfig,
    db: &std::sync::Mutex<ShoreStore>,
    vessel: &str,
    q: &Queued,
) -> Result<Queued, String> {
    // The store's lock is taken per call: writing the copy runs without it.
    let store = || {
        db.lock()
            .map_err(|_| "the shore store's lock is poisoned; restart shore".to_string())
    };
    let members = store()?.queue_content(q.id).map_err(|e| e.to_string())?;
    if members.is_empty() {
        return Ok(q.clone());
    }
    let with = |file: String, size: u64, sha256: String| Queued {
        file,
        size,
        sha256,
        ..q.clone()
    };
    if let Some((file, size, sha)) = store()?.variant(q.id, vessel).map_err(|e| e.to_string())? {
        return Ok(with(file, size, sha));
    }
    let holds = store()?.holds(vessel).map_err(|e| e.to_string())?;
    let safe = wire::ids::file_safe(vessel);
    let name = format!("{}.{safe}.vsb", q.bundle_id);
    let (size, sha, carried) =
        write_copy(cfg, &q.bundle_id, &|f| !holds.contains(&f.sha256), &name)?;
    tracing::info!(vessel, bundle = %q.bundle_id, bytes = size, carried, held = members.len() as u64 - carried, "per-vessel copy of a course bundle");
    store()?
        .set_variant(q.id, vessel, &name, size, &sha, carried)
        .map_err(|e| e.to_string())?;
    Ok(with(name, size, sha))
}

/// Answers a batch's `need_files`: notes that the vessel lacks them, and queues for it a copy of
/// each bundle carrying the members it asked for (those shore keeps). Returns what was queued
/// and what shore could not send.
pub fn answer_needs(
    cfg: &ShoreConfig,
    db: &std::sync::Mutex<ShoreStore>,
    vessel: &str,
    needs: &[NeedFiles],
    now: i64,
) -> Result<(u64, u64), String> {
    // The store's lock is taken per call: writing a copy (repacking) runs without it.
    let store = || {
        db.lock()
            .map_err(|_| "the shore store's lock is poisoned; restart shore".to_string())
    };
    let (mut sent, mut missing) = (0, 0);
    for n in needs {
        // Only a bundle addressed to this vessel (or the fleet) is ever copied for it.
        let Some(qid) = store()?
            .content_bundle(&n.bundle, vessel)
            .map_err(|e| e.to_string())?
        else {
            tracing::warn!(vessel, bundle = %base::text::clip(&n.bundle, 64), "a vessel asked for content of a bundle shore never queued for it");
            missing += n.sha256.len() as u64;
            continue;
        };
        // The same request again while its answer waits to be fetched: that answer stands.
        if let Some(q) = store()?
            .pending_answer(vessel, &n.bundle, &n.sha256)
            .map_err(|e| e.to_string())?
        {
            tracing::info!(vessel, bundle = %n.bundle, queue_id = q, "content asked for again; the copy queued before still waits for the vessel");
            continue;
        }
        if store()?
            .need_copies_since(vessel, &n.bundle, now - 86_400)
            .map_err(|e| e.to_string())?
            >= MAX_NEED_COPIES_A_DAY
        {
            tracing::warn!(vessel, bundle = %n.bundle, "a vessel asked for content more than {MAX_NEED_COPIES_A_DAY} times in a day; not answered until tomorrow");
            missing += n.sha256.len() as u64;
            continue;
        }
        store()?
            .note_needs(vessel, &n.bundle, &n.sha256, now)
            .map_err(|e| e.to_string())?;
        let members = store()?.queue_content(qid).map_err(|e| e.to_string())?;
        let mut have = Vec::new();
        for (_, sha, _) in members.iter().filter(|(_, s, _)| n.sha256.contains(s)) {
            if content_path(cfg, sha).is_file() {
                have.push(sha.clone());
            }
        }
        missing += n.sha256.len() as u64 - have.len() as u64;
        if have.is_empty() {
            tracing::warn!(vessel, bundle = %n.bundle, wanted = n.sha256.len(), "a vessel needs content shore does not keep; push a bundle carrying it");
            continue;
        }
        let safe = wire::ids::file_safe(vessel);
        let name = format!("{}.{safe}.need-{now}.vsb", n.bundle);
        let (size, sha256, carried) =
            write_copy(cfg, &n.bundle, &|f| have.contains(&f.sha256), &name)?;
        let id = store()?
            .enqueue_bundle(
                &Queued {
                    id: 0,
                    recipient: vessel.to_string(),
                    bundle_id: n.bundle.clone(),
                    file: name,
                    size,
                    sha256,
                },
                now,
            )
            .map_err(|e| e.to_string())?;
        store()?
            .answer_needs(vessel, &n.bundle, &have, id)
            .map_err(|e| e.to_string())?;
        tracing::info!(vessel, bundle = %n.bundle, files = carried, bytes = size, queue_id = id, "queued the content a vessel asked for");
        sent += carried;
    }
    Ok((sent, missing))
}
