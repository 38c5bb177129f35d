//! The sync cycle: progress batches go home, acknowledgements and bundles come back.
//!
//! Batches are built from the outbox (records in capture order, up to `batch_records`), signed
//! with the vessel's key, and stored byte for byte with their sequence before they are sent, so
//! a retry after a crash or a cut connection sends the identical envelope and shore recognises
//! it. Records leave the outbox only when an acknowledgement covers their batch.
//!
//! HTTPS mode: one `POST /v1/sync` per exchange carries the oldest unacknowledged batch (or
//! nothing, as a poll); its reply carries the acknowledgement and the bundles waiting, which
//! are then downloaded into the inbox with resumable Range requests. Retry rule: transport
//! errors, 408, 429 and 5xx are retried with capped, jittered exponential backoff that honours
//! `Retry-After`; other 4xx are permanent (shown in `status`, tried again only after six hours
//! or a restart). Budgets and time windows are checked before every exchange; when the budget
//! is tight, progress goes first and bundle downloads wait.
//!
//! Files mode: every batch is written atomically into the outbound directory for a carrier and
//! written again if no acknowledgement came within `resend_after`; shore's `ack` bundles come
//! back through the inbox.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, UplinkMode, UplinkSettings};
use crate::store::{Store, StoreError};
use base::clock::{format_age, format_time};
use base::failpoint;
use wire::envelope::{
    Draft, Extra, KeyRotation, Kind, PublicKey, SecretKey, Source, write_envelope_with,
};
use wire::progress::codec;
use wire::{RECORDS_MEMBER, SHORE};

/// Seconds before a permanent refusal is tried again.
pub const PERMANENT_RETRY: i64 = 6 * 3600;

/// An uplink failure.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The agent's database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Setup (keys, token, TLS): fix the config.
    #[error("{0}")]
    Setup(String),
    /// Local file trouble.
    #[error("{0}")]
    Io(String),
}

/// What a cycle did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CycleReport {
    /// Batches built.
    pub built: u64,
    /// Exchanges with shore (HTTP requests of the sync endpoint) or files written.
    pub exchanges: u64,
    /// Highest acknowledged batch after the cycle.
    pub acked_seq: u64,
    /// Bundles downloaded into the inbox.
    pub downloaded: u64,
    /// Why the cycle stopped early, if it did.
    pub held: Option<String>,
    /// When the next cycle is due (Unix seconds).
    pub next_attempt: i64,
}

/// The reply of `POST /v1/sync`.
#[derive(Debug, Deserialize)]
struct Reply {
    #[serde(default)]
    acked_seq: Option<u64>,
    #[serde(default)]
    bundles: Vec<Offer>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// A bundle shore offers.
#[derive(Debug, Clone, Deserialize)]
struct Offer {
    queue_id: i64,
    bundle_id: String,
    size: u64,
    sha256: String,
    path: String,
}

/// How long a request for content waits for its answer before it is asked again.
const NEED_REASK: i64 = 6 * 3600;

fn day_of(t: i64) -> String {
    format_time(t).get(..10).unwrap_or("1970-01-01").to_string()
}

/// Whether `now` falls in one of the windows (UTC minutes of day); no windows: always.
pub fn in_window(windows: &[(u32, u32)], now: i64) -> bool {
    if windows.is_empty() {
        return true;
    }
    let m = u32::try_from(now.rem_euclid(86_400) / 60).unwrap_or(0);
    windows.iter().any(|&(a, b)| {
        if a < b {
            m >= a && m < b
        } else {
            m >= a || m < b
        }
    })
}

fn next_window_start(windows: &[(u32, u32)], now: i64) -> i64 {
    let day = now - now.rem_euclid(86_400);
    windows
        .iter()
        .flat_map(|&(a, _)| [day + i64::from(a) * 60, day + 86_400 + i64::from(a) * 60])
        .filter(|&t| t > now)
        .min()
        .unwrap_or(now + 3600)
}

/// Reads a secret file, refusing one that others can read.
pub fn read_token(path: &Path) -> Result<String, UplinkError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| UplinkError::Setup(format!("uplink.token_file {}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(UplinkError::Setup(format!(
            "uplink.token_file {} can be read by other users (mode {:o}); run: chmod 600 {}",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        )));
    }
    let t = std::fs::read_to_string(path)
        .map_err(|e| UplinkError::Setup(format!("uplink.token_file {}: {e}", path.display())))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(UplinkError::Setup(format!(
            "uplink.token_file {} is empty",
            path.display()
        )));
    }
    Ok(t)
}

