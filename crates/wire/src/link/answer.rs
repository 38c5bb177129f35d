//! Reading an answer: the status line and headers (at most [`MAX_HEAD`] bytes), then a body
//! framed by `Content-Length`, chunked, or by the connection's end, never more than the caller
//! allows; a connection is kept for the next request unless the answer says `close` or ran to
//! the connection's end.

use std::io::Read;
use std::time::Instant;

use super::{LinkClient, LinkError, Live, io_err};

/// Longest response head (status line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;

/// An answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// A header's value (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl LinkClient {
    pub(super) fn answer(
        &mut self,
        mut live: Live,
        max_body: u64,
    ) -> Result<Answer, (LinkError, bool)> {
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let mut s = rustls::Stream::new(&mut live.tls, &mut live.sock);
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err((
                    LinkError::Protocol("the answer's head has no end".into()),
                    true,
                ));
            }
            if Instant::now() > deadline {
                return Err((LinkError::Timeout(timeout.as_secs()), !buf.is_empty()));
            }
            match s.read(&mut chunk) {
                Ok(0) => {
                    return Err((
                        LinkError::Io("shore closed the connection without an answer".into()),
                        !buf.is_empty(),
                    ));
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err((io_err(e, timeout), !buf.is_empty())),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.split_whitespace();
        let (version, status) = (
            parts.next(),
            parts.next().and_then(|s| s.parse::<u16>().ok()),
        );
        let Some(status) = status.filter(|_| version.is_some_and(|v| v.starts_with("HTTP/1.")))
        else {
            return Err((
                LinkError::Protocol(base::text::clip(status_line, 120)),
                true,
            ));
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        let chunked = get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let length: Option<u64> = get("content-length").and_then(|v| v.parse().ok());
        let mut keep = !get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let mut rest = buf.split_off(head_end);
        let mut read_more = |rest: &mut Vec<u8>| -> Result<usize, (LinkError, bool)> {
            if Instant::now() > deadline {
                return Err((LinkError::Timeout(timeout.as_secs()), true));
            }
            let n = s.read(&mut chunk).map_err(|e| (io_err(e, timeout), true))?;
            rest.extend_from_slice(&chunk[..n]);
            Ok(n)
        };
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
                        break p;
                    }
                    if rest.len() > 64 || read_more(&mut rest)? == 0 {
                        return Err((LinkError::Protocol("a chunk size line is cut".into()), true));
                    }
                };
                let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
                let size =
                    u64::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| {
                            (
                                LinkError::Protocol(format!("chunk size {size_text:?}")),
                                true,
                            )
                        })?;
                if body.len() as u64 + size > max_body {
                    return Err((LinkError::TooLarge(max_body), true));
                }
                rest.drain(..line_end + 2);
                let need = usize::try_from(size)
                    .unwrap_or(usize::MAX)
                    .saturating_add(2);
                while rest.len() < need {
                    if read_more(&mut rest)? == 0 {
                        return Err((LinkError::Io("the answer was cut".into()), true));
                    }
                }
                body.extend_from_slice(&rest[..need - 2]);
                rest.drain(..need);
                if size == 0 {
                    break body;
                }
            }
        } else if let Some(len) = length {
            if len > max_body {
                return Err((LinkError::TooLarge(max_body), true));
            }
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            while rest.len() < len {
                if read_more(&mut rest)? == 0 {
                    return Err((LinkError::Io("the answer was cut".into()), true));
                }
            }
            rest.truncate(len);
            rest
        } else {
            keep = false;
            loop {
                if rest.len() as u64 > max_body {
                    return Err((LinkError::TooLarge(max_body), true));
                }
                match read_more(&mut rest) {
                    Ok(0) => break rest,
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        };
        if keep {
            self.live = Some(live);
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}
