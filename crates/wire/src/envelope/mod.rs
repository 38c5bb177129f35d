//! The envelope: the one file format that crosses the link in both directions.
//!
//! An envelope is a tar stream (plain ustar) compressed with zstd. Its first member is
//! `manifest.json`, its second `manifest.sig` (the 64-byte Ed25519 signature of the manifest's
//! exact bytes), and every further member is listed in the manifest with its size and SHA-256.
//! The full specification, for other implementations, is `docs/bundle-format.md`.
//!
//! Invariants the reader keeps:
//! - nothing in the manifest is trusted before the signature has been checked against the
//!   keyring (the issuer field is read beforehand only to word the rejection);
//! - memory is bounded: one tar block and one copy buffer at a time, a capped zstd window, a
//!   capped manifest; total decompressed bytes, member count and member size are capped;
//! - only regular files with plain relative names that the manifest lists are ever written, each
//!   to a fresh file under the destination directory, and only with the declared size and digest;
//!   links, devices, directories, extensions, absolute paths and `..` are refused by name;
//! - every rejection has a specific [`Rejection`] with words an IT officer can act on; trouble on
//!   this machine (disk full, unreadable file) is a [`VerifyError::Local`] instead, so that a good
//!   bundle is never quarantined for a local fault.

pub mod keys;
pub mod manifest;
pub mod policy;
mod probe;
pub mod read;
pub mod tarstream;
pub mod trust;
pub mod write;

pub use keys::{Keyring, PublicKey, SecretKey};
pub use manifest::{CommandEntry, CommandReport, FileEntry, Kind, Manifest, NeedFiles};
pub use policy::check_policy;
pub use read::{Opened, open, open_with, peek_manifest};
pub use trust::{Certificate, Grant, KeyRotation};
pub use write::{Draft, Extra, Source, repack, write_envelope, write_envelope_with};

/// Caps applied while reading an envelope.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Total decompressed bytes (tar headers included).
    pub max_total_bytes: u64,
    /// Members, manifest and signature included.
    pub max_members: u64,
    /// Bytes of one member.
    pub max_member_bytes: u64,
    /// Bytes of the manifest.
    pub max_manifest_bytes: u64,
    /// zstd window log the decoder accepts (memory per decoder is about 2^this).
    pub max_window_log: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_total_bytes: 8 << 30,
            max_members: 10_000,
            max_member_bytes: 4 << 30,
            max_manifest_bytes: 16 << 20,
            max_window_log: 25,
        }
    }
}

