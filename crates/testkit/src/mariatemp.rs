//! A throwaway MariaDB server for the tests: a temporary directory, a free loopback port, the
//! unix socket inside that directory for the superuser's client; killed when dropped. Starts
//! empty (`mariadb-install-db`) or from a copy of a data directory a stopped server left (the
//! real-Moodle harness keeps an installed Moodle's database that way). Needs Debian's
//! `mariadb-server` and `mariadb-client`; as root, the server runs as the `mysql` user.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pgtemp::{copy_tree, die_with_parent, free_port, ids_of};

/// A running throwaway server.
pub struct TempMaria {
    dir: tempfile::TempDir,
    child: Child,
    /// Its loopback port.
    pub port: u16,
}

impl TempMaria {
    /// Creates an empty server and starts it.
    pub fn start() -> Result<Self, String> {
        Self::start_from(None)
    }

    /// Starts a server on a copy of `template` (a data directory a stopped server left), or on
    /// a new empty one.
    pub fn start_from(template: Option<&Path>) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("vessel-sync-maria")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let ids = if root {
            Some(ids_of("mysql").ok_or(
                "running as root and there is no 'mysql' user (apt-get install mariadb-server)",
            )?)
        } else {
            None
        };
        match template {
            Some(t) => copy_tree(t, &data)?,
            None => std::fs::create_dir(&data).map_err(|e| e.to_string())?,
        }
        if let Some((uid, gid)) = ids {
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(dir.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !st.success() {
                return Err(format!("chown -R mysql {}: {st}", dir.path().display()));
            }
        }
        if template.is_none() {
            let out = Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args([
                    "--user=mysql",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--skip-name-resolve",
                ])
                .output()
                .map_err(|e| format!("mariadb-install-db: {e} (apt-get install mariadb-server)"))?;
            if !out.status.success() {
                return Err(format!(
                    "mariadb-install-db: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let port = free_port()?;
        let sock = dir.path().join("sock");
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-buffer-pool-size=128M",
                "--innodb-log-file-size=32M",
                "--skip-log-bin",
                "--max-connections=300",
            ])
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Started as `mysql` already: mariadbd's own switch (`--user`) would clear the
        // parent-death signal, and every test process would leave its server running.
        die_with_parent(&mut cmd, ids, libc::SIGTERM);
        let child = cmd
            .spawn()
            .map_err(|e| format!("mariadbd: {e} (apt-get install mariadb-server)"))?;
        let mut m = TempMaria { dir, child, port };
        let t = Instant::now();
        while let Err(e) = m.sql(None, "SELECT 1") {
            if let Ok(Some(st)) = m.child.try_wait() {
                return Err(format!(
                    "mariadbd exited at start ({st}): {}",
                    m.error_log()
                ));
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err(format!("mariadbd did not start within 60 s: {e}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(m)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn client(&self, db: Option<&str>) -> Command {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .args(["-uroot", "-N", "-B"]);
        if let Some(db) = db {
            c.arg(db);
        }
        c
    }

    /// Runs SQL as root; returns the rows, tab-separated, one per line.
    pub fn sql(&self, db: Option<&str>, sql: &str) -> Result<String, String> {
        let out = self
            .client(db)
            .arg("-e")
            .arg(sql)
            .output()
            .map_err(|e| format!("mariadb: {e} (apt-get install mariadb-client)"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs the SQL file `file` as root.
    pub fn sql_file(&self, db: &str, file: &Path) -> Result<(), String> {
        let input = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let out = self
            .client(Some(db))
            .stdin(input)
            .output()
            .map_err(|e| format!("mariadb: {e} (apt-get install mariadb-client)"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "mariadb < {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Shuts the server down cleanly and copies its data directory to `dest` (for
    /// [`TempMaria::start_from`]).
    pub fn stop_into(mut self, dest: &Path) -> Result<(), String> {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().map_err(|e| e.to_string())?;
        copy_tree(&self.dir.path().join("data"), dest)
    }
}

impl Drop for TempMaria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
