//! The uplink's own HTTP/1.1 client over rustls: every byte it sends or receives on the socket
//! is counted (so `status` bills what really crossed, handshakes included), a TLS 1.3 session is
//! resumed from the ticket shore gave on the previous connection, and a request is written
//! before the handshake ends so that it leaves in the same flight as the client's `Finished`.
//!
//! Why not reqwest here: the link is billed per byte, and reqwest can neither say how many bytes
//! a request cost on the wire nor keep its own headers off it. The Moodle clients (on a LAN or a
//! shore network) stay on reqwest ([`crate::net::moodle_client`]).
//!
//! One connection at a time, kept alive for the requests of one sync cycle and closed with
//! [`LinkClient::close`] at its end (the next cycle is minutes away; a connection idle that long
//! is dropped by shore or the satellite's middleboxes anyway, and writing into a dead one costs
//! bytes). An HTTP proxy is used through `CONNECT` when `HTTPS_PROXY` (or `https_proxy`) is set
//! and `NO_PROXY` does not name the host.
//!
//! Round trips are counted as the test kit's fault proxy counts them: one for the TCP
//! connection, and one for every turn from sending to receiving.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::net::{TlsError, Trust, uplink_tls};

/// Longest response head (status line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Request bytes written before the handshake ends, to leave with the client's `Finished`.
const EARLY_WRITE: usize = 16 * 1024;

/// A link failure.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The URL cannot be used.
    #[error("{0}")]
    Url(String),
    /// TCP connection (or the proxy's tunnel) failed.
    #[error("cannot connect to {to}: {detail}")]
    Connect {
        /// Where.
        to: String,
        /// Why.
        detail: String,
    },
    /// The TLS handshake or a TLS record failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Reading or writing the connection failed.
    #[error("connection: {0}")]
    Io(String),
    /// No answer within the timeout.
    #[error("no answer within {0} s")]
    Timeout(u64),
    /// The answer is not HTTP this client reads.
    #[error("not an HTTP answer this client reads: {0}")]
    Protocol(String),
    /// The answer's body is larger than the caller allows.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(u64),
}

/// What the link has cost since the client was made.
#[derive(Debug, Default)]
pub struct Counters {
    up: AtomicU64,
    down: AtomicU64,
    round_trips: AtomicU64,
    connections: AtomicU64,
    resumed: AtomicU64,
}

/// A snapshot of [`Counters`]; subtract two to get what lay between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Bytes written to the socket (TLS records, proxy `CONNECT`).
    pub up: u64,
    /// Bytes read from the socket.
    pub down: u64,
    /// TCP connections plus turns from sending to receiving.
    pub round_trips: u64,
    /// TCP connections opened.
    pub connections: u64,
    /// Of those, TLS sessions resumed from a ticket (no certificate crossed).
    pub resumed: u64,
}

impl Tally {
    /// What was spent between `earlier` and `self`.
    pub fn since(&self, earlier: &Tally) -> Tally {
        Tally {
            up: self.up.saturating_sub(earlier.up),
            down: self.down.saturating_sub(earlier.down),
            round_trips: self.round_trips.saturating_sub(earlier.round_trips),
            connections: self.connections.saturating_sub(earlier.connections),
            resumed: self.resumed.saturating_sub(earlier.resumed),
        }
    }

    /// Bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.up + self.down
    }
}

impl Counters {
    /// The counts now.
    pub fn tally(&self) -> Tally {
        Tally {
            up: self.up.load(Ordering::Relaxed),
            down: self.down.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            resumed: self.resumed.load(Ordering::Relaxed),
        }
    }
}

