//! Importing validated seafarer rows into a Moodle through its web services.
//!
//! Three steps, nothing written before the second:
//! 1. the file is validated ([`super::validate`]);
//! 2. every valid row is checked against the site's existing users in chunks (username,
//!    email as written and in lower case, idnumber): a username that exists is an update unless
//!    its idnumber differs; an email or idnumber held by another account refuses the row; the
//!    courses named are looked up by shortname;
//! 3. chunk by chunk, in file order: the chunk's usernames are looked up again (a chunk cut by a
//!    crash is finished, never doubled), new users are created in one call, existing ones
//!    updated in one call (the password only ever set on creation), and the rows' courses
//!    enrolled in one call. One bad user makes Moodle refuse a whole create call with a
//!    generic message, so a refused chunk is split in halves until every good user is created
//!    and the bad one is named. After each chunk the progress is saved atomically, so
//!    `--resume` continues after the last finished chunk.
//!
//! Through Moodle's upload CLI ([`Via::UploadCli`]) step 3 writes `workers` chunks at a time,
//! one run of the CLI each, all at once. While one such step runs, the step before it is
//! checked: every username looked up (the CLI always exits 0), every row the CLI did not add
//! named with the CLI's own lines, and the progress saved; so the lookups cost no time of
//! their own, and a crash redoes at most the step that was running.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Progress saved after every chunk, to resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// SHA-256 of the CSV (a changed file cannot be resumed).
    pub file_sha256: String,
    /// The site's endpoint.
    pub moodle: String,
    /// Chunk size used.
    pub chunk: usize,
    /// First row not yet finished.
    pub next_row: u64,
    /// Users created so far.
    pub created: u64,
    /// Users updated so far.
    pub updated: u64,
    /// Enrolments sent so far.
    pub enrolments: u64,
    /// Rows Moodle refused in finished chunks.
    pub refused: Vec<RowError>,
    /// Web-service calls made.
    pub calls: u64,
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

/// Why an import stopped before the end.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Moodle failed in a way that is not one row's fault (unreachable, token, permissions).
    #[error("{0}")]
    Moodle(#[from] WsError),
    /// Local file trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
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

/// A user as Moodle has it.
#[derive(Debug, Clone)]
struct Existing {
    id: i64,
    username: String,
    idnumber: String,
}

/// The web service, timed.
struct Timed<'a> {
    ws: &'a Ws,
    waited: Duration,
    calls: u64,
}

