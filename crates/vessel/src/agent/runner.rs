//! The command runner: the next runnable command, run once, its outcome journaled.
//!
//! A command that changes Moodle runs with short journal transactions ([`Journal::short`]):
//! `running` is committed before it acts (law 7), each journal step it takes commits at once,
//! and its outcome is recorded in a new transaction after it acted. So the journal's write lock
//! is never held while the command waits for Moodle: `vessel-sync status` reads at any time, and
//! an operator's `capture` or `sync` waits only for the agent's step (the work lock), never for a
//! busy journal. A command whose whole effect is in the journal
//! (`ack`, `set_mapping`, `trust_key`, `revoke_key`) takes its effect and its outcome in one
//! transaction ([`Journal::held`]), exactly once.

use std::fs;

use super::{Agent, AgentError, GATE_RETRY, GATE_SECS, MAX_DEATHS_WITHOUT_PROGRESS};
use crate::commands::{self, Journal};
use crate::inbox;
use crate::store::{CommandOutcome, CommandRow, CommandState};
use crate::trust::Trust;
use base::failpoint;

impl Agent {
    /// Runs the next runnable command, if any. Returns (id, type, state, note).
    pub fn run_next(
        &mut self,
    ) -> Result<Option<(String, String, CommandState, String)>, AgentError> {
        let now = self.clock.now();
        let Some(cmd) = self.store.next_command(now)? else {
            return Ok(None);
        };
        if cmd.state == CommandState::Running {
            // The agent died under this command: resumed, unless it keeps dying without
            // progress (its checkpoint files unchanged).
            let checkpoint = self.checkpoint(&cmd);
            let deaths = self
                .store
                .write(|tx| tx.note_death(&cmd, &checkpoint, now))?;
            if deaths >= MAX_DEATHS_WITHOUT_PROGRESS {
                let outcome = CommandOutcome::Failed(format!(
                    "given up: the agent died {deaths} times in a row while running this command, within an hour and with no progress; find the cause (journalctl -u vessel-sync), then run 'vessel-sync retry {}'",
                    cmd.cmd_id
                ));
                return self.finish(&cmd, outcome, now).map(Some);
            }
        }
        let revoked = {
            let tx = self.store.begin()?;
            Trust::revoked(&tx, &cmd.issuer, &cmd.recipient, cmd.sequence)?
        };
        if let Some(r) = revoked {
            // Admitted before the revocation arrived; nothing of it has run yet.
            let reason = format!("{} ({})", r, r.code());
            self.store
                .write(|tx| tx.fail_bundle(&cmd.bundle_id, &cmd.issuer, &reason, now))?;
            tracing::warn!(bundle_id = %cmd.bundle_id, "{reason}");
            self.cleanup(&cmd.bundle_id);
            return Ok(Some((
                cmd.cmd_id.clone(),
                cmd.kind.clone(),
                CommandState::Failed,
                reason,
            )));
        }
        if commands::find(&cmd.kind).is_some_and(|c| c.changes_moodle()) {
            if let Some(reason) = self.moodle_busy(now) {
                tracing::info!(command_id = %cmd.cmd_id, %reason, "command waits for Moodle");
                let outcome = CommandOutcome::Waiting {
                    reason,
                    retry_at: now + GATE_RETRY,
                };
                return self.finish(&cmd, outcome, now).map(Some);
            }
        }
        self.store.write(|tx| tx.start_command(&cmd, now))?;
        failpoint::hit("command.after-start");
        tracing::info!(bundle_id = %cmd.bundle_id, command_id = %cmd.cmd_id, kind = %cmd.kind, "running command");
        let dir = inbox::work_dir(&self.cfg, &cmd.bundle_id);
        let args = serde_json::from_str(&cmd.args).unwrap_or_default();
        let files: Vec<String> = serde_json::from_str(&cmd.files).unwrap_or_default();
        if !files.is_empty() && !dir.is_dir() {
            // A retried command whose bundle was finished and cleaned up: its files again.
            if let Err(e) = inbox::restore_work_dir(&mut self.store, &self.cfg, &cmd.bundle_id) {
                return self.finish(&cmd, CommandOutcome::Failed(e), now).map(Some);
            }
        }
        let reports_dir = self.cfg.paths.state_dir.join("reports");
        let ctx = commands::Ctx {
            cmd: &cmd,
            args,
            files: files
                .into_iter()
                .map(|n| (n.clone(), dir.join(n)))
                .collect(),
            reports_dir: &reports_dir,
            now,
            roots: &self.cfg.roots,
            moodle_ws: self.cfg.moodle_ws.as_ref(),
            moodle_cli: self.cfg.moodle_cli.as_ref(),
            state_dir: &self.cfg.paths.state_dir,
            content_store_bytes: self.cfg.content_store_bytes,
            capture_configured: self.cfg.moodle_db.is_some(),
            keepalive: &|| self.notifier.keepalive(),
        };
        let command = commands::find(&cmd.kind);
        let mut journal = match command {
            Some(c) if c.changes_moodle() => Journal::short(&mut self.store),
            _ => Journal::held(&mut self.store),
        };
        let outcome = match command {
            Some(c) => c.run(&ctx, &mut journal)?,
            None => commands::unknown(&cmd.kind),
        };
        failpoint::hit("command.before-commit");
        let finished = journal.finish(|tx| {
            let finished = tx.finish_command(&cmd, &outcome, now)?;
            if finished.is_some() {
                // Content asked for on behalf of the bundle is no longer wanted, however it
                // ended.
                tx.needs_done(&cmd.bundle_id)?;
            }
            Ok(finished)
        })?;
        failpoint::hit("command.after-commit");
        if finished.is_some() {
            self.cleanup(&cmd.bundle_id);
        }
        Ok(Some(describe(&cmd, &outcome)))
    }

