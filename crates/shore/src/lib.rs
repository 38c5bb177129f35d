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
//! - this module: batch intake shared by HTTPS and file mode, and the operator
//!   commands (`shore vessel add|list|revoke`, `push`, `ingest`, `export`, `status`).
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
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod config;
pub mod content;
pub mod course;
pub mod crew;
pub mod dashboard;
pub mod forward;
pub mod migrate;
pub mod serve;
pub mod spec;
pub mod store;

pub use config::{ShoreConfig, ShoreSettings};

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use base::clock::{Clock, format_age, format_time, parse_time};
use base::exit;
use store::{Queued, ShoreStore, Stored, Vessel};
use wire::envelope::{
    self, CommandEntry, Draft, Keyring, Kind, Limits, PublicKey, SecretKey, VerifyError,
};
use wire::progress::Record;
use wire::progress::codec;
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

/// Why a batch was refused (HTTP status, stable code, words).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Stable code (`bad_signature`, `digest_mismatch`, `replayed`, ...).
    pub code: String,
    /// Words for the operator.
    pub message: String,
}

/// Result of a successful intake.
#[derive(Debug, Clone)]
pub struct Intake {
    /// Batch sequence.
    pub seq: u64,
    /// What storing did.
    pub stored: Stored,
    /// The vessel's watermark after it.
    pub acked_seq: u64,
}

fn refuse(status: u16, code: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code: code.into(),
        message: message.into(),
    }
}

/// Verifies, decodes and stores the batch in `file` from `vessel`. Refusals are recorded.
pub fn intake(
    cfg: &ShoreConfig,
    db: &mut ShoreStore,
    vessel: &Vessel,
    file: &Path,
    via: &str,
    now: i64,
) -> Result<Intake, Refusal> {
    let out = intake_inner(cfg, db, vessel, file, via, now);
    if let Err(r) = &out {
        if r.status != 500 {
            tracing::warn!(vessel = %vessel.id, code = %r.code, "batch refused: {}", r.message);
            let _ = db.note_refusal(&vessel.id, &r.code, &r.message, now);
        }
    }
    out
}

