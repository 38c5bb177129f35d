//! The forwarder's decision for one record, over a small [`Cloud`] trait: what the cloud holds
//! for the record's key, whether the record is newer (newer wins), and the one change it makes.
//! The trait's real side is [`super::moodle::MoodleCloud`] (web services with a pass's cache);
//! the tests below use a cloud in memory.

use std::collections::HashMap;

use moodle::lookup::{Activity, Course};
use wire::progress::record::REMOVED;
use wire::progress::{Record, RecordKind};

use crate::store::{ShoreDbError, ShoreStore, ToForward, Written};

/// The outcome for one record.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// Settled: outcome, detail, value written into the cloud.
    Settle(&'static str, String, Option<String>),
    /// Held with a reason.
    Hold(String),
}

/// Why a record could not be handled now.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The cloud is unreachable, in maintenance or overloaded: end the pass.
    Cloud(String),
    /// Shore's own store failed.
    Store(ShoreDbError),
}

impl From<ShoreDbError> for Stop {
    fn from(e: ShoreDbError) -> Self {
        Stop::Store(e)
    }
}

/// A learner's activity grades in a course: cmid → (raw grade, time graded).
pub(crate) type Grades = HashMap<i64, (Option<f64>, i64)>;

/// What the decision asks of the cloud Moodle. Reads return what the cloud holds (`None`: it
/// has no such thing); a change returns `Ok(Err(why))` when the cloud refused it (the record is
/// held), and `Err(Stop)` when the cloud could not answer (the pass ends).
pub(crate) trait Cloud {
    /// The course with this key (idnumber or shortname).
    fn course(&mut self, key: &str) -> Result<Option<Course>, Stop>;
    /// The learner with this key (idnumber or username).
    fn user(&mut self, key: &str) -> Result<Option<i64>, Stop>;
    /// Whether the learner is enrolled in the course.
    fn is_enrolled(&mut self, user: i64, course: i64) -> Result<bool, Stop>;
    /// cmid → (completion state, time) of a learner's activities in a course.
    fn completion(&mut self, course: i64, user: i64) -> Result<HashMap<i64, (i64, i64)>, Stop>;
    /// cmid → (raw grade, time graded) of a learner's activity grades in a course.
    fn grades(&mut self, course: i64, user: i64) -> Result<Grades, Stop>;
    /// Overrides an activity's completion state for a learner.
    fn override_completion(
        &mut self,
        course: i64,
        user: i64,
        cmid: i64,
        state: i64,
    ) -> Result<Result<(), String>, Stop>;
    /// Sets an activity grade; `Ok(Ok(0))` when the gradebook took it.
    fn update_grade(
        &mut self,
        course: i64,
        activity: &Activity,
        user: i64,
        grade: &str,
    ) -> Result<Result<i64, String>, Stop>;
}

/// Newer wins: what to do with a record of time `time` whose key the cloud holds with value
/// `current` since `cloud_time`, given what shore last wrote there.
pub(crate) fn newer_wins(
    time: i64,
    current: &str,
    cloud_time: i64,
    ours: Option<&Written>,
) -> &'static str {
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

/// The outcome of a record that needs nothing of the cloud (Moodle derives it, or it is not
/// forwarded), if it is one; `None`: the cloud must be asked.
pub(crate) fn without_cloud(r: &Record) -> Option<Outcome> {
    match r.kind {
        RecordKind::CourseCompletion => {
            return Some(settle(
                "derived",
                "Moodle derives course completion from the activity completions forwarded",
                None,
            ));
        }
        RecordKind::Grade if r.item.is_empty() => {
            return Some(settle(
                "derived",
                "Moodle computes the course total from the activity grades forwarded",
                None,
            ));
        }
        _ => {}
    }
    if r.value == REMOVED {
        return Some(settle(
            "ignored",
            "removed on board (a course reset or a deleted account): the cloud keeps its record",
            None,
        ));
    }
    None
}

