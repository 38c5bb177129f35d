//! The database server under a real Moodle for the tests: a throwaway PostgreSQL 15 or
//! MariaDB 10.11, with Moodle's database and owner, and the read-only capture user.

use std::path::Path;

use super::{DB_PASSWORD, DB_USER, Db, RO_PASSWORD, RO_USER};
use crate::mariatemp::TempMaria;
use crate::pgtemp::TempPg;

pub(super) enum Server {
    Pg(TempPg),
    Maria(TempMaria),
}

impl Server {
    pub(super) fn start(db: Db, template: Option<&Path>) -> Result<Self, String> {
        Ok(match db {
            Db::Postgres => Server::Pg(TempPg::start_from(template)?),
            Db::MariaDb => Server::Maria(TempMaria::start_from(template)?),
        })
    }

    pub(super) fn port(&self) -> u16 {
        match self {
            Server::Pg(p) => p.port,
            Server::Maria(m) => m.port,
        }
    }

    pub(super) fn query(&self, sql: &str) -> Result<String, String> {
        match self {
            Server::Pg(p) => p.query("moodle", sql),
            Server::Maria(m) => m.sql(Some("moodle"), sql),
        }
    }

    pub(super) fn create_database(&self) -> Result<(), String> {
        match self {
            Server::Pg(p) => {
                p.psql(
                    "postgres",
                    &format!("CREATE ROLE {DB_USER} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'"),
                )?;
                p.psql(
                    "postgres",
                    &format!("CREATE DATABASE moodle OWNER {DB_USER}"),
                )?;
            }
            Server::Maria(m) => {
                m.sql(
                    None,
                    &format!(
                        "CREATE DATABASE moodle CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
                         CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';
                         GRANT ALL ON moodle.* TO '{DB_USER}'@'127.0.0.1';"
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// The read-only capture user, with the GRANTs of docs/progress.md.
    pub(super) fn create_reader(&self) -> Result<(), String> {
        match self {
            Server::Pg(p) => p
                .psql(
                    "moodle",
                    &format!(
                        "CREATE ROLE {RO_USER} LOGIN PASSWORD '{RO_PASSWORD}';
                         GRANT CONNECT ON DATABASE moodle TO {RO_USER};
                         GRANT USAGE ON SCHEMA public TO {RO_USER};
                         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {RO_USER};
                         ALTER DEFAULT PRIVILEGES FOR ROLE {DB_USER} IN SCHEMA public GRANT SELECT ON TABLES TO {RO_USER};"
                    ),
                )
                .map(|_| ()),
            Server::Maria(m) => m
                .sql(
                    None,
                    &format!(
                        "CREATE USER '{RO_USER}'@'127.0.0.1' IDENTIFIED BY '{RO_PASSWORD}';
                         GRANT SELECT ON moodle.* TO '{RO_USER}'@'127.0.0.1';"
                    ),
                )
                .map(|_| ()),
        }
    }

    pub(super) fn stop_into(self, dest: &Path) -> Result<(), String> {
        match self {
            Server::Pg(p) => p.stop_into(dest),
            Server::Maria(m) => m.stop_into(dest),
        }
    }
}
