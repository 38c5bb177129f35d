//! Forwarding received progress into the cloud Moodle (the master record) through its web
//! services: activity completions as completion overrides, activity grades through the
//! gradebook, each record exactly once and in arrival order behind a watermark in shore's
//! store.
//!
//! The steps of one record, and what a crash at each leaves: the cloud's state for the key is
//! read (nothing written yet: the record is redone); the record is noted in flight (committed);
//! the cloud is changed; its outcome, what shore wrote for the key and the watermark past it are
//! committed in one transaction. A crash between the change and that commit leaves the record
//! in flight: redone, it finds the cloud already in its state and settles as `already`, so no
//! record reaches the cloud twice and none is skipped.
//!
//! Newer wins. A record is applied only when it is newer than what the cloud holds for its key:
//! the time of what shore itself wrote there last (while the cloud still holds that value),
//! else the cloud's own time for it (a change made in the cloud). An older record is `older`,
//! the same time with another value a `tie`; both keep the cloud's value and are logged and
//! listed by `shore forward --conflicts`. Course completions and course totals are `derived`:
//! the cloud's Moodle computes them from the activity completions and grades forwarded (its
//! completion cron completes the course). A value `removed` on board is `ignored`: a course
//! reset on a ship does not erase the master record.
//!
//! A record whose learner, course or activity the cloud lacks, whose learner is not enrolled
//! there, or that the cloud refused, is held with its reason (`shore status`) and retried at
//! every pass, so it is released when the account or a mapping (`shore forward map`) appears.
//! A cloud that cannot be reached ends the pass: nothing is settled, and the next pass starts
//! where this one stopped; under `shore serve` it comes after `[cloud] interval_secs`, doubled
//! per failed pass in a row up to an hour and jittered (`base::retry`, the uplink's rule).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use moodle::lookup::{self, Course};
use moodle::ws::{Params, Safety, Token, Ws, WsError};
use serde_json::Value;
use wire::progress::RecordKind;
use wire::progress::record::REMOVED;

use crate::config::{CloudSettings, ShoreConfig};
use crate::store::{Settled, ShoreStore, ToForward, Written};

/// The web-service functions the forwarder calls: what the cloud's external service for
/// vessel-sync's shore must hold.
pub const CLOUD_FUNCTIONS: &[&str] = &[
    "core_webservice_get_site_info",
    "core_course_get_courses_by_field",
    "core_course_get_contents",
    "core_course_get_course_module",
    "core_course_update_courses",
    "core_user_get_users_by_field",
    "core_enrol_get_users_courses",
    "core_completion_get_activities_completion_status",
    "core_completion_override_activity_completion_status",
    "core_grades_update_grades",
    "gradereport_user_get_grade_items",
];

/// Records looked at per pass from the stream (held ones are retried besides).
const PASS_LIMIT: u64 = 5_000;

/// What one pass did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Pass {
    /// Records settled or held in this pass, by outcome (`applied`, `already`, `older`, `tie`,
    /// `derived`, `ignored`, `held`).
    pub outcomes: std::collections::BTreeMap<String, u64>,
    /// Held records released (settled) in this pass.
    pub released: u64,
    /// Why the pass stopped early (the cloud unreachable or in maintenance), if it did.
    pub stopped: Option<String>,
    /// Why the pass did not start: another receiver of the same database is forwarding.
    pub busy: Option<String>,
    /// Wall-clock seconds of the pass.
    pub seconds: f64,
    /// Of which waiting for the cloud Moodle's answers.
    pub moodle_seconds: f64,
}

/// The outcome for one record.
enum Outcome {
    /// Settled: outcome, detail, value written into the cloud.
    Settle(&'static str, String, Option<String>),
    /// Held with a reason.
    Hold(String),
}

/// Why a record could not be handled now.
enum Stop {
    /// The cloud is unreachable, in maintenance or overloaded: end the pass.
    Cloud(String),
    /// Shore's own store failed.
    Store(String),
}

impl From<crate::store::ShoreDbError> for Stop {
    fn from(e: crate::store::ShoreDbError) -> Self {
        Stop::Store(e.to_string())
    }
}

/// A learner's activity grades in a course: cmid → (raw grade, time graded).
type Grades = HashMap<i64, (Option<f64>, i64)>;

/// The cloud, with what this pass has learned of it.
struct Cloud<'a> {
    ws: Ws,
    now: i64,
    waited: Duration,
    users: HashMap<String, Option<i64>>,
    courses: HashMap<String, Option<Course>>,
    enrolled: HashMap<i64, Vec<i64>>,
    completion: HashMap<(i64, i64), HashMap<i64, (i64, i64)>>,
    grades: HashMap<(i64, i64), Grades>,
    db: &'a mut ShoreStore,
}

