//! `GET /v1/bundles/ID`: a bundle queued for the authenticated vessel (its own copy of a course
//! bundle), whole or from `Range: bytes=N-[M]` (206), at most [`MAX_CHUNK`] bytes a response.

use std::io::{Read, Seek, SeekFrom};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use super::{Resp, Shared, error};
use crate::store::Vessel;

/// Most bytes one bundle response carries.
pub const MAX_CHUNK: u64 = 16 << 20;

fn parse_range(h: &str, size: u64) -> Option<(u64, u64)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end: u64 = if b.trim().is_empty() {
        size.checked_sub(1)?
    } else {
        b.trim().parse().ok()?
    };
    (start <= end && start < size).then_some((start, end.min(size - 1)))
}

pub(super) fn bundle(shared: &Shared, vessel: &Vessel, id: i64, range: Option<&str>) -> Resp {
    let q = match shared.db.lock().ok().and_then(|db| {
        let q = db.queued(&vessel.id, id).ok().flatten()?;
        // A course bundle is served as this vessel's copy (made when it was offered).
        Some(match db.variant(id, &vessel.id).ok().flatten() {
            Some((file, size, sha256)) => crate::store::Queued {
                file,
                size,
                sha256,
                ..q
            },
            None => q,
        })
    }) {
        Some(q) => q,
        None => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such bundle for this vessel",
                None,
            );
        }
    };
    let path = shared.cfg.shore.state_dir.join("bundles").join(&q.file);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "local",
                &e.to_string(),
                None,
            );
        }
    };
    let size = q.size;
    let (start, end, partial) = match range {
        None => (0, size.saturating_sub(1), size > MAX_CHUNK),
        Some(h) => match parse_range(h, size) {
            Some((s, e)) => (s, e, true),
            None => {
                let mut r = error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range",
                    "range not satisfiable",
                    None,
                );
                if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("bytes */{size}")) {
                    r.headers_mut().insert(hyper::header::CONTENT_RANGE, v);
                }
                return r;
            }
        },
    };
    let end = end.min(start + MAX_CHUNK - 1);
    let mut buf = vec![0u8; usize::try_from(end + 1 - start).unwrap_or(0)];
    if size > 0 {
        if let Err(e) = f
            .seek(SeekFrom::Start(start))
            .and_then(|_| f.read_exact(&mut buf))
        {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "local",
                &e.to_string(),
                None,
            );
        }
    }
    let mut r = Response::new(Full::new(Bytes::from(buf)));
    if partial {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("bytes {start}-{end}/{size}"))
        {
            r.headers_mut().insert(hyper::header::CONTENT_RANGE, v);
        }
    }
    r.headers_mut().insert(
        hyper::header::ACCEPT_RANGES,
        hyper::header::HeaderValue::from_static("bytes"),
    );
    r
}
