//! Moodle's databases for the capture tests: the test kit's throwaway PostgreSQL and MariaDB
//! servers (`testkit::{pgtemp, mariatemp}`, the one family of throwaway databases) loaded with
//! the schema and data captured from Moodle 5.0 (`../shared/moodle/schema/`), and a read-only
//! user with exactly the GRANTs `docs/progress.md` documents. Killed when dropped.

use std::path::{Path, PathBuf};

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
        // The GRANTs of docs/progress.md; the tables here belong to the role that loaded them,
        // so it is the owner the default privileges name.
        pg.psql(
            "moodle",
            &format!(
                "CREATE ROLE {RO_USER} LOGIN PASSWORD '{RO_PASSWORD}';
                 GRANT CONNECT ON DATABASE moodle TO {RO_USER};
                 GRANT USAGE ON SCHEMA public TO {RO_USER};
                 GRANT SELECT ON ALL TABLES IN SCHEMA public TO {RO_USER};
                 ALTER DEFAULT PRIVILEGES FOR ROLE CURRENT_USER IN SCHEMA public GRANT SELECT ON TABLES TO {RO_USER};"
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

/// A throwaway MariaDB server (the test kit's) with database `moodle` holding Moodle's real
/// schema and data.
pub struct Maria {
    maria: testkit::mariatemp::TempMaria,
    pub port: u16,
}

impl Maria {
    /// Starts a server and creates database `moodle` with the schema and data loaded.
    pub fn start() -> Self {
        let maria = testkit::mariatemp::TempMaria::start().expect("throwaway MariaDB");
        let port = maria.port;
        let m = Maria { maria, port };
        m.sql(
            None,
            "CREATE DATABASE moodle CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        );
        let schema = schema_dir();
        m.sql_file("moodle", &schema.join("mariadb.sql"));
        m.sql_file("moodle", &schema.join("mariadb-data.sql"));
        // The GRANTs of docs/progress.md, verbatim.
        m.sql(
            None,
            &format!(
                "CREATE USER '{RO_USER}'@'127.0.0.1' IDENTIFIED BY '{RO_PASSWORD}';
                 GRANT SELECT ON moodle.* TO '{RO_USER}'@'127.0.0.1';"
            ),
        );
        m
    }

    /// Runs SQL as root; panics on error.
    pub fn sql(&self, db: Option<&str>, sql: &str) -> String {
        self.maria
            .sql(db, sql)
            .unwrap_or_else(|e| panic!("mariadb {sql}: {e}"))
    }

    /// Runs the SQL file as root; panics on error.
    pub fn sql_file(&self, db: &str, file: &Path) {
        self.maria
            .sql_file(db, file)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The agent's `[moodle]` section for this server (password in `pwfile`).
    pub fn moodle_section(&self, pwfile: &Path) -> String {
        std::fs::write(pwfile, format!("{RO_PASSWORD}\n")).unwrap();
        format!(
            "[moodle]\ndb_type = \"mariadb\"\ndb_host = \"127.0.0.1\"\ndb_port = {}\ndb_name = \"moodle\"\ndb_user = \"{RO_USER}\"\ndb_password_file = \"{}\"\n",
            self.port,
            pwfile.display()
        )
    }
}
