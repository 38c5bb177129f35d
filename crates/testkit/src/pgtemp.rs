//! A throwaway PostgreSQL cluster for `vessel-sync demo` and `vessel-sync bench outbox`: a
//! temporary directory, a free loopback port, trust authentication, no fsync; stopped and
//! deleted when dropped. Needs Debian's `postgresql` package (the server binaries under
//! `/usr/lib/postgresql/VERSION/bin`); as root, the server runs as the `postgres` user.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moodle::db::{DbSettings, DbType};

/// The Moodle-shaped schema the demo and the benchmark load.
pub const DEMO_SCHEMA: &str = include_str!("demo_schema.sql");

/// A running throwaway cluster.
pub struct TempPg {
    dir: tempfile::TempDir,
    child: Child,
    /// Its loopback port.
    pub port: u16,
}

fn server_bin(name: &str) -> Result<PathBuf, String> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)".to_string())?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join(name).exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|d| d.join(name))
        .ok_or_else(|| format!("{name} not found under /usr/lib/postgresql/*/bin"))
}

pub(crate) fn ids_of(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user) && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

/// Makes `cmd` run as `ids` (when given) and receive `signal` when the thread that spawned it
/// ends, so that a server started for a whole test run stops with the test process.
pub(crate) fn die_with_parent(cmd: &mut Command, ids: Option<(u32, u32)>, signal: i32) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = ids {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // After the setuid, which clears it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn drop_root(cmd: &mut Command, ids: Option<(u32, u32)>) {
    die_with_parent(cmd, ids, libc::SIGINT);
}

/// A free loopback port.
pub(crate) fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Copies the tree `from` to `to` (which must not exist) with owners, modes and times.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("cp -a {} {}: {st}", from.display(), to.display()))
    }
}

impl TempPg {
    /// The cluster every caller of this process shares, started on first use from a thread
    /// that lives as long as the process (so the server stops with the process, not with the
    /// test that happened to start it).
    pub fn shared() -> Result<&'static TempPg, String> {
        static CELL: std::sync::OnceLock<Result<TempPg, String>> = std::sync::OnceLock::new();
        CELL.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(TempPg::start());
                loop {
                    std::thread::park();
                }
            });
            rx.recv()
                .unwrap_or_else(|_| Err("the PostgreSQL starter thread died".into()))
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// Creates and starts a cluster.
    pub fn start() -> Result<Self, String> {
        Self::start_from(None)
    }

    /// Starts a cluster on a copy of `template` (a data directory a stopped cluster left), or
    /// on a new one.
    pub fn start_from(template: Option<&Path>) -> Result<Self, String> {
        let initdb = server_bin("initdb")?;
        let postgres = server_bin("postgres")?;
        let dir = tempfile::Builder::new()
            .prefix("vessel-sync-pg")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        // SAFETY: geteuid has no preconditions.
        let ids = if unsafe { libc::geteuid() } == 0 {
            let ids = ids_of("postgres")
                .ok_or("running as root and there is no 'postgres' user to run the server as")?;
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .map_err(|e| e.to_string())?;
            Some(ids)
        } else {
            None
        };
        let data = dir.path().join("data");
        match template {
            Some(t) => {
                copy_tree(t, &data)?;
                if let Some((uid, gid)) = ids {
                    let st = Command::new("chown")
                        .arg("-R")
                        .arg(format!("{uid}:{gid}"))
                        .arg(&data)
                        .status()
                        .map_err(|e| format!("chown: {e}"))?;
                    if !st.success() {
                        return Err(format!("chown -R postgres {}: {st}", data.display()));
                    }
                }
            }
            None => Self::initdb(&initdb, &data, ids)?,
        }
        let port = free_port()?;
        let mut cmd = Command::new(postgres);
        cmd.arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-k",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        drop_root(&mut cmd, ids);
        let child = cmd.spawn().map_err(|e| format!("postgres: {e}"))?;
        let mut pg = Self { dir, child, port };
        let t = Instant::now();
        loop {
            if pg.psql("postgres", "SELECT 1").is_ok() {
                return Ok(pg);
            }
            if let Ok(Some(st)) = pg.child.try_wait() {
                return Err(format!("postgres exited at start: {st}"));
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err("postgres did not start within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn initdb(initdb: &Path, data: &Path, ids: Option<(u32, u32)>) -> Result<(), String> {
        let mut init = Command::new(initdb);
        init.args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "-D",
        ])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        drop_root(&mut init, ids);
        let out = init.output().map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    }

    /// Shuts the cluster down cleanly and copies its data directory to `dest` (for
    /// [`TempPg::start_from`]).
    pub fn stop_into(mut self, dest: &Path) -> Result<(), String> {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        self.child.wait().map_err(|e| e.to_string())?;
        copy_tree(&self.dir.path().join("data"), dest)
    }

    /// Runs SQL through `psql` as the superuser; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        self.run_psql(db, &["-A", "-t", "-c", sql])
    }

    /// Runs a query through `psql` as the superuser; rows one per line, fields tab-separated.
    pub fn query(&self, db: &str, sql: &str) -> Result<String, String> {
        self.run_psql(db, &["-A", "-t", "-F", "\t", "-c", sql])
    }

    /// Runs the SQL file `file` through `psql` as the superuser, stopping at the first error.
    pub fn psql_file(&self, db: &str, file: &Path) -> Result<(), String> {
        let file = file.to_string_lossy();
        self.run_psql(db, &["-f", &file]).map(|_| ())
    }

    fn run_psql(&self, db: &str, extra: &[&str]) -> Result<String, String> {
        let port = self.port.to_string();
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", db])
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(extra)
            .output()
            .map_err(|e| format!("psql: {e} (apt-get install postgresql-client)"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Creates database `db` with the Moodle-shaped schema.
    pub fn create_moodle(&self, db: &str) -> Result<(), String> {
        self.psql("postgres", &format!("CREATE DATABASE {db}"))?;
        self.psql(db, DEMO_SCHEMA)?;
        Ok(())
    }

    /// Connection settings for `db` as the superuser (no password, trust).
    pub fn settings(&self, db: &str) -> DbSettings {
        DbSettings {
            db_type: DbType::Postgres,
            host: "127.0.0.1".into(),
            port: self.port,
            name: db.into(),
            user: "postgres".into(),
            password_file: None,
            prefix: "mdl_".into(),
        }
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempPg {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
