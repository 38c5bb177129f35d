//! `import_progress`: historical or transferred activity completions from shore, applied to the
//! ship's Moodle as completion overrides, and never sent back (law 2).
//!
//! The CSV has the header `learner,course,activity,state` and optionally `time` (any order, a
//! byte-order mark tolerated): the learner's idnumber (or username), the course's idnumber (or
//! shortname), the activity's key as capture writes it (course-module idnumber, else
//! `MODNAME:NAME`), the state, 1 (complete) or 0 (incomplete), and when the learner completed
//! it (Unix seconds; empty or absent: unknown). Keys are resolved to this Moodle's ids through the web
//! services; a row whose learner, course or activity this Moodle does not have is quarantined
//! with its reason (in the report, never applied, never dropped silently).
//!
//! Two steps, so that nothing applied can be captured as new progress (law 7): the first run
//! records every row it will apply in the journal's `imported` table, in the transaction that
//! ends it (`waiting`, retried at once); the second applies them and finishes. Where the ship's
//! Moodle has the companion plugin `local_vesselsync` on the agent's service, rows go through it
//! in batches **with their time**, so the ship shows the date the seafarer really completed
//! (newer progress already on board is kept: `kept_newer` in the report); elsewhere they are
//! completion overrides (`core_completion_override_activity_completion_status`, stamped with
//! the time of the import). Both are safe to repeat. A row already in that state on board is
//! neither recorded nor applied. The report is
//! `STATE_DIR/reports/COMMAND_ID.import-report.json`.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lookup::{CourseInfo, Step, connect, course_info, users, wait};
use super::{Command, Ctx, Journal};
use crate::store::{CommandOutcome, Result};
use base::csvrow::{RowError, bad};
use moodle::ws::{Params, Safety, Ws};
use wire::progress::{Record, RecordKind};

/// The `import_progress` command.
pub struct ImportProgress;

/// A row resolved to local ids, waiting to be applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Apply {
    row: u64,
    userid: i64,
    cmid: i64,
    state: i64,
    /// When the learner completed it (0: unknown).
    #[serde(default)]
    time: i64,
    /// Learner, course and activity keys on this Moodle (for the plugin).
    #[serde(default)]
    keys: (String, String, String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Plan {
    apply: Vec<Apply>,
    already: u64,
    quarantined: Vec<RowError>,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    applied: u64,
    /// Through the companion plugin, with the rows' own time.
    with_original_time: u64,
    /// Rows the plugin did not apply because newer progress was already on board.
    kept_newer: u64,
    already_so: u64,
    quarantined: &'a [RowError],
    refused_by_moodle: &'a [RowError],
}

impl Command for ImportProgress {
    fn kind(&self) -> &'static str {
        "import_progress"
    }

    fn run(&self, ctx: &Ctx<'_>, j: &mut Journal<'_>) -> Result<CommandOutcome> {
        let safe = ctx.safe_id();
        let plan_path = ctx.reports_dir.join(format!("{safe}.import-plan.json"));
        let marker = format!("import_recorded:{}", ctx.cmd.cmd_id);
        let ws = match connect(ctx) {
            Ok(w) => w,
            Err(o) => return Ok(o),
        };
        if j.with(|tx| tx.fact(&marker))?.is_some() {
            // Second step: the rows are recorded as imported; apply them.
            let plan: Plan = match std::fs::read(&plan_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(p) => p,
                None => {
                    j.with(|tx| tx.drop_fact(&marker))?;
                    return Ok(wait(
                        ctx,
                        0,
                        "the import plan was lost; resolving the rows again",
                    ));
                }
            };
            let outcome = apply(ctx, &ws, &plan, &safe);
            if matches!(outcome, CommandOutcome::Done(_)) {
                j.with(|tx| tx.drop_fact(&marker))?;
                let _ = std::fs::remove_file(&plan_path);
            }
            return Ok(outcome);
        }
        // First step: resolve, record as imported, save the plan.
        let plan = match resolve(ctx, &ws) {
            Ok(p) => p,
            Err(o) => return Ok(o),
        };
        // One transaction: the rows recorded as imported, the plan saved beside the journal,
        // and the marker that says so. Moodle is not asked anything inside it.
        let mut plan = plan;
        let recorded = j.with(|tx| {
            let mut keep = Vec::with_capacity(plan.apply.len());
            for (a, rec) in std::mem::take(&mut plan.apply) {
                if tx.captured_value(RecordKind::ActivityCompletion.code(), a.userid, a.cmid)?
                    == Some(a.state.to_string())
                {
                    plan.already += 1;
                    continue;
                }
                tx.record_imported(&rec, &ctx.cmd.cmd_id, ctx.now)?;
                keep.push(a);
            }
            let plan = Plan {
                apply: keep,
                already: plan.already,
                quarantined: std::mem::take(&mut plan.quarantined),
            };
            let saved = serde_json::to_vec(&plan)
                .map_err(std::io::Error::other)
                .and_then(|b| {
                    std::fs::create_dir_all(ctx.reports_dir)?;
                    base::fsutil::atomic_write(&plan_path, &b)
                });
            if let Err(e) = saved {
                // Without the marker the next run resolves again; the rows recorded meanwhile
                // are recorded again (an upsert), as before.
                return Ok(Err(format!("{}: {e}", plan_path.display())));
            }
            tx.set_fact(&marker, &ctx.now.to_string())?;
            Ok(Ok(plan))
        })?;
        let plan = match recorded {
            Ok(p) => p,
            Err(why) => return Ok(wait(ctx, 300, why)),
        };
        Ok(wait(
            ctx,
            0,
            format!(
                "{} rows recorded as imported (so capture never sends them back); applying them next",
                plan.apply.len()
            ),
        ))
    }
}

