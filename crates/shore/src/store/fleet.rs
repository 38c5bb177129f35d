//! What the fleet view needs beyond the vessel registry: each vessel's backlog on board as it
//! reported it, one point per hour for the last 30 days (the dashboard's chart), the records it
//! delivered lately (its observed link rate), and its course deletions held by the guard.

use super::reports::{REPORTED_COLUMNS, reported_row};
use super::{Reported, Result, ShoreStore};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vessel_history (
    vessel        TEXT NOT NULL,
    hour          INTEGER NOT NULL,
    depth         INTEGER,
    oldest_unsent INTEGER,
    PRIMARY KEY (vessel, hour)
);
";

/// Days of history kept.
pub const HISTORY_DAYS: i64 = 30;

/// One point of a vessel's history: the last report within an hour.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Point {
    /// The hour (Unix seconds, a multiple of 3600).
    pub hour: i64,
    /// Records waiting on board.
    pub depth: Option<i64>,
    /// Age in seconds of the oldest of them.
    pub oldest_unsent: Option<i64>,
}

/// A course deletion or replacement a vessel reported as waiting.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeldDeletion {
    /// The command.
    pub command: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// As reported.
    #[serde(flatten)]
    pub report: Reported,
}

impl ShoreStore {
    /// Keeps the vessel's report in its hour of history, and forgets what is older than
    /// [`HISTORY_DAYS`].
    pub(super) fn note_history(
        &self,
        vessel: &str,
        now: i64,
        depth: Option<i64>,
        oldest_unsent: Option<i64>,
    ) -> Result<()> {
        let hour = now - now.rem_euclid(3600);
        let mut db = self.db()?;
        db.execute(
            "INSERT INTO vessel_history(vessel, hour, depth, oldest_unsent) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(vessel, hour) DO UPDATE SET depth = COALESCE(excluded.depth, vessel_history.depth), oldest_unsent = excluded.oldest_unsent",
            &[&vessel, &hour, &depth, &oldest_unsent],
        )?;
        db.execute(
            "DELETE FROM vessel_history WHERE vessel = ?1 AND hour < ?2",
            &[&vessel, &(hour - HISTORY_DAYS * 86_400)],
        )?;
        Ok(())
    }

    /// The vessel's history since `since`, oldest first.
    pub fn history(&self, vessel: &str, since: i64) -> Result<Vec<Point>> {
        self.db()?.query(
            "SELECT hour, depth, oldest_unsent FROM vessel_history WHERE vessel = ?1 AND hour >= ?2 ORDER BY hour",
            &[&vessel, &since],
            |r| {
                Ok(Point {
                    hour: r.get(0)?,
                    depth: r.get(1)?,
                    oldest_unsent: r.get(2)?,
                })
            },
        )
    }

    /// Records the vessel's batches carried since `since` (new or not: what its link moved).
    pub fn delivered_since(&self, vessel: &str, since: i64) -> Result<u64> {
        self.db()?.query_one(
            "SELECT COALESCE(SUM(records), 0) FROM batches WHERE vessel = ?1 AND received_at >= ?2",
            &[&vessel, &since],
            |r| r.get(0),
        )
    }

    /// The vessel's course deletions and replacements it last reported as waiting.
    pub fn held_deletions(&self, vessel: &str) -> Result<Vec<HeldDeletion>> {
        self.db()?.query(
            &format!(
                "SELECT cmd_id, type, {REPORTED_COLUMNS} FROM vessel_commands
                 WHERE vessel = ?1 AND state = 'waiting' AND type IN ('delete_course', 'replace_course')
                 ORDER BY at"
            ),
            &[&vessel],
            |r| {
                Ok(HeldDeletion {
                    command: r.get(0)?,
                    kind: r.get(1)?,
                    report: reported_row(r, 2)?,
                })
            },
        )
    }
}
