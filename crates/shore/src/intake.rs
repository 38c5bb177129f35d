//! Batch intake, shared by the HTTPS receiver and file mode (`shore ingest`): a batch is
//! verified and decoded completely, then stored in one transaction; refusals are recorded.
//!
//! The store's lock is taken only for store calls: verification, decompression, decoding and
//! the repacking of content copies run without it, so one slow or hostile batch never stalls
//! the other vessels or the dashboard. What a batch may make shore allocate is bounded before
//! it is allocated: `records.bin` at [`MAX_RECORDS_BYTES`], the manifest at
//! [`MAX_MANIFEST_BYTES`], the decoded records at `[shore] max_batch_records` and
//! [`MAX_DECODED_BYTES`] (see `wire::progress::codec`).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use wire::envelope::{self, Keyring, Kind, Limits, PublicKey, VerifyError};
use wire::progress::codec::{self, DecodeLimits};

use crate::store::{self, ShoreStore, Stored, Vessel};
use crate::{RECORDS_MEMBER, SHORE, ShoreConfig, content};

/// Why a batch was refused. Each kind has a stable code (what the vessel's operator and the
/// refusal log see) and an HTTP status (`serve` answers with it; file mode records it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// Shore's own trouble (a disk, the database): the vessel tries again later.
    #[error("{0}")]
    Local(String),
    /// A key in shore's registry does not parse: an operator must fix the registry.
    #[error("{0}")]
    Registry(String),
    /// The envelope fails verification (signature, digests, bounds, manifest).
    #[error("{0}")]
    Envelope(envelope::Rejection),
    /// Signed by a key the vessel or an operator replaced.
    #[error("{0}")]
    OldKey(String),
    /// Signed by a key registered only for later batches.
    #[error("{0}")]
    WrongKey(String),
    /// Signed by a key not registered for the vessel (or, in file mode, for any vessel).
    #[error("{0}")]
    UnknownKey(String),
    /// A carried key rotation that does not fit the batch.
    #[error("{0}")]
    BadRotation(String),
    /// Not a progress batch.
    #[error("not a progress batch")]
    WrongKind,
    /// Sent by another vessel than the one that authenticated, or not to shore.
    #[error("{0}")]
    WrongSender(String),
    /// Members other than `records.bin`.
    #[error("a batch carries exactly records.bin")]
    NotABatch,
    /// `records.bin` does not decode within the bounds.
    #[error("{0}")]
    BadPayload(String),
    /// The batch does not continue the chain shore holds (`chain_fork`, `chain_gap`,
    /// `chain_broken`).
    #[error("{message}")]
    Chain {
        /// The code.
        code: &'static str,
        /// Words for the operator.
        message: String,
    },
    /// The sequence was received before with other content.
    #[error("{0}")]
    Replayed(String),
}

impl Refusal {
    /// The stable code (`bad_signature`, `digest_mismatch`, `replayed`, ...).
    pub fn code(&self) -> &str {
        match self {
            Refusal::Local(_) => "local",
            Refusal::Registry(_) => "registry",
            Refusal::Envelope(r) => r.code(),
            Refusal::OldKey(_) => "old_key",
            Refusal::WrongKey(_) => "wrong_key",
            Refusal::UnknownKey(_) => "unknown_key",
            Refusal::BadRotation(_) => "bad_rotation",
            Refusal::WrongKind => "wrong_kind",
            Refusal::WrongSender(_) => "wrong_sender",
            Refusal::NotABatch => "manifest_invalid",
            Refusal::BadPayload(_) => "bad_payload",
            Refusal::Chain { code, .. } => code,
            Refusal::Replayed(_) => "replayed",
        }
    }

    /// The HTTP status: 500 for shore's own trouble (try again), 409 for a batch that does not
    /// fit what shore holds, 422 for a batch that is bad in itself.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Local(_) | Refusal::Registry(_) => 500,
            Refusal::Chain { .. } | Refusal::Replayed(_) => 409,
            _ => 422,
        }
    }

    /// Words for the operator.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl base::retry::Retriable for Refusal {
    /// Only shore's own trouble passes; a bad or misfitting batch is refused again.
    fn is_retriable(&self) -> bool {
        self.status() == 500
    }
}

