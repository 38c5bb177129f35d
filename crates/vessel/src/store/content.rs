//! The content store's index (which course content files are kept on board, their size and
//! when last used, for the least-recently-used bound) and the content a delta bundle lacked:
//! `needed_files`, asked of shore in the next progress batch and dropped once the course is
//! restored.

use rusqlite::params;

use super::{Ctx, Result, Store, Tx, to_i64};
use wire::envelope::NeedFiles;

/// A content file kept on board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Hex SHA-1 (its name in a backup).
    pub sha1: String,
    /// Hex SHA-256.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

impl Tx<'_> {
    /// The kept content file with this SHA-1, if any.
    pub fn content_get(&self, sha1: &str) -> Result<Option<Held>> {
        self.row(
            "SELECT sha1, sha256, size FROM content WHERE sha1 = ?1",
            params![sha1],
            |r| {
                Ok(Held {
                    sha1: r.get(0)?,
                    sha256: r.get(1)?,
                    size: r.get::<_, i64>(2)?.max(0) as u64,
                })
            },
        )
    }

    /// Records a kept content file (or marks it used now).
    pub fn content_put(&self, h: &Held, now: i64) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO content(sha1, sha256, size, used_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(sha1) DO UPDATE SET used_at = excluded.used_at",
                params![h.sha1, h.sha256, to_i64(h.size), now],
            )
            .ctx(self.path)?;
        Ok(())
    }

    /// Marks a kept file used now.
    pub fn content_touch(&self, sha1: &str, now: i64) -> Result<()> {
        self.tx
            .execute(
                "UPDATE content SET used_at = ?2 WHERE sha1 = ?1",
                params![sha1, now],
            )
            .ctx(self.path)?;
        Ok(())
    }

    /// Forgets a kept file (evicted, or found damaged).
    pub fn content_remove(&self, sha1: &str) -> Result<()> {
        self.tx
            .execute("DELETE FROM content WHERE sha1 = ?1", params![sha1])
            .ctx(self.path)?;
        Ok(())
    }

    /// Files and bytes kept.
    pub fn content_total(&self) -> Result<(u64, u64)> {
        Ok(self
            .row(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM content",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?.max(0) as u64,
                        r.get::<_, i64>(1)?.max(0) as u64,
                    ))
                },
            )?
            .unwrap_or((0, 0)))
    }

    /// The least recently used kept files, oldest first.
    pub fn content_oldest(&self, limit: u64) -> Result<Vec<Held>> {
        self.rows(
            "SELECT sha1, sha256, size FROM content ORDER BY used_at, sha1 LIMIT ?1",
            params![to_i64(limit)],
            |r| {
                Ok(Held {
                    sha1: r.get(0)?,
                    sha256: r.get(1)?,
                    size: r.get::<_, i64>(2)?.max(0) as u64,
                })
            },
        )
    }

    /// Notes content members of `bundle` the vessel lacks (kept until [`Tx::needs_done`]).
    pub fn need_files(&self, bundle: &str, sha256: &[String], now: i64) -> Result<()> {
        for h in sha256 {
            self.tx
                .execute(
                    "INSERT OR IGNORE INTO needed_files(bundle_id, sha256, since) VALUES (?1, ?2, ?3)",
                    params![bundle, h, now],
                )
                .ctx(self.path)?;
        }
        Ok(())
    }

    /// Needs not asked yet, or asked before `reask_before` without an answer since, grouped by
    /// bundle.
    pub fn needs_to_ask(&self, reask_before: i64) -> Result<Vec<NeedFiles>> {
        let rows: Vec<(String, String)> = self.rows(
            "SELECT bundle_id, sha256 FROM needed_files
             WHERE asked_at IS NULL OR asked_at < ?1 ORDER BY bundle_id, sha256",
            params![reask_before],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut out: Vec<NeedFiles> = Vec::new();
        for (bundle, sha) in rows {
            match out.last_mut() {
                Some(n) if n.bundle == bundle => n.sha256.push(sha),
                _ => out.push(NeedFiles {
                    bundle,
                    sha256: vec![sha],
                }),
            }
        }
        Ok(out)
    }

    /// Marks needs as asked in batch `seq`.
    pub fn needs_asked(&self, asked: &[NeedFiles], seq: u64, now: i64) -> Result<()> {
        for n in asked {
            for h in &n.sha256 {
                self.tx
                    .execute(
                        "UPDATE needed_files SET asked_batch = ?3, asked_at = ?4 WHERE bundle_id = ?1 AND sha256 = ?2",
                        params![n.bundle, h, to_i64(seq), now],
                    )
                    .ctx(self.path)?;
            }
        }
        Ok(())
    }

    /// Makes the waiting commands of `bundle` due now (content they lacked arrived).
    pub fn wake_waiting(&self, bundle: &str, now: i64) -> Result<()> {
        self.tx
            .execute(
                "UPDATE commands SET next_attempt_at = ?2 WHERE bundle_id = ?1 AND state = 'waiting'",
                params![bundle, now],
            )
            .ctx(self.path)?;
        Ok(())
    }

    /// Drops the needs of `bundle` (its course was restored, or the command ended).
    pub fn needs_done(&self, bundle: &str) -> Result<()> {
        self.tx
            .execute(
                "DELETE FROM needed_files WHERE bundle_id = ?1",
                params![bundle],
            )
            .ctx(self.path)?;
        Ok(())
    }
}

impl Store {
    /// Content files and bytes kept, and content members still needed from shore.
    pub fn content_summary(&self) -> Result<(u64, u64, u64)> {
        self.row(
            "SELECT (SELECT COUNT(*) FROM content), (SELECT COALESCE(SUM(size), 0) FROM content),
                    (SELECT COUNT(*) FROM needed_files)",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?.max(0) as u64,
                    r.get::<_, i64>(1)?.max(0) as u64,
                    r.get::<_, i64>(2)?.max(0) as u64,
                ))
            },
        )
        .map(|o| o.unwrap_or((0, 0, 0)))
    }
}
