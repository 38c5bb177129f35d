//! What a Moodle backup (`.mbz`) says about itself: the `moodle_backup.xml` manifest's backup
//! type (`course`, `activity`, `section`) and the original course's short and full names.
//!
//! An `.mbz` is a gzip-compressed tar archive (`shared/moodle/README.md`, ".mbz format"); Moodle
//! also restores the older zip form, whose manifest this module does not read ([`manifest`]
//! answers `Ok(None)` for it, and callers then go without). The manifest is found by its member
//! name and read up to [`MAX_MANIFEST`] bytes; its few fields are taken by tag, which is all a
//! restore needs and does not pull in an XML parser.

use std::io::Read;
use std::path::Path;

/// The most of `moodle_backup.xml` that is read.
pub const MAX_MANIFEST: u64 = 16 << 20;

/// The fields of `moodle_backup.xml` a restore looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `course`, `activity` or `section`.
    pub kind: String,
    /// `original_course_shortname`: what Moodle names the restored course (or `NAME_1`, ...).
    pub shortname: String,
    /// `original_course_fullname`.
    pub fullname: String,
}

/// The manifest of the backup at `path`; `Ok(None)` for a zip-form backup. An error says why the
/// file is not a readable backup.
pub fn manifest(path: &Path) -> Result<Option<Manifest>, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut magic = [0u8; 2];
    f.read_exact(&mut magic)
        .map_err(|_| format!("{} is too short to be a Moodle backup", path.display()))?;
    if &magic == b"PK" {
        return Ok(None);
    }
    if magic != [0x1f, 0x8b] {
        return Err(format!(
            "{} is not a Moodle backup (neither gzip nor zip)",
            path.display()
        ));
    }
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let entries = archive
        .entries()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{} is damaged: {e}", path.display()))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().trim_start_matches("./").to_string())
            .unwrap_or_default();
        if name != "moodle_backup.xml" {
            continue;
        }
        let mut xml = String::new();
        entry
            .take(MAX_MANIFEST)
            .read_to_string(&mut xml)
            .map_err(|e| format!("{}: moodle_backup.xml: {e}", path.display()))?;
        return parse(&xml)
            .map(Some)
            .ok_or_else(|| format!("{}: moodle_backup.xml has no backup type", path.display()));
    }
    Err(format!("{} holds no moodle_backup.xml", path.display()))
}

/// The manifest's fields, from its text.
pub fn parse(xml: &str) -> Option<Manifest> {
    let details = xml.find("<details>").map(|i| &xml[i..]).unwrap_or(xml);
    Some(Manifest {
        kind: tag(details, "type")?,
        shortname: tag(xml, "original_course_shortname").unwrap_or_default(),
        fullname: tag(xml, "original_course_fullname").unwrap_or_default(),
    })
}

fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(unescape(xml[start..end].trim()))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#039;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Whether `shortname` is what Moodle gives a course restored from a backup of `original`:
/// the name itself, or `original_N` when it was taken.
pub fn restored_name(original: &str, shortname: &str) -> bool {
    shortname == original
        || shortname
            .strip_prefix(original)
            .and_then(|r| r.strip_prefix('_'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        [
            here.join("../../tests/fixtures/moodle/mbz"),
            here.join("../../../shared/moodle/mbz"),
        ]
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap()
    }

    #[test]
    fn the_real_backups_say_what_they_are() {
        let m = manifest(&fixture("course-SAFETY-101-with-users.mbz"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.kind.as_str(), m.shortname.as_str(), m.fullname.as_str()),
            ("course", "SAFETY-101", "Basic Safety Training")
        );
        let a = manifest(&fixture("activity-page-cm4.mbz"))
            .unwrap()
            .unwrap();
        assert_eq!(a.kind, "activity");
        let err = manifest(&fixture("corrupt-truncated-4000-bytes.mbz")).unwrap_err();
        assert!(
            err.contains("damaged") || err.contains("no moodle_backup.xml"),
            "{err}"
        );
    }

    #[test]
    fn restored_names_are_the_original_or_its_numbered_copies() {
        assert!(restored_name("ERM-110", "ERM-110"));
        assert!(restored_name("ERM-110", "ERM-110_12"));
        assert!(!restored_name("ERM-110", "ERM-110_"));
        assert!(!restored_name("ERM-110", "ERM-110-V2"));
        assert!(!restored_name("ERM-110", "ERM-1100"));
    }
}
