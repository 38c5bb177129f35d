//! Course content ashore in the store: the content files shore keeps, each queued bundle's
//! omittable members, what each vessel holds (from its download cursor and its `need_files`),
//! the per-vessel copies of a bundle (`variants`) and the content vessels asked for (`needs`).

use super::{Result, ShoreStore, to_i64};

impl ShoreStore {
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

    /// The first queue entry of a bundle that carries content and is addressed to `vessel`
    /// (or the fleet), to answer that vessel's need. Another vessel's bundle is never found.
    pub fn content_bundle(&self, bundle_id: &str, vessel: &str) -> Result<Option<i64>> {
        self.db()?.query_one(
            "SELECT MIN(q.id) FROM queue q WHERE q.bundle_id = ?1
             AND (q.recipient = ?2 OR q.recipient = '*')
             AND EXISTS (SELECT 1 FROM queue_content c WHERE c.queue_id = q.id)",
            &[&bundle_id, &vessel],
            |r| r.get(0),
        )
    }

    /// A copy already queued for `vessel` that answers exactly these needs of `bundle_id` and
    /// that the vessel has not fetched yet: asking again is answered by it, not by a new copy.
    pub fn pending_answer(
        &self,
        vessel: &str,
        bundle_id: &str,
        sha256: &[String],
    ) -> Result<Option<i64>> {
        let mut db = self.db()?;
        let cursor: i64 = db
            .query_opt(
                "SELECT cursor FROM holds_cursor WHERE vessel = ?1",
                &[&vessel],
                |r| r.get(0),
            )?
            .unwrap_or(0);
        let mut found: Option<i64> = None;
        for h in sha256 {
            let answered: Option<i64> = db
                .query_opt(
                    "SELECT answered FROM needs WHERE vessel = ?1 AND bundle_id = ?2 AND sha256 = ?3",
                    &[&vessel, &bundle_id, h],
                    |r| r.get(0),
                )?
                .flatten();
            match (answered, found) {
                (Some(q), None) if q > cursor => found = Some(q),
                (Some(q), Some(f)) if q == f => {}
                _ => return Ok(None),
            }
        }
        Ok(found)
    }

    /// Copies written for `vessel`'s needs of `bundle_id` since `since`.
    pub fn need_copies_since(&self, vessel: &str, bundle_id: &str, since: i64) -> Result<u64> {
        self.db()?.query_one(
            "SELECT COUNT(*) FROM queue WHERE recipient = ?1 AND bundle_id = ?2
             AND file LIKE '%.need-%' AND queued_at >= ?3",
            &[&vessel, &bundle_id, &since],
            |r| r.get::<i64>(0).map(i64::unsigned_abs),
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
}