fn cloud_error(e: WsError) -> Result<Value, Stop> {
    Err(Stop::Cloud(e.to_string()))
}

impl Cloud<'_> {
    fn read(&mut self, f: &str, p: &Params) -> Result<Value, Stop> {
        let t = Instant::now();
        let r = self.ws.call(f, p, Safety::Read);
        self.waited += t.elapsed();
        r.or_else(cloud_error)
    }

    /// A change: a refusal by Moodle is the record's (held), anything else stops the pass.
    fn write(&mut self, f: &str, p: &Params) -> Result<Result<Value, String>, Stop> {
        let t = Instant::now();
        let r = self.ws.call(f, p, Safety::Write);
        self.waited += t.elapsed();
        match r {
            Ok(v) => Ok(Ok(v)),
            Err(e) if e.is_transient() || e.is_maintenance() || e.errorcode().is_none() => {
                Err(Stop::Cloud(e.to_string()))
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    fn key(&self, what: &str, key: &str) -> Result<String, Stop> {
        Ok(self
            .db
            .mapped(what, key)?
            .unwrap_or_else(|| key.to_string()))
    }

    fn user(&mut self, key: &str) -> Result<Option<i64>, Stop> {
        if let Some(u) = self.users.get(key) {
            return Ok(*u);
        }
        let t = Instant::now();
        let found = lookup::users(&self.ws, &[key], || {});
        self.waited += t.elapsed();
        let found = found.map_err(|e| Stop::Cloud(e.to_string()))?;
        let id = found.get(key).map(|(id, _)| *id);
        self.users.insert(key.to_string(), id);
        Ok(id)
    }

    fn course(&mut self, key: &str) -> Result<Option<Course>, Stop> {
        if let Some(c) = self.courses.get(key) {
            return Ok(c.clone());
        }
        let t = Instant::now();
        let found = lookup::course(&self.ws, key, || {});
        self.waited += t.elapsed();
        let found = found.map_err(|e| Stop::Cloud(e.to_string()))?;
        self.courses.insert(key.to_string(), found.clone());
        Ok(found)
    }

    fn is_enrolled(&mut self, user: i64, course: i64) -> Result<bool, Stop> {
        if !self.enrolled.contains_key(&user) {
            let r = self.read(
                "core_enrol_get_users_courses",
                &Params::new().set("userid", user),
            )?;
            let ids = r
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["id"].as_i64())
                .collect();
            self.enrolled.insert(user, ids);
        }
        Ok(self
            .enrolled
            .get(&user)
            .is_some_and(|l| l.contains(&course)))
    }

    /// cmid → (state, time) of a learner's activities in a course.
    fn completion(&mut self, course: i64, user: i64) -> Result<HashMap<i64, (i64, i64)>, Stop> {
        if let Some(c) = self.completion.get(&(course, user)) {
            return Ok(c.clone());
        }
        let r = self.read(
            "core_completion_get_activities_completion_status",
            &Params::new().set("courseid", course).set("userid", user),
        )?;
        let map: HashMap<i64, (i64, i64)> = r["statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some((
                    s["cmid"].as_i64()?,
                    (
                        s["state"].as_i64().unwrap_or(0),
                        s["timecompleted"].as_i64().unwrap_or(0),
                    ),
                ))
            })
            .collect();
        self.completion.insert((course, user), map.clone());
        Ok(map)
    }

    /// cmid → (raw grade, time graded) of a learner's activity grades in a course.
    fn grades(&mut self, course: i64, user: i64) -> Result<HashMap<i64, (Option<f64>, i64)>, Stop> {
        if let Some(g) = self.grades.get(&(course, user)) {
            return Ok(g.clone());
        }
        let r = self.read(
            "gradereport_user_get_grade_items",
            &Params::new().set("courseid", course).set("userid", user),
        )?;
        let map: Grades = r["usergrades"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|u| u["gradeitems"].as_array().into_iter().flatten())
            .filter(|g| g["itemnumber"].as_i64() == Some(0))
            .filter_map(|g| {
                Some((
                    g["cmid"].as_i64()?,
                    (
                        g["graderaw"].as_f64(),
                        g["gradedategraded"].as_i64().unwrap_or(0),
                    ),
                ))
            })
            .collect();
        self.grades.insert((course, user), map.clone());
        Ok(map)
    }
}

