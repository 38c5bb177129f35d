//! How vessel-sync reaches a Moodle site: the database, read-only, to capture progress
//! ([`db`]); the web services to change users, enrolments and course settings ([`ws`]); the
//! CLI scripts for course backup, restore and deletion ([`cli`]); what a backup file says about
//! itself ([`mbz`]) and its split into a skeleton and content files ([`delta`]); seafarer accounts in bulk
//! ([`users`]); and the `[moodle]` section of the agent's config that configures all of them
//! ([`config`]).
//!
//! May import: `base`, `wire` (progress record kinds, the HTTP client). Never writes to
//! Moodle's database: changes go through Moodle's own web services and scripts.

#![deny(missing_docs)]
// Libraries return reports and errors; the command line prints (ARCHITECTURE.md, the seam).
#![deny(clippy::print_stdout, clippy::print_stderr)]
pub mod cli;
pub mod config;
pub mod db;
pub mod delta;
pub mod lookup;
pub mod mbz;
pub mod plugin;
pub mod users;
pub mod ws;
