//! A course backup by content: an `.mbz` split into its **skeleton** (every tar header, and the
//! data of every member except the content files) and its **content files** (the
//! `files/xx/SHA1` members Moodle names by the SHA-1 of their bytes), and rebuilt from them.
//!
//! A new version of a course usually changes a few content files and the XML; a vessel that
//! restored the previous version holds the rest. So a bundle carries the skeleton (a few KB to
//! a few MB of XML) and only the content files the vessel lacks; the vessel rebuilds the exact
//! archive. "Exact": the rebuilt tar stream is byte for byte the original's (headers, padding
//! and end blocks come from the skeleton), checked against the SHA-256 of the original tar
//! stream that the layout records; each content file is checked against its SHA-1 (its name)
//! and SHA-256 as it is copied in. Only the gzip wrapping differs from the original file.
//!
//! The delta file (`NAME.mbz.delta`) is a plain tar of two members: `layout.json` ([`Layout`])
//! and `skeleton.tar`. Only gzip-form backups are split; the older zip form goes whole.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The layout format this build writes and reads.
pub const FORMAT: u32 = 1;
/// The first member of a delta file.
pub const LAYOUT_NAME: &str = "layout.json";
/// The second member of a delta file.
pub const SKELETON_NAME: &str = "skeleton.tar";
/// What a delta file's name adds to the backup's.
pub const DELTA_SUFFIX: &str = ".delta";
/// Where a bundle carries content files: `files/content/SHA1`.
pub const CONTENT_MEMBER_PREFIX: &str = "files/content/";
/// The most of `layout.json` that is read.
const MAX_LAYOUT: u64 = 64 << 20;

/// One content file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentFile {
    /// Its member name in the `.mbz` (`files/ab/ab12...`).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-1 (Moodle's content hash; also the last part of `name`).
    pub sha1: String,
    /// Hex SHA-256 (what envelopes list).
    pub sha256: String,
}

impl ContentFile {
    /// The member name a bundle carries it under.
    pub fn member(&self) -> String {
        format!("{CONTENT_MEMBER_PREFIX}{}", self.sha1)
    }
}

/// What a delta file says of the backup it rebuilds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Always [`FORMAT`].
    pub format: u32,
    /// The backup's file name.
    pub source: String,
    /// SHA-256 of the original `.mbz` file (names the version: a restore of it is skipped
    /// whether it came whole or by content).
    pub source_sha256: String,
    /// Bytes of the uncompressed tar stream.
    pub tar_size: u64,
    /// SHA-256 of the uncompressed tar stream; the rebuild must reproduce it.
    pub tar_sha256: String,
    /// The content files, in archive order.
    pub content: Vec<ContentFile>,
}

/// A backup split by [`split`].
#[derive(Debug)]
pub struct Split {
    /// The delta file written.
    pub delta: PathBuf,
    /// Its layout.
    pub layout: Layout,
    /// Content files not in the base, each written to a file (once per SHA-1).
    pub carried: Vec<(ContentFile, PathBuf)>,
    /// Content files the base holds (not written; once per SHA-1).
    pub held: Vec<ContentFile>,
}

/// Why a rebuild failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The resolver has no copy of this content file.
    #[error("content file {} ({} bytes) is not held", .0.sha1, .0.size)]
    Missing(ContentFile),
    /// A copy did not match its hashes (a damaged or altered store file).
    #[error("the copy of content file {} does not match its hash", .0.sha1)]
    Mismatch(ContentFile),
    /// The delta file itself is wrong.
    #[error("the delta is damaged: {0}")]
    Damaged(String),
    /// This machine's trouble.
    #[error("{0}")]
    Io(String),
}

fn is_content_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("files/")?;
    let (dir, hash) = rest.split_once('/')?;
    let hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (dir.len() == 2 && hash.len() == 40 && hex(hash) && hash.starts_with(dir)).then_some(hash)
}

struct Entry {
    name: String,
    size: u64,
    regular: bool,
}