struct ResolvedPlan {
    apply: Vec<(Apply, Record)>,
    already: u64,
    quarantined: Vec<RowError>,
}

fn csv_path(ctx: &Ctx<'_>) -> Step<PathBuf> {
    match (
        ctx.args.get("file").and_then(Value::as_str),
        ctx.files.as_slice(),
    ) {
        (Some(w), files) => files
            .iter()
            .find(|(n, _)| n == w)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| CommandOutcome::Failed(format!("the bundle has no file {w:?}"))),
        (None, [(_, p)]) => Ok(p.clone()),
        (None, _) => Err(CommandOutcome::Failed(
            "name the CSV with args.file (the command has several files or none)".into(),
        )),
    }
}

/// One CSV row as written.
struct Wanted {
    row: u64,
    learner: String,
    course: String,
    activity: String,
    state: i64,
    time: i64,
}

/// The latest completion time an import takes: a day past the ship's clock (clocks drift).
const FUTURE_SLACK: i64 = 86_400;

fn read_csv(path: &std::path::Path, now: i64) -> Step<(Vec<Wanted>, Vec<RowError>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| CommandOutcome::Failed(format!("the CSV cannot be read: {e}")))?;
    let mut rec = csv::StringRecord::new();
    let names: Vec<String> =
        match reader.read_record(&mut rec) {
            Ok(true) => base::csvrow::header_names(rec.as_byte_record()),
            _ => return Err(CommandOutcome::Failed(
                "the CSV is empty or not UTF-8: expected a header learner,course,activity,state"
                    .into(),
            )),
        };
    let col = |n: &str| names.iter().position(|c| c == n);
    let ct = col("time");
    let (Some(cl), Some(cc), Some(ca), Some(cs)) =
        (col("learner"), col("course"), col("activity"), col("state"))
    else {
        return Err(CommandOutcome::Failed(format!(
            "the CSV header is {:?}; it must name learner, course, activity and state",
            names.join(",")
        )));
    };
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut row = 1u64;
    loop {
        match reader.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                row += 1;
                let f = |i: usize| rec.get(i).unwrap_or("").trim().to_string();
                let (learner, course, activity, state) = (f(cl), f(cc), f(ca), f(cs));
                let missing = [
                    ("learner", &learner),
                    ("course", &course),
                    ("activity", &activity),
                ]
                .into_iter()
                .find(|(_, v)| v.is_empty());
                if let Some((field, _)) = missing {
                    errors.push(bad(row, field, "", "is required and empty"));
                    continue;
                }
                let Some(state) = state.parse::<i64>().ok().filter(|s| *s == 0 || *s == 1) else {
                    errors.push(bad(
                        row,
                        "state",
                        &state,
                        "must be 1 (complete) or 0 (incomplete)",
                    ));
                    continue;
                };
                let time_text = ct.map(f).unwrap_or_default();
                let time = if time_text.is_empty() {
                    0
                } else {
                    match time_text.parse::<i64>() {
                        Ok(t) if t > 0 && t <= now + FUTURE_SLACK => t,
                        _ => {
                            errors.push(bad(
                                row,
                                "time",
                                &time_text,
                                "must be Unix seconds, not in the future (or empty)",
                            ));
                            continue;
                        }
                    }
                };
                rows.push(Wanted {
                    row,
                    learner,
                    course,
                    activity,
                    state,
                    time,
                });
            }
            Err(e) => {
                row += 1;
                errors.push(bad(
                    row,
                    "(row)",
                    "",
                    &format!("unreadable CSV (not UTF-8?): {e}"),
                ));
            }
        }
    }
    Ok((rows, errors))
}