/// The uplink fact holding the manifest digest of the last batch built: the next batch names
/// it as its predecessor, so shore can tell a rewritten history from the one it holds.
pub const LAST_BATCH_DIGEST: &str = "last_batch_digest";

/// The key that signs batch `seq` when the vessel has rotated its key (`None`: the configured
/// `signing_key`), and the rotation statement to carry while shore has not acknowledged a
/// batch signed by it.
fn signing_key_for(
    tx: &crate::store::Tx<'_>,
    seq: u64,
) -> Result<(Option<SecretKey>, Option<KeyRotation>), UplinkError> {
    let Some(k) = tx
        .vessel_keys()?
        .into_iter()
        .rev()
        .find(|k| k.from_seq <= seq)
    else {
        return Ok((None, None));
    };
    let key = SecretKey::load(Path::new(&k.path)).map_err(|e| {
        UplinkError::Setup(format!(
            "the vessel's rotated signing key: {e} (it was made by 'vessel-sync rotate-key'; restore the file from backup, or have shore register a new key with 'shore vessel rekey')"
        ))
    })?;
    let rotation = if tx.acked_seq()? < k.from_seq {
        serde_json::from_str(&k.rotation).ok()
    } else {
        None
    };
    Ok((Some(key), rotation))
}

/// What `rotate-key` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotated {
    /// The key retired.
    pub old_key: String,
    /// The new key.
    pub new_key: String,
    /// Its private key file.
    pub path: PathBuf,
    /// The first batch it signs.
    pub from_seq: u64,
}

/// Makes a new vessel signing key (`STATE_DIR/keys/vessel-ID.key`) that signs every batch from
/// the next one on; those batches carry the new public key signed by the old one until shore
/// acknowledges one of them. Batches already built keep their old signature. Refused while an
/// earlier rotation still waits for shore.
pub fn rotate_key(store: &mut Store, cfg: &Config, now: i64) -> Result<Rotated, UplinkError> {
    let configured = cfg.uplink.signing_key.as_ref().ok_or_else(|| {
        UplinkError::Setup("uplink.signing_key is not set: there is no vessel key to rotate".into())
    })?;
    let dir = cfg.paths.state_dir.join("keys");
    let tx = store.begin()?;
    let keys = tx.vessel_keys()?;
    if let Some(last) = keys.last() {
        if tx.acked_seq()? < last.from_seq {
            return Err(UplinkError::Setup(format!(
                "the rotation to key {} (from batch {}) still waits for shore's acknowledgement; rotate again once shore has acknowledged batch {} ('vessel-sync status' shows the acknowledged batch)",
                last.key_id, last.from_seq, last.from_seq
            )));
        }
    }
    let old_path = keys
        .last()
        .map_or_else(|| configured.clone(), |k| PathBuf::from(&k.path));
    let old = SecretKey::load(&old_path)
        .map_err(|e| UplinkError::Setup(format!("the current signing key: {e}")))?;
    let new = SecretKey::generate().map_err(|e| UplinkError::Io(e.to_string()))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| UplinkError::Io(format!("{}: {e}", dir.display())))?;
    let prefix = dir.join(format!("vessel-{}", new.id));
    let (key_path, _) = new
        .write_pair(&prefix, &format!("{} (rotated)", cfg.vessel_id))
        .map_err(|e| UplinkError::Io(e.to_string()))?;
    let from_seq = tx.next_batch_seq()?;
    let public = PublicKey {
        key: new.key.verifying_key(),
        id: new.id.clone(),
        name: cfg.vessel_id.clone(),
    };
    let statement = KeyRotation::issue(&old, &public, &cfg.vessel_id, from_seq, now);
    tx.add_vessel_key(&crate::store::VesselKey {
        key_id: new.id.clone(),
        path: key_path.to_string_lossy().into_owned(),
        from_seq,
        rotation: serde_json::to_string(&statement).unwrap_or_default(),
        created_at: now,
    })?;
    tx.audit(
        now,
        "local",
        None,
        None,
        "vessel_key_rotated",
        "rotate-key",
        &format!(
            "signing key {} replaced by {} from batch {from_seq} on; the batches carry the new key signed by the old one until shore acknowledges one",
            old.id, new.id
        ),
    )?;
    tx.commit()?;
    Ok(Rotated {
        old_key: old.id,
        new_key: new.id,
        path: key_path,
        from_seq,
    })
}