impl Timed<'_> {
    fn call(&mut self, f: &str, p: &Params, s: Safety) -> Result<Value, WsError> {
        let t = Instant::now();
        self.calls += 1;
        let r = self.ws.call(f, p, s);
        self.waited += t.elapsed();
        r
    }

    fn users_by(&mut self, field: &str, values: &[&str]) -> Result<Vec<Existing>, WsError> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = Params::new().set("field", field);
        for (i, v) in values.iter().enumerate() {
            p = p.item("values", i, v);
        }
        let reply = self.call("core_user_get_users_by_field", &p, Safety::Read)?;
        Ok(reply
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|u| Existing {
                        id: u["id"].as_i64().unwrap_or_default(),
                        username: u["username"].as_str().unwrap_or_default().to_string(),
                        idnumber: u["idnumber"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
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
    };
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
                if by_name.contains_key(&r.username) {
                    would_update += 1;
                } else {
                    would_create += 1;
                }
                would_enrol += r.courses.len() as u64;
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
        valid_rows(csv, v, 0, &mut |r| {
            if r.row < start {
                done.set(done.get() + 1);
                return true;
            }
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
        write(&mut batch, &mut t, progress, true)?;
        obs.progress("importing", total, total);
        summary.created = progress.created;
        summary.updated = progress.updated;
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
    if emails.is_empty() {
        return Ok(HashMap::new());
    }
    let mut p = Params::new().set("field", "email");
    for (i, v) in emails.iter().enumerate() {
        p = p.item("values", i, v);
    }
    let reply = t.call("core_user_get_users_by_field", &p, Safety::Read)?;
    Ok(reply
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| {
                    (
                        u["email"].as_str().unwrap_or_default().to_lowercase(),
                        u["username"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
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

/// A step of rows for Moodle's upload CLI, written out and not yet started: add new users,
/// update existing ones from the file (never their password), enrol them in the courses named.
/// The step is cut into chunks of `chunk` rows, each its own CSV and its own run of the CLI,
/// all running at once (Moodle takes concurrent user creation, as it does from its web
/// services).
struct Prepared {
    rows: Vec<Row>,
    /// Usernames that existed before the step: updated, not created.
    before: HashSet<String>,
    /// Where each chunk of the step starts in `rows`.
    starts: Vec<usize>,
    files: ChunkFiles,
}

/// The CSVs of a step (they hold passwords): removed when the step is dropped.
struct ChunkFiles(Vec<PathBuf>);

impl Drop for ChunkFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A step whose runs of the upload CLI are going on.
struct InFlight<'a> {
    step: Prepared,
    running: crate::cli::Running<'a>,
}

/// A step whose runs have ended, to be checked.
struct Finished {
    rows: Vec<Row>,
    before: HashSet<String>,
    starts: Vec<usize>,
    runs: Vec<crate::cli::Run>,
    next_row: u64,
}

fn cli_failed(e: crate::cli::CliError) -> ImportError {
    ImportError::Io(std::io::Error::other(format!(
        "{e}; the chunk is tried again when the import resumes"
    )))
}

impl Prepared {
    /// Looks the step's usernames up and writes its CSVs; `tag` keeps them apart from the
    /// files of the step still running.
    fn new(
        t: &mut Timed<'_>,
        dir: &Path,
        rows: Vec<Row>,
        chunk: usize,
        tag: usize,
    ) -> Result<Self, ImportError> {
        let names: Vec<&str> = rows.iter().map(|r| r.username.as_str()).collect();
        let before: HashSet<String> = t
            .users_by("username", &names)?
            .into_iter()
            .map(|u| u.username)
            .collect();
        let mut files = ChunkFiles(Vec::new());
        let mut starts = Vec::new();
        for (i, part) in rows.chunks(chunk.max(1)).enumerate() {
            let path = dir.join(format!("upload-chunk-{tag}-{i}.csv"));
            base::fsutil::atomic_write(&path, &chunk_csv(part, &before)?)?;
            files.0.push(path);
            starts.push(i * chunk.max(1));
        }
        Ok(Self {
            rows,
            before,
            starts,
            files,
        })
    }

    /// Starts one run of the CLI per chunk.
    fn start<'a>(
        self,
        t: &mut Timed<'_>,
        cli: &crate::cli::Cli<'a>,
    ) -> Result<InFlight<'a>, ImportError> {
        let jobs: Vec<Vec<String>> = self
            .files
            .0
            .iter()
            .map(|path| {
                vec![
                    format!("--file={}", path.display()),
                    "--delimiter_name=comma".into(),
                    "--encoding=UTF-8".into(),
                    // Add new and update existing users; update from the file; make a
                    // password (mailed) for a new user whose row has none.
                    "--uutype=2".into(),
                    "--uuupdatetype=1".into(),
                    "--uupasswordnew=1".into(),
                ]
            })
            .collect();
        let started = Instant::now();
        let running = cli
            .start_all("admin/tool/uploaduser/cli/uploaduser.php", &jobs)
            .map_err(cli_failed);
        t.waited += started.elapsed();
        let running = running?;
        Ok(InFlight {
            step: self,
            running,
        })
    }
}

impl InFlight<'_> {
    /// Waits for the step's runs; their CSVs are removed.
    fn wait(self, t: &mut Timed<'_>) -> Result<Finished, ImportError> {
        let started = Instant::now();
        let runs = self.running.wait().map_err(cli_failed);
        t.waited += started.elapsed();
        let runs = runs?;
        let Prepared {
            rows,
            before,
            starts,
            files,
        } = self.step;
        drop(files);
        let next_row = rows.last().map_or(0, |r| r.row + 1);
        Ok(Finished {
            rows,
            before,
            starts,
            runs,
            next_row,
        })
    }
}

/// What the upload CLI's report says it did with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said {
    /// `New user`: the account was made (the line is printed after `user_create_user`).
    Created,
    /// `User updated` or `User up-to-date`: the account exists.
    Updated,
}

/// The rows the upload CLI reports as done, by CSV line (the header is line 1): its report is
/// `Line N` and then the row's status lines, two spaces in (Moodle 5.0's
/// `tool_uploaduser\local\text_progress_tracker`, in English). A line with any `Error:` is
/// left out, and so is everything on a site whose language words these differently: those rows
/// are looked up through the web services instead.
pub fn cli_said(stdout: &str) -> HashMap<u64, Said> {
    let mut said = HashMap::new();
    let mut line: Option<u64> = None;
    let mut errored: HashSet<u64> = HashSet::new();
    for l in stdout.lines() {
        if let Some(n) = l
            .strip_prefix("Line ")
            .and_then(|n| n.trim().parse::<u64>().ok())
        {
            line = Some(n);
            continue;
        }
        let Some(n) = line else { continue };
        match l.strip_prefix("  ").map(str::trim_end) {
            Some("New user") => {
                said.insert(n, Said::Created);
            }
            Some("User updated" | "User up-to-date") => {
                said.insert(n, Said::Updated);
            }
            Some(other) if other.starts_with("Error:") => {
                errored.insert(n);
            }
            Some(_) => {}
            // The closing statistics ("Users created: 2").
            None => line = None,
        }
    }
    said.retain(|n, _| !errored.contains(n));
    said
}

impl Finished {
    /// Settles every row (the CLI always exits 0): what the CLI's report says it created or
    /// updated is counted so; every other row is looked up through the web services, and a
    /// row whose user is not there is refused with the CLI's own lines.
    fn check(&self, t: &mut Timed<'_>, progress: &mut Progress) -> Result<(), ImportError> {
        let mut said: Vec<Option<Said>> = vec![None; self.rows.len()];
        for (k, run) in self.runs.iter().enumerate() {
            let from = self.starts.get(k).copied().unwrap_or(self.rows.len());
            let report = cli_said(&run.stdout);
            for (i, slot) in said.iter_mut().enumerate().skip(from) {
                if self.starts.get(k + 1).is_some_and(|&to| i >= to) {
                    break;
                }
                *slot = report.get(&((i - from) as u64 + 2)).copied();
            }
        }
        let unsure: Vec<&str> = self
            .rows
            .iter()
            .zip(&said)
            .filter(|(_, s)| s.is_none())
            .map(|(r, _)| r.username.as_str())
            .collect();
        let after: HashSet<String> = t
            .users_by("username", &unsure)?
            .into_iter()
            .map(|u| u.username)
            .collect();
        for (k, run) in self.runs.iter().enumerate() {
            let from = self.starts.get(k).copied().unwrap_or(self.rows.len());
            let to = self.starts.get(k + 1).copied().unwrap_or(self.rows.len());
            let problems: Vec<&str> = run
                .stdout
                .lines()
                .map(str::trim_start)
                .filter(|l| l.starts_with("Error:") || l.starts_with("Warning:"))
                .collect();
            for (r, s) in self
                .rows
                .get(from..to)
                .unwrap_or_default()
                .iter()
                .zip(said.get(from..to).unwrap_or_default())
            {
                if *s == Some(Said::Created) {
                    progress.created += 1;
                    progress.enrolments += r.courses.len() as u64;
                } else if *s == Some(Said::Updated) {
                    progress.updated += 1;
                    progress.enrolments += r.courses.len() as u64;
                } else if !after.contains(&r.username) {
                    // The CLI's lines do not always name the user: quote the run's problem
                    // lines.
                    let named: Vec<&str> = problems
                        .iter()
                        .copied()
                        .filter(|l| l.contains(&r.username))
                        .collect();
                    let lines = if named.is_empty() { &problems } else { &named };
                    let said = if lines.is_empty() {
                        run.describe()
                    } else {
                        lines.join("; ")
                    };
                    progress.refused.push(bad(
                        r.row,
                        "(row)",
                        &r.username,
                        &format!("Moodle's upload CLI did not add this user: {said}"),
                    ));
                } else if self.before.contains(&r.username) {
                    progress.updated += 1;
                    progress.enrolments += r.courses.len() as u64;
                } else {
                    progress.created += 1;
                    progress.enrolments += r.courses.len() as u64;
                }
            }
        }
        Ok(())
    }
}

/// The upload CLI's CSV for `rows`: no password for a user that exists already.
fn chunk_csv(rows: &[Row], existing: &HashSet<String>) -> Result<Vec<u8>, ImportError> {
    let courses = rows.iter().map(|r| r.courses.len()).max().unwrap_or(0);
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "username",
        "password",
        "firstname",
        "lastname",
        "email",
        "idnumber",
        "auth",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let suspended = rows.iter().any(|r| r.suspended.is_some());
    if suspended {
        header.push("suspended".into());
    }
    header.extend((1..=courses).map(|i| format!("course{i}")));
    w.write_record(&header).map_err(std::io::Error::other)?;
    for r in rows {
        let password = if existing.contains(&r.username) {
            ""
        } else {
            r.password.as_str()
        };
        let auth = if r.auth.is_empty() { "manual" } else { &r.auth };
        let mut rec = vec![
            r.username.as_str(),
            password,
            &r.firstname,
            &r.lastname,
            &r.email,
            &r.idnumber,
            auth,
        ];
        if suspended {
            rec.push(match r.suspended {
                Some(true) => "1",
                Some(false) => "0",
                None => "",
            });
        }
        rec.extend(r.courses.iter().map(String::as_str));
        rec.resize(header.len(), "");
        w.write_record(&rec).map_err(std::io::Error::other)?;
    }
    Ok(w.into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))?)
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

#[cfg(test)]
mod tests {
    use super::*;

    // What Moodle 5.0.6's upload CLI printed for four new users (a bad email, an unknown
    // course), then for one updated, and for a taken email (tests/real/conformance.rs).
    const FIRST: &str = "Line 2\n  New user\nLine 3\n  New user\n  Warning: Email address: Invalid email address\nLine 4\n  Error: User not added - error\n  Error: Email address: Duplicate address\nLine 5\n  New user\n  Error: Enrolments: Unknown course named \"X-NO-SUCH-COURSE\"\n-------------------------------------------------------------------------------\nUsers created: 3\nUsers updated: 0\nUsers having a weak password: 0\nErrors: 1\n";
    const SECOND: &str = "Line 2\n  User updated\n  Last name: Farer-->Captain\n-------------------------------------------------------------------------------\nUsers created: 0\nUsers updated: 1\nUsers having a weak password: 0\nErrors: 0\n";

    #[test]
    fn the_upload_clis_report_settles_only_rows_it_says_it_made_without_an_error() {
        let said = cli_said(FIRST);
        let mut got: Vec<(u64, Said)> = said.into_iter().collect();
        got.sort_by_key(|(n, _)| *n);
        // Line 4 was refused; line 5 was made but its enrolment failed, so it is looked up
        // (and its enrolment is not counted as done on the CLI's word).
        assert_eq!(got, [(2, Said::Created), (3, Said::Created)]);
        assert_eq!(cli_said(SECOND).get(&2), Some(&Said::Updated));
        // Another language, or no report at all: nothing is settled, every row is looked up.
        assert!(cli_said("Ligne 2\n  Nouvel utilisateur\n").is_empty());
        assert!(cli_said("").is_empty());
    }
}
