//! Bounded, streaming verification and extraction of an envelope.
//!
//! [`open`] reads the manifest and signature and verifies them against the keyring; the caller
//! then applies its own policy (recipient, time window, replay: [`check_policy`] and the
//! journal) before [`Opened::extract`] streams the remaining members to disk (or to nowhere, to
//! verify only), checking each against the manifest.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::Path;
use std::rc::Rc;

use ed25519_dalek::Signature;
use sha2::{Digest, Sha256};

use super::manifest::{MANIFEST_NAME, Manifest, SIGNATURE_NAME};
use super::probe::{Decoded, FileSide, Probe, Stream, attribute};
use super::tarstream::{MemberKind, TarReader};
use super::{Keyring, Limits, PublicKey, Rejection, VerifyError};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// An envelope whose manifest and signature have been verified; the members are not read yet.
pub struct Opened {
    /// The verified manifest.
    pub manifest: Manifest,
    /// Its exact signed bytes.
    pub manifest_bytes: Vec<u8>,
    /// Hex SHA-256 of those bytes: identifies this exact content.
    pub manifest_sha256: String,
    /// The key that signed it.
    pub signer: PublicKey,
    /// The signature of `manifest_bytes` (to repack the envelope with other members).
    pub signature: [u8; 64],
    tar: TarReader<Stream>,
    probe: Rc<Probe>,
    limits: Limits,
}

/// What extraction wrote.
#[derive(Debug, Clone, Default)]
pub struct Extracted {
    /// Members written (or verified).
    pub members: u64,
    /// Bytes of member data.
    pub bytes: u64,
    /// Listed members marked `may_omit` that the archive does not carry.
    pub omitted: u64,
}

fn name_of(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// Opens `path`, reads the manifest and signature, and verifies them against `keyring`.
pub fn open(path: &Path, keyring: &Keyring, limits: &Limits) -> Result<Opened, VerifyError> {
    open_with(path, &|_| Ok(keyring.clone()), limits)
}

/// The stream after the manifest, its probe, and the manifest's bytes.
type Started = (TarReader<Stream>, Rc<Probe>, Vec<u8>);

/// Reads the first member, the manifest, with every bound of [`open`] (the decoder's window,
/// the decompressed size, the manifest's size), and returns the stream positioned after it.
fn start(path: &Path, limits: &Limits) -> Result<Started, VerifyError> {
    let local = |e: io::Error| VerifyError::Local(format!("{}: {e}", path.display()));
    // Checked before opening: opening a FIFO would block for ever.
    let kind = fs::metadata(path).map_err(local)?.file_type();
    if !kind.is_file() {
        return Err(Rejection::NotAFile(describe_type(kind)).into());
    }
    let mut file = File::open(path).map_err(local)?;
    let len = file.metadata().map_err(local)?.len();
    if len == 0 {
        return Err(Rejection::Empty.into());
    }
    // The magic, and the frame header (at most 18 bytes) that may name a dictionary.
    let mut head = [0u8; 18];
    let got = read_up_to(&mut file, &mut head).map_err(local)?;
    if got < 4 || head[..4] != ZSTD_MAGIC {
        return Err(Rejection::NotZstd(describe_start(&head[..got.min(4)])).into());
    }
    let dict_id = zstd::zstd_safe::get_dict_id_from_frame(&head[..got]);
    file.rewind().map_err(local)?;

    let probe = Rc::new(Probe::default());
    let file_side = FileSide {
        inner: file,
        probe: probe.clone(),
    };
    // The envelope reader is the seam for zstd decoders (clippy.toml): the window and every
    // member's size are bounded just below.
    #[allow(clippy::disallowed_methods)]
    let mut decoder = match dict_id {
        Some(id)
            if Some(id) == zstd::zstd_safe::get_dict_id_from_dict(super::write::PROGRESS_DICT) =>
        {
            zstd::stream::read::Decoder::with_dictionary(
                BufReader::new(file_side),
                super::write::PROGRESS_DICT,
            )
            .map_err(local)?
        }
        // No dictionary, or one this build does not have: the decoder says so as corrupt data.
        _ => zstd::stream::read::Decoder::new(file_side).map_err(local)?,
    };
    decoder
        .window_log_max(limits.max_window_log)
        .map_err(local)?;
    let stream = Decoded {
        inner: decoder,
        probe: probe.clone(),
        cap: limits.max_total_bytes,
    };
    let mut tar = TarReader::new(stream);

    // Member 1: the manifest.
    let first = tar.next_header().map_err(|e| attribute(&probe, e, true))?;
    let first = first.ok_or_else(|| Rejection::ManifestNotFirst("an empty archive".into()))?;
    if first.name != MANIFEST_NAME.as_bytes() || first.kind != MemberKind::Regular {
        return Err(Rejection::ManifestNotFirst(format!("{:?}", name_of(&first.name))).into());
    }
    if first.size > limits.max_manifest_bytes {
        return Err(Rejection::TooLarge(format!(
            "the manifest is {} bytes, over the limit of {}",
            first.size, limits.max_manifest_bytes
        ))
        .into());
    }
    let manifest_bytes = read_member(&mut tar, first.size, &probe)?;
    Ok((tar, probe, manifest_bytes))
}

/// Reads a bundle's manifest **without checking its signature** (`vessel-sync bundle inspect`),
/// under the same bounds as [`open`]; never a basis for acting on the bundle.
pub fn peek_manifest(path: &Path, limits: &Limits) -> Result<Manifest, VerifyError> {
    let (_, _, bytes) = start(path, limits)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Rejection::ManifestInvalid(format!("not valid manifest JSON: {e}")).into())
}

