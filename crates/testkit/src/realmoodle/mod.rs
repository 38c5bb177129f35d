//! A real Moodle (5.0, or 4.5 LTS) for the tests: a source tarball in `shared/moodle/src/` installed with
//! Debian's PHP 8.2 on a throwaway PostgreSQL 15 cluster or MariaDB 10.11 server, served by
//! PHP's built-in web server on a free loopback port, with web services and REST switched on
//! through Moodle's own `admin/cli/cfg.php` and the external services and tokens made by
//! [`HELPER`] through Moodle's own API.
//!
//! The companion plugin `local_vesselsync` (`plugins/local/vesselsync/` in this repository) is
//! copied into the code tree before the install, so every site has it, as a fleet that follows
//! the README has; a test that needs a site without it uninstalls it through Moodle's own CLI
//! ([`RealMoodle::uninstall_plugin`]).
//!
//! An install takes about a minute, so it is done once per version and database and kept in a
//! cache (`$VESSEL_SYNC_MOODLE_CACHE`, default `~/.cache/vessel-sync/moodle`) under a key made of
//! the tarball's SHA-256, [`HARNESS`], the plugin's files and the database: the stopped server's data directory, the
//! dataroot and the tokens. A test run copies that snapshot, starts the server and the web
//! server on new ports, writes `config.php` for them and purges Moodle's caches; then one
//! instance per database serves every test of the run ([`RealMoodle::shared`]), each test with
//! its own categories, courses and usernames. The servers receive a signal when the test
//! process ends.
//!
//! What the site has: the admin (`admin`), the agent's token on the external service
//! `vessel_sync` (exactly [`AGENT_FUNCTIONS`]), a test token on `vessel_test` (every function),
//! `webservice/rest:use` for authenticated users (learners and teachers call the web services
//! in the tests), and a read-only database user with the GRANTs `docs/progress.md` documents.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use moodle::ws::{Params, Safety, Token, Ws};
use serde_json::Value;

mod server;
mod source;

use server::Server;
pub use source::{Version, plugin_dir, tarball};
use source::{add_plugin, plugin_digest};

use crate::pgtemp::{copy_tree, die_with_parent, free_port};

/// The PHP script that makes the external services and tokens.
pub const HELPER: &str = include_str!("helper.php");

/// Changes whenever what an install holds changes, so old snapshots are not used.
pub const HARNESS: &str = "h4";

/// The web-service functions the agent calls: what a site's external service for vessel-sync
/// must hold (README, "Setting up Moodle").
pub const AGENT_FUNCTIONS: &[&str] = &[
    "core_webservice_get_site_info",
    "core_course_get_categories",
    "core_course_get_contents",
    "core_course_get_course_module",
    "core_course_get_courses_by_field",
    "core_course_update_courses",
    "core_completion_override_activity_completion_status",
    "core_enrol_get_enrolled_users",
    "core_user_create_users",
    "core_user_get_users_by_field",
    "core_user_update_users",
    "enrol_manual_enrol_users",
];

/// The read-only database user the agent's capture logs in as.
pub const RO_USER: &str = "vessel_sync";
/// Its password.
pub const RO_PASSWORD: &str = "ro-secret-pw";
/// Moodle's admin password.
pub const ADMIN_PASSWORD: &str = "Admin-pw-1!";
const DB_USER: &str = "moodle";
const DB_PASSWORD: &str = "moodle-db-pw";

/// Which database Moodle runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// PostgreSQL 15.
    Postgres,
    /// MariaDB 10.11.
    MariaDb,
}

impl Db {
    /// The name in the agent's `[moodle] db_type`.
    pub fn name(self) -> &'static str {
        match self {
            Db::Postgres => "postgres",
            Db::MariaDb => "mariadb",
        }
    }

    fn dbtype(self) -> &'static str {
        match self {
            Db::Postgres => "pgsql",
            Db::MariaDb => "mariadb",
        }
    }
}

