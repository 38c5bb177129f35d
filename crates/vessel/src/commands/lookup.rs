//! Looking keys up in the ship's Moodle through its web services, for the commands that resolve
//! a course or activity key to this Moodle's ids (`import_progress`) or check that it exists
//! (`set_mapping`'s drift check). Every failure to ask is a [`Step`] that waits, never fails:
//! Moodle being down is not the bundle's fault.

use std::collections::HashMap;

use moodle::ws::{Params, Safety, Ws};
use serde_json::Value;

use super::Ctx;
use crate::store::CommandOutcome;

/// Either the value, or the outcome the command ends its run with.
pub(super) type Step<T> = std::result::Result<T, CommandOutcome>;

/// A `waiting` outcome retried after `secs`.
pub(super) fn wait(ctx: &Ctx<'_>, secs: i64, reason: impl Into<String>) -> CommandOutcome {
    CommandOutcome::Waiting {
        reason: reason.into(),
        retry_at: ctx.now + secs,
    }
}

/// The web-service client, or why the command waits.
pub(super) fn connect(ctx: &Ctx<'_>) -> Step<Ws> {
    ctx.moodle(300)
}

/// A course's activities by key, and the course's own key.
pub(super) struct CourseInfo {
    /// The course's key on this Moodle (idnumber, else shortname).
    pub key: String,
    /// Activity key (idnumber, and `MODNAME:NAME`) to (course-module id, its capture key).
    pub activities: HashMap<String, (i64, String)>,
}

/// Calls read-only function `f`; an error waits.
pub(super) fn call(ctx: &Ctx<'_>, ws: &Ws, f: &str, p: &Params) -> Step<Value> {
    ws.call(f, p, Safety::Read)
        .map_err(|e| wait(ctx, 300, e.to_string()))
}

/// The course with idnumber (else shortname) `key` and its activities; None if there is none.
pub(super) fn course_info(ctx: &Ctx<'_>, ws: &Ws, key: &str) -> Step<Option<CourseInfo>> {
    let mut found = None;
    for field in ["idnumber", "shortname"] {
        let r = call(
            ctx,
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
    let contents = call(
        ctx,
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
        let cm = call(
            ctx,
            ws,
            "core_course_get_course_module",
            &Params::new().set("cmid", cmid),
        )?;
        let idn = cm["cm"]["idnumber"].as_str().unwrap_or_default();
        let fallback = format!(
            "{}:{}",
            m["modname"].as_str().unwrap_or_default(),
            m["name"].as_str().unwrap_or_default()
        );
        let key = if idn.is_empty() {
            fallback.clone()
        } else {
            idn.to_string()
        };
        activities.insert(key.clone(), (cmid, key.clone()));
        activities.entry(fallback).or_insert((cmid, key));
    }
    Ok(Some(CourseInfo {
        key: local_key,
        activities,
    }))
}
