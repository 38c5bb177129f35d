//! The manifest: the signed description of everything in an envelope (see `docs/bundle-format.md`).

use serde::{Deserialize, Serialize};

/// The only format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// What an envelope carries. The format is direction-neutral: shore sends `commands` to vessels;
/// vessels send `progress` batches ashore in the same envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Commands for a vessel.
    Commands,
    /// A batch of progress records for shore.
    Progress,
}

/// One file carried in the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Member name inside the tar stream, e.g. `files/mapping.csv`.
    pub name: String,
    /// Exact size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    /// The member may be absent from the archive: the recipient takes it from its content
    /// store by `sha256` (course content a vessel already holds; see `docs/bundle-format.md`,
    /// "Course backups by content").
    #[serde(default, skip_serializing_if = "is_false")]
    pub may_omit: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A progress batch's request for content members a vessel lacks: `sha256` of the members of
/// command bundle `bundle` that it needs sent again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeedFiles {
    /// The command bundle's id.
    pub bundle: String,
    /// Hex SHA-256 of each member needed.
    pub sha256: Vec<String>,
}

/// A progress batch's report of where one of the vessel's commands stands, so that shore can
/// show, say, a retired course as deleted on board (`shore course status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandReport {
    /// The command's id.
    pub id: String,
    /// The bundle that carried it.
    pub bundle: String,
    /// The command type, e.g. `delete_course`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its journal state: `ready`, `running`, `waiting`, `done`, `failed`, `superseded`,
    /// `duplicate`.
    pub state: String,
    /// Why it waits, what it did, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the state was reached, RFC 3339 UTC.
    pub at: String,
    /// For a course deletion or replacement: records of the course still waiting on board for
    /// shore's acknowledgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unacked_records: Option<u64>,
    /// For a course deletion or replacement: learners with progress in the course on board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learners: Option<u64>,
}

/// One command: a type, its arguments, and the files it uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandEntry {
    /// Command id, unique across all bundles of an issuer (defaults to `BUNDLE_ID:N`).
    pub id: String,
    /// Command type, e.g. `set_mapping`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Type-specific arguments (a JSON object).
    #[serde(default)]
    pub args: serde_json::Map<String, serde_json::Value>,
    /// Names of members (from `files`) that this command reads.
    #[serde(default)]
    pub files: Vec<String>,
}

/// The manifest, first member of every envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version, always [`FORMAT_VERSION`].
    pub format: u32,
    /// What the envelope carries.
    pub kind: Kind,
    /// Unique id of this envelope (a UUID).
    pub id: String,
    /// Id of the key that signed it.
    pub issuer: String,
    /// Who sent it, for people ("shore-ops", a vessel id).
    pub sender: String,
    /// The recipient: a vessel id, `*` for the whole fleet, or `shore`.
    pub recipient: String,
    /// Sequence number in the (issuer, recipient) stream, from 1.
    pub sequence: u64,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// Not to be applied before this time (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// Not to be applied after this time (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Every other member of the envelope.
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// The commands (for `kind = commands`).
    #[serde(default)]
    pub commands: Vec<CommandEntry>,
    /// The signer's operator certificate, when the signer is certified by the fleet root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<super::trust::Certificate>,
    /// A progress batch's vessel key rotation, carried until shore acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<super::trust::KeyRotation>,
    /// A progress batch's predecessor: the SHA-256 of the manifest of batch `sequence - 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// A progress batch's requests for omitted content members the vessel does not hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub need_files: Vec<NeedFiles>,
    /// A progress batch's reports of the vessel's commands whose state changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command_reports: Vec<CommandReport>,
}

/// The recipient value that addresses every vessel.
pub const FLEET: &str = "*";

/// Highest sequence number: sequences are kept as SQLite integers (signed 64-bit).
pub const MAX_SEQUENCE: u64 = i64::MAX as u64;
/// Most `need_files` entries (bundles) one batch may carry.
pub const MAX_NEED_BUNDLES: usize = 256;
/// Most content hashes all `need_files` entries of one batch may name together.
pub const MAX_NEED_FILES: usize = 16_384;
/// Most command reports one batch may carry.
pub const MAX_COMMAND_REPORTS: usize = 4_096;

