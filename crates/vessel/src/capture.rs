//! Capture: a full snapshot of Moodle's progress tables diffed against the state last captured.
//!
//! Timestamps alone miss too much (restored completions keep their old times and raise no
//! events, overrides and resets rewrite rows in place, a ship's clock gets set back), so every
//! capture compares the whole snapshot with the previous one, row by row, in one transaction:
//! - a row whose value or time differs is a change: it is keyed and queued (or, when it matches
//!   progress imported from shore, consumed as an echo and not queued);
//! - a row that is gone (course reset, user deleted) is queued as `removed`;
//! - a change that cannot be keyed goes to the progress quarantine with its reason, and every
//!   capture tries the quarantine again, so a later mapping or idnumber releases it.
//!
//! The transaction covers the diff and the queueing, so a crash at any point leaves either the
//! old state and no records, or the new state and all its records.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use crate::store::{CapturedState, LocalKey, Result, Store, Tx};
use base::failpoint;
use moodle::db::{Fact, Snapshot};
use wire::progress::record::{REMOVED, Record, RecordKind};

/// Which legacy mappings a record must have to be sent (`[capture] require_legacy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequireLegacy {
    /// Every course needs a `course` mapping.
    pub course: bool,
    /// Every activity needs an `activity` mapping.
    pub activity: bool,
}

/// What one capture did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureReport {
    /// Progress rows read from Moodle.
    pub rows: u64,
    /// Rows whose state changed since the last capture (removals included).
    pub changes: u64,
    /// Records queued for shore.
    pub queued: u64,
    /// Changes recognised as progress imported from shore (not queued).
    pub echoes: u64,
    /// Changes put into quarantine.
    pub quarantined: u64,
    /// Quarantined changes released into the outbox.
    pub released: u64,
    /// Rows gone since the last capture.
    pub removed: u64,
    /// Milliseconds spent diffing and queueing (not reading Moodle).
    pub diff_ms: u64,
}

type Keys = (String, String, String);

/// Turns Moodle ids into fleet-wide keys, with legacy ids from the mapping table.
pub struct Keyer<'a> {
    snap: &'a Snapshot,
    /// cmid -> activity key or the reason there is none.
    activity: HashMap<i64, std::result::Result<String, String>>,
    /// (kind, moodle key, course key) -> legacy id.
    legacy: HashMap<(String, String, String), String>,
    /// (course, modname, instance) -> cmid, for grade items.
    by_instance: HashMap<(i64, String, i64), i64>,
    require: RequireLegacy,
}

fn course_key(c: &moodle::db::CourseRow) -> String {
    if c.idnumber.trim().is_empty() {
        c.shortname.clone()
    } else {
        c.idnumber.trim().to_string()
    }
}

impl<'a> Keyer<'a> {
    /// Prepares the keys of every activity in `snap`.
    pub fn new(snap: &'a Snapshot, store: &Store, require: RequireLegacy) -> Result<Self> {
        let mut legacy = HashMap::new();
        for m in store.mappings()? {
            legacy.insert((m.kind, m.moodle_key, m.course), m.legacy_id);
        }
        // Fallback for activities without an idnumber: "modname:name", unique within the course.
        let mut by_name: HashMap<(i64, String), u32> = HashMap::new();
        for m in snap.modules.values() {
            if m.idnumber.trim().is_empty() {
                if let Some(n) = &m.name {
                    *by_name
                        .entry((m.course, format!("{}:{}", m.modname, n.trim())))
                        .or_default() += 1;
                }
            }
        }
        let mut activity = HashMap::new();
        for (cmid, m) in &snap.modules {
            let key = if !m.idnumber.trim().is_empty() {
                Ok(m.idnumber.trim().to_string())
            } else {
                match &m.name {
                    None => Err(format!(
                        "activity cmid {cmid} ({}) has no idnumber and its name could not be read",
                        m.modname
                    )),
                    Some(n) => {
                        let k = format!("{}:{}", m.modname, n.trim());
                        if by_name.get(&(m.course, k.clone())).copied().unwrap_or(0) > 1 {
                            Err(format!(
                                "activity cmid {cmid} has no idnumber and its fallback key {k:?} is shared by another activity of the course; give the activities idnumbers"
                            ))
                        } else {
                            Ok(k)
                        }
                    }
                }
            };
            activity.insert(*cmid, key);
        }
        let by_instance = snap
            .modules
            .iter()
            .map(|(cmid, m)| ((m.course, m.modname.clone(), m.instance), *cmid))
            .collect();
        Ok(Self {
            snap,
            activity,
            legacy,
            by_instance,
            require,
        })
    }