/// As [`open`], with the keyring chosen from the manifest's raw (not yet trusted) bytes: a
/// caller that accepts carried credentials (a certificate checked against its roots, a key
/// rotation checked against the registered key) adds the keys they name. A credential that
/// does not hold is refused as the `Err` of `keys`.
pub fn open_with(
    path: &Path,
    keys: &dyn Fn(&[u8]) -> Result<Keyring, Rejection>,
    limits: &Limits,
) -> Result<Opened, VerifyError> {
    let (mut tar, probe, manifest_bytes) = start(path, limits)?;

    // Member 2: the signature.
    let second = tar.next_header().map_err(|e| attribute(&probe, e, false))?;
    let second =
        second.ok_or_else(|| Rejection::SignatureMissing("the end of the archive".into()))?;
    if second.name != SIGNATURE_NAME.as_bytes()
        || second.kind != MemberKind::Regular
        || second.size != 64
    {
        return Err(Rejection::SignatureMissing(format!(
            "{:?} ({} bytes)",
            name_of(&second.name),
            second.size
        ))
        .into());
    }
    let sig_bytes = read_member(&mut tar, 64, &probe)?;
    let sig_arr: [u8; 64] = sig_bytes
        .try_into()
        .map_err(|_| Rejection::SignatureMissing("a short signature".into()))?;
    let signature = Signature::from_bytes(&sig_arr);

    let keyring = keys(&manifest_bytes)?;
    let Some(signer) = keyring.verify_any(&manifest_bytes, &signature).cloned() else {
        // Untrusted bytes, read only to word the refusal: the claimed issuer is kept only if it
        // has the shape of a key id, so what a refusal stores and shows is short and plain.
        let claimed = serde_json::from_slice::<serde_json::Value>(&manifest_bytes)
            .ok()
            .and_then(|v| v.get("issuer").and_then(|i| i.as_str()).map(str::to_owned));
        return Err(match claimed {
            Some(c) if keyring.get(&c).is_some() => Rejection::BadSignature(c).into(),
            Some(c) if crate::ids::check_id("issuer", &c).is_ok() => {
                Rejection::UnknownKey(c).into()
            }
            // A manifest that no longer parses, or names no plausible key, was damaged or forged:
            // not a matter of adding a key.
            _ => Rejection::BadSignature("unreadable".into()).into(),
        });
    };

    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| Rejection::ManifestInvalid(format!("not valid manifest JSON: {e}")))?;
    if manifest.issuer != signer.id {
        return Err(Rejection::IssuerMismatch {
            claimed: manifest.issuer.clone(),
            actual: signer.id.clone(),
        }
        .into());
    }
    manifest.check().map_err(Rejection::ManifestInvalid)?;
    let members = manifest.files.len() as u64 + 2;
    if members > limits.max_members {
        return Err(Rejection::TooLarge(format!(
            "{members} members, over the limit of {}",
            limits.max_members
        ))
        .into());
    }
    let mut declared: u64 = 0;
    for f in &manifest.files {
        if f.size > limits.max_member_bytes {
            return Err(Rejection::TooLarge(format!(
                "member {:?} is declared as {} bytes, over the per-member limit of {}",
                f.name, f.size, limits.max_member_bytes
            ))
            .into());
        }
        declared = declared.saturating_add(f.size);
    }
    if declared > limits.max_total_bytes {
        return Err(Rejection::TooLarge(format!(
            "its files add up to {declared} bytes, over the limit of {}",
            limits.max_total_bytes
        ))
        .into());
    }
    let manifest_sha256 = hex::encode(Sha256::digest(&manifest_bytes));
    Ok(Opened {
        manifest,
        manifest_bytes,
        manifest_sha256,
        signer,
        signature: sig_arr,
        tar,
        probe,
        limits: limits.clone(),
    })
}