/// A running real Moodle.
pub struct RealMoodle {
    /// The database it runs on.
    pub db: Db,
    /// Which Moodle.
    pub version: Version,
    /// The code root (holds `admin/cli/` and `config.php`).
    pub code: PathBuf,
    /// The dataroot.
    pub dataroot: PathBuf,
    /// The wwwroot, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The agent's token (service `vessel_sync`).
    pub agent_token: String,
    /// The admin's token on the test service (every function).
    pub admin_token: String,
    server: Server,
    web: Child,
    root: PathBuf,
}

fn cell(db: Db, version: Version) -> &'static OnceLock<Result<RealMoodle, String>> {
    static PG: OnceLock<Result<RealMoodle, String>> = OnceLock::new();
    static MARIA: OnceLock<Result<RealMoodle, String>> = OnceLock::new();
    static PG45: OnceLock<Result<RealMoodle, String>> = OnceLock::new();
    static MARIA45: OnceLock<Result<RealMoodle, String>> = OnceLock::new();
    match (db, version) {
        (Db::Postgres, Version::V50) => &PG,
        (Db::MariaDb, Version::V50) => &MARIA,
        (Db::Postgres, Version::V45) => &PG45,
        (Db::MariaDb, Version::V45) => &MARIA45,
    }
}

fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("VESSEL_SYNC_MOODLE_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/vessel-sync/moodle")
}

fn sha256_file(path: &Path) -> Result<String, String> {
    let hex = base::fsutil::file_sha256(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(hex.get(..16).unwrap_or(&hex).to_string())
}

fn output_text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Unpacks the tarball (`moodle/...`) so that its tree becomes `dest`.
fn unpack(tarball: &Path, dest: &Path) -> Result<(), String> {
    let parent = dest.parent().ok_or("no parent")?;
    let tmp = tempfile::tempdir_in(parent).map_err(|e| e.to_string())?;
    let mut zstd = Command::new("zstd")
        .args(["-dc", "--long=27"])
        .arg(tarball)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("zstd: {e} (apt-get install zstd)"))?;
    let stdout = zstd.stdout.take().ok_or("zstd: no stdout")?;
    let st = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(tmp.path())
        .stdin(stdout)
        .status()
        .map_err(|e| format!("tar: {e}"))?;
    let zst = zstd.wait().map_err(|e| e.to_string())?;
    if !st.success() || !zst.success() {
        return Err(format!("unpacking {} failed", tarball.display()));
    }
    std::fs::rename(tmp.path().join("moodle"), dest).map_err(|e| e.to_string())
}

fn php(code: &Path, args: &[&str]) -> Result<Output, String> {
    Command::new("php")
        .args(args)
        .current_dir(code)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("php: {e} (apt-get install php8.2-cli)"))
}

fn php_ok(code: &Path, args: &[&str]) -> Result<String, String> {
    let o = php(code, args)?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!("php {}: {}", args.join(" "), output_text(&o)))
    }
}

fn config_php(db: Db, db_port: u16, url: &str, dataroot: &Path) -> String {
    let collation = match db {
        Db::MariaDb => "\n  'dbcollation' => 'utf8mb4_unicode_ci',",
        Db::Postgres => "",
    };
    format!(
        "<?php  // Moodle configuration file (vessel-sync test kit)\n\
         unset($CFG);\nglobal $CFG;\n$CFG = new stdClass();\n\
         $CFG->dbtype    = '{}';\n$CFG->dblibrary = 'native';\n$CFG->dbhost    = '127.0.0.1';\n\
         $CFG->dbname    = 'moodle';\n$CFG->dbuser    = '{DB_USER}';\n$CFG->dbpass    = '{DB_PASSWORD}';\n\
         $CFG->prefix    = 'mdl_';\n$CFG->dboptions = array (\n  'dbpersist' => 0,\n  'dbport' => {db_port},\n  'dbsocket' => '',{collation}\n);\n\
         $CFG->wwwroot   = '{url}';\n$CFG->dataroot  = '{}';\n$CFG->admin     = 'admin';\n\
         $CFG->directorypermissions = 02777;\n\
         require_once(__DIR__ . '/lib/setup.php');\n",
        db.dbtype(),
        dataroot.display()
    )
}

