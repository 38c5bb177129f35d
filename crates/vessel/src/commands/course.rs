//! The course commands: `hide_course`, `delete_course` (guarded) and `restore_course`.
//!
//! Courses are looked up and changed through the web services ([`moodle::ws`]); backups,
//! restores and deletions go through Moodle's CLI scripts ([`moodle::cli`]), whose
//! success is decided by their output markers and by looking at the result, never by the exit
//! code alone. Each command keeps a small state file `STATE_DIR/reports/COMMAND_ID.course.json`
//! written before each step with an outside effect, so that a rerun after a crash knows what
//! was done: a restore cut short is detected and its half-built course deleted before trying
//! again; a deletion whose course is gone is finished.
//!
//! `delete_course` is guarded (law 3): the course is hidden, a capture is asked for and awaited,
//! then the command waits until shore has acknowledged every captured record of the course; a
//! final backup with user data is written (kept `[moodle] keep_backups`); only then is the course
//! deleted, and its absence checked.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Command, Ctx};
use crate::store::{CommandOutcome, Result, Tx};
use moodle::cli::{Cli, CliError, Run};
use moodle::ws::{Params, Safety, Ws, WsError};

/// A course as the web services show it.
#[derive(Debug, Clone)]
struct Course {
    id: i64,
    shortname: String,
    idnumber: String,
    visible: bool,
}

impl Course {
    /// The key progress records carry: idnumber, else shortname.
    fn key(&self) -> &str {
        if self.idnumber.is_empty() {
            &self.shortname
        } else {
            &self.idnumber
        }
    }
}

/// What a course command has done so far (survives crashes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    course_id: Option<i64>,
    hidden_at: Option<i64>,
    backup: Option<String>,
    /// A restore was started when the highest course id was this.
    restoring_above: Option<i64>,
    /// The capture counter when the course was hidden.
    captures_at_hide: Option<u64>,
    mbz_sha256: Option<String>,
    delete_attempts: u32,
}

struct Job<'c, 'a> {
    ctx: &'c Ctx<'a>,
    ws: Ws,
    state: PathBuf,
}

type Step<T> = std::result::Result<T, CommandOutcome>;

fn wait(ctx: &Ctx<'_>, secs: i64, reason: impl Into<String>) -> CommandOutcome {
    CommandOutcome::Waiting {
        reason: reason.into(),
        retry_at: ctx.now + secs,
    }
}

impl<'c, 'a> Job<'c, 'a> {
    fn new(ctx: &'c Ctx<'a>) -> Step<Self> {
        Self::named(ctx, "course")
    }

    /// A job whose state file is `COMMAND_ID.{part}.json` (a command with two parts).
    fn named(ctx: &'c Ctx<'a>, part: &str) -> Step<Self> {
        let ws = ctx.moodle(300)?;
        let safe = ctx.safe_id();
        std::fs::create_dir_all(ctx.reports_dir)
            .map_err(|e| wait(ctx, 300, format!("{}: {e}", ctx.reports_dir.display())))?;
        Ok(Self {
            ctx,
            ws,
            state: ctx.reports_dir.join(format!("{safe}.{part}.json")),
        })
    }

