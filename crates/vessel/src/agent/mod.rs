//! The daemon: recovers from the journal, watches the inbox, admits bundles, runs commands, and
//! tells systemd the truth.
//!
//! One work loop owns the store; an operator's `capture`, `sync` or `rotate-key` takes its turn
//! between two steps of the loop (the work lock, [`WorkLock`]). Each pass: skip sequences whose gap timed out, fail bundles that
//! expired while waiting, scan and admit settled inbox files, then run commands until none is
//! runnable. Between passes the loop sleeps on a channel that file-system hints and signals wake;
//! the timeout is the earliest of the scan interval, a file settling, a waiting command's retry,
//! a gap timeout, and the watchdog period. A stop request is honoured between steps, never in the
//! middle of one; whatever was interrupted by a crash is resumed from the journal at start.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod lock;
mod runner;
mod wake;

pub use lock::{WorkLock, check_owner, is_running};
pub use wake::{Wake, wake_sources};

use crate::capture::{CaptureReport, apply_snapshot};
use crate::config::Config;
use crate::inbox::{self, Admitted, Scanner};
use crate::store::{CommandState, Store, StoreError};
use crate::uplink::{CycleReport, Uplink};
use base::clock::Clock;
use base::service::Notifier;

/// A command that was running when the agent died this many times in a row, within
/// [`crate::store::DEATH_WINDOW`] and with no progress in between, is given up (failed; the IT
/// officer can `vessel-sync retry` it). Power blips during a long import, which let it advance,
/// never reach this.
pub const MAX_DEATHS_WITHOUT_PROGRESS: i64 = 10;

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The journal failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A directory problem.
    #[error("{0}")]
    Io(String),
    /// Root working on a state directory that belongs to the service user.
    #[error(
        "refusing to run as root on {0}, which belongs to {2} (uid {1}): files root creates there would lock the service out; run as that user, e.g. sudo -u {2} vessel-sync ..."
    )]
    WrongUser(PathBuf, u32, String),
    /// The uplink cannot be set up (key, token, TLS files): a config problem.
    #[error("{0}")]
    Setup(String),
    /// Another agent holds the state directory.
    #[error(
        "another vessel-sync agent is already running with state directory {0} (lock file agent.lock); stop it first"
    )]
    Locked(PathBuf),
}

/// Why a SIGHUP scheduled an exchange.
const SYNC_ASKED: &str = "the operator asked (SIGHUP)";

/// What one or more passes did, for `--once` output and the demo.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Inbox files and what became of them.
    pub files: Vec<(String, Admitted)>,
    /// Commands run: (command id, type, final state, note).
    pub commands: Vec<(String, String, CommandState, String)>,
    /// Sequences given up on.
    pub skipped: Vec<String>,
    /// Files still arriving.
    pub arriving: Vec<PathBuf>,
    /// What a capture did, when one ran.
    pub capture: Option<CaptureReport>,
    /// What a sync cycle did, when one ran.
    pub sync: Option<CycleReport>,
}

impl Report {
    fn did_something(&self) -> bool {
        !self.files.is_empty() || !self.commands.is_empty() || !self.skipped.is_empty()
    }
    fn absorb(&mut self, other: Report) {
        self.files.extend(other.files);
        self.commands.extend(other.commands);
        self.skipped.extend(other.skipped);
        self.arriving = other.arriving;
        if other.capture.is_some() {
            self.capture = other.capture;
        }
        if other.sync.is_some() {
            self.sync = other.sync;
        }
    }
}

/// The running agent.
pub struct Agent {
    cfg: Config,
    store: Store,
    clock: Arc<dyn Clock>,
    scanner: Scanner,
    stop: Arc<AtomicBool>,
    notifier: Notifier,
    uplink: Option<Uplink>,
    moodle: Option<moodle::db::Database>,
    /// When Moodle's readiness was last asked, and why it could not take work then.
    gate: Option<(i64, Option<String>)>,
    _lock: File,
}