/// A TCP stream that counts its bytes and turns.
struct Counted {
    sock: TcpStream,
    counters: Arc<Counters>,
    sent_since_read: bool,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.sock.read(buf)?;
        if n > 0 {
            self.counters.down.fetch_add(n as u64, Ordering::Relaxed);
            if self.sent_since_read {
                self.counters.round_trips.fetch_add(1, Ordering::Relaxed);
                self.sent_since_read = false;
            }
        }
        Ok(n)
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.sock.write(buf)?;
        if n > 0 {
            self.counters.up.fetch_add(n as u64, Ordering::Relaxed);
            self.sent_since_read = true;
        }
        Ok(n)
    }

    /// One system call for all of rustls's pending records: the client's `Finished` and the
    /// request leave in one segment, so shore never answers the one before the other arrives.
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let n = self.sock.write_vectored(bufs)?;
        if n > 0 {
            self.counters.up.fetch_add(n as u64, Ordering::Relaxed);
            self.sent_since_read = true;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

struct Live {
    tls: rustls::ClientConnection,
    sock: Counted,
}

/// An HTTP proxy reached with `CONNECT`.
#[derive(Debug, Clone)]
struct Proxy {
    addr: String,
    auth: Option<String>,
}

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

/// The uplink's HTTPS client for one base URL.
pub struct LinkClient {
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    name: ServerName<'static>,
    connect_timeout: Duration,
    timeout: Duration,
    proxy: Option<Proxy>,
    live: Option<Live>,
    counters: Arc<Counters>,
}

/// Splits `https://host[:port][/...]` into host and port.
fn host_port(url: &str) -> Result<(String, u16), LinkError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| LinkError::Url(format!("{url:?} is not an https:// URL")))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') || authority.is_empty() {
        return Err(LinkError::Url(format!(
            "{url:?}: give https://HOST[:PORT] (no user name, no empty host)"
        )));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| LinkError::Url(format!("{url:?}: unclosed [ in the host")))?;
        (h.to_string(), after.strip_prefix(':').unwrap_or("443"))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), "443"),
        }
    };
    let port: u16 = port
        .parse()
        .map_err(|_| LinkError::Url(format!("{url:?}: the port is not a number")))?;
    Ok((host, port))
}

/// The proxy from `HTTPS_PROXY` / `https_proxy` unless `NO_PROXY` / `no_proxy` names `host`.
fn proxy_from_env(host: &str) -> Result<Option<Proxy>, LinkError> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    proxy_for(
        host,
        var("HTTPS_PROXY").or_else(|| var("https_proxy")),
        &var("NO_PROXY")
            .or_else(|| var("no_proxy"))
            .unwrap_or_default(),
    )
}

/// The proxy `url` for `host`, unless `no_proxy` (a comma-separated list of hosts and domain
/// suffixes, or `*`) names it.
fn proxy_for(host: &str, url: Option<String>, no_proxy: &str) -> Result<Option<Proxy>, LinkError> {
    let Some(url) = url else {
        return Ok(None);
    };
    let skipped = no_proxy.split(',').map(str::trim).any(|n| {
        let n = n.trim_start_matches('.');
        n == "*" || (!n.is_empty() && (host == n || host.ends_with(&format!(".{n}"))))
    });
    if skipped {
        return Ok(None);
    }
    let rest = url.trim().strip_prefix("http://").ok_or_else(|| {
        LinkError::Url(format!(
            "HTTPS_PROXY={url:?}: give an http:// proxy URL (the tunnel to shore is TLS itself)"
        ))
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (auth, addr) = match authority.rsplit_once('@') {
        Some((cred, addr)) => {
            use base64::Engine;
            (
                Some(base64::engine::general_purpose::STANDARD.encode(cred)),
                addr,
            )
        }
        None => (None, authority),
    };
    let addr = if addr.contains(':') && !addr.ends_with(']') {
        addr.to_string()
    } else {
        format!("{addr}:3128")
    };
    Ok(Some(Proxy { addr, auth }))
}

/// Makes the coming close of `sock` a reset (`SO_LINGER` of zero), so that the peer's answer
/// to a graceful close never crosses the link.
fn abort(sock: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is open (owned by `sock`, which outlives the call) and the option
    // value is a `linger` of the size passed.
    let _ = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    // No shutdown(): it would send a FIN first, and shore would answer it before the reset
    // arrives. The caller drops the socket, which resets the connection.
}

fn io_err(e: std::io::Error, timeout: Duration) -> LinkError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            LinkError::Timeout(timeout.as_secs())
        }
        _ => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(t) => LinkError::Tls(t.to_string()),
            None => LinkError::Io(e.to_string()),
        },
    }
}