fn parse_header(block: &[u8; 512]) -> Result<Entry, String> {
    let field = |r: std::ops::Range<usize>| {
        let b = &block[r];
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let mut name = field(0..100);
    if &block[257..262] == b"ustar" {
        let prefix = field(345..500);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
    }
    let size = tar::Header::from_byte_slice(block)
        .entry_size()
        .map_err(|e| format!("a tar header's size is unreadable: {e}"))?;
    Ok(Entry {
        name: name.trim_start_matches("./").to_string(),
        size,
        regular: matches!(block[156], b'0' | 0),
    })
}

fn padded(size: u64) -> u64 {
    size.div_ceil(512) * 512
}

/// Reads one 512-byte block; `Ok(None)` at a clean end of stream.
fn read_block(r: &mut dyn Read) -> io::Result<Option<[u8; 512]>> {
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < 512 {
        let n = r.read(&mut block[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the archive ends inside a tar header",
                ))
            };
        }
        got += n;
    }
    Ok(Some(block))
}

/// Something fed every byte copied.
type Hasher<'a> = &'a mut dyn FnMut(&[u8]);

/// Copies exactly `n` bytes, feeding each hasher.
fn copy_exact(
    r: &mut dyn Read,
    w: &mut dyn Write,
    n: u64,
    hashers: &mut [Hasher<'_>],
) -> io::Result<()> {
    let mut left = n;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let got = r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a member",
            ));
        }
        for h in hashers.iter_mut() {
            h(&buf[..got]);
        }
        w.write_all(&buf[..got])?;
        left -= got as u64;
    }
    Ok(())
}

fn gz_reader(mbz: &Path) -> Result<Box<dyn Read>, String> {
    let mut f = File::open(mbz).map_err(|e| format!("{}: {e}", mbz.display()))?;
    let mut magic = [0u8; 2];
    f.read_exact(&mut magic)
        .map_err(|_| format!("{} is too short to be a Moodle backup", mbz.display()))?;
    if magic != [0x1f, 0x8b] {
        return Err(format!(
            "{} is not a gzip-form Moodle backup (a zip-form backup goes whole)",
            mbz.display()
        ));
    }
    let f = File::open(mbz).map_err(|e| format!("{}: {e}", mbz.display()))?;
    Ok(Box::new(flate2::read::GzDecoder::new(
        BufReader::with_capacity(256 * 1024, f),
    )))
}

/// The SHA-1s of the content files in the backup at `mbz` (what a vessel that restored it holds).
pub fn content_of(mbz: &Path) -> Result<HashSet<String>, String> {
    let mut archive = tar::Archive::new(gz_reader(mbz)?);
    let entries = archive
        .entries()
        .map_err(|e| format!("{}: {e}", mbz.display()))?;
    let mut out = HashSet::new();
    for e in entries {
        let e = e.map_err(|e| format!("{} is damaged: {e}", mbz.display()))?;
        let name = e.path().map(|p| p.to_string_lossy().into_owned());
        if let Ok(name) = name {
            if let Some(h) = is_content_name(name.trim_start_matches("./")) {
                out.insert(h.to_string());
            }
        }
    }
    Ok(out)
}

