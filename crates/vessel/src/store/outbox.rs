//! The outbox in the agent's database: records queued in capture order, batches built from
//! them, acknowledgement (records leave only when shore's acknowledgement covers their batch)
//! and renumbering. What capture last saw, its quarantine and the imported (echo) rows are in
//! `captured.rs`; the facts, the uplink's typed state and the traffic counters in `facts.rs`.

use rusqlite::params;

use super::{Ctx, Result, Store, Tx, to_i64};
use wire::progress::Record;

/// A built batch waiting for acknowledgement.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Batch sequence.
    pub seq: u64,
    /// Envelope id.
    pub envelope_id: String,
    /// Records inside.
    pub records: u64,
    /// The signed envelope bytes.
    pub envelope: Vec<u8>,
    /// When file mode last wrote it to the outbound directory.
    pub written_at: Option<i64>,
    /// Send attempts so far.
    pub attempts: u64,
}

/// A batch to store: its sequence, envelope and the outbox range it takes.
#[derive(Debug, Clone, Copy)]
pub struct NewBatch<'a> {
    /// Batch sequence.
    pub seq: u64,
    /// Envelope id.
    pub envelope_id: &'a str,
    /// First outbox seq taken.
    pub first: i64,
    /// Last outbox seq taken.
    pub last: i64,
    /// Records inside.
    pub records: u64,
    /// The signed envelope.
    pub envelope: &'a [u8],
}

/// Outbox figures for `status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OutboxSummary {
    /// Records not yet acknowledged.
    pub records: u64,
    /// Of those, already in a built batch.
    pub batched: u64,
    /// Bytes of built batches waiting.
    pub batch_bytes: u64,
    /// Batches waiting.
    pub batches: u64,
    /// Capture time of the oldest unacknowledged record.
    pub oldest_captured_at: Option<i64>,
    /// Changes in the progress quarantine.
    pub quarantined: u64,
    /// Highest batch sequence shore acknowledged.
    pub acked_seq: u64,
    /// When that acknowledgement was stored.
    pub acked_at: Option<i64>,
}

/// Unacknowledged progress of one course, for deletion guards and status.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CourseBacklog {
    /// Records not yet acknowledged.
    pub records: u64,
    /// Capture time of the oldest.
    pub oldest_captured_at: Option<i64>,
}

fn record_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    decode_record(r, 0)
}

fn decode_record(r: &rusqlite::Row<'_>, col: usize) -> rusqlite::Result<Record> {
    let b: Vec<u8> = r.get(col)?;
    Record::from_bytes(&b).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            col,
            rusqlite::types::Type::Blob,
            "an outbox record that does not decode".into(),
        )
    })
}

const BATCH_COLUMNS: &str = "seq, envelope_id, records, envelope, written_at, attempts";

fn batch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Batch> {
    Ok(Batch {
        seq: r.get::<_, i64>(0)?.unsigned_abs(),
        envelope_id: r.get(1)?,
        records: r.get::<_, i64>(2)?.unsigned_abs(),
        envelope: r.get(3)?,
        written_at: r.get(4)?,
        attempts: r.get::<_, i64>(5)?.unsigned_abs(),
    })
}