fn intake_inner(
    cfg: &ShoreConfig,
    db: &mut ShoreStore,
    vessel: &Vessel,
    file: &Path,
    via: &str,
    now: i64,
) -> Result<Intake, Refusal> {
    let registered = db
        .vessel_keys(&vessel.id)
        .map_err(|e| refuse(500, "local", e.to_string()))?;
    let mut keys = Vec::new();
    for k in &registered {
        keys.push(
            PublicKey::parse(&k.pubkey, Path::new("registry"))
                .map_err(|e| refuse(500, "registry", e.to_string()))?,
        );
    }
    let keyring = Keyring::new(keys);
    let limits = Limits {
        max_total_bytes: cfg.shore.max_batch_bytes.saturating_mul(8),
        max_members: 4,
        max_member_bytes: cfg.shore.max_batch_bytes.saturating_mul(8),
        ..Limits::default()
    };
    let verify = |e: VerifyError| match e {
        VerifyError::Rejected(r) => refuse(422, r.code(), r.to_string()),
        VerifyError::Local(m) => refuse(500, "local", m),
    };
    // A batch signed by a new vessel key carries the key, signed by a key shore holds.
    let resolve = |bytes: &[u8]| -> Result<Keyring, envelope::Rejection> {
        let Some(rot) = envelope::trust::Credentials::of(bytes).key_rotation else {
            return Ok(keyring.clone());
        };
        let Some(old) = keyring.get(&rot.body.old_key) else {
            return Err(envelope::Rejection::CertificateInvalid(format!(
                "the batch carries a rotation from key {}, which is not a key of vessel {}",
                rot.body.old_key, vessel.id
            )));
        };
        let new = rot
            .verify(old)
            .map_err(|e| envelope::Rejection::CertificateInvalid(e.to_string()))?;
        let mut all: Vec<PublicKey> = keyring.iter().cloned().collect();
        all.push(new);
        Ok(Keyring::new(all))
    };
    let opened = envelope::open_with(file, &resolve, &limits).map_err(verify)?;
    let m = opened.manifest.clone();
    let signer = opened.signer.id.clone();
    let mut rotation = None;
    match registered.iter().find(|k| k.key_id == signer) {
        Some(k) => {
            if let Some(until) = k.until_seq.filter(|u| m.sequence >= *u) {
                let successor = registered
                    .iter()
                    .find(|n| n.until_seq.is_none())
                    .map_or("another key".to_string(), |n| format!("key {}", n.key_id));
                return Err(refuse(
                    422,
                    "old_key",
                    if until == 0 {
                        format!(
                            "batch {} is signed by key {signer}, which an operator replaced with {successor}; this vessel must sign with its new key",
                            m.sequence
                        )
                    } else {
                        format!(
                            "batch {} is signed by key {signer}, which the vessel retired from batch {until} on (rotated to {successor}); a batch signed by it after that is refused",
                            m.sequence
                        )
                    },
                ));
            }
            if m.sequence < k.from_seq {
                return Err(refuse(
                    422,
                    "wrong_key",
                    format!(
                        "batch {} is signed by key {signer}, which signs from batch {} on",
                        m.sequence, k.from_seq
                    ),
                ));
            }
        }
        None => {
            // Only a key the carried rotation names gets here (the resolver added it).
            let Some(rot) = m
                .key_rotation
                .as_ref()
                .filter(|r| r.body.new_key_id == signer)
            else {
                return Err(refuse(
                    422,
                    "unknown_key",
                    format!(
                        "batch signed by key {signer}, which is not registered for vessel {}",
                        vessel.id
                    ),
                ));
            };
            if rot.body.vessel != vessel.id || m.sequence < rot.body.from_sequence {
                return Err(refuse(
                    422,
                    "bad_rotation",
                    format!(
                        "the key rotation is for vessel {:?} from batch {}, but this is batch {} of vessel {:?}",
                        rot.body.vessel, rot.body.from_sequence, m.sequence, vessel.id
                    ),
                ));
            }
            let pub_text = opened.signer.file_text();
            rotation = Some((
                signer.clone(),
                pub_text,
                rot.body.from_sequence,
                rot.body.old_key.clone(),
            ));
        }
    }
    if m.kind != Kind::Progress {
        return Err(refuse(422, "wrong_kind", "not a progress batch"));
    }
    if m.recipient != SHORE || m.sender != vessel.id {
        return Err(refuse(
            422,
            "wrong_sender",
            format!(
                "batch from {:?} to {:?}, but the connection authenticated vessel {:?} sending to shore",
                m.sender, m.recipient, vessel.id
            ),
        ));
    }
    if m.files.len() != 1 || m.files[0].name != RECORDS_MEMBER {
        return Err(refuse(
            422,
            "manifest_invalid",
            "a batch carries exactly records.bin",
        ));
    }
    let tmp = tempfile::tempdir_in(cfg.shore.state_dir.join("tmp"))
        .map_err(|e| refuse(500, "local", e.to_string()))?;
    let sha = opened.manifest_sha256.clone();
    opened.extract(Some(tmp.path())).map_err(verify)?;
    let bytes = std::fs::read(tmp.path().join(RECORDS_MEMBER))
        .map_err(|e| refuse(500, "local", e.to_string()))?;
    let (settled, records) =
        codec::decode_batch(&bytes).map_err(|e| refuse(422, "bad_payload", e.to_string()))?;
    let stored = db
        .store_batch(
            &store::BatchIn {
                vessel: &vessel.id,
                seq: m.sequence,
                sha256: &sha,
                envelope_id: &m.id,
                records: &records,
                previous: m.previous.as_deref(),
                rotation: rotation
                    .as_ref()
                    .map(|(id, text, from, old)| (id.as_str(), text.as_str(), *from, old.as_str())),
                settled,
                via,
            },
            now,
        )
        .map_err(|e| refuse(500, "local", e.to_string()))?;
    let acked_seq = db
        .vessel(&vessel.id)
        .map_err(|e| refuse(500, "local", e.to_string()))?
        .map(|v| v.acked_seq)
        .unwrap_or(0);
    if let Stored::Chain { code, message } = &stored {
        return Err(refuse(409, code, message.clone()));
    }
    if let Some((id, _, from, old)) = &rotation {
        tracing::info!(vessel = %vessel.id, old_key = %old, new_key = %id, from_seq = from, "vessel key rotated");
    }
    if stored == Stored::Replayed {
        return Err(refuse(
            409,
            "replayed",
            format!(
                "batch sequence {} was already received with other content; nothing stored (acknowledged up to {acked_seq})",
                m.sequence
            ),
        ));
    }
    if let Stored::New { new, duplicate } = &stored {
        tracing::info!(vessel = %vessel.id, seq = m.sequence, new, duplicate, acked_seq, via, "batch stored");
        if !m.command_reports.is_empty() {
            if let Err(e) = db.note_reports(&vessel.id, m.sequence, &m.command_reports, now) {
                tracing::error!(vessel = %vessel.id, error = %e, "could not keep a vessel's command reports");
            }
        }
        if !m.need_files.is_empty() {
            // The batch is stored: an answer that fails here is asked again by the vessel.
            match content::answer_needs(cfg, db, &vessel.id, &m.need_files, now) {
                Ok((sent, missing)) => {
                    tracing::info!(vessel = %vessel.id, sent, missing, "content asked for by a vessel")
                }
                Err(e) => {
                    tracing::error!(vessel = %vessel.id, error = %e, "could not answer a vessel's need_files")
                }
            }
        }
    }
    Ok(Intake {
        seq: m.sequence,
        stored,
        acked_seq,
    })
}

