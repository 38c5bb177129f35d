//! Small facts the agent keeps by name (the `uplink` table: capture's last run, import
//! markers, restore markers), the uplink's own state as one typed [`UplinkState`], and the
//! traffic counters the byte budgets are checked against.
//!
//! The uplink's state is read whole ([`Store::uplink_state`]) and changed by named steps
//! ([`Tx::schedule_sync`], [`Tx::note_contact`], [`Tx::note_sync_failure`],
//! [`Tx::note_permanent_refusal`], [`Tx::set_bundle_cursor`], [`Tx::set_last_batch_digest`]),
//! so no caller spells a key.

use rusqlite::params;

use super::{Ctx, Result, Store, Tx, to_i64};

/// The fact names of the uplink's state (the same names as before it was typed: a journal of
/// an older build reads the same).
mod key {
    pub const NEXT_ATTEMPT_AT: &str = "next_attempt_at";
    pub const NEXT_ATTEMPT_REASON: &str = "next_attempt_reason";
    pub const FAILURES: &str = "failures";
    pub const LAST_ERROR: &str = "last_error";
    pub const PERMANENT_ERROR: &str = "permanent_error";
    pub const LAST_CONTACT_AT: &str = "last_contact_at";
    pub const BUNDLE_CURSOR: &str = "bundle_cursor";
    pub const LAST_BATCH_DIGEST: &str = "last_batch_digest";
}

/// The uplink's state between cycles.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UplinkState {
    /// When the next cycle is due (Unix seconds; 0: now).
    pub next_attempt_at: i64,
    /// Why then.
    pub next_attempt_reason: Option<String>,
    /// Failed exchanges in a row (the backoff's exponent).
    pub failures: u32,
    /// The last failure, cleared by a successful exchange.
    pub last_error: Option<String>,
    /// A refusal that stops syncing until fixed (or six hours), cleared by a success.
    pub permanent_error: Option<String>,
    /// When shore last answered (or a carrier's batch was written).
    pub last_contact_at: Option<i64>,
    /// The highest queue id of a bundle downloaded from shore.
    pub bundle_cursor: i64,
    /// The manifest digest of the last batch built: the next batch names it as predecessor.
    pub last_batch_digest: Option<String>,
}

fn parse<T: std::str::FromStr>(v: Option<&String>) -> Option<T> {
    v.and_then(|v| v.trim().parse().ok())
}

impl Store {
    /// The uplink's state.
    pub fn uplink_state(&self) -> Result<UplinkState> {
        let f = self.facts()?;
        Ok(UplinkState {
            next_attempt_at: parse(f.get(key::NEXT_ATTEMPT_AT)).unwrap_or(0),
            next_attempt_reason: f.get(key::NEXT_ATTEMPT_REASON).cloned(),
            failures: parse(f.get(key::FAILURES)).unwrap_or(0),
            last_error: f.get(key::LAST_ERROR).cloned(),
            permanent_error: f.get(key::PERMANENT_ERROR).cloned(),
            last_contact_at: parse(f.get(key::LAST_CONTACT_AT)),
            bundle_cursor: parse(f.get(key::BUNDLE_CURSOR)).unwrap_or(0),
            last_batch_digest: f.get(key::LAST_BATCH_DIGEST).cloned(),
        })
    }

