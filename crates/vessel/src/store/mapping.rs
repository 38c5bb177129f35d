//! Data that commands store: legacy-id mappings (`set_mapping`) and shore's acknowledgement
//! watermark (`ack`).

use rusqlite::params;

use super::{Ctx, Result, Store, Tx};

/// A mapping row to write.
#[derive(Debug, Clone)]
pub struct MappingWrite<'a> {
    /// `category`, `course` or `activity`.
    pub kind: &'a str,
    /// The legacy system's id.
    pub legacy_id: &'a str,
    /// The Moodle key (idnumber, or course shortname).
    pub moodle_key: &'a str,
    /// For activities: the course key it belongs to.
    pub course: &'a str,
}

/// A stored mapping.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MappingRow {
    /// Kind.
    pub kind: String,
    /// Legacy id.
    pub legacy_id: String,
    /// Moodle key.
    pub moodle_key: String,
    /// Course key (activities).
    pub course: String,
    /// Command that wrote it last.
    pub command_id: String,
}

/// The acknowledgement watermark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AckState {
    /// Highest outbox sequence shore acknowledged.
    pub acked_seq: u64,
    /// Bundle that carried it.
    pub bundle_id: String,
    /// When it was stored.
    pub updated_at: i64,
}

/// The source of a write, for the late-arrival rule.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Issuer key id.
    pub issuer: &'a str,
    /// Stream recipient.
    pub recipient: &'a str,
    /// Sequence.
    pub sequence: u64,
    /// Command id.
    pub command_id: &'a str,
}

impl Tx<'_> {
    /// Writes a mapping unless a newer sequence of the same stream already set this key.
    /// Returns false when the row was superseded (left as it was).
    pub fn upsert_mapping(
        &self,
        m: &MappingWrite<'_>,
        origin: Origin<'_>,
        now: i64,
    ) -> Result<bool> {
        let seq = i64::try_from(origin.sequence).unwrap_or(i64::MAX);
        let changed = self
            .tx
            .execute(
                "INSERT INTO mappings(kind, legacy_id, moodle_key, course, src_issuer, src_recipient, src_seq, command_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(kind, legacy_id) DO UPDATE SET
                   moodle_key = excluded.moodle_key, course = excluded.course,
                   src_issuer = excluded.src_issuer, src_recipient = excluded.src_recipient,
                   src_seq = excluded.src_seq, command_id = excluded.command_id, updated_at = excluded.updated_at
                 WHERE NOT (mappings.src_issuer = excluded.src_issuer
                            AND mappings.src_recipient = excluded.src_recipient
                            AND mappings.src_seq > excluded.src_seq)",
                params![m.kind, m.legacy_id, m.moodle_key, m.course, origin.issuer, origin.recipient, seq, origin.command_id, now],
            )
            .ctx(self.path)?;
        Ok(changed > 0)
    }

    /// Raises the acknowledgement watermark of `channel`; returns false if it was already as high.
    pub fn raise_ack(
        &self,
        channel: &str,
        acked_seq: u64,
        bundle_id: &str,
        now: i64,
    ) -> Result<bool> {
        let seq = i64::try_from(acked_seq).unwrap_or(i64::MAX);
        let changed = self
            .tx
            .execute(
                "INSERT INTO acks(channel, acked_seq, bundle_id, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(channel) DO UPDATE SET acked_seq = excluded.acked_seq,
                   bundle_id = excluded.bundle_id, updated_at = excluded.updated_at
                 WHERE excluded.acked_seq > acks.acked_seq",
                params![channel, seq, bundle_id, now],
            )
            .ctx(self.path)?;
        if channel == "outbox" {
            // Records of acknowledged batches leave the outbox in the same transaction.
            let released = self.prune_acked(acked_seq)?;
            if released > 0 {
                tracing::info!(acked_seq, released, "shore acknowledged progress");
                // A guarded deletion waiting for this acknowledgement goes ahead in the next
                // pass, not at its next retry minutes later.
                self.tx
                    .execute(
                        "UPDATE commands SET next_attempt_at = ?1
                         WHERE state = 'waiting' AND type IN ('delete_course', 'replace_course')
                           AND next_attempt_at > ?1",
                        params![now],
                    )
                    .ctx(self.path)?;
            }
        }
        Ok(changed > 0)
    }
}

impl Store {
    /// Every mapping, ordered by kind and legacy id.
    pub fn mappings(&self) -> Result<Vec<MappingRow>> {
        let rows = self.rows("SELECT kind, legacy_id, moodle_key, course, command_id FROM mappings ORDER BY kind, legacy_id", [], |r| {
                Ok(MappingRow {
                    kind: r.get(0)?,
                    legacy_id: r.get(1)?,
                    moodle_key: r.get(2)?,
                    course: r.get(3)?,
                    command_id: r.get(4)?,
                })
            })?;
        Ok(rows)
    }

    /// Count of mappings per kind.
    pub fn mapping_counts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let rows = self.rows(
            "SELECT kind, COUNT(*) FROM mappings GROUP BY kind",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.unsigned_abs())),
        )?;
        Ok(rows.into_iter().collect())
    }

    /// The acknowledgement watermark of `channel`.
    pub fn ack(&self, channel: &str) -> Result<Option<AckState>> {
        self.row(
            "SELECT acked_seq, bundle_id, updated_at FROM acks WHERE channel = ?1",
            params![channel],
            |r| {
                Ok(AckState {
                    acked_seq: r.get::<_, i64>(0)?.unsigned_abs(),
                    bundle_id: r.get(1)?,
                    updated_at: r.get(2)?,
                })
            },
        )
    }
}
