//! Writing and signing envelopes. The output appears atomically: it is written to `.NAME.part`
//! beside the destination, fsynced, then renamed, so an inbox never sees half a bundle.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::SecretKey;
use super::manifest::{
    CommandEntry, FORMAT_VERSION, FileEntry, Kind, MANIFEST_NAME, Manifest, SIGNATURE_NAME,
    check_member_name,
};
use base::clock::format_time;
use base::fsutil;

/// Where a member's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file on disk, streamed.
    Path(PathBuf),
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A file on disk, carried, but listed `may_omit`: a relay (shore) may leave it out for a
    /// recipient that holds it.
    Omittable(PathBuf),
    /// Listed `may_omit` and not carried: the recipient holds it (built with `--base`).
    Held {
        /// Its size.
        size: u64,
        /// Its hex SHA-256.
        sha256: String,
    },
}

/// Everything needed to write an envelope except the parts derived at write time (id, digests).
#[derive(Debug, Clone)]
pub struct Draft {
    /// What it carries.
    pub kind: Kind,
    /// Sender label.
    pub sender: String,
    /// Recipient vessel id, `*` or `shore`.
    pub recipient: String,
    /// Sequence in the (issuer, recipient) stream.
    pub sequence: u64,
    /// Optional not-before, Unix seconds.
    pub not_before: Option<i64>,
    /// Optional expiry, Unix seconds.
    pub expires: Option<i64>,
    /// Commands; an empty id is replaced by `BUNDLE_ID:N`.
    pub commands: Vec<CommandEntry>,
    /// Members: name inside the archive and source.
    pub files: Vec<(String, Source)>,
    /// Fixed bundle id (tests); a random UUID when `None`.
    pub id: Option<String>,
}

/// The optional credentials and links a manifest may carry (see [`super::trust`]).
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// The signer's operator certificate.
    pub certificate: Option<super::trust::Certificate>,
    /// A vessel key rotation statement.
    pub key_rotation: Option<super::trust::KeyRotation>,
    /// The predecessor batch's manifest digest.
    pub previous: Option<String>,
    /// A progress batch's requests for content members.
    pub need_files: Vec<super::manifest::NeedFiles>,
    /// A progress batch's command reports.
    pub command_reports: Vec<super::manifest::CommandReport>,
}

