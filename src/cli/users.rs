//! `vessel-sync users validate|import`: the operator's tools for seafarer CSVs (the initial
//! cloud migration of up to 80,000 records, or any bulk change), against any Moodle.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Subcommand;

use super::fail;
use base::exit;
use moodle::users::import::{self, Observer, Options, Progress, Summary};
use moodle::users::validate;
use moodle::ws::{Token, Ws};

/// User subcommands.
#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// Check a seafarer CSV without touching any Moodle.
    ///
    /// Columns: username, firstname, lastname, email, idnumber (required); password, auth,
    /// suspended (0/1), course1, course2, ... (course shortnames to enrol into) optional.
    /// Every problem is listed as {row, field, value, message}, rows numbered as a spreadsheet
    /// shows them (header = 1). Duplicates inside the file (username, email ignoring case,
    /// idnumber) name every row involved. Exit status 0: clean; 65: problems found.
    Validate {
        /// The CSV (UTF-8; a byte-order mark and CRLF line ends are fine).
        file: PathBuf,
        /// Also write the full report as JSON to this file.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Print the report as JSON on stdout instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create or update the CSV's users in a Moodle through its web services, and enrol them.
    ///
    /// Validates the whole file first, then checks every row against the site's existing users
    /// (a username that exists is updated; an email or idnumber held by another account refuses
    /// the row) before writing anything. Users are then created or updated in chunks; a chunk
    /// Moodle refuses is split until the one bad row is named. Progress is saved after every
    /// chunk: after an interruption, run the same command with --resume. The report
    /// (FILE.report.json by default) lists every refused row. Exit status 0: every row
    /// imported; 65: some rows refused (the rest were imported); 69: Moodle unreachable or
    /// refusing the token (run again with --resume).
    ///
    /// A row whose account already holds exactly what it says is left alone (counted
    /// "unchanged"), so a list sent again writes only what changed.
    ///
    /// The token's service needs core_user_get_users_by_field, core_user_create_users,
    /// core_user_update_users, core_course_get_courses_by_field, core_enrol_get_enrolled_users
    /// and enrol_manual_enrol_users; with the companion plugin's local_vesselsync_get_users on
    /// it, the checks run in bulk (much faster for a list of existing users).
    Import {
        /// The CSV.
        file: PathBuf,
        /// The Moodle site's address (its wwwroot), e.g. https://lms.example.org.
        #[arg(long, value_name = "URL")]
        moodle: String,
        /// File holding the web-service token (never printed or logged).
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        /// Users per web-service call (Moodle gains little above 100-500).
        #[arg(long, default_value_t = 500)]
        chunk: usize,
        /// Check everything against Moodle and say what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Continue an interrupted import of the same file after its last finished chunk.
        #[arg(long)]
        resume: bool,
        /// Role id for enrolments (5 is student on a stock Moodle).
        #[arg(long, default_value_t = 5)]
        role_id: i64,
        /// Where to write the report (default: FILE.report.json beside the CSV).
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Where progress is kept for --resume (default: FILE.import-progress.json).
        #[arg(long, value_name = "FILE")]
        progress_file: Option<PathBuf>,
        /// Seconds to wait for one web-service reply.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a users subcommand.
pub fn run(cmd: UsersCmd) -> i32 {
    match cmd {
        UsersCmd::Validate { file, report, json } => validate_cmd(&file, report.as_deref(), json),
        UsersCmd::Import {
            file,
            moodle,
            token_file,
            chunk,
            dry_run,
            resume,
            role_id,
            report,
            progress_file,
            timeout,
            json,
        } => {
            let (default_report, default_progress) = import::default_paths(&file);
            let paths = Paths {
                report: report.unwrap_or(default_report),
                progress: progress_file.unwrap_or(default_progress),
            };
            let opts = Options {
                chunk: chunk.clamp(1, 5000),
                dry_run,
                role_id,
            };
            import_cmd(
                &file,
                &moodle,
                &token_file,
                &opts,
                resume,
                timeout,
                &paths,
                json,
            )
        }
    }
}

fn validate_cmd(file: &Path, report: Option<&Path>, json: bool) -> i32 {
    let t = Instant::now();
    let v = match validate::validate(file) {
        Ok(v) => v,
        Err(e) => return fail(exit::NOINPUT, format!("{}: {e}", file.display())),
    };
    let summary = Summary {
        file: file.display().to_string(),
        rows: v.rows,
        valid: v.valid_rows(),
        total_seconds: t.elapsed().as_secs_f64(),
        errors: v.errors.clone(),
        ..Summary::default()
    };
    if let Some(path) = report {
        if let Err(e) = import::write_report(path, &summary) {
            return fail(exit::IOERR, format!("{}: {e}", path.display()));
        }
    }
    if json {
        match serde_json::to_string_pretty(&summary.errors) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(exit::SOFTWARE, e),
        }
    } else {
        print_errors(&summary, report);
        println!(
            "{}: {} rows, {} valid, {} with problems ({:.2} s)",
            file.display(),
            v.rows,
            v.valid_rows(),
            v.bad_rows.len(),
            summary.total_seconds
        );
    }
    if v.errors.is_empty() {
        exit::OK
    } else {
        exit::DATAERR
    }
}

fn print_errors(s: &Summary, report: Option<&Path>) {
    const SHOWN: usize = 20;
    for e in s.errors.iter().take(SHOWN) {
        println!("row {}: {} {:?}: {}", e.row, e.field, e.value, e.message);
    }
    if s.errors.len() > SHOWN {
        let per_field: Vec<String> = import::by_field(&s.errors)
            .into_iter()
            .map(|(f, n)| format!("{f} {n}"))
            .collect();
        println!(
            "... and {} more problems ({}){}",
            s.errors.len() - SHOWN,
            per_field.join(", "),
            report.map_or_else(
                || " (--report FILE or --json for all)".to_string(),
                |p| format!("; all in {}", p.display())
            )
        );
    }
}

struct Paths {
    report: PathBuf,
    progress: PathBuf,
}

/// A progress bar on a terminal (stderr), nothing otherwise.
struct Bar {
    tty: bool,
    started: Instant,
    last: Option<Instant>,
}

impl Observer for Bar {
    fn progress(&mut self, phase: &str, done: u64, total: u64) {
        if !self.tty {
            return;
        }
        let now = Instant::now();
        if done < total
            && self
                .last
                .is_some_and(|l| now - l < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(now);
        let frac = if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
        };
        let filled = (frac * 30.0) as usize;
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta = if rate > 0.0 {
            format!("{:.0} s left", (total - done) as f64 / rate)
        } else {
            String::new()
        };
        eprint!(
            "\r{phase:<9} [{}{}] {done}/{total} rows  {rate:.0}/s  {eta}   ",
            "#".repeat(filled),
            ".".repeat(30 - filled.min(30))
        );
        if done >= total {
            eprintln!();
            self.started = Instant::now();
        }
        let _ = std::io::stderr().flush();
    }
}

#[allow(clippy::too_many_arguments)]
fn import_cmd(
    file: &Path,
    moodle: &str,
    token_file: &Path,
    opts: &Options,
    resume: bool,
    timeout: u64,
    paths: &Paths,
    json: bool,
) -> i32 {
    let token = match Token::from_file(token_file) {
        Ok(t) => t,
        Err(e) => return fail(exit::NOINPUT, e),
    };
    let ws = match Ws::new(moodle, token, Duration::from_secs(timeout.max(1))) {
        Ok(w) => w,
        Err(e) => return fail(exit::USAGE, e),
    };
    let sha = match base::fsutil::file_sha256(file) {
        Ok(s) => s,
        Err(e) => return fail(exit::NOINPUT, format!("{}: {e}", file.display())),
    };
    let mut progress = match load_progress(&paths.progress, resume, &sha, ws.url(), opts) {
        Ok(p) => p,
        Err(msg) => return fail(exit::USAGE, msg),
    };
    let t = Instant::now();
    let mut v = match validate::validate(file) {
        Ok(v) => v,
        Err(e) => return fail(exit::NOINPUT, format!("{}: {e}", file.display())),
    };
    if v.rows == 0 || v.errors.iter().any(|e| e.row == 1) {
        print_errors(
            &Summary {
                errors: v.errors.clone(),
                ..Summary::default()
            },
            None,
        );
        return fail(
            exit::DATAERR,
            "the header row is wrong or the file has no rows; nothing was sent to Moodle",
        );
    }
    if !json {
        eprintln!(
            "validated {} rows in {:.2} s: {} valid, {} with problems",
            v.rows,
            t.elapsed().as_secs_f64(),
            v.valid_rows(),
            v.bad_rows.len()
        );
    }
    let mut bar = Bar {
        tty: std::io::stderr().is_terminal() && !json,
        started: Instant::now(),
        last: None,
    };
    let progress_path = paths.progress.clone();
    let dry = opts.dry_run;
    let mut save = |p: &Progress| -> std::io::Result<()> {
        if dry {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(p).map_err(std::io::Error::other)?;
        base::fsutil::atomic_write(&progress_path, &bytes)
    };
    let result = import::run(
        &ws,
        file,
        &mut v,
        opts,
        &mut progress,
        &mut save,
        &mut bar,
        &import::Via::WebService,
    );
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!();
            let again = if opts.dry_run {
                "run the same command again".to_string()
            } else {
                format!(
                    "nothing is lost: run the same command with --resume to continue after row {}",
                    progress.next_row.saturating_sub(1).max(1)
                )
            };
            return fail(exit::UNAVAILABLE, format!("import stopped: {e}; {again}"));
        }
    };
    if let Err(e) = import::write_report(&paths.report, &summary) {
        return fail(exit::IOERR, format!("{}: {e}", paths.report.display()));
    }
    if !opts.dry_run {
        // Finished: the progress file has served its purpose.
        let _ = std::fs::remove_file(&paths.progress);
    }
    if json {
        match serde_json::to_string_pretty(&summary) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(exit::SOFTWARE, e),
        }
    } else {
        print_errors(&summary, Some(&paths.report));
        let verb = if opts.dry_run { "would be " } else { "" };
        println!(
            "{}: {} rows, {} valid; users {verb}created {}, {verb}updated {}, unchanged {} (not written), enrolments {verb}sent {}; {} rows refused",
            file.display(),
            summary.rows,
            summary.valid,
            summary.created,
            summary.updated,
            summary.unchanged,
            summary.enrolments,
            summary
                .errors
                .iter()
                .map(|e| e.row)
                .collect::<std::collections::HashSet<_>>()
                .len()
        );
        println!(
            "{} web-service calls, {:.1} s waiting on Moodle of {:.1} s; report: {}",
            summary.calls,
            summary.moodle_seconds,
            summary.total_seconds,
            paths.report.display()
        );
    }
    if summary.errors.is_empty() {
        exit::OK
    } else {
        exit::DATAERR
    }
}

