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
//!
//! Rooms: this file holds the client (connect, resume, send); `count` the counters and the
//! counted stream; `answer` the reading of an answer; `proxy` `HTTPS_PROXY` and the tunnel.

mod answer;
mod count;
mod proxy;

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustls::pki_types::ServerName;

use crate::net::{TlsError, Trust, uplink_tls};

pub use answer::Answer;
use count::Counted;
pub use count::{Counters, Tally};
use proxy::{Proxy, proxy_from_env};

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

struct Live {
    tls: rustls::ClientConnection,
    sock: Counted,
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
            abort(live.sock.socket());
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
            sock: Counted::new(sock, self.counters.clone()),
        })
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
}
