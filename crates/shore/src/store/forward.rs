//! What shore keeps about forwarding records into the cloud Moodle: the watermark (the last
//! record, in arrival order, whose outcome is settled), the record in flight (committed before
//! each call that changes the cloud), each record's outcome, the records held back (the cloud
//! lacks their learner, course or activity, or refused them) with their reason, what shore
//! last wrote into the cloud per key (the newer-wins check), and the operator's key mappings.

use super::sql::{Db, Row, ToValue};
use super::{Result, ShoreStore, record_row};
use wire::progress::Record;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shore_facts (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS forwarded (
    record_rowid INTEGER PRIMARY KEY,
    outcome      TEXT NOT NULL,
    detail       TEXT NOT NULL,
    at           INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS forward_held (
    record_rowid INTEGER PRIMARY KEY,
    reason       TEXT NOT NULL,
    since        INTEGER NOT NULL,
    tried_at     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cloud_written (
    kind        INTEGER NOT NULL,
    user_key    TEXT NOT NULL,
    course_key  TEXT NOT NULL,
    item_key    TEXT NOT NULL,
    value       TEXT NOT NULL,
    vtime       INTEGER NOT NULL,
    written_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, user_key, course_key, item_key)
);
CREATE TABLE IF NOT EXISTS cloud_map (
    what     TEXT NOT NULL,
    from_key TEXT NOT NULL,
    to_key   TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (what, from_key)
);
CREATE TABLE IF NOT EXISTS shore_audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    who     TEXT NOT NULL,
    what    TEXT NOT NULL,
    detail  TEXT NOT NULL
);
";

/// A record to forward: its position in arrival order, the vessel that sent it, the record.
#[derive(Debug, Clone)]
pub struct ToForward {
    /// Arrival position (the watermark's unit).
    pub rowid: i64,
    /// Sending vessel.
    pub vessel: String,
    /// The record.
    pub record: Record,
}

/// What shore last wrote into the cloud for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The value written.
    pub value: String,
    /// The record's own time (when it happened on board).
    pub vtime: i64,
    /// When shore wrote it.
    pub written_at: i64,
}

/// How a record's forwarding ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled<'a> {
    /// `applied`, `already`, `older`, `tie`, `derived` or `ignored`.
    pub outcome: &'a str,
    /// Why, in words.
    pub detail: &'a str,
    /// The value now in the cloud for the record's key, when shore wrote it.
    pub wrote: Option<&'a str>,
}

