//! Bundles shore offers, downloaded into the inbox with resumable Range requests (4 MiB a
//! request), within the byte budget less the reserve kept for progress, each checked against
//! its digest before it is committed under its final name.

use std::io::Write;

use super::exchange::Offer;

/// Bytes asked for in one Range request.
const CHUNK: u64 = 4 << 20;
use super::{CycleReport, Uplink, UplinkError};
use crate::store::Store;

impl Uplink {
    pub(super) fn download(
        &mut self,
        store: &mut Store,
        now: i64,
        offers: Vec<Offer>,
        report: &mut CycleReport,
    ) -> Result<(), UplinkError> {
        let Some(token) = self.token.clone() else {
            return Ok(());
        };
        let auth = format!("Bearer {token}");
        let mut offers = offers;
        offers.sort_by_key(|o| o.queue_id);
        for o in offers {
            if self.stopping() {
                break;
            }
            // Progress first: a download may not eat the reserve kept for progress batches.
            let left = self.budget_left(store, now)?;
            let reserve = self.cfg.daily_budget / 10;
            if left != u64::MAX && left < o.size.saturating_add(reserve) {
                report.held = Some(format!(
                    "bundle {} ({} bytes) waits: the byte budget left ({left}) is kept for progress",
                    o.bundle_id, o.size
                ));
                break;
            }
            let safe_id: String = o
                .bundle_id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(64)
                .collect();
            let part = self.inbox.join(format!(".dl-{}.part", o.queue_id));
            let dest = self
                .inbox
                .join(format!("shore-{:08}-{safe_id}.vsb", o.queue_id));
            let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            if have > o.size {
                let _ = std::fs::remove_file(&part);
                have = 0;
            }
            // The download URL is built here from the queue id; shore's `path` must say the
            // same, or the offer is not followed anywhere else.
            let path = format!("/v1/bundles/{}", o.queue_id);
            if o.path != path || o.queue_id < 1 {
                report.held = Some(format!(
                    "shore offered bundle {} at {:?}, not at {path}; not downloaded",
                    base::text::clip(&o.bundle_id, 64),
                    base::text::clip(&o.path, 80)
                ));
                break;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&part)
                .map_err(|e| UplinkError::Io(format!("{}: {e}", part.display())))?;
            while have < o.size {
                let end = (have + CHUNK).min(o.size) - 1;
                let range = format!("bytes={have}-{end}");
                let before = self.tally();
                let Some(client) = self.client.as_mut() else {
                    return Ok(());
                };
                let answer = client.request(
                    "GET",
                    &path,
                    &[
                        ("authorization", &auth),
                        ("x-vessel-id", &self.vessel),
                        ("range", &range),
                    ],
                    &[],
                    // At most what was asked for, and a byte more to see a reply that overran.
                    end + 2 - have,
                );
                self.bill(store, now, &before)?;
                let buf = match answer {
                    Ok(a) if (200..300).contains(&a.status) => a.body,
                    Ok(a) => {
                        report.held = Some(format!(
                            "download of bundle {} paused at {have} of {} bytes: shore answered HTTP {}",
                            o.bundle_id, o.size, a.status
                        ));
                        return Ok(());
                    }
                    Err(e) => {
                        report.held = Some(format!(
                            "download of bundle {} paused at {have} of {} bytes: {e}",
                            o.bundle_id, o.size
                        ));
                        return Ok(());
                    }
                };
                if buf.is_empty() {
                    break;
                }
                file.write_all(&buf)
                    .map_err(|e| UplinkError::Io(format!("{}: {e}", part.display())))?;
                have += buf.len() as u64;
            }
            file.sync_all()
                .map_err(|e| UplinkError::Io(format!("{}: {e}", part.display())))?;
            drop(file);
            let digest = base::fsutil::file_sha256(&part)
                .map_err(|e| UplinkError::Io(format!("{}: {e}", part.display())))?;
            if digest != o.sha256 {
                let _ = std::fs::remove_file(&part);
                report.held = Some(format!(
                    "bundle {} arrived damaged (digest mismatch); it is downloaded again next cycle",
                    o.bundle_id
                ));
                return Ok(());
            }
            base::fsutil::commit_temp(&part, &dest)
                .map_err(|e| UplinkError::Io(format!("{}: {e}", dest.display())))?;
            store.write(|tx| tx.set_bundle_cursor(o.queue_id))?;
            tracing::info!(bundle = %o.bundle_id, bytes = o.size, "bundle downloaded into the inbox");
            report.downloaded += 1;
            report.downloaded_files.push(dest);
        }
        Ok(())
    }
}