/// Builds batches from unbatched outbox records while fewer than `max_pending` wait.
pub fn build_batches(
    store: &mut Store,
    vessel: &str,
    key: &SecretKey,
    batch_records: u64,
    max_pending: u64,
    scratch: &Path,
    now: i64,
) -> Result<u64, UplinkError> {
    let mut built = 0;
    loop {
        if store.outbox_summary()?.batches >= max_pending {
            return Ok(built);
        }
        let tx = store.begin()?;
        let records = tx.unbatched(batch_records)?;
        // Content a delta bundle lacked is asked for in the next batch, one with no records if
        // need be; asked again if no answer came within NEED_REASK.
        let mut needs = tx.needs_to_ask(now - NEED_REASK)?;
        // Only bundles with valid ids can be named (older journals may hold others).
        needs.retain(|n| wire::ids::check_id("bundle id", &n.bundle).is_ok());
        // Within a manifest's caps; what is left over is asked in the next batch.
        needs.truncate(wire::envelope::manifest::MAX_NEED_BUNDLES);
        let mut room = wire::envelope::manifest::MAX_NEED_FILES;
        for n in &mut needs {
            n.sha256.truncate(room);
            room -= n.sha256.len();
        }
        needs.retain(|n| !n.sha256.is_empty());
        // So are the commands whose state shore has not been told of (`shore course status`).
        let reports = tx.reports_due()?;
        let (first, last) = match (records.first().map(|r| r.0), records.last().map(|r| r.0)) {
            (Some(first), Some(last)) => (first, last),
            _ if !needs.is_empty() || reports.state_changed => (1, 0),
            _ => return Ok(built),
        };
        let seq = tx.next_batch_seq()?;
        let recs: Vec<_> = records.into_iter().map(|(_, r)| r).collect();
        let settled = tx.acked_seq()?;
        let payload = codec::encode_batch(&recs, settled);
        let (rotated, rotation) = signing_key_for(&tx, seq)?;
        let key = rotated.as_ref().unwrap_or(key);
        let extra = Extra {
            certificate: None,
            key_rotation: rotation,
            previous: tx.fact(LAST_BATCH_DIGEST)?,
            need_files: needs.clone(),
            command_reports: reports.reports.clone(),
        };
        let draft = Draft {
            kind: Kind::Progress,
            sender: vessel.to_string(),
            recipient: SHORE.into(),
            sequence: seq,
            not_before: None,
            expires: None,
            commands: vec![],
            files: vec![(RECORDS_MEMBER.into(), Source::Bytes(payload))],
            id: None,
        };
        let path = scratch.join(format!(".batch-{seq}.vsb"));
        let (manifest, digest) = write_envelope_with(&draft, &extra, key, now, &path)
            .map_err(|e| UplinkError::Io(format!("writing batch {seq}: {e}")))?;
        let bytes = std::fs::read(&path)
            .map_err(|e| UplinkError::Io(format!("{}: {e}", path.display())))?;
        let _ = std::fs::remove_file(&path);
        failpoint::hit("batch.before-commit");
        tx.store_batch(
            &crate::store::NewBatch {
                seq,
                envelope_id: &manifest.id,
                first,
                last,
                records: recs.len() as u64,
                envelope: &bytes,
            },
            now,
        )?;
        tx.set_fact(LAST_BATCH_DIGEST, &digest)?;
        tx.needs_asked(&needs, seq, now)?;
        tx.reports_sent(&reports, seq)?;
        tx.commit()?;
        failpoint::hit("batch.after-commit");
        tracing::info!(
            seq,
            records = recs.len(),
            bytes = bytes.len(),
            "batch built"
        );
        built += 1;
    }
}

