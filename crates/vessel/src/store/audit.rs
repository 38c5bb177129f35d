//! The audit trail: one append-only row per event, written in the same transaction as the state
//! change it describes.

use rusqlite::params;

use super::{Ctx, Result, Store, Tx};

/// Kinds of audit event, for readers that filter.
pub struct AuditEvent;

impl AuditEvent {
    /// A file was refused and quarantined.
    pub const REJECTED: &'static str = "bundle_rejected";
    /// The same bundle arrived again.
    pub const DUPLICATE: &'static str = "bundle_duplicate";
}

/// One audit row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    /// Row id (monotonic).
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who caused it: the issuer key id, or `agent`.
    pub actor: String,
    /// Bundle id, if any.
    pub bundle_id: Option<String>,
    /// Command id, if any.
    pub command_id: Option<String>,
    /// What happened (`bundle_accepted`, `command_done`, ...).
    pub event: String,
    /// Short outcome (`ready`, `done`, `failed`, a rejection code ...).
    pub outcome: String,
    /// Words.
    pub detail: String,
}

impl Tx<'_> {
    /// Appends an audit row.
    #[allow(clippy::too_many_arguments)]
    pub fn audit(
        &self,
        at: i64,
        actor: &str,
        bundle_id: Option<&str>,
        command_id: Option<&str>,
        event: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO audit(at, actor, bundle_id, command_id, event, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![at, actor, bundle_id, command_id, event, outcome, detail],
            )
            .ctx(self.path)?;
        Ok(())
    }
}

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        bundle_id: r.get(3)?,
        command_id: r.get(4)?,
        event: r.get(5)?,
        outcome: r.get(6)?,
        detail: r.get(7)?,
    })
}

impl Store {
    /// Streams audit rows in order to `f`, from `since_id` on, optionally one event kind only.
    pub fn for_each_audit(
        &self,
        since_id: i64,
        event: Option<&str>,
        mut f: impl FnMut(AuditEntry) -> std::io::Result<()>,
    ) -> Result<std::io::Result<()>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, at, actor, bundle_id, command_id, event, outcome, detail FROM audit
                 WHERE id > ?1 AND (?2 IS NULL OR event = ?2) ORDER BY id",
            )
            .ctx(&self.path)?;
        let rows = stmt
            .query_map(params![since_id, event], entry)
            .ctx(&self.path)?;
        for row in rows {
            if let Err(e) = f(row.ctx(&self.path)?) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    /// The newest `limit` rows of one event kind, newest first.
    pub fn recent_audit(&self, event: &str, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = self.rows(
            "SELECT id, at, actor, bundle_id, command_id, event, outcome, detail FROM audit
                 WHERE event = ?1 ORDER BY id DESC LIMIT ?2",
            params![event, limit],
            entry,
        )?;
        Ok(rows)
    }

    /// Number of rows of an event kind.
    pub fn count_audit(&self, event: &str) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM audit WHERE event = ?1",
                params![event],
                |r| r.get(0),
            )
            .ctx(&self.path)?;
        Ok(n.unsigned_abs())
    }
}
