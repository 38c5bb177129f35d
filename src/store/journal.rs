//! The journal: bundles, their commands, and the per-stream sequence positions.
//!
//! A bundle's sequence stream is (issuer key id, recipient), where the recipient is a vessel id or
//! `*`. `streams.next_seq` is the next sequence to apply; every sequence below it is either held
//! by a journaled bundle or recorded in `skipped` (given up on after the gap timeout). So a file
//! whose sequence is below `next_seq` is a replay unless it fills a skipped slot, in which case it
//! is a late arrival: applied, with each command deciding whether newer sequences superseded it.

use rusqlite::{OptionalExtension, params};

use super::{Ctx, Result, Store, Tx};
use crate::clock::{format_age, format_time};

/// Bundle states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleState {
    /// Arrived ahead of a missing sequence.
    Waiting,
    /// Its commands may run.
    Ready,
    /// Every command finished, none failed.
    Done,
    /// Every command finished, at least one failed.
    Failed,
}

/// Command states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// May run.
    Ready,
    /// Started; if the agent died, it is resumed (commands are idempotent).
    Running,
    /// Held until `next_attempt_at`, with a reason.
    Waiting,
    /// Took effect.
    Done,
    /// Failed for good, with the error.
    Failed,
    /// Not applied: a newer sequence already acted on the same objects.
    Superseded,
    /// Not applied: the same command id was applied from another bundle.
    Duplicate,
}

macro_rules! str_enum {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            /// The stored spelling.
            pub fn as_str(self) -> &'static str { match self { $(Self::$v => $s),* } }
            fn parse(s: &str) -> Self {
                match s { $($s => Self::$v,)* _ => Self::Failed }
            }
        }
    };
}
str_enum!(BundleState { Waiting = "waiting", Ready = "ready", Done = "done", Failed = "failed" });
str_enum!(CommandState {
    Ready = "ready", Running = "running", Waiting = "waiting", Done = "done",
    Failed = "failed", Superseded = "superseded", Duplicate = "duplicate",
});
impl CommandState {
    /// True once nothing more will happen to the command.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Done | Self::Failed | Self::Superseded | Self::Duplicate
        )
    }
}

/// A verified bundle to record.
#[derive(Debug, Clone)]
pub struct NewBundle {
    /// Bundle id.
    pub id: String,
    /// Issuer key id.
    pub issuer: String,
    /// Recipient (vessel id or `*`).
    pub recipient: String,
    /// Sequence.
    pub sequence: u64,
    /// Hash of the signed manifest.
    pub manifest_sha256: String,
    /// File name it arrived as.
    pub source_name: String,
    /// Creation time.
    pub created_at: i64,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
    /// Its commands in order.
    pub commands: Vec<NewCommand>,
}

/// A command to record.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// Command id.
    pub cmd_id: String,
    /// Type.
    pub kind: String,
    /// Arguments, JSON object text.
    pub args: String,
    /// Files, JSON array text.
    pub files: String,
}

/// How a verified bundle relates to what the journal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// This bundle id is already journaled.
    Known {
        /// Same manifest bytes.
        same_content: bool,
        /// Its file was already moved to the archive (else: finishing an interrupted admission).
        archived: bool,
    },
    /// The sequence was used or passed.
    Replay {
        /// What had it, in words.
        previous: String,
    },
    /// Fills a sequence skipped after the gap timeout.
    Late,
    /// The next expected sequence.
    InOrder,
    /// Ahead of the next expected sequence.
    Early {
        /// The first missing sequence.
        missing: u64,
    },
}

/// A journaled bundle.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleRow {
    /// Id.
    pub id: String,
    /// Issuer key id.
    pub issuer: String,
    /// Recipient.
    pub recipient: String,
    /// Sequence.
    pub sequence: u64,
    /// State.
    pub state: BundleState,
    /// Why it waits, or why it failed.
    pub reason: Option<String>,
    /// Arrived after its sequence was skipped.
    pub late: bool,
    /// When it was journaled.
    pub received_at: i64,
}