/// The uplink: configuration, the vessel's key, and (HTTPS) one reusable client.
pub struct Uplink {
    cfg: UplinkSettings,
    vessel: String,
    scratch: PathBuf,
    inbox: PathBuf,
    outbound: PathBuf,
    key: SecretKey,
    token: Option<String>,
    client: Option<reqwest::blocking::Client>,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

enum Exchange {
    Reply(Reply, u64),
    Retry(String, Option<i64>),
    Permanent(String),
    Replayed(u64),
}

impl Uplink {
    /// Prepares the uplink for `cfg`; `None` when the mode is `off`.
    pub fn new(cfg: &Config) -> Result<Option<Self>, UplinkError> {
        let u = &cfg.uplink;
        if u.mode == UplinkMode::Off {
            return Ok(None);
        }
        let key_path = u
            .signing_key
            .as_ref()
            .ok_or_else(|| UplinkError::Setup("uplink.signing_key is required".into()))?;
        let key = SecretKey::load(key_path)
            .map_err(|e| UplinkError::Setup(format!("uplink.signing_key: {e}")))?;
        let (token, client) = if u.mode == UplinkMode::Https {
            let tf = u
                .token_file
                .as_ref()
                .ok_or_else(|| UplinkError::Setup("uplink.token_file is required".into()))?;
            let client = wire::net::http_client(
                &u.trust,
                Duration::from_secs(u.connect_timeout),
                Duration::from_secs(u.timeout),
            )
            .map_err(|e| UplinkError::Setup(format!("uplink TLS: {e}")))?;
            (Some(read_token(tf)?), Some(client))
        } else {
            (None, None)
        };
        Ok(Some(Self {
            cfg: u.clone(),
            vessel: cfg.vessel_id.clone(),
            scratch: cfg.paths.state_dir.clone(),
            inbox: cfg.paths.inbox.clone(),
            outbound: cfg.paths.outbound.clone(),
            key,
            token,
            client,
            stop: None,
        }))
    }

    /// A flag that ends a cycle between two exchanges (the agent's stop request).
    pub fn set_stop(&mut self, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.stop = Some(stop);
    }

