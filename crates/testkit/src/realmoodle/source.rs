//! Where a real Moodle for the tests comes from: the version ([`Version`], 5.0 or 4.5 LTS, or
//! the run's choice by `$VESSEL_SYNC_MOODLE_VERSION`), its source tarball in
//! `shared/moodle/src/`, and the companion plugin copied into its code tree (with a digest of
//! the plugin's files for the install cache's key).

use std::path::{Path, PathBuf};

use crate::pgtemp::copy_tree;

/// Which Moodle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Moodle 5.0.6+.
    V50,
    /// Moodle 4.5.6 LTS.
    V45,
}

impl Version {
    /// The tarball's name in `shared/moodle/src/`.
    fn tarball(self) -> &'static str {
        match self {
            Version::V50 => "moodle-5.0.6.tar.zst",
            Version::V45 => "moodle-4.5.6.tar.zst",
        }
    }

    /// 5.0, or what `$VESSEL_SYNC_MOODLE_VERSION` names.
    pub fn default_for_run() -> Result<Self, String> {
        match std::env::var("VESSEL_SYNC_MOODLE_VERSION").ok().as_deref() {
            None | Some("") | Some("5.0") => Ok(Version::V50),
            Some("4.5") => Ok(Version::V45),
            Some(other) => Err(format!(
                "VESSEL_SYNC_MOODLE_VERSION={other:?}: give 5.0 or 4.5"
            )),
        }
    }

    /// Its name in cache keys and messages.
    pub fn name(self) -> &'static str {
        match self {
            Version::V50 => "5.0",
            Version::V45 => "4.5",
        }
    }
}

/// Where a version's source tarball is: in `$VESSEL_SYNC_MOODLE_SRC_DIR`, else in
/// `shared/moodle/src/` beside the checkout.
pub fn tarball(version: Version) -> Result<PathBuf, String> {
    let dir = match std::env::var_os("VESSEL_SYNC_MOODLE_SRC_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/moodle/src"),
    };
    let p = dir.join(version.tarball());
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "the Moodle {} source tarball is not at {} (set VESSEL_SYNC_MOODLE_SRC_DIR to its folder)",
            version.name(),
            p.display()
        ))
    }
}

/// The companion plugin's source in this repository.
pub fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/local/vesselsync")
}

/// A short digest of the plugin's files (names and contents), for the cache key.
pub(super) fn plugin_digest() -> Result<String, String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), String> {
        let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out)?;
            } else {
                let name = p.strip_prefix(base).unwrap_or(&p).display().to_string();
                out.push((name, std::fs::read(&p).map_err(|e| e.to_string())?));
            }
        }
        Ok(())
    }
    let base = plugin_dir();
    let mut files = Vec::new();
    walk(&base, &base, &mut files)?;
    files.sort();
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    for (name, body) in files {
        sha2::Digest::update(&mut h, name.as_bytes());
        sha2::Digest::update(&mut h, [0u8]);
        sha2::Digest::update(&mut h, &body);
    }
    let hex: String = sha2::Digest::finalize(h)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(hex)
}

/// Copies the plugin into a code tree (`local/vesselsync`).
pub(super) fn add_plugin(code: &Path) -> Result<(), String> {
    let dest = code.join("local/vesselsync");
    let _ = std::fs::remove_dir_all(&dest);
    copy_tree(&plugin_dir(), &dest)
}