/// Words for a non-regular file type.
pub fn describe_type(t: std::fs::FileType) -> String {
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() {
        "symbolic link"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else {
        "special file"
    }
    .into()
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn describe_start(bytes: &[u8]) -> String {
    if bytes.starts_with(b"PK") {
        return "PK: a zip file".into();
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return "1f 8b: a gzip file, e.g. a Moodle .mbz; wrap it in a bundle with 'vessel-sync bundle build'".into();
    }
    let hexes: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("bytes {}", hexes.join(" "))
}

fn read_member(
    tar: &mut TarReader<Stream>,
    size: u64,
    probe: &Probe,
) -> Result<Vec<u8>, VerifyError> {
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 20));
    let mut buf = [0u8; 8192];
    loop {
        let n = tar
            .read_data(&mut buf)
            .map_err(|e| attribute(probe, e, false))?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(out)
}

impl Opened {
    /// Streams every remaining member, checking it against the manifest, into `dest` (created
    /// if missing; files land at `dest/NAME`), or only verifies when `dest` is `None`.
    /// On error, files already written under `dest` are left for the caller to remove.
    pub fn extract(self, dest: Option<&Path>) -> Result<Extracted, VerifyError> {
        self.extract_with(dest, &mut || {})
    }

    /// As [`Opened::extract`], calling `progress` after every block read (to feed a watchdog
    /// while a large bundle streams).
    pub fn extract_with(
        mut self,
        dest: Option<&Path>,
        progress: &mut dyn FnMut(),
    ) -> Result<Extracted, VerifyError> {
        let expected: HashMap<&str, &super::FileEntry> = self
            .manifest
            .files
            .iter()
            .map(|f| (f.name.as_str(), f))
            .collect();
        let mut seen: HashMap<String, ()> = HashMap::new();
        let mut summary = Extracted::default();
        let probe = self.probe.clone();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let header = match self.tar.next_header() {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return Err(attribute(&probe, e, false)),
            };
            let name = name_of(&header.name);
            check_member(&header.kind, &name, &header)?;
            let Some(entry) = expected.get(name.as_str()) else {
                return Err(Rejection::Unlisted(name).into());
            };
            if seen.insert(name.clone(), ()).is_some() {
                return Err(Rejection::DuplicateMember(name).into());
            }
            if header.size != entry.size {
                return Err(Rejection::SizeMismatch {
                    name,
                    declared: entry.size,
                    actual: header.size,
                }
                .into());
            }
            let mut out = match dest {
                Some(dir) => Some(create_member_file(dir, &name)?),
                None => None,
            };
            let mut hasher = Sha256::new();
            let mut got: u64 = 0;
            loop {
                let n = self
                    .tar
                    .read_data(&mut buf)
                    .map_err(|e| attribute(&probe, e, false))?;
                if n == 0 {
                    break;
                }
                got += n as u64;
                progress();
                if got > self.limits.max_member_bytes {
                    return Err(Rejection::TooLarge(format!(
                        "member {name:?} exceeds the per-member limit of {} bytes",
                        self.limits.max_member_bytes
                    ))
                    .into());
                }
                hasher.update(&buf[..n]);
                if let Some(f) = out.as_mut() {
                    f.write_all(&buf[..n])
                        .map_err(|e| VerifyError::Local(format!("writing {name}: {e}")))?;
                }
            }
            if hex::encode(hasher.finalize()) != entry.sha256.to_ascii_lowercase() {
                return Err(Rejection::DigestMismatch(name).into());
            }
            if let Some(f) = out {
                f.sync_all()
                    .map_err(|e| VerifyError::Local(format!("writing {name}: {e}")))?;
            }
            summary.members += 1;
            summary.bytes += got;
        }
        summary.omitted = self
            .manifest
            .files
            .iter()
            .filter(|f| f.may_omit && !seen.contains_key(&f.name))
            .count() as u64;
        if let Some(missing) = self
            .manifest
            .files
            .iter()
            .find(|f| !f.may_omit && !seen.contains_key(&f.name))
        {
            return Err(Rejection::MissingMember(missing.name.clone()).into());
        }
        match self.tar.drain_trailer() {
            Ok(false) => {}
            Ok(true) => return Err(Rejection::TrailingData.into()),
            Err(e) => return Err(attribute(&probe, e, false)),
        }
        Ok(summary)
    }
}

fn check_member(
    kind: &MemberKind,
    name: &str,
    header: &super::tarstream::Header,
) -> Result<(), Rejection> {
    let target = name_of(&header.link);
    if name.starts_with('/') {
        return Err(Rejection::AbsolutePath(name.into()));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(Rejection::PathTraversal(name.into()));
    }
    match kind {
        MemberKind::Regular => Ok(()),
        MemberKind::Symlink => Err(Rejection::Symlink {
            name: name.into(),
            target: target.clone(),
        }),
        MemberKind::Hardlink => Err(Rejection::Hardlink {
            name: name.into(),
            target,
        }),
        MemberKind::Device | MemberKind::Fifo => Err(Rejection::Device(name.into())),
        MemberKind::Directory => Err(Rejection::Unsupported {
            name: name.into(),
            what: "directory entry".into(),
        }),
        MemberKind::Extension => Err(Rejection::Unsupported {
            name: name.into(),
            what: "tar extension header (GNU long name or pax)".into(),
        }),
        MemberKind::Other(t) => Err(Rejection::Unsupported {
            name: name.into(),
            what: format!("member of tar type {:?}", char::from(*t)),
        }),
    }
}

