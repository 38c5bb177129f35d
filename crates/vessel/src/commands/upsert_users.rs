//! `upsert_users`: seafarer accounts from a CSV in the bundle, created or updated in the ship's
//! Moodle through its web services, and enrolled in the courses each row names.
//!
//! Arguments: `file` (the member name; default: the command's only file), `chunk` (users per
//! call; default `[moodle] user_chunk`), `role_id` (default 5, student). The import is
//! [`moodle::users::import`]: the whole file is validated and checked against the site's users
//! before anything is written; rows with problems are refused and reported, the others applied.
//! Progress is kept in `STATE_DIR/reports/COMMAND_ID.import-progress.json` after every chunk,
//! so an agent killed mid-import continues after the last finished chunk and creates nobody
//! twice. Moodle unreachable, in maintenance or refusing the token: the command waits and tries
//! again (its progress kept). The per-row report is `STATE_DIR/reports/COMMAND_ID.users-report.json`.

use std::path::PathBuf;

use super::{Command, Ctx, Journal};
use crate::store::{CommandOutcome, Result};
use moodle::users::import::{self, Observer, Options, Progress};
use moodle::users::validate;

/// The `upsert_users` command.
pub struct UpsertUsers;

/// Seconds before a waiting import looks again.
const RETRY: i64 = 300;

struct Keepalive<'a>(&'a dyn Fn());

impl Observer for Keepalive<'_> {
    fn progress(&mut self, _: &str, _: u64, _: u64) {
        (self.0)();
    }
}

impl Command for UpsertUsers {
    fn kind(&self) -> &'static str {
        "upsert_users"
    }

    fn run(&self, ctx: &Ctx<'_>, _j: &mut Journal<'_>) -> Result<CommandOutcome> {
        Ok(self.apply(ctx))
    }
}

impl UpsertUsers {
    fn apply(&self, ctx: &Ctx<'_>) -> CommandOutcome {
        let wait = |reason: String| CommandOutcome::Waiting {
            reason,
            retry_at: ctx.now + RETRY,
        };
        let Some(settings) = ctx.moodle_ws else {
            return wait("Moodle's web services are not configured: set url and token_file under [moodle] in agent.toml, then restart the agent".into());
        };
        let wanted = ctx.args.get("file").and_then(|v| v.as_str());
        let csv: PathBuf = match (wanted, ctx.files.as_slice()) {
            (Some(w), files) => match files.iter().find(|(n, _)| n == w) {
                Some((_, p)) => p.clone(),
                None => {
                    return CommandOutcome::Failed(format!(
                        "the bundle has no file {w:?} (it has: {})",
                        names(ctx)
                    ));
                }
            },
            (None, [(_, p)]) => p.clone(),
            (None, _) => {
                return CommandOutcome::Failed(format!(
                    "name the CSV with the argument file = \"...\" (the bundle has: {})",
                    names(ctx)
                ));
            }
        };
        let ws = match ctx.moodle(RETRY) {
            Ok(w) => w,
            Err(o) => return o,
        };
        let opts = Options {
            chunk: ctx
                .args
                .get("chunk")
                .and_then(serde_json::Value::as_u64)
                .map_or(settings.user_chunk, |c| c.clamp(1, 5000) as usize),
            dry_run: false,
            role_id: ctx
                .args
                .get("role_id")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(5),
        };
        let safe = ctx.safe_id();
        let progress_path = ctx.reports_dir.join(format!("{safe}.import-progress.json"));
        let report_path = ctx.reports_dir.join(format!("{safe}.users-report.json"));
        if let Err(e) = std::fs::create_dir_all(ctx.reports_dir) {
            return wait(format!("{}: {e}", ctx.reports_dir.display()));
        }
        let sha = match base::fsutil::file_sha256(&csv) {
            Ok(s) => s,
            Err(e) => return wait(format!("{}: {e}", csv.display())),
        };
        let mut progress = std::fs::read(&progress_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Progress>(&b).ok())
            .filter(|p| p.file_sha256 == sha)
            .unwrap_or(Progress {
                file_sha256: sha,
                moodle: ws.url().to_string(),
                chunk: opts.chunk,
                ..Progress::default()
            });
        let mut v = match validate::validate(&csv) {
            Ok(v) => v,
            Err(e) => return wait(format!("{}: {e}", csv.display())),
        };
        if v.rows == 0 || v.errors.iter().any(|e| e.row == 1) {
            let first = v
                .errors
                .first()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            return CommandOutcome::Failed(format!(
                "the CSV's header is wrong or it has no rows ({first}); nothing was sent to Moodle"
            ));
        }
        let mut save = |p: &Progress| -> std::io::Result<()> {
            let bytes = serde_json::to_vec(p).map_err(std::io::Error::other)?;
            base::fsutil::atomic_write(&progress_path, &bytes)
        };
        // Moodle's upload CLI on this host when its code is configured (about three times
        // faster than the web service), else the web service.
        let cli = ctx
            .moodle_cli
            .filter(|c| c.upload_cli)
            .map(|c| moodle::cli::Cli::new(c, ctx.keepalive));
        let workers = ctx.moodle_cli.map_or(1, |c| c.upload_workers);
        let via = match &cli {
            Some(cli) => import::Via::UploadCli {
                cli,
                dir: ctx.reports_dir,
                workers,
            },
            None => import::Via::WebService,
        };
        let result = import::run(
            &ws,
            &csv,
            &mut v,
            &opts,
            &mut progress,
            &mut save,
            &mut Keepalive(ctx.keepalive),
            &via,
        );
        let summary = match result {
            Ok(s) => s,
            Err(e) => {
                return wait(format!(
                    "import paused after row {}: {e}",
                    progress.next_row.saturating_sub(1).max(1)
                ));
            }
        };
        if let Err(e) = import::write_report(&report_path, &summary) {
            tracing::warn!(error = %e, path = %report_path.display(), "could not write the users report");
        }
        let _ = std::fs::remove_file(&progress_path);
        let refused: std::collections::HashSet<u64> =
            summary.errors.iter().map(|e| e.row).collect();
        let mut note = format!(
            "{} rows: {} users created, {} updated, {} unchanged (not written), {} enrolments",
            summary.rows, summary.created, summary.updated, summary.unchanged, summary.enrolments
        );
        if !refused.is_empty() {
            let first = &summary.errors[0];
            note.push_str(&format!(
                "; {} rows refused (first: row {} {}: {}); report: {}",
                refused.len(),
                first.row,
                first.field,
                first.message,
                report_path.display()
            ));
        }
        CommandOutcome::Done(note)
    }
}