    /// Why Moodle cannot take work now (CLI maintenance mode, an upgrade pending or running),
    /// asked through its CLI when that is configured; `None` when it can or cannot be asked
    /// (the command itself then reports what is wrong).
    fn moodle_busy(&mut self, now: i64) -> Option<String> {
        let settings = self.cfg.moodle_cli.as_ref()?;
        if let Some((at, why)) = &self.gate {
            if now >= *at && now - *at < GATE_SECS {
                return why.clone();
            }
        }
        let notifier = &self.notifier;
        let keepalive = || notifier.keepalive();
        let why = match moodle::cli::Cli::new(settings, &keepalive).ready() {
            Err(e @ moodle::cli::CliError::Maintenance(_)) => Some(format!(
                "{e}; nothing was changed, the command goes on once Moodle is back"
            )),
            _ => None,
        };
        self.gate = Some((now, why.clone()));
        why
    }

    fn finish(
        &mut self,
        cmd: &CommandRow,
        outcome: CommandOutcome,
        now: i64,
    ) -> Result<(String, String, CommandState, String), AgentError> {
        let finished = self
            .store
            .write(|tx| tx.finish_command(cmd, &outcome, now))?;
        if finished.is_some() {
            self.cleanup(&cmd.bundle_id);
        }
        Ok(describe(cmd, &outcome))
    }

    /// A fingerprint of a command's progress: the names, sizes and modification times of its
    /// files in `STATE_DIR/reports/` (long commands write their checkpoints there).
    fn checkpoint(&self, cmd: &CommandRow) -> String {
        let prefix = format!("{}.", commands::safe_id_of(&cmd.cmd_id));
        let dir = self.cfg.paths.state_dir.join("reports");
        let mut parts: Vec<String> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let meta = e.metadata().ok()?;
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                name.starts_with(&prefix)
                    .then(|| format!("{name}:{}:{modified}", meta.len()))
            })
            .collect();
        parts.sort();
        parts.join("|")
    }

    fn cleanup(&self, bundle_id: &str) {
        failpoint::hit("bundle.before-cleanup");
        let dir = inbox::work_dir(&self.cfg, bundle_id);
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(bundle_id, error = %e, "could not remove the work directory; it is removed at next start");
            }
        }
    }
}

fn describe(cmd: &CommandRow, outcome: &CommandOutcome) -> (String, String, CommandState, String) {
    let (state, note) = match outcome {
        CommandOutcome::Done(n) => (CommandState::Done, n.clone()),
        CommandOutcome::Superseded(n) => (CommandState::Superseded, n.clone()),
        CommandOutcome::Failed(n) => (CommandState::Failed, n.clone()),
        CommandOutcome::Waiting { reason, .. } => (CommandState::Waiting, reason.clone()),
    };
    (cmd.cmd_id.clone(), cmd.kind.clone(), state, note)
}
