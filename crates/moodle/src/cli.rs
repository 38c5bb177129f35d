//! Running Moodle's CLI scripts (`admin/cli/*.php`) for what the web services cannot do: course
//! backup, restore and deletion.
//!
//! The script runs from Moodle's code root as `[prefix...] php admin/cli/NAME.php ARGS...`, an
//! argument vector and never a shell string, with stdin closed (so `delete_course.php`'s
//! question reads "no") and a timeout after which the process group is killed. The scripts'
//! exit codes cannot be trusted (`backup.php` exits 0 when it wrote nothing, `delete_course.php`
//! exits 0 for the site course without deleting it, and exits 1 after half-deleting with
//! `--disablerecyclebin`), so callers decide success by the output markers seen in
//! `shared/moodle/cli/` and by checking the result. Errors are printed on stdout as
//! `!!! message !!!`. With CLI maintenance mode on (`DATAROOT/climaintenance.html`) or an
//! upgrade pending, nothing is run: the caller waits and tries again.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::CliSettings;

/// What a script did.
#[derive(Debug, Clone)]
pub struct Run {
    /// The script.
    pub script: String,
    /// Exit code (None when killed).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Killed at the timeout.
    pub timed_out: bool,
}

impl Run {
    /// The `!!! message !!!` error lines, or stderr's text when there are none.
    pub fn error(&self) -> Option<String> {
        let marked: Vec<&str> = self
            .stdout
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("!!! ")
                    .and_then(|l| l.strip_suffix(" !!!"))
            })
            .collect();
        if !marked.is_empty() {
            return Some(marked.join("; "));
        }
        let err = self.stderr.trim();
        (!err.is_empty()).then(|| err.to_string())
    }

    /// A short account for reasons and logs.
    pub fn describe(&self) -> String {
        let how = match (self.timed_out, self.code) {
            (true, _) => "was killed at the timeout".to_string(),
            (false, Some(c)) => format!("exited {c}"),
            (false, None) => "was killed by a signal".to_string(),
        };
        let said = self.error().unwrap_or_else(|| {
            self.stdout
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        });
        format!("{} {how}: {said}", self.script)
    }

    /// Moodle said an upgrade is pending or running (nothing ran). The words are Moodle 5.0's:
    /// `Moodle upgrade pending, ... suspended.` (the upload tools), `An upgrade is pending`
    /// (`upgrade.php --is-pending`), and `Site is being upgraded, please retry later.` (every
    /// script while `upgraderunning` is set).
    pub fn upgrade_pending(&self) -> bool {
        let all = format!("{}{}", self.stdout, self.stderr).to_lowercase();
        [
            "upgrade pending",
            "upgrade is pending",
            "being upgraded",
            "upgrade is running",
        ]
        .iter()
        .any(|w| all.contains(w))
    }

    /// The value after `marker` on the first line holding it, trimmed.
    pub fn after(&self, marker: &str) -> Option<String> {
        self.stdout
            .lines()
            .find_map(|l| l.split_once(marker).map(|(_, v)| v.trim().to_string()))
    }
}

/// Why a script could not run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Maintenance mode or an upgrade: try later, nothing ran.
    #[error("Moodle is in maintenance mode or an upgrade is pending ({0}); trying again later")]
    Maintenance(String),
    /// The process could not start.
    #[error("cannot run {program}: {detail} (check [moodle] php, cli_prefix and moodle_dir)")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        detail: String,
    },
}

/// Runs scripts for one Moodle.
pub struct Cli<'a> {
    settings: &'a CliSettings,
    keepalive: &'a dyn Fn(),
}

impl<'a> Cli<'a> {
    /// A runner; `keepalive` is called every few seconds while a script runs.
    pub fn new(settings: &'a CliSettings, keepalive: &'a dyn Fn()) -> Self {
        Self {
            settings,
            keepalive,
        }
    }

    /// Whether CLI maintenance mode is on.
    pub fn maintenance(&self) -> Option<String> {
        let flag = self.settings.dataroot.as_ref()?.join("climaintenance.html");
        flag.exists().then(|| format!("{} exists", flag.display()))
    }