impl Manifest {
    /// Checks the manifest's own consistency (not its policy): version, names, references.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT_VERSION {
            return Err(format!(
                "format version {} (this build reads version {FORMAT_VERSION}; upgrade vessel-sync)",
                self.format
            ));
        }
        if self.sequence == 0 {
            return Err("sequence 0 (sequences start at 1)".into());
        }
        if self.sequence > MAX_SEQUENCE {
            return Err(format!(
                "sequence {} is out of range (sequences go from 1 to {MAX_SEQUENCE})",
                self.sequence
            ));
        }
        let id = |r: Result<(), crate::ids::IdError>| r.map_err(|e| e.to_string());
        id(crate::ids::check_id("bundle id", &self.id))?;
        id(crate::ids::check_id("issuer", &self.issuer))?;
        if self.recipient != FLEET
            && self.recipient != crate::SHORE
            && !crate::valid_vessel_id(&self.recipient)
        {
            return Err(format!(
                "recipient {:?} is neither a vessel id, '*' nor 'shore'",
                base::text::clip(&self.recipient, 80)
            ));
        }
        if self.sender.len() > 128 || self.sender.chars().any(char::is_control) {
            return Err("'sender' is longer than 128 bytes or holds control characters".into());
        }
        if base::clock::parse_time(&self.created).is_none() {
            return Err(format!(
                "'created' is not an RFC 3339 UTC time: {:?}",
                self.created
            ));
        }
        for (label, v) in [("not_before", &self.not_before), ("expires", &self.expires)] {
            if let Some(v) = v {
                if base::clock::parse_time(v).is_none() {
                    return Err(format!("'{label}' is not an RFC 3339 UTC time: {v:?}"));
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for f in &self.files {
            check_member_name(&f.name)?;
            if matches!(f.name.as_str(), MANIFEST_NAME | SIGNATURE_NAME) {
                return Err(format!("file entry uses the reserved name {:?}", f.name));
            }
            if !names.insert(f.name.as_str()) {
                return Err(format!("file {:?} is listed twice", f.name));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("file {:?} has a malformed sha256", f.name));
            }
        }
        // Directory members would make one name a file and a directory at once.
        let mut sorted: Vec<&str> = names.iter().copied().collect();
        sorted.sort_unstable();
        for pair in sorted.windows(2) {
            if pair[1]
                .strip_prefix(pair[0])
                .is_some_and(|rest| rest.starts_with('/'))
            {
                return Err(format!(
                    "file {:?} is also the directory of file {:?}",
                    pair[0], pair[1]
                ));
            }
        }
        if self.need_files.len() > MAX_NEED_BUNDLES
            || self
                .need_files
                .iter()
                .map(|n| n.sha256.len())
                .sum::<usize>()
                > MAX_NEED_FILES
        {
            return Err(format!(
                "need_files asks for more than {MAX_NEED_BUNDLES} bundles or {MAX_NEED_FILES} files"
            ));
        }
        for n in &self.need_files {
            id(crate::ids::check_id("need_files bundle", &n.bundle))?;
            if n.sha256
                .iter()
                .any(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(format!(
                    "need_files for bundle {:?} has a malformed sha256",
                    n.bundle
                ));
            }
        }
        if self.command_reports.len() > MAX_COMMAND_REPORTS {
            return Err(format!(
                "more than {MAX_COMMAND_REPORTS} command reports in one batch"
            ));
        }
        for c in &self.command_reports {
            id(crate::ids::check_command_id(&c.id))?;
            id(crate::ids::check_id("report bundle", &c.bundle))?;
            if c.kind.len() > 64
                || c.state.len() > 32
                || c.reason.as_ref().is_some_and(|r| r.len() > 4096)
            {
                return Err(format!(
                    "command report {:?} has a type, state or reason that is too long",
                    c.id
                ));
            }
            if base::clock::parse_time(&c.at).is_none() {
                return Err(format!(
                    "command report {:?} has an empty id or a time that is not RFC 3339 UTC",
                    c.id
                ));
            }
        }
        if let Some(p) = &self.previous {
            if p.len() != 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("'previous' is not a SHA-256 in hex".into());
            }
        }
        let mut ids = std::collections::HashSet::new();
        for c in &self.commands {
            id(crate::ids::check_command_id(&c.id))?;
            if !ids.insert(c.id.as_str()) {
                return Err(format!("command id {:?} is used twice", c.id));
            }
            for f in &c.files {
                if !names.contains(f.as_str()) {
                    return Err(format!(
                        "command {:?} uses file {f:?}, which is not listed in the manifest",
                        c.id
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Name of the first member.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Name of the second member.
pub const SIGNATURE_NAME: &str = "manifest.sig";

/// A member name is a relative path of plain components (`[A-Za-z0-9._-]`, no `.`/`..`), at
/// most 100 bytes so that it fits a plain ustar header.
pub fn check_member_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 100 {
        return Err(format!(
            "member name {name:?} is empty or longer than 100 bytes"
        ));
    }
    if name.starts_with('/') {
        return Err(format!("member name {name:?} is an absolute path"));
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!(
                "member name {name:?} has an empty, '.' or '..' component"
            ));
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(format!(
                "member name {name:?} has characters outside A-Z a-z 0-9 . _ -"
            ));
        }
    }
    Ok(())
}
