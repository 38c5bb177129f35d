//! The shore's own SQLite database (`STATE_DIR/shore.db`): the vessel registry, received
//! batches and records, the per-vessel bundle queue, and course content: what shore keeps
//! (`content`), each queued bundle's omittable members, what each vessel holds, the per-vessel
//! copies of a bundle (`variants`) and the content vessels asked for (`needs`). WAL with `synchronous=FULL`: a batch
//! is on disk before shore acknowledges it.

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

mod fleet;
mod forward;
mod migrate;
mod reports;
mod sessions;
pub mod sql;
pub use fleet::{HISTORY_DAYS, HeldDeletion, Point};
pub use forward::{ForwardSummary, Retirement, Settled, ToForward, Written};
pub use migrate::Copied;
pub use reports::Reported;
pub use sql::{Backend, ShoreDbError};

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

/// A registered vessel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Vessel {
    /// Vessel id.
    pub id: String,
    /// SHA-256 of its token (hex).
    #[serde(skip)]
    pub token_sha256: String,
    /// Its public key file text.
    #[serde(skip)]
    pub pubkey: String,
    /// Its key id.
    pub key_id: String,
    /// When it was added.
    pub added_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// Last contact.
    pub last_contact: Option<i64>,
    /// Highest contiguous batch sequence stored.
    pub acked_seq: u64,
    /// Records received.
    pub records: u64,
    /// Age in seconds of the oldest record not yet sent, as the vessel last reported it.
    pub oldest_unsent: Option<i64>,
    /// Outbox depth as the vessel last reported it.
    pub outbox_depth: Option<i64>,
}

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

/// A verified batch to store.
#[derive(Debug, Clone, Copy)]
pub struct BatchIn<'a> {
    /// Sending vessel.
    pub vessel: &'a str,
    /// Its batch sequence.
    pub seq: u64,
    /// SHA-256 of the signed manifest: identifies the exact content.
    pub sha256: &'a str,
    /// Envelope id.
    pub envelope_id: &'a str,
    /// The decoded records.
    pub records: &'a [Record],
    /// The predecessor's manifest digest the batch names.
    pub previous: Option<&'a str>,
    /// A key rotation to register with the batch: (new key id, its public key file text, first
    /// batch it signs, the old key id).
    pub rotation: Option<(&'a str, &'a str, u64, &'a str)>,
    /// Every batch up to this sequence is acknowledged on the vessel's side already.
    pub settled: u64,
    /// `https` or `file`.
    pub via: &'a str,
}

/// Outcome of storing a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// New batch: records new to shore, records already held.
    New {
        /// New records.
        new: u64,
        /// Already held (deduplicated by id).
        duplicate: u64,
    },
    /// The very same batch again (a retry whose reply was lost).
    Again,
    /// Same sequence, different content: refused, nothing stored.
    Replayed,
    /// The batch does not continue the chain shore holds: refused, nothing stored.
    Chain {
        /// `chain_fork`, `chain_gap` or `chain_broken`.
        code: &'static str,
        /// Words for the operator.
        message: String,
    },
}

/// One key a vessel signs (or signed) with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VesselKey {
    /// Key id.
    pub key_id: String,
    /// Its public key file text.
    #[serde(skip)]
    pub pubkey: String,
    /// First batch sequence it may sign.
    pub from_seq: u64,
    /// First batch sequence it may no longer sign (`None`: still current).
    pub until_seq: Option<u64>,
    /// When shore learned it.
    pub added_at: i64,
    /// `registered`, `rotated by the vessel`, `rekeyed by an operator`.
    pub how: String,
}

fn short(d: &str) -> &str {
    d.get(..12).unwrap_or(d)
}

