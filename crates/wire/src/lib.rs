//! The wire: everything that crosses between a vessel and shore, and so the only place where
//! the two sides meet.
//!
//! - [`envelope`]: the signed, compressed tar envelope that carries command bundles to vessels
//!   and progress batches to shore: keys, manifest, strict tar reader, bounded reader, writer.
//! - [`progress`]: progress records, their ids, and the `records.bin` codec with its dictionary.
//! - [`net`]: the HTTP clients and both TLS configurations (rustls with ring, CA file, pins).
//! - [`link`]: the uplink's own HTTP/1.1 client, which counts every byte and turn it costs and
//!   resumes TLS sessions.
//! - [`ids`]: the one rule for ids that name files.
//! - the names both sides use: [`SHORE`], [`RECORDS_MEMBER`], [`valid_vessel_id`].
//!
//! May import: `base`. Knows nothing of journals, stores or Moodle.

#![deny(missing_docs)]
// Libraries return reports and errors; the command line prints (ARCHITECTURE.md, the seam).
#![deny(clippy::print_stdout, clippy::print_stderr)]
pub mod envelope;
pub mod ids;
pub mod link;
pub mod net;
pub mod progress;

/// Most records a vessel puts in one batch, and shore's default `max_batch_records`: a
/// vessel's `[uplink] batch_records` is held to it, so an honest batch is never refused for its
/// size.
pub const MAX_BATCH_RECORDS: u64 = 50_000;

/// The member of a progress envelope that holds the encoded records.
pub const RECORDS_MEMBER: &str = "records.bin";
/// The recipient name of envelopes addressed to shore.
pub const SHORE: &str = "shore";

/// A vessel id: 1-64 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or digit, and not
/// [`SHORE`].
pub fn valid_vessel_id(id: &str) -> bool {
    ids::check_id("vessel id", id).is_ok()
        && id.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && id != SHORE
}
