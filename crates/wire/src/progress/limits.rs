//! What decoding one progress payload may allocate ([`DecodeLimits`]): a budget of records and
//! of decoded bytes, counted before anything is allocated, so a small hostile batch cannot
//! make shore allocate gigabytes.

use super::Record;

/// What decoding one payload may allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most records.
    pub max_records: usize,
    /// Most bytes the decoded tables and records may hold (each record counted as its struct
    /// plus the bytes of the seven strings it carries).
    pub max_decoded_bytes: usize,
}

/// Decoded bytes allowed per payload byte by [`DecodeLimits::for_input`].
pub const DECODED_PER_INPUT_BYTE: usize = 256;
/// The budget of a small payload (so a handful of records with long names always decodes).
pub const MIN_DECODED_BYTES: usize = 1 << 20;

impl DecodeLimits {
    /// The default budget for a payload of `len` bytes: 256 × `len`, at least 1 MiB.
    pub fn for_input(len: usize) -> Self {
        Self {
            max_records: usize::MAX,
            max_decoded_bytes: len
                .saturating_mul(DECODED_PER_INPUT_BYTE)
                .max(MIN_DECODED_BYTES),
        }
    }

    /// At most `max_records` records and `cap` bytes, within the default budget.
    pub fn capped(len: usize, max_records: usize, cap: usize) -> Self {
        let d = Self::for_input(len);
        Self {
            max_records,
            max_decoded_bytes: d.max_decoded_bytes.min(cap),
        }
    }
}

/// What one decoded record holds: its struct and its strings.
pub fn decoded_size(r: &Record) -> usize {
    std::mem::size_of::<Record>()
        + r.user.len()
        + r.course.len()
        + r.item.len()
        + r.user_legacy.len()
        + r.course_legacy.len()
        + r.item_legacy.len()
        + r.value.len()
}
