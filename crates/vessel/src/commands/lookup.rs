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
pub(super) type CourseInfo = moodle::lookup::Course;

/// Calls read-only function `f`; an error waits.
pub(super) fn call(ctx: &Ctx<'_>, ws: &Ws, f: &str, p: &Params) -> Step<Value> {
    ws.call(f, p, Safety::Read)
        .map_err(|e| wait(ctx, 300, e.to_string()))
}

/// The course with idnumber (else shortname) `key` and its activities; None if there is none.
pub(super) fn course_info(ctx: &Ctx<'_>, ws: &Ws, key: &str) -> Step<Option<CourseInfo>> {
    moodle::lookup::course(ws, key, || (ctx.keepalive)()).map_err(|e| wait(ctx, 300, e.to_string()))
}

/// Learners by key (idnumber, else username): key to (user id, the key capture writes).
pub(super) fn users(ctx: &Ctx<'_>, ws: &Ws, keys: &[&str]) -> Step<HashMap<String, (i64, String)>> {
    moodle::lookup::users(ws, keys, || (ctx.keepalive)()).map_err(|e| wait(ctx, 300, e.to_string()))
}
