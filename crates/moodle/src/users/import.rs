//! Importing validated seafarer rows into a Moodle through its web services.
//!
//! Three steps, nothing written before the second:
//! 1. the file is validated ([`super::validate`]);
//! 2. every valid row is checked against the site's existing users in chunks (username,
//!    email as written and in lower case, idnumber): a username that exists is an update unless
//!    its idnumber differs; an email or idnumber held by another account refuses the row; the
//!    courses named are looked up by shortname (with their learners, where the service offers
//!    `core_enrol_get_enrolled_users`); an account that already holds exactly what its row says
//!    (names, email, idnumber, auth and suspension as the file gives them, every course
//!    enrolled) is **unchanged** and is not written again, so a crew list sent whole again costs
//!    only the check;
//! 3. chunk by chunk, in file order: the chunk's usernames are looked up again (a chunk cut by a
//!    crash is finished, never doubled), new users are created in one call, existing ones
//!    updated in one call (the password only ever set on creation), and the rows' courses
//!    enrolled in one call. One bad user makes Moodle refuse a whole create call with a
//!    generic message, so a refused chunk is split in halves until every good user is created
//!    and the bad one is named. After each chunk the progress is saved atomically, so
//!    `--resume` continues after the last finished chunk.
//!
//! Through Moodle's upload CLI ([`Via::UploadCli`]) step 3 writes `workers` chunks at a time,
//! one run of the CLI each, all at once ([`super::upload`]). While one such step runs, the step
//! before it is checked (the CLI always exits 0): each row settled by the CLI's per-line report
//! or else looked up, every row the CLI did not add named with the CLI's own lines, and the
//! progress saved; a crash redoes at most the step that was running.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::site::{Existing, Timed, holds, known_enrolments};
pub use super::site::{ImportError, Progress};
use super::upload::{InFlight, Prepared};
use super::validate::{Row, Validation, valid_rows};
use crate::ws::{Params, Safety, Ws, WsError};
use base::csvrow::{RowError, bad};

/// How to import.
#[derive(Debug, Clone)]
pub struct Options {
    /// Users per web-service call.
    pub chunk: usize,
    /// Check everything against Moodle, write nothing.
    pub dry_run: bool,
    /// Role for enrolments (5 = student on a stock site).
    pub role_id: i64,
}

/// The result of an import (or a dry run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The CSV.
    pub file: String,
    /// Data rows in the file.
    pub rows: u64,
    /// Rows that passed every check.
    pub valid: u64,
    /// Users created (would be, in a dry run).
    pub created: u64,
    /// Users updated (would be, in a dry run).
    pub updated: u64,
    /// Rows whose account already held exactly what they say: not written.
    pub unchanged: u64,
    /// Enrolments sent (would be, in a dry run).
    pub enrolments: u64,
    /// A dry run.
    pub dry_run: bool,
    /// Web-service calls made.
    pub calls: u64,
    /// Seconds spent waiting on Moodle.
    pub moodle_seconds: f64,
    /// Seconds in all.
    pub total_seconds: f64,
    /// Every refused row, ordered by row.
    pub errors: Vec<RowError>,
}

/// What the import reports as it goes.
pub trait Observer {
    /// `done` of `total` valid rows finished.
    fn progress(&mut self, phase: &str, done: u64, total: u64);
}

/// An observer that says nothing.
pub struct Quiet;
impl Observer for Quiet {
    fn progress(&mut self, _: &str, _: u64, _: u64) {}
}

/// How users are written to Moodle.
pub enum Via<'a> {
    /// `core_user_create_users` / `core_user_update_users` / `enrol_manual_enrol_users`.
    WebService,
    /// Moodle's own upload CLI on the same host (about three times faster than the web service:
    /// `shared/moodle/users-import.md`), each chunk written as a CSV into `dir`; the result is
    /// checked through the web services, never taken from the exit code (it always exits 0).
    UploadCli {
        /// The CLI runner.
        cli: &'a crate::cli::Cli<'a>,
        /// Where the chunk's CSV is written (readable by Moodle's user).
        dir: &'a Path,
        /// Runs of the CLI at a time, each on its own chunk.
        workers: usize,
    },
}

