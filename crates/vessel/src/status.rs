//! What `vessel-sync status` shows, gathered from the journal, the directories and the keys
//! ([`gather`]); the command line (`src/cli/report.rs`) renders it. Nothing here prints.

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::config::UplinkMode;
use crate::inbox::ignored_name;
use crate::store::{
    AckState, AuditEntry, AuditEvent, OutboxSummary, Overview, QuarantinedProgress, Store,
};
use base::clock::{Clock, format_time};

/// Everything `vessel-sync status` shows (its `--json` is this, serialized).
#[derive(Serialize)]
pub struct Status {
    /// This vessel's id.
    pub vessel: String,
    /// The journal's path.
    pub database: String,
    /// Whether the agent holds its lock now.
    pub agent_running: bool,
    /// When this was read (RFC 3339).
    pub now: String,
    /// Files waiting in the inbox.
    pub inbox_pending: Vec<String>,
    /// Files in quarantine.
    pub quarantine_files: u64,
    /// The latest refused bundles.
    pub recent_rejections: Vec<AuditEntry>,
    /// Bundles ignored as received before.
    pub duplicates_ignored: u64,
    /// The command journal: counts by state, what is held and why.
    pub journal: Overview,
    /// Legacy-id mappings by kind.
    pub mappings: std::collections::BTreeMap<String, u64>,
    /// Shore's latest acknowledgement of the outbox.
    pub outbox_ack: Option<AckState>,
    /// Progress on its way home.
    pub progress: ProgressStatus,
    /// Learners whose progress a held command would touch.
    pub learner_impact: Vec<Impact>,
    /// Whose bundles are applied.
    pub trust: TrustStatus,
    /// Course content kept on board.
    pub content: ContentStatus,
}

/// The course content kept on board and what is owed by shore.
#[derive(Serialize, Default)]
pub struct ContentStatus {
    /// Content files kept.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The limit (`content_store_bytes`).
    pub limit_bytes: u64,
    /// Files asked of shore for a course sent by content.
    pub files_asked_of_shore: u64,
}

/// Whose bundles this vessel applies, and its own signing key.
#[derive(Serialize, Default)]
pub struct TrustStatus {
    /// Root keys.
    pub roots: Vec<KeyLine>,
    /// Keys listed in the config.
    pub listed: Vec<KeyLine>,
    /// Operator certificates seen.
    pub certified: Vec<CertLine>,
    /// Keys revoked by command.
    pub revoked: Vec<crate::store::Revocation>,
    /// This vessel's own signing key id.
    pub signing_key: Option<String>,
    /// A key rotation waiting for shore's acknowledgement.
    pub rotation_pending: Option<crate::store::VesselKey>,
}

/// What `status` shows of KeyLine.
#[derive(Serialize)]
pub struct KeyLine {
    /// The key's id.
    pub key_id: String,
    /// Its name.
    pub name: String,
}

/// What `status` shows of CertLine.
#[derive(Serialize)]
pub struct CertLine {
    /// The key's id.
    pub key_id: String,
    /// Its name.
    pub name: String,
    /// The command kinds it may sign.
    pub may_sign: Vec<String>,
    /// The vessels it may sign for.
    pub recipients: Vec<String>,
    /// When the certificate ends.
    pub not_after: String,
    /// Whether it has ended.
    pub expired: bool,
    /// Keys revoked by command.
    pub revoked: bool,
    /// Where it was seen.
    pub source: String,
}

