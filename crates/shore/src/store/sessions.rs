//! What every receiver of one database must agree on beyond the fleet's records: the
//! dashboard's logins (the SHA-256 of each session token and when it expires; a login made
//! through one receiver opens the page through another, and survives a restart), the recent
//! wrong passwords that throttle guessing (per client address), and leases, which let one receiver at a time do a
//! job that must not run twice at once (forwarding into the cloud Moodle).

use super::{Result, ShoreStore};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dashboard_sessions (
    token_sha256 TEXT PRIMARY KEY,
    expires      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS login_refusals (
    address TEXT NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS login_refusals_by_address ON login_refusals(address, at);
CREATE TABLE IF NOT EXISTS leases (
    name     TEXT PRIMARY KEY,
    holder   TEXT NOT NULL,
    expires  INTEGER NOT NULL
);
";

impl ShoreStore {
    /// Keeps a new dashboard session until `expires`, forgetting expired ones.
    pub fn open_session(&self, token_sha256: &str, expires: i64, now: i64) -> Result<()> {
        let mut db = self.db()?;
        db.execute(
            "DELETE FROM dashboard_sessions WHERE expires <= ?1",
            &[&now],
        )?;
        db.execute(
            "INSERT INTO dashboard_sessions(token_sha256, expires) VALUES (?1, ?2)
             ON CONFLICT(token_sha256) DO UPDATE SET expires = excluded.expires",
            &[&token_sha256, &expires],
        )?;
        Ok(())
    }

    /// Whether the session is open at `now`.
    pub fn session_valid(&self, token_sha256: &str, now: i64) -> Result<bool> {
        self.db()?.query_one(
            "SELECT COUNT(*) FROM dashboard_sessions WHERE token_sha256 = ?1 AND expires > ?2",
            &[&token_sha256, &now],
            |r| r.get(0),
        )
    }

    /// Ends a session.
    pub fn close_session(&self, token_sha256: &str) -> Result<()> {
        self.db()?
            .execute(
                "DELETE FROM dashboard_sessions WHERE token_sha256 = ?1",
                &[&token_sha256],
            )
            .map(|_| ())
    }

    /// Notes a wrong dashboard password from `address` (forgetting those over a day old).
    pub fn note_wrong_password(&self, address: &str, now: i64) -> Result<()> {
        let mut db = self.db()?;
        db.execute(
            "DELETE FROM login_refusals WHERE at < ?1",
            &[&(now - 86_400)],
        )?;
        db.execute(
            "INSERT INTO login_refusals(address, at) VALUES (?1, ?2)",
            &[&address, &now],
        )
        .map(|_| ())
    }

    /// Wrong dashboard passwords from `address` since `since`, through any receiver, and the
    /// time of the latest.
    pub fn wrong_passwords_since(&self, address: &str, since: i64) -> Result<(u64, i64)> {
        self.db()?.query_one(
            "SELECT COUNT(*), COALESCE(MAX(at), 0) FROM login_refusals WHERE address = ?1 AND at >= ?2",
            &[&address, &since],
            |r| Ok((r.get::<i64>(0)?.unsigned_abs(), r.get(1)?)),
        )
    }

    /// Takes or renews lease `name` for `holder` until `expires`; false while another holder's
    /// lease runs.
    pub fn take_lease(&self, name: &str, holder: &str, expires: i64, now: i64) -> Result<bool> {
        let n = self.db()?.execute(
            "INSERT INTO leases(name, holder, expires) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
             WHERE leases.holder = excluded.holder OR leases.expires <= ?4",
            &[&name, &holder, &expires, &now],
        )?;
        Ok(n == 1)
    }

    /// Who holds lease `name`, if anyone (an expired lease may still be named).
    pub fn lease_holder(&self, name: &str) -> Result<Option<String>> {
        self.db()?
            .query_opt("SELECT holder FROM leases WHERE name = ?1", &[&name], |r| {
                r.get(0)
            })
    }

    /// Takes lease `name` from `from`, a holder known to be gone, for `holder` until `expires`;
    /// false if the lease changed hands meanwhile.
    pub fn take_over_lease(
        &self,
        name: &str,
        from: &str,
        holder: &str,
        expires: i64,
    ) -> Result<bool> {
        let n = self.db()?.execute(
            "UPDATE leases SET holder = ?3, expires = ?4 WHERE name = ?1 AND holder = ?2",
            &[&name, &from, &holder, &expires],
        )?;
        Ok(n == 1)
    }

    /// Gives lease `name` up, if `holder` holds it.
    pub fn drop_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.db()?
            .execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                &[&name, &holder],
            )
            .map(|_| ())
    }
}
