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
//!
//! Files: this one (the shared [`Job`] and `hide_course`), [`delete`] (the guarded deletion),
//! [`restore`] (`restore_course`, and `replace_course`: a restore, then the old course under the
//! same guard).

mod delete;
mod restore;

pub use delete::DeleteCourse;
pub use restore::{ReplaceCourse, RestoreCourse};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Command, Ctx, Journal};
use crate::store::{CommandOutcome, Result};
use moodle::cli::{Cli, CliError, Run};
use moodle::ws::{Params, Safety, Ws, WsError};

/// A course as the web services show it.
#[derive(Debug, Clone)]
struct Course {
    id: i64,
    shortname: String,
    idnumber: String,
    category: i64,
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
                category: c["categoryid"].as_i64().unwrap_or_default(),
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

    fn run(&self, ctx: &Ctx<'_>, _j: &mut Journal<'_>) -> Result<CommandOutcome> {
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