fn trust_status(cfg: &Config, store: &Store, now: i64) -> TrustStatus {
    let lines = |k: &wire::envelope::Keyring| {
        k.iter()
            .map(|k| KeyLine {
                key_id: k.id.clone(),
                name: k.name.clone(),
            })
            .collect()
    };
    // A journal not yet migrated by this build (the agent has not started since the upgrade)
    // holds no trust state yet.
    let revoked = store.revocations().unwrap_or_default();
    let certified = store
        .certs()
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let b = &c.certificate.body;
            CertLine {
                key_id: c.key_id.clone(),
                name: c.name.clone(),
                may_sign: b.may_sign.clone(),
                recipients: b.recipients.clone(),
                not_after: b.not_after.clone(),
                expired: base::clock::parse_time(&b.not_after).is_some_and(|t| t < now),
                revoked: revoked.iter().any(|r| r.key_id == c.key_id),
                source: c.source.clone(),
            }
        })
        .collect();
    let keys = store.vessel_keys().unwrap_or_default();
    let acked = store
        .ack("outbox")
        .ok()
        .flatten()
        .map_or(0, |a| a.acked_seq);
    let configured = cfg
        .uplink
        .signing_key
        .as_ref()
        .and_then(|p| wire::envelope::SecretKey::load(p).ok())
        .map(|k| k.id);
    TrustStatus {
        roots: lines(&cfg.roots),
        listed: lines(&cfg.keyring),
        certified,
        revoked,
        signing_key: keys.last().map(|k| k.key_id.clone()).or(configured),
        rotation_pending: keys.last().filter(|k| acked < k.from_seq).cloned(),
    }
}

/// What a held course command means for learners.
#[derive(Serialize)]
pub struct Impact {
    /// The held command.
    pub command_id: String,
    /// Its kind.
    pub kind: String,
    /// The course it is about.
    pub course: String,
    /// Learners with progress in the course.
    pub learners_with_progress: u64,
    /// Records of the course shore has not acknowledged.
    pub unacknowledged_records: u64,
    /// Age in seconds of the oldest record shore has not acknowledged.
    pub oldest_unacknowledged_age_s: Option<i64>,
}

/// The learner impact of every held course command (delete, replace, restore, hide).
fn impacts(
    store: &Store,
    held: &[crate::store::CommandRow],
    now: i64,
) -> Result<Vec<Impact>, crate::store::StoreError> {
    let mut out = Vec::new();
    for c in held {
        let arg = match c.kind.as_str() {
            "delete_course" | "replace_course" | "hide_course" => "course",
            "restore_course" => "idnumber",
            _ => continue,
        };
        let args: serde_json::Value = serde_json::from_str(&c.args).unwrap_or_default();
        let Some(course) = args[arg]
            .as_str()
            .or_else(|| args["shortname"].as_str())
            .map(str::to_string)
        else {
            continue;
        };
        let (backlog, learners) = store.course_impact(&course)?;
        out.push(Impact {
            command_id: c.cmd_id.clone(),
            kind: c.kind.clone(),
            course,
            learners_with_progress: learners,
            unacknowledged_records: backlog.records,
            oldest_unacknowledged_age_s: backlog.oldest_captured_at.map(|t| now - t),
        });
    }
    Ok(out)
}

/// What `status` shows of ProgressStatus.
#[derive(Serialize)]
pub struct ProgressStatus {
    /// The outbox's counts.
    pub outbox: OutboxSummary,
    /// Age in seconds of the oldest record shore has not acknowledged.
    pub oldest_unacknowledged_age_s: Option<i64>,
    /// `https`, `files` or `off`.
    pub uplink_mode: &'static str,
    /// When shore last answered.
    pub last_contact: Option<String>,
    /// When the next sync is due.
    pub next_attempt: Option<String>,
    /// Why then.
    pub next_attempt_reason: Option<String>,
    /// The last sync failure.
    pub last_error: Option<String>,
    /// A refusal that stops syncing until a fix or six hours.
    pub permanent_error: Option<String>,
    /// Bytes sent and received today.
    pub bytes_today: u64,
    /// This month.
    pub bytes_this_month: u64,
    /// `uplink.daily_budget` (0: none).
    pub daily_budget: u64,
    /// `uplink.monthly_budget` (0: none).
    pub monthly_budget: u64,
    /// What today's bytes cost at `uplink.price_per_mb` (none without a price).
    pub cost_today: Option<f64>,
    /// What this month's bytes cost.
    pub cost_this_month: Option<f64>,
    /// `uplink.price_per_mb`.
    pub price_per_mb: Option<f64>,
    /// `uplink.currency`.
    pub currency: String,
    /// Whether capture reads a Moodle.
    pub capture_configured: bool,
    /// When capture last ran.
    pub last_capture: Option<String>,
    /// Rows it read.
    pub last_capture_rows: Option<u64>,
    /// Why the last capture failed.
    pub capture_error: Option<String>,
    /// Progress rows quarantined by capture.
    pub quarantine: Vec<QuarantinedProgress>,
}