/// Newer wins: what to do with a record of time `time` whose key the cloud holds with value
/// `current` since `cloud_time`, given what shore last wrote there.
fn newer_wins(time: i64, current: &str, cloud_time: i64, ours: Option<&Written>) -> &'static str {
    let baseline = match ours {
        // The cloud still holds what shore wrote (its time is that of the write, not of the
        // learner's progress): compare with the progress's own time.
        Some(w) if w.value == current && cloud_time <= w.written_at + 5 => w.vtime,
        _ => cloud_time,
    };
    match time.cmp(&baseline) {
        std::cmp::Ordering::Greater => "apply",
        std::cmp::Ordering::Equal => "tie",
        std::cmp::Ordering::Less => "older",
    }
}

fn settle(o: &'static str, detail: impl Into<String>, wrote: Option<String>) -> Outcome {
    Outcome::Settle(o, detail.into(), wrote)
}

fn conflict(decision: &'static str, current: &str, cloud_time: i64) -> Outcome {
    let detail = if decision == "tie" {
        format!("the cloud holds {current} from the same second; the cloud's value is kept")
    } else {
        format!("the cloud holds {current}, newer (since {cloud_time}); the cloud's value is kept")
    };
    settle(decision, detail, None)
}

fn one(c: &mut Cloud<'_>, t: &ToForward) -> Result<Outcome, Stop> {
    let r = &t.record;
    match r.kind {
        RecordKind::CourseCompletion => {
            return Ok(settle(
                "derived",
                "Moodle derives course completion from the activity completions forwarded",
                None,
            ));
        }
        RecordKind::Grade if r.item.is_empty() => {
            return Ok(settle(
                "derived",
                "Moodle computes the course total from the activity grades forwarded",
                None,
            ));
        }
        _ => {}
    }
    if r.value == REMOVED {
        return Ok(settle(
            "ignored",
            "removed on board (a course reset or a deleted account): the cloud keeps its record",
            None,
        ));
    }
    let user_key = c.key("user", &r.user)?;
    let course_key = c.key("course", &r.course)?;
    let item_key = c.key("activity", &r.item)?;
    let Some(course) = c.course(&course_key)? else {
        return Ok(Outcome::Hold(format!(
            "no course {course_key} on the cloud Moodle (by idnumber or shortname)"
        )));
    };
    let Some(act) = course.activities.get(&item_key).cloned() else {
        return Ok(Outcome::Hold(format!(
            "no activity {item_key} in course {course_key} on the cloud Moodle"
        )));
    };
    let Some(user) = c.user(&user_key)? else {
        return Ok(Outcome::Hold(format!(
            "no learner {user_key} on the cloud Moodle (by idnumber or username)"
        )));
    };
    if !c.is_enrolled(user, course.id)? {
        return Ok(Outcome::Hold(format!(
            "learner {user_key} is not enrolled in {course_key} on the cloud Moodle"
        )));
    }
    let ours = c.db.written(r)?;
    if r.kind == RecordKind::ActivityCompletion {
        let wanted: i64 = match r.value.as_str() {
            "0" => 0,
            "1" | "2" => 1,
            "3" | "4" => {
                return Ok(settle(
                    "derived",
                    "a failed completion follows from the grade in the cloud Moodle",
                    None,
                ));
            }
            v => return Ok(Outcome::Hold(format!("not a completion state: {v:?}"))),
        };
        let (state, time) = c
            .completion(course.id, user)?
            .get(&act.cmid)
            .copied()
            .unwrap_or((0, 0));
        let current = if state == 2 { 1 } else { state };
        if current == wanted {
            return Ok(settle(
                "already",
                "the cloud holds this state",
                Some(wanted.to_string()),
            ));
        }
        let decision = newer_wins(r.time, &current.to_string(), time, ours.as_ref());
        if decision != "apply" {
            return Ok(conflict(decision, &format!("state {current}"), time));
        }
        c.db.note_inflight(t.rowid)?;
        base::failpoint::hit("forward.before-call");
        let reply = c.write(
            "core_completion_override_activity_completion_status",
            &Params::new()
                .set("userid", user)
                .set("cmid", act.cmid)
                .set("newstate", wanted),
        )?;
        base::failpoint::hit("forward.after-call");
        c.completion.remove(&(course.id, user));
        return Ok(match reply {
            Ok(_) => settle("applied", "completion overridden", Some(wanted.to_string())),
            Err(why) => Outcome::Hold(format!("the cloud Moodle refused it: {why}")),
        });
    }
    // An activity grade.
    let Ok(wanted) = r.value.trim().parse::<f64>() else {
        return Ok(Outcome::Hold(format!("not a grade: {:?}", r.value)));
    };
    let (raw, time) = c
        .grades(course.id, user)?
        .get(&act.cmid)
        .copied()
        .unwrap_or((None, 0));
    if raw.is_some_and(|g| (g - wanted).abs() < 1e-5) {
        return Ok(settle(
            "already",
            "the cloud holds this grade",
            Some(r.value.clone()),
        ));
    }
    let current = raw.map(|g| format!("{g:.5}")).unwrap_or_default();
    let decision = newer_wins(
        r.time,
        &current,
        time,
        ours.as_ref()
            .filter(|w| {
                w.value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .zip(raw)
                    .is_some_and(|(a, b)| (a - b).abs() < 1e-5)
            })
            .map(|w| Written {
                value: current.clone(),
                ..w.clone()
            })
            .as_ref(),
    );
    if decision != "apply" {
        return Ok(conflict(decision, &format!("grade {current}"), time));
    }
    c.db.note_inflight(t.rowid)?;
    base::failpoint::hit("forward.before-call");
    let reply = c.write(
        "core_grades_update_grades",
        &Params::new()
            .set("source", "vessel-sync")
            .set("courseid", course.id)
            .set("component", format!("mod_{}", act.modname))
            .set("activityid", act.cmid)
            .set("itemnumber", 0)
            .set("grades[0][studentid]", user)
            .set("grades[0][grade]", &r.value),
    )?;
    base::failpoint::hit("forward.after-call");
    c.grades.remove(&(course.id, user));
    Ok(match reply {
        Ok(v) if v.as_i64() == Some(0) => settle("applied", "grade set", Some(r.value.clone())),
        Ok(v) => Outcome::Hold(format!(
            "the cloud Moodle did not take the grade (grade_update returned {v}; is the grade item locked?)"
        )),
        Err(why) => Outcome::Hold(format!("the cloud Moodle refused it: {why}")),
    })
}