impl Tx<'_> {
    /// Forgets the captured state of a course deleted on shore's order, so that the next
    /// capture does not send each of its rows home as `removed` (the learners' records are in
    /// shore's hands already: the deletion waited for that).
    pub fn forget_course(&self, course_key: &str) -> Result<u64> {
        let n = self
            .tx
            .execute(
                "DELETE FROM capture_state WHERE ckey = ?1",
                params![course_key],
            )
            .ctx(self.path)?;
        Ok(n as u64)
    }

    /// Queues a record; returns false when a record with the same id is already queued.
    pub fn enqueue(&self, rec: &Record, id: &[u8; 16], now: i64) -> Result<bool> {
        let seq = match self.next_outbox_seq.get() {
            Some(s) => s,
            None => self
                .row("SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox", [], |r| {
                    r.get(0)
                })?
                .unwrap_or(1),
        };
        let n = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO outbox(record_id, seq, course_key, record, captured_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .ctx(self.path)?
            .execute(params![&id[..], seq, rec.course, rec.to_bytes(), now])
            .ctx(self.path)?;
        self.next_outbox_seq
            .set(Some(if n > 0 { seq + 1 } else { seq }));
        Ok(n > 0)
    }

    /// Queues many records at once (64 per statement); returns how many were new.
    pub fn enqueue_many(&self, recs: &[(Record, [u8; 16])], now: i64) -> Result<u64> {
        const ROWS: usize = 64;
        let mut seq = match self.next_outbox_seq.get() {
            Some(s) => s,
            None => self
                .row("SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox", [], |r| {
                    r.get(0)
                })?
                .unwrap_or(1),
        };
        let mut added = 0u64;
        // In key order, the B-tree fills pages left to right instead of splitting at random.
        let mut order: Vec<&(Record, [u8; 16])> = recs.iter().collect();
        order.sort_unstable_by_key(|a| a.1);
        let mut chunks = order.chunks_exact(ROWS);
        let sql = {
            let row = "(?,?,?,?,?)";
            format!(
                "INSERT OR IGNORE INTO outbox(record_id, seq, course_key, record, captured_at) VALUES {}",
                vec![row; ROWS].join(",")
            )
        };
        for chunk in chunks.by_ref() {
            let mut stmt = self.tx.prepare_cached(&sql).ctx(self.path)?;
            let mut i = 1;
            for &(r, id) in chunk {
                let bytes = r.to_bytes();
                let vals: [&dyn rusqlite::ToSql; 5] = [&&id[..], &seq, &r.course, &bytes, &now];
                for v in vals {
                    stmt.raw_bind_parameter(i, v).ctx(self.path)?;
                    i += 1;
                }
                seq += 1;
            }
            added += stmt.raw_execute().ctx(self.path)? as u64;
        }
        self.next_outbox_seq.set(Some(seq));
        for &(r, id) in chunks.remainder() {
            if self.enqueue(r, id, now)? {
                added += 1;
            }
        }
        Ok(added)
    }

    /// The outbox acknowledgement watermark (0 when none yet).
    pub fn acked_seq(&self) -> Result<u64> {
        Ok(self
            .row(
                "SELECT acked_seq FROM acks WHERE channel = 'outbox'",
                [],
                |r| r.get::<_, i64>(0),
            )?
            .map(i64::unsigned_abs)
            .unwrap_or(0))
    }

    /// Up to `limit` records not yet in a batch, in capture order: (outbox seq, record).
    pub fn unbatched(&self, limit: u64) -> Result<Vec<(i64, Record)>> {
        self.rows(
            "SELECT seq, record FROM outbox WHERE batch_seq IS NULL ORDER BY seq LIMIT ?1",
            params![to_i64(limit)],
            |r| Ok((r.get(0)?, decode_record(r, 1)?)),
        )
    }

    /// The sequence the next batch gets: above every batch built and every acknowledgement.
    pub fn next_batch_seq(&self) -> Result<u64> {
        let v: Option<i64> = self
            .row(
                "SELECT MAX(m) FROM (SELECT MAX(seq) AS m FROM batches
                   UNION ALL SELECT acked_seq FROM acks WHERE channel = 'outbox'
                   UNION ALL SELECT CAST(value AS INTEGER) FROM uplink WHERE key = 'last_batch_seq')",
                [],
                |r| r.get(0),
            )?
            .flatten();
        Ok(v.unwrap_or(0).unsigned_abs() + 1)
    }

    /// Stores a built batch and marks its records (outbox seq `first..=last`, unbatched ones).
    pub fn store_batch(&self, b: &NewBatch<'_>, now: i64) -> Result<()> {
        let NewBatch {
            seq,
            envelope_id,
            first,
            last,
            records,
            envelope,
        } = *b;
        let s = to_i64(seq);
        self.tx
            .execute(
                "INSERT INTO batches(seq, envelope_id, records, envelope, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![s, envelope_id, to_i64(records), envelope, now],
            )
            .ctx(self.path)?;
        self.tx
            .execute(
                "UPDATE outbox SET batch_seq = ?1 WHERE batch_seq IS NULL AND seq BETWEEN ?2 AND ?3",
                params![s, first, last],
            )
            .ctx(self.path)?;
        self.set_fact("last_batch_seq", &seq.to_string())
    }

    /// Notes a send attempt of a batch and its outcome.
    pub fn note_batch_attempt(&self, seq: u64, error: Option<&str>) -> Result<()> {
        self.tx
            .execute(
                "UPDATE batches SET attempts = attempts + 1, last_error = ?2 WHERE seq = ?1",
                params![to_i64(seq), error],
            )
            .ctx(self.path)?;
        Ok(())
    }

    /// Records when a batch was written to the outbound directory (file mode).
    pub fn mark_written_out(&self, seq: u64, now: i64) -> Result<()> {
        self.tx
            .execute(
                "UPDATE batches SET written_at = ?2 WHERE seq = ?1",
                params![to_i64(seq), now],
            )
            .ctx(self.path)?;
        Ok(())
    }

    /// Takes a batch back (shore refused its sequence as already used, e.g. after this vessel's
    /// state was rebuilt): its records return to the outbox unbatched and the next batch is
    /// numbered after `shore_acked`.
    pub fn renumber_after(&self, seq: u64, shore_acked: u64) -> Result<()> {
        self.tx
            .execute(
                "UPDATE outbox SET batch_seq = NULL WHERE batch_seq >= ?1",
                params![to_i64(seq)],
            )
            .ctx(self.path)?;
        self.tx
            .execute("DELETE FROM batches WHERE seq >= ?1", params![to_i64(seq)])
            .ctx(self.path)?;
        self.set_fact("last_batch_seq", &shore_acked.to_string())
    }

    /// Deletes everything shore acknowledged up to batch `acked` (records and batches).
    /// Returns the number of records released.
    pub(super) fn prune_acked(&self, acked: u64) -> Result<u64> {
        let a = to_i64(acked);
        let n = self
            .tx
            .execute(
                "DELETE FROM outbox WHERE batch_seq IS NOT NULL AND batch_seq <= ?1",
                params![a],
            )
            .ctx(self.path)?;
        self.tx
            .execute("DELETE FROM batches WHERE seq <= ?1", params![a])
            .ctx(self.path)?;
        Ok(n as u64)
    }
}

