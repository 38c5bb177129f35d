//! Storing a verified batch: all or nothing, records deduplicated by id, the chain of batch
//! digests checked, a key rotation registered, and the vessel's contiguous acknowledgement
//! watermark advanced; one batch at a time across every receiver of the database.

use wire::progress::Record;

use super::sql::{self, Db};
use super::{Result, ShoreStore, to_i64};

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

impl ShoreStore {
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
}