    /// Whether Moodle can take work now: not in CLI maintenance mode, no upgrade pending or
    /// running (`admin/cli/upgrade.php --is-pending`, which changes nothing). A new Moodle
    /// version deployed but not yet upgraded still answers, half old and half new; the agent
    /// waits for the upgrade instead of restoring or importing into that.
    pub fn ready(&self) -> Result<(), CliError> {
        self.run("upgrade.php", &["--is-pending".to_string()])
            .map(|_| ())
    }

    /// Runs `admin/cli/{script}` (or `script`, when it is a path from the code root) with `args`.
    pub fn run(&self, script: &str, args: &[String]) -> Result<Run, CliError> {
        let mut runs = self.run_all(script, std::slice::from_ref(&args.to_vec()))?;
        runs.pop().ok_or_else(|| CliError::Spawn {
            program: script.to_string(),
            detail: "no run was started".into(),
        })
    }

    /// Runs `script` once per argument list, at the same time, and returns the runs in the
    /// order of `jobs` ([`Cli::start_all`], then [`Running::wait`]).
    pub fn run_all(&self, script: &str, jobs: &[Vec<String>]) -> Result<Vec<Run>, CliError> {
        self.start_all(script, jobs)?.wait()
    }

    /// Starts `script` once per argument list (each its own process group, each under the
    /// timeout) and returns while they run. Each starts once the one before has printed
    /// something (or ended), and this returns once the last has: Moodle's tools name their
    /// temporary files by the second they start in (the upload CLI's CSV import id is `time()`,
    /// taken before the file is written), so two runs started together can read one file and
    /// leave the other's rows undone, as seen on Moodle 5.0.6. Nothing runs in maintenance
    /// mode; when one could not start, the ones already started are killed.
    pub fn start_all(&self, script: &str, jobs: &[Vec<String>]) -> Result<Running<'a>, CliError> {
        if let Some(why) = self.maintenance() {
            return Err(CliError::Maintenance(why));
        }
        let mut running = Running {
            script: script.to_string(),
            started: Vec::with_capacity(jobs.len()),
            begun: Instant::now(),
            limit: Duration::from_secs(self.settings.timeout.max(1)),
            keepalive: self.keepalive,
        };
        for args in jobs {
            running.until_the_last_spoke();
            match self.spawn(script, args) {
                Ok(s) => running.started.push(s),
                Err(e) => {
                    for mut s in std::mem::take(&mut running.started) {
                        unsafe_kill_group(s.child.id());
                        let _ = s.child.kill();
                        let _ = s.child.wait();
                    }
                    return Err(e);
                }
            }
        }
        running.until_the_last_spoke();
        Ok(running)
    }

    fn spawn(&self, script: &str, args: &[String]) -> Result<Started, CliError> {
        let s = self.settings;
        let php = s.php.display().to_string();
        let (program, mut argv): (String, Vec<String>) = match s.prefix.split_first() {
            Some((first, rest)) => (first.clone(), rest.to_vec()),
            None => (php.clone(), Vec::new()),
        };
        if !s.prefix.is_empty() {
            argv.push(php);
        }
        // A bare name is one of admin/cli/; a path is relative to the code root (a tool's CLI).
        argv.push(if script.contains('/') {
            script.to_string()
        } else {
            format!("admin/cli/{script}")
        });
        argv.extend(args.iter().cloned());
        let spawn = || {
            Command::new(&program)
                .args(&argv)
                .current_dir(&s.moodle_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .spawn()
        };
        // "Text file busy": the program is open for writing somewhere, often only for the
        // moment between another process's fork and exec (a php being replaced); try again.
        let mut tries = 0;
        let mut child = loop {
            match spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                    tries += 1;
                    base::retry::pause(Duration::from_millis(50));
                }
                r => {
                    break r.map_err(|e| CliError::Spawn {
                        program: program.clone(),
                        detail: e.to_string(),
                    })?;
                }
            }
        };
        tracing::info!(script, args = ?args, "running Moodle CLI script");
        let spoke = Arc::new(AtomicBool::new(false));
        let reader = |pipe: Option<Box<dyn Read + Send>>, spoke: Arc<AtomicBool>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let mut piece = [0u8; 8192];
                    loop {
                        match p.read(&mut piece) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                buf.extend_from_slice(&piece[..n]);
                                spoke.store(true, Ordering::Release);
                            }
                        }
                    }
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = reader(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            spoke.clone(),
        );
        let err = reader(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            spoke.clone(),
        );
        Ok(Started {
            child,
            out,
            err,
            spoke,
        })
    }
}