impl LinkClient {
    /// A client for shore at `base_url` (`https://host[:port]`), trusting as `trust` says.
    pub fn new(
        base_url: &str,
        trust: &Trust,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, LinkError> {
        let (host, port) = host_port(base_url)?;
        let name = ServerName::try_from(host.clone())
            .map_err(|e| LinkError::Url(format!("{base_url:?}: {e}")))?;
        let tls = uplink_tls(trust).map_err(|e: TlsError| LinkError::Tls(e.to_string()))?;
        Ok(Self {
            tls: Arc::new(tls),
            proxy: proxy_from_env(&host)?,
            host,
            port,
            name,
            connect_timeout,
            timeout,
            live: None,
            counters: Arc::new(Counters::default()),
        })
    }

    /// What the link has cost so far.
    pub fn tally(&self) -> Tally {
        self.counters.tally()
    }

    /// Closes the kept connection (the end of a cycle). The TLS session stays resumable.
    ///
    /// The close is abortive (a TCP reset): every answer has been read in full by then, and a
    /// graceful close would have shore send a TLS `close_notify` (24 bytes) down the billed link
    /// for nobody to read.
    pub fn close(&mut self) {
        if let Some(live) = self.live.take() {
            abort(&live.sock.sock);
        }
    }

    fn tcp(&self, to: &str) -> Result<TcpStream, LinkError> {
        let fail = |detail: String| LinkError::Connect {
            to: to.to_string(),
            detail,
        };
        let addrs = to
            .to_socket_addrs()
            .map_err(|e| fail(format!("name lookup: {e}")))?;
        let mut last = String::from("the name resolves to no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.connect_timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s.set_read_timeout(Some(self.timeout))
                        .and_then(|()| s.set_write_timeout(Some(self.timeout)))
                        .map_err(|e| fail(e.to_string()))?;
                    return Ok(s);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(fail(last))
    }

    fn connect(&mut self) -> Result<Live, LinkError> {
        let target = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let sock = match &self.proxy {
            None => self.tcp(&target)?,
            Some(p) => {
                let p = p.clone();
                self.tunnel(&p, &target)?
            }
        };
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        self.counters.round_trips.fetch_add(1, Ordering::Relaxed);
        let tls = rustls::ClientConnection::new(self.tls.clone(), self.name.clone())
            .map_err(|e| LinkError::Tls(e.to_string()))?;
        Ok(Live {
            tls,
            sock: Counted {
                sock,
                counters: self.counters.clone(),
                sent_since_read: false,
            },
        })
    }

    fn tunnel(&self, p: &Proxy, target: &str) -> Result<TcpStream, LinkError> {
        let sock = self.tcp(&p.addr)?;
        let mut c = Counted {
            sock,
            counters: self.counters.clone(),
            sent_since_read: false,
        };
        // Round trips: the TCP connection to the proxy is counted by the caller as the
        // connection; the CONNECT and its answer are one more turn, counted as it is read.
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n");
        if let Some(a) = &p.auth {
            head.push_str(&format!("proxy-authorization: Basic {a}\r\n"));
        }
        head.push_str("\r\n");
        let fail = |detail: String| LinkError::Connect {
            to: format!("{target} through the proxy {}", p.addr),
            detail,
        };
        c.write_all(head.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        // Byte by byte: nothing of the TLS stream that follows may be swallowed.
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            if got.len() > MAX_HEAD {
                return Err(fail("the proxy's answer has no end".into()));
            }
            match c.read(&mut b) {
                Ok(0) => return Err(fail("the proxy closed the connection".into())),
                Ok(_) => got.push(b[0]),
                Err(e) => return Err(fail(e.to_string())),
            }
        }
        let line = String::from_utf8_lossy(&got);
        let status = line.split_whitespace().nth(1).unwrap_or_default();
        if status != "200" {
            return Err(fail(format!(
                "the proxy answered {}",
                base::text::clip(line.trim(), 120)
            )));
        }
        Ok(c.sock)
    }

    /// Sends one request and reads its answer, whose body may be at most `max_body` bytes.
    /// A kept connection that turns out dead before any answer byte is replaced once.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        max_body: u64,
    ) -> Result<Answer, LinkError> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}", self.host);
        if self.port != 443 {
            head.push_str(&format!(":{}", self.port));
        }
        head.push_str("\r\n");
        for (n, v) in headers {
            if n.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
                return Err(LinkError::Url(format!("header {n:?} is not a header")));
            }
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        // A request without a length has no body (RFC 9112, 6.3): an empty poll needs none.
        if !body.is_empty() {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        let reused = self.live.is_some();
        match self.exchange(&req, max_body) {
            Err((_, false)) if reused => {
                self.live = None;
                self.exchange(&req, max_body).map_err(|(e, _)| e)
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// One request on the kept connection or a new one. The error says whether any answer byte
    /// had arrived.
    fn exchange(&mut self, req: &[u8], max_body: u64) -> Result<Answer, (LinkError, bool)> {
        let timeout = self.timeout;
        let mut live = match self.live.take() {
            Some(l) => l,
            None => {
                let mut l = self.connect().map_err(|e| (e, true))?;
                // Before the handshake: written with the client's Finished, in one flight.
                let n = req.len().min(EARLY_WRITE);
                let early = l
                    .tls
                    .writer()
                    .write(&req[..n])
                    .map_err(|e| (io_err(e, timeout), true))?;
                let rest = &req[early..];
                let mut s = rustls::Stream::new(&mut l.tls, &mut l.sock);
                s.write_all(rest)
                    .and_then(|()| s.flush())
                    .map_err(|e| (io_err(e, timeout), true))?;
                if l.tls.is_handshaking() {
                    return Err((LinkError::Tls("the handshake did not finish".into()), true));
                }
                if matches!(l.tls.handshake_kind(), Some(rustls::HandshakeKind::Resumed)) {
                    self.counters.resumed.fetch_add(1, Ordering::Relaxed);
                }
                return self.answer(l, max_body);
            }
        };
        let mut s = rustls::Stream::new(&mut live.tls, &mut live.sock);
        s.write_all(req)
            .and_then(|()| s.flush())
            .map_err(|e| (io_err(e, timeout), false))?;
        self.answer(live, max_body)
    }

    fn answer(&mut self, mut live: Live, max_body: u64) -> Result<Answer, (LinkError, bool)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shore_url_gives_its_host_and_port_and_nothing_else_passes() {
        assert_eq!(
            host_port("https://shore.example.org").unwrap(),
            ("shore.example.org".into(), 443)
        );
        assert_eq!(
            host_port("https://127.0.0.1:8443/").unwrap(),
            ("127.0.0.1".into(), 8443)
        );
        assert_eq!(
            host_port("https://[::1]:9000").unwrap(),
            ("::1".into(), 9000)
        );
        for bad in [
            "http://shore.example.org",
            "https://user@shore",
            "https://",
            "https://shore:port",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn https_proxy_is_used_unless_no_proxy_names_the_host() {
        let p = |url: &str, no: &str| proxy_for("shore.fleet.example", Some(url.into()), no);
        let got = p("http://proxy.ship.lan:8080", "").unwrap().unwrap();
        assert_eq!((got.addr.as_str(), got.auth), ("proxy.ship.lan:8080", None));
        let got = p("http://officer:secret@proxy.ship.lan", "")
            .unwrap()
            .unwrap();
        assert_eq!(got.addr, "proxy.ship.lan:3128", "the usual proxy port");
        assert_eq!(got.auth.as_deref(), Some("b2ZmaWNlcjpzZWNyZXQ="));
        for no in [
            "fleet.example",
            ".fleet.example",
            "*",
            "localhost, shore.fleet.example",
        ] {
            assert!(p("http://proxy:3128", no).unwrap().is_none(), "{no}");
        }
        assert!(
            p("http://proxy:3128", "example.org,leet.example")
                .unwrap()
                .is_some()
        );
        assert!(
            p("https://proxy:3128", "").is_err(),
            "a TLS proxy is not spoken"
        );
        assert!(proxy_for("shore", None, "").unwrap().is_none());
    }

    #[test]
    fn tallies_subtract_to_what_lay_between() {
        let a = Tally {
            up: 10,
            down: 20,
            round_trips: 1,
            connections: 1,
            resumed: 0,
        };
        let b = Tally {
            up: 15,
            down: 50,
            round_trips: 4,
            connections: 2,
            resumed: 1,
        };
        let d = b.since(&a);
        assert_eq!((d.up, d.down, d.round_trips, d.bytes()), (5, 30, 3, 35));
    }
}
