//! Writing users through Moodle's own upload CLI (`admin/tool/uploaduser/cli/uploaduser.php`)
//! for [`super::import`]: a step of rows is cut into chunks, each written as a CSV and given to
//! its own run of the CLI, all running at once; then every row is settled, from the CLI's
//! per-line report where it says so and through the web services where it does not.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::site::{ImportError, Progress, Timed};
use super::validate::Row;
use base::csvrow::bad;

/// Moodle's upload CLI script, from the code root.
pub const UPLOAD_SCRIPT: &str = "admin/tool/uploaduser/cli/uploaduser.php";

/// The upload CLI's arguments for `file` as the vessel writes users: add new users and update
/// existing ones from the file, and make a password (mailed) for a new user whose row has none.
pub fn upload_args(file: &Path) -> Vec<String> {
    vec![
        format!("--file={}", file.display()),
        "--delimiter_name=comma".into(),
        "--encoding=UTF-8".into(),
        "--uutype=2".into(),
        "--uuupdatetype=1".into(),
        "--uupasswordnew=1".into(),
    ]
}

/// A step of rows for Moodle's upload CLI, written out and not yet started: add new users,
/// update existing ones from the file (never their password), enrol them in the courses named.
/// The step is cut into chunks of `chunk` rows, each its own CSV and its own run of the CLI,
/// all running at once (Moodle takes concurrent user creation, as it does from its web
/// services).
pub(super) struct Prepared {
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
pub(super) struct InFlight<'a> {
    step: Prepared,
    running: crate::cli::Running<'a>,
}

/// A step whose runs have ended, to be checked.
pub(super) struct Finished {
    pub(super) rows: Vec<Row>,
    before: HashSet<String>,
    starts: Vec<usize>,
    runs: Vec<crate::cli::Run>,
    pub(super) next_row: u64,
}

fn cli_failed(e: crate::cli::CliError) -> ImportError {
    ImportError::Io(std::io::Error::other(format!(
        "{e}; the chunk is tried again when the import resumes"
    )))
}

impl Prepared {
    /// Looks the step's usernames up and writes its CSVs; `tag` keeps them apart from the
    /// files of the step still running.
    pub(super) fn new(
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
    pub(super) fn start<'a>(
        self,
        t: &mut Timed<'_>,
        cli: &crate::cli::Cli<'a>,
    ) -> Result<InFlight<'a>, ImportError> {
        let jobs: Vec<Vec<String>> = self.files.0.iter().map(|path| upload_args(path)).collect();
        let started = Instant::now();
        let running = cli.start_all(UPLOAD_SCRIPT, &jobs).map_err(cli_failed);
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
    pub(super) fn wait(self, t: &mut Timed<'_>) -> Result<Finished, ImportError> {
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
    pub(super) fn check(
        &self,
        t: &mut Timed<'_>,
        progress: &mut Progress,
    ) -> Result<(), ImportError> {
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