/// Scripts started by [`Cli::start_all`]. Dropped without [`Running::wait`] (an error on the
/// caller's side), it still waits for them, as a crash of the agent would leave them running.
pub struct Running<'a> {
    script: String,
    started: Vec<Started>,
    begun: Instant,
    limit: Duration,
    keepalive: &'a dyn Fn(),
}

impl Running<'_> {
    /// Waits for every script and returns their runs in the order they were given; an upgrade
    /// reported by any of them is [`CliError::Maintenance`].
    pub fn wait(mut self) -> Result<Vec<Run>, CliError> {
        let runs = self.finish();
        if let Some(r) = runs.iter().find(|r| r.upgrade_pending()) {
            return Err(CliError::Maintenance(r.describe()));
        }
        Ok(runs)
    }

    /// Waits until the last script started has printed something or ended (or the timeout).
    fn until_the_last_spoke(&mut self) {
        let Some(last) = self.started.last_mut() else {
            return;
        };
        while !last.spoke.load(Ordering::Acquire)
            && matches!(last.child.try_wait(), Ok(None))
            && self.begun.elapsed() < self.limit
        {
            (self.keepalive)();
            base::retry::pause(Duration::from_millis(20));
        }
    }

    /// Waits for every started script, killing (by process group: php may have children) any
    /// still running at the timeout, and calling the keepalive meanwhile.
    fn finish(&mut self) -> Vec<Run> {
        let mut started = std::mem::take(&mut self.started);
        let mut ended: Vec<Option<(Option<std::process::ExitStatus>, bool)>> =
            started.iter().map(|_| None).collect();
        loop {
            let over = self.begun.elapsed() >= self.limit;
            for (s, end) in started.iter_mut().zip(ended.iter_mut()) {
                if end.is_some() {
                    continue;
                }
                match s.child.try_wait() {
                    Ok(Some(st)) => *end = Some((Some(st), false)),
                    Ok(None) if over => {
                        unsafe_kill_group(s.child.id());
                        let _ = s.child.kill();
                        *end = Some((s.child.wait().ok(), true));
                    }
                    Ok(None) => {}
                    Err(_) => *end = Some((None, false)),
                }
            }
            if ended.iter().all(Option::is_some) {
                break;
            }
            (self.keepalive)();
            base::retry::pause(Duration::from_millis(100));
        }
        started
            .into_iter()
            .zip(ended)
            .map(|(s, end)| {
                let (status, timed_out) = end.unwrap_or((None, false));
                Run {
                    script: self.script.clone(),
                    code: status.and_then(|st| st.code()),
                    stdout: s.out.join().unwrap_or_default(),
                    stderr: s.err.join().unwrap_or_default(),
                    timed_out,
                }
            })
            .collect()
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.started.is_empty() {
            let _ = self.finish();
        }
    }
}

/// A script started and not yet waited for: the process and the threads reading its output.
struct Started {
    child: std::process::Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
    /// Set once the script has printed anything, on either stream.
    spoke: Arc<AtomicBool>,
}