/// What `bytes` cost at `price_per_mb` (a megabyte is 10^6 bytes, as satellite plans bill),
/// rounded to a thousandth.
pub fn cost(bytes: u64, price_per_mb: f64) -> f64 {
    (bytes as f64 / 1e6 * price_per_mb * 1000.0).round() / 1000.0
}

fn progress_status(
    cfg: &Config,
    store: &Store,
    now: i64,
) -> Result<ProgressStatus, crate::store::StoreError> {
    let facts = store.facts()?;
    let uplink = store.uplink_state()?;
    let time_of = |k: &str| {
        facts
            .get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .map(format_time)
    };
    let outbox = store.outbox_summary()?;
    let day = format_time(now).get(..10).unwrap_or("").to_string();
    let ((du, dd), (mu, md)) = store.traffic(&day)?;
    Ok(ProgressStatus {
        oldest_unacknowledged_age_s: outbox.oldest_captured_at.map(|t| (now - t).max(0)),
        outbox,
        uplink_mode: match cfg.uplink.mode {
            UplinkMode::Off => "off",
            UplinkMode::Https => "https",
            UplinkMode::Files => "files",
        },
        last_contact: uplink.last_contact_at.map(format_time),
        next_attempt: (uplink.next_attempt_at > 0).then(|| format_time(uplink.next_attempt_at)),
        next_attempt_reason: uplink.next_attempt_reason,
        last_error: uplink.last_error,
        permanent_error: uplink.permanent_error,
        bytes_today: du + dd,
        bytes_this_month: mu + md,
        daily_budget: cfg.uplink.daily_budget,
        monthly_budget: cfg.uplink.monthly_budget,
        cost_today: cfg.uplink.price_per_mb.map(|p| cost(du + dd, p)),
        cost_this_month: cfg.uplink.price_per_mb.map(|p| cost(mu + md, p)),
        price_per_mb: cfg.uplink.price_per_mb,
        currency: cfg.uplink.currency.clone(),
        capture_configured: cfg.moodle_db.is_some(),
        last_capture: time_of("last_capture_at"),
        last_capture_rows: facts.get("last_capture_rows").and_then(|v| v.parse().ok()),
        capture_error: facts.get("capture_error").cloned(),
        quarantine: store.progress_quarantine(20)?,
    })
}

fn list_dir(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| keep(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Everything `vessel-sync status` shows, read without taking the agent\'s lock.
pub fn gather(cfg: &Config, clock: &dyn Clock) -> Result<Status, crate::store::StoreError> {
    let store = Store::open_readonly(&cfg.paths.database())?;
    let journal = store.overview()?;
    let learner_impact = impacts(&store, &journal.held, clock.now())?;
    Ok(Status {
        vessel: cfg.vessel_id.clone(),
        database: cfg.paths.database().display().to_string(),
        agent_running: crate::agent::is_running(&cfg.paths.state_dir),
        now: format_time(clock.now()),
        inbox_pending: list_dir(&cfg.paths.inbox, |n| !ignored_name(n)),
        quarantine_files: list_dir(&cfg.paths.quarantine, |n| {
            !n.ends_with(".reason.txt") && !ignored_name(n)
        })
        .len() as u64,
        recent_rejections: store.recent_audit(AuditEvent::REJECTED, 5)?,
        duplicates_ignored: store.count_audit(AuditEvent::DUPLICATE)?,
        learner_impact,
        journal,
        mappings: store.mapping_counts()?,
        outbox_ack: store.ack("outbox")?,
        progress: progress_status(cfg, &store, clock.now())?,
        trust: trust_status(cfg, &store, clock.now()),
        content: {
            let (files, bytes, asked) = store.content_summary()?;
            ContentStatus {
                files,
                bytes,
                limit_bytes: cfg.content_store_bytes,
                files_asked_of_shore: asked,
            }
        },
    })
}
