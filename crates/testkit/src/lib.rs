//! The test kit: stand-ins and test data for vessel-sync's tests, the demo and the benchmarks.
//! **Never a dependency of the shipped binary**: the top-level crate links it only with its
//! `lab` feature (off in the Debian packages) and as a dev-dependency.
//!
//! - [`fake`]: a stand-in Moodle 5.0 (REST web services, and the CLI scripts through
//!   a `php` script) answering as the captures in `shared/moodle/` show.
//! - [`faultproxy`]: a TCP proxy that injects link faults and counts round trips.
//! - [`pgtemp`], [`mariatemp`]: throwaway PostgreSQL and MariaDB servers on loopback ports.
//! - [`realmoodle`]: a real Moodle 5.0 installed from `shared/moodle/src/` on either, for the
//!   end-to-end tests and `bench users --moodle`.
//! - [`sample`], [`records`]: generated seafarer CSVs and progress records.
//! - [`course`]: a real course backup with generated content files (delta bundles).
//!
//! May import: `base`, `wire`, `moodle` (the settings its stand-ins answer to).

#![deny(missing_docs)]
// The kit plays a slow link (the fault proxy's delays), polls throwaway servers until they
// accept connections and stamps its stand-in's records with the wall clock: what the seams of
// clippy.toml keep out of the product is its job here. It never ships in the package.
#![allow(clippy::disallowed_methods)]

pub mod course;
pub mod fake;
pub mod faultproxy;
pub mod mariatemp;
pub mod pgtemp;
pub mod realmoodle;
pub mod records;
pub mod sample;