/// Splits the backup at `mbz` into `dir/NAME.delta` and its content files: those whose SHA-1 is
/// in `base` are only listed (`held`), the others are written to `dir/content/SHA1`
/// (`carried`). A member named like a content file whose bytes do not match the name stays in
/// the skeleton.
pub fn split(mbz: &Path, base: &HashSet<String>, dir: &Path) -> Result<Split, String> {
    let source = mbz
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "course.mbz".into());
    let source_sha256 =
        base::fsutil::file_sha256(mbz).map_err(|e| format!("{}: {e}", mbz.display()))?;
    let content_dir = dir.join("content");
    std::fs::create_dir_all(&content_dir).map_err(|e| format!("{}: {e}", content_dir.display()))?;
    let skeleton_path = dir.join(format!(".{source}.skeleton"));
    let local = |what: &Path, e: io::Error| format!("{}: {e}", what.display());
    let damaged = |e: io::Error| format!("{} is damaged: {e}", mbz.display());
    let mut r = gz_reader(mbz)?;
    let mut skel =
        BufWriter::new(File::create(&skeleton_path).map_err(|e| local(&skeleton_path, e))?);
    let mut tar_hash = Sha256::new();
    let mut tar_size = 0u64;
    let mut content = Vec::new();
    let mut carried = Vec::new();
    let mut held = Vec::new();
    let mut seen = HashSet::new();
    let tmp = content_dir.join(".incoming");
    while let Some(block) = read_block(&mut r).map_err(damaged)? {
        tar_hash.update(block);
        tar_size += 512;
        skel.write_all(&block)
            .map_err(|e| local(&skeleton_path, e))?;
        if block.iter().all(|&b| b == 0) {
            // The end blocks and whatever zero padding follows: kept verbatim.
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).map_err(damaged)?;
            tar_hash.update(&rest);
            tar_size += rest.len() as u64;
            skel.write_all(&rest)
                .map_err(|e| local(&skeleton_path, e))?;
            break;
        }
        let entry = parse_header(&block).map_err(|e| format!("{}: {e}", mbz.display()))?;
        let pad = padded(entry.size) - entry.size;
        let hash = entry
            .regular
            .then(|| is_content_name(&entry.name))
            .flatten();
        let Some(hash) = hash.map(str::to_string) else {
            copy_exact(
                &mut r,
                &mut skel,
                entry.size + pad,
                &mut [&mut |b: &[u8]| tar_hash.update(b)],
            )
            .map_err(damaged)?;
            tar_size += entry.size + pad;
            continue;
        };
        let mut s1 = Sha1::new();
        let mut s256 = Sha256::new();
        {
            let mut out = BufWriter::new(File::create(&tmp).map_err(|e| local(&tmp, e))?);
            copy_exact(
                &mut r,
                &mut out,
                entry.size,
                &mut [
                    &mut |b: &[u8]| tar_hash.update(b),
                    &mut |b: &[u8]| s1.update(b),
                    &mut |b: &[u8]| s256.update(b),
                ],
            )
            .map_err(damaged)?;
            out.flush().map_err(|e| local(&tmp, e))?;
        }
        tar_size += entry.size;
        let file = ContentFile {
            name: entry.name.clone(),
            size: entry.size,
            sha1: hex::encode(s1.finalize()),
            sha256: hex::encode(s256.finalize()),
        };
        if file.sha1 != hash {
            // Named like content but not content: an ordinary member.
            let mut f = File::open(&tmp).map_err(|e| local(&tmp, e))?;
            io::copy(&mut f, &mut skel).map_err(|e| local(&skeleton_path, e))?;
        } else {
            content.push(file.clone());
            if !seen.insert(file.sha1.clone()) {
                // The same content twice: once is enough.
            } else if base.contains(&file.sha1) {
                held.push(file);
            } else {
                let dest = content_dir.join(&file.sha1);
                std::fs::rename(&tmp, &dest).map_err(|e| local(&dest, e))?;
                carried.push((file, dest));
            }
        }
        let _ = std::fs::remove_file(&tmp);
        copy_exact(
            &mut r,
            &mut skel,
            pad,
            &mut [&mut |b: &[u8]| tar_hash.update(b)],
        )
        .map_err(damaged)?;
        tar_size += pad;
    }
    let skel = skel
        .into_inner()
        .map_err(|e| local(&skeleton_path, e.into_error()))?;
    skel.sync_all().map_err(|e| local(&skeleton_path, e))?;
    drop(skel);
    let layout = Layout {
        format: FORMAT,
        source: source.clone(),
        source_sha256,
        tar_size,
        tar_sha256: hex::encode(tar_hash.finalize()),
        content,
    };
    let delta = dir.join(format!("{source}{DELTA_SUFFIX}"));
    write_delta(&layout, &skeleton_path, &delta).map_err(|e| local(&delta, e))?;
    let _ = std::fs::remove_file(&skeleton_path);
    Ok(Split {
        delta,
        layout,
        carried,
        held,
    })
}

