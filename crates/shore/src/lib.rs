//! The shore service: receives progress batches, stores them durably and acknowledges them,
//! queues bundles for vessels, and hands progress on (the cloud Moodle, CSV export). This file
//! is the crate's face: its rooms, what it offers, and what it may import; no work is done here.
//!
//! Rooms:
//! - [`store`]: shore's records on SQLite or PostgreSQL (vessel registry, batches, records,
//!   bundle queue, forwarding state, sessions);
//! - [`serve`]: the HTTPS API (`POST /v1/sync`, `GET /v1/bundles/ID` with Range, `GET /v1/health`)
//!   and the dashboard's routes; `intake`: batch intake shared by HTTPS and file mode;
//! - [`push`], [`ingest`], [`export`]: the operator commands `shore push`, `ingest`, `export`;
//! - `vessels`: the registry's operator commands (`shore vessel add|rekey|revoke`); `status`:
//!   the fleet view ([`fleet_view`]) behind `shore status` and the dashboard;
//! - [`content`]: course content kept ashore, per-vessel copies, answers to `need_files`;
//! - [`forward`]: progress into the cloud Moodle; [`course`]: retiring a course fleet-wide;
//!   [`crew`]: a seafarer's progress following them to another vessel;
//! - [`dashboard`]: the fleet page and its JSON behind an operator login;
//! - [`spec`], [`build`]: the operator's bundle spec (TOML) made into a signed bundle
//!   (`vessel-sync bundle build`);
//! - `config`: `shore.toml` ([`ShoreConfig`]); [`error`]: the typed [`Error`].
//!
//! Every operator command returns a typed report or an [`Error`]; the command line renders
//! them and picks the exit code. Nothing in this crate prints.
//!
//! May import: `base`, `wire`, `moodle` (the cloud Moodle's web services). Never `vessel`:
//! shore meets the vessel only in `wire` (batches, with their `command_reports`; bundles).
//!
//! Intake invariants: a batch is verified (the vessel's own key, addressed to shore, sent by the
//! vessel that authenticated, every member's digest) and decoded completely before anything is
//! stored; it is then stored in one transaction (all or nothing), records deduplicated by id; a
//! sequence seen before with other content is refused as a replay; the acknowledgement covers
//! only contiguous sequences.

#![deny(missing_docs)]
// Libraries return reports and errors; the command line prints (ARCHITECTURE.md, the seam).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod build;
mod config;
pub mod content;
pub mod course;
pub mod crew;
pub mod dashboard;
pub mod error;
pub mod export;
pub mod forward;
pub mod ingest;
mod intake;
pub mod migrate;
pub mod push;
pub mod serve;
pub mod spec;
mod status;
pub mod store;
mod vessels;

pub use config::{ShoreConfig, ShoreSettings};
pub use error::{Error, Result};
pub use intake::{Intake, Refusal, intake};
pub use status::{Fleet, VesselStatus, fleet_view, status};
pub use vessels::{new_token, vessel_add, vessel_rekey, vessel_revoke};
pub use wire::{RECORDS_MEMBER, SHORE};

/// Hex SHA-256 of a token, as stored in the registry.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(token.trim().as_bytes()))
}

/// Who runs an operator command, for the audit trail (`$SUDO_USER`, else `$USER`).
pub fn operator() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}