fn resolve(ctx: &Ctx<'_>, ws: &Ws) -> Step<ResolvedPlan> {
    let path = csv_path(ctx)?;
    let (rows, mut quarantined) = read_csv(&path, ctx.now)?;
    let mut courses: HashMap<String, Option<CourseInfo>> = HashMap::new();
    let wanted: Vec<&str> = rows.iter().map(|r| r.learner.as_str()).collect();
    let learners = users(ctx, ws, &wanted)?;
    let mut apply = Vec::new();
    for w in rows {
        if !courses.contains_key(&w.course) {
            let info = course_info(ctx, ws, &w.course)?;
            courses.insert(w.course.clone(), info);
            (ctx.keepalive)();
        }
        let Some(Some(course)) = courses.get(&w.course) else {
            quarantined.push(bad(
                w.row,
                "course",
                &w.course,
                "no such course on this Moodle",
            ));
            continue;
        };
        let Some(act) = course.activities.get(&w.activity) else {
            quarantined.push(bad(
                w.row,
                "activity",
                &w.activity,
                &format!("no such activity in course {} on this Moodle", course.key),
            ));
            continue;
        };
        let Some((userid, user)) = learners.get(&w.learner) else {
            quarantined.push(bad(
                w.row,
                "learner",
                &w.learner,
                "no such learner on this Moodle (by idnumber or username)",
            ));
            continue;
        };
        let rec = Record {
            kind: RecordKind::ActivityCompletion,
            user: user.clone(),
            course: course.key.clone(),
            item: act.key.clone(),
            user_legacy: String::new(),
            course_legacy: String::new(),
            item_legacy: String::new(),
            value: w.state.to_string(),
            time: 0,
        };
        apply.push((
            Apply {
                row: w.row,
                userid: *userid,
                cmid: act.cmid,
                state: w.state,
                time: w.time,
                keys: (user.clone(), course.key.clone(), act.key.clone()),
            },
            rec,
        ));
    }
    quarantined.sort_by_key(|e| e.row);
    Ok(ResolvedPlan {
        apply,
        already: 0,
        quarantined,
    })
}

/// Rows per call to the plugin.
const PLUGIN_BATCH: usize = 250;

/// What applying the rows came to.
#[derive(Default)]
struct Applied {
    applied: u64,
    with_time: u64,
    kept_newer: u64,
    refused: Vec<RowError>,
}