    fn user(&self, userid: i64) -> std::result::Result<String, String> {
        let u = self
            .snap
            .users
            .get(&userid)
            .ok_or_else(|| format!("user id {userid} is not in mdl_user"))?;
        let k = if u.idnumber.trim().is_empty() {
            u.username.trim()
        } else {
            u.idnumber.trim()
        };
        if k.is_empty() {
            return Err(format!(
                "user id {userid} has neither idnumber nor username"
            ));
        }
        Ok(k.to_string())
    }

    fn course(&self, courseid: i64) -> std::result::Result<String, String> {
        self.snap
            .courses
            .get(&courseid)
            .map(course_key)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("course id {courseid} is not in mdl_course"))
    }

    /// The keys (learner, course, activity) of a row.
    pub fn keys(
        &self,
        kind: RecordKind,
        userid: i64,
        objid: i64,
    ) -> std::result::Result<Keys, String> {
        let user = self.user(userid)?;
        match kind {
            RecordKind::ActivityCompletion => {
                let m =
                    self.snap.modules.get(&objid).ok_or_else(|| {
                        format!("activity cmid {objid} is not in mdl_course_modules")
                    })?;
                let course = self.course(m.course)?;
                let item = self
                    .activity
                    .get(&objid)
                    .cloned()
                    .unwrap_or_else(|| Err(format!("activity cmid {objid} unknown")))?;
                Ok((user, course, item))
            }
            RecordKind::CourseCompletion => Ok((user, self.course(objid)?, String::new())),
            RecordKind::Grade => {
                let gi = self
                    .snap
                    .grade_items
                    .get(&objid)
                    .ok_or_else(|| format!("grade item {objid} is not in mdl_grade_items"))?;
                let course = self.course(gi.course)?;
                let item = match gi.itemtype.as_str() {
                    "course" => String::new(),
                    "mod" => {
                        let cmid = self
                            .by_instance
                            .get(&(gi.course, gi.itemmodule.clone(), gi.iteminstance))
                            .ok_or_else(|| {
                            format!(
                                "grade item {objid} belongs to {} instance {}, which has no course module",
                                gi.itemmodule, gi.iteminstance
                            )
                        })?;
                        let k = self
                            .activity
                            .get(cmid)
                            .cloned()
                            .unwrap_or_else(|| Err(format!("activity cmid {cmid} unknown")))?;
                        if gi.itemnumber > 0 {
                            format!("{k}#{}", gi.itemnumber)
                        } else {
                            k
                        }
                    }
                    _ => {
                        if gi.idnumber.trim().is_empty() {
                            return Err(format!(
                                "manual grade item {objid} ({:?}) has no idnumber; give it one in the gradebook",
                                gi.itemname
                            ));
                        }
                        format!("grade:{}", gi.idnumber.trim())
                    }
                };
                Ok((user, course, item))
            }
        }
    }

    /// A full record for `keys`, with legacy ids; an error when a required mapping is missing.
    pub fn record(
        &self,
        kind: RecordKind,
        keys: &Keys,
        value: &str,
        time: i64,
    ) -> std::result::Result<Record, String> {
        let (user, course, item) = keys;
        let course_legacy = self
            .legacy
            .get(&("course".to_string(), course.clone(), String::new()))
            .cloned()
            .unwrap_or_default();
        let item_legacy = if item.is_empty() {
            String::new()
        } else {
            let base = item.split('#').next().unwrap_or(item).to_string();
            self.legacy
                .get(&("activity".to_string(), base.clone(), course.clone()))
                .or_else(|| {
                    self.legacy
                        .get(&("activity".to_string(), base, String::new()))
                })
                .cloned()
                .unwrap_or_default()
        };
        if self.require.course && course_legacy.is_empty() {
            return Err(format!(
                "course {course} has no legacy id mapping ([capture] require_legacy includes \"course\"); send a set_mapping bundle"
            ));
        }
        if self.require.activity && !item.is_empty() && item_legacy.is_empty() {
            return Err(format!(
                "activity {item} of course {course} has no legacy id mapping ([capture] require_legacy includes \"activity\"); send a set_mapping bundle"
            ));
        }
        Ok(Record {
            kind,
            user: user.clone(),
            course: course.clone(),
            item: item.clone(),
            user_legacy: String::new(),
            course_legacy,
            item_legacy,
            value: value.to_string(),
            time,
        })
    }

    fn full(
        &self,
        kind: RecordKind,
        userid: i64,
        objid: i64,
        value: &str,
        time: i64,
    ) -> (Option<Keys>, std::result::Result<Record, String>) {
        match self.keys(kind, userid, objid) {
            Err(e) => (None, Err(e)),
            Ok(k) => {
                let r = self.record(kind, &k, value, time);
                (Some(k), r)
            }
        }
    }
}