/// A journaled command.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommandRow {
    /// Its bundle.
    pub bundle_id: String,
    /// Position in the bundle.
    pub idx: i64,
    /// Command id.
    pub cmd_id: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Arguments (JSON text).
    #[serde(skip)]
    pub args: String,
    /// Files (JSON text).
    #[serde(skip)]
    pub files: String,
    /// State.
    pub state: CommandState,
    /// Reason for waiting/failing, or a note on completion.
    pub reason: Option<String>,
    /// Attempts so far.
    pub attempts: i64,
    /// When a waiting command is retried.
    pub next_attempt_at: Option<i64>,
    /// Issuer of its bundle.
    pub issuer: String,
    /// Recipient of its bundle.
    pub recipient: String,
    /// Sequence of its bundle.
    pub sequence: u64,
    /// Whether its bundle arrived late.
    pub late: bool,
}

/// How a command attempt ended.
#[derive(Debug, Clone)]
pub enum CommandOutcome {
    /// Took effect; an optional note for the audit trail.
    Done(String),
    /// Nothing applied because newer sequences already acted.
    Superseded(String),
    /// Failed for good.
    Failed(String),
    /// Try again at `retry_at`.
    Waiting {
        /// Why, in words.
        reason: String,
        /// When to look again.
        retry_at: i64,
    },
}

/// A stream that is waiting for a missing sequence.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamGap {
    /// Issuer key id.
    pub issuer: String,
    /// Recipient.
    pub recipient: String,
    /// First missing sequence.
    pub missing: u64,
    /// Bundles waiting behind it.
    pub waiting: u64,
    /// Since when the oldest of them waits.
    pub since: i64,
}

/// A summary of the journal for `status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Overview {
    /// Bundles per state.
    pub bundles: std::collections::BTreeMap<String, u64>,
    /// Commands per state.
    pub commands: std::collections::BTreeMap<String, u64>,
    /// Streams waiting for a missing sequence.
    pub gaps: Vec<StreamGap>,
    /// Commands waiting, running or failed, with reasons.
    pub held: Vec<CommandRow>,
    /// Sequences skipped and not (yet) arrived late: (issuer, recipient, sequence, skipped_at).
    pub skipped: Vec<(String, String, u64, i64)>,
}

const COMMAND_COLUMNS: &str = "c.bundle_id, c.idx, c.cmd_id, c.type, c.args, c.files, c.state, c.reason, \
     c.attempts, c.next_attempt_at, b.issuer, b.recipient, b.sequence, b.late";

fn command_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CommandRow> {
    Ok(CommandRow {
        bundle_id: r.get(0)?,
        idx: r.get(1)?,
        cmd_id: r.get(2)?,
        kind: r.get(3)?,
        args: r.get(4)?,
        files: r.get(5)?,
        state: CommandState::parse(&r.get::<_, String>(6)?),
        reason: r.get(7)?,
        attempts: r.get(8)?,
        next_attempt_at: r.get(9)?,
        issuer: r.get(10)?,
        recipient: r.get(11)?,
        sequence: r.get::<_, i64>(12)?.unsigned_abs(),
        late: r.get(13)?,
    })
}

