//! Throwaway database servers for the capture tests: a real PostgreSQL cluster and a real
//! MariaDB server, each in a temporary directory on a free loopback port, loaded with the
//! schema and data captured from Moodle 5.0 (`../shared/moodle/schema/`), and a read-only user
//! with exactly the GRANTs `docs/progress.md` documents. Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const RO_USER: &str = "vessel_sync";
pub const RO_PASSWORD: &str = "ro-secret-pw";

pub fn schema_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for c in [
        here.join("../shared/moodle/schema"),
        here.join("tests/fixtures/moodle/schema"),
    ] {
        if c.join("postgres.sql").exists() {
            return c;
        }
    }
    panic!("Moodle schema dumps not found in tests/fixtures/moodle/schema")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chown_tree(dir: &Path, user: &str) {
    if unsafe { libc::geteuid() } == 0 {
        let st = Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:"))
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

fn wait_port(port: u16, child: &mut Child, what: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited early: {st}");
        }
        base::retry::pause(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port} within 60 s");
}

/// A throwaway PostgreSQL cluster (the library's own, as the demo and the benchmark use) with
/// database `moodle` holding Moodle's real schema and data.
pub struct Pg {
    pg: testkit::pgtemp::TempPg,
    pub port: u16,
    pub db: String,
}

impl Pg {
    /// Starts a cluster and creates database `moodle` with the schema and data loaded.
    pub fn start() -> Self {
        let pg = testkit::pgtemp::TempPg::start().expect("throwaway PostgreSQL");
        let port = pg.port;
        let pg = Pg {
            pg,
            port,
            db: "moodle".into(),
        };
        pg.psql("postgres", "CREATE DATABASE moodle");
        let schema = schema_dir();
        pg.psql_file("moodle", &schema.join("postgres.sql"));
        pg.psql_file("moodle", &schema.join("data.sql"));
        // The GRANTs of docs/progress.md, verbatim.
        pg.psql(
            "moodle",
            &format!(
                "CREATE ROLE {RO_USER} LOGIN PASSWORD '{RO_PASSWORD}';
                 GRANT CONNECT ON DATABASE moodle TO {RO_USER};
                 GRANT USAGE ON SCHEMA public TO {RO_USER};
                 GRANT SELECT ON ALL TABLES IN SCHEMA public TO {RO_USER};
                 ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {RO_USER};"
            ),
        );
        pg
    }

    /// Runs SQL as the superuser; panics on error. Returns unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.pg
            .psql(db, sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// Runs the SQL file as the superuser; panics on error.
    pub fn psql_file(&self, db: &str, file: &Path) {
        self.pg
            .psql_file(db, file)
            .unwrap_or_else(|e| panic!("psql -f {}: {e}", file.display()));
    }

    /// The agent's `[moodle]` section for this server (password in `pwfile`).
    pub fn moodle_section(&self, pwfile: &Path) -> String {
        std::fs::write(pwfile, format!("{RO_PASSWORD}\n")).unwrap();
        format!(
            "[moodle]\ndb_type = \"postgres\"\ndb_host = \"127.0.0.1\"\ndb_port = {}\ndb_name = \"moodle\"\ndb_user = \"{RO_USER}\"\ndb_password_file = \"{}\"\n",
            self.port,
            pwfile.display()
        )
    }
}

pub struct Maria {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
}

impl Maria {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vs-maria")
            .tempdir_in("/tmp")
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        chown_tree(dir.path(), "mysql");
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
            .expect("mariadb-install-db not found (apt-get install mariadb-server)");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let sock = dir.path().join("sock");
        let mut child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--user=mysql",
                "--skip-name-resolve",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-buffer-pool-size=64M",
                "--skip-log-bin",
            ])
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port, &mut child, "mariadbd");
        let m = Maria { dir, child, port };
        let t = Instant::now();
        while m.try_sql(None, "SELECT 1").is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "mariadbd never accepted a session"
            );
            base::retry::pause(Duration::from_millis(100));
        }
        m.sql(
            None,
            "CREATE DATABASE moodle CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        );
        let schema = schema_dir();
        m.sql_file("moodle", &schema.join("mariadb.sql"));
        m.sql_file("moodle", &schema.join("mariadb-data.sql"));
        m.sql(
            None,
            &format!(
                "CREATE USER '{RO_USER}'@'127.0.0.1' IDENTIFIED BY '{RO_PASSWORD}';
                 GRANT SELECT ON moodle.* TO '{RO_USER}'@'127.0.0.1';"
            ),
        );
        m
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

    fn try_sql(&self, db: Option<&str>, sql: &str) -> Result<String, String> {
        let out = self.client(db).arg("-e").arg(sql).output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn sql(&self, db: Option<&str>, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("mariadb {sql}: {e}"))
    }

    pub fn sql_file(&self, db: &str, file: &Path) {
        let out = self
            .client(Some(db))
            .stdin(std::fs::File::open(file).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb < {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn moodle_section(&self, pwfile: &Path) -> String {
        std::fs::write(pwfile, format!("{RO_PASSWORD}\n")).unwrap();
        format!(
            "[moodle]\ndb_type = \"mariadb\"\ndb_host = \"127.0.0.1\"\ndb_port = {}\ndb_name = \"moodle\"\ndb_user = \"{RO_USER}\"\ndb_password_file = \"{}\"\n",
            self.port,
            pwfile.display()
        )
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
