//! The forwarder's [`Cloud`] over the cloud Moodle's web services, with what one pass has
//! learned of it (users, courses, enrolments, completion and grades), and the time spent
//! waiting for its answers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base::retry::Retriable as _;
use moodle::lookup::{self, Activity, Course};
use moodle::ws::{Params, Safety, Ws, WsError};
use serde_json::Value;

use super::decide::{Cloud, Grades, Stop};

/// The cloud, with what this pass has learned of it.
pub(crate) struct MoodleCloud {
    ws: Ws,
    /// Time spent waiting for the cloud's answers.
    pub waited: Duration,
    users: HashMap<String, Option<i64>>,
    courses: HashMap<String, Option<Course>>,
    enrolled: HashMap<i64, Vec<i64>>,
    /// Hidden courses (a retirement hides them) and, once asked, their learners: the per-user
    /// list of courses leaves hidden ones out.
    hidden: HashMap<i64, Option<Vec<i64>>>,
    completion: HashMap<(i64, i64), HashMap<i64, (i64, i64)>>,
    grades: HashMap<(i64, i64), Grades>,
}

fn cloud_error(e: WsError) -> Result<Value, Stop> {
    Err(Stop::Cloud(e.to_string()))
}

impl MoodleCloud {
    /// The cloud behind `ws`, nothing learned yet.
    pub(crate) fn new(ws: Ws) -> Self {
        Self {
            ws,
            waited: Duration::ZERO,
            users: HashMap::new(),
            courses: HashMap::new(),
            enrolled: HashMap::new(),
            hidden: HashMap::new(),
            completion: HashMap::new(),
            grades: HashMap::new(),
        }
    }

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
            // A cloud that may answer later, or an answer that is not Moodle's refusal of this
            // record (no errorcode: a proxy's page, a broken reply), ends the pass.
            Err(e) if e.is_retriable() || e.errorcode().is_none() => {
                Err(Stop::Cloud(e.to_string()))
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }
}

impl Cloud for MoodleCloud {
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
        if let Some(c) = found.as_ref().filter(|c| !c.visible) {
            self.hidden.entry(c.id).or_insert(None);
        }
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
        if self
            .enrolled
            .get(&user)
            .is_some_and(|l| l.contains(&course))
        {
            return Ok(true);
        }
        // A hidden course is missing from the learner's list whether or not they are enrolled:
        // its participants are asked instead.
        if let Some(slot) = self.hidden.get(&course) {
            if slot.is_none() {
                let r = self.read(
                    "core_enrol_get_enrolled_users",
                    &Params::new()
                        .set("courseid", course)
                        .set("options[0][name]", "userfields")
                        .set("options[0][value]", "id"),
                )?;
                let ids = r
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|u| u["id"].as_i64())
                    .collect();
                self.hidden.insert(course, Some(ids));
            }
            return Ok(self
                .hidden
                .get(&course)
                .and_then(Option::as_ref)
                .is_some_and(|l| l.contains(&user)));
        }
        Ok(false)
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
    fn grades(&mut self, course: i64, user: i64) -> Result<Grades, Stop> {
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

    fn override_completion(
        &mut self,
        course: i64,
        user: i64,
        cmid: i64,
        state: i64,
    ) -> Result<Result<(), String>, Stop> {
        let reply = self.write(
            "core_completion_override_activity_completion_status",
            &Params::new()
                .set("userid", user)
                .set("cmid", cmid)
                .set("newstate", state),
        )?;
        self.completion.remove(&(course, user));
        Ok(reply.map(|_| ()))
    }

    fn update_grade(
        &mut self,
        course: i64,
        activity: &Activity,
        user: i64,
        grade: &str,
    ) -> Result<Result<i64, String>, Stop> {
        let reply = self.write(
            "core_grades_update_grades",
            &Params::new()
                .set("source", "vessel-sync")
                .set("courseid", course)
                .set("component", format!("mod_{}", activity.modname))
                .set("activityid", activity.cmid)
                .set("itemnumber", 0)
                .set("grades[0][studentid]", user)
                .set("grades[0][grade]", grade),
        )?;
        self.grades.remove(&(course, user));
        // grade_update's status: 0 is GRADE_UPDATE_OK.
        Ok(reply.map(|v| v.as_i64().unwrap_or(-1)))
    }
}