fn seq(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Tx<'_> {
    /// Decides how a verified bundle relates to the journal.
    pub fn classify(
        &self,
        id: &str,
        manifest_sha256: &str,
        issuer: &str,
        recipient: &str,
        sequence: u64,
    ) -> Result<Admission> {
        let c = &self.tx;
        let known: Option<(String, bool)> = c
            .query_row(
                "SELECT manifest_sha256, archived FROM bundles WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ctx(self.path)?;
        if let Some((sha, archived)) = known {
            return Ok(Admission::Known {
                same_content: sha == manifest_sha256,
                archived,
            });
        }
        let holder: Option<(String, i64)> = c
            .query_row(
                "SELECT id, received_at FROM bundles WHERE issuer = ?1 AND recipient = ?2 AND sequence = ?3",
                params![issuer, recipient, seq(sequence)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .ctx(self.path)?;
        if let Some((other, at)) = holder {
            return Ok(Admission::Replay {
                previous: format!("by bundle {other}, received {}", format_time(at)),
            });
        }
        let skipped: Option<Option<String>> = c
            .query_row(
                "SELECT resolved_bundle FROM skipped WHERE issuer = ?1 AND recipient = ?2 AND sequence = ?3",
                params![issuer, recipient, seq(sequence)],
                |r| r.get(0),
            )
            .optional()
            .ctx(self.path)?;
        if let Some(None) = skipped {
            return Ok(Admission::Late);
        }
        let next = self.next_seq(issuer, recipient)?;
        Ok(if sequence < next {
            Admission::Replay {
                previous: format!("the stream is at sequence {next}"),
            }
        } else if sequence == next {
            Admission::InOrder
        } else {
            Admission::Early { missing: next }
        })
    }

    fn next_seq(&self, issuer: &str, recipient: &str) -> Result<u64> {
        let n: Option<i64> = self
            .tx
            .query_row(
                "SELECT next_seq FROM streams WHERE issuer = ?1 AND recipient = ?2",
                params![issuer, recipient],
                |r| r.get(0),
            )
            .optional()
            .ctx(self.path)?;
        Ok(n.map_or(1, i64::unsigned_abs))
    }

    fn set_next_seq(&self, issuer: &str, recipient: &str, next: u64) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO streams(issuer, recipient, next_seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT(issuer, recipient) DO UPDATE SET next_seq = excluded.next_seq",
                params![issuer, recipient, seq(next)],
            )
            .ctx(self.path)?;
        Ok(())
    }

    fn next_order(&self) -> Result<i64> {
        self.tx
            .query_row(
                "SELECT COALESCE(MAX(admitted_order), 0) + 1 FROM bundles",
                [],
                |r| r.get(0),
            )
            .ctx(self.path)
    }

    /// Records a verified bundle and its commands according to `admission` (which must come
    /// from [`Tx::classify`] in the same transaction). Returns the state it entered.
    pub fn admit(
        &self,
        b: &NewBundle,
        admission: &Admission,
        gap_timeout: i64,
        now: i64,
    ) -> Result<BundleState> {
        let (state, reason, late) = match admission {
            Admission::InOrder => (BundleState::Ready, None, false),
            Admission::Late => (BundleState::Ready, None, true),
            Admission::Early { missing } => (
                BundleState::Waiting,
                Some(format!(
                    "arrived early: waiting for sequence {missing} from issuer {} (proceeds without it after {})",
                    b.issuer,
                    format_time(now.saturating_add(gap_timeout))
                )),
                false,
            ),
            Admission::Known { .. } | Admission::Replay { .. } => {
                return Ok(BundleState::Failed);
            }
        };
        let order = if state == BundleState::Ready {
            Some(self.next_order()?)
        } else {
            None
        };
        self.tx
            .execute(
                "INSERT INTO bundles(id, issuer, recipient, sequence, manifest_sha256, source_name,
                    created_at, expires_at, received_at, state, reason, late, admitted_order)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    b.id,
                    b.issuer,
                    b.recipient,
                    seq(b.sequence),
                    b.manifest_sha256,
                    b.source_name,
                    b.created_at,
                    b.expires_at,
                    now,
                    state.as_str(),
                    reason,
                    late,
                    order
                ],
            )
            .ctx(self.path)?;
        for (idx, c) in b.commands.iter().enumerate() {
            let dup: Option<String> = self
                .tx
                .query_row(
                    "SELECT bundle_id FROM commands WHERE cmd_id = ?1 AND state != 'duplicate'",
                    params![c.cmd_id],
                    |r| r.get(0),
                )
                .optional()
                .ctx(self.path)?;
            let (cstate, creason) = match &dup {
                Some(other) => (
                    CommandState::Duplicate,
                    Some(format!(
                        "command id {} was already taken from bundle {other}; not applied again",
                        c.cmd_id
                    )),
                ),
                None => (CommandState::Ready, None),
            };
            self.tx
                .execute(
                    "INSERT INTO commands(bundle_id, idx, cmd_id, type, args, files, state, reason, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![b.id, idx as i64, c.cmd_id, c.kind, c.args, c.files, cstate.as_str(), creason, now],
                )
                .ctx(self.path)?;
            if let Some(reason) = creason {
                self.audit(
                    now,
                    &b.issuer,
                    Some(&b.id),
                    Some(&c.cmd_id),
                    "command_duplicate",
                    "skipped",
                    &reason,
                )?;
            }
        }
        let detail = format!(
            "sequence {} for {:?}, {} command(s), from file {}",
            b.sequence,
            b.recipient,
            b.commands.len(),
            b.source_name
        );
        match admission {
            Admission::InOrder => {
                self.audit(
                    now,
                    &b.issuer,
                    Some(&b.id),
                    None,
                    "bundle_accepted",
                    "ready",
                    &detail,
                )?;
                self.set_next_seq(&b.issuer, &b.recipient, b.sequence + 1)?;
                self.release_in_order(&b.issuer, &b.recipient, now)?;
            }
            Admission::Late => {
                self.tx
                    .execute(
                        "UPDATE skipped SET resolved_bundle = ?4, resolved_at = ?5
                         WHERE issuer = ?1 AND recipient = ?2 AND sequence = ?3",
                        params![b.issuer, b.recipient, seq(b.sequence), b.id, now],
                    )
                    .ctx(self.path)?;
                self.audit(
                    now,
                    &b.issuer,
                    Some(&b.id),
                    None,
                    "bundle_accepted",
                    "late",
                    &format!("{detail}; arrived after its sequence was skipped: applied where no newer sequence acted"),
                )?;
            }
            _ => {
                self.audit(
                    now,
                    &b.issuer,
                    Some(&b.id),
                    None,
                    "bundle_accepted",
                    "waiting",
                    &format!("{detail}; {}", reason.unwrap_or_default()),
                )?;
            }
        }
        self.finish_bundle_if_done(&b.id, now)?;
        Ok(state)
    }

    /// Releases waiting bundles of a stream that are now next in order.
    fn release_in_order(&self, issuer: &str, recipient: &str, now: i64) -> Result<()> {
        loop {
            let next = self.next_seq(issuer, recipient)?;
            let waiting: Option<String> = self
                .tx
                .query_row(
                    "SELECT id FROM bundles WHERE issuer = ?1 AND recipient = ?2 AND sequence = ?3 AND state = 'waiting'",
                    params![issuer, recipient, seq(next)],
                    |r| r.get(0),
                )
                .optional()
                .ctx(self.path)?;
            let Some(id) = waiting else { return Ok(()) };
            let order = self.next_order()?;
            self.tx
                .execute(
                    "UPDATE bundles SET state = 'ready', reason = NULL, admitted_order = ?2 WHERE id = ?1",
                    params![id, order],
                )
                .ctx(self.path)?;
            self.audit(
                now,
                issuer,
                Some(&id),
                None,
                "bundle_released",
                "ready",
                &format!("sequence {next} is next in order"),
            )?;
            self.set_next_seq(issuer, recipient, next + 1)?;
            // A bundle whose commands all ended while it waited (expired) finishes now.
            self.finish_bundle_if_done(&id, now)?;
        }
    }

    /// Gives up on missing sequences whose followers have waited `gap_timeout` seconds: the
    /// missing ones are recorded as skipped and the waiting bundles proceed in order.
    /// Returns a line per skipped sequence.
    pub fn release_gaps(&self, now: i64, gap_timeout: i64) -> Result<Vec<String>> {
        let mut stmt = self
            .tx
            .prepare(
                "SELECT issuer, recipient, MIN(sequence), MIN(received_at) FROM bundles
                 WHERE state = 'waiting' GROUP BY issuer, recipient",
            )
            .ctx(self.path)?;
        let streams: Vec<(String, String, i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .ctx(self.path)?
            .collect::<rusqlite::Result<_>>()
            .ctx(self.path)?;
        drop(stmt);
        let mut lines = Vec::new();
        for (issuer, recipient, first_waiting, since) in streams {
            if now.saturating_sub(since) < gap_timeout {
                continue;
            }
            let next = self.next_seq(&issuer, &recipient)?;
            let first_waiting = first_waiting.unsigned_abs();
            for missing in next..first_waiting {
                self.tx
                    .execute(
                        "INSERT OR IGNORE INTO skipped(issuer, recipient, sequence, skipped_at) VALUES (?1, ?2, ?3, ?4)",
                        params![issuer, recipient, seq(missing), now],
                    )
                    .ctx(self.path)?;
                let line = format!(
                    "sequence {missing} from issuer {issuer} for {recipient:?} never arrived within {}; later bundles proceed without it (it will still be applied if it turns up)",
                    format_age(gap_timeout)
                );
                self.audit(
                    now,
                    &issuer,
                    None,
                    None,
                    "sequence_skipped",
                    "skipped",
                    &line,
                )?;
                lines.push(line);
            }
            self.set_next_seq(&issuer, &recipient, first_waiting)?;
            self.release_in_order(&issuer, &recipient, now)?;
        }
        Ok(lines)
    }

    /// Marks a bundle's file as moved to the archive.
    pub fn mark_archived(&self, id: &str) -> Result<()> {
        self.tx
            .execute("UPDATE bundles SET archived = 1 WHERE id = ?1", params![id])
            .ctx(self.path)?;
        Ok(())
    }

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

    fn finish_bundle_if_done(&self, bundle_id: &str, now: i64) -> Result<Option<BundleState>> {
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

impl Store {
    /// The next command that may run now: the first unfinished command of each ready bundle, in
    /// the order bundles were admitted; a waiting command holds only its own bundle.
    pub fn next_command(&self, now: i64) -> Result<Option<CommandRow>> {
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands c JOIN bundles b ON b.id = c.bundle_id
             WHERE b.state = 'ready'
               AND c.state IN ('ready','running','waiting')
               AND (c.state != 'waiting' OR c.next_attempt_at <= ?1)
               AND NOT EXISTS (SELECT 1 FROM commands p WHERE p.bundle_id = c.bundle_id AND p.idx < c.idx
                               AND p.state IN ('ready','running','waiting'))
             ORDER BY b.admitted_order, c.idx LIMIT 1"
        );
        self.conn
            .query_row(&sql, params![now], command_row)
            .optional()
            .ctx(&self.path)
    }

    /// The earliest time a waiting command or waiting bundle needs attention, if any.
    pub fn next_wakeup(&self, gap_timeout: i64) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT MIN(t) FROM (
                   SELECT MIN(next_attempt_at) AS t FROM commands WHERE state = 'waiting'
                   UNION ALL SELECT MIN(received_at) + ?1 FROM bundles WHERE state = 'waiting')",
                params![gap_timeout],
                |r| r.get(0),
            )
            .ctx(&self.path)
    }

    /// Ids of bundles whose work directory is still needed.
    pub fn active_bundle_ids(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM bundles WHERE state IN ('waiting','ready')")
            .ctx(&self.path)?;
        let ids = stmt
            .query_map([], |r| r.get(0))
            .ctx(&self.path)?
            .collect::<rusqlite::Result<Vec<String>>>()
            .ctx(&self.path)?;
        Ok(ids)
    }

    /// Bundles whose file may still sit in the inbox (journaled, not yet archived).
    pub fn unarchived(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, source_name FROM bundles WHERE archived = 0")
            .ctx(&self.path)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx(&self.path)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(&self.path)?;
        Ok(rows)
    }

    /// Waiting bundles that expired while they waited: (id, issuer, expires_at).
    pub fn expired_waiting(&self, now: i64, skew: i64) -> Result<Vec<(String, String, i64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, issuer, expires_at FROM bundles WHERE state IN ('waiting','ready') AND expires_at IS NOT NULL AND expires_at + ?2 < ?1
                      AND EXISTS (SELECT 1 FROM commands c WHERE c.bundle_id = bundles.id AND c.state IN ('ready','waiting'))")
            .ctx(&self.path)?;
        let rows = stmt
            .query_map(params![now, skew], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .ctx(&self.path)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(&self.path)?;
        Ok(rows)
    }

    /// One bundle.
    pub fn bundle(&self, id: &str) -> Result<Option<BundleRow>> {
        self.conn
            .query_row(
                "SELECT id, issuer, recipient, sequence, state, reason, late, received_at FROM bundles WHERE id = ?1",
                params![id],
                |r| {
                    Ok(BundleRow {
                        id: r.get(0)?,
                        issuer: r.get(1)?,
                        recipient: r.get(2)?,
                        sequence: r.get::<_, i64>(3)?.unsigned_abs(),
                        state: BundleState::parse(&r.get::<_, String>(4)?),
                        reason: r.get(5)?,
                        late: r.get(6)?,
                        received_at: r.get(7)?,
                    })
                },
            )
            .optional()
            .ctx(&self.path)
    }

    /// Every command, in journal order (tests, status).
    pub fn commands(&self) -> Result<Vec<CommandRow>> {
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands c JOIN bundles b ON b.id = c.bundle_id
             ORDER BY b.received_at, b.id, c.idx"
        );
        let mut stmt = self.conn.prepare(&sql).ctx(&self.path)?;
        let rows = stmt
            .query_map([], command_row)
            .ctx(&self.path)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(&self.path)?;
        Ok(rows)
    }

    /// The journal summary for `status`.
    pub fn overview(&self) -> Result<Overview> {
        let mut o = Overview::default();
        for (table, target) in [("bundles", &mut o.bundles), ("commands", &mut o.commands)] {
            let mut stmt = self
                .conn
                .prepare(&format!(
                    "SELECT state, COUNT(*) FROM {table} GROUP BY state"
                ))
                .ctx(&self.path)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .ctx(&self.path)?;
            for row in rows {
                let (state, n) = row.ctx(&self.path)?;
                target.insert(state, n.unsigned_abs());
            }
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT b.issuer, b.recipient, COALESCE(s.next_seq, 1), COUNT(*), MIN(b.received_at)
                 FROM bundles b LEFT JOIN streams s ON s.issuer = b.issuer AND s.recipient = b.recipient
                 WHERE b.state = 'waiting' GROUP BY b.issuer, b.recipient",
            )
            .ctx(&self.path)?;
        o.gaps = stmt
            .query_map([], |r| {
                Ok(StreamGap {
                    issuer: r.get(0)?,
                    recipient: r.get(1)?,
                    missing: r.get::<_, i64>(2)?.unsigned_abs(),
                    waiting: r.get::<_, i64>(3)?.unsigned_abs(),
                    since: r.get(4)?,
                })
            })
            .ctx(&self.path)?
            .collect::<rusqlite::Result<_>>()
            .ctx(&self.path)?;
        drop(stmt);
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands c JOIN bundles b ON b.id = c.bundle_id
             WHERE c.state IN ('running','waiting','failed') ORDER BY c.updated_at DESC LIMIT 50"
        );
        let mut stmt = self.conn.prepare(&sql).ctx(&self.path)?;
        o.held = stmt
            .query_map([], command_row)
            .ctx(&self.path)?
            .collect::<rusqlite::Result<_>>()
            .ctx(&self.path)?;
        drop(stmt);
        let mut stmt = self
            .conn
            .prepare("SELECT issuer, recipient, sequence, skipped_at FROM skipped WHERE resolved_bundle IS NULL ORDER BY skipped_at")
            .ctx(&self.path)?;
        o.skipped = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get::<_, i64>(2)?.unsigned_abs(),
                    r.get(3)?,
                ))
            })
            .ctx(&self.path)?
            .collect::<rusqlite::Result<_>>()
            .ctx(&self.path)?;
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(id: &str, seq: u64, expires_at: Option<i64>) -> NewBundle {
        NewBundle {
            id: id.into(),
            issuer: "k".into(),
            recipient: "v".into(),
            sequence: seq,
            manifest_sha256: id.into(),
            source_name: format!("{id}.vsb"),
            created_at: 0,
            expires_at,
            commands: vec![NewCommand {
                cmd_id: format!("{id}:1"),
                kind: "ack".into(),
                args: "{}".into(),
                files: "[]".into(),
            }],
        }
    }

    fn admit(store: &mut Store, b: &NewBundle, now: i64) -> BundleState {
        store
            .write(|tx| {
                let a = tx.classify(
                    &b.id,
                    &b.manifest_sha256,
                    &b.issuer,
                    &b.recipient,
                    b.sequence,
                )?;
                tx.admit(b, &a, 100, now)
            })
            .unwrap()
    }

    #[test]
    fn a_bundle_that_expired_while_waiting_finishes_when_the_gap_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("j.db"), "v").unwrap();
        assert_eq!(
            admit(&mut store, &bundle("b2", 2, Some(50)), 10),
            BundleState::Waiting
        );
        for (id, issuer, _) in store.expired_waiting(60, 0).unwrap() {
            store
                .write(|tx| tx.fail_bundle(&id, &issuer, "expired", 60))
                .unwrap();
        }
        // Sequence 1 arrives: b2 is released and, having nothing left to run, finishes.
        assert_eq!(
            admit(&mut store, &bundle("b1", 1, None), 70),
            BundleState::Ready
        );
        assert_eq!(
            store.bundle("b2").unwrap().unwrap().state,
            BundleState::Failed
        );
        assert!(
            store
                .next_command(70)
                .unwrap()
                .is_some_and(|c| c.bundle_id == "b1")
        );
    }

    #[test]
    fn the_journal_survives_reopening_and_refuses_another_vessel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        {
            let mut store = Store::open(&path, "v").unwrap();
            admit(&mut store, &bundle("b1", 1, None), 1);
        }
        let store = Store::open(&path, "v").unwrap();
        assert_eq!(
            store.bundle("b1").unwrap().unwrap().state,
            BundleState::Ready
        );
        drop(store);
        let err = Store::open(&path, "other").err().unwrap().to_string();
        assert!(err.contains("belongs to vessel \"v\""), "{err}");
    }
}
