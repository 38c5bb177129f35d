//! Signed statements about keys: operator certificates and vessel key rotations.
//!
//! A **certificate** is the fleet root key's statement that an operator key may sign bundles:
//! which command types, for which recipients, between which times. Vessels trust the root (in
//! their config) and so every key a valid certificate names, without anyone editing files on
//! board. A bundle signed by an operator key carries its certificate in the manifest
//! (`certificate`), so a vessel needs nothing but the root to check it; `trust_key` bundles
//! deliver certificates ahead of time.
//!
//! A **key rotation** is a vessel key's statement, made on board by `vessel-sync rotate-key`,
//! that a new key speaks for the vessel from a given batch sequence on. Batches from that
//! sequence are signed by the new key and carry the statement (`key_rotation`) until shore has
//! acknowledged one, so shore learns the new key from a batch it can check against the old one.
//!
//! Both are JSON: `{"body": {...}, "signature": "BASE64"}`. The signature covers a fixed
//! domain line (`vessel-sync certificate v1\n` or `vessel-sync key rotation v1\n`) followed by
//! the body serialised compactly in the field order below. The body is checked by serialising
//! the parsed fields again, so whitespace in a file does not matter, and the domain line means a
//! signature over one kind of statement can never pass for another or for a manifest (a
//! manifest starts with `{`).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::keys::{PublicKey, SecretKey, key_id};
use super::{Keyring, Manifest, Rejection};
use base::clock::{format_time, parse_time};

const CERT_DOMAIN: &[u8] = b"vessel-sync certificate v1\n";
const ROTATION_DOMAIN: &[u8] = b"vessel-sync key rotation v1\n";

/// Command types only the fleet root key may sign.
pub const ROOT_ONLY: &[&str] = &["trust_key", "revoke_key"];

/// What a certificate says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertBody {
    /// Always 1.
    pub format: u32,
    /// Unique id of this certificate (a UUID).
    pub serial: String,
    /// The operator's public key, base64 of 32 bytes.
    pub key: String,
    /// Its key id.
    pub key_id: String,
    /// Who holds it, for people.
    pub name: String,
    /// Command types it may sign; `*` for every type but the root's own.
    pub may_sign: Vec<String>,
    /// Recipients it may address: vessel ids, `*` (the fleet address and every vessel).
    pub recipients: Vec<String>,
    /// Start of validity, RFC 3339 UTC.
    pub not_before: String,
    /// End of validity, RFC 3339 UTC.
    pub not_after: String,
    /// When the root signed it.
    pub issued: String,
    /// Key id of the root that signed it.
    pub root: String,
}

impl CertBody {
    /// One line for people: who, which key, what for, for whom, when, certified by which root.
    pub fn summary(&self) -> String {
        format!(
            "operator {} (key {}) may sign {} for {} from {} until {}, certified by root {}",
            self.name,
            self.key_id,
            self.may_sign.join(", "),
            self.recipients.join(", "),
            self.not_before,
            self.not_after,
            self.root
        )
    }
}

/// A certificate: its body and the root's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// What it says.
    pub body: CertBody,
    /// Base64 Ed25519 signature by the root.
    pub signature: String,
}

/// Why a certificate or rotation statement does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StatementError(pub String);

fn signed_bytes(domain: &[u8], body: &impl Serialize) -> Vec<u8> {
    let mut out = domain.to_vec();
    // Serialising plain structs of strings and integers cannot fail.
    out.extend(serde_json::to_vec(body).unwrap_or_default());
    out
}

fn parse_key(b64: &str, what: &str) -> Result<VerifyingKey, StatementError> {
    let bytes: [u8; 32] = B64
        .decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StatementError(format!("{what} is not 32 bytes of base64")))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| StatementError(format!("{what} is not a valid Ed25519 public key")))
}

fn parse_sig(b64: &str) -> Result<Signature, StatementError> {
    let bytes: [u8; 64] = B64
        .decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StatementError("the signature is not 64 bytes of base64".into()))?;
    Ok(Signature::from_bytes(&bytes))
}

/// What an operator certificate allows.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Command types (`*` for all but the root's own).
    pub may_sign: Vec<String>,
    /// Recipients (`*` for any).
    pub recipients: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

