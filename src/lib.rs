//! vessel-sync's binary crate: the command line over the workspace's crates, the benchmarks,
//! and (with the `lab` feature) the demo.
//!
//! - [`cli`]: argument parsing (clap), dispatch, exit codes; [`cli::shore`] and [`cli::users`]
//!   hold the `shore` and `users` subcommands.
//! - [`bench`]: `vessel-sync bench NAME [--json]`; `bundle` always, the ones that need a
//!   stand-in Moodle, a fault proxy or a throwaway database only with `lab`.
//! - [`demo`] (`lab`): the narrated, self-contained demo.
//!
//! See `ARCHITECTURE.md` for the code map: which crate owns what, what each may import, and
//! where each kind of change goes.

#![deny(missing_docs)]
// This crate is the edge where the real clock is chosen (clippy.toml's disallowed type).
#![allow(clippy::disallowed_types)]

pub mod bench;
pub mod cli;
#[cfg(feature = "lab")]
pub mod demo;
