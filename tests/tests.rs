//! The integration tests: the real binary, real files, real SQLite. One test binary (so the
//! binary under test is built once); each module is one area.

// Test helpers may unwrap, expect and panic: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod bad_input;
mod cli;
mod courses;
mod crash;
mod dashboard;
mod delta;
mod hostile;
mod hostile_shore;
mod imports;
mod keys;
mod link;
mod ordering;
mod progress;
mod real;
mod service;
mod shore_store;
mod uplink;
mod users;
