//! The end-to-end suite against a real Moodle 5.0 (or 4.5 LTS with
//! `VESSEL_SYNC_MOODLE_VERSION=4.5`; `testkit::realmoodle`), through the real binary and a real
//! agent config, once on PostgreSQL and once on MariaDB. One Moodle per
//! database serves the whole run; each test makes its own categories, courses and users under
//! a tag of its own, so tests do not depend on each other. A failing test prints what Moodle
//! said: the command's reason (which carries the CLI script's output), the agent's log and the
//! tail of PHP's web-server log.

#![allow(dead_code)]

mod cloud;
mod conformance;
mod courses;
mod delta;
mod plugin;
mod progress;
mod site;
mod users;

use std::cell::RefCell;
use std::path::Path;
use std::process::Output;

use moodle::ws::Params;
use testkit::realmoodle::{Db, RealMoodle};
use vessel::store::CommandState;
use wire::envelope::{CommandEntry, Source};

use crate::support::{Options, VESSEL, Vessel, draft};

/// Runs each named scenario `fn NAME(db: Db)` of the calling module as a test on PostgreSQL
/// and as one on MariaDB.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $( #[test] fn $name() { super::$name(testkit::realmoodle::Db::Postgres) } )*
        }
        mod mariadb {
            $( #[test] fn $name() { super::$name(testkit::realmoodle::Db::MariaDb) } )*
        }
    };
}

/// A real backup from `shared/moodle/mbz/` (copied into `tests/fixtures/moodle/mbz/`).
pub fn mbz(name: &str) -> Vec<u8> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = [
        here.join("tests/fixtures/moodle/mbz"),
        here.join("../shared/moodle/mbz"),
    ]
    .into_iter()
    .map(|d| d.join(name))
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("{name} not found in tests/fixtures/moodle/mbz"));
    std::fs::read(path).unwrap()
}

fn lock(db: Db) -> std::sync::MutexGuard<'static, ()> {
    static PG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    static MARIA: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let m = match db {
        Db::Postgres => &PG,
        Db::MariaDb => &MARIA,
    };
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Moodle a [`Site`] works on: the one the whole run shares, or one of its own.
pub enum Moodle {
    Shared(&'static RealMoodle),
    Own(Box<RealMoodle>),
}

impl std::ops::Deref for Moodle {
    type Target = RealMoodle;
    fn deref(&self) -> &RealMoodle {
        match self {
            Moodle::Shared(m) => m,
            Moodle::Own(m) => m,
        }
    }
}

/// A vessel beside a real Moodle.
pub struct Site {
    pub m: Moodle,
    pub v: Vessel,
    /// Prefix of every name this test makes in Moodle.
    pub tag: String,
    log: RefCell<String>,
}

impl Site {
    pub fn new(db: Db, tag: &str) -> Self {
        Self::with(db, tag, "")
    }

    /// With more agent config after the `[moodle]` section.
    pub fn with(db: Db, tag: &str, extra: &str) -> Self {
        let m = RealMoodle::shared(db).unwrap_or_else(|e| panic!("real Moodle on {db:?}: {e}"));
        Self::on(Moodle::Shared(m), tag, extra)
    }

    /// Beside the shared Moodle of `version`.
    pub fn shared_on(db: Db, version: testkit::realmoodle::Version, tag: &str) -> Self {
        let m = RealMoodle::shared_on(db, version)
            .unwrap_or_else(|e| panic!("real Moodle {} on {db:?}: {e}", version.name()));
        Self::on(Moodle::Shared(m), tag, "")
    }

    /// Beside a Moodle of its own, for a test that changes the whole site (maintenance mode,
    /// an upgrade).
    pub fn alone(db: Db, tag: &str) -> Self {
        let version = testkit::realmoodle::Version::default_for_run().unwrap();
        Self::alone_on(db, version, tag)
    }

