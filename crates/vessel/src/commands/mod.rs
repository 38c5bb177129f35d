//! The command registry: one module per command type.
//!
//! A command is looked up by its `type`; an unknown type fails that command with a reason and
//! never stops the agent. Commands must be idempotent: the runner commits `running` before the
//! effect (law 7), so after a crash the same command runs again. Commands whose whole effect is in
//! the agent's own database (`set_mapping`, `ack`, `trust_key`, `revoke_key`) do it inside the
//! transaction that also marks them done ([`Journal::held`]), which makes them exactly-once
//! outright; the others never hold the journal's write lock while they talk to Moodle
//! ([`Journal::short`]). Commands that change Moodle
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

use crate::store::{CommandOutcome, CommandRow, Result, Store, StoreError, Tx};

/// The journal as a command sees it. [`Journal::with`] runs a step in a transaction:
/// - **short** (commands that change Moodle): each step is its own transaction, committed when
///   the step returns, so no write lock is held while the command waits for Moodle; the
///   outcome is recorded afterwards in a transaction of its own ([`Journal::finish`]);
/// - **held** (commands whose whole effect is in the journal): the first step opens the
///   transaction, every later step and the outcome join it, and it commits once, so effect and
///   outcome are one (exactly once). Such a command does anything slow before its first step.
pub struct Journal<'s> {
    mode: Mode<'s>,
}

enum Mode<'s> {
    Short(&'s mut Store),
    Held(Option<&'s mut Store>, Option<Tx<'s>>),
}

impl<'s> Journal<'s> {
    /// Each step its own transaction.
    pub fn short(store: &'s mut Store) -> Self {
        Self {
            mode: Mode::Short(store),
        }
    }

    /// One transaction from the first step to the outcome.
    pub fn held(store: &'s mut Store) -> Self {
        Self {
            mode: Mode::Held(Some(store), None),
        }
    }

    /// Runs one step of the command against the journal.
    pub fn with<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        match &mut self.mode {
            Mode::Short(store) => store.write(f),
            Mode::Held(store, tx) => {
                if tx.is_none() {
                    if let Some(s) = store.take() {
                        *tx = Some(s.begin()?);
                    }
                }
                match tx {
                    Some(tx) => f(tx),
                    None => Err(StoreError::Misuse(
                        "the journal was used after it was finished",
                    )),
                }
            }
        }
    }

    /// Records the command's outcome with `f` and commits: in the held transaction, or in a
    /// new one.
    pub fn finish<T>(self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        match self.mode {
            Mode::Short(store) | Mode::Held(Some(store), None) => store.write(f),
            Mode::Held(_, Some(tx)) => {
                let out = f(&tx)?;
                tx.commit()?;
                Ok(out)
            }
            Mode::Held(None, None) => Err(StoreError::Misuse("the journal was finished twice")),
        }
    }
}

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

    /// One audit row for this command (its issuer, bundle and id), as a step of `journal`.
    pub fn audit(
        &self,
        journal: &mut Journal<'_>,
        event: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<()> {
        journal.with(|tx| {
            tx.audit(
                self.now,
                &self.cmd.issuer,
                Some(&self.cmd.bundle_id),
                Some(&self.cmd.cmd_id),
                event,
                outcome,
                detail,
            )
        })
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
    /// Applies the command. Store errors propagate (what was not committed is rolled back and
    /// the command retried); everything else is an outcome. The journal is [`Journal::short`]
    /// for a command that changes Moodle, [`Journal::held`] otherwise.
    fn run(&self, ctx: &Ctx<'_>, journal: &mut Journal<'_>) -> Result<CommandOutcome>;
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

#[cfg(test)]
mod tests {
    use super::{Journal, find};
    use crate::store::Store;

    /// Whether another process could take the journal's write lock right now.
    fn writable_by_another(path: &std::path::Path) -> bool {
        let other = rusqlite::Connection::open(path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").is_ok()
    }

    #[test]
    fn a_command_that_changes_moodle_holds_no_write_lock_between_its_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let mut store = Store::open(&path, "mv-test").unwrap();
        let mut j = Journal::short(&mut store);
        j.with(|tx| tx.set_fact("step", "1")).unwrap();
        // Here the command would wait for Moodle: `capture` or `sync` may write meanwhile.
        assert!(writable_by_another(&path));
        j.finish(|tx| tx.set_fact("outcome", "done")).unwrap();
        assert!(writable_by_another(&path));
        let facts = store.facts().unwrap();
        assert_eq!(facts.get("step").map(String::as_str), Some("1"));
        assert_eq!(facts.get("outcome").map(String::as_str), Some("done"));
    }

    #[test]
    fn a_journal_only_command_commits_its_effect_with_its_outcome_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let mut store = Store::open(&path, "mv-test").unwrap();
        {
            // Killed before the outcome: nothing of the effect remains.
            let mut j = Journal::held(&mut store);
            assert!(
                writable_by_another(&path),
                "nothing is locked before the first step"
            );
            j.with(|tx| tx.set_fact("mapping", "1")).unwrap();
            assert!(!writable_by_another(&path));
        }
        assert_eq!(store.facts().unwrap().get("mapping"), None);
        let mut j = Journal::held(&mut store);
        j.with(|tx| tx.set_fact("mapping", "1")).unwrap();
        j.finish(|tx| tx.set_fact("outcome", "done")).unwrap();
        let facts = store.facts().unwrap();
        assert_eq!(facts.get("mapping").map(String::as_str), Some("1"));
        assert_eq!(facts.get("outcome").map(String::as_str), Some("done"));
    }

    /// The runner picks the journal by `changes_moodle`: the journal-only commands are these.
    #[test]
    fn only_the_journal_only_commands_run_in_one_transaction() {
        let held: Vec<&str> = super::known_kinds()
            .into_iter()
            .filter(|k| find(k).is_some_and(|c| !c.changes_moodle()))
            .collect();
        assert_eq!(held, ["ack", "set_mapping", "trust_key", "revoke_key"]);
    }
}
