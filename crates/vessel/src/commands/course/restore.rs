//! `restore_course` (a course from an `.mbz` into a category, with the wanted shortname,
//! idnumber and visibility; a restore cut by a crash is found and its half-built course deleted;
//! the same backup twice is skipped; a backup sent by content is rebuilt first from the
//! content files carried and kept on board, asking shore for the rest) and `replace_course` (the new version restored, then the
//! old one retired under the deletion guard).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::delete::guarded_delete;
use super::{Course, Job, Step, arg, course_arg, outcome, wait};
use crate::commands::{Command, Ctx, Journal};
use crate::content::ContentStore;
use crate::store::{CommandOutcome, Result};
use moodle::delta;
use moodle::ws::{Params, Safety};

/// `restore_course`: a course from an `.mbz` in the bundle, with the wanted names.
pub struct RestoreCourse;

impl Command for RestoreCourse {
    fn kind(&self) -> &'static str {
        "restore_course"
    }

    fn run(&self, ctx: &Ctx<'_>, j: &mut Journal<'_>) -> Result<CommandOutcome> {
        let job = match Job::new(ctx) {
            Ok(j) => j,
            Err(o) => return Ok(o),
        };
        restore(&job, j).map(outcome)
    }
}

/// The backup the command names: `args.file`, or the bundle's one backup; a backup sent by
/// content is its `NAME.mbz.delta` (content members `files/content/SHA1` are not candidates).
fn mbz_path(ctx: &Ctx<'_>) -> Step<PathBuf> {
    let candidates: Vec<&(String, PathBuf)> = ctx
        .files
        .iter()
        .filter(|(n, _)| !n.starts_with(delta::CONTENT_MEMBER_PREFIX))
        .collect();
    let names = || {
        candidates
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (arg(ctx, "file"), candidates.as_slice()) {
        (Some(w), files) => files
            .iter()
            .find(|(n, _)| n == w || *n == format!("{w}{}", delta::DELTA_SUFFIX))
            .map(|(_, p)| p.clone())
            .ok_or_else(|| {
                CommandOutcome::Failed(format!(
                    "the bundle has no file {w:?} (it has: {})",
                    names()
                ))
            }),
        (None, [(_, p)]) => Ok(p.clone()),
        (None, _) => Err(CommandOutcome::Failed(format!(
            "name the backup with args.file (the bundle has: {})",
            names()
        ))),
    }
}

/// A backup sent by content, rebuilt in the bundle's work directory from the content files the
/// bundle carries and those kept on board; those neither has are asked of shore (the command
/// waits for them). Returns the rebuilt backup.
fn rebuilt(ctx: &Ctx<'_>, j: &mut Journal<'_>, delta_file: &Path) -> Step<PathBuf> {
    let layout = delta::read_layout(delta_file).map_err(|e| {
        CommandOutcome::Failed(format!(
            "the course backup sent by content is unreadable: {e}"
        ))
    })?;
    let name = delta_file.to_string_lossy();
    let out = PathBuf::from(
        name.strip_suffix(delta::DELTA_SUFFIX)
            .unwrap_or(&name)
            .to_string(),
    );
    if out.is_file() {
        // Renamed into place only once complete and checked: rebuilt before a crash.
        return Ok(out);
    }
    let store = ContentStore::new(ctx.state_dir, ctx.content_store_bytes);
    let mut sources: HashMap<String, PathBuf> = HashMap::new();
    let mut missing: Vec<&delta::ContentFile> = Vec::new();
    for c in &layout.content {
        if sources.contains_key(&c.sha1) || missing.iter().any(|m| m.sha1 == c.sha1) {
            continue;
        }
        // Carried in the bundle: checked against the signed manifest when it was admitted.
        let carried = ctx
            .files
            .iter()
            .find(|(n, _)| *n == c.member())
            .map(|(_, p)| p.clone())
            .filter(|p| p.is_file());
        let found = match carried {
            Some(p) => Some(p),
            None => j
                .with(|tx| Ok(store.lookup(tx, c, ctx.now)))
                .map_err(|e| wait(ctx, 60, e.to_string()))?
                .map_err(|e| wait(ctx, 300, e))?,
        };
        match found {
            Some(p) => {
                sources.insert(c.sha1.clone(), p);
            }
            None => missing.push(c),
        }
    }
    if !missing.is_empty() {
        let hashes: Vec<String> = missing.iter().map(|c| c.sha256.clone()).collect();
        j.with(|tx| tx.need_files(&ctx.cmd.bundle_id, &hashes, ctx.now))
            .map_err(|e| wait(ctx, 60, e.to_string()))?;
        let bytes: u64 = missing.iter().map(|c| c.size).sum();
        return Err(wait(
            ctx,
            3600,
            format!(
                "{} of the {} content files of {} are neither in the bundle nor kept on board ({bytes} bytes); shore is asked for them in the next progress batch",
                missing.len(),
                layout.content.len(),
                layout.source
            ),
        ));
    }
    match delta::rebuild(delta_file, &mut |c| sources.get(&c.sha1).cloned(), &out) {
        Ok(_) => {}
        Err(delta::RebuildError::Mismatch(c) | delta::RebuildError::Missing(c)) => {
            // Changed on disk since it was checked: drop it, ask again at once.
            j.with(|tx| Ok(store.forget(tx, &c.sha1)))
                .map_err(|e| wait(ctx, 60, e.to_string()))?
                .map_err(|e| wait(ctx, 60, e))?;
            return Err(wait(
                ctx,
                1,
                format!(
                    "content file {} changed on disk while the backup was rebuilt; trying again",
                    c.sha1
                ),
            ));
        }
        Err(delta::RebuildError::Damaged(e)) => {
            return Err(CommandOutcome::Failed(format!(
                "the course backup sent by content cannot be rebuilt: {e}"
            )));
        }
        Err(delta::RebuildError::Io(e)) => return Err(wait(ctx, 300, e)),
    }
    base::failpoint::hit("delta.after-rebuild");
    tracing::info!(backup = %out.display(), content = layout.content.len(), "course backup rebuilt from its delta");
    Ok(out)
}

fn restore(job: &Job<'_, '_>, j: &mut Journal<'_>) -> Result<Step<CommandOutcome>> {
    Ok((|| -> Step<CommandOutcome> {
        let ctx = job.ctx;
        let named = mbz_path(ctx)?;
        let by_content = named.to_string_lossy().ends_with(delta::DELTA_SUFFIX);
        let shortname = arg(ctx, "shortname").map(str::to_string).ok_or_else(|| {
            CommandOutcome::Failed("args.shortname is missing: the course's short name".into())
        })?;
        let idnumber = arg(ctx, "idnumber").unwrap_or(&shortname).to_string();
        let category = arg(ctx, "category").map(str::to_string).ok_or_else(|| {
            CommandOutcome::Failed(
                "args.category is missing: the idnumber of the category to restore into".into(),
            )
        })?;
        let visible = ctx
            .args
            .get("visible")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        // The version: the original file's SHA-256, whether it came whole or by content.
        let sha = if by_content {
            delta::read_layout(&named)
                .map_err(|e| {
                    CommandOutcome::Failed(format!(
                        "the course backup sent by content is unreadable: {e}"
                    ))
                })?
                .source_sha256
        } else {
            base::fsutil::file_sha256(&named)
                .map_err(|e| wait(ctx, 300, format!("{}: {e}", named.display())))?
        };
        let mut p = job.load();
        // The same backup already restored for this course: nothing to do (and nothing to
        // rebuild or fetch).
        let fact = format!("restored:{idnumber}");
        let before = j
            .with(|tx| tx.fact(&fact))
            .map_err(|e| wait(ctx, 60, e.to_string()))?;
        if p.restoring_above.is_none()
            && p.course_id.is_none()
            && before.as_deref() == Some(sha.as_str())
        {
            if let Some(c) = job.find(&idnumber)? {
                return Ok(job.done(format!(
                    "course {idnumber} (id {}) was already restored from this backup: skipped",
                    c.id
                )));
            }
        }
        let mbz = if by_content {
            rebuilt(ctx, j, &named)?
        } else {
            named
        };
        let file = mbz
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Moodle's restore_backup.php turns an activity or section backup into a new course of
        // its own without a word: refuse it here instead. A damaged file goes on to Moodle,
        // whose own words then fail the command.
        let manifest = moodle::mbz::manifest(&mbz).ok().flatten();
        if let Some(m) = manifest.as_ref().filter(|m| m.kind != "course") {
            return Err(CommandOutcome::Failed(format!(
                "{file} is an {} backup (its moodle_backup.xml says type {}), not a course backup: \
                 make one with admin/cli/backup.php --courseid=N and send it again",
                m.kind, m.kind
            )));
        }
        let cats = job.call(
            "core_course_get_categories",
            &Params::new()
                .set("criteria[0][key]", "idnumber")
                .set("criteria[0][value]", &category)
                .set("addsubcategories", 0),
            Safety::Read,
        )?;
        let Some(cat_id) = cats
            .as_array()
            .and_then(|a| a.first())
            .and_then(|c| c["id"].as_i64())
        else {
            return Err(CommandOutcome::Failed(format!(
                "no course category with idnumber {category} on this Moodle"
            )));
        };
        // A restore cut short by a crash: remove what it built, then start again. Only a course
        // this restore can have made: newer than the restore's start, in its category, named as
        // Moodle names a restore of this backup (other people create courses on a live site).
        if let (Some(above), None) = (p.restoring_above, p.course_id) {
            let ours = |c: &Course| {
                c.id > above
                    && c.category == cat_id
                    && manifest
                        .as_ref()
                        .is_none_or(|m| moodle::mbz::restored_name(&m.shortname, &c.shortname))
            };
            for c in job.courses_by("", "")?.into_iter().filter(ours) {
                tracing::warn!(course_id = c.id, shortname = %c.shortname, "removing a course half-built by an interrupted restore");
                let (gone, run) = job.delete(c.id)?;
                if !gone {
                    return Err(wait(
                        ctx,
                        60,
                        format!(
                            "the half-restored course {} (id {}) could not be removed yet ({}); trying again",
                            c.shortname,
                            c.id,
                            run.describe()
                        ),
                    ));
                }
            }
            p.restoring_above = None;
            job.save(&p)?;
        }
        let course_id = match p.course_id {
            Some(id) => id,
            None => {
                for (field, value) in [("shortname", &shortname), ("idnumber", &idnumber)] {
                    if let Some(other) = job
                        .courses_by(field, value)?
                        .into_iter()
                        .find(|c| &c.shortname == value || &c.idnumber == value)
                    {
                        return Err(CommandOutcome::Failed(format!(
                            "the {field} {value} is already used by course id {} ({}); delete or rename that course first (delete_course), then send this restore again",
                            other.id, other.shortname
                        )));
                    }
                }
                let highest = job
                    .courses_by("", "")?
                    .iter()
                    .map(|c| c.id)
                    .max()
                    .unwrap_or(1);
                p.restoring_above = Some(highest);
                p.mbz_sha256 = Some(sha.clone());
                job.save(&p)?;
                let run = job.run_cli(
                    "restore_backup.php",
                    &[
                        format!("--file={}", mbz.display()),
                        format!("--categoryid={cat_id}"),
                    ],
                )?;
                base::failpoint::hit("restore.after-cli");
                let Some(id) = run
                    .after("== Restored course ID:")
                    .and_then(|v| v.trim_end_matches('=').trim().parse::<i64>().ok())
                else {
                    let _ = std::fs::remove_file(&job.state);
                    return Err(CommandOutcome::Failed(format!(
                        "the restore failed: {}",
                        run.describe()
                    )));
                };
                if job.by_id(id)?.is_none() {
                    return Err(CommandOutcome::Failed(format!(
                        "restore_backup.php reported course {id}, which does not exist: {}",
                        run.describe()
                    )));
                }
                p.course_id = Some(id);
                p.restoring_above = None;
                job.save(&p)?;
                id
            }
        };
        // The restore dropped a taken idnumber and suffixed a taken shortname: set the wanted ones.
        job.update(
            course_id,
            &[
                ("shortname", shortname.clone()),
                ("idnumber", idnumber.clone()),
                ("visible", if visible { "1" } else { "0" }.into()),
            ],
        )?;
        match job.by_id(course_id)? {
            Some(c) if c.shortname == shortname && c.idnumber == idnumber => {}
            other => {
                return Err(wait(
                    ctx,
                    60,
                    format!(
                        "course {course_id} does not show the wanted names yet ({other:?}); trying again"
                    ),
                ));
            }
        }
        j.with(|tx| tx.set_fact(&fact, &sha))
            .map_err(|e| wait(ctx, 60, e.to_string()))?;
        j.with(|tx| tx.needs_done(&ctx.cmd.bundle_id))
            .map_err(|e| wait(ctx, 60, e.to_string()))?;
        // Kept for the next version of the course; a failure costs a larger download, no more.
        let store = ContentStore::new(ctx.state_dir, ctx.content_store_bytes);
        match j
            .with(|tx| Ok(store.keep_from(tx, &mbz, ctx.now)))
            .map_err(|e| e.to_string())
            .and_then(|kept| kept.map_err(|e| e.to_string()))
        {
            Ok((n, bytes)) if n > 0 => {
                tracing::info!(files = n, bytes, "course content kept on board")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not keep the course's content files on board")
            }
        }
        Ok(job.done(format!(
            "restored {shortname} (idnumber {idnumber}) as course id {course_id} in category {category} from {file}"
        )))
    })())
}

/// `replace_course`: a new version of a course is restored and goes live (as `restore_course`),
/// then the old one is retired under the same guard as `delete_course`.
pub struct ReplaceCourse;

impl Command for ReplaceCourse {
    fn kind(&self) -> &'static str {
        "replace_course"
    }

    fn run(&self, ctx: &Ctx<'_>, j: &mut Journal<'_>) -> Result<CommandOutcome> {
        let old = match course_arg(ctx) {
            Ok(k) => k,
            Err(o) => return Ok(o),
        };
        let new = arg(ctx, "shortname").unwrap_or_default();
        let new_id = arg(ctx, "idnumber").unwrap_or(new);
        if old == new || old == new_id {
            return Ok(CommandOutcome::Failed(format!(
                "the new version needs its own shortname and idnumber (args.course {old} is the course it replaces)"
            )));
        }
        let restored = match Job::named(ctx, "restore") {
            Ok(job) => restore(&job, j)?,
            Err(o) => return Ok(o),
        };
        match restored {
            Ok(CommandOutcome::Done(_)) => {}
            Ok(other) | Err(other) => return Ok(other),
        }
        let note = format!("{new} (idnumber {new_id}) is live");
        let keep_backup = ctx
            .args
            .get("keep_backup")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let job = match Job::named(ctx, "retire") {
            Ok(j) => j,
            Err(o) => return Ok(o),
        };
        Ok(
            match guarded_delete(&job, j, &old, keep_backup, &format!(" (replaced by {new})"))? {
                Ok(CommandOutcome::Done(retired)) => {
                    CommandOutcome::Done(format!("{note}; {retired}"))
                }
                Ok(other) | Err(other) => match other {
                    CommandOutcome::Waiting { reason, retry_at } => CommandOutcome::Waiting {
                        reason: format!("{new} is live; retiring {old}: {reason}"),
                        retry_at,
                    },
                    o => o,
                },
            },
        )
    }
}
