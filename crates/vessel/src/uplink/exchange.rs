//! One exchange with shore over HTTPS: `POST /v1/sync` with the oldest unacknowledged batch
//! (or nothing, as a poll), and the retry rule that classifies its answer ([`classify`]):
//! 200 is a reply; 409 `replayed` means shore holds that sequence with other content (the
//! batches are renumbered); transport errors, 408, 429 and 5xx are retried with backoff, a
//! `Retry-After` winning over a shorter wait; any other status is a refusal that stops syncing
//! until fixed (or six hours).

use serde::Deserialize;

use super::Uplink;
use crate::store::Store;
use base::text::error_chain;

/// The reply of `POST /v1/sync`.
#[derive(Debug, Deserialize)]
pub(crate) struct Reply {
    #[serde(default)]
    pub acked_seq: Option<u64>,
    #[serde(default)]
    pub bundles: Vec<Offer>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// A bundle shore offers.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Offer {
    pub queue_id: i64,
    pub bundle_id: String,
    pub size: u64,
    pub sha256: String,
    pub path: String,
}

/// How one exchange ended.
#[derive(Debug)]
pub(crate) enum Exchange {
    /// Shore answered (the reply, and its size in bytes).
    Reply(Reply, u64),
    /// Worth trying again after a backoff (why, shore's `Retry-After` in seconds).
    Retry(String, Option<i64>),
    /// Refused; tried again only after a fix, a restart or six hours.
    Permanent(String),
    /// Shore holds this sequence with other content; its acknowledged sequence.
    Replayed(u64),
}

/// The seconds of a `Retry-After` header (delta-seconds; an HTTP date is not honoured and the
/// backoff decides).
pub(crate) fn retry_after(value: Option<&str>) -> Option<i64> {
    value
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|s| *s >= 0)
}

/// The retry rule: what an answer with `status` and `body` means for the cycle.
pub(crate) fn classify(status: u16, retry_after: Option<i64>, body: &[u8]) -> Exchange {
    let reply: Option<Reply> = serde_json::from_slice(body).ok();
    let words = reply
        .as_ref()
        .map(|r| {
            format!(
                "{}: {}",
                r.error.clone().unwrap_or_default(),
                r.message.clone().unwrap_or_default()
            )
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    match status {
        200 => match reply {
            Some(r) => Exchange::Reply(r, body.len() as u64),
            None => Exchange::Retry("shore's reply is not the expected JSON".into(), None),
        },
        409 if reply.as_ref().and_then(|r| r.error.as_deref()) == Some("replayed") => {
            Exchange::Replayed(reply.and_then(|r| r.acked_seq).unwrap_or(0))
        }
        s if base::retry::http_status_is_retriable(s) => Exchange::Retry(
            format!("shore answered HTTP {status} ({words})"),
            retry_after,
        ),
        _ => Exchange::Permanent(format!("shore refused with HTTP {status} ({words})")),
    }
}

impl Uplink {
    pub(super) fn post(&self, store: &Store, body: Vec<u8>, now: i64) -> Exchange {
        let (Some(client), Some(token)) = (&self.client, &self.token) else {
            return Exchange::Permanent("uplink not configured for https".into());
        };
        let summary = store.outbox_summary().unwrap_or_default();
        let cursor = store
            .uplink_state()
            .map(|s| s.bundle_cursor)
            .unwrap_or(0)
            .to_string();
        let oldest = summary
            .oldest_captured_at
            .map(|t| (now - t).max(0))
            .unwrap_or(0);
        let url = format!("{}/v1/sync", self.cfg.url);
        let resp = client
            .post(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("x-vessel-id", &self.vessel)
            .header("x-bundle-cursor", cursor)
            .header("x-oldest-unsent", oldest.to_string())
            .header("x-outbox-depth", summary.records.to_string())
            .header("content-type", "application/vnd.vessel-sync.envelope")
            .body(body)
            .send();
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                return Exchange::Retry(
                    format!("cannot reach shore at {url}: {}", error_chain(&e)),
                    None,
                );
            }
        };
        let status = resp.status().as_u16();
        let after = retry_after(
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
        );
        match resp.bytes() {
            Ok(body) => classify(status, after, &body),
            Err(e) => Exchange::Retry(
                format!("reply from shore cut off: {}", error_chain(&e)),
                None,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(e: &Exchange) -> String {
        match e {
            Exchange::Reply(r, _) => format!("reply acked={:?}", r.acked_seq),
            Exchange::Retry(_, after) => format!("retry after={after:?}"),
            Exchange::Permanent(_) => "permanent".into(),
            Exchange::Replayed(n) => format!("replayed acked={n}"),
        }
    }

    /// The uplink's retry rule, status by status.
    #[test]
    fn each_answer_of_shore_is_a_reply_a_retry_a_renumbering_or_a_stop() {
        let ok = br#"{"acked_seq": 7, "bundles": []}"#.as_slice();
        let replayed =
            br#"{"error": "replayed", "message": "other content", "acked_seq": 5}"#.as_slice();
        let refused = br#"{"error": "bad_signature", "message": "no"}"#.as_slice();
        let table: &[(u16, Option<i64>, &[u8], &str)] = &[
            (200, None, ok, "reply acked=Some(7)"),
            (200, None, b"<html>proxy</html>", "retry after=None"),
            (408, None, b"", "retry after=None"),
            (429, Some(120), refused, "retry after=Some(120)"),
            (500, None, b"", "retry after=None"),
            (502, None, b"bad gateway", "retry after=None"),
            (503, Some(30), b"", "retry after=Some(30)"),
            (409, None, replayed, "replayed acked=5"),
            (
                409,
                None,
                br#"{"error": "chain_fork", "message": "x"}"#,
                "permanent",
            ),
            (400, None, b"", "permanent"),
            (401, None, refused, "permanent"),
            (403, None, b"", "permanent"),
            (413, None, b"", "permanent"),
            (422, None, refused, "permanent"),
        ];
        for (status, after, body, want) in table {
            assert_eq!(
                kind(&classify(*status, *after, body)),
                *want,
                "HTTP {status}"
            );
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_ignores_dates_and_nonsense() {
        assert_eq!(retry_after(Some(" 120 ")), Some(120));
        assert_eq!(retry_after(Some("0")), Some(0));
        assert_eq!(retry_after(Some("-5")), None);
        assert_eq!(retry_after(Some("Wed, 21 Oct 2026 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }
}