/// How one record's forwarding ends.
#[derive(Debug)]
pub enum Ending<'a> {
    /// Settled with an outcome.
    Settled(Settled<'a>),
    /// Held with a reason.
    Held(&'a str),
}

const FORWARD_COLUMNS: &str = "r.rowid, r.vessel, r.record_id, r.kind, r.user_key, r.course_key, r.item_key, r.user_legacy, r.course_legacy, r.item_legacy, r.value, r.vtime, r.received_at";

impl ShoreStore {
    pub(super) fn fact(&self, name: &str) -> Result<Option<i64>> {
        self.db()?.query_opt(
            "SELECT value FROM shore_facts WHERE name = ?1",
            &[&name],
            |r| r.get(0),
        )
    }

    pub(super) fn set_fact(&self, name: &str, value: Option<i64>) -> Result<()> {
        let mut db = self.db()?;
        match value {
            Some(v) => db.execute(
                "INSERT INTO shore_facts(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                &[&name, &v],
            ),
            None => db.execute("DELETE FROM shore_facts WHERE name = ?1", &[&name]),
        }
        .map(|_| ())
    }

    /// The watermark: every record up to this arrival position has its outcome settled.
    pub fn forward_cursor(&self) -> Result<i64> {
        Ok(self.fact("forward_cursor")?.unwrap_or(0))
    }

    /// The record whose cloud call was under way when shore last stopped, if any.
    pub fn forward_inflight(&self) -> Result<Option<i64>> {
        self.fact("forward_inflight")
    }

    /// Keeps which way the last pass reached the cloud (`true`: through the plugin).
    pub fn note_cloud_path(&self, plugin: bool) -> Result<()> {
        self.set_fact("cloud_plugin", Some(i64::from(plugin)))
    }

    /// Committed before a call that changes the cloud.
    pub fn note_inflight(&self, rowid: i64) -> Result<()> {
        self.set_fact("forward_inflight", Some(rowid))
    }

    /// Records with two more text columns after [`FORWARD_COLUMNS`] (NULL where unused).
    fn read_forward(
        &self,
        sql: &str,
        args: &[&dyn ToValue],
    ) -> Result<Vec<(ToForward, String, String)>> {
        self.db()?.query(sql, args, |r: &Row| {
            let (_, record, _) = record_row(r, 2)?;
            Ok((
                ToForward {
                    rowid: r.get(0)?,
                    vessel: r.get(1)?,
                    record,
                },
                r.get::<Option<String>>(13)?.unwrap_or_default(),
                r.get::<Option<String>>(14)?.unwrap_or_default(),
            ))
        })
    }

    /// Distinct text values of a one-column query with one argument.
    fn strings(&self, sql: &str, arg: &str) -> Result<Vec<String>> {
        self.db()?.query(sql, &[&arg], |r| r.get(0))
    }

    /// Up to `limit` records past the watermark, in arrival order.
    pub fn to_forward(&self, limit: u64) -> Result<Vec<ToForward>> {
        let cursor = self.forward_cursor()?;
        self.read_forward(
            &format!("SELECT {FORWARD_COLUMNS}, CAST(NULL AS TEXT), CAST(NULL AS TEXT) FROM records r WHERE r.rowid > ?1 ORDER BY r.rowid LIMIT ?2"),
            &[&cursor, &i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .map(|l| l.into_iter().map(|(t, _, _)| t).collect())
    }

    /// Records held back, oldest first, with their reason.
    pub fn held(&self, limit: u64) -> Result<Vec<(ToForward, String)>> {
        let list = self.read_forward(
            &format!("SELECT {FORWARD_COLUMNS}, h.reason, CAST(NULL AS TEXT) FROM forward_held h JOIN records r ON r.rowid = h.record_rowid ORDER BY h.record_rowid LIMIT ?1"),
            &[&i64::try_from(limit).unwrap_or(i64::MAX)],
        )?;
        Ok(list.into_iter().map(|(t, reason, _)| (t, reason)).collect())
    }

    fn advance(db: &mut Db, rowid: i64) -> Result<()> {
        db.execute(
            "INSERT INTO shore_facts(name, value) VALUES ('forward_cursor', ?1)
             ON CONFLICT(name) DO UPDATE SET value = CASE WHEN excluded.value > shore_facts.value THEN excluded.value ELSE shore_facts.value END",
            &[&rowid],
        )?;
        db.execute(
            "DELETE FROM shore_facts WHERE name = 'forward_inflight'",
            &[],
        )?;
        Ok(())
    }

    /// Ends a record's forwarding in one transaction: its outcome, what shore wrote for its
    /// key, released from the hold, the watermark past it.
    pub fn settle(&mut self, t: &ToForward, s: &Settled<'_>, now: i64) -> Result<()> {
        self.db
            .get_mut()
            .transaction(|db| Self::settle_in(db, t, s, now))
    }

    fn settle_in(db: &mut Db, t: &ToForward, s: &Settled<'_>, now: i64) -> Result<()> {
        db.execute(
            "INSERT INTO forwarded(record_rowid, outcome, detail, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(record_rowid) DO UPDATE SET outcome = excluded.outcome, detail = excluded.detail, at = excluded.at",
            &[&t.rowid, &s.outcome, &s.detail, &now],
        )?;
        db.execute(
            "DELETE FROM forward_held WHERE record_rowid = ?1",
            &[&t.rowid],
        )?;
        if let Some(v) = s.wrote {
            let r = &t.record;
            db.execute(
                "INSERT INTO cloud_written(kind, user_key, course_key, item_key, value, vtime, written_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(kind, user_key, course_key, item_key) DO UPDATE SET value = excluded.value,
                   vtime = excluded.vtime, written_at = excluded.written_at",
                &[&r.kind.code(), &r.user, &r.course, &r.item, &v, &r.time, &now],
            )?;
        }
        Self::advance(db, t.rowid)
    }

    /// Holds a record back with its reason (or updates the reason of one held already), and
    /// moves the watermark past it: it is retried from the hold, not from the stream.
    pub fn hold(&mut self, t: &ToForward, reason: &str, now: i64) -> Result<()> {
        self.db
            .get_mut()
            .transaction(|db| Self::hold_in(db, t, reason, now))
    }

    fn hold_in(db: &mut Db, t: &ToForward, reason: &str, now: i64) -> Result<()> {
        db.execute(
            "INSERT INTO forward_held(record_rowid, reason, since, tried_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(record_rowid) DO UPDATE SET reason = excluded.reason, tried_at = excluded.tried_at",
            &[&t.rowid, &reason, &now],
        )?;
        Self::advance(db, t.rowid)
    }

    /// Ends the forwarding of many records (one batch through the cloud's plugin) in one
    /// transaction: each settled or held as [`settle`](Self::settle) and
    /// [`hold`](Self::hold) do, and the watermark past them all.
    pub fn end_many(&mut self, ends: &[(&ToForward, Ending<'_>)], now: i64) -> Result<()> {
        self.db.get_mut().transaction(|db| {
            for (t, end) in ends {
                match end {
                    Ending::Settled(s) => Self::settle_in(db, t, s, now)?,
                    Ending::Held(why) => Self::hold_in(db, t, why, now)?,
                }
            }
            Ok(())
        })
    }

    /// What shore last wrote into the cloud for a record's key.
    pub fn written(&self, r: &Record) -> Result<Option<Written>> {
        self.db()?.query_opt(
            "SELECT value, vtime, written_at FROM cloud_written
             WHERE kind = ?1 AND user_key = ?2 AND course_key = ?3 AND item_key = ?4",
            &[&r.kind.code(), &r.user, &r.course, &r.item],
            |row| {
                Ok(Written {
                    value: row.get(0)?,
                    vtime: row.get(1)?,
                    written_at: row.get(2)?,
                })
            },
        )
    }

    /// Maps a ship's key to the cloud's (`what`: `user`, `course` or `activity`).
    pub fn map_key(&self, what: &str, from: &str, to: &str, now: i64) -> Result<()> {
        self.db()?
            .execute(
                "INSERT INTO cloud_map(what, from_key, to_key, added_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(what, from_key) DO UPDATE SET to_key = excluded.to_key, added_at = excluded.added_at",
                &[&what, &from, &to, &now],
            )
            .map(|_| ())
    }

    /// The cloud's key for a ship's key, if the operator mapped it.
    pub fn mapped(&self, what: &str, from: &str) -> Result<Option<String>> {
        self.db()?.query_opt(
            "SELECT to_key FROM cloud_map WHERE what = ?1 AND from_key = ?2",
            &[&what, &from],
            |r| r.get(0),
        )
    }

    /// Outcome counts (outcome, records), the number held and the held reasons with their
    /// counts, most frequent first.
    pub fn forward_summary(&self) -> Result<ForwardSummary> {
        let cursor = self.forward_cursor()?;
        let path = self
            .fact("cloud_plugin")?
            .map(|p| if p == 1 { "plugin" } else { "core" }.to_string());
        let mut db = self.db()?;
        let pairs = |r: &Row| Ok((r.get::<String>(0)?, r.get::<u64>(1)?));
        let (records, pending) = db.query_one(
            "SELECT (SELECT COUNT(*) FROM records), (SELECT COUNT(*) FROM records WHERE rowid > ?1)",
            &[&cursor],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(ForwardSummary {
            path,
            records,
            pending,
            outcomes: db.query(
                "SELECT outcome, COUNT(*) FROM forwarded GROUP BY outcome ORDER BY outcome",
                &[],
                pairs,
            )?,
            held: db.query(
                "SELECT reason, COUNT(*) FROM forward_held GROUP BY reason ORDER BY COUNT(*) DESC, reason LIMIT 20",
                &[],
                pairs,
            )?,
        })
    }

    /// Conflicts (`older`, `tie`) settled at or after `since`: (arrival position, vessel,
    /// record, outcome, detail).
    pub fn conflicts(&self, since: i64) -> Result<Vec<(ToForward, String, String)>> {
        self.read_forward(
            &format!("SELECT {FORWARD_COLUMNS}, f.outcome, f.detail FROM forwarded f JOIN records r ON r.rowid = f.record_rowid WHERE f.outcome IN ('older', 'tie') AND f.at >= ?1 ORDER BY f.record_rowid"),
            &[&since],
        )
    }

    /// One line of shore's audit trail: who did what, when.
    pub fn audit(&self, who: &str, what: &str, detail: &str, now: i64) -> Result<()> {
        self.db()?
            .execute(
                "INSERT INTO shore_audit(at, who, what, detail) VALUES (?1, ?2, ?3, ?4)",
                &[&now, &who, &what, &detail],
            )
            .map(|_| ())
    }

    /// The newest `limit` audit lines, newest first: (at, who, what, detail).
    pub fn audit_trail(&self, limit: u64) -> Result<Vec<(i64, String, String, String)>> {
        self.db()?.query(
            "SELECT at, who, what, detail FROM shore_audit ORDER BY id DESC LIMIT ?1",
            &[&i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
    }
}

/// Where forwarding stands.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ForwardSummary {
    /// Records shore holds.
    pub records: u64,
    /// Records past the watermark (not yet looked at).
    pub pending: u64,
    /// Settled records by outcome.
    pub outcomes: Vec<(String, u64)>,
    /// Held records by reason.
    pub held: Vec<(String, u64)>,
    /// The way the last pass reached the cloud: `plugin` (local_vesselsync: batches, the
    /// original times kept) or `core` (core web services: one record a call, stamped with the
    /// time of forwarding); `None` before the first pass.
    pub path: Option<String>,
}

/// One vessel's part in retiring a course.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Retirement {
    /// The vessel.
    pub vessel: String,
    /// The queued `delete_course` bundle.
    pub bundle_id: String,
    /// Its queue position.
    pub queue_id: i64,
    /// When it was queued, and by whom.
    pub queued_at: i64,
    /// Who retired the course.
    pub by: String,
    /// Whether the vessel has fetched the bundle (its download cursor passed it).
    pub fetched: bool,
    /// Records of the course received from the vessel.
    pub records: u64,
    /// When the newest of them arrived.
    pub last_record_at: Option<i64>,
    /// What the vessel last reported of the `delete_course`, if anything yet.
    pub reported: Option<super::Reported>,
}

/// What crew moves sent each vessel, so that a move run again sends only what is new.
pub(super) const CREW_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS crew_sent (
    vessel     TEXT NOT NULL,
    user_key   TEXT NOT NULL,
    course_key TEXT NOT NULL,
    item_key   TEXT NOT NULL,
    bundle_id  TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (vessel, user_key, course_key, item_key)
);
";

pub(super) const RETIRE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS retirements (
    course     TEXT NOT NULL,
    vessel     TEXT NOT NULL,
    bundle_id  TEXT NOT NULL,
    queue_id   INTEGER NOT NULL,
    queued_at  INTEGER NOT NULL,
    by_whom    TEXT NOT NULL,
    PRIMARY KEY (course, vessel)
);
";

impl ShoreStore {
    /// Vessels that sent records of `course`.
    pub fn course_vessels(&self, course: &str) -> Result<Vec<String>> {
        self.strings(
            "SELECT DISTINCT vessel FROM records WHERE course_key = ?1 ORDER BY vessel",
            course,
        )
    }

    /// Notes a vessel's queued `delete_course` for a retired course.
    pub fn note_retirement(
        &self,
        course: &str,
        vessel: &str,
        bundle_id: &str,
        queue_id: i64,
        by: &str,
        now: i64,
    ) -> Result<()> {
        self.db()?
            .execute(
                "INSERT INTO retirements(course, vessel, bundle_id, queue_id, queued_at, by_whom) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(course, vessel) DO UPDATE SET bundle_id = excluded.bundle_id, queue_id = excluded.queue_id,
                   queued_at = excluded.queued_at, by_whom = excluded.by_whom",
                &[&course, &vessel, &bundle_id, &queue_id, &now, &by],
            )
            .map(|_| ())
    }

    /// Every vessel's part in retiring `course`.
    pub fn retirements(&self, course: &str) -> Result<Vec<Retirement>> {
        let mut out = self.db()?.query(
            "SELECT t.vessel, t.bundle_id, t.queue_id, t.queued_at, t.by_whom,
                    COALESCE((SELECT cursor FROM holds_cursor h WHERE h.vessel = t.vessel), 0) >= t.queue_id,
                    (SELECT COUNT(*) FROM records r WHERE r.vessel = t.vessel AND r.course_key = t.course),
                    (SELECT MAX(received_at) FROM records r WHERE r.vessel = t.vessel AND r.course_key = t.course)
             FROM retirements t WHERE t.course = ?1 ORDER BY t.vessel",
            &[&course],
            |r| {
                Ok(Retirement {
                    vessel: r.get(0)?,
                    bundle_id: r.get(1)?,
                    queue_id: r.get(2)?,
                    queued_at: r.get(3)?,
                    by: r.get(4)?,
                    fetched: r.get(5)?,
                    records: r.get(6)?,
                    last_record_at: r.get(7)?,
                    reported: None,
                })
            },
        )?;
        for t in &mut out {
            t.reported = self.reported(&t.vessel, &t.bundle_id)?;
        }
        Ok(out)
    }
}

impl ShoreStore {
    /// Courses `vessel` sent progress of.
    pub fn vessel_courses(&self, vessel: &str) -> Result<Vec<String>> {
        self.strings(
            "SELECT DISTINCT course_key FROM records WHERE vessel = ?1 ORDER BY course_key",
            vessel,
        )
    }

    /// Whether `vessel` itself sent a completion of this activity for this learner, under any
    /// of the learner's keys (idnumber, username).
    pub fn sent_completion(
        &self,
        vessel: &str,
        users: &[&str],
        course: &str,
        item: &str,
    ) -> Result<bool> {
        self.any_key(
            "SELECT COUNT(*) FROM records WHERE vessel = ?1 AND kind = 1 AND user_key = ?2 AND course_key = ?3 AND item_key = ?4 AND value IN ('1', '2')",
            vessel,
            users,
            course,
            item,
        )
    }

    /// Whether a count over (`vessel`, learner key, `course`, `item`) is above zero for any
    /// of the learner's keys.
    fn any_key(
        &self,
        sql: &str,
        vessel: &str,
        users: &[&str],
        course: &str,
        item: &str,
    ) -> Result<bool> {
        let mut db = self.db()?;
        for user in users.iter().filter(|u| !u.is_empty()) {
            let n: i64 = db.query_one(sql, &[&vessel, user, &course, &item], |r| r.get(0))?;
            if n > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether an earlier crew move sent this completion to `vessel` (under any of the keys).
    pub fn crew_sent_before(
        &self,
        vessel: &str,
        users: &[&str],
        course: &str,
        item: &str,
    ) -> Result<bool> {
        self.any_key(
            "SELECT COUNT(*) FROM crew_sent WHERE vessel = ?1 AND user_key = ?2 AND course_key = ?3 AND item_key = ?4",
            vessel,
            users,
            course,
            item,
        )
    }

    /// Notes what a crew move queued for `vessel` (user, course, activity).
    pub fn note_crew_sent(
        &self,
        vessel: &str,
        rows: &[(String, String, String)],
        bundle_id: &str,
        now: i64,
    ) -> Result<()> {
        self.db()?.transaction(|db| {
            for (user, course, item) in rows {
                db.execute(
                    "INSERT INTO crew_sent(vessel, user_key, course_key, item_key, bundle_id, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(vessel, user_key, course_key, item_key) DO UPDATE SET bundle_id = excluded.bundle_id, at = excluded.at",
                    &[&vessel, user, course, item, &bundle_id, &now],
                )?;
            }
            Ok(())
        })
    }
}

impl ShoreStore {
    /// Whether shore received progress of this learner (by idnumber or username) from a vessel
    /// other than `vessel`: a crew list naming them for `vessel` means they moved.
    pub fn sailed_elsewhere(&self, idnumber: &str, username: &str, vessel: &str) -> Result<bool> {
        self.db()?.query_one(
            "SELECT EXISTS(SELECT 1 FROM records WHERE user_key IN (?1, ?2) AND vessel != ?3)",
            &[&idnumber, &username, &vessel],
            |r| r.get(0),
        )
    }
}