/// Checks that batch `seq` (digest `sha`, naming `previous`) continues the chain shore holds.
fn chain_check(
    db: &mut Db,
    vessel: &str,
    seq: u64,
    sha: &str,
    previous: Option<&str>,
) -> Result<Option<(&'static str, String)>> {
    let at = |db: &mut Db, s: i64| -> Result<Option<(String, Option<String>)>> {
        db.query_opt(
            "SELECT sha256, previous FROM batches WHERE vessel = ?1 AND seq = ?2",
            &[&vessel, &s],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    };
    let s = to_i64(seq);
    if let Some(p) = previous {
        if let Some((q, _)) = at(db, s - 1)? {
            if q != p {
                return Ok(Some((
                    "chain_fork",
                    format!(
                        "batch {seq} names predecessor {}, but shore holds batch {} as {}: two histories of this vessel's progress exist (rewritten on board or in transit); nothing stored",
                        short(p),
                        seq - 1,
                        short(&q)
                    ),
                )));
            }
        } else if let Some(other) = db.query_opt(
            "SELECT seq FROM batches WHERE vessel = ?1 AND sha256 = ?2",
            &[&vessel, &p],
            |r| r.get::<i64>(0),
        )? {
            return Ok(Some((
                "chain_gap",
                format!(
                    "batch {seq} names batch {other} as its predecessor, so batches {} to {} are missing from its chain (removed on board or in transit); nothing stored",
                    other + 1,
                    s - 1
                ),
            )));
        }
    } else if seq > 1 {
        let chained: Option<i64> = db.query_one(
            "SELECT MAX(seq) FROM batches WHERE vessel = ?1 AND seq < ?2 AND previous IS NOT NULL",
            &[&vessel, &s],
            |r| r.get(0),
        )?;
        if let Some(c) = chained {
            return Ok(Some((
                "chain_broken",
                format!(
                    "batch {seq} names no predecessor, but batch {c} before it did: the chain was cut (a vessel state restored from an old backup, or a forged batch); nothing stored"
                ),
            )));
        }
    }
    if let Some((next_sha, Some(r))) = at(db, s + 1)? {
        if r != sha {
            return Ok(Some((
                "chain_fork",
                format!(
                    "batch {}, received earlier as {}, names predecessor {}, but this batch {seq} is {}: two histories of this vessel's progress exist; nothing stored",
                    seq + 1,
                    short(&next_sha),
                    short(&r),
                    short(sha)
                ),
            )));
        }
    }
    Ok(None)
}

/// The shore database: SQLite by default, PostgreSQL for a fleet with several receivers.
pub struct ShoreStore {
    db: RefCell<Db>,
}

/// Rows per `INSERT INTO records` statement, largest first.
const INSERT_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// `INSERT INTO records ... VALUES (...), (...)` for `rows` rows, skipping ids held already.
fn insert_records_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO records(record_id, vessel, batch_seq, kind, user_key, course_key, item_key,
           user_legacy, course_legacy, item_legacy, value, vtime, received_at) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for col in 0..13 {
            if col > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{}", row * 13 + col + 1));
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    sql
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const VESSEL_COLUMNS: &str = "id, token_sha256, pubkey, key_id, added_at, revoked_at, last_contact, acked_seq, records, oldest_unsent, outbox_depth";

fn vessel_row(r: &Row) -> std::result::Result<Vessel, String> {
    Ok(Vessel {
        id: r.get(0)?,
        token_sha256: r.get(1)?,
        pubkey: r.get(2)?,
        key_id: r.get(3)?,
        added_at: r.get(4)?,
        revoked_at: r.get(5)?,
        last_contact: r.get(6)?,
        acked_seq: r.get(7)?,
        records: r.get(8)?,
        oldest_unsent: r.get(9)?,
        outbox_depth: r.get(10)?,
    })
}

/// Every table's schema, in SQLite's words (PostgreSQL's are derived from them).
fn schemas() -> [&'static str; 6] {
    [
        SCHEMA,
        forward::SCHEMA,
        forward::RETIRE_SCHEMA,
        reports::SCHEMA,
        fleet::SCHEMA,
        sessions::SCHEMA,
    ]
}

/// The newest PostgreSQL schema version this build knows.
const PG_SCHEMA_VERSION: i64 = 1;

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

    /// Registers a vessel (or replaces its key and token, un-revoking it).
    pub fn add_vessel(
        &self,
        id: &str,
        token_sha256: &str,
        pubkey: &str,
        key_id: &str,
        now: i64,
    ) -> Result<()> {
        self.db()?.execute(
            "INSERT INTO vessels(id, token_sha256, pubkey, key_id, added_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET token_sha256 = excluded.token_sha256, pubkey = excluded.pubkey,
               key_id = excluded.key_id, revoked_at = NULL",
            &[&id, &token_sha256, &pubkey, &key_id, &now],
        )?;
        self.set_only_key(id, pubkey, key_id, "registered", now)
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

    /// An operator forces a vessel's key: from now on only `key_id` is accepted from it.
    /// False when the vessel is unknown.
    pub fn rekey_vessel(&self, id: &str, pubkey: &str, key_id: &str, now: i64) -> Result<bool> {
        let n = self.db()?.execute(
            "UPDATE vessels SET pubkey = ?2, key_id = ?3 WHERE id = ?1",
            &[&id, &pubkey, &key_id],
        )?;
        if n == 0 {
            return Ok(false);
        }
        self.set_only_key(id, pubkey, key_id, "rekeyed by an operator", now)?;
        Ok(true)
    }

    /// Every key a vessel signs or signed with, oldest first.
    pub fn vessel_keys(&self, id: &str) -> Result<Vec<VesselKey>> {
        self.db()?.query(
            "SELECT key_id, pubkey, from_seq, until_seq, added_at, how FROM vessel_keys
             WHERE vessel = ?1 ORDER BY from_seq, added_at",
            &[&id],
            |r| {
                Ok(VesselKey {
                    key_id: r.get(0)?,
                    pubkey: r.get(1)?,
                    from_seq: r.get(2)?,
                    until_seq: r.get(3)?,
                    added_at: r.get(4)?,
                    how: r.get(5)?,
                })
            },
        )
    }

    /// Revokes a vessel; false when unknown.
    pub fn revoke_vessel(&self, id: &str, now: i64) -> Result<bool> {
        let n = self.db()?.execute(
            "UPDATE vessels SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            &[&id, &now],
        )?;
        Ok(n > 0)
    }

    /// One vessel.
    pub fn vessel(&self, id: &str) -> Result<Option<Vessel>> {
        self.db()?.query_opt(
            &format!("SELECT {VESSEL_COLUMNS} FROM vessels WHERE id = ?1"),
            &[&id],
            vessel_row,
        )
    }

    /// Every vessel, by id.
    pub fn vessels(&self) -> Result<Vec<Vessel>> {
        self.db()?.query(
            &format!("SELECT {VESSEL_COLUMNS} FROM vessels ORDER BY id"),
            &[],
            vessel_row,
        )
    }

    /// Notes a contact and what the vessel reported about its outbox.
    pub fn note_contact(
        &self,
        id: &str,
        now: i64,
        oldest_unsent: Option<i64>,
        depth: Option<i64>,
    ) -> Result<()> {
        self.db()?.execute(
            "UPDATE vessels SET last_contact = ?2, oldest_unsent = ?3, outbox_depth = COALESCE(?4, outbox_depth) WHERE id = ?1",
            &[&id, &now, &oldest_unsent, &depth],
        )?;
        self.note_history(id, now, depth, oldest_unsent)
    }

    /// Stores a verified batch all-or-nothing, deduplicating records by id, and advances the
    /// vessel's contiguous acknowledgement watermark. Batches are stored one at a time across
    /// every receiver of the database, so records' arrival positions follow commit order (the
    /// forwarder's and the export's watermarks never pass a record still being stored).
    pub fn store_batch(&mut self, b: &BatchIn<'_>, now: i64) -> Result<Stored> {
        let stored = self
            .db
            .get_mut()
            .transaction(|db| Self::store_batch_in(db, b, now))?;
        if matches!(stored, Stored::New { .. }) {
            base::failpoint::hit("shore.after-commit");
        }
        Ok(stored)
    }

    fn store_batch_in(db: &mut Db, b: &BatchIn<'_>, now: i64) -> Result<Stored> {
        let BatchIn {
            vessel,
            seq,
            sha256,
            envelope_id,
            records,
            previous,
            rotation,
            settled,
            via,
        } = *b;
        db.lock("vessel-sync batches")?;
        let existing: Option<(String, Option<String>)> = db.query_opt(
            "SELECT sha256, previous FROM batches WHERE vessel = ?1 AND seq = ?2",
            &[&vessel, &to_i64(seq)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some((existing, their_previous)) = existing {
            return Ok(if existing == sha256 {
                Stored::Again
            } else if let (Some(p), Some(q)) = (previous, their_previous.as_deref()) {
                if p == q {
                    Stored::Chain {
                        code: "chain_fork",
                        message: format!(
                            "two different batches {seq} claim the same predecessor {}: shore keeps the one it received first ({}); this one ({}) is refused",
                            short(p),
                            short(&existing),
                            short(sha256)
                        ),
                    }
                } else {
                    Stored::Replayed
                }
            } else {
                Stored::Replayed
            });
        }
        if let Some((code, message)) = chain_check(db, vessel, seq, sha256, previous)? {
            return Ok(Stored::Chain { code, message });
        }
        if let Some((new_id, new_pub, from, old_id)) = rotation {
            let known: bool = db.query_one(
                "SELECT COUNT(*) FROM vessel_keys WHERE vessel = ?1 AND key_id = ?2",
                &[&vessel, &new_id],
                |r| r.get(0),
            )?;
            if !known {
                db.execute(
                    "UPDATE vessel_keys SET until_seq = ?3 WHERE vessel = ?1 AND key_id = ?2
                       AND (until_seq IS NULL OR until_seq > ?3)",
                    &[&vessel, &old_id, &to_i64(from)],
                )?;
                db.execute(
                    "INSERT INTO vessel_keys(vessel, key_id, pubkey, from_seq, until_seq, added_at, how)
                     VALUES (?1, ?2, ?3, ?4, NULL, ?5, 'rotated by the vessel')",
                    &[&vessel, &new_id, &new_pub, &to_i64(from), &now],
                )?;
                db.execute(
                    "UPDATE vessels SET pubkey = ?2, key_id = ?3 WHERE id = ?1",
                    &[&vessel, &new_pub, &new_id],
                )?;
            }
        }
        let mut new = 0u64;
        let ids: Vec<[u8; 16]> = records.iter().map(|r| r.id(vessel)).collect();
        let kinds: Vec<u8> = records.iter().map(|r| r.kind.code()).collect();
        let seq_i = to_i64(seq);
        let mut at = 0;
        while at < records.len() {
            // Many rows per statement (one round trip to PostgreSQL each), in a few fixed
            // sizes so that the prepared statements stay few.
            let n = INSERT_CHUNKS
                .iter()
                .copied()
                .find(|c| *c <= records.len() - at)
                .unwrap_or(1);
            let mut params: Vec<&dyn sql::ToValue> = Vec::with_capacity(n * 13);
            let rows = records[at..at + n]
                .iter()
                .zip(&ids[at..at + n])
                .zip(&kinds[at..at + n]);
            for ((r, id), kind) in rows {
                params.extend_from_slice(&[
                    id as &dyn sql::ToValue,
                    &vessel,
                    &seq_i,
                    kind,
                    &r.user,
                    &r.course,
                    &r.item,
                    &r.user_legacy,
                    &r.course_legacy,
                    &r.item_legacy,
                    &r.value,
                    &r.time,
                    &now,
                ]);
            }
            new += db.execute(&insert_records_sql(n), &params)?;
            at += n;
        }
        db.execute(
            "INSERT INTO batches(vessel, seq, sha256, envelope_id, records, new_records, received_at, via, previous)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            &[
                &vessel,
                &to_i64(seq),
                &sha256,
                &envelope_id,
                &(records.len() as i64),
                &to_i64(new),
                &now,
                &via,
                &previous,
            ],
        )?;
        // The watermark covers only contiguous sequences, so a batch that a file carrier
        // delivers out of order is never acknowledged on the strength of a later one.
        let mut acked: i64 = db.query_one(
            "SELECT acked_seq FROM vessels WHERE id = ?1",
            &[&vessel],
            |r| r.get(0),
        )?;
        // The vessel holds acknowledgements up to `settled` (from this shore, or from an ack
        // bundle): its stream continues after it, whatever this shore saw before.
        acked = acked.max(to_i64(settled));
        while let Some(s) = db.query_opt(
            "SELECT seq FROM batches WHERE vessel = ?1 AND seq = ?2",
            &[&vessel, &(acked + 1)],
            |r| r.get::<i64>(0),
        )? {
            acked = s;
        }
        db.execute(
            "UPDATE vessels SET acked_seq = ?2, records = records + ?3 WHERE id = ?1",
            &[&vessel, &acked, &to_i64(new)],
        )?;
        base::failpoint::hit("shore.before-commit");
        Ok(Stored::New {
            new,
            duplicate: records.len() as u64 - new,
        })
    }

    /// Records a refused batch for `shore status`.
    pub fn note_refusal(&self, vessel: &str, code: &str, message: &str, now: i64) -> Result<()> {
        self.db()?.execute(
            "INSERT INTO refusals(at, vessel, code, message) VALUES (?1, ?2, ?3, ?4)",
            &[&now, &vessel, &code, &message],
        )?;
        Ok(())
    }

    /// Recent refusals: (at, vessel, code, message).
    pub fn refusals(&self, limit: u64) -> Result<Vec<(i64, String, String, String)>> {
        self.db()?.query(
            "SELECT at, vessel, code, message FROM refusals ORDER BY id DESC LIMIT ?1",
            &[&to_i64(limit)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
    }

    /// Notes a content file kept in `STATE_DIR/content/SHA256`.
    pub fn add_content(&self, sha256: &str, size: u64, now: i64) -> Result<()> {
        self.db()?.execute(
            "INSERT INTO content(sha256, size, added_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            &[&sha256, &to_i64(size), &now],
        )?;
        Ok(())
    }

    /// Whether shore keeps this content file.
    pub fn has_content(&self, sha256: &str) -> Result<bool> {
        self.db()?.query_one(
            "SELECT COUNT(*) FROM content WHERE sha256 = ?1",
            &[&sha256],
            |r| r.get(0),
        )
    }

    /// Records the `may_omit` members of a queued bundle: (name, sha256, size).
    pub fn set_queue_content(
        &self,
        queue_id: i64,
        members: &[(String, String, u64)],
    ) -> Result<()> {
        let mut db = self.db()?;
        for (name, sha, size) in members {
            db.execute(
                "INSERT INTO queue_content(queue_id, name, sha256, size) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(queue_id, name) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size",
                &[&queue_id, name, sha, &to_i64(*size)],
            )?;
        }
        Ok(())
    }

    /// The `may_omit` members of a queued bundle: (name, sha256, size).
    pub fn queue_content(&self, queue_id: i64) -> Result<Vec<(String, String, u64)>> {
        self.db()?.query(
            "SELECT name, sha256, size FROM queue_content WHERE queue_id = ?1 ORDER BY name",
            &[&queue_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// The first queue entry of a bundle that carries content (to answer a need).
    pub fn content_bundle(&self, bundle_id: &str) -> Result<Option<i64>> {
        self.db()?.query_one(
            "SELECT MIN(q.id) FROM queue q WHERE q.bundle_id = ?1
             AND EXISTS (SELECT 1 FROM queue_content c WHERE c.queue_id = q.id)",
            &[&bundle_id],
            |r| r.get(0),
        )
    }

    /// Content a vessel is believed to hold (SHA-256s).
    pub fn holds(&self, vessel: &str) -> Result<std::collections::HashSet<String>> {
        let list = self.db()?.query(
            "SELECT sha256 FROM vessel_holds WHERE vessel = ?1",
            &[&vessel],
            |r| r.get(0),
        )?;
        Ok(list.into_iter().collect())
    }

    /// The vessel's download cursor passed `cursor`: it holds the content of every bundle it
    /// fetched up to there (carried, or already held when shore left it out).
    pub fn note_downloaded(&self, vessel: &str, cursor: i64, now: i64) -> Result<()> {
        // Only bundles the cursor passed since the last time: a need noted since then stands.
        self.db()?.transaction(|db| {
            let last: i64 = db
                .query_opt(
                    "SELECT cursor FROM holds_cursor WHERE vessel = ?1",
                    &[&vessel],
                    |r| r.get(0),
                )?
                .unwrap_or(0);
            if cursor <= last {
                return Ok(());
            }
            db.execute(
                "INSERT INTO vessel_holds(vessel, sha256, since)
                 SELECT CAST(?1 AS TEXT), c.sha256, CAST(?4 AS BIGINT) FROM queue_content c JOIN queue q ON q.id = c.queue_id
                 WHERE q.id > ?2 AND q.id <= ?3 AND (q.recipient = ?1 OR q.recipient = '*')
                 ON CONFLICT DO NOTHING",
                &[&vessel, &last, &cursor, &now],
            )?;
            db.execute(
                "INSERT INTO holds_cursor(vessel, cursor) VALUES (?1, ?2)
                 ON CONFLICT(vessel) DO UPDATE SET cursor = excluded.cursor",
                &[&vessel, &cursor],
            )?;
            Ok(())
        })
    }

    /// The vessel said it lacks these: forget that it holds them, and note the request.
    pub fn note_needs(
        &self,
        vessel: &str,
        bundle_id: &str,
        sha256: &[String],
        now: i64,
    ) -> Result<()> {
        let mut db = self.db()?;
        for h in sha256 {
            db.execute(
                "DELETE FROM vessel_holds WHERE vessel = ?1 AND sha256 = ?2",
                &[&vessel, h],
            )?;
            db.execute(
                "INSERT INTO needs(vessel, bundle_id, sha256, asked_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(vessel, bundle_id, sha256) DO UPDATE SET asked_at = excluded.asked_at, answered = NULL",
                &[&vessel, &bundle_id, h, &now],
            )?;
        }
        Ok(())
    }

    /// Marks needs answered by queue entry `queue_id`.
    pub fn answer_needs(
        &self,
        vessel: &str,
        bundle_id: &str,
        sha256: &[String],
        queue_id: i64,
    ) -> Result<()> {
        let mut db = self.db()?;
        for h in sha256 {
            db.execute(
                "UPDATE needs SET answered = ?4 WHERE vessel = ?1 AND bundle_id = ?2 AND sha256 = ?3",
                &[&vessel, &bundle_id, h, &queue_id],
            )?;
        }
        Ok(())
    }

    /// Per vessel: content files held, needs answered, needs shore could not answer.
    pub fn content_state(&self, vessel: &str) -> Result<(u64, u64, u64)> {
        self.db()?.query_one(
            "SELECT (SELECT COUNT(*) FROM vessel_holds WHERE vessel = ?1),
                    (SELECT COUNT(*) FROM needs WHERE vessel = ?1 AND answered IS NOT NULL),
                    (SELECT COUNT(*) FROM needs WHERE vessel = ?1 AND answered IS NULL)",
            &[&vessel],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// The per-vessel copy of a queued bundle, if one was made: (file, size, sha256).
    pub fn variant(&self, queue_id: i64, vessel: &str) -> Result<Option<(String, u64, String)>> {
        self.db()?.query_opt(
            "SELECT file, size, sha256 FROM variants WHERE queue_id = ?1 AND vessel = ?2",
            &[&queue_id, &vessel],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// Records the per-vessel copy of a queued bundle (`carried` content members).
    pub fn set_variant(
        &self,
        queue_id: i64,
        vessel: &str,
        file: &str,
        size: u64,
        sha256: &str,
        carried: u64,
    ) -> Result<()> {
        self.db()?.execute(
            "INSERT INTO variants(queue_id, vessel, file, size, sha256, carried) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(queue_id, vessel) DO UPDATE SET file = excluded.file, size = excluded.size,
               sha256 = excluded.sha256, carried = excluded.carried",
            &[&queue_id, &vessel, &file, &to_i64(size), &sha256, &to_i64(carried)],
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
            .bundles_for(vessel, id - 1)?
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
