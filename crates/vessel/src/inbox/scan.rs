//! Which inbox files are ready: a full directory scan is the truth; file-system events only
//! make the next scan come sooner (network file systems deliver none). A candidate is a regular
//! file whose name does not start with `.` and does not end in `.part` or `.tmp`. It is read
//! only once it has settled: its size and mtime unchanged since the previous scan and its mtime
//! at least `settle` seconds old (or, for a file whose mtime lies in the future, unchanged across
//! scans `settle` seconds apart). A file the agent committed itself (a download checked against
//! its digest) is taken at once.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// What the scanner remembers about a file between scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    size: u64,
    mtime: i64,
    since: i64,
}

/// Remembers file observations across scans.
#[derive(Debug, Default)]
pub struct Scanner {
    seen: HashMap<PathBuf, Seen>,
    complete: HashSet<PathBuf>,
}

/// Result of one scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Settled files, sorted by name.
    pub ready: Vec<PathBuf>,
    /// Files still arriving, with the time they may be settled.
    pub arriving: Vec<(PathBuf, i64)>,
}

/// True for names the inbox never reads: hidden and temporary files.
pub fn ignored_name(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".part") || name.ends_with(".tmp")
}

impl Scanner {
    /// Lists the inbox and sorts candidates into settled and still-arriving.
    pub fn scan(&mut self, inbox: &Path, settle: i64, now: i64) -> std::io::Result<Scan> {
        let mut out = Scan::default();
        let mut present = HashMap::new();
        for entry in fs::read_dir(inbox)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if ignored_name(&name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let path = entry.path();
            let prev = self.seen.get(&path).copied();
            let since = match prev {
                Some(p) if p.size == meta.len() && p.mtime == mtime => p.since,
                _ => now,
            };
            let seen = Seen {
                size: meta.len(),
                mtime,
                since,
            };
            present.insert(path.clone(), seen);
            let unchanged = prev == Some(seen);
            let old_enough = now.saturating_sub(mtime) >= settle;
            let mtime_in_future = mtime > now;
            // A file this agent committed itself (a download, checked against its digest and
            // renamed into place) is whole: no settle wait.
            let settled = if self.complete.remove(&path) {
                true
            } else if mtime_in_future {
                unchanged && now.saturating_sub(since) >= settle
            } else {
                old_enough && (prev.is_none() || unchanged)
            };
            if settled {
                out.ready.push(path);
            } else {
                let at = if mtime_in_future {
                    since + settle
                } else {
                    mtime.saturating_add(settle).max(now)
                };
                out.arriving.push((path, at));
            }
        }
        self.seen = present;
        out.ready.sort();
        Ok(out)
    }

    /// Marks a file the agent itself put into the inbox whole (renamed into place after its
    /// digest was checked): the next scan takes it without waiting for it to settle.
    pub fn mark_complete(&mut self, path: PathBuf) {
        self.complete.insert(path);
    }

    /// Forgets a file (after it was moved away).
    pub fn forget(&mut self, path: &Path) {
        self.seen.remove(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mtime_of(p: &Path) -> i64 {
        fs::metadata(p)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn a_file_the_agent_committed_itself_is_taken_at_once_and_only_that_once() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("shore-00000001-x.vsb");
        let theirs = dir.path().join("usb.vsb");
        fs::write(&mine, b"abc").unwrap();
        fs::write(&theirs, b"abc").unwrap();
        let now = mtime_of(&mine);
        let mut s = Scanner::default();
        s.mark_complete(mine.clone());
        let scan = s.scan(dir.path(), 3600, now).unwrap();
        assert_eq!(scan.ready, vec![mine.clone()], "the download, at once");
        assert_eq!(scan.arriving.len(), 1, "the copied file settles as before");
        // The mark is used up: the same name written again later settles like any file.
        fs::write(&mine, b"abcd").unwrap();
        let scan = s.scan(dir.path(), 3600, now).unwrap();
        assert!(scan.ready.is_empty());
    }

    #[test]
    fn a_growing_file_is_not_ready_until_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.vsb");
        fs::write(&f, b"abc").unwrap();
        fs::write(dir.path().join(".hidden"), b"x").unwrap();
        fs::write(dir.path().join("c.vsb.part"), b"x").unwrap();
        let mtime = mtime_of(&f);
        let mut s = Scanner::default();
        // Fresh file: arriving.
        let scan = s.scan(dir.path(), 5, mtime + 1).unwrap();
        assert!(scan.ready.is_empty());
        assert_eq!(
            scan.arriving.len(),
            1,
            "temporary and hidden names are ignored"
        );
        // Old enough and unchanged: ready.
        let scan = s.scan(dir.path(), 5, mtime + 10).unwrap();
        assert_eq!(scan.ready, vec![f.clone()]);
        // It grows: arriving again.
        fs::write(&f, b"abcdef").unwrap();
        let scan = s.scan(dir.path(), 5, mtime + 11).unwrap();
        assert!(scan.ready.is_empty());
    }
}