impl Certificate {
    /// The root signs a certificate for `key`.
    pub fn issue(
        root: &SecretKey,
        key: &PublicKey,
        name: &str,
        grant: &Grant,
        now: i64,
    ) -> Result<Self, StatementError> {
        if grant.not_after <= grant.not_before {
            return Err(StatementError(
                "the validity period is empty: not_after must come after not_before".into(),
            ));
        }
        if grant.may_sign.is_empty() || grant.recipients.is_empty() {
            return Err(StatementError(
                "a certificate names at least one command type and one recipient".into(),
            ));
        }
        if let Some(t) = grant
            .may_sign
            .iter()
            .find(|t| ROOT_ONLY.contains(&t.as_str()))
        {
            return Err(StatementError(format!(
                "{t} is signed by the fleet root key only; an operator certificate cannot grant it"
            )));
        }
        let body = CertBody {
            format: 1,
            serial: uuid::Uuid::new_v4().to_string(),
            key: B64.encode(key.key.as_bytes()),
            key_id: key.id.clone(),
            name: name.to_string(),
            may_sign: grant.may_sign.clone(),
            recipients: grant.recipients.clone(),
            not_before: format_time(grant.not_before),
            not_after: format_time(grant.not_after),
            issued: format_time(now),
            root: root.id.clone(),
        };
        let signature = B64.encode(root.sign(&signed_bytes(CERT_DOMAIN, &body)).to_bytes());
        Ok(Self { body, signature })
    }

    /// Checks the root's signature (against whichever of `roots` it names) and returns the
    /// certified key. Validity times and permissions are checked separately ([`Self::grant`]).
    pub fn verify(&self, roots: &Keyring) -> Result<PublicKey, StatementError> {
        let b = &self.body;
        if b.format != 1 {
            return Err(StatementError(format!(
                "certificate format {} (this build reads 1)",
                b.format
            )));
        }
        let Some(root) = roots.get(&b.root) else {
            return Err(StatementError(format!(
                "certificate {} for {} is signed by root key {}, which this vessel does not trust as a root",
                b.serial, b.name, b.root
            )));
        };
        let sig = parse_sig(&self.signature)?;
        use ed25519_dalek::Verifier;
        root.key
            .verify(&signed_bytes(CERT_DOMAIN, b), &sig)
            .map_err(|_| {
                StatementError(format!(
                    "certificate {} for {}: the root's signature does not match (altered or forged)",
                    b.serial, b.name
                ))
            })?;
        let key = parse_key(&b.key, "the certified key")?;
        if key_id(&key) != b.key_id {
            return Err(StatementError(format!(
                "certificate {}: key_id {} does not belong to the key it names",
                b.serial, b.key_id
            )));
        }
        self.grant()?;
        Ok(PublicKey {
            id: b.key_id.clone(),
            key,
            name: b.name.clone(),
        })
    }

    /// The certificate's permissions and validity, parsed.
    pub fn grant(&self) -> Result<Grant, StatementError> {
        let b = &self.body;
        let time = |v: &str, what: &str| {
            parse_time(v).ok_or_else(|| {
                StatementError(format!(
                    "certificate {}: {what} is not an RFC 3339 time",
                    b.serial
                ))
            })
        };
        Ok(Grant {
            may_sign: b.may_sign.clone(),
            recipients: b.recipients.clone(),
            not_before: time(&b.not_before, "not_before")?,
            not_after: time(&b.not_after, "not_after")?,
        })
    }

    /// Reads a certificate file.
    pub fn load(path: &Path) -> Result<Self, StatementError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StatementError(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| {
            StatementError(format!(
                "{}: not a vessel-sync certificate ({e}); make one with 'vessel-sync key certify'",
                path.display()
            ))
        })
    }

    /// The certificate as the text of a `.cert` file.
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

impl Grant {
    /// Why this grant does not cover a bundle for `recipient` with command types `kinds`
    /// signed (checked) at `now`, if it does not.
    pub fn refuses(
        &self,
        holder: &str,
        recipient: &str,
        kinds: &[&str],
        now: i64,
        skew: i64,
    ) -> Option<Rejection> {
        if now.saturating_add(skew) < self.not_before {
            return Some(Rejection::NotPermitted(format!(
                "the certificate of operator {holder} is not valid before {} (this vessel's clock says {}); check the clock",
                format_time(self.not_before),
                format_time(now)
            )));
        }
        if now.saturating_sub(skew) > self.not_after {
            return Some(Rejection::CertificateExpired {
                holder: holder.to_string(),
                expired: format_time(self.not_after),
                now: format_time(now),
            });
        }
        let any = |list: &[String]| list.iter().any(|t| t == "*");
        if !any(&self.recipients) && !self.recipients.iter().any(|r| r == recipient) {
            return Some(Rejection::NotPermitted(format!(
                "operator {holder} is certified for {} only, not for {recipient:?}",
                self.recipients.join(", ")
            )));
        }
        for kind in kinds {
            if ROOT_ONLY.contains(kind) {
                return Some(Rejection::NotPermitted(format!(
                    "{kind} must be signed by the fleet root key, not by operator {holder}"
                )));
            }
            if !any(&self.may_sign) && !self.may_sign.iter().any(|t| t == kind) {
                return Some(Rejection::NotPermitted(format!(
                    "operator {holder} is certified to sign {} only, not {kind}",
                    self.may_sign.join(", ")
                )));
            }
        }
        None
    }
}

