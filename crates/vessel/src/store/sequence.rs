//! Admission and order: classifying a verified bundle against the journal, recording it, and
//! moving each (issuer, recipient) stream forward in sequence order, including the gap timeout.

use rusqlite::params;

use super::journal::{Admission, BundleState, CommandState, NewBundle, seq};
use super::{Ctx, Result, Tx};
use base::clock::{format_age, format_time};

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
        let known: Option<(String, bool)> = self.row(
            "SELECT manifest_sha256, archived FROM bundles WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some((sha, archived)) = known {
            return Ok(Admission::Known {
                same_content: sha == manifest_sha256,
                archived,
            });
        }
        let holder: Option<(String, i64)> = self.row("SELECT id, received_at FROM bundles WHERE issuer = ?1 AND recipient = ?2 AND sequence = ?3",
                params![issuer, recipient, seq(sequence)],
                |r| Ok((r.get(0)?, r.get(1)?)))?;
        if let Some((other, at)) = holder {
            return Ok(Admission::Replay {
                previous: format!("by bundle {other}, received {}", format_time(at)),
            });
        }
        // A sequence inside a gap given up (no bundle holds it: that was checked above).
        let skipped: Option<i64> = self.row(
            "SELECT 1 FROM skipped WHERE issuer = ?1 AND recipient = ?2
                 AND sequence <= ?3 AND COALESCE(last_sequence, sequence) >= ?3",
            params![issuer, recipient, seq(sequence)],
            |r| r.get(0),
        )?;
        if skipped.is_some() {
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
        let n: Option<i64> = self.row(
            "SELECT next_seq FROM streams WHERE issuer = ?1 AND recipient = ?2",
            params![issuer, recipient],
            |r| r.get(0),
        )?;
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
            let (cstate, creason) = self.claim_command_id(b, idx, &c.cmd_id, now)?;
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
        let (outcome, note) = match admission {
            Admission::InOrder => ("ready", String::new()),
            Admission::Late => (
                "late",
                "; arrived after its sequence was skipped: applied where no newer sequence acted"
                    .into(),
            ),
            _ => ("waiting", format!("; {}", reason.unwrap_or_default())),
        };
        self.audit(
            now,
            &b.issuer,
            Some(&b.id),
            None,
            "bundle_accepted",
            outcome,
            &format!("{detail}{note}"),
        )?;
        match admission {
            Admission::InOrder => {
                self.set_next_seq(&b.issuer, &b.recipient, b.sequence + 1)?;
                self.release_in_order(&b.issuer, &b.recipient, now)?;
            }
            Admission::Late => self.resolve_skipped(b, now)?,
            _ => {}
        }
        self.finish_bundle_if_done(&b.id, now)?;
        Ok(state)
    }

    /// Which command holds a command id reused across bundles: the one whose bundle comes first
    /// in (issuer, sequence, position), whatever the arrival order, so every vessel given the
    /// same bundles ends in the same state. A later holder that has not started yet gives the id
    /// up (it becomes the duplicate); one that already ran keeps it (its effect is taken).
    fn claim_command_id(
        &self,
        b: &NewBundle,
        idx: usize,
        cmd_id: &str,
        now: i64,
    ) -> Result<(CommandState, Option<String>)> {
        let holder: Option<(String, i64, String, String, i64)> = self.row(
            "SELECT c.bundle_id, c.idx, c.state, b.issuer, b.sequence FROM commands c
                 JOIN bundles b ON b.id = c.bundle_id
                 WHERE c.cmd_id = ?1 AND c.state != 'duplicate'",
            params![cmd_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?;
        let Some((other, other_idx, other_state, other_issuer, other_seq)) = holder else {
            return Ok((CommandState::Ready, None));
        };
        let mine = (b.issuer.as_str(), seq(b.sequence), idx as i64);
        let theirs = (other_issuer.as_str(), other_seq, other_idx);
        let not_started = other_state == CommandState::Ready.as_str() && {
            let attempts: i64 = self
                .row(
                    "SELECT attempts FROM commands WHERE bundle_id = ?1 AND idx = ?2",
                    params![other, other_idx],
                    |r| r.get(0),
                )?
                .unwrap_or(0);
            attempts == 0
        };
        if mine < theirs && not_started {
            let reason = format!(
                "command id {cmd_id} belongs to bundle {} (sequence {} of issuer {}), which comes first; not applied",
                b.id, b.sequence, b.issuer
            );
            self.tx
                .execute(
                    "UPDATE commands SET state = 'duplicate', reason = ?3, updated_at = ?4
                     WHERE bundle_id = ?1 AND idx = ?2",
                    params![other, other_idx, reason, now],
                )
                .ctx(self.path)?;
            self.audit(
                now,
                &other_issuer,
                Some(&other),
                Some(cmd_id),
                "command_duplicate",
                "skipped",
                &reason,
            )?;
            return Ok((CommandState::Ready, None));
        }
        Ok((
            CommandState::Duplicate,
            Some(format!(
                "command id {cmd_id} was already taken from bundle {other}; not applied again"
            )),
        ))
    }

    /// A late bundle filled a sequence of a gap given up: the gap is resolved once every
    /// sequence in it has arrived.
    fn resolve_skipped(&self, b: &NewBundle, now: i64) -> Result<()> {
        let range: Option<(i64, i64)> = self.row(
            "SELECT sequence, COALESCE(last_sequence, sequence) FROM skipped
                 WHERE issuer = ?1 AND recipient = ?2 AND sequence <= ?3
                 AND COALESCE(last_sequence, sequence) >= ?3",
            params![b.issuer, b.recipient, seq(b.sequence)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let Some((first, last)) = range else {
            return Ok(());
        };
        let arrived: i64 = self
            .row(
                "SELECT COUNT(*) FROM bundles WHERE issuer = ?1 AND recipient = ?2
                     AND sequence BETWEEN ?3 AND ?4",
                params![b.issuer, b.recipient, first, last],
                |r| r.get(0),
            )?
            .unwrap_or(0);
        if arrived > last - first {
            self.tx
                .execute(
                    "UPDATE skipped SET resolved_bundle = ?4, resolved_at = ?5
                     WHERE issuer = ?1 AND recipient = ?2 AND sequence = ?3",
                    params![b.issuer, b.recipient, first, b.id, now],
                )
                .ctx(self.path)?;
        }
        Ok(())
    }

    /// Releases waiting bundles of a stream that are now next in order.
    fn release_in_order(&self, issuer: &str, recipient: &str, now: i64) -> Result<()> {
        loop {
            let next = self.next_seq(issuer, recipient)?;
            let waiting: Option<String> = self.row("SELECT id FROM bundles WHERE issuer = ?1 AND recipient = ?2 AND sequence = ?3 AND state = 'waiting'",
                    params![issuer, recipient, seq(next)],
                    |r| r.get(0))?;
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
    /// Returns a line per gap given up.
    pub fn release_gaps(&self, now: i64, gap_timeout: i64) -> Result<Vec<String>> {
        let streams: Vec<(String, String, i64, i64)> = self.rows(
            "SELECT issuer, recipient, MIN(sequence), MIN(received_at) FROM bundles
                 WHERE state = 'waiting' GROUP BY issuer, recipient",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let mut lines = Vec::new();
        for (issuer, recipient, first_waiting, since) in streams {
            if now.saturating_sub(since) < gap_timeout {
                continue;
            }
            let next = self.next_seq(&issuer, &recipient)?;
            let first_waiting = first_waiting.unsigned_abs();
            if first_waiting <= next {
                continue;
            }
            // One row and one audit line per gap, however many sequences it spans.
            let last = first_waiting - 1;
            self.tx
                .execute(
                    "INSERT OR IGNORE INTO skipped(issuer, recipient, sequence, last_sequence, skipped_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![issuer, recipient, seq(next), seq(last), now],
                )
                .ctx(self.path)?;
            let which = if next == last {
                format!("sequence {next}")
            } else {
                format!("sequences {next} to {last} ({} in all)", last - next + 1)
            };
            let line = format!(
                "{which} from issuer {issuer} for {recipient:?} never arrived within {}; later bundles proceed without them (each is still applied if it turns up)",
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
}
