//! vessel-sync: the ship-to-shore sync agent for Moodle, as a library with a thin binary.
//!
//! See `ARCHITECTURE.md` for the code map and each module's invariants, and
//! `docs/bundle-format.md` for the envelope format.

#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod agent;
pub mod bench;
pub mod benchprogress;
pub mod cli;
pub mod cli_shore;
pub mod cli_users;
pub mod clock;
pub mod commands;
pub mod config;
pub mod csvrow;
pub mod demo;
pub mod envelope;
pub mod exit;
pub mod failpoint;
pub mod faultproxy;
pub mod fsutil;
pub mod inbox;
pub mod moodle;
pub mod net;
pub mod pgtemp;
pub mod progress;
pub mod report;
pub mod service;
pub mod shore;
pub mod spec;
pub mod store;
pub mod uplink;
pub mod users;