fn load_progress(
    path: &Path,
    resume: bool,
    sha: &str,
    url: &str,
    opts: &Options,
) -> Result<Progress, String> {
    let fresh = Progress {
        file_sha256: sha.to_string(),
        moodle: url.to_string(),
        chunk: opts.chunk,
        next_row: 0,
        ..Progress::default()
    };
    let existing = match std::fs::read(path) {
        Ok(b) => Some(serde_json::from_slice::<Progress>(&b).map_err(|e| {
            format!(
                "{}: not a progress file ({e}); delete it to start over",
                path.display()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    match (existing, resume) {
        (None, false) => Ok(fresh),
        (None, true) => Err(format!(
            "--resume: no progress file {}; nothing to resume (run without --resume to start)",
            path.display()
        )),
        (Some(p), true) => {
            if p.file_sha256 != sha {
                Err(format!(
                    "--resume: the CSV changed since the interrupted import ({} records another file); finish with the original file, or delete the progress file to start over",
                    path.display()
                ))
            } else if p.moodle != url {
                Err(format!(
                    "--resume: the interrupted import went to {}, not {url}",
                    p.moodle
                ))
            } else {
                Ok(p)
            }
        }
        (Some(_), false) if opts.dry_run => Ok(fresh),
        (Some(p), false) => Err(format!(
            "an interrupted import of this file exists ({}, finished up to row {}): run the same command with --resume to continue it, or delete that file to start over",
            path.display(),
            p.next_row.saturating_sub(1).max(1)
        )),
    }
}
