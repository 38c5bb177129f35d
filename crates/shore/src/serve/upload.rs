//! A batch body, received: checked against the limits before a byte is read, streamed to a
//! temporary file as it arrives (never held in memory), within a deadline.
//!
//! - `Content-Length` over `[shore] max_batch_bytes` is refused (413) before reading;
//! - one upload at a time per vessel ([`Uploads::begin`]; a second gets 429);
//! - a global budget of bytes being received at once (`[shore] uploads_in_flight_bytes`;
//!   over it, 503 with `Retry-After`);
//! - the body must arrive within [`body_deadline`] (a floor plus a minimum rate).

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Uploads under way: which vessels, and how many bytes they may still bring.
pub struct Uploads {
    vessels: Mutex<HashSet<String>>,
    bytes: Mutex<u64>,
    budget: u64,
}

/// One vessel's upload; dropping it ends it and frees its bytes.
pub struct Upload {
    uploads: Arc<Uploads>,
    vessel: String,
    reserved: u64,
}

/// Why an upload cannot start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// This vessel is uploading already.
    Vessel,
    /// The receiver is taking in as many bytes as it allows at once.
    Budget,
}

impl Uploads {
    /// At most `budget` bytes being received at once.
    pub fn new(budget: u64) -> Arc<Self> {
        Arc::new(Self {
            vessels: Mutex::new(HashSet::new()),
            bytes: Mutex::new(0),
            budget,
        })
    }

    /// Starts `vessel`'s upload of at most `bytes`.
    pub fn begin(self: &Arc<Self>, vessel: &str, bytes: u64) -> Result<Upload, Busy> {
        let mut vessels = self.vessels.lock().unwrap_or_else(|p| p.into_inner());
        if vessels.contains(vessel) {
            return Err(Busy::Vessel);
        }
        let mut used = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        if used.saturating_add(bytes) > self.budget {
            return Err(Busy::Budget);
        }
        *used += bytes;
        vessels.insert(vessel.to_string());
        Ok(Upload {
            uploads: self.clone(),
            vessel: vessel.to_string(),
            reserved: bytes,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let mut vessels = self
            .uploads
            .vessels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        vessels.remove(&self.vessel);
        let mut used = self.uploads.bytes.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(self.reserved);
    }
}

/// How long a body of `bytes` may take to arrive: a minute, plus a second per KiB (a rate
/// any satellite link beats).
pub fn body_deadline(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / 1024)
}

/// Why a body was not received.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than allowed.
    TooLarge,
    /// It did not arrive in time.
    TooSlow,
    /// The connection failed.
    Read(String),
    /// Writing the temporary file failed.
    Local(String),
}

/// Streams `body` (at most `max` bytes, `expected` announced) into `file` within
/// [`body_deadline`]`(expected)`; returns its length.
pub async fn receive(
    body: Incoming,
    max: u64,
    expected: u64,
    file: &mut std::fs::File,
) -> Result<u64, BodyError> {
    let read = async {
        let mut body = body;
        let mut n: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                n = n.saturating_add(data.len() as u64);
                if n > max {
                    return Err(BodyError::TooLarge);
                }
                file.write_all(&data)
                    .map_err(|e| BodyError::Local(e.to_string()))?;
            }
        }
        Ok(n)
    };
    match tokio::time::timeout(body_deadline(expected), read).await {
        Ok(r) => r,
        Err(_) => Err(BodyError::TooSlow),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_upload_per_vessel_and_a_byte_budget_in_all() {
        let u = Uploads::new(100);
        let a = u.begin("mv-a", 60).unwrap();
        assert_eq!(u.begin("mv-a", 1).err(), Some(Busy::Vessel));
        assert_eq!(u.begin("mv-b", 41).err(), Some(Busy::Budget));
        let b = u.begin("mv-b", 40).unwrap();
        drop(a);
        assert!(u.begin("mv-a", 60).is_ok());
        drop(b);
    }
}