/// Why an envelope was refused. Each variant's text says what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Zero bytes.
    #[error("the file is empty (0 bytes); the copy probably failed: send it again")]
    Empty,
    /// A symlink, FIFO, socket or device where a bundle file was expected.
    #[error("this is a {0}, not a regular file; the inbox takes plain bundle files only")]
    NotAFile(String),
    /// Not zstd.
    #[error("not a vessel-sync bundle: the file is not zstd-compressed (it starts with {0})")]
    NotZstd(String),
    /// The compressed stream ends early.
    #[error(
        "the file is truncated: the compressed data ends before the bundle does (an interrupted copy?); send it again"
    )]
    Truncated,
    /// The compressed stream is damaged.
    #[error("the compressed data is corrupt ({0}); send the bundle again")]
    CorruptCompression(String),
    /// Inside the zstd stream there is no tar archive.
    #[error(
        "the file is zstd-compressed but does not contain a tar archive ({0}); it is not a vessel-sync bundle"
    )]
    NotTar(String),
    /// The first member is not the manifest.
    #[error(
        "the manifest is missing or not first: the first member must be manifest.json, found {0}"
    )]
    ManifestNotFirst(String),
    /// The second member is not the signature.
    #[error(
        "the signature is missing: the second member must be manifest.sig (64 bytes), found {0}"
    )]
    SignatureMissing(String),
    /// The manifest is not valid.
    #[error("the manifest is invalid: {0}")]
    ManifestInvalid(String),
    /// Signed by a key that is not trusted.
    #[error(
        "signed by key {0}, which is not in this vessel's keyring; if this operator is trusted, add their .pub file to [keyring] trusted in the config"
    )]
    UnknownKey(String),
    /// The signature does not verify.
    #[error(
        "bad signature: the manifest does not match its signature (claimed issuer {0}); the bundle was altered after signing, or damaged in transit"
    )]
    BadSignature(String),
    /// The manifest names another issuer than the key that signed it.
    #[error("the manifest names issuer {claimed} but was signed by key {actual}")]
    IssuerMismatch {
        /// Issuer in the manifest.
        claimed: String,
        /// Key that signed.
        actual: String,
    },
    /// Not a kind this reader takes here.
    #[error("this is a {0} envelope, not a command bundle")]
    WrongKind(String),
    /// Addressed elsewhere.
    #[error("addressed to vessel {recipient:?}, but this is vessel {vessel:?}")]
    WrongVessel {
        /// The bundle's recipient.
        recipient: String,
        /// This vessel.
        vessel: String,
    },
    /// Sequence already used.
    #[error(
        "replay: sequence {sequence} from issuer {issuer} for {recipient:?} was already applied ({previous}); a bundle is applied once"
    )]
    Replay {
        /// Issuer key id.
        issuer: String,
        /// Stream recipient.
        recipient: String,
        /// Sequence.
        sequence: u64,
        /// What had it.
        previous: String,
    },
    /// Too far ahead of the stream: a typo or a hostile sequence, never waited for.
    #[error(
        "sequence {sequence} from issuer {issuer} is {gap} ahead of the next expected ({next}), more than the {max} this vessel waits across ([inbox] max_sequence_gap); rebuild the bundle with the next sequence"
    )]
    SequenceGap {
        /// Issuer key id.
        issuer: String,
        /// The bundle's sequence.
        sequence: u64,
        /// The sequence the stream expects next.
        next: u64,
        /// How far ahead it is.
        gap: u64,
        /// The limit.
        max: u64,
    },
    /// The same bundle id with other content.
    #[error("bundle id {0} was already received with different content; refusing the altered copy")]
    IdReused(String),
    /// Past its expiry.
    #[error("expired at {expires} (this vessel's clock says {now}); ask shore for a fresh bundle")]
    Expired {
        /// Expiry.
        expires: String,
        /// Local time.
        now: String,
    },
    /// Before its validity.
    #[error(
        "not valid before {not_before} (this vessel's clock says {now}); check the clock, or put the file back in the inbox after that time"
    )]
    NotYetValid {
        /// Start of validity.
        not_before: String,
        /// Local time.
        now: String,
    },
    /// A member not in the manifest.
    #[error("member {0:?} is not listed in the signed manifest")]
    Unlisted(String),
    /// A member twice.
    #[error("member {0:?} appears twice")]
    DuplicateMember(String),
    /// Size differs from the manifest.
    #[error("member {name:?} is {actual} bytes, but the manifest says {declared}")]
    SizeMismatch {
        /// Member.
        name: String,
        /// Manifest size.
        declared: u64,
        /// Actual size.
        actual: u64,
    },
    /// Digest differs from the manifest.
    #[error("member {0:?} does not match its SHA-256 in the manifest: altered or damaged")]
    DigestMismatch(String),
    /// A listed member never came.
    #[error("member {0:?} is listed in the manifest but missing from the archive")]
    MissingMember(String),
    /// `..` in a name.
    #[error("path traversal: member {0:?} tries to climb out of the bundle with '..'")]
    PathTraversal(String),
    /// Absolute name.
    #[error("absolute path: member {0:?} would be written outside the bundle")]
    AbsolutePath(String),
    /// Symlink member.
    #[error(
        "member {name:?} is a symbolic link (to {target:?}); bundles may only hold regular files"
    )]
    Symlink {
        /// Member.
        name: String,
        /// Link target.
        target: String,
    },
    /// Hardlink member.
    #[error("member {name:?} is a hard link (to {target:?}); bundles may only hold regular files")]
    Hardlink {
        /// Member.
        name: String,
        /// Link target.
        target: String,
    },
    /// Device or FIFO member.
    #[error("member {0:?} is a device or FIFO; bundles may only hold regular files")]
    Device(String),
    /// Any other non-file member.
    #[error("member {name:?} is a {what}; bundles may only hold regular files")]
    Unsupported {
        /// Member.
        name: String,
        /// What it is.
        what: String,
    },
    /// The signer's certificate does not allow this bundle.
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// The signer's certificate has expired.
    #[error(
        "the certificate of operator {holder} expired at {expired} (this vessel's clock says {now}); the fleet's root key holder certifies the key again, then the bundle is signed again"
    )]
    CertificateExpired {
        /// Who holds the key.
        holder: String,
        /// End of validity.
        expired: String,
        /// Local time.
        now: String,
    },
    /// A carried certificate does not hold.
    #[error("the bundle's certificate is invalid: {0}")]
    CertificateInvalid(String),
    /// Signed by a revoked key after its revocation point.
    #[error(
        "signed by key {key}, revoked by {by}: {reason}; sequence {sequence} is after the last one it lets through ({last}), so nothing from this bundle was applied"
    )]
    RevokedKey {
        /// The key.
        key: String,
        /// The revoking command.
        by: String,
        /// Its reason.
        reason: String,
        /// This bundle's sequence.
        sequence: u64,
        /// The last sequence still let through in this stream.
        last: u64,
    },
    /// A cap was exceeded.
    #[error("too large: {0} (a decompression bomb, or a bundle bigger than [limits] allows)")]
    TooLarge(String),
    /// Bytes after the end of the archive.
    #[error("unexpected data after the end of the archive")]
    TrailingData,
}