fn course_impact(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    course_key: &str,
) -> Result<(CourseBacklog, u64)> {
    let (n, oldest): (i64, Option<i64>) = conn
        .query_row(
            "SELECT COUNT(*), MIN(captured_at) FROM outbox WHERE course_key = ?1",
            params![course_key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ctx(path)?;
    let learners: i64 = conn
        .query_row(
            "SELECT COUNT(DISTINCT userid) FROM capture_state WHERE ckey = ?1",
            params![course_key],
            |r| r.get(0),
        )
        .ctx(path)?;
    Ok((
        CourseBacklog {
            records: n.unsigned_abs(),
            oldest_captured_at: oldest,
        },
        learners.unsigned_abs(),
    ))
}

impl Store {
    /// Learners with progress in a course and its unacknowledged records (for `status`).
    pub fn course_impact(&self, course_key: &str) -> Result<(CourseBacklog, u64)> {
        course_impact(&self.conn, &self.path, course_key)
    }

    /// The oldest unacknowledged batch, if any.
    pub fn pending_batch(&self) -> Result<Option<Batch>> {
        self.row(
            &format!("SELECT {BATCH_COLUMNS} FROM batches ORDER BY seq LIMIT 1"),
            [],
            batch_row,
        )
    }

    /// Every unacknowledged batch, oldest first.
    pub fn pending_batches(&self) -> Result<Vec<Batch>> {
        self.rows(
            &format!("SELECT {BATCH_COLUMNS} FROM batches ORDER BY seq"),
            [],
            batch_row,
        )
    }

    /// Outbox figures.
    pub fn outbox_summary(&self) -> Result<OutboxSummary> {
        let (records, batched, oldest): (i64, i64, Option<i64>) = self
            .row(
                "SELECT COUNT(*), COUNT(batch_seq), MIN(captured_at) FROM outbox",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .unwrap_or((0, 0, None));
        let (batches, bytes): (i64, i64) = self
            .row(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(envelope)), 0) FROM batches",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .unwrap_or((0, 0));
        let quarantined: i64 = self
            .row("SELECT COUNT(*) FROM progress_quarantine", [], |r| r.get(0))?
            .unwrap_or(0);
        let ack: Option<(i64, i64)> = self.row(
            "SELECT acked_seq, updated_at FROM acks WHERE channel = 'outbox'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(OutboxSummary {
            records: records.unsigned_abs(),
            batched: batched.unsigned_abs(),
            batch_bytes: bytes.unsigned_abs(),
            batches: batches.unsigned_abs(),
            oldest_captured_at: oldest,
            quarantined: quarantined.unsigned_abs(),
            acked_seq: ack.map(|a| a.0.unsigned_abs()).unwrap_or(0),
            acked_at: ack.map(|a| a.1),
        })
    }

    /// Every queued record (tests and export), in capture order.
    pub fn outbox_records(&self) -> Result<Vec<Record>> {
        self.rows("SELECT record FROM outbox ORDER BY seq", [], record_row)
    }
}

impl Tx<'_> {
    /// Unacknowledged records of one course (by course key), and how many learners have
    /// captured progress in it: what deleting or replacing the course is guarded by.
    pub fn course_impact(&self, course_key: &str) -> Result<(CourseBacklog, u64)> {
        course_impact(&self.tx, self.path, course_key)
    }

    /// Whether any batch waits for acknowledgement.
    pub fn has_batches(&self) -> Result<bool> {
        Ok(self
            .row("SELECT 1 FROM batches LIMIT 1", [], |r| r.get::<_, i64>(0))?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::NewBatch;
    use crate::store::Store;
    use proptest::prelude::*;
    use wire::progress::{Record, RecordKind};

    fn rec(i: u64) -> Record {
        Record {
            kind: RecordKind::ActivityCompletion,
            user: format!("S-{i}"),
            course: "SAFETY-101".into(),
            item: "quiz-1".into(),
            user_legacy: String::new(),
            course_legacy: String::new(),
            item_legacy: String::new(),
            value: "1".into(),
            time: 1_000 + i as i64,
        }
    }

    /// Builds batches of `size` from what is unbatched; returns their sequences.
    fn batch_all(store: &mut Store, size: u64) -> Vec<u64> {
        let mut built = vec![];
        loop {
            let done = store
                .write(|tx| {
                    let recs = tx.unbatched(size)?;
                    let (Some(first), Some(last)) = (recs.first(), recs.last()) else {
                        return Ok(None);
                    };
                    let seq = tx.next_batch_seq()?;
                    tx.store_batch(
                        &NewBatch {
                            seq,
                            envelope_id: "e",
                            first: first.0,
                            last: last.0,
                            records: recs.len() as u64,
                            envelope: b"signed",
                        },
                        1,
                    )?;
                    Ok(Some(seq))
                })
                .unwrap();
            match done {
                Some(s) => built.push(s),
                None => return built,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Records leave the outbox only when an acknowledgement covers their batch; an older
        /// acknowledgement never undoes a newer one; a batch shore refused as replayed gives its
        /// records back, and they are numbered after what shore acknowledged.
        #[test]
        fn only_acknowledged_batches_leave_and_a_renumbered_batch_loses_nothing(
            n in 1u64..60,
            size in 1u64..8,
            acks in prop::collection::vec(0u64..12, 1..5),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(&dir.path().join("a.db"), "v").unwrap();
            store.write(|tx| {
                for i in 0..n {
                    tx.enqueue(&rec(i), &rec(i).id("v"), 1)?;
                }
                Ok(())
            }).unwrap();
            let built = batch_all(&mut store, size);
            prop_assert_eq!(built.len() as u64, n.div_ceil(size));
            let mut acked = 0;
            for a in acks {
                store.write(|tx| tx.raise_ack("outbox", a, "https", 2)).unwrap();
                acked = acked.max(a.min(built.len() as u64));
                let summary = store.outbox_summary().unwrap();
                let left = n.saturating_sub(acked * size).min(n);
                prop_assert_eq!(summary.records, left, "acked up to {}", acked);
                prop_assert_eq!(summary.batches, built.len() as u64 - acked);
            }
            // Shore holds the next sequence with other content: renumber after its ack.
            if let Some(next) = store.pending_batch().unwrap().map(|b| b.seq) {
                let before = store.outbox_summary().unwrap().records;
                store.write(|tx| tx.renumber_after(next, next - 1 + 5)).unwrap();
                let after = store.outbox_summary().unwrap();
                prop_assert_eq!(after.records, before, "no record lost");
                prop_assert_eq!(after.batches, 0);
                let again = batch_all(&mut store, size);
                prop_assert_eq!(again.first().copied(), Some(next + 5));
            }
        }
    }
}