/// Result of a successful intake.
#[derive(Debug, Clone)]
pub struct Intake {
    /// Batch sequence.
    pub seq: u64,
    /// What storing did.
    pub stored: Stored,
    /// The vessel's watermark after it.
    pub acked_seq: u64,
}

/// Most bytes of a batch's `records.bin` once decompressed.
pub const MAX_RECORDS_BYTES: u64 = 32 << 20;
/// Most bytes of a batch's manifest.
pub const MAX_MANIFEST_BYTES: u64 = 2 << 20;
/// Most bytes the decoded records of one batch may hold.
pub const MAX_DECODED_BYTES: usize = 64 << 20;

fn lock(db: &Mutex<ShoreStore>) -> Result<MutexGuard<'_, ShoreStore>, Refusal> {
    db.lock()
        .map_err(|_| Refusal::Local("the shore store's lock is poisoned; restart shore".into()))
}

/// Verifies, decodes and stores the batch in `file` from `vessel`. Refusals are recorded.
pub fn intake(
    cfg: &ShoreConfig,
    db: &Mutex<ShoreStore>,
    vessel: &Vessel,
    file: &Path,
    via: &str,
    now: i64,
) -> Result<Intake, Refusal> {
    let out = intake_inner(cfg, db, vessel, file, via, now);
    if let Err(r) = &out {
        if r.status() != 500 {
            let message = r.message();
            let shown = base::text::clip(&message, crate::store::REFUSAL_CHARS);
            tracing::warn!(vessel = %vessel.id, code = %r.code(), "batch refused: {shown}");
            if let Ok(db) = lock(db) {
                let _ = db.note_refusal(&vessel.id, r.code(), &message, now);
            }
        }
    }
    out
}

/// A key rotation a batch carries, as the key rule reads it (its signature was checked by the
/// resolver before the rule runs).
struct Carried<'a> {
    vessel: &'a str,
    new_key: &'a str,
    old_key: &'a str,
    from: u64,
}

/// Intake's key rules: whether `signer` may sign batch `sequence` of `vessel`, given the keys
/// shore has registered for it. A registered key signs from its first batch until the batch
/// its successor took over (an operator's rekey retires it at once); a key shore does not know
/// signs only under a carried rotation for this vessel, from the rotation's first batch on.
/// `Ok(Some((from, old key)))` when the batch introduces its signer as the vessel's new key.
fn key_rule(
    registered: &[store::VesselKey],
    signer: &str,
    sequence: u64,
    carried: Option<Carried<'_>>,
    vessel: &str,
) -> Result<Option<(u64, String)>, Refusal> {
    if let Some(k) = registered.iter().find(|k| k.key_id == signer) {
        if let Some(until) = k.until_seq.filter(|u| sequence >= *u) {
            let successor = registered
                .iter()
                .find(|n| n.until_seq.is_none())
                .map_or("another key".to_string(), |n| format!("key {}", n.key_id));
            return Err(Refusal::OldKey(if until == 0 {
                format!(
                    "batch {sequence} is signed by key {signer}, which an operator replaced with {successor}; this vessel must sign with its new key"
                )
            } else {
                format!(
                    "batch {sequence} is signed by key {signer}, which the vessel retired from batch {until} on (rotated to {successor}); a batch signed by it after that is refused"
                )
            }));
        }
        if sequence < k.from_seq {
            return Err(Refusal::WrongKey(format!(
                "batch {sequence} is signed by key {signer}, which signs from batch {} on",
                k.from_seq
            )));
        }
        return Ok(None);
    }
    // Only a key the carried rotation names gets here (the resolver added it).
    let Some(rot) = carried.filter(|r| r.new_key == signer) else {
        return Err(Refusal::UnknownKey(format!(
            "batch signed by key {signer}, which is not registered for vessel {vessel}"
        )));
    };
    if rot.vessel != vessel || sequence < rot.from {
        return Err(Refusal::BadRotation(format!(
            "the key rotation is for vessel {:?} from batch {}, but this is batch {sequence} of vessel {vessel:?}",
            rot.vessel, rot.from
        )));
    }
    Ok(Some((rot.from, rot.old_key.to_string())))
}

