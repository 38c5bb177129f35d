//! The vessel registry: who may send (a vessel's token, as a digest), with which keys for
//! which batches (rotations and rekeys), when each was last heard from and what it last
//! reported, and the refusals shore recorded (clipped and pruned, so a hostile vessel cannot
//! fill the store with them).

use super::sql::Row;
use super::{Result, ShoreStore, to_i64};

/// Characters of a refusal's message that are kept.
pub const REFUSAL_CHARS: usize = 200;
/// Refusals kept per vessel.
pub const REFUSALS_KEPT: u64 = 100;
/// Days a refusal is kept.
pub const REFUSAL_DAYS: i64 = 30;

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
impl ShoreStore {
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
    /// Records a refused batch for `shore status`.
    ///
    /// What is kept is bounded: the message at [`REFUSAL_CHARS`] characters with control
    /// characters escaped, and per vessel the last [`REFUSALS_KEPT`] refusals of the last
    /// [`REFUSAL_DAYS`] days (older ones are pruned here).
    pub fn note_refusal(&self, vessel: &str, code: &str, message: &str, now: i64) -> Result<()> {
        let code = base::text::clip(code, 40);
        let message = base::text::clip(message, REFUSAL_CHARS);
        let mut db = self.db()?;
        db.execute(
            "INSERT INTO refusals(at, vessel, code, message) VALUES (?1, ?2, ?3, ?4)",
            &[&now, &vessel, &code, &message],
        )?;
        let oldest = now - REFUSAL_DAYS * 86_400;
        let kept = to_i64(REFUSALS_KEPT);
        db.execute(
            "DELETE FROM refusals WHERE vessel = ?1 AND (at < ?2 OR id <= (
                 SELECT id FROM refusals WHERE vessel = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?3))",
            &[&vessel, &oldest, &kept],
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
}