/// The web-service client for `[cloud]`.
pub fn connect(cloud: &CloudSettings) -> Result<Ws, String> {
    let token = Token::from_file(&cloud.token_file).map_err(|e| e.to_string())?;
    Ws::new(&cloud.url, token, Duration::from_secs(cloud.timeout_secs)).map_err(|e| e.to_string())
}

/// One forwarding pass: the held records, then the stream past the watermark.
pub fn pass(cfg: &ShoreConfig, db: &mut ShoreStore, now: i64) -> Result<Pass, String> {
    let Some(cloud) = cfg.cloud.as_ref() else {
        return Err(format!(
            "{}: no [cloud] section: add the cloud Moodle's url and token_file to forward progress",
            cfg.path.display()
        ));
    };
    // One receiver of a database forwards at a time: a lease, renewed with every record, that
    // a receiver stopped mid-pass leaves to run out.
    let holder = lease_holder();
    let lease = i64::try_from(cloud.timeout_secs.saturating_mul(3).max(300)).unwrap_or(300);
    let held_until = |db: &ShoreStore| -> Result<bool, String> {
        let t = base::clock::Clock::now(&base::clock::SystemClock);
        db.take_lease(FORWARD_LEASE, holder, t + lease, t)
            .map_err(|e| e.to_string())
    };
    if !held_until(db)? && !took_over_from_dead(db, holder, lease)? {
        return Ok(Pass {
            busy: Some("another shore receiver of this database is forwarding; this one takes over when it stops".into()),
            ..Pass::default()
        });
    }
    let out = pass_leased(cloud, db, now, &held_until);
    let dropped = db.drop_lease(FORWARD_LEASE, holder);
    let out = out?;
    dropped.map_err(|e| e.to_string())?;
    Ok(out)
}

