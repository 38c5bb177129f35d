//! What capture last saw of each Moodle row (the snapshot diff's other side), the changes it
//! could not key yet (the progress quarantine), and the rows imported from shore, so that
//! capture never sends them back (law 2).

use std::collections::HashMap;

use rusqlite::params;

use super::{Ctx, Result, Store, Tx, to_i64};
use wire::progress::{Record, RecordKind};

/// The state last captured for one Moodle row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedState {
    /// Value (state, grade).
    pub value: String,
    /// Moodle's time.
    pub time: i64,
    /// Keys at capture time (None when the row could not be keyed then).
    pub keys: Option<(String, String, String)>,
}

/// Local natural key of a captured row: (kind code, Moodle user id, object id).
pub type LocalKey = (u8, i64, i64);
/// A quarantined change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuarantinedProgress {
    /// Kind.
    pub kind: String,
    /// Moodle user id.
    pub userid: i64,
    /// Moodle object id (cmid, course id, grade item id).
    pub objid: i64,
    /// Value.
    pub value: String,
    /// Moodle time.
    pub time: i64,
    /// Why it could not be keyed.
    pub reason: String,
    /// Since when.
    pub since: i64,
}

impl Tx<'_> {
    /// Every captured state, keyed by local key.
    pub fn captured_state(&self) -> Result<HashMap<LocalKey, CapturedState>> {
        let mut stmt = self
            .tx
            .prepare(
                "SELECT kind, userid, objid, value, vtime, ukey, ckey, ikey FROM capture_state",
            )
            .ctx(self.path)?;
        let mut rows = stmt.query([]).ctx(self.path)?;
        let mut out = HashMap::new();
        while let Some(r) = rows.next().ctx(self.path)? {
            let key: LocalKey = (
                r.get(0).ctx(self.path)?,
                r.get(1).ctx(self.path)?,
                r.get(2).ctx(self.path)?,
            );
            let ukey: Option<String> = r.get(5).ctx(self.path)?;
            let ckey: Option<String> = r.get(6).ctx(self.path)?;
            let ikey: Option<String> = r.get(7).ctx(self.path)?;
            let keys = match (ukey, ckey, ikey) {
                (Some(u), Some(c), Some(i)) => Some((u, c, i)),
                _ => None,
            };
            out.insert(
                key,
                CapturedState {
                    value: r.get(3).ctx(self.path)?,
                    time: r.get(4).ctx(self.path)?,
                    keys,
                },
            );
        }
        Ok(out)
    }
    /// Records the state now captured for a row.
    pub fn set_captured(&self, key: LocalKey, s: &CapturedState) -> Result<()> {
        let (u, c, i) = match &s.keys {
            Some((u, c, i)) => (Some(u.as_str()), Some(c.as_str()), Some(i.as_str())),
            None => (None, None, None),
        };
        self.tx
            .prepare_cached(
                "INSERT INTO capture_state(kind, userid, objid, value, vtime, ukey, ckey, ikey)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(kind, userid, objid) DO UPDATE SET value = excluded.value,
                   vtime = excluded.vtime, ukey = excluded.ukey, ckey = excluded.ckey, ikey = excluded.ikey",
            )
            .ctx(self.path)?
            .execute(params![key.0, key.1, key.2, s.value, s.time, u, c, i])
            .ctx(self.path)?;
        Ok(())
    }
    /// Forgets a row that Moodle no longer holds.
    pub fn forget_captured(&self, key: LocalKey) -> Result<()> {
        self.tx
            .prepare_cached(
                "DELETE FROM capture_state WHERE kind = ?1 AND userid = ?2 AND objid = ?3",
            )
            .ctx(self.path)?
            .execute(params![key.0, key.1, key.2])
            .ctx(self.path)?;
        Ok(())
    }
    /// Whether any imported row waits to be recognised (a capture skips echo checks if not).
    pub fn has_imported(&self) -> Result<bool> {
        Ok(self
            .row("SELECT 1 FROM imported LIMIT 1", [], |r| r.get::<_, i64>(0))?
            .is_some())
    }
    /// Consumes an imported row equal to `rec` (same kind, keys and value): true when `rec` is
    /// an echo of progress that came from shore.
    pub fn take_imported(&self, rec: &Record) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached(
                "DELETE FROM imported WHERE kind = ?1 AND user_key = ?2 AND course_key = ?3
                   AND item_key = ?4 AND value = ?5",
            )
            .ctx(self.path)?
            .execute(params![
                rec.kind.code(),
                rec.user,
                rec.course,
                rec.item,
                rec.value
            ])
            .ctx(self.path)?;
        Ok(n > 0)
    }
    /// Records progress that came from shore, before it is applied to Moodle (law 7), so that
    /// capture recognises it and never sends it back.
    pub fn record_imported(&self, rec: &Record, command_id: &str, now: i64) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO imported(kind, user_key, course_key, item_key, value, command_id, imported_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(kind, user_key, course_key, item_key) DO UPDATE SET value = excluded.value,
                   command_id = excluded.command_id, imported_at = excluded.imported_at",
                params![rec.kind.code(), rec.user, rec.course, rec.item, rec.value, command_id, now],
            )
            .ctx(self.path)?;
        Ok(())
    }
    /// Puts a change that cannot be keyed into the progress quarantine (kept until keyable).
    pub fn quarantine_progress(
        &self,
        key: LocalKey,
        value: &str,
        time: i64,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO progress_quarantine(kind, userid, objid, value, vtime, reason, since)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(kind, userid, objid, value, vtime) DO UPDATE SET reason = excluded.reason",
            )
            .ctx(self.path)?
            .execute(params![key.0, key.1, key.2, value, time, reason, now])
            .ctx(self.path)?;
        Ok(())
    }
    /// Every quarantined change: (local key, value, time).
    pub fn quarantined_progress(&self) -> Result<Vec<(LocalKey, String, i64)>> {
        self.rows(
            "SELECT kind, userid, objid, value, vtime FROM progress_quarantine ORDER BY since, kind, userid, objid",
            [],
            |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?, r.get(4)?)),
        )
    }
    /// Removes a change from the quarantine (it was keyed and queued).
    pub fn release_progress(&self, key: LocalKey, value: &str, time: i64) -> Result<()> {
        self.tx
            .execute(
                "DELETE FROM progress_quarantine WHERE kind = ?1 AND userid = ?2 AND objid = ?3 AND value = ?4 AND vtime = ?5",
                params![key.0, key.1, key.2, value, time],
            )
            .ctx(self.path)?;
        Ok(())
    }
    /// The value last captured for a row (kind code, Moodle user id, object id), if any.
    pub fn captured_value(&self, kind: u8, userid: i64, objid: i64) -> Result<Option<String>> {
        self.row(
            "SELECT value FROM capture_state WHERE kind = ?1 AND userid = ?2 AND objid = ?3",
            params![kind, userid, objid],
            |r| r.get(0),
        )
    }
}

impl Store {
    /// The quarantined changes, oldest first, with reasons.
    pub fn progress_quarantine(&self, limit: u64) -> Result<Vec<QuarantinedProgress>> {
        self.rows(
            "SELECT kind, userid, objid, value, vtime, reason, since FROM progress_quarantine
             ORDER BY since, kind, userid, objid LIMIT ?1",
            params![to_i64(limit)],
            |r| {
                let code: u8 = r.get(0)?;
                Ok(QuarantinedProgress {
                    kind: RecordKind::from_code(code)
                        .map(|k| k.name())
                        .unwrap_or("?")
                        .to_string(),
                    userid: r.get(1)?,
                    objid: r.get(2)?,
                    value: r.get(3)?,
                    time: r.get(4)?,
                    reason: r.get(5)?,
                    since: r.get(6)?,
                })
            },
        )
    }
}