fn write_delta(layout: &Layout, skeleton: &Path, out: &Path) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(layout).map_err(io::Error::other)?;
    let mut b = tar::Builder::new(BufWriter::new(File::create(out)?));
    b.mode(tar::HeaderMode::Deterministic);
    let mut h = tar::Header::new_ustar();
    h.set_size(json.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path(LAYOUT_NAME)?;
    h.set_cksum();
    b.append(&h, &json[..])?;
    let mut f = File::open(skeleton)?;
    let mut h = tar::Header::new_ustar();
    h.set_size(f.metadata()?.len());
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path(SKELETON_NAME)?;
    h.set_cksum();
    b.append(&h, &mut f)?;
    let w = b.into_inner()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The layout of the delta file at `delta`.
pub fn read_layout(delta: &Path) -> Result<Layout, String> {
    let f = File::open(delta).map_err(|e| format!("{}: {e}", delta.display()))?;
    let mut archive = tar::Archive::new(BufReader::new(f));
    let mut entries = archive
        .entries()
        .map_err(|e| format!("{}: {e}", delta.display()))?;
    let first = entries
        .next()
        .ok_or_else(|| format!("{} is empty", delta.display()))?
        .map_err(|e| format!("{}: {e}", delta.display()))?;
    let name = first
        .path()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name != LAYOUT_NAME {
        return Err(format!(
            "{}: the first member is {name:?}, not {LAYOUT_NAME}",
            delta.display()
        ));
    }
    let mut json = Vec::new();
    first
        .take(MAX_LAYOUT)
        .read_to_end(&mut json)
        .map_err(|e| format!("{}: {e}", delta.display()))?;
    let layout: Layout = serde_json::from_slice(&json)
        .map_err(|e| format!("{}: {LAYOUT_NAME}: {e}", delta.display()))?;
    if layout.format != FORMAT {
        return Err(format!(
            "{}: layout format {} (this build reads {FORMAT}; upgrade vessel-sync)",
            delta.display(),
            layout.format
        ));
    }
    Ok(layout)
}

/// Checks that the file at `path` is `c` (size, SHA-1 and SHA-256).
pub fn matches(path: &Path, c: &ContentFile) -> io::Result<bool> {
    let mut f = File::open(path)?;
    if f.metadata()?.len() != c.size {
        return Ok(false);
    }
    let mut s1 = Sha1::new();
    let mut s256 = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s1.update(&buf[..n]);
        s256.update(&buf[..n]);
    }
    Ok(hex::encode(s1.finalize()) == c.sha1 && hex::encode(s256.finalize()) == c.sha256)
}