/// Installs Moodle on a new database and keeps the result in `snap` (`db/`, `moodledata/`,
/// `tokens.json`).
fn install(db: Db, tarball: &Path, snap: &Path) -> Result<(), String> {
    let work = tempfile::Builder::new()
        .prefix("vessel-sync-moodle-install")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    let code = work.path().join("code");
    let dataroot = work.path().join("moodledata");
    unpack(tarball, &code)?;
    add_plugin(&code)?;
    let server = Server::start(db, None)?;
    server.create_database()?;
    let url = "http://127.0.0.1:1".to_string();
    let port = server.port().to_string();
    let args = [
        "-d".to_string(),
        "max_input_vars=5000".into(),
        "admin/cli/install.php".into(),
        "--non-interactive".into(),
        "--agree-license".into(),
        "--lang=en".into(),
        format!("--wwwroot={url}"),
        format!("--dataroot={}", dataroot.display()),
        format!("--dbtype={}", db.dbtype()),
        "--dbhost=127.0.0.1".into(),
        format!("--dbport={port}"),
        "--dbname=moodle".into(),
        format!("--dbuser={DB_USER}"),
        format!("--dbpass={DB_PASSWORD}"),
        "--prefix=mdl_".into(),
        "--fullname=Ship Moodle".into(),
        "--shortname=ship".into(),
        "--adminuser=admin".into(),
        format!("--adminpass={ADMIN_PASSWORD}"),
        "--adminemail=admin@example.invalid".into(),
        "--supportemail=admin@example.invalid".into(),
    ];
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    php_ok(&code, &argv).map_err(|e| format!("Moodle's install.php failed: {e}"))?;
    php_ok(
        &code,
        &["admin/cli/cfg.php", "--name=enablewebservices", "--set=1"],
    )?;
    php_ok(
        &code,
        &[
            "admin/cli/cfg.php",
            "--name=webserviceprotocols",
            "--set=rest",
        ],
    )?;
    std::fs::write(code.join("vessel_test_helper.php"), HELPER).map_err(|e| e.to_string())?;
    let mut setup = vec!["vessel_test_helper.php", "setup"];
    setup.extend_from_slice(AGENT_FUNCTIONS);
    let tokens = php_ok(&code, &setup)?;
    server.create_reader()?;
    // This process's own: another test process installing the same snapshot has another.
    let tmp = snap.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    server.stop_into(&tmp.join("db"))?;
    copy_tree(&dataroot, &tmp.join("moodledata"))?;
    std::fs::write(tmp.join("tokens.json"), tokens.trim()).map_err(|e| e.to_string())?;
    if snap.join("tokens.json").exists() {
        // Another process finished the same install first: keep its snapshot.
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(snap);
    std::fs::rename(&tmp, snap).map_err(|e| format!("{}: {e}", snap.display()))
}

impl RealMoodle {
    /// The instance on `db` that every test of this process shares, brought up on first use
    /// (from the cached install, or installing it).
    /// The version is 5.0, or the one `$VESSEL_SYNC_MOODLE_VERSION` names (`4.5`: the whole
    /// suite on Moodle 4.5 LTS).
    pub fn shared(db: Db) -> Result<&'static RealMoodle, String> {
        Self::shared_on(db, Version::default_for_run()?)
    }

    /// The shared instance of `version` on `db`.
    pub fn shared_on(db: Db, version: Version) -> Result<&'static RealMoodle, String> {
        cell(db, version)
            .get_or_init(|| {
                // Started from a thread that lives as long as the process: the servers get
                // their parent-death signal when the process ends, not when a test does.
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let _ = tx.send(RealMoodle::start_on(db, version));
                    loop {
                        std::thread::park();
                    }
                });
                rx.recv()
                    .unwrap_or_else(|_| Err("the Moodle starter thread died".into()))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Brings up a new instance of its own (from the cached install), for a test that changes
    /// the whole site; it is taken down when dropped.
    pub fn start(db: Db) -> Result<Self, String> {
        Self::start_on(db, Version::default_for_run()?)
    }

    /// A new instance of `version` of its own.
    pub fn start_on(db: Db, version: Version) -> Result<Self, String> {
        let tarball = tarball(version)?;
        let key = format!(
            "{}-{HARNESS}-{}-{}",
            sha256_file(&tarball)?,
            plugin_digest()?,
            db.name()
        );
        let snap = cache_root().join(&key);
        // One install at a time in this process: two tests asking for the same new snapshot at
        // once (the shared instance and a private one) would otherwise share its `.tmp` folder.
        static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let one = INSTALLING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !snap.join("tokens.json").exists() {
            let t = Instant::now();
            install(db, &tarball, &snap)?;
            // Snapshots of the same Moodle made with an older plugin are of no more use.
            let (prefix, suffix) = (
                format!("{}-{HARNESS}-", sha256_file(&tarball)?),
                format!("-{}", db.name()),
            );
            for e in std::fs::read_dir(cache_root())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                if name != key && name.starts_with(&prefix) && name.ends_with(&suffix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
            eprintln!(
                "real Moodle {}: installed on {} in {:.0} s, kept in {}",
                version.name(),
                db.name(),
                t.elapsed().as_secs_f64(),
                snap.display()
            );
        }
        drop(one);
        let tokens: Value = serde_json::from_str(
            &std::fs::read_to_string(snap.join("tokens.json")).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", snap.join("tokens.json").display()))?;
        let token = |k: &str| {
            tokens[k]
                .as_str()
                .map(str::to_string)
                .ok_or(format!("no {k} in tokens.json"))
        };
        let runs = PathBuf::from("/tmp/vessel-sync-moodle");
        std::fs::create_dir_all(&runs).map_err(|e| e.to_string())?;
        sweep(&runs);
        // One directory per instance: the shared one and the private ones of tests that change
        // the whole site (maintenance mode, an upgrade).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let root = runs.join(format!(
            "{}-{}-{}-{n}",
            std::process::id(),
            db.name(),
            version.name()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let code = root.join("code");
        let dataroot = root.join("moodledata");
        unpack(&tarball, &code)?;
        add_plugin(&code)?;
        copy_tree(&snap.join("moodledata"), &dataroot)?;
        let server = Server::start(db, Some(&snap.join("db")))?;
        let web_port = free_port()?;
        let url = format!("http://127.0.0.1:{web_port}");
        std::fs::write(
            code.join("config.php"),
            config_php(db, server.port(), &url, &dataroot),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(code.join("vessel_test_helper.php"), HELPER).map_err(|e| e.to_string())?;
        php_ok(&code, &["admin/cli/purge_caches.php"])?;
        let log = std::fs::File::create(root.join("web.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        // sh holds PHP's server and its workers in one process group and takes them all down
        // when the test process ends (the workers outlive a killed master otherwise).
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "trap 'trap - TERM; kill 0' TERM; php -d max_input_vars=5000 -S 127.0.0.1:{web_port} -t . & wait"
            ))
            .current_dir(&code)
            .env("PHP_CLI_SERVER_WORKERS", "4")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::setsid();
                Ok(())
            });
        }
        die_with_parent(&mut cmd, None, libc::SIGTERM);
        let web = cmd.spawn().map_err(|e| format!("php -S: {e}"))?;
        let m = RealMoodle {
            db,
            version,
            code,
            dataroot,
            url,
            agent_token: token("agent_token")?,
            admin_token: token("admin_token")?,
            server,
            web,
            root,
        };
        let t = Instant::now();
        loop {
            match m.ws(
                &m.agent_token,
                "core_webservice_get_site_info",
                &Params::new(),
            ) {
                Ok(_) => return Ok(m),
                Err(e) if t.elapsed() > Duration::from_secs(60) => {
                    return Err(format!(
                        "the real Moodle {} on {} does not answer: {e}\n{}",
                        version.name(),
                        db.name(),
                        m.web_log()
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Uninstalls the companion plugin through Moodle's own CLI (a site without it).
    pub fn uninstall_plugin(&self) -> Result<(), String> {
        php_ok(
            &self.code,
            &[
                "admin/cli/uninstall_plugins.php",
                "--plugins=local_vesselsync",
                "--run",
            ],
        )?;
        std::fs::remove_dir_all(self.code.join("local/vesselsync")).map_err(|e| e.to_string())?;
        php_ok(&self.code, &["admin/cli/purge_caches.php"]).map(|_| ())
    }

    /// What PHP's web server printed besides its access lines (for failure messages).
    pub fn web_log(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("web.log")).unwrap_or_default();
        // Not the access lines: PHP's warnings and errors.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                !(l.ends_with(" Accepted")
                    || l.ends_with(" Closing")
                    || l.contains("]: POST /")
                    || l.contains("]: GET /"))
            })
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Calls a web-service function with `token`; a Moodle exception comes back as `Err`.
    pub fn ws(&self, token: &str, function: &str, params: &Params) -> Result<Value, String> {
        let ws = Ws::new(&self.url, Token::new(token)?, Duration::from_secs(300))
            .map_err(|e| e.to_string())?;
        ws.call(function, params, Safety::Write)
            .map_err(|e| e.to_string())
    }

    /// Calls a web-service function as the admin (every function).
    pub fn admin(&self, function: &str, params: &Params) -> Result<Value, String> {
        self.ws(&self.admin_token, function, params)
    }

    /// The admin's token on a service `name` holding exactly `functions` (made if needed).
    pub fn service_token(&self, name: &str, functions: &[&str]) -> Result<String, String> {
        let mut args = vec!["vessel_test_helper.php", "service", name];
        args.extend_from_slice(functions);
        php_ok(&self.code, &args).map(|t| t.trim().into())
    }

    /// A token for `username` on the test service.
    pub fn token_for(&self, username: &str) -> Result<String, String> {
        php_ok(&self.code, &["vessel_test_helper.php", "token", username]).map(|t| t.trim().into())
    }

    /// Runs `php ARGS...` in the code root.
    pub fn php(&self, args: &[&str]) -> Result<Output, String> {
        php(&self.code, args)
    }

    /// Runs SQL on Moodle's database as its owner; rows come back one per line, fields
    /// separated by tabs.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        self.server.query(sql)
    }

    /// The agent's `[moodle]` section for this site: web services with the agent's token, the
    /// CLI scripts, and the read-only database user. Writes the token and password files into
    /// `dir`.
    pub fn agent_section(&self, dir: &Path) -> Result<String, String> {
        let token = dir.join("moodle.token");
        let pw = dir.join("moodle-db.password");
        std::fs::write(&token, format!("{}\n", self.agent_token)).map_err(|e| e.to_string())?;
        std::fs::write(&pw, format!("{RO_PASSWORD}\n")).map_err(|e| e.to_string())?;
        Ok(format!(
            "[moodle]\nurl = \"{}\"\ntoken_file = \"{}\"\nmoodle_dir = \"{}\"\nphp = \"/usr/bin/php\"\n\
             dataroot = \"{}\"\ndb_type = \"{}\"\ndb_host = \"127.0.0.1\"\ndb_port = {}\n\
             db_name = \"moodle\"\ndb_user = \"{RO_USER}\"\ndb_password_file = \"{}\"\n",
            self.url,
            token.display(),
            self.code.display(),
            self.dataroot.display(),
            self.db.name(),
            self.server.port(),
            pw.display()
        ))
    }
}

impl Drop for RealMoodle {
    fn drop(&mut self) {
        // SAFETY: signalling our own child's process group.
        unsafe {
            libc::kill(-(self.web.id() as i32), libc::SIGTERM);
        }
        let _ = self.web.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Removes the run directories of test processes that are gone.
fn sweep(runs: &Path) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