    /// Beside a Moodle of `version` of its own.
    pub fn alone_on(db: Db, version: testkit::realmoodle::Version, tag: &str) -> Self {
        let m = RealMoodle::start_on(db, version)
            .unwrap_or_else(|e| panic!("real Moodle {} on {db:?}: {e}", version.name()));
        Self::on(Moodle::Own(Box::new(m)), tag, "")
    }

    fn on(m: Moodle, tag: &str, extra: &str) -> Self {
        let scratch = tempfile::tempdir().unwrap().keep();
        let section = m.agent_section(&scratch).unwrap();
        let v = Vessel::with(Options {
            extra: Box::leak(format!("{section}{extra}").into_boxed_str()),
            ..Options::default()
        });
        Self {
            m,
            v,
            tag: tag.to_uppercase(),
            log: RefCell::new(String::new()),
        }
    }

    /// With a real shore on loopback that the vessel's uplink reaches over HTTPS, registered
    /// but not yet serving (`shore.start()`).
    pub fn with_shore(db: Db, tag: &str) -> (Self, crate::support::shore::Shore) {
        let version = testkit::realmoodle::Version::default_for_run().unwrap();
        Self::with_shore_on(db, version, tag)
    }

    /// With a real shore, beside the shared Moodle of `version`.
    pub fn with_shore_on(
        db: Db,
        version: testkit::realmoodle::Version,
        tag: &str,
    ) -> (Self, crate::support::shore::Shore) {
        let shore = crate::support::shore::Shore::new();
        let m = RealMoodle::shared_on(db, version)
            .unwrap_or_else(|e| panic!("real Moodle {} on {db:?}: {e}", version.name()));
        let s = Self::on(Moodle::Shared(m), tag, "");
        wire::envelope::SecretKey::from_seed([5u8; 32])
            .write_pair(&s.v.path("keys/vessel"), VESSEL)
            .unwrap();
        shore.register(&s.v);
        crate::progress::append(
            &s.v,
            &format!(
                "[uplink]\nmode = \"https\"\nurl = \"https://127.0.0.1:{}\"\ntoken_file = \"token\"\nsigning_key = \"keys/vessel.key\"\nca_file = \"{}\"\n",
                shore.port,
                shore.path("ca.pem").display()
            ),
        );
        (s, shore)
    }

