//! The shore's store: SQLite (`STATE_DIR/shore.db`, WAL with `synchronous=FULL`, so a batch is
//! on disk before shore acknowledges it) or PostgreSQL (`[store] backend = "postgres"`), every
//! statement written once over [`sql`]. This module holds the schema, opening and migrations,
//! the bundle queue and the export's reads; beside it: `registry` (vessels, their keys and
//! tokens, contacts and refusals), `batches` (storing a batch), `content` (course content ashore and what vessels hold),
//! `forward` (the cloud forwarding state), `reports` (vessels' command reports), `fleet` (the
//! dashboard's history), `sessions` (dashboard logins, leases) and `migrate` (SQLite to
//! PostgreSQL).

use std::cell::{RefCell, RefMut};
use std::path::Path;

use wire::progress::{Record, RecordKind};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS vessels (
    id            TEXT PRIMARY KEY,
    token_sha256  TEXT NOT NULL,
    pubkey        TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    added_at      INTEGER NOT NULL,
    revoked_at    INTEGER,
    last_contact  INTEGER,
    acked_seq     INTEGER NOT NULL DEFAULT 0,
    records       INTEGER NOT NULL DEFAULT 0,
    oldest_unsent INTEGER,
    outbox_depth  INTEGER,
    ack_bundle_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batches (
    vessel       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    envelope_id  TEXT NOT NULL,
    records      INTEGER NOT NULL,
    new_records  INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    via          TEXT NOT NULL,
    PRIMARY KEY (vessel, seq)
);
CREATE TABLE IF NOT EXISTS records (
    record_id     BLOB PRIMARY KEY,
    vessel        TEXT NOT NULL,
    batch_seq     INTEGER NOT NULL,
    kind          INTEGER NOT NULL,
    user_key      TEXT NOT NULL,
    course_key    TEXT NOT NULL,
    item_key      TEXT NOT NULL,
    user_legacy   TEXT NOT NULL,
    course_legacy TEXT NOT NULL,
    item_legacy   TEXT NOT NULL,
    value         TEXT NOT NULL,
    vtime         INTEGER NOT NULL,
    received_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_received ON records(received_at);
CREATE INDEX IF NOT EXISTS records_user ON records(user_key);
CREATE TABLE IF NOT EXISTS queue (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient  TEXT NOT NULL,
    bundle_id  TEXT NOT NULL,
    file       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    queued_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vessel_keys (
    vessel     TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    pubkey     TEXT NOT NULL,
    from_seq   INTEGER NOT NULL,
    until_seq  INTEGER,
    added_at   INTEGER NOT NULL,
    how        TEXT NOT NULL,
    PRIMARY KEY (vessel, key_id)
);
CREATE TABLE IF NOT EXISTS content (
    sha256    TEXT PRIMARY KEY,
    size      INTEGER NOT NULL,
    added_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS queue_content (
    queue_id  INTEGER NOT NULL,
    name      TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    size      INTEGER NOT NULL,
    PRIMARY KEY (queue_id, name)
);
CREATE TABLE IF NOT EXISTS vessel_holds (
    vessel    TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    since     INTEGER NOT NULL,
    PRIMARY KEY (vessel, sha256)
);
CREATE TABLE IF NOT EXISTS variants (
    queue_id  INTEGER NOT NULL,
    vessel    TEXT NOT NULL,
    file      TEXT NOT NULL,
    size      INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    carried   INTEGER NOT NULL,
    PRIMARY KEY (queue_id, vessel)
);
CREATE TABLE IF NOT EXISTS holds_cursor (
    vessel    TEXT PRIMARY KEY,
    cursor    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS needs (
    vessel     TEXT NOT NULL,
    bundle_id  TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    asked_at   INTEGER NOT NULL,
    answered   INTEGER,
    PRIMARY KEY (vessel, bundle_id, sha256)
);
CREATE TABLE IF NOT EXISTS refusals (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    vessel   TEXT NOT NULL,
    code     TEXT NOT NULL,
    message  TEXT NOT NULL
);
";

mod batches;
mod content;
mod fleet;
mod forward;
mod migrate;
mod registry;
mod reports;
mod sessions;
pub mod sql;
pub use batches::{BatchIn, Stored};
pub use fleet::{HISTORY_DAYS, HeldDeletion, Point};
pub use forward::{Ending, ForwardSummary, Retirement, Settled, ToForward, Written};
pub use migrate::Copied;
pub use registry::{REFUSAL_CHARS, REFUSAL_DAYS, REFUSALS_KEPT, Vessel, VesselKey};
pub use reports::Reported;
pub use sql::{Backend, DbErrorKind, ShoreDbError};

use sql::{Db, Result as DbResult, Row};

/// A record read from `records`, its columns from `at` on: record_id, kind, the keys, the
/// legacy ids, value, vtime, received_at.
fn record_row(r: &Row, at: usize) -> std::result::Result<(Vec<u8>, Record, i64), String> {
    let code: u8 = r.get(at + 1)?;
    Ok((
        r.get(at)?,
        Record {
            kind: RecordKind::from_code(code).unwrap_or(RecordKind::ActivityCompletion),
            user: r.get(at + 2)?,
            course: r.get(at + 3)?,
            item: r.get(at + 4)?,
            user_legacy: r.get(at + 5)?,
            course_legacy: r.get(at + 6)?,
            item_legacy: r.get(at + 7)?,
            value: r.get(at + 8)?,
            time: r.get(at + 9)?,
        },
        r.get(at + 10)?,
    ))
}

/// Result alias.
pub type Result<T> = DbResult<T>;

/// A queued bundle.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Queued {
    /// Queue id (the download cursor).
    pub id: i64,
    /// Recipient vessel or `*`.
    pub recipient: String,
    /// Bundle id.
    pub bundle_id: String,
    /// File name under `STATE_DIR/bundles/`.
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 hex.
    pub sha256: String,
}

/// The shore database: SQLite by default, PostgreSQL for a fleet with several receivers.
pub struct ShoreStore {
    db: RefCell<Db>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn schemas() -> [&'static str; 7] {
    [
        SCHEMA,
        forward::SCHEMA,
        forward::RETIRE_SCHEMA,
        forward::CREW_SCHEMA,
        reports::SCHEMA,
        fleet::SCHEMA,
        sessions::SCHEMA,
    ]
}

/// The newest PostgreSQL schema version this build knows.
const PG_SCHEMA_VERSION: i64 = 2;

/// A SQLite schema in PostgreSQL's types: 64-bit integers, BYTEA, sequences for the
/// auto-numbered keys.
fn pg_ddl(sqlite: &str) -> String {
    sqlite
        .replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
        .replace("INTEGER", "BIGINT")
        .replace("BLOB", "BYTEA")
}

impl ShoreStore {
    /// Opens (creating) a SQLite database file.
    pub fn open(path: &Path) -> Result<Self> {
        let mut db = Db::sqlite(path)?;
        for s in schemas() {
            db.batch(s)?;
        }
        // Columns and rows added after the first release, added to older files in place.
        let has_previous: bool = db.query_one(
            "SELECT COUNT(*) FROM pragma_table_info('batches') WHERE name = 'previous'",
            &[],
            |r| r.get(0),
        )?;
        if !has_previous {
            db.batch("ALTER TABLE batches ADD COLUMN previous TEXT")?;
        }
        Self::backfill_keys(&mut db)?;
        Ok(Self {
            db: RefCell::new(db),
        })
    }

    /// Connects to a PostgreSQL database and brings its schema up to date (one receiver at a
    /// time: the migration runs under an advisory lock).
    pub fn connect(config: &postgres::Config) -> Result<Self> {
        let mut db = Db::postgres(config)?;
        db.transaction(|db| {
            db.lock("vessel-sync schema")?;
            db.batch(
                "CREATE TABLE IF NOT EXISTS vessel_sync_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )?;
            let have: i64 = db.query_one(
                "SELECT COALESCE(MAX(version), 0) FROM vessel_sync_schema",
                &[],
                |r| r.get(0),
            )?;
            if have > PG_SCHEMA_VERSION {
                return Err(db.error(format!(
                    "its schema is version {have}, newer than this vessel-sync knows ({PG_SCHEMA_VERSION}): upgrade this receiver to the version the others run"
                )));
            }
            if have < 1 {
                for s in schemas() {
                    db.batch(&pg_ddl(s))?;
                }
                db.batch(
                    "ALTER TABLE batches ADD COLUMN IF NOT EXISTS previous TEXT;
                     ALTER TABLE records ADD COLUMN IF NOT EXISTS rowid BIGSERIAL;
                     CREATE UNIQUE INDEX IF NOT EXISTS records_rowid ON records(rowid);",
                )?;
                db.execute(
                    "INSERT INTO vessel_sync_schema(version, applied_at) VALUES (1, CAST(EXTRACT(EPOCH FROM now()) AS BIGINT))",
                    &[],
                )?;
            }
            // Version 2: what crew moves sent (shore crew move remembers).
            if have < 2 {
                db.batch(&pg_ddl(forward::CREW_SCHEMA))?;
                db.execute(
                    "INSERT INTO vessel_sync_schema(version, applied_at) VALUES (2, CAST(EXTRACT(EPOCH FROM now()) AS BIGINT))",
                    &[],
                )?;
            }
            Self::backfill_keys(db)
        })?;
        Ok(Self {
            db: RefCell::new(db),
        })
    }

    /// Vessels registered before keys were kept per sequence get their one key.
    fn backfill_keys(db: &mut Db) -> Result<()> {
        db.execute(
            "INSERT INTO vessel_keys(vessel, key_id, pubkey, from_seq, until_seq, added_at, how)
             SELECT id, key_id, pubkey, 0, NULL, added_at, 'registered' FROM vessels v
             WHERE NOT EXISTS (SELECT 1 FROM vessel_keys k WHERE k.vessel = v.id)
             ON CONFLICT DO NOTHING",
            &[],
        )
        .map(|_| ())
    }

    /// The connection (one statement or transaction at a time).
    fn db(&self) -> Result<RefMut<'_, Db>> {
        self.db.try_borrow_mut().map_err(|_| {
            sql::ShoreDbError::internal("the shore store was used again while a call was under way")
        })
    }

    /// Which engine holds the store.
    pub fn backend(&self) -> Result<Backend> {
        Ok(self.db()?.backend())
    }

    /// Makes `key_id` the vessel's only key, for every sequence; earlier keys are refused from
    /// now on (`shore vessel add` again, `shore vessel rekey`).
    fn set_only_key(
        &self,
        id: &str,
        pubkey: &str,
        key_id: &str,
        how: &str,
        now: i64,
    ) -> Result<()> {
        let mut db = self.db()?;
        db.execute(
            "UPDATE vessel_keys SET until_seq = 0 WHERE vessel = ?1 AND key_id != ?2",
            &[&id, &key_id],
        )?;
        db.execute(
            "INSERT INTO vessel_keys(vessel, key_id, pubkey, from_seq, until_seq, added_at, how)
             VALUES (?1, ?2, ?3, 0, NULL, ?4, ?5)
             ON CONFLICT(vessel, key_id) DO UPDATE SET from_seq = 0, until_seq = NULL, how = excluded.how",
            &[&id, &key_id, &pubkey, &now, &how],
        )?;
        Ok(())
    }

    /// Queues a bundle for `recipient` (a vessel id or `*`).
    pub fn enqueue_bundle(&self, q: &Queued, now: i64) -> Result<i64> {
        self.db()?.query_one(
            "INSERT INTO queue(recipient, bundle_id, file, size, sha256, queued_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             RETURNING id",
            &[&q.recipient, &q.bundle_id, &q.file, &to_i64(q.size), &q.sha256, &now],
            |r| r.get(0),
        )
    }

    /// Bundles for `vessel` after the vessel's download cursor.
    pub fn bundles_for(&self, vessel: &str, after: i64) -> Result<Vec<Queued>> {
        self.db()?.query(
            "SELECT id, recipient, bundle_id, file, size, sha256 FROM queue
             WHERE (recipient = ?1 OR recipient = '*') AND id > ?2 ORDER BY id",
            &[&vessel, &after],
            |r| {
                Ok(Queued {
                    id: r.get(0)?,
                    recipient: r.get(1)?,
                    bundle_id: r.get(2)?,
                    file: r.get(3)?,
                    size: r.get(4)?,
                    sha256: r.get(5)?,
                })
            },
        )
    }

    /// One queued bundle, if `vessel` may fetch it.
    pub fn queued(&self, vessel: &str, id: i64) -> Result<Option<Queued>> {
        Ok(self
            .bundles_for(vessel, id.saturating_sub(1))?
            .into_iter()
            .find(|q| q.id == id))
    }

    /// The next sequence of the shore's ack-bundle stream to `vessel` (file mode).
    pub fn next_ack_bundle_seq(&self, vessel: &str) -> Result<u64> {
        self.db()?.query_one(
            "UPDATE vessels SET ack_bundle_seq = ack_bundle_seq + 1 WHERE id = ?1 RETURNING ack_bundle_seq",
            &[&vessel],
            |r| r.get(0),
        )
    }

    /// Records received since `since` (Unix seconds), oldest first: (vessel, id, record, received).
    pub fn records_since(
        &self,
        since: i64,
        mut f: impl FnMut(&str, &[u8], Record, i64),
    ) -> Result<u64> {
        self.records_where("received_at >= ?1", since, |v, id, r, at, _| {
            f(v, id, r, at)
        })
        .map(|(n, _)| n)
    }

    /// Records that arrived after position `after` (the export cursor), oldest first, with
    /// their position; returns (count, highest position seen).
    pub fn records_after(
        &self,
        after: i64,
        f: impl FnMut(&str, &[u8], Record, i64, i64),
    ) -> Result<(u64, i64)> {
        self.records_where("rowid > ?1", after, f)
    }

    fn records_where(
        &self,
        filter: &str,
        arg: i64,
        mut f: impl FnMut(&str, &[u8], Record, i64, i64),
    ) -> Result<(u64, i64)> {
        let (mut n, mut top) = (0, arg);
        self.db()?.each(
            &format!(
                "SELECT vessel, record_id, kind, user_key, course_key, item_key, user_legacy, course_legacy,
                        item_legacy, value, vtime, received_at, rowid
                 FROM records WHERE {filter} ORDER BY received_at, vessel, batch_seq, rowid"
            ),
            &[&arg],
            |r| {
                let (id, rec, at) = record_row(&r, 1)?;
                let vessel: String = r.get(0)?;
                let rowid: i64 = r.get(12)?;
                f(&vessel, &id, rec, at, rowid);
                top = top.max(rowid);
                n += 1;
                Ok(())
            },
        )?;
        Ok((n, top))
    }

    /// Where the last `shore export` without `--since` ended.
    pub fn export_cursor(&self) -> Result<i64> {
        Ok(self.fact("export_cursor")?.unwrap_or(0))
    }

    /// Moves the export cursor (after the file is safely written).
    pub fn set_export_cursor(&self, rowid: i64) -> Result<()> {
        self.set_fact("export_cursor", Some(rowid))
    }

    /// (records, distinct record ids) held for `vessel`: equal by construction, checked in tests.
    pub fn record_counts(&self, vessel: &str) -> Result<(u64, u64)> {
        self.db()?.query_one(
            "SELECT COUNT(*), COUNT(DISTINCT record_id) FROM records WHERE vessel = ?1",
            &[&vessel],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }
}