/// Rebuilds the backup from the delta file at `delta` into `out` (written to a `.part` file
/// beside it and renamed only once complete and checked), taking each content file from
/// `resolve` (a path holding it, or `None`). Every content file is hashed as it is copied; the
/// whole tar stream must hash to the layout's `tar_sha256`.
pub fn rebuild(
    delta: &Path,
    resolve: &mut dyn FnMut(&ContentFile) -> Option<PathBuf>,
    out: &Path,
) -> Result<Layout, RebuildError> {
    let layout = read_layout(delta).map_err(RebuildError::Damaged)?;
    let io_err = |what: &Path, e: io::Error| RebuildError::Io(format!("{}: {e}", what.display()));
    let f = File::open(delta).map_err(|e| io_err(delta, e))?;
    let mut archive = tar::Archive::new(BufReader::new(f));
    let mut entries = archive.entries().map_err(|e| io_err(delta, e))?;
    let skeleton = entries
        .nth(1)
        .ok_or_else(|| RebuildError::Damaged(format!("no {SKELETON_NAME}")))?
        .map_err(|e| RebuildError::Damaged(e.to_string()))?;
    let mut skel = BufReader::with_capacity(256 * 1024, skeleton);
    let part = base::fsutil::temp_path(out);
    let result = (|| -> Result<(), RebuildError> {
        let file = File::create(&part).map_err(|e| io_err(&part, e))?;
        let mut gz = flate2::write::GzEncoder::new(
            BufWriter::with_capacity(256 * 1024, file),
            flate2::Compression::fast(),
        );
        let mut tar_hash = Sha256::new();
        let mut tar_size = 0u64;
        let mut next = layout.content.iter();
        let damaged = |e: io::Error| RebuildError::Damaged(e.to_string());
        while let Some(block) = read_block(&mut skel).map_err(damaged)? {
            tar_hash.update(block);
            tar_size += 512;
            gz.write_all(&block).map_err(|e| io_err(&part, e))?;
            if block.iter().all(|&b| b == 0) {
                let mut rest = Vec::new();
                skel.read_to_end(&mut rest).map_err(damaged)?;
                tar_hash.update(&rest);
                tar_size += rest.len() as u64;
                gz.write_all(&rest).map_err(|e| io_err(&part, e))?;
                break;
            }
            let entry = parse_header(&block).map_err(RebuildError::Damaged)?;
            let pad = padded(entry.size) - entry.size;
            let is_content = entry.regular && is_content_name(&entry.name).is_some();
            let wanted = if is_content {
                next.as_slice().first()
            } else {
                None
            };
            match wanted {
                Some(c) if c.name == entry.name => {
                    next.next();
                    let path = resolve(c).ok_or_else(|| RebuildError::Missing(c.clone()))?;
                    let mut f = File::open(&path).map_err(|_| RebuildError::Missing(c.clone()))?;
                    let mut s1 = Sha1::new();
                    let mut s256 = Sha256::new();
                    copy_exact(
                        &mut f,
                        &mut gz,
                        c.size,
                        &mut [
                            &mut |b: &[u8]| tar_hash.update(b),
                            &mut |b: &[u8]| s1.update(b),
                            &mut |b: &[u8]| s256.update(b),
                        ],
                    )
                    .map_err(|_| RebuildError::Mismatch(c.clone()))?;
                    let mut extra = [0u8; 1];
                    let longer = f.read(&mut extra).map(|n| n > 0).unwrap_or(true);
                    if longer
                        || hex::encode(s1.finalize()) != c.sha1
                        || hex::encode(s256.finalize()) != c.sha256
                    {
                        return Err(RebuildError::Mismatch(c.clone()));
                    }
                    tar_size += c.size;
                    copy_exact(
                        &mut skel,
                        &mut gz,
                        pad,
                        &mut [&mut |b: &[u8]| tar_hash.update(b)],
                    )
                    .map_err(damaged)?;
                    tar_size += pad;
                }
                _ => {
                    copy_exact(
                        &mut skel,
                        &mut gz,
                        entry.size + pad,
                        &mut [&mut |b: &[u8]| tar_hash.update(b)],
                    )
                    .map_err(damaged)?;
                    tar_size += entry.size + pad;
                }
            }
        }
        if let Some(c) = next.next() {
            return Err(RebuildError::Damaged(format!(
                "the skeleton has no place for content file {}",
                c.name
            )));
        }
        if tar_size != layout.tar_size || hex::encode(tar_hash.finalize()) != layout.tar_sha256 {
            return Err(RebuildError::Damaged(
                "the rebuilt archive does not hash to the original's SHA-256".into(),
            ));
        }
        let w = gz.finish().map_err(|e| io_err(&part, e))?;
        let file = w.into_inner().map_err(|e| io_err(&part, e.into_error()))?;
        file.sync_all().map_err(|e| io_err(&part, e))?;
        base::failpoint::hit("delta.before-rename");
        Ok(())
    })();
    match result {
        Ok(()) => {
            base::fsutil::commit_temp(&part, out).map_err(|e| io_err(out, e))?;
            Ok(layout)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// The command types whose `.mbz` files travel by content.
pub const COURSE_COMMANDS: &[&str] = &["restore_course", "replace_course"];

/// What [`split_draft`] did to one backup.
#[derive(Debug, Clone)]
pub struct SplitNote {
    /// The member it replaced (`files/NAME.mbz`).
    pub member: String,
    /// Bytes of the original file.
    pub whole_bytes: u64,
    /// Content files in the backup.
    pub content: usize,
    /// Of those, carried in the bundle (the others the recipient holds already).
    pub carried: usize,
    /// Bytes of the carried content.
    pub carried_bytes: u64,
}

/// Turns every gzip-form `.mbz` that a `restore_course` or `replace_course` command of `draft`
/// reads into its delta file plus content members (`files/content/SHA1`, listed `may_omit`):
/// carried when not in any of the `bases`, only listed when one holds it. A command's
/// `args.file` naming the backup is pointed at the delta. Work files go under `work`, which
/// must outlive the writing of the envelope.
pub fn split_draft(
    draft: &mut wire::envelope::Draft,
    bases: &[PathBuf],
    work: &Path,
) -> Result<Vec<SplitNote>, String> {
    use wire::envelope::Source;
    let mut base = HashSet::new();
    for b in bases {
        base.extend(content_of(b)?);
    }
    let mut notes = Vec::new();
    let mut renamed: std::collections::HashMap<String, (String, Vec<String>)> =
        std::collections::HashMap::new();
    let mut added: HashSet<String> = HashSet::new();
    for ci in 0..draft.commands.len() {
        if !COURSE_COMMANDS.contains(&draft.commands[ci].kind.as_str()) {
            continue;
        }
        let names = draft.commands[ci].files.clone();
        for name in names {
            if !renamed.contains_key(&name) {
                let Some(pos) = draft.files.iter().position(|(n, _)| *n == name) else {
                    continue;
                };
                let Source::Path(path) = draft.files[pos].1.clone() else {
                    continue;
                };
                let is_gzip = File::open(&path)
                    .and_then(|mut f| {
                        let mut m = [0u8; 2];
                        f.read_exact(&mut m).map(|_| m == [0x1f, 0x8b])
                    })
                    .unwrap_or(false);
                if !name.ends_with(".mbz") || !is_gzip {
                    continue;
                }
                let dir = work.join(format!("split-{}", notes.len()));
                let s = split(&path, &base, &dir)?;
                let delta_name = format!("{name}{DELTA_SUFFIX}");
                wire::envelope::manifest::check_member_name(&delta_name)
                    .map_err(|e| format!("{e}; rename {}", path.display()))?;
                draft.files[pos] = (delta_name.clone(), Source::Path(s.delta.clone()));
                let mut members = Vec::new();
                for (c, p) in &s.carried {
                    members.push(c.member());
                    if added.insert(c.member()) {
                        draft.files.push((c.member(), Source::Omittable(p.clone())));
                    }
                }
                for c in &s.held {
                    members.push(c.member());
                    if added.insert(c.member()) {
                        draft.files.push((
                            c.member(),
                            Source::Held {
                                size: c.size,
                                sha256: c.sha256.clone(),
                            },
                        ));
                    }
                }
                notes.push(SplitNote {
                    member: name.clone(),
                    whole_bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
                    content: s.carried.len() + s.held.len(),
                    carried: s.carried.len(),
                    carried_bytes: s.carried.iter().map(|(c, _)| c.size).sum(),
                });
                renamed.insert(name.clone(), (delta_name, members));
            }
            let Some((delta_name, members)) = renamed.get(&name).cloned() else {
                continue;
            };
            let c = &mut draft.commands[ci];
            for f in c.files.iter_mut() {
                if *f == name {
                    *f = delta_name.clone();
                }
            }
            for m in members {
                if !c.files.contains(&m) {
                    c.files.push(m);
                }
            }
            if c.args.get("file").and_then(|v| v.as_str()) == Some(name.as_str()) {
                c.args
                    .insert("file".into(), serde_json::Value::String(delta_name.clone()));
            }
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbz(dir: &Path, files: &[(&str, Vec<u8>)]) -> PathBuf {
        let path = dir.join("c.mbz");
        let gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        let mut b = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    fn content(data: &[u8]) -> (String, Vec<u8>) {
        let h = hex::encode(Sha1::digest(data));
        (format!("files/{}/{h}", &h[..2]), data.to_vec())
    }

    fn tar_of(path: &Path) -> Vec<u8> {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(File::open(path).unwrap())
            .read_to_end(&mut v)
            .unwrap();
        v
    }

    #[test]
    fn a_split_backup_rebuilds_to_the_same_tar_from_base_and_carried_files() {
        let d = tempfile::tempdir().unwrap();
        let (a, ad) = content(b"first file");
        let (c, cd) = content(&vec![7u8; 3000]);
        let long = format!("activities/{}/x.xml", "n".repeat(120));
        let src = mbz(
            d.path(),
            &[
                ("moodle_backup.xml", b"<x/>".to_vec()),
                (&a, ad.clone()),
                (&long, b"long".to_vec()),
                ("files/zz/not-content", b"y".to_vec()),
                (&c, cd),
            ],
        );
        let base: HashSet<String> = [a.rsplit('/').next().unwrap().to_string()].into();
        let out = d.path().join("split");
        let s = split(&src, &base, &out).unwrap();
        assert_eq!(s.layout.content.len(), 2);
        assert_eq!(s.held.len(), 1);
        assert_eq!(s.carried.len(), 1);
        let store = d.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join(&s.held[0].sha1), &ad).unwrap();
        let carried = s.carried.clone();
        let mut resolve = |f: &ContentFile| {
            carried
                .iter()
                .find(|(c, _)| c.sha1 == f.sha1)
                .map(|(_, p)| p.clone())
                .or_else(|| Some(store.join(&f.sha1)))
        };
        let rebuilt = d.path().join("r.mbz");
        rebuild(&s.delta, &mut resolve, &rebuilt).unwrap();
        assert_eq!(tar_of(&rebuilt), tar_of(&src));
        // An altered store copy is caught, and nothing is left behind.
        std::fs::write(store.join(&s.held[0].sha1), b"first filf").unwrap();
        let again = d.path().join("again.mbz");
        let err = rebuild(&s.delta, &mut resolve, &again).unwrap_err();
        assert!(matches!(err, RebuildError::Mismatch(_)), "{err}");
        assert!(!again.exists());
        assert_eq!(
            std::fs::read_dir(d.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
                .count(),
            0
        );
    }
}
