//! A TCP proxy that injects link faults and counts round trips, for the uplink tests and for
//! `vessel-sync bench wire` (so the figures are measured the same way on a ship's hardware).
//!
//! Faults: added latency per forwarded chunk, a bandwidth cap, cutting the connection after N
//! bytes of upload, cutting it after the request went through but before the reply comes back
//! (the server has stored the batch; the client never hears so), and a blackhole that accepts
//! connections and forwards nothing. Round trips are counted as the TCP connection itself plus
//! every change of direction from client-to-server to server-to-client.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward faithfully.
    #[default]
    None,
    /// Close the connection once this many bytes went upstream.
    CutUpload(u64),
    /// Once this many bytes went upstream (the request), nothing more reaches the client: the
    /// server reads the request and answers, the client never hears the answer and times out.
    CutReply(u64),
    /// Accept and forward nothing.
    Blackhole,
}

/// Shared counters and settings.
#[derive(Debug, Default)]
pub struct State {
    /// Fault for new connections.
    pub fault: Mutex<Fault>,
    /// Milliseconds added before each forwarded chunk.
    pub latency_ms: AtomicU64,
    /// Bytes per second (0: unlimited).
    pub bandwidth: AtomicU64,
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// Round trips (connections plus client-to-server → server-to-client turns).
    pub round_trips: AtomicU64,
    /// Bytes client → server.
    pub up: AtomicU64,
    /// Bytes server → client.
    pub down: AtomicU64,
    /// Faults applied.
    pub faults: AtomicU64,
    stop: AtomicBool,
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Settings and counters.
    pub state: Arc<State>,
    target: Arc<Mutex<SocketAddr>>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port forwarding to `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let target = Arc::new(Mutex::new(target));
        let (s, t) = (state.clone(), target.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let to = match t.lock() {
                    Ok(g) => *g,
                    Err(_) => break,
                };
                let s = s.clone();
                std::thread::spawn(move || handle(client, to, s));
            }
        });
        Ok(Self {
            addr,
            state,
            target,
        })
    }

    /// Sets the fault for new connections.
    pub fn set_fault(&self, f: Fault) {
        if let Ok(mut g) = self.state.fault.lock() {
            *g = f;
        }
    }

    /// Points the proxy at another server (a restarted one).
    pub fn retarget(&self, to: SocketAddr) {
        if let Ok(mut g) = self.target.lock() {
            *g = to;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn handle(client: TcpStream, to: SocketAddr, s: Arc<State>) {
    s.connections.fetch_add(1, Ordering::SeqCst);
    s.round_trips.fetch_add(1, Ordering::SeqCst);
    let fault = s.fault.lock().map(|g| *g).unwrap_or_default();
    if fault == Fault::Blackhole {
        s.faults.fetch_add(1, Ordering::SeqCst);
        // Hold the connection open, silent, until the client gives up.
        let mut sink = [0u8; 4096];
        let mut c = client;
        let _ = c.set_read_timeout(Some(Duration::from_secs(600)));
        while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
        return;
    }
    let Ok(server) = TcpStream::connect(to) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // 0 = nothing yet, 1 = last data went up, 2 = last data went down.
    let dir = Arc::new(AtomicU64::new(0));
    let sent_up = Arc::new(AtomicU64::new(0));
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(sv)) => (c, sv),
        _ => return,
    };
    let (st, d, u) = (s.clone(), dir.clone(), sent_up.clone());
    let up = std::thread::spawn(move || pump(c2, s2, &st, &d, &u, true, fault));
    pump(server, client, &s, &dir, &sent_up, false, fault);
    let _ = up.join();
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    s: &State,
    dir: &AtomicU64,
    sent_up: &AtomicU64,
    upward: bool,
    fault: Fault,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    let mut cut = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let lat = s.latency_ms.load(Ordering::SeqCst);
        if lat > 0 {
            std::thread::sleep(Duration::from_millis(lat));
        }
        let bw = s.bandwidth.load(Ordering::SeqCst);
        if let Some(us) = (n as u64 * 1_000_000).checked_div(bw) {
            std::thread::sleep(Duration::from_micros(us));
        }
        let mut n = n;
        if upward {
            if let Fault::CutUpload(limit) = fault {
                if total + n as u64 >= limit {
                    n = usize::try_from(limit.saturating_sub(total)).unwrap_or(0);
                    let _ = to.write_all(&buf[..n]);
                    s.faults.fetch_add(1, Ordering::SeqCst);
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
        } else if matches!(fault, Fault::CutReply(after) if sent_up.load(Ordering::SeqCst) >= after)
        {
            // Everything from here on is lost on the way down, the server none the wiser: it
            // reads the whole request and answers (a session ticket sent ahead of the answer
            // must not close the server's side before it has the request).
            if !cut {
                cut = true;
                s.faults.fetch_add(1, Ordering::SeqCst);
            }
            continue;
        }
        let new_dir = if upward { 1 } else { 2 };
        if dir.swap(new_dir, Ordering::SeqCst) == 1 && !upward {
            s.round_trips.fetch_add(1, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        total += n as u64;
        if upward {
            sent_up.fetch_add(n as u64, Ordering::SeqCst);
            s.up.fetch_add(n as u64, Ordering::SeqCst);
        } else {
            s.down.fetch_add(n as u64, Ordering::SeqCst);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
