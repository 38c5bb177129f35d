//! Learner progress as it crosses the link: what a record is ([`record`]) and how a batch of
//! records is encoded ([`codec`]). Capturing records from Moodle's database is the vessel's
//! (`vessel::capture`).
//!
//! Invariants: a record's id is a pure function of the vessel and the record's natural key,
//! value and time, so capturing the same state twice yields one record and shore can recompute
//! every id from the batch it received (ids never travel); a change that cannot be keyed is
//! quarantined with its reason, never dropped (law 1); a change recorded as imported from shore
//! is never queued (law 2).

pub mod codec;
pub mod limits;
pub mod record;

pub use record::{Record, RecordKind};
