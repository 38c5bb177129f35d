//! Batches: records taken from the outbox in capture order, signed with the vessel's key (or
//! the key a rotation made, carrying the rotation statement until shore acknowledges it), and
//! stored byte for byte with their sequence before they are sent, so a retry after a crash or a
//! cut connection sends the identical envelope. Each batch names its predecessor's manifest
//! digest; a batch also carries the command reports and the course content asked of shore.

use std::path::Path;

use crate::store::{Store, StoreError};
use base::failpoint;
use wire::envelope::{Draft, Extra, KeyRotation, Kind, SecretKey, Source, write_envelope_with};
use wire::progress::codec;
use wire::{RECORDS_MEMBER, SHORE};

use super::UplinkError;

/// How long a request for content waits for its answer before it is asked again.
const NEED_REASK: i64 = 6 * 3600;

/// The key that signs batch `seq` when the vessel has rotated its key (`None`: the configured
/// `signing_key`), and the rotation statement to carry while shore has not acknowledged a
/// batch signed by it.
fn signing_key_for(
    tx: &crate::store::Tx<'_>,
    seq: u64,
) -> Result<(Option<SecretKey>, Option<KeyRotation>), UplinkError> {
    let Some(k) = tx
        .vessel_keys()?
        .into_iter()
        .rev()
        .find(|k| k.from_seq <= seq)
    else {
        return Ok((None, None));
    };
    let key = SecretKey::load(Path::new(&k.path)).map_err(|e| {
        UplinkError::Setup(format!(
            "the vessel's rotated signing key: {e} (it was made by 'vessel-sync rotate-key'; restore the file from backup, or have shore register a new key with 'shore vessel rekey')"
        ))
    })?;
    let rotation = if tx.acked_seq()? < k.from_seq {
        serde_json::from_str(&k.rotation).ok()
    } else {
        None
    };
    Ok((Some(key), rotation))
}

/// Builds batches from unbatched outbox records while fewer than `max_pending` wait.
pub fn build_batches(
    store: &mut Store,
    vessel: &str,
    key: &SecretKey,
    batch_records: u64,
    max_pending: u64,
    scratch: &Path,
    now: i64,
) -> Result<u64, UplinkError> {
    let mut built = 0;
    loop {
        if store.outbox_summary()?.batches >= max_pending {
            return Ok(built);
        }
        let tx = store.begin()?;
        let records = tx.unbatched(batch_records)?;
        // Content a delta bundle lacked is asked for in the next batch, one with no records if
        // need be; asked again if no answer came within NEED_REASK.
        let mut needs = tx.needs_to_ask(now - NEED_REASK)?;
        // Only bundles with valid ids can be named (older journals may hold others).
        needs.retain(|n| wire::ids::check_id("bundle id", &n.bundle).is_ok());
        // Within a manifest's caps; what is left over is asked in the next batch.
        needs.truncate(wire::envelope::manifest::MAX_NEED_BUNDLES);
        let mut room = wire::envelope::manifest::MAX_NEED_FILES;
        for n in &mut needs {
            n.sha256.truncate(room);
            room -= n.sha256.len();
        }
        needs.retain(|n| !n.sha256.is_empty());
        // So are the commands whose state shore has not been told of (`shore course status`).
        let reports = tx.reports_due()?;
        let (first, last) = match (records.first().map(|r| r.0), records.last().map(|r| r.0)) {
            (Some(first), Some(last)) => (first, last),
            _ if !needs.is_empty() || reports.state_changed => (1, 0),
            _ => return Ok(built),
        };
        let seq = tx.next_batch_seq()?;
        let recs: Vec<_> = records.into_iter().map(|(_, r)| r).collect();
        let settled = tx.acked_seq()?;
        let payload = codec::encode_batch(&recs, settled);
        let (rotated, rotation) = signing_key_for(&tx, seq)?;
        let key = rotated.as_ref().unwrap_or(key);
        let extra = Extra {
            certificate: None,
            key_rotation: rotation,
            previous: tx.last_batch_digest()?,
            need_files: needs.clone(),
            command_reports: reports.reports.clone(),
        };
        let draft = Draft {
            kind: Kind::Progress,
            sender: vessel.to_string(),
            recipient: SHORE.into(),
            sequence: seq,
            not_before: None,
            expires: None,
            commands: vec![],
            files: vec![(RECORDS_MEMBER.into(), Source::Bytes(payload))],
            id: None,
        };
        let path = scratch.join(format!(".batch-{seq}.vsb"));
        let (manifest, digest) = write_envelope_with(&draft, &extra, key, now, &path)
            .map_err(|e| UplinkError::Io(format!("writing batch {seq}: {e}")))?;
        let bytes = std::fs::read(&path)
            .map_err(|e| UplinkError::Io(format!("{}: {e}", path.display())))?;
        let _ = std::fs::remove_file(&path);
        failpoint::hit("batch.before-commit");
        tx.store_batch(
            &crate::store::NewBatch {
                seq,
                envelope_id: &manifest.id,
                first,
                last,
                records: recs.len() as u64,
                envelope: &bytes,
            },
            now,
        )?;
        tx.set_last_batch_digest(&digest)?;
        tx.needs_asked(&needs, seq, now)?;
        tx.reports_sent(&reports, seq)?;
        tx.commit()?;
        failpoint::hit("batch.after-commit");
        tracing::info!(
            seq,
            records = recs.len(),
            bytes = bytes.len(),
            "batch built"
        );
        built += 1;
    }
}

pub(super) fn store_has_no_batches(tx: &crate::store::Tx<'_>) -> Result<bool, StoreError> {
    Ok(!tx.has_batches()?)
}