/// The lease name forwarding runs under.
const FORWARD_LEASE: &str = "forward";

/// This process, as a lease holder: `host:pid-namespace:pid:random`.
fn lease_holder() -> &'static str {
    static HOLDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOLDER.get_or_init(|| {
        let mut r = [0u8; 8];
        let _ = getrandom::fill(&mut r);
        format!("{}:{}:{}", this_host(), std::process::id(), hex::encode(r))
    })
}

/// The host and pid namespace this process runs in: holders that share it can see each
/// other's processes in /proc.
fn this_host() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!("{}:{}", host.trim(), ns.trim_start_matches("pid:"))
}

/// Takes the forwarding lease over from a holder on this host whose process is gone (a
/// `shore forward` or `shore serve` killed mid-pass), instead of waiting for it to run out.
/// A holder elsewhere, or one whose pid is alive (or was reused), keeps it until it expires.
fn took_over_from_dead(db: &ShoreStore, holder: &str, lease: i64) -> Result<bool, String> {
    let Some(current) = db.lease_holder(FORWARD_LEASE).map_err(|e| e.to_string())? else {
        return Ok(false);
    };
    let mut parts = current.rsplitn(3, ':');
    let (_random, pid, place) = (parts.next(), parts.next(), parts.next());
    let (Some(pid), Some(place)) = (pid.and_then(|p| p.parse::<u32>().ok()), place) else {
        return Ok(false);
    };
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    if place != this_host() || pid == std::process::id() || alive {
        return Ok(false);
    }
    let t = base::clock::Clock::now(&base::clock::SystemClock);
    let took = db
        .take_over_lease(FORWARD_LEASE, &current, holder, t + lease)
        .map_err(|e| e.to_string())?;
    if took {
        tracing::info!(
            "the forwarding lease's holder on this host (pid {pid}) is gone; this process takes it over"
        );
    }
    Ok(took)
}

