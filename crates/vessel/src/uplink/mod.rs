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
//! is tight, progress goes first and bundle downloads wait. The bytes booked against the
//! budgets are those the client counted on its socket ([`wire::link`]); the connection lives for
//! one cycle.
//!
//! Cadence ([`Cadence`]): while records wait, the next exchange comes after `interval`; an idle
//! vessel checks in after `idle_interval`; shore's `poll_in` shortens either. New work
//! ([`Uplink::nudge`]: a capture that queued progress, commands that ran) brings the next
//! exchange forward to `interval` after the last contact, but never hurries a backoff.
//!
//! Files mode: every batch is written atomically into the outbound directory for a carrier and
//! written again if no acknowledgement came within `resend_after`; shore's `ack` bundles come
//! back through the inbox.
//!
//! Rooms: this file holds the cycle and its schedule (windows, budgets, backoff); `batch`
//! builds and signs batches; `exchange` is one HTTPS exchange and the retry rule that
//! classifies its answer; `download` fetches the bundles shore offers. Key rotation is
//! [`crate::rotate`].

mod batch;
mod download;
mod exchange;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, UplinkMode, UplinkSettings};
use crate::store::{Store, StoreError};
use base::clock::{format_age, format_time};
use base::failpoint;
use wire::envelope::SecretKey;
use wire::link::Tally;

pub use batch::build_batches;
use batch::store_has_no_batches;
use exchange::{Exchange, Offer};

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

impl base::retry::Retriable for UplinkError {
    /// A busy journal or a full disk may pass; a setup error waits for the operator.
    fn is_retriable(&self) -> bool {
        match self {
            UplinkError::Store(e) => e.is_retriable(),
            UplinkError::Io(_) => true,
            UplinkError::Setup(_) => false,
        }
    }
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
    /// Their files (whole, checked against their digests): the agent applies them in the same
    /// run without waiting for them to settle.
    #[serde(skip)]
    pub downloaded_files: Vec<PathBuf>,
    /// Why the cycle stopped early, if it did.
    pub held: Option<String>,
    /// When the next cycle is due (Unix seconds).
    pub next_attempt: i64,
    /// What the cycle cost on the link (HTTPS mode): bytes, round trips, connections.
    pub link: wire::link::Tally,
    /// Shore asked to hear from the vessel again within this many seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_in: Option<i64>,
}

