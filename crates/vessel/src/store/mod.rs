//! The agent's own SQLite database (`STATE_DIR/journal.db`): the journal of bundles and
//! commands, the audit trail, and the data that commands store (legacy-id mappings, shore's
//! acknowledgement watermark). This module is the only place in the agent that speaks SQL.
//!
//! Durability: WAL journal mode with `synchronous=FULL`, so a transaction that returned is on
//! disk even after a power cut. Every state transition of a bundle or command is one
//! transaction that also writes its audit line, so the journal and the audit trail cannot
//! disagree. Callers commit a transition *before* acting on it (law 7).
//!
//! Migrations are embedded SQL scripts applied in order inside a transaction and recorded in
//! `PRAGMA user_version`; a database written by a newer build is refused rather than guessed at.
//! `PRAGMA quick_check` runs at every open for writing; a damaged file stops the agent with a
//! message naming the file instead of working on bad state.

/// A count as SQLite's integer (saturating: no count here comes near 2^63).
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

mod audit;
mod captured;
mod content;
mod facts;
mod journal;
mod mapping;
mod outbox;
mod queries;
mod reports;
mod sequence;
mod transitions;
mod trust;

pub use audit::{AuditEntry, AuditEvent};
pub use captured::{CapturedState, LocalKey, QuarantinedProgress};
pub use content::Held;
pub use facts::UplinkState;
pub use journal::{
    Admission, BundleRow, BundleState, CommandOutcome, CommandRow, CommandState, NewBundle,
    NewCommand, Overview, SkippedRange, StreamGap,
};
pub use mapping::{AckState, MappingRow, MappingWrite, Origin};
pub use outbox::{Batch, CourseBacklog, NewBatch, OutboxSummary};
pub use transitions::DEATH_WINDOW;
pub use trust::{Revocation, StoredCert, VesselKey};

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The database is damaged.
    #[error(
        "database {path} is damaged ({detail}); stop the agent, move the file aside and restore it from backup (the archive/ directory holds every bundle received)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What quick_check said.
        detail: String,
    },
    /// Written by a newer build.
    #[error(
        "database {path} has schema version {found}, newer than this build knows ({known}); run the newer vessel-sync"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// The state belongs to another vessel.
    #[error(
        "database {path} belongs to vessel {found:?}, but the config says {configured:?}; each vessel needs its own state directory"
    )]
    WrongVessel {
        /// The file.
        path: PathBuf,
        /// Recorded vessel.
        found: String,
        /// Configured vessel.
        configured: String,
    },
    /// A misuse of the store inside this program.
    #[error("internal error: {0}")]
    Misuse(&'static str),
    /// Not created yet (read-only open).
    #[error(
        "no journal at {0} yet: the agent has not run with this config (start it, or run 'vessel-sync agent --once')"
    )]
    Missing(PathBuf),
}

impl StoreError {
    /// Whether another writer held the journal's lock past the busy timeout.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite { source, .. } if matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            )
        )
    }
}

impl base::retry::Retriable for StoreError {
    /// A busy journal passes; damage, a newer schema or another vessel's state do not.
    fn is_retriable(&self) -> bool {
        self.is_busy()
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, StoreError>;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_journal.sql"),
    include_str!("migrations/0002_progress.sql"),
    include_str!("migrations/0003_trust.sql"),
    include_str!("migrations/0004_content.sql"),
    include_str!("migrations/0005_reports.sql"),
    include_str!("migrations/0006_skipped_ranges.sql"),
    include_str!("migrations/0007_deaths.sql"),
];

/// An open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A transaction: the only way to change state. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
    path: &'a Path,
    /// The next outbox sequence, read once per transaction.
    next_outbox_seq: std::cell::Cell<Option<i64>>,
}

trait Ctx<T> {
    fn ctx(self, path: &Path) -> Result<T>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, path: &Path) -> Result<T> {
        self.map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl Store {
    /// Opens (creating if needed) the database for the agent: WAL, `synchronous=FULL`,
    /// migrations, integrity check, and the vessel-id guard.
    pub fn open(path: &Path, vessel_id: &str) -> Result<Self> {
        let conn = Connection::open(path).ctx(path)?;
        conn.busy_timeout(Duration::from_secs(30)).ctx(path)?;
        conn.pragma_update(None, "journal_mode", "WAL").ctx(path)?;
        conn.pragma_update(None, "synchronous", "FULL").ctx(path)?;
        conn.pragma_update(None, "foreign_keys", "ON").ctx(path)?;
        // 32 MiB of page cache: a first capture of a large site queues 100,000 records at once.
        conn.pragma_update(None, "cache_size", -32_768).ctx(path)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .ctx(path)?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: check,
            });
        }
        let mut store = Self {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        store.guard_vessel(vessel_id)?;
        Ok(store)
    }

    /// Opens an existing database read-only (status, audit export) while the agent may run.
    pub fn open_readonly(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ctx(path)?;
        conn.busy_timeout(Duration::from_secs(10)).ctx(path)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .ctx(path)?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known: MIGRATIONS.len() as i64,
            });
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .ctx(&path)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path,
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(version).unwrap_or(0))
        {
            let tx = self.conn.transaction().ctx(&path)?;
            tx.execute_batch(sql).ctx(&path)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .ctx(&path)?;
            tx.commit().ctx(&path)?;
        }
        Ok(())
    }

    fn guard_vessel(&mut self, vessel_id: &str) -> Result<()> {
        let path = self.path.clone();
        let found: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'vessel_id'", [], |r| {
                r.get(0)
            })
            .optional()
            .ctx(&path)?;
        match found {
            Some(found) if found != vessel_id => Err(StoreError::WrongVessel {
                path,
                found,
                configured: vessel_id.to_string(),
            }),
            Some(_) => Ok(()),
            None => {
                self.conn
                    .execute(
                        "INSERT INTO meta(key, value) VALUES ('vessel_id', ?1)",
                        params![vessel_id],
                    )
                    .ctx(&path)?;
                Ok(())
            }
        }
    }

    /// Starts a transaction.
    pub fn begin(&mut self) -> Result<Tx<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(&self.path)?;
        Ok(Tx {
            tx,
            path: &self.path,
            next_outbox_seq: std::cell::Cell::new(None),
        })
    }

    /// Runs `f` in a transaction and commits it when `f` succeeds.
    pub fn write<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let tx = self.begin()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

impl Tx<'_> {
    /// Commits.
    pub fn commit(self) -> Result<()> {
        let path = self.path;
        self.tx.commit().ctx(path)
    }

    /// The first row of a query, if any.
    fn row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        self.tx.query_row(sql, params, f).optional().ctx(self.path)
    }

    /// Every row of a query.
    fn rows<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        collect(&self.tx, self.path, sql, params, f)
    }
}

impl Store {
    /// The first row of a query, if any.
    fn row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        self.conn
            .query_row(sql, params, f)
            .optional()
            .ctx(&self.path)
    }

    /// Every row of a query.
    fn rows<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        collect(&self.conn, &self.path, sql, params, f)
    }
}

fn collect<T, P: rusqlite::Params>(
    conn: &Connection,
    path: &Path,
    sql: &str,
    params: P,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare(sql).ctx(path)?;
    let rows = stmt.query_map(params, f).ctx(path)?;
    rows.collect::<rusqlite::Result<Vec<T>>>().ctx(path)
}