/// Applies the rows with a time through the companion plugin, in batches; the rows it leaves
/// (no time, or no plugin) come back for the core path. `Err`: Moodle did not answer.
fn apply_with_time<'a>(
    ws: &Ws,
    plan: &'a Plan,
    done: &mut Applied,
    keepalive: &dyn Fn(),
) -> std::result::Result<Vec<&'a Apply>, String> {
    let (timed, rest): (Vec<&Apply>, Vec<&Apply>) = plan
        .apply
        .iter()
        .partition(|a| a.time > 0 && !a.keys.0.is_empty());
    if timed.is_empty() || !moodle::plugin::offered(ws).unwrap_or(false) {
        return Ok(plan.apply.iter().collect());
    }
    for chunk in timed.chunks(PLUGIN_BATCH) {
        let mut p = Params::new();
        for (n, a) in chunk.iter().enumerate() {
            p.field("records", n, "ref", a.row);
            p.field("records", n, "kind", "completion");
            p.field("records", n, "user", &a.keys.0);
            p.field("records", n, "course", &a.keys.1);
            p.field("records", n, "activity", &a.keys.2);
            p.field("records", n, "value", a.state);
            p.field("records", n, "time", a.time);
            p.field("records", n, "source", "shore");
        }
        // Newer wins inside Moodle: safe to repeat after a lost reply.
        let reply = ws
            .call(moodle::plugin::APPLY, &p, Safety::Read)
            .map_err(|e| e.to_string())?;
        let by_row: HashMap<u64, &Value> = reply
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| Some((o["ref"].as_str()?.parse::<u64>().ok()?, o)))
            .collect();
        for a in chunk {
            let o = by_row.get(&a.row);
            match o.and_then(|o| o["outcome"].as_str()) {
                Some("applied") | Some("already") => {
                    done.applied += 1;
                    done.with_time += 1;
                }
                Some("older") | Some("tie") => done.kept_newer += 1,
                _ => done.refused.push(bad(
                    a.row,
                    "(row)",
                    "",
                    o.and_then(|o| o["detail"].as_str())
                        .unwrap_or("the plugin gave no outcome for this row"),
                )),
            }
        }
        keepalive();
    }
    Ok(rest)
}

fn apply(ctx: &Ctx<'_>, ws: &Ws, plan: &Plan, safe: &str) -> CommandOutcome {
    let mut done = Applied::default();
    let rest = match apply_with_time(ws, plan, &mut done, ctx.keepalive) {
        Ok(rest) => rest,
        Err(e) => {
            return wait(
                ctx,
                300,
                format!(
                    "applying the import through local_vesselsync: {e}; it is applied when Moodle answers"
                ),
            );
        }
    };
    let mut refused = std::mem::take(&mut done.refused);
    let mut applied = done.applied;
    for (i, a) in rest.into_iter().enumerate() {
        let p = Params::new()
            .set("userid", a.userid)
            .set("cmid", a.cmid)
            .set("newstate", a.state);
        // Setting a state is idempotent: safe to repeat after a lost reply.
        match ws.call(
            "core_completion_override_activity_completion_status",
            &p,
            Safety::Read,
        ) {
            Ok(_) => applied += 1,
            Err(e) if e.is_transient() || e.errorcode() == Some("invalidtoken") => {
                return wait(
                    ctx,
                    300,
                    format!(
                        "applying row {} of the import: {e}; the rest follows when Moodle answers",
                        a.row
                    ),
                );
            }
            Err(e) => refused.push(bad(a.row, "(row)", "", &e.to_string())),
        }
        if i % 50 == 0 {
            (ctx.keepalive)();
        }
    }
    let report_path = ctx.reports_dir.join(format!("{safe}.import-report.json"));
    let report = Report {
        applied,
        with_original_time: done.with_time,
        kept_newer: done.kept_newer,
        already_so: plan.already,
        quarantined: &plan.quarantined,
        refused_by_moodle: &refused,
    };
    if let Ok(b) = serde_json::to_vec_pretty(&report) {
        let _ = base::fsutil::atomic_write(&report_path, &b);
    }
    let mut note = if done.with_time > 0 || done.kept_newer > 0 {
        format!(
            "{applied} completions applied, {} of them with their original time through local_vesselsync (recorded as imported: never sent back), {} kept newer progress already on board, {} already so on board",
            done.with_time, done.kept_newer, plan.already
        )
    } else {
        format!(
            "{applied} completions applied as overrides (recorded as imported: never sent back), {} already so on board",
            plan.already
        )
    };
    if !plan.quarantined.is_empty() {
        let q = &plan.quarantined[0];
        note.push_str(&format!(
            "; {} rows quarantined (first: row {} {} {:?}: {})",
            plan.quarantined.len(),
            q.row,
            q.field,
            q.value,
            q.message
        ));
    }
    if !refused.is_empty() {
        note.push_str(&format!("; {} refused by Moodle", refused.len()));
    }
    note.push_str(&format!("; report: {}", report_path.display()));
    CommandOutcome::Done(note)
}