fn io_ctx(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn digest(source: &Source) -> io::Result<(u64, String)> {
    match source {
        Source::Bytes(b) => Ok((b.len() as u64, hex::encode(Sha256::digest(b)))),
        Source::Held { size, sha256 } => Ok((*size, sha256.clone())),
        Source::Path(p) | Source::Omittable(p) => {
            let mut f = File::open(p).map_err(|e| io_ctx("reading", p, e))?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut n_total = 0u64;
            loop {
                let n = f.read(&mut buf).map_err(|e| io_ctx("reading", p, e))?;
                if n == 0 {
                    break;
                }
                n_total += n as u64;
                h.update(&buf[..n]);
            }
            Ok((n_total, hex::encode(h.finalize())))
        }
    }
}

/// The zstd dictionary progress envelopes are compressed with: trained on the format (tar
/// headers, compact manifest, `records.bin` framing) by `vessel-sync bench dictionary`. Readers
/// recognise it by the dictionary id in the zstd frame header.
pub static PROGRESS_DICT: &[u8] = include_bytes!("../progress/progress.dict");

/// Builds the manifest for `draft` (hashing every source), signs it with `key`, and writes the
/// envelope to `out` atomically. Returns the manifest written. Progress envelopes are compressed
/// with [`PROGRESS_DICT`].
pub fn write_envelope(
    draft: &Draft,
    key: &SecretKey,
    now: i64,
    out: &Path,
) -> io::Result<Manifest> {
    write_with(
        draft,
        &Extra::default(),
        key,
        now,
        out,
        draft.kind == Kind::Progress,
    )
}

/// As [`write_envelope`], with a certificate, rotation or predecessor in the manifest.
/// Returns the manifest and the hex SHA-256 of its signed bytes.
pub fn write_envelope_with(
    draft: &Draft,
    extra: &Extra,
    key: &SecretKey,
    now: i64,
    out: &Path,
) -> io::Result<(Manifest, String)> {
    let m = write_with(draft, extra, key, now, out, draft.kind == Kind::Progress)?;
    let sha = manifest_digest(&m)?;
    Ok((m, sha))
}

fn manifest_bytes(m: &Manifest) -> io::Result<Vec<u8>> {
    // Command manifests are read by people (bundle inspect shows them too); progress manifests
    // cross a metered link many times a day, so they are written compact.
    let mut bytes = if m.kind == Kind::Progress {
        serde_json::to_vec(m)
    } else {
        serde_json::to_vec_pretty(m)
    }
    .map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The hex SHA-256 of the exact bytes the writer signs for `m` (what readers report as
/// `manifest_sha256`).
pub fn manifest_digest(m: &Manifest) -> io::Result<String> {
    Ok(hex::encode(Sha256::digest(manifest_bytes(m)?)))
}

/// As [`write_envelope`], but never with a dictionary (to train one).
pub fn write_envelope_plain(
    draft: &Draft,
    key: &SecretKey,
    now: i64,
    out: &Path,
) -> io::Result<Manifest> {
    write_with(draft, &Extra::default(), key, now, out, false)
}

fn write_with(
    draft: &Draft,
    extra: &Extra,
    key: &SecretKey,
    now: i64,
    out: &Path,
    with_dict: bool,
) -> io::Result<Manifest> {
    let id = draft
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut files = Vec::with_capacity(draft.files.len());
    for (name, source) in &draft.files {
        check_member_name(name).map_err(io::Error::other)?;
        let (size, sha256) = digest(source)?;
        files.push(FileEntry {
            name: name.clone(),
            size,
            sha256,
            may_omit: matches!(source, Source::Omittable(_) | Source::Held { .. }),
        });
    }
    let commands = draft
        .commands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut c = c.clone();
            if c.id.is_empty() {
                c.id = format!("{id}:{}", i + 1);
            }
            c
        })
        .collect();
    let manifest = Manifest {
        format: FORMAT_VERSION,
        kind: draft.kind,
        id,
        issuer: key.id.clone(),
        sender: draft.sender.clone(),
        recipient: draft.recipient.clone(),
        sequence: draft.sequence,
        created: format_time(now),
        not_before: draft.not_before.map(format_time),
        expires: draft.expires.map(format_time),
        files,
        commands,
        certificate: extra.certificate.clone(),
        key_rotation: extra.key_rotation.clone(),
        previous: extra.previous.clone(),
        need_files: extra.need_files.clone(),
        command_reports: extra.command_reports.clone(),
    };
    manifest.check().map_err(io::Error::other)?;
    let manifest_bytes = manifest_bytes(&manifest)?;
    let signature = key.sign(&manifest_bytes).to_bytes();

    // Progress batches are small and cross a metered link: spend CPU on the last bytes.
    let level = if draft.kind == Kind::Progress { 19 } else { 3 };
    write_archive(
        out,
        level,
        with_dict,
        &manifest_bytes,
        &signature,
        now,
        &mut |tar| {
            for ((name, source), entry) in draft.files.iter().zip(&manifest.files) {
                match source {
                    Source::Bytes(b) => append(tar, name, entry.size, now, &mut &b[..])?,
                    Source::Held { .. } => {}
                    Source::Path(p) | Source::Omittable(p) => {
                        let mut f = File::open(p).map_err(|e| io_ctx("reading", p, e))?;
                        append(tar, name, entry.size, now, &mut (&mut f).take(entry.size))?;
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(manifest)
}

type Archive = tar::Builder<zstd::stream::write::Encoder<'static, BufWriter<File>>>;

/// Writes an envelope atomically to `out`: the manifest and signature members, then what
/// `members` appends, zstd-compressed at `level` (with the progress dictionary if `with_dict`).
/// Returns the file's size.
fn write_archive(
    out: &Path,
    level: i32,
    with_dict: bool,
    manifest_bytes: &[u8],
    signature: &[u8; 64],
    mtime: i64,
    members: &mut dyn FnMut(&mut Archive) -> io::Result<()>,
) -> io::Result<u64> {
    let tmp = fsutil::temp_path(out);
    let file = File::create(&tmp).map_err(|e| io_ctx("creating", &tmp, e))?;
    let result = (|| -> io::Result<u64> {
        let mut encoder = if with_dict {
            zstd::stream::write::Encoder::with_dictionary(
                BufWriter::new(file),
                level,
                PROGRESS_DICT,
            )?
        } else {
            zstd::stream::write::Encoder::new(BufWriter::new(file), level)?
        };
        encoder.include_checksum(true)?;
        let mut tar = tar::Builder::new(encoder);
        tar.mode(tar::HeaderMode::Deterministic);
        let m = manifest_bytes;
        append(&mut tar, MANIFEST_NAME, m.len() as u64, mtime, &mut &m[..])?;
        append(&mut tar, SIGNATURE_NAME, 64, mtime, &mut &signature[..])?;
        members(&mut tar)?;
        let buffered = tar.into_inner()?.finish()?;
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(file.metadata()?.len())
    })();
    match result {
        Ok(n) => {
            fsutil::commit_temp(&tmp, out).map_err(|e| io_ctx("renaming into", out, e))?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes an already signed envelope again with another choice of members: `manifest_bytes`
/// and `signature` verbatim (so the signature still holds), then each of `members` (name, and a
/// path holding exactly the listed bytes). The caller keeps every member not marked `may_omit`;
/// a reader checks the rest against the manifest as usual. Written atomically to `out`; returns
/// its size.
pub fn repack(
    manifest_bytes: &[u8],
    signature: &[u8; 64],
    members: &[(FileEntry, PathBuf)],
    created: i64,
    out: &Path,
) -> io::Result<u64> {
    write_archive(
        out,
        3,
        false,
        manifest_bytes,
        signature,
        created,
        &mut |tar| {
            for (entry, path) in members {
                let mut f = File::open(path).map_err(|e| io_ctx("reading", path, e))?;
                append(
                    tar,
                    &entry.name,
                    entry.size,
                    created,
                    &mut (&mut f).take(entry.size),
                )?;
            }
            Ok(())
        },
    )
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    mtime: i64,
    data: &mut dyn Read,
) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(u64::try_from(mtime).unwrap_or(0));
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path(name)?;
    h.set_cksum();
    tar.append(&h, data)
}