/// How long an answer of [`Agent::moodle_busy`] is kept (one check per pass, not per command).
const GATE_SECS: i64 = 60;
/// When a command that waited for maintenance or an upgrade is tried again.
const GATE_RETRY: i64 = 300;

fn io_err(what: &str, path: &Path, e: std::io::Error) -> AgentError {
    AgentError::Io(format!("{what} {}: {e}", path.display()))
}

impl Agent {
    /// Takes the state lock, creates directories, opens and migrates the journal, and recovers
    /// what a crash left behind.
    pub fn start(cfg: Config, clock: Arc<dyn Clock>) -> Result<Self, AgentError> {
        let p = &cfg.paths;
        fs::create_dir_all(&p.state_dir).map_err(|e| io_err("creating", &p.state_dir, e))?;
        check_owner(&p.state_dir)?;
        for dir in [&p.inbox, &p.work, &p.archive, &p.quarantine, &p.outbound] {
            fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
        }
        let lock = lock::lock(&p.state_dir)?;
        let store = Store::open(&p.database(), &cfg.vessel_id)?;
        let uplink = Uplink::new(&cfg).map_err(|e| AgentError::Setup(e.to_string()))?;
        let mut agent = Self {
            uplink,
            moodle: None,
            gate: None,
            cfg,
            store,
            clock,
            scanner: Scanner::default(),
            stop: Arc::new(AtomicBool::new(false)),
            notifier: Notifier::from_env(),
            _lock: lock,
        };
        agent.recover()?;
        Ok(agent)
    }