/// Generates a random token (32 bytes, URL-safe base64).
pub fn new_token() -> Result<String, String> {
    use base64::Engine;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

fn write_private(path: &Path, data: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            format!(
                "{}: {e} (it is never overwritten; remove it first)",
                path.display()
            )
        })?;
    f.write_all(data.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `shore vessel add`.
pub fn vessel_add(cfg: &ShoreConfig, id: &str, pubkey: &Path, token_out: &Path, now: i64) -> i32 {
    let run = || -> Result<String, String> {
        if !wire::valid_vessel_id(id) {
            return Err(format!("{id:?} is not a valid vessel id"));
        }
        let text =
            std::fs::read_to_string(pubkey).map_err(|e| format!("{}: {e}", pubkey.display()))?;
        let key = PublicKey::parse(&text, pubkey).map_err(|e| e.to_string())?;
        let token = new_token()?;
        write_private(token_out, &format!("{token}\n"))?;
        let db = cfg.open()?;
        db.add_vessel(id, &token_hash(&token), text.trim(), &key.id, now)
            .map_err(|e| e.to_string())?;
        Ok(key.id)
    };
    match run() {
        Ok(key_id) => {
            println!(
                "vessel {id} registered (key {key_id}); its token is in {} (mode 0600): copy it to the vessel as [uplink] token_file",
                token_out.display()
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}

/// `shore vessel rekey`.
pub fn vessel_rekey(cfg: &ShoreConfig, id: &str, pubkey: &Path, now: i64) -> i32 {
    let run = || -> Result<Option<(String, String)>, String> {
        let text =
            std::fs::read_to_string(pubkey).map_err(|e| format!("{}: {e}", pubkey.display()))?;
        let key = PublicKey::parse(&text, pubkey).map_err(|e| e.to_string())?;
        let db = cfg.open()?;
        let Some(before) = db.vessel(id).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if !db
            .rekey_vessel(id, text.trim(), &key.id, now)
            .map_err(|e| e.to_string())?
        {
            return Ok(None);
        }
        Ok(Some((before.key_id, key.id)))
    };
    match run() {
        Ok(Some((old, new))) => {
            tracing::info!(vessel = id, old_key = %old, new_key = %new, "vessel rekeyed by an operator");
            println!(
                "vessel {id}: key {new} is now its only key; batches signed by {old} or any earlier key are refused from now on"
            );
            exit::OK
        }
        Ok(None) => {
            eprintln!("error: no vessel {id:?} (see 'vessel-sync shore vessel list')");
            exit::DATAERR
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}

/// `shore vessel revoke`.
pub fn vessel_revoke(cfg: &ShoreConfig, id: &str, now: i64) -> i32 {
    match cfg
        .open()
        .and_then(|db| db.revoke_vessel(id, now).map_err(|e| e.to_string()))
    {
        Ok(true) => {
            println!("vessel {id} revoked: its token and key are refused from now on");
            exit::OK
        }
        Ok(false) => {
            eprintln!("error: no active vessel {id:?} (see 'vessel-sync shore vessel list')");
            exit::DATAERR
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}

/// One vessel in the fleet view (`shore status`, the dashboard).
#[derive(serde::Serialize)]
pub struct VesselStatus {
    #[serde(flatten)]
    vessel: Vessel,
    last_contact_age: Option<String>,
    oldest_unsent_age: Option<String>,
    /// Silent for a day, or holding a record unsent for a day (revoked vessels never are).
    pub behind: bool,
    /// Records its batches carried in the last 7 days.
    delivered_7d: u64,
    /// Its observed link rate: those records per hour, averaged over the 7 days (outages in).
    link_rate_per_hour: f64,
    /// Seconds to drain the backlog it last reported at that rate, if it has one and a rate.
    drain_secs: Option<i64>,
    /// Course deletions it holds until shore has acknowledged their progress.
    held_deletions: Vec<store::HeldDeletion>,
    /// Every key the vessel signs or signed with (rotations, rekeys).
    keys: Vec<store::VesselKey>,
    /// Course content files shore believes the vessel holds.
    content_held: u64,
    /// Content files the vessel asked for and shore sent.
    content_sent: u64,
    /// Content files the vessel asked for that shore does not keep.
    content_owed: u64,
}

impl VesselStatus {
    /// The vessel's id.
    pub fn id(&self) -> &str {
        &self.vessel.id
    }

    /// How far behind, for sorting worst first: behind vessels, then by the older of the
    /// silence and the oldest unsent record.
    fn lag(&self, now: i64) -> (bool, i64) {
        let silent = self
            .vessel
            .last_contact
            .map(|t| now - t)
            .unwrap_or(i64::MAX);
        (
            self.behind,
            silent.max(self.vessel.oldest_unsent.unwrap_or(0)),
        )
    }
}

/// The fleet as the training manager sees it ([`fleet_view`]).
pub struct Fleet {
    /// Every vessel, worst first.
    pub vessels: Vec<VesselStatus>,
    /// The cloud forwarding summary, when `[cloud]` is set.
    pub forward: Option<store::ForwardSummary>,
    /// The latest refusals: (at, vessel, code, message).
    pub refusals: Vec<(i64, String, String, String)>,
    /// When it was read.
    pub at: i64,
}

impl Fleet {
    /// What `shore status --json` prints and `/dashboard/api/fleet` serves (with the audit
    /// trail's tail).
    pub fn json(&self, db: &ShoreStore) -> serde_json::Value {
        serde_json::json!({
            "at": format_time(self.at),
            "vessels": self.vessels,
            "forward": self.forward,
            "audit": db.audit_trail(20).unwrap_or_default().iter().map(|(at, who, what, detail)| serde_json::json!({"at": format_time(*at), "who": who, "what": what, "detail": detail})).collect::<Vec<_>>(),
            "recent_refusals": self.refusals.iter().map(|(at, v, c, m)| serde_json::json!({"at": format_time(*at), "vessel": v, "code": c, "message": m})).collect::<Vec<_>>(),
        })
    }
}

/// The fleet as the training manager sees it: every vessel, worst first, with the cloud
/// forwarding summary and recent refusals. `shore status` shows it; the dashboard serves it.
pub fn fleet_view(cfg: &ShoreConfig, db: &ShoreStore, now: i64) -> Result<Fleet, String> {
    let (vessels, refusals) = (
        db.vessels().map_err(|e| e.to_string())?,
        db.refusals(10).map_err(|e| e.to_string())?,
    );
    let week = 7 * 86_400;
    let mut rows = Vec::with_capacity(vessels.len());
    for v in vessels {
        let silent = v.last_contact.map(|t| now - t).unwrap_or(i64::MAX);
        let content = db.content_state(&v.id).unwrap_or_default();
        let delivered = db
            .delivered_since(&v.id, now - week)
            .map_err(|e| e.to_string())?;
        let rate = delivered as f64 * 3600.0 / week as f64;
        let drain = match v.outbox_depth {
            Some(d) if d > 0 && rate > 0.0 => Some((d as f64 / rate * 3600.0).ceil() as i64),
            Some(0) => Some(0),
            _ => None,
        };
        rows.push(VesselStatus {
            last_contact_age: v.last_contact.map(|t| format_age(now - t)),
            oldest_unsent_age: v.oldest_unsent.map(format_age),
            behind: v.revoked_at.is_none()
                && (silent > 86_400 || v.oldest_unsent.unwrap_or(0) > 86_400),
            delivered_7d: delivered,
            link_rate_per_hour: (rate * 10.0).round() / 10.0,
            drain_secs: drain,
            held_deletions: db.held_deletions(&v.id).map_err(|e| e.to_string())?,
            keys: db.vessel_keys(&v.id).unwrap_or_default(),
            content_held: content.0,
            content_sent: content.1,
            content_owed: content.2,
            vessel: v,
        });
    }
    rows.sort_by(|a, b| {
        b.lag(now)
            .cmp(&a.lag(now))
            .then_with(|| a.vessel.id.cmp(&b.vessel.id))
    });
    let forward = cfg
        .cloud
        .as_ref()
        .map(|_| db.forward_summary().unwrap_or_default());
    Ok(Fleet {
        vessels: rows,
        forward,
        refusals,
        at: now,
    })
}

/// `shore vessel list` and `shore status`.
pub fn status(cfg: &ShoreConfig, clock: &dyn Clock, json: bool) -> i32 {
    let db = match cfg.open() {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILURE;
        }
    };
    let now = clock.now();
    let fleet = match fleet_view(cfg, &db, now) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILURE;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&fleet.json(&db)).unwrap_or_default()
        );
        return exit::OK;
    }
    let Fleet {
        vessels: rows,
        forward,
        refusals,
        ..
    } = fleet;
    println!(
        "{:<16} {:>7} {:>10} {:>14} {:>14} {:>8} {:>10}  state",
        "VESSEL", "ACKED", "RECORDS", "LAST CONTACT", "OLDEST UNSENT", "OUTBOX", "DRAIN IN"
    );
    for r in &rows {
        let v = &r.vessel;
        let state = if v.revoked_at.is_some() {
            "revoked"
        } else if r.behind {
            "BEHIND"
        } else {
            "ok"
        };
        println!(
            "{:<16} {:>7} {:>10} {:>14} {:>14} {:>8} {:>10}  {state}",
            v.id,
            v.acked_seq,
            v.records,
            r.last_contact_age
                .as_deref()
                .map(|a| format!("{a} ago"))
                .unwrap_or_else(|| "never".into()),
            r.oldest_unsent_age.clone().unwrap_or_else(|| "-".into()),
            v.outbox_depth
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            r.drain_secs.map(format_age).unwrap_or_else(|| "-".into()),
        );
        for h in &r.held_deletions {
            println!(
                "  {} holds a course deletion ({}): {}",
                v.id,
                h.command,
                h.report.reason.as_deref().unwrap_or("waiting")
            );
        }
    }
    if rows.is_empty() {
        println!(
            "(no vessels: add one with 'vessel-sync shore vessel add ID --pubkey FILE --token-out FILE')"
        );
    }
    for r in rows.iter().filter(|r| r.content_owed > 0) {
        println!(
            "content owed to {}: {} course file(s) it asked for are not kept ashore; push a bundle that carries them (built without --base)",
            r.vessel.id, r.content_owed
        );
    }
    if let Some(f) = &forward {
        let settled: u64 = f.outcomes.iter().map(|(_, n)| n).sum();
        println!(
            "cloud Moodle: {settled} of {} record(s) forwarded ({}), {} to go, {} held",
            f.records,
            f.outcomes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            f.pending,
            f.held.iter().map(|(_, n)| n).sum::<u64>()
        );
        for (why, n) in &f.held {
            println!("  held: {n} record(s): {why}");
        }
    }
    for (at, v, c, m) in &refusals {
        println!("refused {} from {v}: {c}: {m}", format_time(*at));
    }
    exit::OK
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
    let run =
        || -> Result<(u64, u64), String> {
            let key_path =
                cfg.shore.signing_key.as_ref().ok_or(
                    "[shore] signing_key is required for ingest: it signs the ack bundles",
                )?;
            let key = SecretKey::load(key_path).map_err(|e| e.to_string())?;
            let mut db = cfg.open()?;
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
            let vessels = db.vessels().map_err(|e| e.to_string())?;
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
                    Some(v) => intake(cfg, &mut db, v, &path, "file", clock.now())
                        .map(|i| (v.id.clone(), i)),
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