fn pass_leased(
    cloud: &crate::config::CloudSettings,
    db: &mut ShoreStore,
    now: i64,
    renew: &dyn Fn(&ShoreStore) -> Result<bool, String>,
) -> Result<Pass, String> {
    let started = Instant::now();
    let ws = connect(cloud)?;
    let mut out = Pass::default();
    if let Some(rowid) = db.forward_inflight().map_err(|e| e.to_string())? {
        tracing::info!(
            record = rowid,
            "forwarding was stopped during a call to the cloud; that record is redone"
        );
    }
    let held = db.held(PASS_LIMIT).map_err(|e| e.to_string())?;
    let stream = db.to_forward(PASS_LIMIT).map_err(|e| e.to_string())?;
    let mut c = Cloud {
        ws,
        now,
        waited: Duration::ZERO,
        users: HashMap::new(),
        courses: HashMap::new(),
        enrolled: HashMap::new(),
        completion: HashMap::new(),
        grades: HashMap::new(),
        db,
    };
    let n_held = held.len();
    let all = held
        .into_iter()
        .map(|(t, _)| t)
        .chain(stream)
        .enumerate()
        .map(|(i, t)| (i < n_held, t));
    for (was_held, t) in all {
        if !renew(c.db)? {
            out.stopped = Some("the forwarding lease ran out and another receiver took it".into());
            break;
        }
        let outcome = match one(&mut c, &t) {
            Ok(o) => o,
            Err(Stop::Cloud(why)) => {
                tracing::warn!(
                    "the cloud Moodle cannot be reached or is busy: {why}; forwarding resumes at the next pass"
                );
                out.stopped = Some(why);
                break;
            }
            Err(Stop::Store(why)) => return Err(why),
        };
        let now = c.now;
        match outcome {
            Outcome::Settle(o, detail, wrote) => {
                if o == "older" || o == "tie" {
                    tracing::warn!(vessel = %t.vessel, user = %t.record.user, course = %t.record.course, item = %t.record.item, "forward conflict ({o}): {detail}");
                }
                c.db.settle(
                    &t,
                    &Settled {
                        outcome: o,
                        detail: &detail,
                        wrote: wrote.as_deref(),
                    },
                    now,
                )
                .map_err(|e| e.to_string())?;
                *out.outcomes.entry(o.to_string()).or_default() += 1;
                if was_held {
                    out.released += 1;
                }
            }
            Outcome::Hold(why) => {
                c.db.hold(&t, &why, now).map_err(|e| e.to_string())?;
                if !was_held {
                    *out.outcomes.entry("held".to_string()).or_default() += 1;
                }
            }
        }
    }
    out.moodle_seconds = c.waited.as_secs_f64();
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Passes under `shore serve`, on their own thread and database connection, until `stop`:
/// one every `[cloud] interval_secs`, and at once again while a pass leaves records behind.
pub fn worker(
    cfg: ShoreConfig,
    clock: std::sync::Arc<dyn base::clock::Clock>,
    stop: std::sync::mpsc::Receiver<()>,
) {
    let interval = Duration::from_secs(cfg.cloud.as_ref().map_or(60, |c| c.interval_secs.max(1)));
    let mut db = match cfg.open() {
        Ok(db) => db,
        Err(e) => {
            tracing::error!("forwarding to the cloud Moodle cannot start: {e}");
            return;
        }
    };
    // A cloud that cannot be reached is tried again under the one retry rule: the interval
    // doubled per failure in a row, up to an hour, jittered.
    let cap = Duration::from_secs(3600).max(interval);
    let mut failures = 0u32;
    loop {
        let stopped = match pass(&cfg, &mut db, clock.now()) {
            Ok(p) => {
                let n: u64 = p.outcomes.values().sum();
                if n > 0 || p.released > 0 {
                    tracing::info!(
                        records = n,
                        released = p.released,
                        seconds = p.seconds,
                        "forwarded to the cloud Moodle: {:?}",
                        p.outcomes
                    );
                }
                match p.stopped {
                    Some(why) => Err(why),
                    None => Ok(p.busy.is_none()
                        && db.forward_summary().map(|s| s.pending > 0).unwrap_or(false)),
                }
            }
            Err(e) => Err(e),
        };
        let wait = match stopped {
            Ok(more) => {
                failures = 0;
                if more { Duration::ZERO } else { interval }
            }
            Err(why) => {
                failures += 1;
                let secs = base::retry::backoff(
                    failures,
                    i64::try_from(interval.as_secs()).unwrap_or(60),
                    i64::try_from(cap.as_secs()).unwrap_or(3600),
                );
                let wait = Duration::from_secs(u64::try_from(secs).unwrap_or(60));
                tracing::warn!(
                    failures,
                    "forwarding to the cloud Moodle stopped ({why}); next pass in {}s",
                    wait.as_secs()
                );
                wait
            }
        };
        match stop.recv_timeout(wait) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// Who runs an operator command, for the audit trail (`$SUDO_USER`, else `$USER`).
pub fn operator() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// `shore forward`: one pass now; prints what it did (JSON with `--json`).
pub fn run_once(cfg: &ShoreConfig, now: i64, json: bool) -> i32 {
    let mut db = match cfg.open() {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            return base::exit::FAILURE;
        }
    };
    let p = match pass(cfg, &mut db, now) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return base::exit::CONFIG;
        }
    };
    if let Some(why) = &p.busy {
        if json {
            let v = serde_json::json!({"pass": p});
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            println!("not forwarded now: {why}");
        }
        return base::exit::OK;
    }
    let summary = db.forward_summary().unwrap_or_default();
    let n: u64 = p.outcomes.values().sum();
    let _ = db.audit(
        &operator(),
        "forward",
        &format!("{n} record(s): {:?}", p.outcomes),
        now,
    );
    if json {
        let v = serde_json::json!({"pass": p, "summary": summary});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        let per_sec = if p.seconds > 0.0 {
            n as f64 / p.seconds
        } else {
            0.0
        };
        println!(
            "forwarded {n} record(s) in {:.1} s ({per_sec:.1}/s, {:.0}% of it waiting for the cloud Moodle): {}",
            p.seconds,
            if p.seconds > 0.0 {
                100.0 * p.moodle_seconds / p.seconds
            } else {
                0.0
            },
            p.outcomes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if p.released > 0 {
            println!("released from the hold: {}", p.released);
        }
        for (why, count) in &summary.held {
            println!("held: {count} record(s): {why}");
        }
        if summary.pending > 0 {
            println!(
                "still to forward: {} record(s) (run again, or let shore serve go on)",
                summary.pending
            );
        }
    }
    if let Some(why) = &p.stopped {
        eprintln!(
            "stopped early: the cloud Moodle cannot be reached or is busy: {why}; run again later (nothing is lost)"
        );
        return base::exit::TEMPFAIL;
    }
    base::exit::OK
}

/// `shore forward --conflicts`: records that met a newer or equally new value in the cloud,
/// as CSV on standard output.
pub fn conflicts(cfg: &ShoreConfig) -> i32 {
    let run = || -> Result<(), String> {
        let db = cfg.open()?;
        let mut w = csv::Writer::from_writer(std::io::stdout().lock());
        let io = |e: csv::Error| e.to_string();
        w.write_record([
            "vessel", "kind", "learner", "course", "activity", "value", "time", "outcome", "detail",
        ])
        .map_err(io)?;
        for (t, o, d) in db.conflicts(0).map_err(|e| e.to_string())? {
            let r = &t.record;
            let row = [
                t.vessel.clone(),
                r.kind.name().to_string(),
                r.user.clone(),
                r.course.clone(),
                r.item.clone(),
                r.value.clone(),
                base::clock::format_time(r.time),
                o,
                d,
            ];
            w.write_record(row.iter().map(|c| base::csvrow::csv_safe(c)))
                .map_err(io)?;
        }
        w.flush().map_err(|e| e.to_string())
    };
    match run() {
        Ok(()) => base::exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            base::exit::FAILURE
        }
    }
}

