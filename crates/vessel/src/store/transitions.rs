//! Command transitions: started, finished (done, superseded, failed, waiting), and the bundle
//! finishing with its last command. Each is one transaction with its audit row.

use rusqlite::params;

use super::journal::{BundleState, CommandOutcome, CommandRow, CommandState};
use super::{Ctx, Result, Tx};

/// Seconds within which deaths without progress are counted together.
pub const DEATH_WINDOW: i64 = 3600;

impl Tx<'_> {
    /// Marks a command as started (attempt + 1). Commit this before the command's effect.
    pub fn start_command(&self, cmd: &CommandRow, now: i64) -> Result<i64> {
        let attempt = cmd.attempts + 1;
        self.tx
            .execute(
                "UPDATE commands SET state = 'running', attempts = ?3, updated_at = ?4 WHERE bundle_id = ?1 AND idx = ?2",
                params![cmd.bundle_id, cmd.idx, attempt, now],
            )
            .ctx(self.path)?;
        let resumed = if cmd.state == CommandState::Running {
            " (resumed after a restart)"
        } else {
            ""
        };
        self.audit(
            now,
            &cmd.issuer,
            Some(&cmd.bundle_id),
            Some(&cmd.cmd_id),
            "command_started",
            "running",
            &format!("{} attempt {attempt}{resumed}", cmd.kind),
        )?;
        Ok(attempt)
    }

    /// A command found running at start: the agent died under it. Returns how many times it
    /// died in a row without progress: the count starts again when `checkpoint` (a
    /// fingerprint of its progress) changed or when the last count began over
    /// [`DEATH_WINDOW`] seconds ago.
    pub fn note_death(&self, cmd: &CommandRow, checkpoint: &str, now: i64) -> Result<i64> {
        let (deaths, since, last): (i64, Option<i64>, Option<String>) = self
            .tx
            .query_row(
                "SELECT deaths, deaths_since, checkpoint FROM commands WHERE bundle_id = ?1 AND idx = ?2",
                params![cmd.bundle_id, cmd.idx],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .ctx(self.path)?;
        let fresh = last.as_deref() != Some(checkpoint)
            || since.is_none_or(|s| now.saturating_sub(s) > DEATH_WINDOW);
        let (deaths, since) = if fresh {
            (1, now)
        } else {
            (deaths + 1, since.unwrap_or(now))
        };
        self.tx
            .execute(
                "UPDATE commands SET deaths = ?3, deaths_since = ?4, checkpoint = ?5
                 WHERE bundle_id = ?1 AND idx = ?2",
                params![cmd.bundle_id, cmd.idx, deaths, since, checkpoint],
            )
            .ctx(self.path)?;
        Ok(deaths)
    }

    /// The IT officer's retry of a failed command (`vessel-sync retry`): it becomes ready
    /// again, with a fresh count of attempts and deaths, and its bundle is open again.
    /// Returns the command's bundle id, or `None` when no failed command has this id.
    pub fn retry_command(&self, cmd_id: &str, actor: &str, now: i64) -> Result<Option<String>> {
        let found: Option<(String, i64)> = self.row(
            "SELECT bundle_id, idx FROM commands WHERE cmd_id = ?1 AND state = 'failed'",
            params![cmd_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let Some((bundle, idx)) = found else {
            return Ok(None);
        };
        self.tx
            .execute(
                "UPDATE commands SET state = 'ready', reason = NULL, attempts = 0, deaths = 0,
                   deaths_since = NULL, checkpoint = NULL, next_attempt_at = NULL, updated_at = ?3
                 WHERE bundle_id = ?1 AND idx = ?2",
                params![bundle, idx, now],
            )
            .ctx(self.path)?;
        self.tx
            .execute(
                "UPDATE bundles SET state = 'ready', finished_at = NULL
                 WHERE id = ?1 AND state IN ('failed', 'done')",
                params![bundle],
            )
            .ctx(self.path)?;
        self.audit(
            now,
            actor,
            Some(&bundle),
            Some(cmd_id),
            "command_retried",
            "ready",
            "retried on board ('vessel-sync retry'): it runs again at the agent's next pass",
        )?;
        Ok(Some(bundle))
    }

    /// Records how a command attempt ended; finishes its bundle when it was the last one.
    /// Returns the bundle's final state when the bundle finished.
    pub fn finish_command(
        &self,
        cmd: &CommandRow,
        outcome: &CommandOutcome,
        now: i64,
    ) -> Result<Option<BundleState>> {
        let (state, reason, next, event, text) = match outcome {
            CommandOutcome::Done(note) => (
                CommandState::Done,
                note.clone(),
                None,
                "command_done",
                "done",
            ),
            CommandOutcome::Superseded(note) => (
                CommandState::Superseded,
                note.clone(),
                None,
                "command_superseded",
                "superseded",
            ),
            CommandOutcome::Failed(err) => (
                CommandState::Failed,
                err.clone(),
                None,
                "command_failed",
                "failed",
            ),
            CommandOutcome::Waiting { reason, retry_at } => (
                CommandState::Waiting,
                reason.clone(),
                Some(*retry_at),
                "command_waiting",
                "waiting",
            ),
        };
        self.tx
            .execute(
                "UPDATE commands SET state = ?3, reason = ?4, next_attempt_at = ?5, updated_at = ?6
                 WHERE bundle_id = ?1 AND idx = ?2",
                params![cmd.bundle_id, cmd.idx, state.as_str(), reason, next, now],
            )
            .ctx(self.path)?;
        self.audit(
            now,
            &cmd.issuer,
            Some(&cmd.bundle_id),
            Some(&cmd.cmd_id),
            event,
            text,
            &format!("{}: {reason}", cmd.kind),
        )?;
        self.finish_bundle_if_done(&cmd.bundle_id, now)
    }

    /// Fails every unfinished command of a bundle (e.g. expired while waiting).
    pub fn fail_bundle(&self, bundle_id: &str, actor: &str, reason: &str, now: i64) -> Result<()> {
        self.tx
            .execute(
                "UPDATE commands SET state = 'failed', reason = ?2, updated_at = ?3
                 WHERE bundle_id = ?1 AND state IN ('ready','running','waiting')",
                params![bundle_id, reason, now],
            )
            .ctx(self.path)?;
        self.audit(
            now,
            actor,
            Some(bundle_id),
            None,
            "bundle_failed",
            "failed",
            reason,
        )?;
        self.finish_bundle_if_done(bundle_id, now)?;
        Ok(())
    }

    pub(super) fn finish_bundle_if_done(
        &self,
        bundle_id: &str,
        now: i64,
    ) -> Result<Option<BundleState>> {
        let (open, failed, state): (i64, i64, String) = self
            .tx
            .query_row(
                "SELECT
                   (SELECT COUNT(*) FROM commands WHERE bundle_id = ?1 AND state IN ('ready','running','waiting')),
                   (SELECT COUNT(*) FROM commands WHERE bundle_id = ?1 AND state = 'failed'),
                   (SELECT state FROM bundles WHERE id = ?1)",
                params![bundle_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .ctx(self.path)?;
        if open > 0 || state != "ready" {
            return Ok(None);
        }
        let fin = if failed > 0 {
            BundleState::Failed
        } else {
            BundleState::Done
        };
        self.tx
            .execute(
                "UPDATE bundles SET state = ?2, finished_at = ?3 WHERE id = ?1",
                params![bundle_id, fin.as_str(), now],
            )
            .ctx(self.path)?;
        let actor: String = self
            .tx
            .query_row(
                "SELECT issuer FROM bundles WHERE id = ?1",
                params![bundle_id],
                |r| r.get(0),
            )
            .ctx(self.path)?;
        let detail = if failed > 0 {
            format!("{failed} command(s) failed")
        } else {
            "all commands finished".into()
        };
        self.audit(
            now,
            &actor,
            Some(bundle_id),
            None,
            "bundle_finished",
            fin.as_str(),
            &detail,
        )?;
        Ok(Some(fin))
    }
}