/// Decides and does what one record asks of the cloud: settled with an outcome, or held with
/// a reason; a cloud that cannot answer, or shore's own store failing, stops the pass.
pub(crate) fn one(c: &mut dyn Cloud, db: &mut ShoreStore, t: &ToForward) -> Result<Outcome, Stop> {
    let r = &t.record;
    if let Some(o) = without_cloud(r) {
        return Ok(o);
    }
    let key = |db: &mut ShoreStore, what: &str, k: &str| -> Result<String, Stop> {
        Ok(db.mapped(what, k)?.unwrap_or_else(|| k.to_string()))
    };
    let user_key = key(db, "user", &r.user)?;
    let course_key = key(db, "course", &r.course)?;
    let item_key = key(db, "activity", &r.item)?;
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
    let ours = db.written(r)?;
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
        db.note_inflight(t.rowid)?;
        base::failpoint::hit("forward.before-call");
        let reply = c.override_completion(course.id, user, act.cmid, wanted)?;
        base::failpoint::hit("forward.after-call");
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
    db.note_inflight(t.rowid)?;
    base::failpoint::hit("forward.before-call");
    let reply = c.update_grade(course.id, &act, user, &r.value)?;
    base::failpoint::hit("forward.after-call");
    Ok(match reply {
        Ok(0) => settle("applied", "grade set", Some(r.value.clone())),
        Ok(v) => Outcome::Hold(format!(
            "the cloud Moodle did not take the grade (grade_update returned {v}; is the grade item locked?)"
        )),
        Err(why) => Outcome::Hold(format!("the cloud Moodle refused it: {why}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cloud in memory: one course `SAFETY-101` (id 7) with activity `quiz-1` (cmid 70), one
    /// learner `S-1` (id 3) enrolled; what it holds, and every change asked of it.
    #[derive(Default)]
    struct Fake {
        completion: HashMap<i64, (i64, i64)>,
        grades: Grades,
        enrolled: bool,
        refuse: Option<String>,
        down: bool,
        changes: Vec<String>,
    }

    impl Cloud for Fake {
        fn course(&mut self, key: &str) -> Result<Option<Course>, Stop> {
            if self.down {
                return Err(Stop::Cloud("cannot reach Moodle".into()));
            }
            Ok((key == "SAFETY-101").then(|| Course {
                id: 7,
                key: key.into(),
                visible: true,
                activities: [(
                    "quiz-1".to_string(),
                    Activity {
                        cmid: 70,
                        key: "quiz-1".into(),
                        modname: "quiz".into(),
                    },
                )]
                .into(),
            }))
        }
        fn user(&mut self, key: &str) -> Result<Option<i64>, Stop> {
            Ok((key == "S-1").then_some(3))
        }
        fn is_enrolled(&mut self, _: i64, _: i64) -> Result<bool, Stop> {
            Ok(self.enrolled)
        }
        fn completion(&mut self, _: i64, _: i64) -> Result<HashMap<i64, (i64, i64)>, Stop> {
            Ok(self.completion.clone())
        }
        fn grades(&mut self, _: i64, _: i64) -> Result<Grades, Stop> {
            Ok(self.grades.clone())
        }
        fn override_completion(
            &mut self,
            _: i64,
            _: i64,
            cmid: i64,
            state: i64,
        ) -> Result<Result<(), String>, Stop> {
            if let Some(why) = &self.refuse {
                return Ok(Err(why.clone()));
            }
            self.changes.push(format!("completion {cmid} = {state}"));
            Ok(Ok(()))
        }
        fn update_grade(
            &mut self,
            _: i64,
            a: &Activity,
            _: i64,
            grade: &str,
        ) -> Result<Result<i64, String>, Stop> {
            self.changes.push(format!("grade {} = {grade}", a.cmid));
            Ok(Ok(0))
        }
    }

    fn record(kind: RecordKind, course: &str, value: &str, time: i64) -> ToForward {
        ToForward {
            rowid: 1,
            vessel: "mv-aurora".into(),
            record: Record {
                kind,
                user: "S-1".into(),
                course: course.into(),
                item: if kind == RecordKind::CourseCompletion {
                    String::new()
                } else {
                    "quiz-1".into()
                },
                user_legacy: String::new(),
                course_legacy: String::new(),
                item_legacy: String::new(),
                value: value.into(),
                time,
            },
        }
    }

    fn decide(cloud: &mut Fake, t: &ToForward) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut db = ShoreStore::open(&dir.path().join("shore.db")).unwrap();
        db.map_key("course", "SAFETY-OLD", "SAFETY-101", 0).unwrap();
        match one(cloud, &mut db, t) {
            Ok(Outcome::Settle(o, ..)) => o.to_string(),
            Ok(Outcome::Hold(why)) => format!("held: {why}"),
            Err(Stop::Cloud(why)) => format!("stop: {why}"),
            Err(Stop::Store(e)) => format!("store: {e}"),
        }
    }

    #[test]
    fn newer_wins_against_the_clouds_time_or_against_what_shore_wrote_there() {
        let ours = Written {
            value: "1".into(),
            vtime: 100,
            written_at: 5_000,
        };
        // (record time, cloud value, cloud time, ours) -> decision
        let table: &[(i64, &str, i64, Option<&Written>, &str)] = &[
            (200, "0", 150, None, "apply"),
            (150, "0", 150, None, "tie"),
            (100, "0", 150, None, "older"),
            // The cloud still holds shore's write (its time is the write's): the progress's own
            // time counts, so a record newer than that progress applies.
            (120, "1", 5_002, Some(&ours), "apply"),
            (90, "1", 5_002, Some(&ours), "older"),
            // Changed in the cloud since shore wrote: the cloud's time counts.
            (120, "0", 6_000, Some(&ours), "older"),
        ];
        for (time, current, cloud_time, ours, want) in table {
            assert_eq!(
                newer_wins(*time, current, *cloud_time, *ours),
                *want,
                "record at {time} against {current} at {cloud_time}"
            );
        }
    }

    #[test]
    fn each_record_is_applied_held_or_settled_by_what_the_cloud_holds() {
        let enrolled = || Fake {
            enrolled: true,
            ..Fake::default()
        };
        let c = RecordKind::ActivityCompletion;
        let mut cloud = enrolled();
        assert_eq!(
            decide(&mut cloud, &record(c, "SAFETY-101", "1", 200)),
            "applied"
        );
        assert_eq!(cloud.changes, ["completion 70 = 1"]);
        // A ship's course key mapped to the cloud's.
        let mut cloud = enrolled();
        assert_eq!(
            decide(&mut cloud, &record(c, "SAFETY-OLD", "2", 200)),
            "applied"
        );
        let mut cloud = enrolled();
        cloud.completion.insert(70, (1, 150));
        assert_eq!(
            decide(&mut cloud, &record(c, "SAFETY-101", "1", 200)),
            "already"
        );
        assert_eq!(
            decide(&mut cloud, &record(c, "SAFETY-101", "0", 100)),
            "older"
        );
        assert_eq!(
            decide(&mut cloud, &record(c, "SAFETY-101", "0", 150)),
            "tie"
        );
        assert!(cloud.changes.is_empty(), "{:?}", cloud.changes);
        let mut cloud = enrolled();
        assert_eq!(
            decide(
                &mut cloud,
                &record(RecordKind::CourseCompletion, "SAFETY-101", "complete", 1)
            ),
            "derived"
        );
        assert_eq!(
            decide(&mut cloud, &record(c, "SAFETY-101", REMOVED, 1)),
            "ignored"
        );
        assert_eq!(
            decide(&mut cloud, &record(c, "SAFETY-101", "3", 1)),
            "derived"
        );
        let mut cloud = enrolled();
        assert_eq!(
            decide(
                &mut cloud,
                &record(RecordKind::Grade, "SAFETY-101", "6.50000", 1)
            ),
            "applied"
        );
        assert_eq!(cloud.changes, ["grade 70 = 6.50000"]);
        cloud.grades.insert(70, (Some(6.5), 1));
        assert_eq!(
            decide(
                &mut cloud,
                &record(RecordKind::Grade, "SAFETY-101", "6.50000", 2)
            ),
            "already"
        );
    }

    #[test]
    fn what_the_cloud_lacks_or_refuses_is_held_and_a_cloud_that_is_down_stops_the_pass() {
        let c = RecordKind::ActivityCompletion;
        let held = |cloud: &mut Fake, course: &str| decide(cloud, &record(c, course, "1", 200));
        let mut cloud = Fake {
            enrolled: true,
            ..Fake::default()
        };
        assert!(held(&mut cloud, "NO-SUCH").starts_with("held: no course NO-SUCH"));
        let mut cloud = Fake::default();
        assert!(held(&mut cloud, "SAFETY-101").contains("is not enrolled"));
        let mut cloud = Fake {
            enrolled: true,
            refuse: Some("nopermission".into()),
            ..Fake::default()
        };
        assert!(held(&mut cloud, "SAFETY-101").starts_with("held: the cloud Moodle refused it"));
        let mut cloud = Fake {
            down: true,
            ..Fake::default()
        };
        assert!(held(&mut cloud, "SAFETY-101").starts_with("stop: "));
        assert_eq!(
            decide(&mut cloud, &record(c, "SAFETY-101", "7", 1)),
            "stop: cannot reach Moodle",
            "the cloud is asked before the value is looked at"
        );
    }
}
