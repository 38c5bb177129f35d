//! `[inbox]`: how often the inbox is scanned, how long a file must settle before it is read, how
//! long an early bundle waits for a missing sequence (and how far ahead one may be), and the
//! clock skew tolerated.

use base::tomlcheck::Walker;
use toml_edit::Table;

/// Inbox and ordering settings.
#[derive(Debug, Clone)]
pub struct InboxSettings {
    /// Full rescan period in seconds (file system events are only hints).
    pub scan_interval: u64,
    /// A file must be unchanged (size and mtime) for this many seconds before it is read.
    pub settle: u64,
    /// How long a bundle that arrived ahead of a missing sequence waits before proceeding.
    pub gap_timeout: u64,
    /// Tolerance for not-before/expiry against a drifting clock.
    pub clock_skew: u64,
    /// A bundle more than this many sequences ahead of the next expected is quarantined.
    pub max_sequence_gap: u64,
}

/// Reads this section of `root`.
pub(crate) fn parse(w: &mut Walker<'_>, root: &Table) -> InboxSettings {
    let inbox_t = w.sub(root, "inbox");
    if let Some(t) = inbox_t {
        w.only(
            t,
            "[inbox]",
            &[
                "scan_interval",
                "settle",
                "gap_timeout",
                "clock_skew",
                "max_sequence_gap",
            ],
        );
    }
    InboxSettings {
        scan_interval: w.seconds(inbox_t, "inbox", "scan_interval", 30).max(1),
        settle: w.seconds(inbox_t, "inbox", "settle", 5),
        gap_timeout: w.seconds(inbox_t, "inbox", "gap_timeout", 2 * 86_400),
        clock_skew: w.seconds(inbox_t, "inbox", "clock_skew", 300),
        max_sequence_gap: w.count(inbox_t, "inbox", "max_sequence_gap", 10_000).max(1),
    }
}
