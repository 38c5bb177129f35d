//! Trust state received at sea: operator certificates, key revocations, and the vessel's own
//! rotated signing keys. Writes happen inside the transaction of the command (or admission)
//! that causes them, so they are exactly-once with it.

use rusqlite::params;

use super::{Ctx, Result, Store, Tx};
use wire::envelope::Certificate;

/// A certificate the vessel holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredCert {
    /// The certified key.
    pub key_id: String,
    /// Its holder.
    pub name: String,
    /// The certificate.
    #[serde(skip)]
    pub certificate: Certificate,
    /// How it arrived (`trust_key command ID`, `carried by bundle ID`).
    pub source: String,
    /// When it was stored.
    pub added_at: i64,
}

/// A revoked key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Revocation {
    /// The key.
    pub key_id: String,
    /// Why.
    pub reason: String,
    /// Per recipient stream, the last sequence still let through (`*` key: the fleet stream;
    /// a missing stream: 0).
    pub last_good: std::collections::BTreeMap<String, u64>,
    /// The `revoke_key` command.
    pub by_command: String,
    /// When it was applied.
    pub revoked_at: i64,
}

impl Revocation {
    /// The last sequence let through in the stream to `recipient`.
    pub fn last_for(&self, recipient: &str) -> u64 {
        self.last_good
            .get(recipient)
            .or_else(|| self.last_good.get(crate::commands::ALL_STREAMS))
            .copied()
            .unwrap_or(0)
    }
}

/// One of this vessel's own signing keys after a rotation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VesselKey {
    /// Its id.
    pub key_id: String,
    /// The private key file.
    pub path: String,
    /// The first batch sequence it signs.
    pub from_seq: u64,
    /// The rotation statement (JSON), carried until shore acknowledges `from_seq`.
    #[serde(skip)]
    pub rotation: String,
    /// When it was made.
    pub created_at: i64,
}

fn cert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCert> {
    let text: String = r.get(2)?;
    let certificate = serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(StoredCert {
        key_id: r.get(0)?,
        name: r.get(1)?,
        certificate,
        source: r.get(3)?,
        added_at: r.get(4)?,
    })
}

fn revocation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Revocation> {
    let text: String = r.get(2)?;
    Ok(Revocation {
        key_id: r.get(0)?,
        reason: r.get(1)?,
        last_good: serde_json::from_str(&text).unwrap_or_default(),
        by_command: r.get(3)?,
        revoked_at: r.get(4)?,
    })
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VesselKey> {
    Ok(VesselKey {
        key_id: r.get(0)?,
        path: r.get(1)?,
        from_seq: r.get::<_, i64>(2)?.unsigned_abs(),
        rotation: r.get(3)?,
        created_at: r.get(4)?,
    })
}

const CERTS: &str =
    "SELECT key_id, name, certificate, source, added_at FROM trust_certs ORDER BY key_id";
const REVOKED: &str =
    "SELECT key_id, reason, last_good, by_command, revoked_at FROM trust_revoked ORDER BY key_id";
const KEYS: &str =
    "SELECT key_id, path, from_seq, rotation, created_at FROM vessel_keys ORDER BY from_seq";

impl Store {
    /// Every certificate held.
    pub fn certs(&self) -> Result<Vec<StoredCert>> {
        self.rows(CERTS, [], cert_row)
    }

    /// Every revoked key.
    pub fn revocations(&self) -> Result<Vec<Revocation>> {
        self.rows(REVOKED, [], revocation_row)
    }

    /// The vessel's rotated keys, oldest first.
    pub fn vessel_keys(&self) -> Result<Vec<VesselKey>> {
        self.rows(KEYS, [], key_row)
    }
}

impl Tx<'_> {
    /// Every certificate held.
    pub fn certs(&self) -> Result<Vec<StoredCert>> {
        self.rows(CERTS, [], cert_row)
    }

    /// The revocation of `key_id`, if any.
    pub fn revocation(&self, key_id: &str) -> Result<Option<Revocation>> {
        self.row(
            "SELECT key_id, reason, last_good, by_command, revoked_at FROM trust_revoked WHERE key_id = ?1",
            params![key_id],
            revocation_row,
        )
    }

    /// Keeps a verified certificate; of two for one key the later-issued one stays (so the
    /// order they arrive in does not matter). Returns whether it was stored.
    pub fn remember_cert(&self, cert: &Certificate, source: &str, now: i64) -> Result<bool> {
        let b = &cert.body;
        let held: Option<String> = self.row(
            "SELECT issued FROM trust_certs WHERE key_id = ?1",
            params![b.key_id],
            |r| r.get(0),
        )?;
        let newer = |held: &str| {
            base::clock::parse_time(&b.issued).unwrap_or(0)
                > base::clock::parse_time(held).unwrap_or(0)
        };
        if held.as_deref().is_some_and(|h| !newer(h)) {
            return Ok(false);
        }
        let not_after = base::clock::parse_time(&b.not_after).unwrap_or(0);
        let text = serde_json::to_string(cert).unwrap_or_default();
        self.tx
            .execute(
                "INSERT INTO trust_certs(key_id, name, serial, issued, not_after, certificate, source, added_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(key_id) DO UPDATE SET name = excluded.name, serial = excluded.serial,
                   issued = excluded.issued, not_after = excluded.not_after,
                   certificate = excluded.certificate, source = excluded.source, added_at = excluded.added_at",
                params![b.key_id, b.name, b.serial, b.issued, not_after, text, source, now],
            )
            .ctx(self.path)?;
        Ok(true)
    }

    /// Records a revocation; a key already revoked keeps its first revocation. Returns whether
    /// it is new.
    pub fn revoke_key(&self, r: &Revocation) -> Result<bool> {
        let last_good = serde_json::to_string(&r.last_good).unwrap_or_else(|_| "{}".into());
        let n = self
            .tx
            .execute(
                "INSERT OR IGNORE INTO trust_revoked(key_id, reason, last_good, by_command, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![r.key_id, r.reason, last_good, r.by_command, r.revoked_at],
            )
            .ctx(self.path)?;
        Ok(n > 0)
    }

    /// Bundles of `key_id` already applied (or partly applied) after the revocation point of
    /// their stream: (bundle id, recipient, sequence). The audit names them for the operator.
    pub fn applied_after(&self, r: &Revocation) -> Result<Vec<(String, String, u64)>> {
        let rows: Vec<(String, String, i64)> = self.rows(
            "SELECT b.id, b.recipient, b.sequence FROM bundles b
             WHERE b.issuer = ?1 AND EXISTS (SELECT 1 FROM commands c WHERE c.bundle_id = b.id
                   AND c.state IN ('done','running'))
             ORDER BY b.recipient, b.sequence",
            params![r.key_id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        Ok(rows
            .into_iter()
            .map(|(id, rc, s)| (id, rc, s.unsigned_abs()))
            .filter(|(_, rc, s)| *s > r.last_for(rc))
            .collect())
    }

    /// The vessel's rotated keys, oldest first.
    pub fn vessel_keys(&self) -> Result<Vec<VesselKey>> {
        self.rows(KEYS, [], key_row)
    }

    /// Records a new signing key of this vessel, used from batch `from_seq` on.
    pub fn add_vessel_key(&self, k: &VesselKey) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO vessel_keys(key_id, path, from_seq, rotation, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![k.key_id, k.path, i64::try_from(k.from_seq).unwrap_or(i64::MAX), k.rotation, k.created_at],
            )
            .ctx(self.path)?;
        Ok(())
    }
}
