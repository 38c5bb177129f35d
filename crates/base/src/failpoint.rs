//! Crash injection for the crash-scenario tests.
//!
//! When the environment variable `VESSEL_SYNC_FAILPOINT` is `NAME` or `NAME@N`, the process
//! kills itself with SIGKILL the first (or N-th) time it reaches the failpoint `NAME`: no
//! destructors, no flushing, exactly like a power cut or the OOM killer. With the suffix
//! `:hang` (`NAME:hang`, `NAME@N:hang`) the thread that reaches it blocks forever instead, like a
//! step stuck in a driver, which is what the systemd watchdog is for. Unset (always, in
//! production), a failpoint costs one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Armed {
    name: String,
    nth: u64,
    hang: bool,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var("VESSEL_SYNC_FAILPOINT").ok()?;
            let (v, hang) = match v.strip_suffix(":hang") {
                Some(v) => (v.to_string(), true),
                None => (v, false),
            };
            let (name, nth) = match v.split_once('@') {
                Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
                None => (v, 1),
            };
            Some(Armed {
                name,
                nth,
                hang,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Every failpoint name, for the tests that iterate over them.
pub const ALL: &[&str] = &[
    "admit.after-extract",
    "admit.after-journal",
    "admit.after-archive",
    "command.after-start",
    "command.before-commit",
    "command.after-commit",
    "bundle.before-cleanup",
];

/// Failpoints of the progress path (capture, batching, upload, acknowledgement, shore intake).
pub const PROGRESS: &[&str] = &[
    "capture.before-commit",
    "capture.after-commit",
    "batch.before-commit",
    "batch.after-commit",
    "sync.before-ack",
    "sync.after-ack",
    "shore.before-commit",
    "shore.after-commit",
];

/// Failpoints of a user import: after a chunk's users are written to Moodle but before the
/// progress file says so, and after it does.
pub const USERS: &[&str] = &["users.chunk-written", "users.after-chunk"];

/// Failpoints of a course rebuilt from a delta bundle: the rebuilt backup complete but not yet
/// renamed into place, and renamed but not yet restored.
pub const DELTA: &[&str] = &["delta.before-rename", "delta.after-rebuild"];

/// Failpoints of forwarding a record into the cloud Moodle: noted in flight but not yet sent,
/// and taken by the cloud but not yet settled in shore's store.
pub const FORWARD: &[&str] = &["forward.before-call", "forward.after-call"];

/// Kills the process here (or blocks this thread forever, for `:hang`) if this failpoint is
/// armed and its count is reached.
pub fn hit(name: &str) {
    if let Some(a) = armed() {
        if a.name == name && a.hits.fetch_add(1, Ordering::SeqCst) + 1 == a.nth {
            if a.hang {
                // The test harness reads this line: a failpoint is a test seam, not a report.
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("failpoint {name}: hanging");
                }
                loop {
                    std::thread::park();
                }
            }
            // SAFETY: raise() with a valid signal number has no memory-safety preconditions.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
    }
}
