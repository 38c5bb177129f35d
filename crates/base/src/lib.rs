//! The leaves of vessel-sync: pieces with no knowledge of vessels, bundles or Moodle, used by
//! every other crate of the workspace.
//!
//! - [`clock`]: the time seam (a fixed clock in tests) and RFC 3339 formatting.
//! - [`fsutil`]: atomic writes and moves (write `.NAME.part`, fsync, rename, fsync the directory).
//! - [`failpoint`]: named crash points for the crash scenarios (`VESSEL_SYNC_FAILPOINT`).
//! - [`exit`]: the process exit codes (sysexits) every command uses.
//! - [`retry`]: the one retry rule (capped, jittered exponential backoff).
//! - [`csvrow`]: one CSV problem `{row, field, value, message}`, header reading, formula-safe cells.
//! - [`service`]: systemd notify (READY, WATCHDOG, STATUS, STOPPING) and logging set-up.
//! - [`text`]: untrusted text made safe to show (control characters escaped, length bounded).
//! - [`tomlcheck`]: checking a TOML config against a schema, every problem at once with its line.
//!
//! May import: nothing of the workspace.

#![deny(missing_docs)]
// Libraries return reports and errors; the command line prints (ARCHITECTURE.md, the seam).
#![deny(clippy::print_stdout, clippy::print_stderr)]
pub mod clock;
pub mod csvrow;
pub mod exit;
pub mod failpoint;
pub mod fsutil;
pub mod retry;
pub mod service;
pub mod text;
pub mod tomlcheck;
