//! The command registry: one module per command type.
//!
//! A command is looked up by its `type`; an unknown type fails that command with a reason and
//! never stops the agent. Commands must be idempotent: the runner commits `running` before the
//! effect (law 7), so after a crash the same command runs again. Commands whose whole effect is in
//! the agent's own database (`set_mapping`, `ack`) do it inside the transaction that also marks
//! them done, which makes them exactly-once outright. Commands that change Moodle
//! (`upsert_users`) reach it only through [`moodle::ws`] and keep their own progress so a
//! rerun after a crash continues instead of repeating. Commands never speak SQL; they use the
//! store's typed methods.

mod ack;
mod course;
mod import_progress;
mod lookup;
mod set_mapping;
mod trust;
mod upsert_users;

use std::path::{Path, PathBuf};

pub use trust::ALL_STREAMS;

use crate::store::{CommandOutcome, CommandRow, Result, Tx};

/// What a command gets to work with.
pub struct Ctx<'a> {
    /// The journaled command.
    pub cmd: &'a CommandRow,
    /// Its arguments.
    pub args: serde_json::Map<String, serde_json::Value>,
    /// Its files, extracted and verified: (member name, path on disk).
    pub files: Vec<(String, PathBuf)>,
    /// Where reports for operators are written.
    pub reports_dir: &'a Path,
    /// Now, Unix seconds.
    pub now: i64,
    /// The fleet root keys of the config (`trust_key` checks certificates against them).
    pub roots: &'a wire::envelope::Keyring,
    /// Moodle's web services, when configured.
    pub moodle_ws: Option<&'a moodle::config::WsSettings>,
    /// Moodle's CLI scripts, when configured.
    pub moodle_cli: Option<&'a moodle::config::CliSettings>,
    /// The agent's state directory (final backups go under it by default).
    pub state_dir: &'a Path,
    /// The content store's bound (`[limits] content_store_bytes`).
    pub content_store_bytes: u64,
    /// Whether progress capture is configured (a guarded deletion waits for one).
    pub capture_configured: bool,
    /// Tells systemd's watchdog the agent is alive; long commands call it as they progress.
    pub keepalive: &'a dyn Fn(),
}

impl Ctx<'_> {
    /// The web-service client for the configured Moodle, or a `waiting` outcome saying what to
    /// configure or what failed (retried after `retry` seconds).
    pub fn moodle(&self, retry: i64) -> std::result::Result<moodle::ws::Ws, CommandOutcome> {
        let wait = |reason: String| CommandOutcome::Waiting {
            reason,
            retry_at: self.now + retry,
        };
        let Some(s) = self.moodle_ws else {
            return Err(wait("Moodle's web services are not configured: set url and token_file under [moodle] in agent.toml, then restart the agent".into()));
        };
        let token = moodle::ws::Token::from_file(&s.token_file).map_err(|e| wait(e.to_string()))?;
        moodle::ws::Ws::new(&s.url, token, std::time::Duration::from_secs(s.timeout))
            .map_err(|e| wait(e.to_string()))
    }

    /// The command id made safe as a file name (reports are `reports_dir/SAFE_ID.WHAT.json`).
    pub fn safe_id(&self) -> String {
        safe_id_of(&self.cmd.cmd_id)
    }
}

/// A command id made safe as a file name ([`wire::ids::file_safe`]).
pub fn safe_id_of(cmd_id: &str) -> String {
    wire::ids::file_safe(cmd_id)
}

/// A command type.
pub trait Command: Sync {
    /// The `type` string in manifests.
    fn kind(&self) -> &'static str;
    /// Applies the command. Store errors propagate (the transaction is rolled back and the
    /// command retried); everything else is an outcome.
    fn run(&self, ctx: &Ctx<'_>, tx: &Tx<'_>) -> Result<CommandOutcome>;
    /// Whether the command changes Moodle, and so waits while Moodle is in maintenance mode or
    /// being upgraded. Commands whose effect is only in the agent's own database say no.
    fn changes_moodle(&self) -> bool {
        true
    }
}

static REGISTRY: &[&dyn Command] = &[
    &ack::Ack,
    &set_mapping::SetMapping,
    &upsert_users::UpsertUsers,
    &upsert_users::SuspendUsers,
    &course::HideCourse,
    &course::DeleteCourse,
    &course::RestoreCourse,
    &course::ReplaceCourse,
    &import_progress::ImportProgress,
    &trust::TrustKey,
    &trust::RevokeKey,
];

/// Finds a command type.
pub fn find(kind: &str) -> Option<&'static dyn Command> {
    REGISTRY.iter().copied().find(|c| c.kind() == kind)
}

/// Names of every known command type.
pub fn known_kinds() -> Vec<&'static str> {
    REGISTRY.iter().map(|c| c.kind()).collect()
}

/// The outcome for a type this build does not know.
pub fn unknown(kind: &str) -> CommandOutcome {
    CommandOutcome::Failed(format!(
        "unknown command type {kind:?}: this agent knows {}; upgrade vessel-sync on this vessel or correct the bundle spec",
        known_kinds().join(", ")
    ))
}
