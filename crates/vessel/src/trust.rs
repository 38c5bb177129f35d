//! Whose bundles this vessel applies: the keys in its config, the operators the fleet root
//! certified, and the revocations it has received.
//!
//! A bundle is checked in two steps. Before its signature is checked, [`Trust::keyring_for`]
//! picks the keys it may be signed by: the config's `trusted` and `root` keys, every operator
//! certificate held, and the certificate the bundle carries (checked against the roots first; a
//! forged one refuses the bundle). After the signature has held, [`Trust::authorize`] applies the
//! signer's rules:
//! - the root signs only `trust_key` and `revoke_key`, and only the root signs those;
//! - a certified operator's bundle lies within the certificate's validity (with the configured
//!   clock skew) and uses only the command types and recipients it grants;
//! - a revoked key's bundle is let through only at or below the revocation point of its stream.
//!
//! The runner asks [`Trust::revoked`] again before each command, because a bundle admitted
//! before the revocation arrived may still be waiting. Bundles applied before then stay applied;
//! `revoke_key` lists them in the audit trail.

use std::collections::HashMap;

use crate::config::Config;
use crate::store::{Result, Revocation, StoredCert, Tx};
use wire::envelope::trust;
use wire::envelope::{Certificate, Keyring, Manifest, PublicKey, Rejection};

pub use wire::envelope::trust::Authority;

/// The trust state for one admission: config keys plus what the journal holds.
pub struct Trust {
    roots: Keyring,
    listed: Keyring,
    certs: HashMap<String, Certificate>,
}

impl Trust {
    /// The config's keys and the certificates held.
    pub fn load(cfg: &Config, tx: &Tx<'_>) -> Result<Self> {
        let certs = tx
            .certs()?
            .into_iter()
            .map(|c: StoredCert| (c.key_id, c.certificate))
            .collect();
        Ok(Self {
            roots: cfg.roots.clone(),
            listed: cfg.keyring.clone(),
            certs,
        })
    }

    /// The keys a bundle with these raw manifest bytes may be signed by.
    pub fn keyring_for(&self, manifest_bytes: &[u8]) -> std::result::Result<Keyring, Rejection> {
        let mut keys: Vec<PublicKey> = self
            .listed
            .iter()
            .chain(self.roots.iter())
            .cloned()
            .collect();
        keys.extend(
            self.certs
                .values()
                .filter_map(|c| c.verify(&self.roots).ok()),
        );
        trust::keyring_with_carried(manifest_bytes, keys, &self.roots)
    }

    /// Applies the signer's rules to a verified manifest signed by `signer`.
    pub fn authorize(
        &self,
        m: &Manifest,
        signer: &str,
        now: i64,
        skew: i64,
    ) -> std::result::Result<Authority, Rejection> {
        trust::authorize(
            m,
            signer,
            &self.roots,
            &self.listed,
            self.certs.get(signer),
            now,
            skew,
        )
    }

    /// The rejection for a bundle of `issuer` with `sequence` to `recipient` when `issuer` is
    /// revoked and the sequence lies after the revocation point.
    pub fn revoked(
        tx: &Tx<'_>,
        issuer: &str,
        recipient: &str,
        sequence: u64,
    ) -> Result<Option<Rejection>> {
        Ok(tx.revocation(issuer)?.and_then(|r: Revocation| {
            let last = r.last_for(recipient);
            (sequence > last).then(|| Rejection::RevokedKey {
                key: issuer.to_string(),
                by: r.by_command.clone(),
                reason: r.reason.clone(),
                sequence,
                last,
            })
        }))
    }
}