pub(crate) fn day_of(t: i64) -> String {
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

/// The uplink: configuration, the vessel's key, and (HTTPS) one reusable client.
pub struct Uplink {
    cfg: UplinkSettings,
    vessel: String,
    scratch: PathBuf,
    inbox: PathBuf,
    outbound: PathBuf,
    key: SecretKey,
    token: Option<String>,
    client: Option<wire::link::LinkClient>,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
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
            let client = wire::link::LinkClient::new(
                &u.url,
                &u.trust,
                Duration::from_secs(u.connect_timeout),
                Duration::from_secs(u.timeout),
            )
            .map_err(|e| UplinkError::Setup(format!("uplink: {e}")))?;
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
        store.uplink_state().map(|s| s.next_attempt_at).unwrap_or(0)
    }

    fn schedule(&self, store: &mut Store, at: i64, reason: &str) -> Result<(), UplinkError> {
        store.write(|tx| tx.schedule_sync(at, reason))?;
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
        let summary = store.outbox_summary()?;
        report.acked_seq = summary.acked_seq;
        if report.next_attempt == 0 {
            let (wait, why) = Cadence::of(&self.cfg).next_wait(
                summary.records > 0,
                report.poll_in,
                report.held.as_deref(),
            );
            report.next_attempt = now + wait;
            self.schedule(store, report.next_attempt, &why)?;
        }
        Ok(report)
    }

    /// The operator asked (SIGHUP): the next exchange is due now, backoff or not.
    pub fn exchange_now(&self, store: &mut Store, now: i64, why: &str) -> Result<(), UplinkError> {
        self.schedule(store, now, why)
    }

    /// Work appeared (a capture found changes, a bundle came through the inbox): the next
    /// exchange is brought forward to `uplink.interval` after the last contact, or now, unless
    /// a backoff or a permanent refusal holds the link. Returns when it is now due.
    pub fn nudge(&self, store: &mut Store, now: i64, why: &str) -> Result<i64, UplinkError> {
        let state = store.uplink_state()?;
        if state.failures > 0 || state.permanent_error.is_some() {
            return Ok(state.next_attempt_at);
        }
        let interval = i64::try_from(self.cfg.interval).unwrap_or(300);
        let at = state
            .last_contact_at
            .map_or(now, |t| t.saturating_add(interval))
            .max(now);
        if at < state.next_attempt_at {
            self.schedule(store, at, why)?;
            return Ok(at);
        }
        Ok(state.next_attempt_at)
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
        store.write(|tx| tx.note_contact(now))?;
        Ok(())
    }

    /// What the link has cost this process so far.
    fn tally(&self) -> Tally {
        self.client
            .as_ref()
            .map(wire::link::LinkClient::tally)
            .unwrap_or_default()
    }

    /// Books what the link cost since `before` on today's traffic (the budgets and the bill).
    fn bill(&self, store: &mut Store, now: i64, before: &Tally) -> Result<(), UplinkError> {
        let spent = self.tally().since(before);
        if spent.bytes() > 0 {
            store.write(|tx| tx.add_traffic(&day_of(now), spent.up, spent.down))?;
        }
        Ok(())
    }

    fn https_cycle(
        &mut self,
        store: &mut Store,
        now: i64,
        report: &mut CycleReport,
    ) -> Result<(), UplinkError> {
        let start = self.tally();
        let out = self.https_exchanges(store, now, report);
        // The next cycle is minutes away: a connection kept that long only dies on the way.
        if let Some(c) = self.client.as_mut() {
            c.close();
        }
        report.link = self.tally().since(&start);
        out
    }

    fn https_exchanges(
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
            let before = self.tally();
            let outcome = self.post(store, &body, now);
            report.exchanges += 1;
            self.bill(store, now, &before)?;
            match outcome {
                Exchange::Reply(reply) => {
                    report.poll_in = reply.poll_in.filter(|s| *s >= 0);
                    failpoint::hit("sync.before-ack");
                    let acked = reply.acked_seq.unwrap_or(0);
                    store.write(|tx| {
                        if batch.is_some() || store_has_no_batches(tx)? {
                            tx.raise_ack("outbox", acked, "https", now)?;
                        }
                        tx.note_sync_success(now)
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
                    if let Some(b) = &batch {
                        store.write(|tx| tx.note_batch_attempt(b.seq, Some(&why)))?;
                    }
                    let failures = store.write(|tx| tx.note_sync_failure(&why))?;
                    let cap = i64::try_from(self.cfg.backoff_max).unwrap_or(3600);
                    // Shore's Retry-After wins over a shorter backoff.
                    let wait = base::retry::backoff(failures, 5, cap).max(retry_after.unwrap_or(0));
                    let at = now + wait;
                    tracing::warn!(retry_in = %format_age(wait), "uplink: {why}");
                    let reason = format!("retry after failure {failures} ({why})");
                    self.schedule(store, at, &reason)?;
                    report.held = Some(why);
                    report.next_attempt = at;
                    return Ok(());
                }
                Exchange::Permanent(why) => {
                    tracing::error!("uplink: {why}");
                    store.write(|tx| tx.note_permanent_refusal(&why))?;
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
}

/// Shortest wait shore's `poll_in` may ask for, seconds.
pub const MIN_POLL: i64 = 30;

/// The uplink's cadence: when the next exchange is due after a cycle that ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// Seconds while records wait (`uplink.interval`).
    pub interval: i64,
    /// Seconds while nothing waits (`uplink.idle_interval`).
    pub idle: i64,
    /// Files mode: a carrier's schedule, no check-ins.
    pub files: bool,
}

impl Cadence {
    /// The cadence of `cfg`.
    pub fn of(cfg: &UplinkSettings) -> Self {
        Self {
            interval: i64::try_from(cfg.interval).unwrap_or(300),
            idle: i64::try_from(cfg.idle_interval).unwrap_or(3600),
            files: cfg.mode == UplinkMode::Files,
        }
    }

    /// How long until the next exchange, and why: records still waiting (a budget or a window
    /// held them) come back after `interval`; an idle vessel checks in after `idle`; shore's
    /// `poll_in` (at least [`MIN_POLL`]) shortens either; a hold names itself as the reason.
    pub fn next_wait(
        &self,
        records_waiting: bool,
        poll_in: Option<i64>,
        held: Option<&str>,
    ) -> (i64, String) {
        let (mut wait, mut why) = if records_waiting || self.files {
            (
                self.interval,
                "records wait to go home (uplink.interval)".to_string(),
            )
        } else {
            (
                self.idle,
                "nothing to send: checking in (uplink.idle_interval)".to_string(),
            )
        };
        if let Some(p) = poll_in {
            let p = p.max(MIN_POLL);
            if p < wait {
                wait = p;
                why = "shore has something under way for this vessel".into();
            }
        }
        if let Some(h) = held {
            why = h.to_string();
        }
        (wait, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cadence, case by case: work waiting, idle, shore's poll_in (never below MIN_POLL,
    /// never lengthening), files mode, a hold's reason.
    #[test]
    fn the_next_exchange_follows_the_work_and_shores_poll_in() {
        let c = Cadence {
            interval: 300,
            idle: 3600,
            files: false,
        };
        assert_eq!(c.next_wait(true, None, None).0, 300);
        assert_eq!(c.next_wait(false, None, None).0, 3600);
        assert!(c.next_wait(false, None, None).1.contains("idle_interval"));
        assert_eq!(c.next_wait(false, Some(120), None).0, 120);
        assert!(c.next_wait(false, Some(120), None).1.contains("shore"));
        assert_eq!(c.next_wait(false, Some(0), None).0, MIN_POLL);
        assert_eq!(
            c.next_wait(true, Some(900), None).0,
            300,
            "poll_in never lengthens"
        );
        assert_eq!(c.next_wait(false, Some(-5), None).0, MIN_POLL);
        let held = c.next_wait(true, None, Some("byte budget used up"));
        assert_eq!(held, (300, "byte budget used up".into()));
        let files = Cadence { files: true, ..c };
        assert_eq!(
            files.next_wait(false, None, None).0,
            300,
            "a carrier's schedule"
        );
    }

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