/// What a rotation statement says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationBody {
    /// The vessel.
    pub vessel: String,
    /// Id of the key being retired (the one that signs this statement).
    pub old_key: String,
    /// The new public key, base64.
    pub new_key: String,
    /// Its id.
    pub new_key_id: String,
    /// The first batch sequence signed by the new key.
    pub from_sequence: u64,
    /// When it was made.
    pub created: String,
}

/// A vessel key rotation: the body and the old key's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotation {
    /// What it says.
    pub body: RotationBody,
    /// Base64 signature by the old key.
    pub signature: String,
}

impl KeyRotation {
    /// The old key states that `new` speaks for `vessel` from batch `from_sequence` on.
    pub fn issue(
        old: &SecretKey,
        new: &PublicKey,
        vessel: &str,
        from_sequence: u64,
        now: i64,
    ) -> Self {
        let body = RotationBody {
            vessel: vessel.to_string(),
            old_key: old.id.clone(),
            new_key: B64.encode(new.key.as_bytes()),
            new_key_id: new.id.clone(),
            from_sequence,
            created: format_time(now),
        };
        let signature = B64.encode(old.sign(&signed_bytes(ROTATION_DOMAIN, &body)).to_bytes());
        Self { body, signature }
    }

    /// Checks the statement against the old key and returns the new one.
    pub fn verify(&self, old: &PublicKey) -> Result<PublicKey, StatementError> {
        let b = &self.body;
        if b.old_key != old.id {
            return Err(StatementError(format!(
                "the rotation is signed for key {}, not for {}",
                b.old_key, old.id
            )));
        }
        let sig = parse_sig(&self.signature)?;
        use ed25519_dalek::Verifier;
        old.key
            .verify(&signed_bytes(ROTATION_DOMAIN, b), &sig)
            .map_err(|_| {
                StatementError(format!(
                    "the rotation to key {} does not carry a valid signature by key {}",
                    b.new_key_id, b.old_key
                ))
            })?;
        let key = parse_key(&b.new_key, "the new key")?;
        if key_id(&key) != b.new_key_id {
            return Err(StatementError(
                "the rotation's new_key_id does not belong to its key".into(),
            ));
        }
        Ok(PublicKey {
            id: b.new_key_id.clone(),
            key,
            name: format!("{} (rotated)", b.vessel),
        })
    }
}

/// The untrusted part of a manifest that names extra keys, read before its signature is
/// checked: the carried certificate and rotation statement, if any.
#[derive(Debug, Default, Deserialize)]
pub struct Credentials {
    /// A carried operator certificate.
    #[serde(default)]
    pub certificate: Option<Certificate>,
    /// A carried vessel key rotation.
    #[serde(default)]
    pub key_rotation: Option<KeyRotation>,
}

impl Credentials {
    /// Reads them from a manifest's raw bytes; nothing when it does not parse (the signature
    /// check then words the refusal).
    pub fn of(manifest_bytes: &[u8]) -> Self {
        serde_json::from_slice(manifest_bytes).unwrap_or_default()
    }
}

/// The keys a bundle with these raw (not yet trusted) manifest bytes may be signed by: `base`,
/// plus the key its carried certificate names once that certificate has verified against
/// `roots` (a forged one refuses the bundle).
pub fn keyring_with_carried(
    manifest_bytes: &[u8],
    base: Vec<PublicKey>,
    roots: &Keyring,
) -> Result<Keyring, Rejection> {
    let mut keys = base;
    if let Some(cert) = Credentials::of(manifest_bytes).certificate {
        let k = cert
            .verify(roots)
            .map_err(|e| Rejection::CertificateInvalid(e.to_string()))?;
        keys.push(k);
    }
    Ok(Keyring::new(keys))
}

/// How a verified bundle's signer is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    /// A fleet root key.
    Root,
    /// A key trusted outright.
    Listed,
    /// A key certified by a root; the certificate, when the bundle carried it.
    Certified(Option<Box<Certificate>>),
}

