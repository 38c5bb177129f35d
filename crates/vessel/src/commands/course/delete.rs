//! `delete_course`, guarded (law 3): hide the course, ask for a capture and wait for it, wait
//! until shore has acknowledged every captured record of the course, write a final backup with
//! user data, delete, and check that the course is gone.

use std::path::Path;

use serde_json::Value;

use super::{Job, Step, arg, course_arg, file_ok, outcome, wait};
use crate::commands::{Command, Ctx, Journal};
use crate::store::{CommandOutcome, Result};

/// `delete_course`, guarded by shore's acknowledgement of all the course's progress.
pub struct DeleteCourse;

impl Command for DeleteCourse {
    fn kind(&self) -> &'static str {
        "delete_course"
    }

    fn run(&self, ctx: &Ctx<'_>, j: &mut Journal<'_>) -> Result<CommandOutcome> {
        let key = match course_arg(ctx) {
            Ok(k) => k,
            Err(o) => return Ok(o),
        };
        if let Some(nb) = arg(ctx, "not_before") {
            match base::clock::parse_time(nb) {
                Some(t) if t > ctx.now => {
                    return Ok(CommandOutcome::Waiting {
                        reason: format!("not before {nb}"),
                        retry_at: t,
                    });
                }
                Some(_) => {}
                None => {
                    return Ok(CommandOutcome::Failed(format!(
                        "args.not_before {nb:?} is not a time like 2026-12-01T00:00:00Z"
                    )));
                }
            }
        }
        let keep_backup = ctx
            .args
            .get("keep_backup")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let job = match Job::new(ctx) {
            Ok(j) => j,
            Err(o) => return Ok(o),
        };
        guarded_delete(&job, j, &key, keep_backup, "").map(outcome)
    }
}

/// The guard and the deletion, shared with `replace_course`. `Ok(Err(outcome))` is a
/// wait or failure; store errors propagate.
pub(super) fn guarded_delete(
    job: &Job<'_, '_>,
    j: &mut Journal<'_>,
    key: &str,
    keep_backup: bool,
    why: &str,
) -> Result<Step<CommandOutcome>> {
    let ctx = job.ctx;
    let mut p = job.load();
    let found = match job.find(key) {
        Ok(f) => f,
        Err(o) => return Ok(Err(o)),
    };
    let Some(c) = found else {
        let note = match p.course_id {
            Some(id) => format!("course {key} (id {id}) deleted{why}; its absence is verified"),
            // Shore reads "does not exist on this Moodle" as "never had it" (shore course status).
            None => format!("course {key} does not exist on this Moodle: nothing to delete"),
        };
        return Ok(Ok(job.done(note)));
    };
    if c.id == 1 {
        return Ok(Ok(CommandOutcome::Failed(format!(
            "{key} is the site's front page course (id 1), which cannot be deleted"
        ))));
    }
    p.course_id = Some(c.id);
    // 1. Hidden first, so no new progress starts while the guard waits.
    if let Err(o) = job.hide(&c) {
        return Ok(Err(o));
    }
    let captures: u64 = j
        .with(|tx| tx.fact("captures"))?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    p.hidden_at.get_or_insert(ctx.now);
    let at_hide = *p.captures_at_hide.get_or_insert(captures);
    if let Err(o) = job.save(&p) {
        return Ok(Err(o));
    }
    // 2. A capture after hiding records the course's last progress.
    if ctx.capture_configured && captures <= at_hide {
        j.with(|tx| tx.set_fact("capture_requested_at", &ctx.now.to_string()))?;
        return Ok(Err(wait(
            ctx,
            5,
            format!(
                "course {key} hidden; waiting for a progress capture to record its last progress before it is deleted"
            ),
        )));
    }
    // 3. Shore must hold every record of the course.
    let (backlog, learners) = j.with(|tx| tx.course_impact(c.key()))?;
    if backlog.records > 0 {
        let age = backlog
            .oldest_captured_at
            .map(|t| base::clock::format_age(ctx.now - t))
            .unwrap_or_default();
        return Ok(Err(wait(
            ctx,
            300,
            format!(
                "waiting for shore to acknowledge {} records of {}, oldest {age} old ({learners} learners have progress in this course); it is deleted only after that",
                backlog.records,
                c.key()
            ),
        )));
    }
    // 4. The final backup, with user data, kept on board.
    if keep_backup && !p.backup.as_deref().is_some_and(|b| file_ok(Path::new(b))) {
        match job.backup(c.id) {
            Ok(path) => {
                let store = crate::content::ContentStore::new(
                    job.ctx.state_dir,
                    job.ctx.content_store_bytes,
                );
                let kept = j.with(|tx| Ok(store.keep_from(tx, &path, job.ctx.now)))?;
                if let Err(e) = kept {
                    tracing::warn!(error = %e, "could not keep the final backup's content files on board");
                }
                p.backup = Some(path.display().to_string());
                if let Err(o) = job.save(&p) {
                    return Ok(Err(o));
                }
            }
            Err(o) => return Ok(Err(o)),
        }
    }
    job.prune_backups();
    // 5. Delete, then look.
    p.delete_attempts += 1;
    if let Err(o) = job.save(&p) {
        return Ok(Err(o));
    }
    let (gone, run) = match job.delete(c.id) {
        Ok(r) => r,
        Err(o) => return Ok(Err(o)),
    };
    if gone {
        j.with(|tx| tx.forget_course(c.key()))?;
        let kept = p
            .backup
            .as_deref()
            .map(|b| format!("; final backup {b}"))
            .unwrap_or_default();
        return Ok(Ok(job.done(format!(
            "course {key} (id {}) deleted{why} after shore acknowledged all its progress ({learners} learners){kept}; its absence is verified",
            c.id
        ))));
    }
    if p.delete_attempts >= 3 {
        return Ok(Ok(CommandOutcome::Failed(format!(
            "course {key} (id {}) is still there after {} attempts: {}",
            c.id,
            p.delete_attempts,
            run.describe()
        ))));
    }
    Ok(Err(wait(
        ctx,
        60,
        format!(
            "course {key} (id {}) is still there after delete_course.php ({}); trying again",
            c.id,
            run.describe()
        ),
    )))
}