/// `shore forward map`: a ship's key for a learner, course or activity means this key in the
/// cloud; held records waiting for it are retried at the next pass.
pub fn map(cfg: &ShoreConfig, what: &str, from: &str, to: &str, now: i64) -> i32 {
    let run = || -> Result<(), String> {
        if from.trim().is_empty() || to.trim().is_empty() {
            return Err("both keys must be non-empty".into());
        }
        let db = cfg.open()?;
        db.map_key(what, from, to, now).map_err(|e| e.to_string())?;
        db.audit(
            &operator(),
            "forward map",
            &format!("{what} {from} -> {to}"),
            now,
        )
        .map_err(|e| e.to_string())
    };
    match run() {
        Ok(()) => {
            println!(
                "{what} {from} is {to} in the cloud Moodle; held records are retried at the next pass"
            );
            base::exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            base::exit::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FORWARD_LEASE, lease_holder, this_host, took_over_from_dead};
    use crate::store::ShoreStore;

    #[test]
    fn a_forwarding_lease_left_by_a_killed_process_on_this_host_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = ShoreStore::open(&dir.path().join("shore.db")).unwrap();
        let far = i64::MAX / 2;
        let me = lease_holder();
        // pid_max is at most 2^22: this pid never runs.
        let dead = format!("{}:99999999:00", this_host());
        assert!(db.take_lease(FORWARD_LEASE, &dead, far, 0).unwrap());
        assert!(!db.take_lease(FORWARD_LEASE, me, far, 1).unwrap());
        assert!(took_over_from_dead(&db, me, 300).unwrap());
        assert_eq!(db.lease_holder(FORWARD_LEASE).unwrap().as_deref(), Some(me));
        db.drop_lease(FORWARD_LEASE, me).unwrap();

        // A live process on this host (pid 1), or any holder on another host, keeps it.
        for other in [
            format!("{}:1:00", this_host()),
            "other-host:pid:[1]:99999999:00".to_string(),
        ] {
            assert!(db.take_lease(FORWARD_LEASE, &other, far, 0).unwrap());
            assert!(!took_over_from_dead(&db, me, 300).unwrap(), "{other}");
            assert_eq!(
                db.lease_holder(FORWARD_LEASE).unwrap().as_deref(),
                Some(other.as_str())
            );
            db.drop_lease(FORWARD_LEASE, &other).unwrap();
        }
    }
}