/// Imports the valid rows of `csv` (already validated into `v`). `progress` is where a resumed
/// import starts; `save` is called after every finished chunk.
#[allow(clippy::too_many_arguments)]
pub fn run(
    ws: &Ws,
    csv: &Path,
    v: &mut Validation,
    opts: &Options,
    progress: &mut Progress,
    save: &mut dyn FnMut(&Progress) -> std::io::Result<()>,
    obs: &mut dyn Observer,
    via: &Via<'_>,
) -> Result<Summary, ImportError> {
    let started = Instant::now();
    let mut t = Timed {
        ws,
        waited: Duration::ZERO,
        calls: 0,
        plugin: None,
    };
    // The companion plugin answers the checks at a fraction of the core functions' cost.
    if v.courses.len() <= 1000
        && crate::plugin::offers(ws, crate::plugin::GET_USERS).unwrap_or(false)
    {
        t.plugin = Some(v.courses.iter().cloned().collect());
    }
    let chunk = opts.chunk.max(1);
    // The upload CLI writes `workers` chunks at once: one step of the import (and of its saved
    // progress) is then that many chunks.
    let step = match via {
        Via::UploadCli { workers, .. } => chunk * (*workers).max(1),
        Via::WebService => chunk,
    };
    // Courses by shortname.
    let mut course_ids: HashMap<String, i64> = HashMap::new();
    for c in &v.courses {
        let reply = t.call(
            "core_course_get_courses_by_field",
            &Params::new().set("field", "shortname").set("value", c),
            Safety::Read,
        )?;
        if let Some(id) = reply["courses"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["shortname"].as_str() == Some(c)))
            .and_then(|x| x["id"].as_i64())
        {
            course_ids.insert(c.clone(), id);
        }
    }
    // Who is enrolled in those courses already.
    let enrolled = known_enrolments(&mut t, &course_ids)?;
    let mut unchanged: HashSet<u64> = HashSet::new();
    // Step 2: every valid row against the site.
    let total = v.valid_rows();
    let mut conflicts: Vec<RowError> = Vec::new();
    let mut would_create = 0u64;
    let mut would_update = 0u64;
    let mut would_enrol = 0u64;
    let done = Cell::new(0u64);
    let mut batch: Vec<Row> = Vec::with_capacity(chunk);
    let mut failure: Option<WsError> = None;
    let mut check = |batch: &mut Vec<Row>, t: &mut Timed<'_>| -> Result<(), WsError> {
        let names: Vec<&str> = batch.iter().map(|r| r.username.as_str()).collect();
        let by_name: HashMap<String, Existing> = t
            .users_by("username", &names)?
            .into_iter()
            .map(|u| (u.username.clone(), u))
            .collect();
        let mut emails: Vec<String> = batch.iter().map(|r| r.email.clone()).collect();
        emails.extend(batch.iter().map(|r| r.email.to_lowercase()));
        emails.sort();
        emails.dedup();
        let email_refs: Vec<&str> = emails.iter().map(String::as_str).collect();
        let email_owner = owners_by_email(t, &email_refs)?;
        let ids: Vec<&str> = batch.iter().map(|r| r.idnumber.as_str()).collect();
        let mut by_idnumber: HashMap<String, Vec<String>> = HashMap::new();
        for u in t.users_by("idnumber", &ids)? {
            by_idnumber.entry(u.idnumber).or_default().push(u.username);
        }
        for r in batch.drain(..) {
            let before = conflicts.len();
            if let Some(e) = by_name.get(&r.username) {
                if !e.idnumber.is_empty() && e.idnumber != r.idnumber {
                    conflicts.push(bad(r.row, "idnumber", &r.idnumber, &format!("the existing user {} has idnumber {}; a username cannot change hands (correct the file, or change the idnumber in Moodle first)", r.username, e.idnumber)));
                }
            }
            if let Some(owner) = email_owner
                .get(&r.email.to_lowercase())
                .filter(|o| **o != r.username)
            {
                conflicts.push(bad(
                    r.row,
                    "email",
                    &r.email,
                    &format!("already used by the existing user {owner} (an email belongs to one account; Moodle refuses a second one)"),
                ));
            }
            if let Some(others) = by_idnumber.get(&r.idnumber) {
                if let Some(o) = others.iter().find(|o| **o != r.username) {
                    conflicts.push(bad(
                        r.row,
                        "idnumber",
                        &r.idnumber,
                        &format!("already belongs to the existing user {o}; an idnumber is a learner's identity across the fleet"),
                    ));
                }
            }
            if let Some(c) = r.courses.iter().find(|c| !course_ids.contains_key(*c)) {
                conflicts.push(bad(
                    r.row,
                    "course",
                    c,
                    "no course with this shortname on the site",
                ));
            }
            if conflicts.len() == before {
                match by_name.get(&r.username) {
                    Some(e) if holds(e, &r, &course_ids, enrolled.as_ref()) => {
                        unchanged.insert(r.row);
                    }
                    Some(_) => {
                        would_update += 1;
                        would_enrol += r.courses.len() as u64;
                    }
                    None => {
                        would_create += 1;
                        would_enrol += r.courses.len() as u64;
                    }
                }
            }
            done.set(done.get() + 1);
        }
        Ok(())
    };
    valid_rows(csv, v, 0, &mut |r| {
        batch.push(r);
        if batch.len() >= chunk {
            if let Err(e) = check(&mut batch, &mut t) {
                failure = Some(e);
                return false;
            }
            obs.progress("checking", done.get(), total);
        }
        true
    })?;
    if let Some(e) = failure.take() {
        return Err(e.into());
    }
    if !batch.is_empty() {
        check(&mut batch, &mut t)?;
    }
    obs.progress("checking", done.get(), total);
    for c in conflicts {
        v.push(c);
    }
    let mut summary = Summary {
        file: csv.display().to_string(),
        rows: v.rows,
        valid: v.valid_rows(),
        dry_run: opts.dry_run,
        ..Summary::default()
    };
    if opts.dry_run {
        summary.created = would_create;
        summary.updated = would_update;
        summary.unchanged = unchanged.len() as u64;
        summary.enrolments = would_enrol;
    } else {
        // Step 3: write, chunk by chunk.
        let total = v.valid_rows();
        let done = Cell::new(0u64);
        let mut batch: Vec<Row> = Vec::with_capacity(step);
        let start = progress.next_row;
        // A finished step: counted, its progress saved (a resumed import starts after it).
        let mut commit =
            |rows: usize, next: u64, progress: &mut Progress| -> Result<(), ImportError> {
                base::failpoint::hit("users.chunk-written");
                done.set(done.get() + rows as u64);
                progress.next_row = next;
                save(progress)?;
                base::failpoint::hit("users.after-chunk");
                Ok(())
            };
        // Through the upload CLI, one step is written while the step before it is checked.
        let mut inflight: Option<InFlight<'_>> = None;
        let mut flip = 0usize;
        let mut write = |batch: &mut Vec<Row>,
                         t: &mut Timed<'_>,
                         progress: &mut Progress,
                         last: bool|
         -> Result<(), ImportError> {
            match via {
                Via::WebService => {
                    if let Some(next) = batch.last().map(|r| r.row + 1) {
                        write_chunk(t, batch, &course_ids, opts.role_id, progress)?;
                        commit(batch.len(), next, progress)?;
                        batch.clear();
                    }
                }
                Via::UploadCli { cli, dir, .. } => {
                    if !batch.is_empty() {
                        let step = Prepared::new(t, dir, std::mem::take(batch), chunk, flip)?;
                        flip ^= 1;
                        let before = match inflight.take() {
                            Some(f) => Some(f.wait(t)?),
                            None => None,
                        };
                        inflight = Some(step.start(t, cli)?);
                        if let Some(f) = before {
                            f.check(t, progress)?;
                            commit(f.rows.len(), f.next_row, progress)?;
                        }
                    }
                    if last {
                        if let Some(f) = inflight.take() {
                            let f = f.wait(t)?;
                            f.check(t, progress)?;
                            commit(f.rows.len(), f.next_row, progress)?;
                        }
                    }
                }
            }
            Ok(())
        };
        let mut failure: Option<ImportError> = None;
        // Unchanged rows met since the last saved step: saved with the next one (a crash
        // counts them again after the resume, never twice).
        let left_alone = Cell::new(0u64);
        valid_rows(csv, v, 0, &mut |r| {
            if r.row < start {
                done.set(done.get() + 1);
                return true;
            }
            if unchanged.contains(&r.row) {
                done.set(done.get() + 1);
                left_alone.set(left_alone.get() + 1);
                return true;
            }
            progress.unchanged += left_alone.take();
            batch.push(r);
            if batch.len() >= step {
                if let Err(e) = write(&mut batch, &mut t, progress, false) {
                    failure = Some(e);
                    return false;
                }
                obs.progress("importing", done.get(), total);
            }
            true
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        progress.unchanged += left_alone.take();
        write(&mut batch, &mut t, progress, true)?;
        save(progress)?;
        obs.progress("importing", total, total);
        summary.created = progress.created;
        summary.updated = progress.updated;
        summary.unchanged = progress.unchanged;
        summary.enrolments = progress.enrolments;
        for e in &progress.refused {
            v.push(e.clone());
        }
    }
    v.errors.sort_by_key(|e| e.row);
    summary.valid = v.valid_rows();
    summary.errors = v.errors.clone();
    summary.calls = t.calls;
    summary.moodle_seconds = t.waited.as_secs_f64();
    summary.total_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Lower-cased email -> username of the accounts holding any of `emails`.
fn owners_by_email(t: &mut Timed<'_>, emails: &[&str]) -> Result<HashMap<String, String>, WsError> {
    Ok(t.users_by("email", emails)?
        .into_iter()
        .map(|u| (u.email.to_lowercase(), u.username))
        .collect())
}

fn user_fields(p: &mut Params, i: usize, r: &Row) {
    p.field("users", i, "firstname", &r.firstname);
    p.field("users", i, "lastname", &r.lastname);
    p.field("users", i, "email", &r.email);
    p.field("users", i, "idnumber", &r.idnumber);
    if !r.auth.is_empty() {
        p.field("users", i, "auth", &r.auth);
    }
    if let Some(s) = r.suspended {
        p.field("users", i, "suspended", u8::from(s));
    }
}

fn write_chunk(
    t: &mut Timed<'_>,
    batch: &[Row],
    course_ids: &HashMap<String, i64>,
    role_id: i64,
    progress: &mut Progress,
) -> Result<(), ImportError> {
    let names: Vec<&str> = batch.iter().map(|r| r.username.as_str()).collect();
    let mut ids: HashMap<String, i64> = t
        .users_by("username", &names)?
        .into_iter()
        .map(|u| (u.username, u.id))
        .collect();
    let (old, new): (Vec<&Row>, Vec<&Row>) =
        batch.iter().partition(|r| ids.contains_key(&r.username));
    let mut refused: HashSet<u64> = HashSet::new();
    {
        let mut w = Writer {
            ids: &mut ids,
            progress: &mut *progress,
            refused: &mut refused,
        };
        w.send(t, Write::Update, &old)?;
        w.send(t, Write::Create, &new)?;
    }
    let mut p = Params::new();
    let mut n = 0;
    for r in batch.iter().filter(|r| !refused.contains(&r.row)) {
        let Some(uid) = ids.get(&r.username) else {
            continue;
        };
        for c in &r.courses {
            if let Some(cid) = course_ids.get(c) {
                p.field("enrolments", n, "roleid", role_id);
                p.field("enrolments", n, "userid", uid);
                p.field("enrolments", n, "courseid", cid);
                n += 1;
            }
        }
    }
    if n > 0 {
        t.call("enrol_manual_enrol_users", &p, Safety::Write)?;
        progress.enrolments += n as u64;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    Create,
    Update,
}

struct Writer<'a> {
    ids: &'a mut HashMap<String, i64>,
    progress: &'a mut Progress,
    refused: &'a mut HashSet<u64>,
}

impl Writer<'_> {
    /// Creates or updates `rows` in one call; when Moodle refuses the call for bad data, splits
    /// it in halves until the refused users are single and named.
    fn send(&mut self, t: &mut Timed<'_>, what: Write, rows: &[&Row]) -> Result<(), ImportError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut p = Params::new();
        for (i, r) in rows.iter().enumerate() {
            if what == Write::Create {
                p.field("users", i, "username", &r.username);
                if r.password.is_empty() {
                    p.field("users", i, "createpassword", 1);
                } else {
                    p.field("users", i, "password", &r.password);
                }
            } else {
                p.field(
                    "users",
                    i,
                    "id",
                    self.ids.get(&r.username).copied().unwrap_or(0),
                );
            }
            user_fields(&mut p, i, r);
        }
        let function = match what {
            Write::Create => "core_user_create_users",
            Write::Update => "core_user_update_users",
        };
        match t.call(function, &p, Safety::Write) {
            Ok(reply) => {
                if what == Write::Create {
                    for u in reply.as_array().into_iter().flatten() {
                        if let (Some(id), Some(name)) = (u["id"].as_i64(), u["username"].as_str()) {
                            self.ids.insert(name.to_string(), id);
                        }
                    }
                    self.progress.created += rows.len() as u64;
                } else {
                    self.progress.updated += rows.len() as u64;
                }
                Ok(())
            }
            Err(e) if e.is_invalid_parameter() && rows.len() > 1 => {
                let (a, b) = rows.split_at(rows.len() / 2);
                self.send(t, what, a)?;
                self.send(t, what, b)
            }
            Err(WsError::Moodle {
                message,
                debuginfo,
                errorcode,
                ..
            }) if errorcode == "invalidparameter" => {
                let r = rows[0];
                let verb = if what == Write::Create {
                    "create"
                } else {
                    "update"
                };
                let reason = match debuginfo {
                    Some(d) => format!("Moodle refused to {verb} this user: {d}"),
                    None => format!(
                        "Moodle refused to {verb} this user ({message}) without saying why; the usual causes: the password does not meet the site's password policy, or the email is used by another account in different letter case. Turn on developer debugging on the site to see Moodle's reason."
                    ),
                };
                self.refused.insert(r.row);
                self.progress
                    .refused
                    .push(bad(r.row, "(row)", &r.username, &reason));
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Where the report and the progress file go by default: next to the CSV.
pub fn default_paths(csv: &Path) -> (PathBuf, PathBuf) {
    let name = csv
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "users.csv".into());
    let dir = csv.parent().unwrap_or(Path::new("."));
    (
        dir.join(format!("{name}.report.json")),
        dir.join(format!("{name}.import-progress.json")),
    )
}

/// The report file: the summary with every refused row.
pub fn write_report(path: &Path, summary: &Summary) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(summary).map_err(std::io::Error::other)?;
    base::fsutil::atomic_write(path, &json)
}

/// Rows refused, per field, for a summary line.
pub fn by_field(errors: &[RowError]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for e in errors {
        *m.entry(e.field.clone()).or_default() += 1;
    }
    m
}