    /// The flag that makes the loop stop between steps.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The journal (read access for reports).
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn recover(&mut self) -> Result<(), AgentError> {
        // Work directories of finished or never-journaled bundles.
        let active = self.store.active_bundle_ids()?;
        let work = &self.cfg.paths.work;
        let entries = fs::read_dir(work).map_err(|e| io_err("reading", work, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !active.contains(&name) {
                let path = entry.path();
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if let Err(e) = removed {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a leftover work entry");
                }
            }
        }
        // Journaled bundles whose file never reached the archive and is no longer in the inbox.
        for (id, source) in self.store.unarchived()? {
            if !self.cfg.paths.inbox.join(&source).exists() {
                self.store.write(|tx| tx.mark_archived(&id))?;
            }
        }
        Ok(())
    }

    /// One pass; see the module doc.
    pub fn pass(&mut self) -> Result<Report, AgentError> {
        let mut report = Report::default();
        let now = self.clock.now();
        let gap = i64::try_from(self.cfg.inbox.gap_timeout).unwrap_or(i64::MAX);
        let skew = i64::try_from(self.cfg.inbox.clock_skew).unwrap_or(i64::MAX);
        for (id, issuer, exp) in self.store.expired_waiting(now, skew)? {
            let reason = format!(
                "the bundle expired at {} before it could be applied; ask shore for a fresh bundle",
                base::clock::format_time(exp)
            );
            self.store
                .write(|tx| tx.fail_bundle(&id, &issuer, &reason, now))?;
            tracing::warn!(bundle_id = %id, "{reason}");
        }
        report.skipped = self.store.write(|tx| tx.release_gaps(now, gap))?;
        for line in &report.skipped {
            tracing::warn!("{line}");
        }

        let settle = i64::try_from(self.cfg.inbox.settle).unwrap_or(i64::MAX);
        match self.scanner.scan(&self.cfg.paths.inbox, settle, now) {
            Err(e) => {
                tracing::error!(inbox = %self.cfg.paths.inbox.display(), error = %e, "cannot read the inbox")
            }
            Ok(scan) => {
                report.arriving = scan.arriving.iter().map(|(p, _)| p.clone()).collect();
                for path in scan.ready {
                    if self.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let notifier = &self.notifier;
                    let outcome = inbox::admit(
                        &mut self.store,
                        &self.cfg,
                        &path,
                        self.clock.now(),
                        &mut || notifier.keepalive(),
                    )?;
                    match &outcome {
                        Admitted::LeftForLater(why) => {
                            tracing::error!(file = %name, error = %why, "bundle left in the inbox for a later attempt");
                        }
                        Admitted::Journaled { id, waiting } => {
                            self.scanner.forget(&path);
                            tracing::info!(bundle_id = %id, file = %name, waiting, "bundle journaled");
                        }
                        Admitted::Duplicate(id) => {
                            self.scanner.forget(&path);
                            tracing::info!(bundle_id = %id, file = %name, "duplicate bundle ignored");
                        }
                        _ => self.scanner.forget(&path),
                    }
                    if !matches!(outcome, Admitted::LeftForLater(_)) {
                        report.files.push((name, outcome));
                    }
                }
            }
        }

        while !self.stop.load(Ordering::SeqCst) {
            match self.run_next()? {
                Some(done) => report.commands.push(done),
                None => break,
            }
        }
        Ok(report)
    }

    /// Captures progress from Moodle now (when `[moodle]` is configured).
    pub fn capture(&mut self) -> Option<Result<CaptureReport, String>> {
        let settings = self.cfg.moodle_db.clone()?;
        let now = self.clock.now();
        let result = (|| -> Result<CaptureReport, String> {
            if self.moodle.is_none() {
                self.moodle =
                    Some(moodle::db::Database::connect(&settings).map_err(|e| e.to_string())?);
            }
            let db = self.moodle.as_mut().ok_or("no connection")?;
            let snap = match self
                .notifier
                .keepalive_during(Duration::from_secs(600), || {
                    moodle::db::Source::snapshot(db)
                }) {
                Ok(s) => s,
                Err(e) => {
                    // A broken connection is made anew next time.
                    self.moodle = None;
                    return Err(e.to_string());
                }
            };
            self.notifier.keepalive();
            apply_snapshot(
                &mut self.store,
                &snap,
                &self.cfg.vessel_id,
                self.cfg.capture.require,
                now,
            )
            .map_err(|e| e.to_string())
        })();
        let note = match &result {
            Ok(r) => {
                if r.queued > 0 {
                    self.nudge_uplink("a capture found progress to send");
                }
                if r.changes > 0 {
                    tracing::info!(
                        rows = r.rows,
                        changes = r.changes,
                        queued = r.queued,
                        echoes = r.echoes,
                        quarantined = r.quarantined,
                        released = r.released,
                        "progress captured"
                    );
                }
                None
            }
            Err(e) => {
                tracing::error!("capture failed: {e}");
                Some(e.clone())
            }
        };
        let _ = self.store.write(|tx| {
            tx.set_fact("last_capture_attempt_at", &now.to_string())?;
            match &note {
                Some(e) => tx.set_fact("capture_error", e),
                None => tx.clear_fact("capture_error"),
            }
        });
        Some(result)
    }

    fn capture_due(&self, now: i64) -> Option<i64> {
        self.cfg.moodle_db.as_ref()?;
        let last: i64 = self
            .store
            .fact("last_capture_attempt_at")
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let next = last.saturating_add(i64::try_from(self.cfg.capture.interval).unwrap_or(900));
        // A command (a guarded deletion) asked for a capture now, after its last attempt.
        let asked: Option<i64> = self
            .store
            .fact("capture_requested_at")
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok());
        if asked.is_some_and(|a| a >= last) {
            return Some(now);
        }
        // A clock set back would otherwise postpone capture until it caught up again.
        Some(if last > now { now } else { next })
    }

    /// New work for shore (progress captured, a bundle applied): the next exchange comes
    /// forward ([`Uplink::nudge`]). `now`: the operator asked (SIGHUP), whatever the cadence.
    fn nudge_uplink(&mut self, why: &str) {
        let now = self.clock.now();
        let out = match self.uplink.as_ref() {
            Some(u) if why == SYNC_ASKED => u.exchange_now(&mut self.store, now, why),
            Some(u) => u.nudge(&mut self.store, now, why).map(drop),
            None => Ok(()),
        };
        if let Err(e) = out {
            tracing::warn!("cannot bring the next exchange forward: {e}");
        }
    }

