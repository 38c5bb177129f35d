//! `vessel-sync rotate-key`: a new vessel signing key that signs every batch from the next
//! one on; those batches carry the new public key signed by the old one until shore
//! acknowledges one of them.

use std::path::PathBuf;

use crate::config::Config;
use crate::store::Store;
use crate::uplink::UplinkError;
use wire::envelope::{KeyRotation, PublicKey, SecretKey};

/// What `rotate-key` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotated {
    /// The key retired.
    pub old_key: String,
    /// The new key.
    pub new_key: String,
    /// Its private key file.
    pub path: PathBuf,
    /// The first batch it signs.
    pub from_seq: u64,
}

/// Makes a new vessel signing key (`STATE_DIR/keys/vessel-ID.key`) that signs every batch from
/// the next one on; those batches carry the new public key signed by the old one until shore
/// acknowledges one of them. Batches already built keep their old signature. Refused while an
/// earlier rotation still waits for shore.
pub fn rotate_key(store: &mut Store, cfg: &Config, now: i64) -> Result<Rotated, UplinkError> {
    let configured = cfg.uplink.signing_key.as_ref().ok_or_else(|| {
        UplinkError::Setup("uplink.signing_key is not set: there is no vessel key to rotate".into())
    })?;
    let dir = cfg.paths.state_dir.join("keys");
    let tx = store.begin()?;
    let keys = tx.vessel_keys()?;
    if let Some(last) = keys.last() {
        if tx.acked_seq()? < last.from_seq {
            return Err(UplinkError::Setup(format!(
                "the rotation to key {} (from batch {}) still waits for shore's acknowledgement; rotate again once shore has acknowledged batch {} ('vessel-sync status' shows the acknowledged batch)",
                last.key_id, last.from_seq, last.from_seq
            )));
        }
    }
    let old_path = keys
        .last()
        .map_or_else(|| configured.clone(), |k| PathBuf::from(&k.path));
    let old = SecretKey::load(&old_path)
        .map_err(|e| UplinkError::Setup(format!("the current signing key: {e}")))?;
    let new = SecretKey::generate().map_err(|e| UplinkError::Io(e.to_string()))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| UplinkError::Io(format!("{}: {e}", dir.display())))?;
    let prefix = dir.join(format!("vessel-{}", new.id));
    let (key_path, _) = new
        .write_pair(&prefix, &format!("{} (rotated)", cfg.vessel_id))
        .map_err(|e| UplinkError::Io(e.to_string()))?;
    let from_seq = tx.next_batch_seq()?;
    let public = PublicKey {
        key: new.key.verifying_key(),
        id: new.id.clone(),
        name: cfg.vessel_id.clone(),
    };
    let statement = KeyRotation::issue(&old, &public, &cfg.vessel_id, from_seq, now);
    tx.add_vessel_key(&crate::store::VesselKey {
        key_id: new.id.clone(),
        path: key_path.to_string_lossy().into_owned(),
        from_seq,
        rotation: serde_json::to_string(&statement).unwrap_or_default(),
        created_at: now,
    })?;
    tx.audit(
        now,
        "local",
        None,
        None,
        "vessel_key_rotated",
        "rotate-key",
        &format!(
            "signing key {} replaced by {} from batch {from_seq} on; the batches carry the new key signed by the old one until shore acknowledges one",
            old.id, new.id
        ),
    )?;
    tx.commit()?;
    Ok(Rotated {
        old_key: old.id,
        new_key: new.id,
        path: key_path,
        from_seq,
    })
}
