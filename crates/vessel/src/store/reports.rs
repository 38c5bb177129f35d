//! Command reports: which commands' states shore has not yet been told of. A progress batch
//! carries them (`command_reports` in its manifest); a state change of a command that shore
//! tracks is reason enough for a batch with no records, a changed reason alone is not (a
//! waiting course deletion rewrites its reason at every attempt, and links are metered).
//! `ack` commands are never reported: reporting them would ask for another acknowledgement.

use rusqlite::params;
use wire::envelope::CommandReport;

use super::{Ctx, Result, Tx};

/// Commands reported per batch at most; the rest go in the next ones.
const PER_BATCH: u64 = 200;
/// Characters of a command's reason a report carries.
const REASON_CHARS: usize = 1_000;

/// Reports due, and whether any of them is a state change (not only a new reason).
pub struct DueReports {
    /// Reports to put in the next batch, oldest change first.
    pub reports: Vec<CommandReport>,
    /// Their (bundle id, index) keys, to mark as reported.
    keys: Vec<(String, i64, String, Option<String>)>,
    /// Whether a state changed since the last report (a batch is sent for that alone).
    pub state_changed: bool,
}

impl Tx<'_> {
    /// Commands whose state or reason shore has not been told of (settled ones and waiting
    /// ones; a command that is only ready or running is reported when it waits or ends).
    pub fn reports_due(&self) -> Result<DueReports> {
        type Row = (
            String,
            i64,
            String,
            String,
            String,
            Option<String>,
            i64,
            String,
            bool,
        );
        let rows: Vec<Row> = self.rows(
            "SELECT c.bundle_id, c.idx, c.cmd_id, c.type, c.state, c.reason, c.updated_at, c.args,
                    r.state IS NULL OR r.state != c.state
             FROM commands c LEFT JOIN reported r ON r.bundle_id = c.bundle_id AND r.idx = c.idx
             WHERE c.type != 'ack' AND c.state NOT IN ('ready', 'running')
               AND (r.state IS NULL OR r.state != c.state OR r.reason IS NOT c.reason)
             ORDER BY c.updated_at, c.bundle_id, c.idx LIMIT ?1",
            params![PER_BATCH as i64],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            },
        )?;
        let mut due = DueReports {
            reports: Vec::with_capacity(rows.len()),
            keys: Vec::with_capacity(rows.len()),
            state_changed: false,
        };
        for (bundle, idx, id, kind, state, reason, at, args, changed) in rows {
            let (mut unacked, mut learners) = (None, None);
            // What a waiting deletion or replacement waits for; once it ended, its note says.
            if state == "waiting" && matches!(kind.as_str(), "delete_course" | "replace_course") {
                let course = serde_json::from_str::<serde_json::Value>(&args)
                    .ok()
                    .and_then(|a| a.get("course").and_then(|c| c.as_str()).map(String::from));
                if let Some(course) = course {
                    let (backlog, n) = self.course_impact(&course)?;
                    unacked = Some(backlog.records);
                    learners = Some(n);
                }
            }
            due.keys
                .push((bundle.clone(), idx, state.clone(), reason.clone()));
            // A command or bundle id from before ids were checked would make the batch
            // invalid: such a report is marked sent and left out.
            if wire::ids::check_command_id(&id).is_err()
                || wire::ids::check_id("bundle id", &bundle).is_err()
            {
                continue;
            }
            due.state_changed |= changed;
            due.reports.push(CommandReport {
                id,
                bundle,
                kind,
                state,
                // The manifest holds at most 4,096 bytes of it; shore shows less.
                reason: reason.map(|r| base::text::clip(&r, REASON_CHARS)),
                at: base::clock::format_time(at),
                unacked_records: unacked,
                learners,
            });
        }
        Ok(due)
    }

    /// Notes that batch `seq` carries `due`.
    pub fn reports_sent(&self, due: &DueReports, seq: u64) -> Result<()> {
        for (bundle, idx, state, reason) in &due.keys {
            self.tx
                .execute(
                    "INSERT INTO reported(bundle_id, idx, state, reason, batch_seq) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(bundle_id, idx) DO UPDATE SET state = excluded.state, reason = excluded.reason, batch_seq = excluded.batch_seq",
                    params![bundle, idx, state, reason, i64::try_from(seq).unwrap_or(i64::MAX)],
                )
                .ctx(self.path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::journal::tests::bundle;
    use crate::store::{CommandOutcome, Store};

    /// A batch's reports always pass its own manifest check: a reason is clipped, and a
    /// command journaled before ids were checked (an id with a space) is left out, marked sent.
    #[test]
    fn reports_fit_the_manifest_rules_whatever_the_journal_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("j.db"), "v").unwrap();
        for (b, seq, id) in [("b1", 1, "ok-1"), ("b2", 2, "old id")] {
            let mut nb = bundle(b, seq, None);
            nb.commands[0].cmd_id = id.into();
            nb.commands[0].kind = "set_mapping".into();
            store
                .write(|tx| {
                    let a = tx.classify(&nb.id, &nb.manifest_sha256, "k", "v", seq)?;
                    tx.admit(&nb, &a, 100, 1)
                })
                .unwrap();
            let cmd = store.next_command(1).unwrap().unwrap();
            let outcome = CommandOutcome::Failed("x".repeat(20_000));
            store
                .write(|tx| tx.finish_command(&cmd, &outcome, 2))
                .unwrap();
        }
        let due = store.write(|tx| tx.reports_due()).unwrap();
        assert_eq!(due.reports.len(), 1, "{:?}", due.reports);
        assert_eq!(due.reports[0].id, "ok-1");
        assert!(due.reports[0].reason.as_ref().unwrap().chars().count() <= 1_000);
        let mut m: wire::envelope::Manifest = serde_json::from_value(serde_json::json!({
            "format": 1, "kind": "progress", "id": "b", "issuer": "k", "sender": "v",
            "recipient": "shore", "sequence": 1, "created": "2026-12-07T00:00:00Z"
        }))
        .unwrap();
        m.command_reports = due.reports.clone();
        assert_eq!(m.check(), Ok(()));
        store.write(|tx| tx.reports_sent(&due, 1)).unwrap();
        let again = store.write(|tx| tx.reports_due()).unwrap();
        assert!(
            again.reports.is_empty() && !again.state_changed,
            "both marked sent"
        );
    }
}