    fn stopping(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Whether a cycle is due now (the backoff and schedule are kept in the database).
    pub fn due(&self, store: &Store, now: i64) -> bool {
        self.next_attempt(store) <= now
    }

    /// When the next cycle is due.
    pub fn next_attempt(&self, store: &Store) -> i64 {
        store
            .fact("next_attempt_at")
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn schedule(&self, store: &mut Store, at: i64, reason: &str) -> Result<(), UplinkError> {
        store.write(|tx| {
            tx.set_fact("next_attempt_at", &at.to_string())?;
            tx.set_fact("next_attempt_reason", reason)
        })?;
        Ok(())
    }

    fn budget_left(&self, store: &Store, now: i64) -> Result<u64, UplinkError> {
        let ((du, dd), (mu, md)) = store.traffic(&day_of(now))?;
        let mut left = u64::MAX;
        if self.cfg.daily_budget > 0 {
            left = left.min(self.cfg.daily_budget.saturating_sub(du + dd));
        }
        if self.cfg.monthly_budget > 0 {
            left = left.min(self.cfg.monthly_budget.saturating_sub(mu + md));
        }
        Ok(left)
    }

    /// One sync cycle.
    pub fn cycle(&mut self, store: &mut Store, now: i64) -> Result<CycleReport, UplinkError> {
        let mut report = CycleReport::default();
        let interval = i64::try_from(self.cfg.interval).unwrap_or(300);
        if !in_window(&self.cfg.windows, now) {
            let at = next_window_start(&self.cfg.windows, now);
            let why = format!(
                "outside the allowed windows (uplink.windows); next window opens {}",
                format_time(at)
            );
            self.schedule(store, at, &why)?;
            report.held = Some(why);
            report.next_attempt = at;
            return Ok(report);
        }
        match self.cfg.mode {
            UplinkMode::Off => {}
            UplinkMode::Files => self.files_cycle(store, now, &mut report)?,
            UplinkMode::Https => self.https_cycle(store, now, &mut report)?,
        }
        report.acked_seq = store.outbox_summary()?.acked_seq;
        if report.next_attempt == 0 {
            report.next_attempt = now + interval;
            let why = report
                .held
                .clone()
                .unwrap_or_else(|| "regular schedule (uplink.interval)".into());
            self.schedule(store, report.next_attempt, &why)?;
        }
        Ok(report)
    }

    fn files_cycle(
        &mut self,
        store: &mut Store,
        now: i64,
        report: &mut CycleReport,
    ) -> Result<(), UplinkError> {
        report.built += build_batches(
            store,
            &self.vessel,
            &self.key,
            self.cfg.batch_records,
            1000,
            &self.scratch,
            now,
        )?;
        let resend = i64::try_from(self.cfg.resend_after).unwrap_or(i64::MAX);
        std::fs::create_dir_all(&self.outbound)
            .map_err(|e| UplinkError::Io(format!("{}: {e}", self.outbound.display())))?;
        for b in store.pending_batches()? {
            if b.written_at.is_some_and(|t| now - t < resend) {
                continue;
            }
            let path = self
                .outbound
                .join(format!("{}-progress-{:08}.vsb", self.vessel, b.seq));
            base::fsutil::atomic_write(&path, &b.envelope)
                .map_err(|e| UplinkError::Io(format!("{}: {e}", path.display())))?;
            store.write(|tx| tx.mark_written_out(b.seq, now))?;
            tracing::info!(seq = b.seq, file = %path.display(), again = b.written_at.is_some(), "batch written for the carrier");
            report.exchanges += 1;
        }
        store.write(|tx| tx.set_fact("last_contact_at", &now.to_string()))?;
        Ok(())
    }

    fn post(&self, store: &Store, body: Vec<u8>, now: i64) -> Exchange {
        let (Some(client), Some(token)) = (&self.client, &self.token) else {
            return Exchange::Permanent("uplink not configured for https".into());
        };
        let summary = store.outbox_summary().unwrap_or_default();
        let cursor = store
            .fact("bundle_cursor")
            .ok()
            .flatten()
            .unwrap_or_else(|| "0".into());
        let oldest = summary
            .oldest_captured_at
            .map(|t| (now - t).max(0))
            .unwrap_or(0);
        let url = format!("{}/v1/sync", self.cfg.url);
        let resp = client
            .post(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("x-vessel-id", &self.vessel)
            .header("x-bundle-cursor", cursor)
            .header("x-oldest-unsent", oldest.to_string())
            .header("x-outbox-depth", summary.records.to_string())
            .header("content-type", "application/vnd.vessel-sync.envelope")
            .body(body)
            .send();
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                return Exchange::Retry(
                    format!("cannot reach shore at {url}: {}", error_chain(&e)),
                    None,
                );
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok());
        let text = match resp.bytes() {
            Ok(b) => b,
            Err(e) => {
                return Exchange::Retry(
                    format!("reply from shore cut off: {}", error_chain(&e)),
                    None,
                );
            }
        };
        let reply: Option<Reply> = serde_json::from_slice(&text).ok();
        let words = reply
            .as_ref()
            .map(|r| {
                format!(
                    "{}: {}",
                    r.error.clone().unwrap_or_default(),
                    r.message.clone().unwrap_or_default()
                )
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned());
        match status {
            200 => match reply {
                Some(r) => Exchange::Reply(r, text.len() as u64),
                None => Exchange::Retry("shore's reply is not the expected JSON".into(), None),
            },
            409 if reply.as_ref().and_then(|r| r.error.as_deref()) == Some("replayed") => {
                Exchange::Replayed(reply.and_then(|r| r.acked_seq).unwrap_or(0))
            }
            408 | 429 | 500..=599 => Exchange::Retry(
                format!("shore answered HTTP {status} ({words})"),
                retry_after,
            ),
            _ => Exchange::Permanent(format!("shore refused with HTTP {status} ({words})")),
        }
    }

    fn https_cycle(
        &mut self,
        store: &mut Store,
        now: i64,
        report: &mut CycleReport,
    ) -> Result<(), UplinkError> {
        let mut offers: Vec<Offer> = Vec::new();
        // Bounded: a cycle never spins; a backlog drains over consecutive exchanges.
        for _ in 0..64 {
            if self.stopping() {
                report.held = Some("the agent is stopping".into());
                break;
            }
            report.built += build_batches(
                store,
                &self.vessel,
                &self.key,
                self.cfg.batch_records,
                1,
                &self.scratch,
                now,
            )?;
            let batch = store.pending_batch()?;
            let body = batch
                .as_ref()
                .map(|b| b.envelope.clone())
                .unwrap_or_default();
            let left = self.budget_left(store, now)?;
            if left < body.len() as u64 + 2048 {
                let why = format!(
                    "byte budget used up (uplink.daily_budget / monthly_budget); {} bytes left",
                    left
                );
                report.held = Some(why);
                break;
            }
            let sent = body.len() as u64 + 600;
            let outcome = self.post(store, body, now);
            report.exchanges += 1;
            let received = match &outcome {
                Exchange::Reply(_, n) => *n + 300,
                _ => 300,
            };
            store.write(|tx| tx.add_traffic(&day_of(now), sent, received))?;
            match outcome {
                Exchange::Reply(reply, _) => {
                    failpoint::hit("sync.before-ack");
                    let acked = reply.acked_seq.unwrap_or(0);
                    store.write(|tx| {
                        if batch.is_some() || store_has_no_batches(tx)? {
                            tx.raise_ack("outbox", acked, "https", now)?;
                        }
                        tx.set_fact("last_contact_at", &now.to_string())?;
                        tx.set_fact("failures", "0")?;
                        tx.clear_fact("last_error")?;
                        tx.clear_fact("permanent_error")
                    })?;
                    failpoint::hit("sync.after-ack");
                    offers = reply.bundles;
                    if let Some(b) = &batch {
                        if acked < b.seq {
                            // Shore holds the batch but acknowledges only up to an earlier one it
                            // still waits for (a file carrier's batch in transit): sending it
                            // again now would not help.
                            report.held = Some(format!(
                                "shore holds batch {} but acknowledges only up to {acked}; it waits for an earlier batch",
                                b.seq
                            ));
                            break;
                        }
                    }
                    let summary = store.outbox_summary()?;
                    let more = summary.batches > 0 || summary.records > summary.batched;
                    if batch.is_none() || !more {
                        break;
                    }
                }
                Exchange::Replayed(shore_acked) => {
                    if let Some(b) = &batch {
                        tracing::warn!(
                            seq = b.seq,
                            shore_acked,
                            "shore already holds this batch sequence with other content; renumbering"
                        );
                        store.write(|tx| tx.renumber_after(b.seq, shore_acked))?;
                    }
                }
                Exchange::Retry(why, retry_after) => {
                    let failures: u32 = store
                        .fact("failures")?
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let cap = i64::try_from(self.cfg.backoff_max).unwrap_or(3600);
                    // Shore's Retry-After wins over a shorter backoff.
                    let wait = base::retry::backoff(failures.saturating_add(1), 5, cap)
                        .max(retry_after.unwrap_or(0));
                    let at = now + wait;
                    if let Some(b) = &batch {
                        store.write(|tx| tx.note_batch_attempt(b.seq, Some(&why)))?;
                    }
                    store.write(|tx| {
                        tx.set_fact("failures", &(failures + 1).to_string())?;
                        tx.set_fact("last_error", &why)
                    })?;
                    tracing::warn!(retry_in = %format_age(wait), "uplink: {why}");
                    let reason = format!("retry after failure {} ({why})", failures + 1);
                    self.schedule(store, at, &reason)?;
                    report.held = Some(why);
                    report.next_attempt = at;
                    return Ok(());
                }
                Exchange::Permanent(why) => {
                    tracing::error!("uplink: {why}");
                    store.write(|tx| {
                        tx.set_fact("permanent_error", &why)?;
                        tx.set_fact("last_error", &why)
                    })?;
                    let at = now + PERMANENT_RETRY;
                    self.schedule(store, at, &format!("stopped by a permanent refusal: {why}"))?;
                    report.held = Some(why);
                    report.next_attempt = at;
                    return Ok(());
                }
            }
        }
        self.download(store, now, offers, report)
    }

    fn download(
        &mut self,
        store: &mut Store,
        now: i64,
        offers: Vec<Offer>,
        report: &mut CycleReport,
    ) -> Result<(), UplinkError> {
        let (Some(client), Some(token)) = (&self.client, &self.token) else {
            return Ok(());
        };
        let mut offers = offers;
        offers.sort_by_key(|o| o.queue_id);
        for o in offers {
            if self.stopping() {
                break;
            }
            // Progress first: a download may not eat the reserve kept for progress batches.
            let left = self.budget_left(store, now)?;
            let reserve = self.cfg.daily_budget / 10;
            if left != u64::MAX && left < o.size.saturating_add(reserve) {
                report.held = Some(format!(
                    "bundle {} ({} bytes) waits: the byte budget left ({left}) is kept for progress",
                    o.bundle_id, o.size
                ));
                break;
            }
            let safe_id: String = o
                .bundle_id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(64)
                .collect();
            let part = self.inbox.join(format!(".dl-{}.part", o.queue_id));
            let dest = self
                .inbox
                .join(format!("shore-{:08}-{safe_id}.vsb", o.queue_id));
            let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            if have > o.size {
                let _ = std::fs::remove_file(&part);
                have = 0;
            }
            // The download URL is built here from the queue id; shore's `path` must say the
            // same, or the offer is not followed anywhere else.
            let path = format!("/v1/bundles/{}", o.queue_id);
            if o.path != path || o.queue_id < 1 {
                report.held = Some(format!(
                    "shore offered bundle {} at {:?}, not at {path}; not downloaded",
                    base::text::clip(&o.bundle_id, 64),
                    base::text::clip(&o.path, 80)
                ));
                break;
            }
            let url = format!("{}{path}", self.cfg.url);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&part)
                .map_err(|e| UplinkError::Io(format!("{}: {e}", part.display())))?;
            while have < o.size {
                let end = (have + (4 << 20)).min(o.size) - 1;
                let resp = client
                    .get(&url)
                    .header("authorization", format!("Bearer {token}"))
                    .header("x-vessel-id", &self.vessel)
                    .header("range", format!("bytes={have}-{end}"))
                    .send()
                    .and_then(|r| r.error_for_status());
                let mut resp = match resp {
                    Ok(r) => r,
                    Err(e) => {
                        report.held = Some(format!(
                            "download of bundle {} paused at {have} of {} bytes: {}",
                            o.bundle_id,
                            o.size,
                            error_chain(&e)
                        ));
                        return Ok(());
                    }
                };
                // At most what was asked for (and a byte more, to see a reply that overran).
                let mut buf = Vec::new();
                if let Err(e) = resp.by_ref().take(end + 2 - have).read_to_end(&mut buf) {
                    report.held = Some(format!(
                        "download of bundle {} cut at {have} bytes: {e}",
                        o.bundle_id
                    ));
                    return Ok(());
                }
                if buf.is_empty() {
                    break;
                }
                file.write_all(&buf)
                    .map_err(|e| UplinkError::Io(format!("{}: {e}", part.display())))?;
                have += buf.len() as u64;
                store.write(|tx| tx.add_traffic(&day_of(now), 300, buf.len() as u64 + 300))?;
            }
            file.sync_all()
                .map_err(|e| UplinkError::Io(format!("{}: {e}", part.display())))?;
            drop(file);
            let digest = sha256_file(&part)?;
            if digest != o.sha256 {
                let _ = std::fs::remove_file(&part);
                report.held = Some(format!(
                    "bundle {} arrived damaged (digest mismatch); it is downloaded again next cycle",
                    o.bundle_id
                ));
                return Ok(());
            }
            base::fsutil::commit_temp(&part, &dest)
                .map_err(|e| UplinkError::Io(format!("{}: {e}", dest.display())))?;
            store.write(|tx| tx.set_fact("bundle_cursor", &o.queue_id.to_string()))?;
            tracing::info!(bundle = %o.bundle_id, bytes = o.size, "bundle downloaded into the inbox");
            report.downloaded += 1;
        }
        Ok(())
    }
}

fn store_has_no_batches(tx: &crate::store::Tx<'_>) -> Result<bool, StoreError> {
    Ok(!tx.has_batches()?)
}

fn sha256_file(path: &Path) -> Result<String, UplinkError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| UplinkError::Io(format!("{}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| UplinkError::Io(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_midnight_and_name_the_next_opening() {
        let day = 1_795_305_600; // 2026-11-22T00:00:00Z
        let w = [(22 * 60, 6 * 60)];
        assert!(in_window(&w, day + 23 * 3600));
        assert!(in_window(&w, day + 3600));
        assert!(!in_window(&w, day + 12 * 3600));
        assert_eq!(next_window_start(&w, day + 12 * 3600), day + 22 * 3600);
        assert!(in_window(&[], day));
    }
}
