//! The vessel agent: everything that runs on board.
//!
//! - [`agent`]: the daemon (start-up recovery, the work loop, wake sources, the command runner,
//!   the capture and sync schedule, the state and work locks).
//! - [`inbox`]: scanning with the settle rule, admission of one file, archive and quarantine.
//! - [`store`]: the agent's SQLite journal, outbox and audit. **The only SQL in the agent.**
//! - [`trust`]: whose bundles are applied: config keys, root certificates, revocations.
//! - [`commands`]: one file per command type a bundle can carry, and the `Journal` they write
//!   through.
//! - [`content`]: course content files kept on board by hash, for delta bundles.
//! - [`capture`]: learner progress from Moodle's database, by snapshot diff, into the outbox.
//! - [`uplink`]: the sync cycle to shore (HTTPS or carrier files), retries, budgets, windows;
//!   [`rotate`]: `rotate-key`, a new vessel signing key announced to shore in the batches.
//! - [`config`]: `agent.toml`, one file per section.
//! - [`status`]: what `vessel-sync status` shows, gathered (the command line renders it).
//!
//! Every operator command here returns a report or a typed error; nothing prints (the command
//! line in `src/cli/` renders).
//!
//! May import: `base`, `wire`, `moodle`. Never `shore`: the two sides meet only in `wire`.

#![deny(missing_docs)]
// Libraries return reports and errors; the command line prints (ARCHITECTURE.md, the seam).
#![deny(clippy::print_stdout, clippy::print_stderr)]
pub mod agent;
pub mod capture;
pub mod commands;
pub mod config;
pub mod content;
pub mod inbox;
pub mod rotate;
pub mod status;
pub mod store;
pub mod trust;
pub mod uplink;