fn create_member_file(dir: &Path, name: &str) -> Result<File, VerifyError> {
    // `name` was checked: listed in the signed manifest, which only admits plain relative names.
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| VerifyError::Local(format!("creating {}: {e}", parent.display())))?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| VerifyError::Local(format!("creating {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Draft, Kind, SecretKey, Source, write_envelope};
    use proptest::prelude::*;

    fn fixture(dir: &Path) -> (std::path::PathBuf, Keyring) {
        let key = SecretKey::from_seed([9u8; 32]);
        let keyring = Keyring::new([PublicKey {
            key: key.key.verifying_key(),
            id: key.id.clone(),
            name: "t".into(),
        }]);
        let draft = Draft {
            kind: Kind::Commands,
            sender: "t".into(),
            recipient: "v1".into(),
            sequence: 1,
            not_before: None,
            expires: None,
            commands: vec![],
            files: vec![
                (
                    "files/a.csv".into(),
                    Source::Bytes(b"kind,legacy_id,moodle_key\ncourse,1,X\n".to_vec()),
                ),
                (
                    "files/b.bin".into(),
                    Source::Bytes((0..3000u32).map(|i| (i % 251) as u8).collect()),
                ),
            ],
            id: Some("fixed".into()),
        };
        let path = dir.join("b.vsb");
        write_envelope(&draft, &key, 1_700_000_000, &path).unwrap();
        (path, keyring)
    }

    fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = ["files/a.csv", "files/b.bin"]
            .iter()
            .filter_map(|n| fs::read(dir.join(n)).ok().map(|d| (n.to_string(), d)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn progress_envelopes_use_the_shipped_dictionary_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::from_seed([4u8; 32]);
        let keyring = Keyring::new([PublicKey {
            key: key.key.verifying_key(),
            id: key.id.clone(),
            name: "v".into(),
        }]);
        let draft = Draft {
            kind: Kind::Progress,
            sender: "mv-a".into(),
            recipient: "shore".into(),
            sequence: 1,
            not_before: None,
            expires: None,
            commands: vec![],
            files: vec![(
                "records.bin".into(),
                Source::Bytes(b"VSP3 payload".to_vec()),
            )],
            id: None,
        };
        let p = dir.path().join("b.vsb");
        write_envelope(&draft, &key, 1_795_000_000, &p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let id = zstd::zstd_safe::get_dict_id_from_frame(&bytes[..18]);
        assert!(id.is_some());
        assert_eq!(
            id,
            zstd::zstd_safe::get_dict_id_from_dict(crate::envelope::write::PROGRESS_DICT)
        );
        let x = open(&p, &keyring, &Limits::default())
            .unwrap()
            .extract(None)
            .unwrap();
        assert_eq!(x.members, 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// Law 5: a bundle altered anywhere is refused, or (if the change was undone by the
        /// format, e.g. in padding) yields exactly the signed content; never different content.
        #[test]
        fn any_corrupted_byte_is_refused_or_harmless(pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let dir = tempfile::tempdir().unwrap();
            let (path, keyring) = fixture(dir.path());
            let good = dir.path().join("good");
            open(&path, &keyring, &Limits::default()).unwrap().extract(Some(&good)).unwrap();
            let mut bytes = fs::read(&path).unwrap();
            let i = pos.index(bytes.len());
            bytes[i] ^= flip;
            fs::write(&path, &bytes).unwrap();
            let out = dir.path().join("out");
            fs::create_dir_all(&out).unwrap();
            match open(&path, &keyring, &Limits::default()).and_then(|o| o.extract(Some(&out))) {
                Ok(_) => prop_assert_eq!(contents(&out), contents(&good)),
                Err(VerifyError::Rejected(_)) => {}
                Err(VerifyError::Local(e)) => prop_assert!(false, "a corrupt bundle is not a local fault: {}", e),
            }
        }

        /// The strict tar reader never panics on arbitrary bytes.
        #[test]
        fn tar_reader_survives_garbage(data in prop::collection::vec(any::<u8>(), 0..4096)) {
            let mut r = TarReader::new(&data[..]);
            let mut buf = [0u8; 512];
            for _ in 0..16 {
                match r.next_header() {
                    Ok(Some(_)) => { let _ = r.read_data(&mut buf); }
                    _ => break,
                }
            }
        }
    }
}
