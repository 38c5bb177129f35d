//! Connection hygiene for `shore serve`: what one client may hold of the receiver.
//!
//! - [`Caps`]: a global cap on open connections and a cap per client address; a connection
//!   over either is closed at once, before TLS.
//! - [`Idle`]: an I/O wrapper that ends a connection on which nothing moved for a while (a
//!   client that opens and waits, sends headers a byte a minute, or stops reading a reply).
//!   hyper's own header-read deadline is set too ([`HEADER_TIMEOUT`], with tokio's timer).
//! - [`AcceptBackoff`]: when `accept` fails (out of file descriptors), the loop waits, doubling
//!   up to a second, and logs at most once every [`LOG_EVERY`] with the count, instead of
//!   spinning and logging each failure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A request's headers must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection on which no byte moved for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Accept failures are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Open connections: in all, and per client address.
pub struct Caps {
    total: usize,
    per_address: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its place.
pub struct Slot {
    caps: Arc<Caps>,
    addr: IpAddr,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The receiver holds its maximum of connections.
    Full,
    /// This address holds its maximum.
    Address,
}

impl Caps {
    /// At most `total` connections, `per_address` from one address.
    pub fn new(total: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            total: total.max(1),
            per_address: per_address.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a connection from `addr`, or why there is none.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Slot, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.values().sum();
        if total >= self.total {
            return Err(Refused::Full);
        }
        let n = open.entry(addr).or_insert(0);
        if *n >= self.per_address {
            return Err(Refused::Address);
        }
        *n += 1;
        Ok(Slot {
            caps: self.clone(),
            addr,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

/// An I/O stream that fails with `TimedOut` once nothing was read or written for `limit`
/// while the server waited on it.
pub struct Idle<T> {
    inner: T,
    limit: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<T> Idle<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
        }
    }

    fn moved(&mut self) {
        let at = tokio::time::Instant::now() + self.limit;
        self.sleep.as_mut().reset(at);
    }

    /// `Pending` from the inner stream: an error once the deadline passed.
    fn waited<R>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<R>> {
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection idle too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future as _;

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.waited(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                this.moved();
                Poll::Ready(r)
            }
            Poll::Pending => this.waited(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.waited(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The accept loop's answer to failures: a growing wait and a bounded log.
pub struct AcceptBackoff {
    wait: Duration,
    failures: u64,
    logged_at: Option<Instant>,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self {
            wait: Duration::ZERO,
            failures: 0,
            logged_at: None,
        }
    }
}

impl AcceptBackoff {
    /// An accept failed: how long to wait before the next, and whether to log now (with the
    /// failures since the last log).
    pub fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        self.failures += 1;
        self.wait = (self.wait * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let log = match self.logged_at {
            Some(t) if now.duration_since(t) < LOG_EVERY => None,
            _ => {
                self.logged_at = Some(now);
                Some(std::mem::take(&mut self.failures))
            }
        };
        (self.wait, log)
    }

    /// An accept succeeded: the next failure starts from a short wait.
    pub fn succeeded(&mut self) {
        self.wait = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_address_and_in_all_and_free_on_drop() {
        let caps = Caps::new(3, 2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let s1 = caps.admit(a).unwrap();
        let _s2 = caps.admit(a).unwrap();
        assert_eq!(caps.admit(a).err(), Some(Refused::Address));
        let _s3 = caps.admit(b).unwrap();
        assert_eq!(caps.admit(b).err(), Some(Refused::Full));
        drop(s1);
        assert!(caps.admit(a).is_ok());
    }

    #[test]
    fn accept_failures_back_off_to_a_second_and_log_rarely() {
        let mut b = AcceptBackoff::default();
        let t = Instant::now();
        let (w, log) = b.failed(t);
        assert_eq!((w, log), (Duration::from_millis(10), Some(1)));
        let mut logs = 0;
        for i in 1..200_000u64 {
            let (w, log) = b.failed(t + Duration::from_micros(i));
            assert!(w <= Duration::from_secs(1));
            logs += usize::from(log.is_some());
        }
        assert_eq!(logs, 0, "one log line per 10 s, whatever the failure rate");
        let (_, log) = b.failed(t + LOG_EVERY);
        assert_eq!(log, Some(200_000));
        b.succeeded();
        assert_eq!(b.failed(t + LOG_EVERY * 3).0, Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_on_which_nothing_moves_is_ended() {
        use tokio::io::AsyncReadExt;
        let (client, server) = tokio::io::duplex(64);
        let mut idle = Idle::new(server, Duration::from_secs(60));
        let mut buf = [0u8; 8];
        let err = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(client);
    }
}