fn unsafe_kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals the process group we created for the child.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn setup(body: &str, timeout: u64) -> (tempfile::TempDir, CliSettings) {
        let dir = tempfile::tempdir().unwrap();
        let php = dir.path().join("php");
        std::fs::write(&php, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&php, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(dir.path().join("code/admin/cli")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let s = CliSettings {
            moodle_dir: dir.path().join("code"),
            php,
            prefix: Vec::new(),
            timeout,
            dataroot: Some(dir.path().join("data")),
            backup_dir: None,
            keep_backups: 0,
            upload_cli: false,
            upload_workers: 1,
        };
        (dir, s)
    }

    #[test]
    fn arguments_pass_as_words_from_the_code_root_with_stdin_closed() {
        let (_d, s) = setup(
            r#"pwd; for a in "$@"; do echo "[$a]"; done; read x || echo "stdin closed""#,
            10,
        );
        let run = Cli::new(&s, &|| {})
            .run("backup.php", &["--destination=/a b; rm -rf /".into()])
            .unwrap();
        assert_eq!(run.code, Some(0));
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert!(lines[0].ends_with("/code"), "{lines:?}");
        assert_eq!(
            lines[1..],
            [
                "[admin/cli/backup.php]",
                "[--destination=/a b; rm -rf /]",
                "stdin closed"
            ]
        );
    }

    #[test]
    fn moodle_errors_are_read_from_the_bang_lines_and_a_hung_script_is_killed() {
        let (_d, s) = setup(
            "echo '== Extracting =='; echo '!!! Error processing archive file !!!'; exit 1",
            10,
        );
        let run = Cli::new(&s, &|| {}).run("restore_backup.php", &[]).unwrap();
        assert_eq!(
            run.error().as_deref(),
            Some("Error processing archive file")
        );
        assert!(
            run.describe()
                .contains("exited 1: Error processing archive file")
        );

        let (_d, s) = setup("sleep 30", 1);
        let pings = std::cell::Cell::new(0);
        let started = std::time::Instant::now();
        let run = Cli::new(&s, &|| pings.set(pings.get() + 1))
            .run("delete_course.php", &[])
            .unwrap();
        assert!(run.timed_out && run.code.is_none());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "killed at the timeout"
        );
        assert!(pings.get() > 0, "the watchdog is fed while a script runs");
    }

    #[test]
    fn run_all_runs_its_jobs_at_the_same_time_and_keeps_their_order() {
        // Each job says hello, marks itself started and waits for the other's mark: run one
        // after the other, the first would give up (exit 3) because the second never started.
        // The second starts only after the first has printed (Moodle's temporary file names).
        let (_d, s) = setup(
            r#"[ "$2" = b ] && [ ! -e started-a ] && exit 4; touch "started-$2"; echo "job $2 up"; i=0
while [ ! -e "started-$3" ]; do i=$((i+1)); [ $i -gt 100 ] && exit 3; sleep 0.05; done
echo "job $2 saw $3""#,
            20,
        );
        let runs = Cli::new(&s, &|| {})
            .run_all(
                "admin/tool/uploaduser/cli/uploaduser.php",
                &[
                    vec!["a".to_string(), "b".to_string()],
                    vec!["b".to_string(), "a".to_string()],
                ],
            )
            .unwrap();
        let said: Vec<(Option<i32>, &str)> =
            runs.iter().map(|r| (r.code, r.stdout.trim())).collect();
        assert_eq!(
            said,
            [
                (Some(0), "job a up\njob a saw b"),
                (Some(0), "job b up\njob b saw a")
            ]
        );
    }

    #[test]
    fn maintenance_mode_and_a_pending_upgrade_run_nothing() {
        let (d, s) = setup("echo ran > ran.txt", 10);
        std::fs::write(d.path().join("data/climaintenance.html"), "x").unwrap();
        let err = Cli::new(&s, &|| {}).run("backup.php", &[]).unwrap_err();
        assert!(matches!(err, CliError::Maintenance(_)));
        assert!(!d.path().join("code/ran.txt").exists());
        std::fs::remove_file(d.path().join("data/climaintenance.html")).unwrap();
        let (_d, s) = setup(
            "echo 'Moodle upgrade pending, CLI execution suspended.'; exit 1",
            10,
        );
        assert!(matches!(
            Cli::new(&s, &|| {}).run("backup.php", &[]),
            Err(CliError::Maintenance(_))
        ));
        // While `upgraderunning` is set, every script stops with this (lib/setup.php).
        let (_d, s) = setup(
            "echo '!!! Site is being upgraded, please retry later. !!!'; exit 1",
            10,
        );
        assert!(matches!(
            Cli::new(&s, &|| {}).ready(),
            Err(CliError::Maintenance(_))
        ));
        let (_d, s) = setup("echo 'An upgrade is pending' >&2; exit 2", 10);
        assert!(matches!(
            Cli::new(&s, &|| {}).ready(),
            Err(CliError::Maintenance(_))
        ));
        let (_d, s) = setup(
            "echo 'No upgrade needed for the installed version 5.0.6+. Thanks for coming anyway!' >&2",
            10,
        );
        assert!(Cli::new(&s, &|| {}).ready().is_ok());
    }
}
