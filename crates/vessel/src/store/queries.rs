//! The journal's read side: the next runnable command, wake-up times, recovery lists, and the
//! summaries behind `status`.

use rusqlite::params;

use super::journal::{
    BundleRow, BundleState, COMMAND_COLUMNS, CommandRow, Overview, SkippedRange, StreamGap,
    command_row,
};
use super::{Ctx, Result, Store};

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
        self.row(&sql, params![now], command_row)
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
        let ids = self.rows(
            "SELECT id FROM bundles WHERE state IN ('waiting','ready')",
            [],
            |r| r.get(0),
        )?;
        Ok(ids)
    }

    /// Bundles whose file may still sit in the inbox (journaled, not yet archived).
    pub fn unarchived(&self) -> Result<Vec<(String, String)>> {
        let rows = self.rows(
            "SELECT id, source_name FROM bundles WHERE archived = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(rows)
    }

    /// Waiting bundles that expired while they waited: (id, issuer, expires_at).
    pub fn expired_waiting(&self, now: i64, skew: i64) -> Result<Vec<(String, String, i64)>> {
        let rows = self.rows("SELECT id, issuer, expires_at FROM bundles WHERE state IN ('waiting','ready') AND expires_at IS NOT NULL AND expires_at + ?2 < ?1
                      AND EXISTS (SELECT 1 FROM commands c WHERE c.bundle_id = bundles.id AND c.state IN ('ready','waiting'))", params![now, skew], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        Ok(rows)
    }

    /// One bundle.
    pub fn bundle(&self, id: &str) -> Result<Option<BundleRow>> {
        self.row("SELECT id, issuer, recipient, sequence, state, reason, late, received_at FROM bundles WHERE id = ?1",
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
                })
    }

    /// Every command, in journal order (tests, status).
    pub fn commands(&self) -> Result<Vec<CommandRow>> {
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands c JOIN bundles b ON b.id = c.bundle_id
             ORDER BY b.received_at, b.id, c.idx"
        );
        let rows = self.rows(&sql, [], command_row)?;
        Ok(rows)
    }

    /// The journal summary for `status`.
    pub fn overview(&self) -> Result<Overview> {
        let mut o = Overview::default();
        for (table, target) in [("bundles", &mut o.bundles), ("commands", &mut o.commands)] {
            let sql = format!("SELECT state, COUNT(*) FROM {table} GROUP BY state");
            for (state, n) in self.rows(&sql, [], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })? {
                target.insert(state, n.unsigned_abs());
            }
        }
        o.gaps = self.rows("SELECT b.issuer, b.recipient, COALESCE(s.next_seq, 1), COUNT(*), MIN(b.received_at)
                 FROM bundles b LEFT JOIN streams s ON s.issuer = b.issuer AND s.recipient = b.recipient
                 WHERE b.state = 'waiting' GROUP BY b.issuer, b.recipient", [], |r| {
                Ok(StreamGap {
                    issuer: r.get(0)?,
                    recipient: r.get(1)?,
                    missing: r.get::<_, i64>(2)?.unsigned_abs(),
                    waiting: r.get::<_, i64>(3)?.unsigned_abs(),
                    since: r.get(4)?,
                })
            })?;
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands c JOIN bundles b ON b.id = c.bundle_id
             WHERE c.state IN ('running','waiting','failed') ORDER BY c.updated_at DESC LIMIT 50"
        );
        o.held = self.rows(&sql, [], command_row)?;
        o.skipped = self.rows(
            "SELECT issuer, recipient, sequence, COALESCE(last_sequence, sequence), skipped_at
                 FROM skipped WHERE resolved_bundle IS NULL ORDER BY skipped_at",
            [],
            |r| {
                Ok(SkippedRange {
                    issuer: r.get(0)?,
                    recipient: r.get(1)?,
                    first: r.get::<_, i64>(2)?.unsigned_abs(),
                    last: r.get::<_, i64>(3)?.unsigned_abs(),
                    at: r.get(4)?,
                })
            },
        )?;
        Ok(o)
    }
}