fn intake_inner(
    cfg: &ShoreConfig,
    db: &Mutex<ShoreStore>,
    vessel: &Vessel,
    file: &Path,
    via: &str,
    now: i64,
) -> Result<Intake, Refusal> {
    let registered = lock(db)?
        .vessel_keys(&vessel.id)
        .map_err(|e| Refusal::Local(e.to_string()))?;
    let mut keys = Vec::new();
    for k in &registered {
        keys.push(
            PublicKey::parse(&k.pubkey, Path::new("registry"))
                .map_err(|e| Refusal::Registry(e.to_string()))?,
        );
    }
    let keyring = Keyring::new(keys);
    let limits = Limits {
        max_total_bytes: MAX_RECORDS_BYTES + MAX_MANIFEST_BYTES + 4096,
        max_members: 4,
        max_member_bytes: MAX_RECORDS_BYTES,
        max_manifest_bytes: MAX_MANIFEST_BYTES,
        ..Limits::default()
    };
    let verify = |e: VerifyError| match e {
        VerifyError::Rejected(r) => Refusal::Envelope(r),
        VerifyError::Local(m) => Refusal::Local(m),
    };
    // A batch signed by a new vessel key carries the key, signed by a key shore holds.
    let resolve = |bytes: &[u8]| -> Result<Keyring, envelope::Rejection> {
        let Some(rot) = envelope::trust::Credentials::of(bytes).key_rotation else {
            return Ok(keyring.clone());
        };
        let Some(old) = keyring.get(&rot.body.old_key) else {
            return Err(envelope::Rejection::CertificateInvalid(format!(
                "the batch carries a rotation from key {}, which is not a key of vessel {}",
                rot.body.old_key, vessel.id
            )));
        };
        let new = rot
            .verify(old)
            .map_err(|e| envelope::Rejection::CertificateInvalid(e.to_string()))?;
        let mut all: Vec<PublicKey> = keyring.iter().cloned().collect();
        all.push(new);
        Ok(Keyring::new(all))
    };
    let opened = envelope::open_with(file, &resolve, &limits).map_err(verify)?;
    let m = opened.manifest.clone();
    let signer = opened.signer.id.clone();
    let carried = m.key_rotation.as_ref().map(|r| Carried {
        vessel: &r.body.vessel,
        new_key: &r.body.new_key_id,
        old_key: &r.body.old_key,
        from: r.body.from_sequence,
    });
    let rotation = key_rule(&registered, &signer, m.sequence, carried, &vessel.id)?
        .map(|(from, old)| (signer.clone(), opened.signer.file_text(), from, old));
    if m.kind != Kind::Progress {
        return Err(Refusal::WrongKind);
    }
    if m.recipient != SHORE || m.sender != vessel.id {
        return Err(Refusal::WrongSender(format!(
            "batch from {:?} to {:?}, but the connection authenticated vessel {:?} sending to shore",
            m.sender, m.recipient, vessel.id
        )));
    }
    if m.files.len() != 1 || m.files[0].name != RECORDS_MEMBER {
        return Err(Refusal::NotABatch);
    }
    let tmp = tempfile::tempdir_in(cfg.shore.state_dir.join("tmp"))
        .map_err(|e| Refusal::Local(e.to_string()))?;
    let sha = opened.manifest_sha256.clone();
    opened.extract(Some(tmp.path())).map_err(verify)?;
    let bytes = std::fs::read(tmp.path().join(RECORDS_MEMBER))
        .map_err(|e| Refusal::Local(e.to_string()))?;
    let decode_limits = DecodeLimits::capped(
        bytes.len(),
        usize::try_from(cfg.shore.max_batch_records).unwrap_or(usize::MAX),
        MAX_DECODED_BYTES,
    );
    let (settled, records) = codec::decode_batch_limited(&bytes, &decode_limits)
        .map_err(|e| Refusal::BadPayload(e.to_string()))?;
    drop(bytes);
    let mut store = lock(db)?;
    let stored = store
        .store_batch(
            &store::BatchIn {
                vessel: &vessel.id,
                seq: m.sequence,
                sha256: &sha,
                envelope_id: &m.id,
                records: &records,
                previous: m.previous.as_deref(),
                rotation: rotation
                    .as_ref()
                    .map(|(id, text, from, old)| (id.as_str(), text.as_str(), *from, old.as_str())),
                settled,
                via,
            },
            now,
        )
        .map_err(|e| Refusal::Local(e.to_string()))?;
    let acked_seq = store
        .vessel(&vessel.id)
        .map_err(|e| Refusal::Local(e.to_string()))?
        .map(|v| v.acked_seq)
        .unwrap_or(0);
    if let Stored::Chain { code, message } = &stored {
        return Err(Refusal::Chain {
            code,
            message: message.clone(),
        });
    }
    if let Some((id, _, from, old)) = &rotation {
        tracing::info!(vessel = %vessel.id, old_key = %old, new_key = %id, from_seq = from, "vessel key rotated");
    }
    if stored == Stored::Replayed {
        return Err(Refusal::Replayed(format!(
            "batch sequence {} was already received with other content; nothing stored (acknowledged up to {acked_seq})",
            m.sequence
        )));
    }
    if let Stored::New { new, duplicate } = &stored {
        tracing::info!(vessel = %vessel.id, seq = m.sequence, new, duplicate, acked_seq, via, "batch stored");
        if !m.command_reports.is_empty() {
            if let Err(e) = store.note_reports(&vessel.id, m.sequence, &m.command_reports, now) {
                tracing::error!(vessel = %vessel.id, error = %e, "could not keep a vessel's command reports");
            }
        }
        drop(store);
        if !m.need_files.is_empty() {
            // The batch is stored: an answer that fails here is asked again by the vessel.
            match content::answer_needs(cfg, db, &vessel.id, &m.need_files, now) {
                Ok((sent, missing)) => {
                    tracing::info!(vessel = %vessel.id, sent, missing, "content asked for by a vessel")
                }
                Err(e) => {
                    tracing::error!(vessel = %vessel.id, error = %e, "could not answer a vessel's need_files")
                }
            }
        }
    }
    Ok(Intake {
        seq: m.sequence,
        stored,
        acked_seq,
    })
}