    /// An uplink fact.
    pub fn fact(&self, key: &str) -> Result<Option<String>> {
        self.row(
            "SELECT value FROM uplink WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )
    }
    /// Every uplink fact.
    pub fn facts(&self) -> Result<std::collections::BTreeMap<String, String>> {
        Ok(self
            .rows("SELECT key, value FROM uplink", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .into_iter()
            .collect())
    }
    /// Bytes used today and this month (UTC): ((up, down) today, (up, down) month).
    pub fn traffic(&self, day: &str) -> Result<((u64, u64), (u64, u64))> {
        let today: (i64, i64) = self
            .row(
                "SELECT up, down FROM traffic WHERE day = ?1",
                params![day],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .unwrap_or((0, 0));
        let month_prefix = format!("{}%", day.get(..8).unwrap_or(day));
        let month: (i64, i64) = self
            .row(
                "SELECT COALESCE(SUM(up), 0), COALESCE(SUM(down), 0) FROM traffic WHERE day LIKE ?1",
                params![month_prefix],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .unwrap_or((0, 0));
        Ok((
            (today.0.unsigned_abs(), today.1.unsigned_abs()),
            (month.0.unsigned_abs(), month.1.unsigned_abs()),
        ))
    }
}

impl Tx<'_> {
    /// The next cycle is due at `at`, for `reason`.
    pub fn schedule_sync(&self, at: i64, reason: &str) -> Result<()> {
        self.set_fact(key::NEXT_ATTEMPT_AT, &at.to_string())?;
        self.set_fact(key::NEXT_ATTEMPT_REASON, reason)
    }

    /// Shore answered (or a carrier's batch was written) at `now`.
    pub fn note_contact(&self, now: i64) -> Result<()> {
        self.set_fact(key::LAST_CONTACT_AT, &now.to_string())
    }

    /// An exchange succeeded at `now`: the failure count and the errors are cleared.
    pub fn note_sync_success(&self, now: i64) -> Result<()> {
        self.note_contact(now)?;
        self.set_fact(key::FAILURES, "0")?;
        self.clear_fact(key::LAST_ERROR)?;
        self.clear_fact(key::PERMANENT_ERROR)
    }

    /// An exchange failed for `why` and is worth retrying: one more failure in a row (returned).
    pub fn note_sync_failure(&self, why: &str) -> Result<u32> {
        let failures: u32 = self
            .fact(key::FAILURES)?
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let failures = failures.saturating_add(1);
        self.set_fact(key::FAILURES, &failures.to_string())?;
        self.set_fact(key::LAST_ERROR, why)?;
        Ok(failures)
    }

    /// Shore refused for a reason that will not pass by itself.
    pub fn note_permanent_refusal(&self, why: &str) -> Result<()> {
        self.set_fact(key::PERMANENT_ERROR, why)?;
        self.set_fact(key::LAST_ERROR, why)
    }

    /// Bundles up to queue id `id` are downloaded.
    pub fn set_bundle_cursor(&self, id: i64) -> Result<()> {
        self.set_fact(key::BUNDLE_CURSOR, &id.to_string())
    }

    /// The manifest digest of the last batch built.
    pub fn last_batch_digest(&self) -> Result<Option<String>> {
        self.fact(key::LAST_BATCH_DIGEST)
    }

    /// Keeps the manifest digest of the batch just built.
    pub fn set_last_batch_digest(&self, digest: &str) -> Result<()> {
        self.set_fact(key::LAST_BATCH_DIGEST, digest)
    }

    /// Sets an uplink fact.
    pub fn set_fact(&self, key: &str, value: &str) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO uplink(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .ctx(self.path)?;
        Ok(())
    }
    /// Clears an uplink fact.
    pub fn clear_fact(&self, key: &str) -> Result<()> {
        self.tx
            .execute("DELETE FROM uplink WHERE key = ?1", params![key])
            .ctx(self.path)?;
        Ok(())
    }
    /// Adds bytes to today's traffic counters.
    pub fn add_traffic(&self, day: &str, up: u64, down: u64) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO traffic(day, up, down) VALUES (?1, ?2, ?3)
                 ON CONFLICT(day) DO UPDATE SET up = up + excluded.up, down = down + excluded.down",
                params![day, to_i64(up), to_i64(down)],
            )
            .ctx(self.path)?;
        Ok(())
    }
    /// Removes an uplink fact, inside a transaction.
    pub fn drop_fact(&self, key: &str) -> Result<()> {
        self.tx
            .execute("DELETE FROM uplink WHERE key = ?1", params![key])
            .ctx(self.path)?;
        Ok(())
    }
    /// An uplink fact, inside a transaction.
    pub fn fact(&self, key: &str) -> Result<Option<String>> {
        self.row(
            "SELECT value FROM uplink WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uplink_state_follows_its_steps_and_a_success_clears_the_failures() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("agent.db"), "mv-test").unwrap();
        assert_eq!(store.uplink_state().unwrap(), UplinkState::default());
        store
            .write(|tx| tx.schedule_sync(100, "regular schedule"))
            .unwrap();
        assert_eq!(
            store.write(|tx| tx.note_sync_failure("HTTP 503")).unwrap(),
            1
        );
        assert_eq!(
            store.write(|tx| tx.note_sync_failure("HTTP 503")).unwrap(),
            2
        );
        store
            .write(|tx| tx.note_permanent_refusal("HTTP 403"))
            .unwrap();
        let s = store.uplink_state().unwrap();
        assert_eq!((s.next_attempt_at, s.failures), (100, 2));
        assert_eq!(s.next_attempt_reason.as_deref(), Some("regular schedule"));
        assert_eq!(s.permanent_error.as_deref(), Some("HTTP 403"));
        assert_eq!(s.last_error.as_deref(), Some("HTTP 403"));
        store.write(|tx| tx.note_sync_success(200)).unwrap();
        store.write(|tx| tx.set_bundle_cursor(7)).unwrap();
        let s = store.uplink_state().unwrap();
        assert_eq!(
            (s.failures, s.last_contact_at, s.bundle_cursor),
            (0, Some(200), 7)
        );
        assert_eq!((s.last_error, s.permanent_error), (None, None));
    }
}