    /// Runs one sync cycle now (when an uplink is configured).
    pub fn sync(&mut self) -> Option<Result<CycleReport, String>> {
        let now = self.clock.now();
        let uplink = self.uplink.as_mut()?;
        uplink.set_stop(self.stop.clone());
        // The watchdog stays fed while the cycle waits on the network, for at most a few
        // request timeouts: a cycle stuck beyond that still gets the service restarted.
        let u = &self.cfg.uplink;
        let max = Duration::from_secs((u.connect_timeout + u.timeout).saturating_mul(3));
        let store = &mut self.store;
        let out = self
            .notifier
            .keepalive_during(max, || uplink.cycle(store, now))
            .map_err(|e| e.to_string());
        // What the cycle downloaded is whole: the next pass applies it (`agent --once` in the
        // same run) without waiting for it to settle.
        if let Ok(r) = &out {
            for f in &r.downloaded_files {
                self.scanner.mark_complete(f.clone());
            }
        }
        Some(out)
    }

    fn sync_due(&self, now: i64) -> Option<i64> {
        let u = self.uplink.as_ref()?;
        let at = u.next_attempt(&self.store);
        // A clock set back must not silence the link for the length of the jump.
        let max_wait = i64::try_from(self.cfg.uplink.interval.max(self.cfg.uplink.backoff_max))
            .unwrap_or(3600);
        Some(
            if at
                > now
                    .saturating_add(max_wait)
                    .saturating_add(crate::uplink::PERMANENT_RETRY)
            {
                now
            } else {
                at
            },
        )
    }

    /// Runs what is due of capture and sync (the daemon calls this after every pass).
    fn periodic(&mut self, report: &mut Report) {
        let now = self.clock.now();
        if self.capture_due(now).is_some_and(|t| t <= now) {
            if let Some(Ok(r)) = self.capture() {
                report.capture = Some(r);
            }
        }
        if self.sync_due(now).is_some_and(|t| t <= now) {
            match self.sync() {
                Some(Ok(r)) => report.sync = Some(r),
                Some(Err(e)) => tracing::error!("sync failed: {e}"),
                None => {}
            }
        }
    }

    /// Runs passes until one does nothing, then one capture and one sync cycle, then passes
    /// again for what the sync downloaded (`--once`).
    pub fn run_once(&mut self) -> Result<Report, AgentError> {
        let Some(_work) = self.work_lock()? else {
            return Ok(Report::default());
        };
        let mut total = self.run_passes()?;
        // A Moodle database that is down does not keep what was captured before from going home.
        let mut capture_error = None;
        match self.capture() {
            Some(Ok(r)) => total.capture = Some(r),
            Some(Err(e)) => capture_error = Some(e),
            None => {}
        }
        if let Some(r) = self.sync() {
            total.sync = Some(r.map_err(AgentError::Io)?);
            let after = self.run_passes()?;
            total.absorb(after);
        }
        match capture_error {
            Some(e) => Err(AgentError::Io(format!("capture failed: {e}"))),
            None => Ok(total),
        }
    }

    fn run_passes(&mut self) -> Result<Report, AgentError> {
        let mut total = Report::default();
        loop {
            let r = self.pass()?;
            let more = r.did_something();
            total.absorb(r);
            if !more || self.stop.load(Ordering::SeqCst) {
                return Ok(total);
            }
        }
    }

