//! One exchange with shore over HTTPS: `POST /v1/sync` with the oldest unacknowledged batch
//! (or nothing, as a poll), and the retry rule that classifies its answer ([`classify`]):
//! 200 is a reply; 409 `replayed` means shore holds that sequence with other content (the
//! batches are renumbered); transport errors, 408, 429 and 5xx are retried with backoff, a
//! `Retry-After` winning over a shorter wait; any other status is a refusal that stops syncing
//! until fixed (or six hours).

use serde::Deserialize;

use super::Uplink;
use crate::store::Store;

/// Largest reply of `POST /v1/sync` read (the offers of a long queue fit many times over).
const MAX_REPLY: u64 = 4 << 20;

/// The reply of `POST /v1/sync`.
#[derive(Debug, Deserialize)]
pub(crate) struct Reply {
    #[serde(default)]
    pub acked_seq: Option<u64>,
    #[serde(default)]
    pub bundles: Vec<Offer>,
    /// Shore asks to hear from the vessel again within this many seconds (something is under
    /// way for it: a bundle not yet fetched, a retirement or a crew change waiting on it).
    #[serde(default)]
    pub poll_in: Option<i64>,
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
    /// Shore answered.
    Reply(Reply),
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
            Some(r) => Exchange::Reply(r),
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
    /// `POST /v1/sync` with `body` (a batch, or nothing as a poll). Only what shore reads is
    /// sent: no user agent, no content type, no accept header.
    pub(super) fn post(&mut self, store: &Store, body: &[u8], now: i64) -> Exchange {
        let summary = store.outbox_summary().unwrap_or_default();
        let cursor = store
            .uplink_state()
            .map(|s| s.bundle_cursor)
            .unwrap_or(0)
            .to_string();
        let oldest = summary
            .oldest_captured_at
            .map(|t| (now - t).max(0))
            .unwrap_or(0)
            .to_string();
        let depth = summary.records.to_string();
        let url = self.cfg.url.clone();
        let (Some(client), Some(token)) = (self.client.as_mut(), self.token.as_ref()) else {
            return Exchange::Permanent("uplink not configured for https".into());
        };
        let auth = format!("Bearer {token}");
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("x-vessel-id", &self.vessel),
        ];
        if cursor != "0" {
            headers.push(("x-bundle-cursor", &cursor));
        }
        // Shore reads their absence as an empty outbox.
        if summary.records > 0 {
            headers.push(("x-oldest-unsent", &oldest));
            headers.push(("x-outbox-depth", &depth));
        }
        let answer = client.request("POST", "/v1/sync", &headers, body, MAX_REPLY);
        match answer {
            Ok(a) => classify(a.status, retry_after(a.header("retry-after")), &a.body),
            Err(e) => {
                client.close();
                Exchange::Retry(format!("cannot reach shore at {url}: {e}"), None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(e: &Exchange) -> String {
        match e {
            Exchange::Reply(r) => format!("reply acked={:?}", r.acked_seq),
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
