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

/// Why a batch was refused (HTTP status, stable code, words).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Stable code (`bad_signature`, `digest_mismatch`, `replayed`, ...).
    pub code: String,
    /// Words for the operator.
    pub message: String,
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
    db.lock().map_err(|_| {
        refuse(
            500,
            "local",
            "the shore store's lock is poisoned; restart shore",
        )
    })
}

pub(crate) fn refuse(status: u16, code: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code: code.into(),
        message: message.into(),
    }
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
        if r.status != 500 {
            let shown = base::text::clip(&r.message, crate::store::REFUSAL_CHARS);
            tracing::warn!(vessel = %vessel.id, code = %r.code, "batch refused: {shown}");
            if let Ok(db) = lock(db) {
                let _ = db.note_refusal(&vessel.id, &r.code, &r.message, now);
            }
        }
    }
    out
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
        .map_err(|e| refuse(500, "local", e.to_string()))?;
    let mut keys = Vec::new();
    for k in &registered {
        keys.push(
            PublicKey::parse(&k.pubkey, Path::new("registry"))
                .map_err(|e| refuse(500, "registry", e.to_string()))?,
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
        VerifyError::Rejected(r) => refuse(422, r.code(), r.to_string()),
        VerifyError::Local(m) => refuse(500, "local", m),
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
    let mut rotation = None;
    match registered.iter().find(|k| k.key_id == signer) {
        Some(k) => {
            if let Some(until) = k.until_seq.filter(|u| m.sequence >= *u) {
                let successor = registered
                    .iter()
                    .find(|n| n.until_seq.is_none())
                    .map_or("another key".to_string(), |n| format!("key {}", n.key_id));
                return Err(refuse(
                    422,
                    "old_key",
                    if until == 0 {
                        format!(
                            "batch {} is signed by key {signer}, which an operator replaced with {successor}; this vessel must sign with its new key",
                            m.sequence
                        )
                    } else {
                        format!(
                            "batch {} is signed by key {signer}, which the vessel retired from batch {until} on (rotated to {successor}); a batch signed by it after that is refused",
                            m.sequence
                        )
                    },
                ));
            }
            if m.sequence < k.from_seq {
                return Err(refuse(
                    422,
                    "wrong_key",
                    format!(
                        "batch {} is signed by key {signer}, which signs from batch {} on",
                        m.sequence, k.from_seq
                    ),
                ));
            }
        }
        None => {
            // Only a key the carried rotation names gets here (the resolver added it).
            let Some(rot) = m
                .key_rotation
                .as_ref()
                .filter(|r| r.body.new_key_id == signer)
            else {
                return Err(refuse(
                    422,
                    "unknown_key",
                    format!(
                        "batch signed by key {signer}, which is not registered for vessel {}",
                        vessel.id
                    ),
                ));
            };
            if rot.body.vessel != vessel.id || m.sequence < rot.body.from_sequence {
                return Err(refuse(
                    422,
                    "bad_rotation",
                    format!(
                        "the key rotation is for vessel {:?} from batch {}, but this is batch {} of vessel {:?}",
                        rot.body.vessel, rot.body.from_sequence, m.sequence, vessel.id
                    ),
                ));
            }
            let pub_text = opened.signer.file_text();
            rotation = Some((
                signer.clone(),
                pub_text,
                rot.body.from_sequence,
                rot.body.old_key.clone(),
            ));
        }
    }
    if m.kind != Kind::Progress {
        return Err(refuse(422, "wrong_kind", "not a progress batch"));
    }
    if m.recipient != SHORE || m.sender != vessel.id {
        return Err(refuse(
            422,
            "wrong_sender",
            format!(
                "batch from {:?} to {:?}, but the connection authenticated vessel {:?} sending to shore",
                m.sender, m.recipient, vessel.id
            ),
        ));
    }
    if m.files.len() != 1 || m.files[0].name != RECORDS_MEMBER {
        return Err(refuse(
            422,
            "manifest_invalid",
            "a batch carries exactly records.bin",
        ));
    }
    let tmp = tempfile::tempdir_in(cfg.shore.state_dir.join("tmp"))
        .map_err(|e| refuse(500, "local", e.to_string()))?;
    let sha = opened.manifest_sha256.clone();
    opened.extract(Some(tmp.path())).map_err(verify)?;
    let bytes = std::fs::read(tmp.path().join(RECORDS_MEMBER))
        .map_err(|e| refuse(500, "local", e.to_string()))?;
    let decode_limits = DecodeLimits::capped(
        bytes.len(),
        usize::try_from(cfg.shore.max_batch_records).unwrap_or(usize::MAX),
        MAX_DECODED_BYTES,
    );
    let (settled, records) = codec::decode_batch_limited(&bytes, &decode_limits)
        .map_err(|e| refuse(422, "bad_payload", e.to_string()))?;
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
        .map_err(|e| refuse(500, "local", e.to_string()))?;
    let acked_seq = store
        .vessel(&vessel.id)
        .map_err(|e| refuse(500, "local", e.to_string()))?
        .map(|v| v.acked_seq)
        .unwrap_or(0);
    if let Stored::Chain { code, message } = &stored {
        return Err(refuse(409, code, message.clone()));
    }
    if let Some((id, _, from, old)) = &rotation {
        tracing::info!(vessel = %vessel.id, old_key = %old, new_key = %id, from_seq = from, "vessel key rotated");
    }
    if stored == Stored::Replayed {
        return Err(refuse(
            409,
            "replayed",
            format!(
                "batch sequence {} was already received with other content; nothing stored (acknowledged up to {acked_seq})",
                m.sequence
            ),
        ));
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