#[cfg(test)]
mod tests {
    use super::{Carried, key_rule};
    use crate::store::VesselKey;

    fn key(id: &str, from: u64, until: Option<u64>) -> VesselKey {
        VesselKey {
            key_id: id.into(),
            pubkey: String::new(),
            from_seq: from,
            until_seq: until,
            added_at: 0,
            how: String::new(),
        }
    }

    /// Each key may sign its own range of batches, and a new key only under its rotation.
    #[test]
    fn the_key_rules_of_intake_as_a_table() {
        // k1 signed batches 1..=9 and the vessel rotated to k2 from batch 10; k0 was replaced
        // by an operator (until 0).
        let reg = [
            key("k0", 1, Some(0)),
            key("k1", 1, Some(10)),
            key("k2", 10, None),
        ];
        let rot = |vessel: &'static str, new_key: &'static str, from: u64| Carried {
            vessel,
            new_key,
            old_key: "k2",
            from,
        };
        let rule = |signer: &str, seq: u64, carried: Option<Carried<'static>>| match key_rule(
            &reg,
            signer,
            seq,
            carried,
            "mv-aurora",
        ) {
            Ok(None) => "ok".to_string(),
            Ok(Some((from, old))) => format!("new key from {from} replacing {old}"),
            Err(r) => r.code().to_string(),
        };
        assert_eq!(rule("k1", 9, None), "ok");
        assert_eq!(rule("k1", 10, None), "old_key");
        assert_eq!(rule("k0", 1, None), "old_key");
        assert_eq!(rule("k2", 9, None), "wrong_key");
        assert_eq!(rule("k2", 10, None), "ok");
        assert_eq!(rule("k3", 12, None), "unknown_key");
        assert_eq!(
            rule("k3", 12, Some(rot("mv-aurora", "k3", 12))),
            "new key from 12 replacing k2"
        );
        assert_eq!(
            rule("k3", 13, Some(rot("mv-aurora", "k3", 12))),
            "new key from 12 replacing k2"
        );
        assert_eq!(
            rule("k3", 11, Some(rot("mv-aurora", "k3", 12))),
            "bad_rotation"
        );
        assert_eq!(
            rule("k3", 12, Some(rot("mv-other", "k3", 12))),
            "bad_rotation"
        );
        assert_eq!(
            rule("k3", 12, Some(rot("mv-aurora", "k4", 12))),
            "unknown_key"
        );
    }
}