    fn cli(&self) -> Step<Cli<'c>> {
        match self.ctx.moodle_cli {
            Some(s) => Ok(Cli::new(s, self.ctx.keepalive)),
            None => Err(wait(
                self.ctx,
                300,
                "Moodle's CLI is not configured: set moodle_dir (and php, if not /usr/bin/php) under [moodle] in agent.toml, then restart the agent",
            )),
        }
    }

    fn load(&self) -> Progress {
        std::fs::read(&self.state)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, p: &Progress) -> Step<()> {
        let bytes = serde_json::to_vec(p).map_err(|e| wait(self.ctx, 60, e.to_string()))?;
        base::fsutil::atomic_write(&self.state, &bytes)
            .map_err(|e| wait(self.ctx, 60, format!("{}: {e}", self.state.display())))
    }

    fn done(&self, note: String) -> CommandOutcome {
        let _ = std::fs::remove_file(&self.state);
        CommandOutcome::Done(note)
    }

    fn ws_err(&self, e: WsError) -> CommandOutcome {
        wait(self.ctx, 300, e.to_string())
    }

    fn cli_err(&self, e: CliError) -> CommandOutcome {
        wait(self.ctx, 300, e.to_string())
    }

    fn call(&self, f: &str, p: &Params, s: Safety) -> Step<Value> {
        self.ws.call(f, p, s).map_err(|e| self.ws_err(e))
    }

    fn courses_by(&self, field: &str, value: &str) -> Step<Vec<Course>> {
        let mut p = Params::new();
        if !field.is_empty() {
            p = p.set("field", field).set("value", value);
        }
        let reply = self.call("core_course_get_courses_by_field", &p, Safety::Read)?;
        Ok(reply["courses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| Course {
                id: c["id"].as_i64().unwrap_or_default(),
                shortname: c["shortname"].as_str().unwrap_or_default().to_string(),
                idnumber: c["idnumber"].as_str().unwrap_or_default().to_string(),
                visible: c["visible"].as_i64().unwrap_or(1) != 0,
            })
            .collect())
    }

    /// The course by idnumber, else by shortname.
    fn find(&self, key: &str) -> Step<Option<Course>> {
        if let Some(c) = self.courses_by("idnumber", key)?.into_iter().next() {
            return Ok(Some(c));
        }
        Ok(self
            .courses_by("shortname", key)?
            .into_iter()
            .find(|c| c.shortname == key))
    }

    fn by_id(&self, id: i64) -> Step<Option<Course>> {
        Ok(self.courses_by("id", &id.to_string())?.into_iter().next())
    }

    fn update(&self, id: i64, fields: &[(&str, String)]) -> Step<()> {
        let mut p = Params::new();
        p.field("courses", 0, "id", id);
        for (k, v) in fields {
            p.field("courses", 0, k, v);
        }
        match self
            .ws
            .call("core_course_update_courses", &p, Safety::Write)
        {
            Ok(_) => Ok(()),
            Err(e @ WsError::Moodle { .. })
                if !e.is_maintenance() && e.errorcode() != Some("invalidtoken") =>
            {
                Err(CommandOutcome::Failed(format!(
                    "Moodle refused to change course {id}: {e}"
                )))
            }
            Err(e) => Err(self.ws_err(e)),
        }
    }

    fn run_cli(&self, script: &str, args: &[String]) -> Step<Run> {
        self.cli()?.run(script, args).map_err(|e| self.cli_err(e))
    }

    fn hide(&self, c: &Course) -> Step<()> {
        if c.visible {
            self.update(c.id, &[("visible", "0".into())])?;
        }
        Ok(())
    }

    fn backup_dir(&self) -> PathBuf {
        self.ctx
            .moodle_cli
            .and_then(|s| s.backup_dir.clone())
            .unwrap_or_else(|| self.ctx.state_dir.join("backups"))
    }

    /// Writes a backup of course `id` and returns its path, checked to exist.
    fn backup(&self, id: i64) -> Step<PathBuf> {
        let dir = self.backup_dir();
        std::fs::create_dir_all(&dir).map_err(|e| {
            wait(
                self.ctx,
                300,
                format!("backup directory {}: {e}", dir.display()),
            )
        })?;
        let run = self.run_cli(
            "backup.php",
            &[
                format!("--courseid={id}"),
                format!("--destination={}", dir.display()),
            ],
        )?;
        let written = run.after("Writing ").map(PathBuf::from);
        match written {
            // Moodle names a backup without user data `...-nu.mbz` (the site's backup default
            // backup_general_users = 0): no good as the last record of learners' work.
            Some(p) if p.to_string_lossy().ends_with("-nu.mbz") => {
                let _ = std::fs::remove_file(&p);
                Err(wait(
                    self.ctx,
                    3600,
                    "the final backup came without user data: the site's backup default excludes users. Turn it on (php admin/cli/cfg.php --component=backup --name=backup_general_users --set=1); the course is not deleted before",
                ))
            }
            Some(p) if run.stdout.contains("Backup completed.") && file_ok(&p) => Ok(p),
            _ => Err(wait(
                self.ctx,
                600,
                format!(
                    "the final backup was not written ({}); check that Moodle's user can write to {}",
                    run.describe(),
                    dir.display()
                ),
            )),
        }
    }

    fn prune_backups(&self) {
        let keep = self.ctx.moodle_cli.map_or(30 * 86_400, |s| s.keep_backups);
        let Ok(entries) = std::fs::read_dir(self.backup_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > keep);
            if old && name.starts_with("backup-moodle2-") && name.ends_with(".mbz") {
                tracing::info!(file = %name, "removing a final backup past keep_backups");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Deletes course `id` through the CLI; Ok(true) when it is verified gone.
    fn delete(&self, id: i64) -> Step<(bool, Run)> {
        let run = self.run_cli(
            "delete_course.php",
            &[format!("--courseid={id}"), "--non-interactive".into()],
        )?;
        base::failpoint::hit("course.after-delete");
        let gone = self.by_id(id)?.is_none();
        Ok((gone, run))
    }
}

fn file_ok(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() > 0)
}