/// Records on their way into the outbox, flushed in large multi-row inserts.
struct Queue<'v> {
    vessel: &'v str,
    echo_check: bool,
    pending: Vec<(Record, [u8; 16])>,
}

impl Queue<'_> {
    fn push(
        &mut self,
        tx: &Tx<'_>,
        rec: Record,
        now: i64,
        report: &mut CaptureReport,
    ) -> Result<()> {
        if self.echo_check && rec.value != REMOVED && tx.take_imported(&rec)? {
            report.echoes += 1;
            return Ok(());
        }
        let id = rec.id(self.vessel);
        self.pending.push((rec, id));
        if self.pending.len() >= 32_768 {
            self.flush(tx, now, report)?;
        }
        Ok(())
    }

    fn flush(&mut self, tx: &Tx<'_>, now: i64, report: &mut CaptureReport) -> Result<()> {
        report.queued += tx.enqueue_many(&self.pending, now)?;
        self.pending.clear();
        Ok(())
    }
}

/// Diffs `snap` against the captured state and queues the changes, in one transaction.
pub fn apply_snapshot(
    store: &mut Store,
    snap: &Snapshot,
    vessel: &str,
    require: RequireLegacy,
    now: i64,
) -> Result<CaptureReport> {
    let started = Instant::now();
    let keyer = Keyer::new(snap, store, require)?;
    let mut report = CaptureReport {
        rows: snap.facts.len() as u64,
        ..Default::default()
    };
    let tx = store.begin()?;
    let mut q = Queue {
        vessel,
        echo_check: tx.has_imported()?,
        pending: Vec::new(),
    };
    let mut prev = tx.captured_state()?;
    for Fact {
        kind,
        userid,
        objid,
        value,
        time,
    } in &snap.facts
    {
        let key: LocalKey = (kind.code(), *userid, *objid);
        if let Some(s) = prev.remove(&key) {
            if s.value == *value && s.time == *time {
                continue;
            }
        }
        report.changes += 1;
        let (keys, rec) = keyer.full(*kind, *userid, *objid, value, *time);
        match rec {
            Ok(rec) => q.push(&tx, rec, now, &mut report)?,
            Err(reason) => {
                tx.quarantine_progress(key, value, *time, &reason, now)?;
                report.quarantined += 1;
            }
        }
        tx.set_captured(
            key,
            &CapturedState {
                value: value.clone(),
                time: *time,
                keys,
            },
        )?;
    }
    // Rows Moodle no longer holds.
    let mut gone: Vec<(LocalKey, CapturedState)> = prev.into_iter().collect();
    gone.sort_by_key(|(k, _)| *k);
    for (key, s) in gone {
        report.changes += 1;
        report.removed += 1;
        if let (Some(keys), Some(kind)) = (&s.keys, RecordKind::from_code(key.0)) {
            match keyer.record(kind, keys, REMOVED, now) {
                Ok(rec) => q.push(&tx, rec, now, &mut report)?,
                Err(reason) => {
                    tx.quarantine_progress(key, REMOVED, now, &reason, now)?;
                    report.quarantined += 1;
                }
            }
        }
        tx.forget_captured(key)?;
    }
    // The quarantine, again: a mapping or an idnumber may have arrived since.
    for (key, value, time) in tx.quarantined_progress()? {
        let Some(kind) = RecordKind::from_code(key.0) else {
            continue;
        };
        let rec = if value == REMOVED {
            // The row is gone from Moodle: only keys kept from an earlier capture could name it.
            continue;
        } else {
            keyer.full(kind, key.1, key.2, &value, time).1
        };
        if let Ok(rec) = rec {
            q.push(&tx, rec, now, &mut report)?;
            tx.release_progress(key, &value, time)?;
            report.released += 1;
        }
    }
    q.flush(&tx, now, &mut report)?;
    failpoint::hit("capture.before-commit");
    tx.set_fact("last_capture_at", &now.to_string())?;
    tx.set_fact("last_capture_rows", &report.rows.to_string())?;
    // A counter, not a time: a guarded deletion waits for a capture *after* it hid the course,
    // which two times within one second cannot tell.
    let count: u64 = tx
        .fact("captures")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    tx.set_fact("captures", &(count + 1).to_string())?;
    tx.commit()?;
    failpoint::hit("capture.after-commit");
    report.diff_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}