    /// Gives the agent `token` for the ship's Moodle (in the `[moodle] token_file` its config
    /// names).
    pub fn use_token(&self, token: &str) {
        let cfg = std::fs::read_to_string(&self.v.config).unwrap();
        let file = cfg
            .lines()
            .find_map(|l| l.strip_prefix("token_file = \""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("the agent config names a Moodle token file");
        std::fs::write(file, format!("{token}\n")).unwrap();
    }

    /// Gives the agent a token on a service holding its functions and the companion plugin's
    /// (imports with their time, crew-list checks in bulk).
    pub fn use_plugin_token(&self) {
        let token = self
            .m
            .service_token(
                "vessel_sync_plugin",
                &[
                    testkit::realmoodle::AGENT_FUNCTIONS,
                    shore::forward::PLUGIN_FUNCTIONS,
                ]
                .concat(),
            )
            .unwrap();
        self.use_token(&token);
    }

    /// `vessel-sync sync`: progress to shore, acknowledgements back; must not fail.
    pub fn sync(&self) -> serde_json::Value {
        let o = self.run(&["sync", "--json"], &[]);
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("sync printed no JSON{}", self.said()))
    }

    /// `NAME` under this test's tag.
    pub fn name(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// What Moodle and the agent said, for failure messages.
    pub fn said(&self) -> String {
        format!(
            "\n--- agent log\n{}\n--- PHP web server (last lines)\n{}",
            self.log.borrow(),
            self.m.web_log()
        )
    }

    fn keep(&self, what: &str, o: &Output) {
        let mut log = self.log.borrow_mut();
        log.push_str(&format!(
            "$ {what}: {:?}\n{}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }

    /// Runs `vessel-sync ARGS --config agent.toml` and keeps its output for failure messages.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut full: Vec<&str> = args.to_vec();
        let cfg = self.v.config.to_str().unwrap();
        full.extend(["--config", cfg]);
        // One agent at a time per Moodle, as on a ship (two restores of backups holding the same
        // learners at once fail on Moodle's unique keys).
        let _one = lock(self.m.db);
        let o = self.v.run_env(&full, env);
        drop(_one);
        self.keep(&args.join(" "), &o);
        o
    }

    /// One agent pass (`agent --once`), which must succeed.
    pub fn once(&self) {
        self.once_env(&[]);
    }

    pub fn once_env(&self, env: &[(&str, &str)]) {
        let o = self.run(&["agent", "--once"], env);
        assert!(o.status.success(), "agent --once failed{}", self.said());
    }

    /// One agent pass `offset` seconds later (past retry times).
    pub fn once_at(&self, offset: i64) {
        self.once_env(&[("VESSEL_SYNC_CLOCK_OFFSET", &offset.to_string())]);
    }

    pub fn send(&self, seq: u64, commands: Vec<CommandEntry>, files: Vec<(&str, Vec<u8>)>) {
        let name = format!("{seq:04}.vsb");
        let built = self.v.bundle(
            &name,
            draft(
                VESSEL,
                seq,
                commands,
                files
                    .into_iter()
                    .map(|(n, b)| (n, Source::Bytes(b)))
                    .collect(),
            ),
        );
        self.v.drop_in(&built, &name);
    }

    pub fn command(&self, id: &str) -> (CommandState, String) {
        self.v
            .find_command(id)
            .unwrap_or_else(|| panic!("no command {id}{}", self.said()))
    }

    /// The command must have ended in `state`; returns its note.
    pub fn expect(&self, id: &str, state: CommandState) -> String {
        let (s, note) = self.command(id);
        assert_eq!(s, state, "{id}: {note}{}", self.said());
        note
    }

    /// Rows of a query on Moodle's database, fields split.
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.m
            .sql(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }

    /// A single value.
    pub fn value(&self, sql: &str) -> String {
        let rows = self.rows(sql);
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows[0][0].clone()
    }

    /// Calls a web-service function as the admin.
    pub fn admin(&self, function: &str, params: &Params) -> serde_json::Value {
        self.m
            .admin(function, params)
            .unwrap_or_else(|e| panic!("{function}: {e}{}", self.said()))
    }

    /// Makes a top-level category with idnumber `TAG-NAME`; returns its id.
    pub fn category(&self, name: &str) -> i64 {
        let idn = self.name(name);
        let r = self.admin(
            "core_course_create_categories",
            &Params::new()
                .set("categories[0][name]", &idn)
                .set("categories[0][idnumber]", &idn)
                .set("categories[0][parent]", 0),
        );
        r[0]["id"].as_i64().unwrap()
    }

    /// (id, shortname, idnumber, category, visible) of the course with this idnumber or
    /// shortname.
    pub fn course(&self, key: &str) -> Option<(i64, String, String, i64, i64)> {
        let rows = self.rows(&format!(
            "SELECT id, shortname, idnumber, category, visible FROM mdl_course WHERE idnumber = '{key}' OR shortname = '{key}' ORDER BY id"
        ));
        assert!(rows.len() <= 1, "{key}: {rows:?}");
        rows.first().map(|r| {
            (
                r[0].parse().unwrap(),
                r[1].clone(),
                r[2].clone(),
                r[3].parse().unwrap(),
                r[4].parse().unwrap(),
            )
        })
    }

    /// Courses in category `id`.
    pub fn courses_in(&self, category: i64) -> Vec<String> {
        self.rows(&format!(
            "SELECT shortname FROM mdl_course WHERE category = {category} ORDER BY id"
        ))
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
    }
}
