//! What the link costs, counted on the socket: [`Counters`] shared by a client's connections,
//! [`Tally`] snapshots of them, and [`Counted`], the TCP stream that adds to them. Round trips
//! are counted as the test kit's fault proxy counts them: one for the TCP connection (added by
//! the caller) and one for every turn from sending to receiving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the link has cost since the client was made.
#[derive(Debug, Default)]
pub struct Counters {
    up: AtomicU64,
    down: AtomicU64,
    pub(super) round_trips: AtomicU64,
    pub(super) connections: AtomicU64,
    pub(super) resumed: AtomicU64,
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
pub(super) struct Counted {
    sock: TcpStream,
    counters: Arc<Counters>,
    sent_since_read: bool,
}

impl Counted {
    /// `sock`, counted into `counters`.
    pub(super) fn new(sock: TcpStream, counters: Arc<Counters>) -> Self {
        Self {
            sock,
            counters,
            sent_since_read: false,
        }
    }

    /// The socket.
    pub(super) fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// The socket, no longer counted here (the tunnel hands it on).
    pub(super) fn into_socket(self) -> TcpStream {
        self.sock
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