    /// The work lock for one step of the loop: an operator's `capture`, `sync`, `rotate-key` or
    /// `retry` holding it is waited for, while the watchdog is fed and a stop request is
    /// honoured (`None`: stop). The wait polls: the lock is free but for an operator's command,
    /// and a blocking `flock` would neither feed the watchdog nor see SIGTERM.
    fn work_lock(&self) -> Result<Option<WorkLock>, AgentError> {
        let mut said = false;
        loop {
            if let Some(lock) = WorkLock::try_acquire(&self.cfg.paths.state_dir)? {
                return Ok(Some(lock));
            }
            if self.stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            if !said {
                tracing::info!("an operator's command is working on the journal; waiting for it");
                said = true;
            }
            self.notifier.keepalive();
            base::retry::pause(Duration::from_millis(250));
        }
    }

    /// A one-line status for systemd.
    pub fn status_line(&self) -> String {
        match self.store.overview() {
            Ok(o) => {
                let get = |m: &std::collections::BTreeMap<String, u64>, k: &str| {
                    m.get(k).copied().unwrap_or(0)
                };
                let mut s = format!(
                    "{} bundles done, {} failed; {} commands waiting",
                    get(&o.bundles, "done"),
                    get(&o.bundles, "failed"),
                    get(&o.commands, "waiting")
                );
                for g in &o.gaps {
                    s.push_str(&format!(
                        "; {} bundle(s) wait for sequence {} from {}",
                        g.waiting, g.missing, g.issuer
                    ));
                }
                s
            }
            Err(e) => format!("journal unreadable: {e}"),
        }
    }

    fn next_deadline(&self, report: &Report) -> i64 {
        let now = self.clock.now();
        let gap = i64::try_from(self.cfg.inbox.gap_timeout).unwrap_or(i64::MAX);
        let mut t = now.saturating_add(i64::try_from(self.cfg.inbox.scan_interval).unwrap_or(30));
        if let Ok(Some(w)) = self.store.next_wakeup(gap) {
            t = t.min(w);
        }
        if !report.arriving.is_empty() {
            t = t.min(now + 1);
        }
        if let Some(c) = self.capture_due(now) {
            t = t.min(c);
        }
        if let Some(u) = self.sync_due(now) {
            t = t.min(u);
        }
        t.max(now)
    }

    /// The daemon loop: runs until a [`Wake::Stop`] arrives or the stop flag is set.
    pub fn run(mut self, wake: &mpsc::Receiver<Wake>) -> Result<(), AgentError> {
        self.notifier.ready(&format!(
            "watching {}; {}",
            self.cfg.paths.inbox.display(),
            self.status_line()
        ));
        tracing::info!(vessel = %self.cfg.vessel_id, inbox = %self.cfg.paths.inbox.display(), "agent ready");
        let ping = self.notifier.ping_interval();
        loop {
            self.notifier.watchdog();
            let Some(work) = self.work_lock()? else {
                break;
            };
            let mut report = self.pass()?;
            if !report.commands.is_empty() {
                self.nudge_uplink("commands ran: their outcomes go home");
            }
            self.periodic(&mut report);
            drop(work);
            if report.did_something() {
                self.notifier.status(&self.status_line());
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let deadline = self.next_deadline(&report);
            let secs = u64::try_from(deadline - self.clock.now()).unwrap_or(0);
            let mut timeout = Duration::from_secs(secs).max(Duration::from_millis(200));
            if let Some(p) = ping {
                timeout = timeout.min(p);
            }
            let started = Instant::now();
            match wake.recv_timeout(timeout) {
                Ok(Wake::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Ok(Wake::Now) => {
                    tracing::info!("SIGHUP: rescanning and exchanging with shore now");
                    self.nudge_uplink(SYNC_ASKED);
                }
                Ok(Wake::Hint) => {
                    // Let a burst of events from one copy collapse into one scan.
                    while let Ok(w) = wake.try_recv() {
                        match w {
                            Wake::Stop => self.stop.store(true, Ordering::SeqCst),
                            Wake::Now => self.nudge_uplink(SYNC_ASKED),
                            Wake::Hint => {}
                        }
                    }
                    tracing::debug!(after = ?started.elapsed(), "inbox hint");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
        }
        self.notifier.stopping();
        tracing::info!("agent stopped");
        Ok(())
    }
}
