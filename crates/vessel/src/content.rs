//! The content store on board: the content files of course backups the vessel restored or
//! made (`STATE_DIR/content/ab/SHA1`), so that the next version of a course can arrive as a
//! delta bundle carrying only what changed (`moodle::delta`).
//!
//! Never needed for correctness: it is bounded by `[limits] content_store_bytes`, evicting the
//! least recently used first; every copy is checked against its SHA-1 and SHA-256 before use
//! and again while the backup is rebuilt, and a damaged copy is dropped. A file it lacks makes
//! the restore ask shore for it (`needed_files`), never restore a wrong course.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::store::{Held, Tx};
use moodle::delta::{self, ContentFile};

/// The store under a state directory.
pub struct ContentStore {
    dir: PathBuf,
    max_bytes: u64,
}

impl ContentStore {
    /// The store of the agent whose state directory is `state_dir`.
    pub fn new(state_dir: &Path, max_bytes: u64) -> Self {
        Self {
            dir: state_dir.join("content"),
            max_bytes,
        }
    }

    fn path(&self, sha1: &str) -> PathBuf {
        self.dir.join(sha1.get(..2).unwrap_or("00")).join(sha1)
    }

    /// A checked copy of `c`, marked used; `None` if the store has none. A copy that does not
    /// match its hashes is removed (it is fetched again like a missing one).
    pub fn lookup(
        &self,
        tx: &Tx<'_>,
        c: &ContentFile,
        now: i64,
    ) -> Result<Option<PathBuf>, String> {
        let Some(held) = tx.content_get(&c.sha1).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let path = self.path(&c.sha1);
        let good = held.sha256 == c.sha256 && delta::matches(&path, c).unwrap_or(false);
        if !good {
            tracing::warn!(sha1 = %c.sha1, file = %path.display(), "a content file on board is missing or damaged; dropped, it is fetched again");
            self.forget(tx, &c.sha1)?;
            return Ok(None);
        }
        tx.content_touch(&c.sha1, now).map_err(|e| e.to_string())?;
        Ok(Some(path))
    }

    /// Drops a copy (damaged, or evicted).
    pub fn forget(&self, tx: &Tx<'_>, sha1: &str) -> Result<(), String> {
        let path = self.path(sha1);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(format!("{}: {e}", path.display()));
            }
        }
        tx.content_remove(sha1).map_err(|e| e.to_string())
    }

    /// Keeps the content files of the backup at `mbz` (restored or made on board), then
    /// evicts down to the bound. Returns the files and bytes newly kept.
    pub fn keep_from(&self, tx: &Tx<'_>, mbz: &Path, now: i64) -> Result<(u64, u64), String> {
        if self.max_bytes == 0 {
            return Ok((0, 0));
        }
        let work = self.dir.join(".incoming");
        if work.exists() {
            std::fs::remove_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        }
        if moodle::mbz::manifest(mbz).ok().flatten().is_none() {
            // A zip-form backup (or unreadable): nothing to keep by content.
            return Ok((0, 0));
        }
        let split = delta::split(mbz, &HashSet::new(), &work)?;
        let mut kept = (0, 0);
        for (c, p) in &split.carried {
            if c.size > self.max_bytes {
                continue;
            }
            let dest = self.path(&c.sha1);
            if tx
                .content_get(&c.sha1)
                .map_err(|e| e.to_string())?
                .is_none()
                || !dest.exists()
            {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("{}: {e}", parent.display()))?;
                }
                std::fs::rename(p, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
                kept.0 += 1;
                kept.1 += c.size;
            }
            let held = Held {
                sha1: c.sha1.clone(),
                sha256: c.sha256.clone(),
                size: c.size,
            };
            tx.content_put(&held, now).map_err(|e| e.to_string())?;
        }
        let _ = std::fs::remove_dir_all(&work);
        self.evict(tx)?;
        Ok(kept)
    }

    fn evict(&self, tx: &Tx<'_>) -> Result<(), String> {
        loop {
            let (_, bytes) = tx.content_total().map_err(|e| e.to_string())?;
            if bytes <= self.max_bytes {
                return Ok(());
            }
            let oldest = tx.content_oldest(64).map_err(|e| e.to_string())?;
            if oldest.is_empty() {
                return Ok(());
            }
            let mut left = bytes;
            for h in oldest {
                if left <= self.max_bytes {
                    break;
                }
                self.forget(tx, &h.sha1)?;
                left = left.saturating_sub(h.size);
            }
        }
    }
}