fn names(ctx: &Ctx<'_>) -> String {
    let n: Vec<&str> = ctx.files.iter().map(|(n, _)| n.as_str()).collect();
    if n.is_empty() {
        "no files".into()
    } else {
        n.join(", ")
    }
}

/// `suspend_users`: accounts suspended (or, with a `suspended` column of 0, reactivated) by
/// username or idnumber, from a CSV in the bundle. Unknown accounts are reported, not errors.
pub struct SuspendUsers;

impl Command for SuspendUsers {
    fn kind(&self) -> &'static str {
        "suspend_users"
    }

    fn run(&self, ctx: &Ctx<'_>, _j: &mut Journal<'_>) -> Result<CommandOutcome> {
        Ok(suspend(ctx).unwrap_or_else(|o| o))
    }
}

fn suspend(ctx: &Ctx<'_>) -> std::result::Result<CommandOutcome, CommandOutcome> {
    let wait = |reason: String| CommandOutcome::Waiting {
        reason,
        retry_at: ctx.now + RETRY,
    };
    let settings = ctx.moodle_ws.ok_or_else(|| {
        wait("Moodle's web services are not configured: set url and token_file under [moodle] in agent.toml, then restart the agent".into())
    })?;
    let csv = match ctx.files.as_slice() {
        [(_, p)] => p.clone(),
        _ => {
            return Err(CommandOutcome::Failed(format!(
                "suspend_users takes one CSV file (the bundle has: {})",
                names(ctx)
            )));
        }
    };
    let ws = ctx.moodle(RETRY)?;
    let mut reader = csv::ReaderBuilder::new()
        .from_path(&csv)
        .map_err(|e| CommandOutcome::Failed(format!("the CSV cannot be read: {e}")))?;
    let header = base::csvrow::header_names(
        reader
            .headers()
            .map_err(|e| CommandOutcome::Failed(format!("the CSV header cannot be read: {e}")))?
            .as_byte_record(),
    );
    let field = ["username", "idnumber"]
        .into_iter()
        .find(|f| header.iter().any(|h| h == f))
        .ok_or_else(|| {
            CommandOutcome::Failed("the CSV needs a username or an idnumber column".into())
        })?;
    let key_col = header.iter().position(|h| h == field).unwrap_or(0);
    let flag_col = header.iter().position(|h| h == "suspended");
    let mut wanted: Vec<(String, bool)> = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| CommandOutcome::Failed(format!("unreadable CSV: {e}")))?;
        let key = rec.get(key_col).unwrap_or("").trim().to_string();
        let flag = flag_col.and_then(|i| rec.get(i)).map(str::trim) != Some("0");
        if !key.is_empty() {
            wanted.push((key, flag));
        }
    }
    let (mut changed, mut unknown) = (0u64, Vec::new());
    for chunk in wanted.chunks(settings.user_chunk.max(1)) {
        let mut p = moodle::ws::Params::new().set("field", field);
        for (i, (k, _)) in chunk.iter().enumerate() {
            p = p.item("values", i, k);
        }
        let found = ws
            .call("core_user_get_users_by_field", &p, moodle::ws::Safety::Read)
            .map_err(|e| wait(e.to_string()))?;
        let ids: std::collections::HashMap<String, i64> = found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| Some((u[field].as_str()?.to_string(), u["id"].as_i64()?)))
            .collect();
        let mut p = moodle::ws::Params::new();
        let mut n = 0;
        for (k, flag) in chunk {
            match ids.get(k) {
                Some(id) => {
                    p.field("users", n, "id", id);
                    p.field("users", n, "suspended", u8::from(*flag));
                    n += 1;
                }
                None => unknown.push(k.clone()),
            }
        }
        if n > 0 {
            // Setting a flag is idempotent: a repeat after a lost reply does no harm.
            ws.call("core_user_update_users", &p, moodle::ws::Safety::Read)
                .map_err(|e| wait(e.to_string()))?;
            changed += n as u64;
        }
        (ctx.keepalive)();
    }
    let mut note = format!("{changed} accounts set (by {field})");
    if !unknown.is_empty() {
        note.push_str(&format!(
            "; {} not on this Moodle: {}",
            unknown.len(),
            unknown
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(CommandOutcome::Done(note))
}
