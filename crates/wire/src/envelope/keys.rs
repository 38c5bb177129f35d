//! Ed25519 keys: generation, the two text file formats, key ids and the keyring.
//!
//! A public key file (`NAME.pub`) is one line: `vessel-sync-ed25519 BASE64 COMMENT`, where BASE64
//! is the 32-byte public key. A private key file (`NAME.key`, mode 0600) is one line:
//! `vessel-sync-ed25519-secret BASE64`, the 32-byte seed. A key's id is the first 8 bytes of the
//! SHA-256 of its public key, in hex (16 characters); manifests name their issuer by it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

const PUB_TAG: &str = "vessel-sync-ed25519";
const SECRET_TAG: &str = "vessel-sync-ed25519-secret";

/// Errors reading or writing key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a key of the expected kind.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The id of a public key: hex of the first 8 bytes of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// A trusted public key with its id and a human name (the file's comment or stem).
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// The key.
    pub key: VerifyingKey,
    /// Its id.
    pub id: String,
    /// A human label.
    pub name: String,
}

/// A private signing key with the id of its public half.
pub struct SecretKey {
    /// The key.
    pub key: SigningKey,
    /// Id of its public half.
    pub id: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "SecretKey({})", self.id)
    }
}

impl SecretKey {
    /// Generates a new key from the operating system's random source.
    pub fn generate() -> Result<Self, std::io::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(&key.verifying_key());
        Ok(Self { key, id })
    }

    /// Builds a key from a 32-byte seed (used by tests and benchmarks for repeatability).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(&key.verifying_key());
        Self { key, id }
    }

    /// Signs bytes.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        self.key.sign(msg)
    }

    /// Loads a private key file. Warns (through the returned flag) when group or others can read it.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = read(path)?;
        let mut parts = text.split_whitespace();
        if parts.next() != Some(SECRET_TAG) {
            return Err(format_err(
                path,
                format!(
                    "not a vessel-sync private key (expected a line starting with '{SECRET_TAG}'; a .pub file cannot sign)"
                ),
            ));
        }
        let seed = decode32(path, parts.next())?;
        Ok(Self::from_seed(seed))
    }

    /// Writes `PREFIX.key` (mode 0600) and `PREFIX.pub`; refuses to overwrite either.
    pub fn write_pair(&self, prefix: &Path, comment: &str) -> Result<(PathBuf, PathBuf), KeyError> {
        let key_path = with_suffix(prefix, "key");
        let pub_path = with_suffix(prefix, "pub");
        for p in [&key_path, &pub_path] {
            if p.exists() {
                return Err(format_err(
                    p,
                    "already exists; refusing to overwrite a key (move it away first)".into(),
                ));
            }
        }
        let secret_line = format!("{SECRET_TAG} {}\n", B64.encode(self.key.to_bytes()));
        write_new(&key_path, secret_line.as_bytes(), 0o600)?;
        let public_line = format!(
            "{PUB_TAG} {} {}\n",
            B64.encode(self.key.verifying_key().as_bytes()),
            sanitize_comment(comment)
        );
        write_new(&pub_path, public_line.as_bytes(), 0o644)?;
        Ok((key_path, pub_path))
    }
}

impl PublicKey {
    /// The one line of its `.pub` file.
    pub fn file_text(&self) -> String {
        format!(
            "{PUB_TAG} {} {}",
            B64.encode(self.key.as_bytes()),
            sanitize_comment(&self.name)
        )
    }

    /// Loads a public key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = read(path)?;
        Self::parse(&text, path)
    }

    /// Parses the text of a public key file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyError> {
        let mut parts = text.split_whitespace();
        match parts.next() {
            Some(PUB_TAG) => {}
            Some(SECRET_TAG) => {
                return Err(format_err(
                    path,
                    "this is a PRIVATE key; the keyring takes the .pub file".into(),
                ));
            }
            _ => {
                return Err(format_err(
                    path,
                    format!(
                        "not a vessel-sync public key (expected a line starting with '{PUB_TAG}')"
                    ),
                ));
            }
        }
        let bytes = decode32(path, parts.next())?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| format_err(path, "not a valid Ed25519 public key".into()))?;
        let comment: Vec<&str> = parts.collect();
        let name = if comment.is_empty() {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            comment.join(" ")
        };
        Ok(Self {
            id: key_id(&key),
            key,
            name,
        })
    }
}

/// The set of trusted keys, by id.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, PublicKey>,
}

impl Keyring {
    /// Builds a keyring from keys.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.id.clone(), k)).collect(),
        }
    }

    /// Looks a key up by id.
    pub fn get(&self, id: &str) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key among the trusted ones whose signature over `msg` verifies, if any.
    pub fn verify_any(&self, msg: &[u8], sig: &Signature) -> Option<&PublicKey> {
        self.keys.values().find(|k| k.key.verify(msg, sig).is_ok())
    }

    /// All keys.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.values()
    }
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn sanitize_comment(c: &str) -> String {
    c.chars()
        .map(|ch| if ch.is_control() { ' ' } else { ch })
        .collect::<String>()
        .trim()
        .to_string()
}

fn read(path: &Path) -> Result<String, KeyError> {
    fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn format_err(path: &Path, message: String) -> KeyError {
    KeyError::Format {
        path: path.to_path_buf(),
        message,
    }
}

fn decode32(path: &Path, field: Option<&str>) -> Result<[u8; 32], KeyError> {
    let field = field.ok_or_else(|| format_err(path, "the key data is missing".into()))?;
    let bytes = B64
        .decode(field)
        .map_err(|_| format_err(path, "the key data is not valid base64".into()))?;
    bytes
        .try_into()
        .map_err(|_| format_err(path, "the key data is not 32 bytes long".into()))
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    // The umask may have narrowed the mode; make it exact.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypair_round_trips_and_private_file_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("ops");
        let k = SecretKey::generate().unwrap();
        let (kp, pp) = k.write_pair(&prefix, "ops desk").unwrap();
        let mode = fs::metadata(&kp).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = SecretKey::load(&kp).unwrap();
        let public = PublicKey::load(&pp).unwrap();
        assert_eq!(loaded.id, k.id);
        assert_eq!(public.id, k.id);
        assert_eq!(public.name, "ops desk");
        let sig = loaded.sign(b"m");
        assert!(Keyring::new([public]).verify_any(b"m", &sig).is_some());
        // Refuses to overwrite.
        assert!(k.write_pair(&prefix, "x").is_err());
        // A private key offered as a public one is named as such.
        let err = PublicKey::load(&kp).unwrap_err().to_string();
        assert!(err.contains("PRIVATE"), "{err}");
    }
}