impl Rejection {
    /// A short stable code for the audit trail and JSON output.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::NotAFile(_) => "not_a_file",
            Self::NotZstd(_) => "not_zstd",
            Self::Truncated => "truncated",
            Self::CorruptCompression(_) => "corrupt_compression",
            Self::NotTar(_) => "not_tar",
            Self::ManifestNotFirst(_) => "manifest_not_first",
            Self::SignatureMissing(_) => "signature_missing",
            Self::ManifestInvalid(_) => "manifest_invalid",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadSignature(_) => "bad_signature",
            Self::IssuerMismatch { .. } => "issuer_mismatch",
            Self::WrongKind(_) => "wrong_kind",
            Self::WrongVessel { .. } => "wrong_vessel",
            Self::Replay { .. } => "replay",
            Self::SequenceGap { .. } => "sequence_gap",
            Self::IdReused(_) => "id_reused",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Unlisted(_) => "unlisted_member",
            Self::DuplicateMember(_) => "duplicate_member",
            Self::SizeMismatch { .. } => "size_mismatch",
            Self::DigestMismatch(_) => "digest_mismatch",
            Self::MissingMember(_) => "missing_member",
            Self::PathTraversal(_) => "path_traversal",
            Self::AbsolutePath(_) => "absolute_path",
            Self::Symlink { .. } => "symlink",
            Self::Hardlink { .. } => "hardlink",
            Self::Device(_) => "device",
            Self::Unsupported { .. } => "unsupported_member",
            Self::NotPermitted(_) => "not_permitted",
            Self::CertificateExpired { .. } => "certificate_expired",
            Self::CertificateInvalid(_) => "certificate_invalid",
            Self::RevokedKey { .. } => "revoked_key",
            Self::TooLarge(_) => "too_large",
            Self::TrailingData => "trailing_data",
        }
    }
}

/// The outcome of a failed read: the bundle's fault, or this machine's.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The bundle is bad: quarantine it.
    #[error("{0}")]
    Rejected(#[from] Rejection),
    /// Local trouble (disk full, permissions): leave the bundle where it is and try again later.
    #[error("{0}")]
    Local(String),
}