/// The signer's rules for a verified manifest signed by `signer`: a root signs only
/// [`ROOT_ONLY`] commands and only a root signs those; a listed key signs the rest; a certified
/// key (by the carried certificate, else `held`) stays within its grant at `now`.
pub fn authorize(
    m: &Manifest,
    signer: &str,
    roots: &Keyring,
    listed: &Keyring,
    held: Option<&Certificate>,
    now: i64,
    skew: i64,
) -> Result<Authority, Rejection> {
    let kinds: Vec<&str> = m.commands.iter().map(|c| c.kind.as_str()).collect();
    if roots.get(signer).is_some() {
        if let Some(k) = kinds.iter().find(|k| !ROOT_ONLY.contains(k)) {
            return Err(Rejection::NotPermitted(format!(
                "the fleet root key signs only {}, not {k}; sign commands with an operator key it certified",
                ROOT_ONLY.join(" and ")
            )));
        }
        return Ok(Authority::Root);
    }
    if let Some(k) = kinds.iter().find(|k| ROOT_ONLY.contains(k)) {
        return Err(Rejection::NotPermitted(format!(
            "{k} must be signed by the fleet root key ([keyring] root), not by key {signer}"
        )));
    }
    if listed.get(signer).is_some() {
        return Ok(Authority::Listed);
    }
    let carried = m
        .certificate
        .as_ref()
        .filter(|c| c.body.key_id == signer)
        .cloned();
    let cert = carried
        .as_ref()
        .or(held)
        .ok_or_else(|| Rejection::UnknownKey(signer.to_string()))?;
    let grant = cert
        .grant()
        .map_err(|e| Rejection::CertificateInvalid(e.to_string()))?;
    if let Some(r) = grant.refuses(&cert.body.name, &m.recipient, &kinds, now, skew) {
        return Err(r);
    }
    Ok(Authority::Certified(carried.map(Box::new)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(k: &SecretKey) -> PublicKey {
        PublicKey {
            key: k.key.verifying_key(),
            id: k.id.clone(),
            name: "k".into(),
        }
    }

    fn grant() -> Grant {
        Grant {
            may_sign: vec!["set_mapping".into()],
            recipients: vec!["*".into()],
            not_before: 1_000,
            not_after: 2_000,
        }
    }

    #[test]
    fn a_certificate_verifies_against_its_root_only_and_not_after_an_edit() {
        let root = SecretKey::from_seed([1; 32]);
        let other = SecretKey::from_seed([2; 32]);
        let op = SecretKey::from_seed([3; 32]);
        let cert = Certificate::issue(&root, &public(&op), "anna", &grant(), 1_000).unwrap();
        let roots = Keyring::new([public(&root)]);
        assert_eq!(cert.verify(&roots).unwrap().id, op.id);
        assert!(cert.verify(&Keyring::new([public(&other)])).is_err());
        // Through a file and back.
        let parsed: Certificate = serde_json::from_str(&cert.to_text()).unwrap();
        assert_eq!(parsed.verify(&roots).unwrap().id, op.id);
        // A widened grant no longer verifies.
        let mut forged = cert.clone();
        forged.body.may_sign = vec!["*".into()];
        let err = forged.verify(&roots).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        // The root's own commands cannot be granted.
        let mut g = grant();
        g.may_sign.push("revoke_key".into());
        assert!(Certificate::issue(&root, &public(&op), "x", &g, 0).is_err());
    }

    #[test]
    fn a_grant_refuses_outside_its_times_types_and_recipients() {
        let g = grant();
        assert!(
            g.refuses("anna", "mv-a", &["set_mapping"], 1_500, 0)
                .is_none()
        );
        let expired = g
            .refuses("anna", "mv-a", &["set_mapping"], 2_500, 0)
            .unwrap();
        assert_eq!(expired.code(), "certificate_expired");
        assert_eq!(
            g.refuses("anna", "mv-a", &["delete_course"], 1_500, 0)
                .unwrap()
                .code(),
            "not_permitted"
        );
        assert_eq!(
            g.refuses("anna", "mv-a", &["revoke_key"], 1_500, 0)
                .unwrap()
                .code(),
            "not_permitted"
        );
        let narrow = Grant {
            recipients: vec!["mv-a".into()],
            ..grant()
        };
        assert!(
            narrow
                .refuses("a", "mv-a", &["set_mapping"], 1_500, 0)
                .is_none()
        );
        assert!(
            narrow
                .refuses("a", "*", &["set_mapping"], 1_500, 0)
                .is_some()
        );
    }

    #[test]
    fn a_rotation_is_checked_against_the_old_key() {
        let old = SecretKey::from_seed([4; 32]);
        let new = SecretKey::from_seed([5; 32]);
        let rot = KeyRotation::issue(&old, &public(&new), "mv-a", 7, 0);
        assert_eq!(rot.verify(&public(&old)).unwrap().id, new.id);
        assert!(rot.verify(&public(&new)).is_err());
        let mut forged = rot.clone();
        forged.body.from_sequence = 1;
        assert!(forged.verify(&public(&old)).is_err());
    }
}
