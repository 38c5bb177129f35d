//! What vessels report of their commands (`command_reports` in a progress batch): the latest
//! state of each command per vessel, kept by the batch sequence that carried it so that an
//! older batch received late never overwrites a newer report.

use wire::envelope::CommandReport;

use super::sql::Row;
use super::{Result, ShoreStore};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vessel_commands (
    vessel          TEXT NOT NULL,
    cmd_id          TEXT NOT NULL,
    bundle_id       TEXT NOT NULL,
    type            TEXT NOT NULL,
    state           TEXT NOT NULL,
    reason          TEXT,
    at              TEXT NOT NULL,
    unacked_records INTEGER,
    learners        INTEGER,
    batch_seq       INTEGER NOT NULL,
    received_at     INTEGER NOT NULL,
    PRIMARY KEY (vessel, cmd_id)
);
CREATE INDEX IF NOT EXISTS vessel_commands_bundle ON vessel_commands(vessel, bundle_id);
";

/// A vessel's latest report of one command, as shore holds it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reported {
    /// The command's state on board (`waiting`, `done`, `failed`...).
    pub state: String,
    /// Why it waits, what it did, or why it failed.
    pub reason: Option<String>,
    /// When the vessel's command reached that state (RFC 3339 UTC).
    pub at: String,
    /// Records of the course still waiting on board for acknowledgement, as reported.
    pub unacked_records: Option<u64>,
    /// Learners with progress in the course on board, as reported.
    pub learners: Option<u64>,
}

/// The columns [`reported_row`] reads, in order.
pub(super) const REPORTED_COLUMNS: &str = "state, reason, at, unacked_records, learners";

/// A [`Reported`] from [`REPORTED_COLUMNS`] starting at column `at`.
pub(super) fn reported_row(r: &Row, at: usize) -> std::result::Result<Reported, String> {
    Ok(Reported {
        state: r.get(at)?,
        reason: r.get(at + 1)?,
        at: r.get(at + 2)?,
        unacked_records: r.get(at + 3)?,
        learners: r.get(at + 4)?,
    })
}

impl ShoreStore {
    /// Keeps the reports of batch `seq` from `vessel`, each unless a later batch reported on
    /// the same command already.
    pub fn note_reports(
        &self,
        vessel: &str,
        seq: u64,
        reports: &[CommandReport],
        now: i64,
    ) -> Result<()> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let mut db = self.db()?;
        for r in reports {
            db
                .execute(
                    "INSERT INTO vessel_commands(vessel, cmd_id, bundle_id, type, state, reason, at, unacked_records, learners, batch_seq, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT(vessel, cmd_id) DO UPDATE SET bundle_id = excluded.bundle_id, type = excluded.type,
                        state = excluded.state, reason = excluded.reason, at = excluded.at,
                        unacked_records = excluded.unacked_records, learners = excluded.learners,
                        batch_seq = excluded.batch_seq, received_at = excluded.received_at
                     WHERE excluded.batch_seq >= vessel_commands.batch_seq",
                    &[
                        &vessel,
                        &r.id,
                        &r.bundle,
                        &r.kind,
                        &r.state,
                        &r.reason,
                        &r.at,
                        &r.unacked_records.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                        &r.learners.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                        &seq,
                        &now,
                    ],
                )?;
        }
        Ok(())
    }

    /// The vessel's latest report on the command(s) of bundle `bundle` (the last reported).
    pub fn reported(&self, vessel: &str, bundle: &str) -> Result<Option<Reported>> {
        self.db()?.query_opt(
            &format!(
                "SELECT {REPORTED_COLUMNS} FROM vessel_commands
                 WHERE vessel = ?1 AND bundle_id = ?2 ORDER BY batch_seq DESC, cmd_id LIMIT 1"
            ),
            &[&vessel, &bundle],
            |r| reported_row(r, 0),
        )
    }
}
