//! `vessel-sync bundle build`: an operator's bundle spec (TOML, [`crate::spec`]) made into a
//! signed bundle. Course backups travel by content unless asked whole: each `.mbz` is split
//! into its delta and content files, and those the recipients hold already (the `base`
//! bundles) are listed but not carried.

use std::path::{Path, PathBuf};

use wire::envelope::{self, Certificate, Manifest, SecretKey};

use crate::error::{Error, Result};

/// What to build.
pub struct BuildSpec<'a> {
    /// The spec file.
    pub spec: &'a Path,
    /// The signing key.
    pub key: &'a SecretKey,
    /// The operator's certificate, carried in the bundle when there is one.
    pub certificate: Option<Certificate>,
    /// Bundles whose course content the recipients hold already.
    pub base: &'a [PathBuf],
    /// Carry course backups whole, not by content.
    pub whole: bool,
    /// Where to write the bundle.
    pub out: &'a Path,
}

/// What was built.
#[derive(Debug)]
pub struct Built {
    /// The signed manifest.
    pub manifest: Manifest,
    /// The bundle's size in bytes.
    pub bytes: u64,
    /// Each course backup split by content.
    pub splits: Vec<moodle::delta::SplitNote>,
}

/// Builds and signs the bundle.
pub fn build(b: BuildSpec<'_>, now: i64) -> Result<Built> {
    let mut draft = crate::spec::load(b.spec, now).map_err(Error::Refused)?;
    // The split files live until the bundle is written, beside it (same file system).
    let beside = b
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".vessel-sync-split-")
        .tempdir_in(beside)
        .map_err(Error::io(beside))?;
    let splits = if b.whole {
        vec![]
    } else {
        moodle::delta::split_draft(&mut draft, b.base, work.path()).map_err(Error::Refused)?
    };
    let extra = envelope::Extra {
        certificate: b.certificate,
        ..Default::default()
    };
    let (manifest, _) = envelope::write_envelope_with(&draft, &extra, b.key, now, b.out)
        .map_err(Error::io(b.out))?;
    let bytes = std::fs::metadata(b.out).map(|m| m.len()).unwrap_or(0);
    Ok(Built {
        manifest,
        bytes,
        splits,
    })
}