fn arg<'x>(ctx: &'x Ctx<'_>, name: &str) -> Option<&'x str> {
    ctx.args
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn course_arg(ctx: &Ctx<'_>) -> Step<String> {
    arg(ctx, "course").map(str::to_string).ok_or_else(|| {
        CommandOutcome::Failed("args.course is missing: the course's idnumber or shortname".into())
    })
}

fn outcome(r: Step<CommandOutcome>) -> CommandOutcome {
    r.unwrap_or_else(|o| o)
}

/// `hide_course`: the course disappears from learners' view; nothing is deleted.
pub struct HideCourse;

impl Command for HideCourse {
    fn kind(&self) -> &'static str {
        "hide_course"
    }

    fn run(&self, ctx: &Ctx<'_>, _tx: &Tx<'_>) -> Result<CommandOutcome> {
        Ok(outcome((|| {
            let key = course_arg(ctx)?;
            let job = Job::new(ctx)?;
            let Some(c) = job.find(&key)? else {
                return Ok(job.done(format!("no course {key} on this Moodle: nothing to hide")));
            };
            job.hide(&c)?;
            match job.by_id(c.id)? {
                Some(now) if !now.visible => {
                    Ok(job.done(format!("course {key} (id {}) hidden", c.id)))
                }
                _ => Err(wait(
                    ctx,
                    300,
                    format!("course {key} still shows as visible after the change; trying again"),
                )),
            }
        })()))
    }
}

/// `delete_course`, guarded by shore's acknowledgement of all the course's progress.
pub struct DeleteCourse;

impl Command for DeleteCourse {
    fn kind(&self) -> &'static str {
        "delete_course"
    }

    fn run(&self, ctx: &Ctx<'_>, tx: &Tx<'_>) -> Result<CommandOutcome> {
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
        guarded_delete(&job, tx, &key, keep_backup, "").map(outcome)
    }
}

/// The guard and the deletion, shared with a future `replace_course`. `Ok(Err(outcome))` is a
/// wait or failure; store errors propagate.
fn guarded_delete(
    job: &Job<'_, '_>,
    tx: &Tx<'_>,
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
    let captures: u64 = tx
        .fact("captures")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    p.hidden_at.get_or_insert(ctx.now);
    let at_hide = *p.captures_at_hide.get_or_insert(captures);
    if let Err(o) = job.save(&p) {
        return Ok(Err(o));
    }
    // 2. A capture after hiding records the course's last progress.
    if ctx.capture_configured && captures <= at_hide {
        tx.set_fact("capture_requested_at", &ctx.now.to_string())?;
        return Ok(Err(wait(
            ctx,
            5,
            format!(
                "course {key} hidden; waiting for a progress capture to record its last progress before it is deleted"
            ),
        )));
    }
    // 3. Shore must hold every record of the course.
    let (backlog, learners) = tx.course_impact(c.key())?;
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

/// `restore_course`: a course from an `.mbz` in the bundle, with the wanted names.
pub struct RestoreCourse;

impl Command for RestoreCourse {
    fn kind(&self) -> &'static str {
        "restore_course"
    }

    fn run(&self, ctx: &Ctx<'_>, tx: &Tx<'_>) -> Result<CommandOutcome> {
        let job = match Job::new(ctx) {
            Ok(j) => j,
            Err(o) => return Ok(o),
        };
        restore(&job, tx).map(outcome)
    }
}

fn mbz_path(ctx: &Ctx<'_>) -> Step<PathBuf> {
    let names = || {
        ctx.files
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (arg(ctx, "file"), ctx.files.as_slice()) {
        (Some(w), files) => files
            .iter()
            .find(|(n, _)| n == w)
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

fn restore(job: &Job<'_, '_>, tx: &Tx<'_>) -> Result<Step<CommandOutcome>> {
    Ok((|| -> Step<CommandOutcome> {
        let ctx = job.ctx;
        let mbz = mbz_path(ctx)?;
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
        let sha = moodle::users::import::file_sha256(&mbz)
            .map_err(|e| wait(ctx, 300, format!("{}: {e}", mbz.display())))?;
        let mut p = job.load();
        // The same backup already restored for this course: nothing to do.
        let fact = format!("restored:{idnumber}");
        let before = tx.fact(&fact).map_err(|e| wait(ctx, 60, e.to_string()))?;
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
        // A restore cut short by a crash: remove what it built, then start again.
        if let (Some(above), None) = (p.restoring_above, p.course_id) {
            for c in job.courses_by("", "")?.into_iter().filter(|c| c.id > above) {
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
        tx.set_fact(&fact, &sha)
            .map_err(|e| wait(ctx, 60, e.to_string()))?;
        let file = mbz
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
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

    fn run(&self, ctx: &Ctx<'_>, tx: &Tx<'_>) -> Result<CommandOutcome> {
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
            Ok(job) => restore(&job, tx)?,
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
            match guarded_delete(
                &job,
                tx,
                &old,
                keep_backup,
                &format!(" (replaced by {new})"),
            )? {
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
