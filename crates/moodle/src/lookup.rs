//! Natural keys looked up through a Moodle's web services: a learner by idnumber or username,
//! a course by idnumber or shortname with its activities by capture key (course-module
//! idnumber, else `MODNAME:NAME`). Used on board (`import_progress`, `set_mapping`) and ashore
//! (forwarding into the cloud Moodle), so both sides resolve a key the same way.

use std::collections::HashMap;

use serde_json::Value;

use crate::ws::{Params, Safety, Ws, WsError};

/// One activity of a course.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// Course-module id.
    pub cmid: i64,
    /// Its key as capture writes it.
    pub key: String,
    /// Its module (`assign`, `page`...).
    pub modname: String,
}

/// A course and its activities.
#[derive(Debug, Clone)]
pub struct Course {
    /// Course id.
    pub id: i64,
    /// The course's key on this Moodle (idnumber, else shortname).
    pub key: String,
    /// Whether it is visible.
    pub visible: bool,
    /// Activity key (idnumber, and `MODNAME:NAME`) to the activity.
    pub activities: HashMap<String, Activity>,
}

fn read(ws: &Ws, f: &str, p: &Params) -> Result<Value, WsError> {
    ws.call(f, p, Safety::Read)
}

/// The course with idnumber (else shortname) `key`, with its activities; None if there is none.
pub fn course(ws: &Ws, key: &str, mut keepalive: impl FnMut()) -> Result<Option<Course>, WsError> {
    let mut found = None;
    for field in ["idnumber", "shortname"] {
        let r = read(
            ws,
            "core_course_get_courses_by_field",
            &Params::new().set("field", field).set("value", key),
        )?;
        if let Some(c) = r["courses"].as_array().and_then(|a| a.first()) {
            found = Some(c.clone());
            break;
        }
    }
    let Some(c) = found else {
        return Ok(None);
    };
    let id = c["id"].as_i64().unwrap_or_default();
    let idnumber = c["idnumber"].as_str().unwrap_or_default();
    let local_key = if idnumber.is_empty() {
        c["shortname"].as_str().unwrap_or_default().to_string()
    } else {
        idnumber.to_string()
    };
    let contents = read(
        ws,
        "core_course_get_contents",
        &Params::new().set("courseid", id),
    )?;
    let mut activities = HashMap::new();
    for m in contents
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["modules"].as_array().into_iter().flatten())
    {
        let cmid = m["id"].as_i64().unwrap_or_default();
        let cm = read(
            ws,
            "core_course_get_course_module",
            &Params::new().set("cmid", cmid),
        )?;
        keepalive();
        let modname = m["modname"].as_str().unwrap_or_default().to_string();
        let idn = cm["cm"]["idnumber"].as_str().unwrap_or_default();
        let fallback = format!("{modname}:{}", m["name"].as_str().unwrap_or_default());
        let key = if idn.is_empty() {
            fallback.clone()
        } else {
            idn.to_string()
        };
        let a = Activity {
            cmid,
            key: key.clone(),
            modname,
        };
        activities.insert(key, a.clone());
        activities.entry(fallback).or_insert(a);
    }
    Ok(Some(Course {
        id,
        key: local_key,
        visible: c["visible"].as_i64().unwrap_or(1) != 0,
        activities,
    }))
}

/// Whether Moodle's `PARAM_USERNAME` takes `k` as it is (lower case letters, digits and
/// `_-@.`); asking for another refuses the whole call with `invalidparameter`.
fn could_be_username(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-@.".contains(c))
}

/// Learners by key (idnumber, else username), 100 per call: key to (user id, the key capture
/// writes for them). A key with no account is missing from the map.
pub fn users(
    ws: &Ws,
    keys: &[&str],
    mut keepalive: impl FnMut(),
) -> Result<HashMap<String, (i64, String)>, WsError> {
    let mut wanted: Vec<&str> = keys.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut found: HashMap<String, (i64, String)> = HashMap::new();
    for chunk in wanted.chunks(100) {
        for field in ["idnumber", "username"] {
            let todo: Vec<&str> = chunk
                .iter()
                .copied()
                .filter(|k| !found.contains_key(*k))
                // Moodle refuses the whole call for one value that cannot be a username.
                .filter(|k| field != "username" || could_be_username(k))
                .collect();
            if todo.is_empty() {
                continue;
            }
            let mut p = Params::new().set("field", field);
            for (i, k) in todo.iter().enumerate() {
                p = p.item("values", i, k);
            }
            let r = read(ws, "core_user_get_users_by_field", &p)?;
            for u in r.as_array().into_iter().flatten() {
                let key_of = u[field].as_str().unwrap_or_default().to_string();
                let idn = u["idnumber"].as_str().unwrap_or_default();
                let local = if idn.is_empty() {
                    u["username"].as_str().unwrap_or_default()
                } else {
                    idn
                };
                found.insert(key_of, (u["id"].as_i64().unwrap_or_default(), local.into()));
            }
        }
        keepalive();
    }
    Ok(found)
}
