//! What an import keeps of itself and of the site: its saved progress, why it stopped, and the
//! web service timed (every call counted, the time spent waiting on Moodle summed), with the
//! lookup of users by a field that both ways of writing users rely on, and what makes a row
//! `unchanged` (the account already holds it: `holds`, with `known_enrolments`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::validate::Row;
use crate::ws::{Params, Safety, Ws, WsError};
use base::csvrow::RowError;

/// Progress saved after every chunk, to resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// SHA-256 of the CSV (a changed file cannot be resumed).
    pub file_sha256: String,
    /// The site's endpoint.
    pub moodle: String,
    /// Chunk size used.
    pub chunk: usize,
    /// First row not yet finished.
    pub next_row: u64,
    /// Users created so far.
    pub created: u64,
    /// Users updated so far.
    pub updated: u64,
    /// Rows left alone so far: the account already held exactly what the row says.
    #[serde(default)]
    pub unchanged: u64,
    /// Enrolments sent so far.
    pub enrolments: u64,
    /// Rows Moodle refused in finished chunks.
    pub refused: Vec<RowError>,
    /// Web-service calls made.
    pub calls: u64,
}

/// Why an import stopped before the end.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Moodle failed in a way that is not one row's fault (unreachable, token, permissions).
    #[error("{0}")]
    Moodle(#[from] WsError),
    /// Local file trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A user as Moodle has it.
#[derive(Debug, Clone)]
pub(super) struct Existing {
    pub(super) id: i64,
    pub(super) username: String,
    pub(super) idnumber: String,
    pub(super) email: String,
    pub(super) firstname: String,
    pub(super) lastname: String,
    pub(super) auth: String,
    pub(super) suspended: bool,
    /// The courses (of those the import names) the account is enrolled in, when the companion
    /// plugin answered; `None`: not known.
    pub(super) courses: Option<Vec<String>>,
}

/// The web service, timed.
pub(super) struct Timed<'a> {
    pub(super) ws: &'a Ws,
    /// Time spent waiting on Moodle (its replies and its CLI).
    pub(super) waited: Duration,
    pub(super) calls: u64,
    /// Accounts are looked up through the companion plugin's `local_vesselsync_get_users`
    /// (a fraction of core_user_get_users_by_field's cost), with enrolments in these courses;
    /// `None`: through core web services.
    pub(super) plugin: Option<Vec<String>>,
}

impl Timed<'_> {
    pub(super) fn call(&mut self, f: &str, p: &Params, s: Safety) -> Result<Value, WsError> {
        let t = Instant::now();
        self.calls += 1;
        let r = self.ws.call(f, p, s);
        self.waited += t.elapsed();
        r
    }

    pub(super) fn users_by(
        &mut self,
        field: &str,
        values: &[&str],
    ) -> Result<Vec<Existing>, WsError> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = Params::new().set("field", field);
        for (i, v) in values.iter().enumerate() {
            p = p.item("values", i, v);
        }
        if let Some(courses) = &self.plugin {
            for (i, c) in courses.iter().enumerate() {
                p = p.item("courses", i, c);
            }
        }
        let function = if self.plugin.is_some() {
            crate::plugin::GET_USERS
        } else {
            "core_user_get_users_by_field"
        };
        let plugin = self.plugin.is_some();
        let reply = self.call(function, &p, Safety::Read)?;
        Ok(reply
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|u| Existing {
                        id: u["id"].as_i64().unwrap_or_default(),
                        username: u["username"].as_str().unwrap_or_default().to_string(),
                        idnumber: u["idnumber"].as_str().unwrap_or_default().to_string(),
                        email: u["email"].as_str().unwrap_or_default().to_string(),
                        firstname: u["firstname"].as_str().unwrap_or_default().to_string(),
                        lastname: u["lastname"].as_str().unwrap_or_default().to_string(),
                        auth: u["auth"].as_str().unwrap_or_default().to_string(),
                        suspended: u["suspended"].as_bool().unwrap_or(false)
                            || u["suspended"].as_i64() == Some(1),
                        courses: plugin.then(|| {
                            u["courses"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|c| c.as_str().map(str::to_string))
                                .collect()
                        }),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Who is enrolled in each of the import's courses (user id, course id), asked course by course
/// through `core_enrol_get_enrolled_users`; `None` where the service lacks the function (every
/// row naming a course is then written, as before). Through the companion plugin each account
/// comes with its enrolments instead, and nothing is asked here.
pub(super) fn known_enrolments(
    t: &mut Timed<'_>,
    course_ids: &HashMap<String, i64>,
) -> Result<Option<HashSet<(i64, i64)>>, WsError> {
    let mut enrolled = HashSet::new();
    if t.plugin.is_some() {
        return Ok(Some(enrolled));
    }
    for cid in course_ids.values() {
        let reply = t.call(
            "core_enrol_get_enrolled_users",
            &Params::new()
                .set("courseid", cid)
                .set("options[0][name]", "userfields")
                .set("options[0][value]", "id"),
            Safety::Read,
        );
        match reply {
            Ok(list) => {
                for u in list.as_array().into_iter().flatten() {
                    if let Some(uid) = u["id"].as_i64() {
                        enrolled.insert((uid, *cid));
                    }
                }
            }
            Err(e) if e.errorcode().is_some() && !e.is_transient() => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(enrolled))
}

/// Whether the account `e` already holds exactly what row `r` says: its names, email and
/// idnumber, its auth and suspension where the file gives them, and an enrolment in every course
/// (`enrolled`: known enrolments; `None`: not known, so a row naming a course is never unchanged).
pub(super) fn holds(
    e: &Existing,
    r: &Row,
    course_ids: &HashMap<String, i64>,
    enrolled: Option<&HashSet<(i64, i64)>>,
) -> bool {
    let same = e.firstname == r.firstname
        && e.lastname == r.lastname
        && e.email == r.email
        && e.idnumber == r.idnumber
        && (r.auth.is_empty() || e.auth == r.auth)
        && r.suspended.is_none_or(|s| s == e.suspended);
    same && r.courses.iter().all(|c| match &e.courses {
        Some(held) => course_ids.contains_key(c) && held.contains(c),
        None => course_ids
            .get(c)
            .zip(enrolled)
            .is_some_and(|(cid, set)| set.contains(&(e.id, *cid))),
    })
}
