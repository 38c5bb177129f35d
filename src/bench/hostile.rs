//! `vessel-sync bench shore --hostile [--vessels N] [--json]`: the shore under attack while it
//! works. One `shore serve` (SQLite, TLS on loopback) takes N honest vessels' 1,000-record
//! batches (default 1,000 vessels, 64 at a time, a new TLS connection each) while
//! - 1,000 slow connections are held open the whole time (each sends 5 bytes of a TLS
//!   handshake and stops; one closed by the receiver's deadline is opened again at once), and
//! - one registered vessel (its real token and key) sends, over and over, decoder bombs (a
//!   signed 12 KB batch that would decode to gigabytes) and bodies over `max_batch_bytes`.
//!
//! It reports how long the honest fleet took, how many were acknowledged, every record stored
//! once, the attacks answered, and the receiver's peak memory, against the targets: every
//! vessel acknowledged within 60 s, peak RSS under 256 MB.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base::clock::{Clock, SystemClock};
use wire::envelope::{Draft, Extra, Kind, SecretKey, Source, write_envelope_with};
use wire::{RECORDS_MEMBER, SHORE};

use super::shore::{RECORDS, Synced, batch, io, launch, percentile, register, sync_all, write_tls};

/// Slow connections held open.
const SLOW: usize = 1_000;
/// The batch size limit of the run (an oversized body is one byte more).
const MAX_BATCH: u64 = 4 << 20;
/// Targets.
const TARGET_SECONDS: f64 = 60.0;
const TARGET_RSS_MB: f64 = 256.0;

/// A decoder bomb: a `records.bin` of 4 KiB table strings and 200,000 four-byte records
/// pointing at them (800 KB that would decode to 5.7 GB; the tests send it too).
pub fn bomb() -> Vec<u8> {
    let mut b = b"VSP3\0".to_vec();
    let long = vec![b'x'; 4096];
    let string = |b: &mut Vec<u8>, s: &[u8]| {
        b.push(0);
        b.extend_from_slice(&[0x80, 0x20]);
        b.extend_from_slice(s);
    };
    for _ in 0..2 {
        b.push(1);
        string(&mut b, &long);
        string(&mut b, &long);
    }
    b.extend_from_slice(&[1, wire::progress::RecordKind::ALL[0].code(), 0]);
    string(&mut b, &long);
    string(&mut b, &long);
    b.push(1);
    string(&mut b, &long);
    b.push(0);
    b.extend_from_slice(&[0xc0, 0x9a, 0x0c]);
    b.extend(std::iter::repeat_n(0u8, 800_000));
    b
}

fn signed_bomb(
    dir: &std::path::Path,
    vessel: &str,
    key: &SecretKey,
    now: i64,
) -> Result<Vec<u8>, String> {
    let draft = Draft {
        kind: Kind::Progress,
        sender: vessel.into(),
        recipient: SHORE.into(),
        sequence: 1,
        not_before: None,
        expires: None,
        commands: vec![],
        files: vec![(RECORDS_MEMBER.into(), Source::Bytes(bomb()))],
        id: None,
    };
    let path = dir.join("bomb.vsb");
    write_envelope_with(&draft, &Extra::default(), key, now, &path).map_err(io)?;
    std::fs::read(&path).map_err(io)
}

/// A POST announcing a body one byte over `max_batch_bytes`, of which nothing is sent: the
/// status the receiver answers with (413, before reading a byte of it).
fn announce_oversized(addr: &str, trust: &wire::net::Trust, token: &str) -> Option<u16> {
    let cfg = wire::net::client_tls(trust).ok()?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).ok()?;
    let tcp = TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    write!(
        s,
        "POST /v1/sync HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\nx-vessel-id: bench-hostile\r\ncontent-length: {}\r\n\r\n",
        MAX_BATCH + 1
    )
    .ok()?;
    s.flush().ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
}

/// Whether the receiver closed this connection.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

fn slow_connection(addr: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).ok()?;
    // A TLS handshake record header announcing 512 bytes, and nothing after it.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// The hostile run's figures.
#[derive(Debug, serde::Serialize)]
struct Hostile {
    vessels: usize,
    records_per_batch: usize,
    seconds: f64,
    acknowledged: usize,
    refused: usize,
    stored_once: bool,
    exchange_p50_ms: f64,
    exchange_p99_ms: f64,
    slow_connections_held: usize,
    slow_connections_reopened: usize,
    bombs_refused: usize,
    oversized_refused: usize,
    attacks_answered_otherwise: usize,
    receiver_peak_rss_mb: Option<f64>,
    within_60_s: bool,
    rss_under_256_mb: bool,
}

/// `bench shore --hostile`: (figures as JSON, as text, whether every target was met).
pub fn run(a: &super::Against) -> Result<(serde_json::Value, String, bool), String> {
    let vessels = a.vessels.unwrap_or(1_000).max(1);
    // 1,000 slow connections here and as many in the receiver (which inherits the limit).
    let files = base::service::raise_open_files_limit();
    if files < (SLOW as u64) + 512 {
        return Err(format!(
            "bench shore --hostile holds {SLOW} connections open but may open only {files} files; raise the limit (ulimit -n)"
        ));
    }
    let dir = tempfile::tempdir().map_err(io)?;
    let d = dir.path();
    write_tls(d)?;
    let cfg_path = d.join("shore.toml");
    // Every slow connection comes from 127.0.0.1 like the fleet: the per-address cap is
    // raised so that all 1,000 are really held (the worst case for the receiver).
    let body = format!(
        "version = 1\n[shore]\nstate_dir = \"state\"\nlisten = \"127.0.0.1:{{port}}\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\nmax_batch_bytes = {MAX_BATCH}\nmax_connections_per_address = 4096\n"
    );
    std::fs::write(&cfg_path, body.replace("{port}", "0")).map_err(io)?;
    let cfg = shore::ShoreConfig::load(&cfg_path)?;
    let now = SystemClock.now();
    let mut fleet = Vec::with_capacity(vessels);
    let (hostile_token, bomb_bytes) = {
        let db = cfg.open().map_err(|e| e.to_string())?;
        let add = |id: &str, n: usize| register(&db, d, id, n, now);
        for n in 0..vessels {
            let id = format!("bench-{n:05}");
            let (token, key) = add(&id, n)?;
            fleet.push((id, token, batch(d, n, &key, now)?));
        }
        let (token, key) = add("bench-hostile", vessels)?;
        (token, signed_bomb(d, "bench-hostile", &key, now)?)
    };
    let trust = wire::net::Trust {
        ca_file: Some(d.join("ca.pem")),
        pins: vec![],
    };
    let (mut receivers, mut urls) = launch(d, &[body], &trust)?;
    let (Some(receiver), Some(url)) = (receivers.pop(), urls.pop()) else {
        return Err("no receiver started".into());
    };
    let addr = url.trim_start_matches("https://").to_string();
    let up = Instant::now();

    let done = AtomicBool::new(false);
    let held = AtomicUsize::new(0);
    let reopened = AtomicUsize::new(0);
    let (bombs, oversized, other) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let synced: Synced = std::thread::scope(|s| {
        // The slow connections, kept at 1,000 open.
        s.spawn(|| {
            let mut conns: Vec<TcpStream> =
                (0..SLOW).filter_map(|_| slow_connection(&addr)).collect();
            held.store(conns.len(), Ordering::SeqCst);
            while !done.load(Ordering::SeqCst) {
                for c in conns.iter_mut() {
                    if closed(c) {
                        if let Some(n) = slow_connection(&addr) {
                            *c = n;
                            reopened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                base::retry::pause(Duration::from_millis(200));
            }
        });
        while held.load(Ordering::SeqCst) < SLOW && up.elapsed() < Duration::from_secs(60) {
            base::retry::pause(Duration::from_millis(20));
        }
        // The hostile vessel: bombs and oversized bodies, one after the other.
        s.spawn(|| {
            let Ok(client) =
                wire::net::http_client(&trust, Duration::from_secs(10), Duration::from_secs(60))
            else {
                return;
            };
            // At least one round, however quickly the fleet is done.
            loop {
                let status = client
                    .post(format!("{url}/v1/sync"))
                    .header("authorization", format!("Bearer {hostile_token}"))
                    .header("x-vessel-id", "bench-hostile")
                    .body(bomb_bytes.clone())
                    .send()
                    .map(|r| r.status().as_u16());
                let counter = if status.ok() == Some(422) {
                    &bombs
                } else {
                    &other
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let counter = if announce_oversized(&addr, &trust, &hostile_token) == Some(413) {
                    &oversized
                } else {
                    &other
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if done.load(Ordering::SeqCst) {
                    break;
                }
            }
        });
        let synced = sync_all(fleet, std::slice::from_ref(&url), &trust);
        done.store(true, Ordering::SeqCst);
        synced
    });
    let rss = super::rss::peak_rss_mb_of(receiver.0.id());
    drop(receiver);
    let db = cfg.open().map_err(|e| e.to_string())?;
    let mut stored_once = true;
    for n in 0..vessels {
        let (all, distinct) = db.record_counts(&format!("bench-{n:05}")).map_err(io)?;
        stored_once &= all == distinct && all == RECORDS as u64;
    }
    let h = Hostile {
        vessels,
        records_per_batch: RECORDS,
        seconds: synced.seconds,
        acknowledged: synced.acknowledged,
        refused: synced.refused,
        stored_once,
        exchange_p50_ms: percentile(&synced.times, 0.50),
        exchange_p99_ms: percentile(&synced.times, 0.99),
        slow_connections_held: held.load(Ordering::SeqCst),
        slow_connections_reopened: reopened.load(Ordering::SeqCst),
        bombs_refused: bombs.load(Ordering::SeqCst),
        oversized_refused: oversized.load(Ordering::SeqCst),
        attacks_answered_otherwise: other.load(Ordering::SeqCst),
        receiver_peak_rss_mb: rss,
        within_60_s: synced.acknowledged == vessels && synced.seconds <= TARGET_SECONDS,
        rss_under_256_mb: rss.is_some_and(|m| m < TARGET_RSS_MB),
    };
    let yes = |b: bool| if b { "yes" } else { "NO" };
    let text = format!(
        "honest vessels:      {} x {} records, {} acknowledged, {} not, in {:.2} s (p50 {:.0} ms, p99 {:.0} ms); every record stored once: {}\n\
         slow connections:    {} held open the whole run ({} closed by the receiver's deadline and opened again)\n\
         hostile vessel:      {} decoder bombs refused (422), {} oversized bodies refused (413), {} answered otherwise\n\
         receiver peak RSS:   {}\n\
         targets:             all acknowledged within 60 s: {}; peak RSS under 256 MB: {}\n",
        h.vessels,
        h.records_per_batch,
        h.acknowledged,
        h.refused,
        h.seconds,
        h.exchange_p50_ms,
        h.exchange_p99_ms,
        yes(h.stored_once),
        h.slow_connections_held,
        h.slow_connections_reopened,
        h.bombs_refused,
        h.oversized_refused,
        h.attacks_answered_otherwise,
        h.receiver_peak_rss_mb
            .map(|m| format!("{m:.1} MB"))
            .unwrap_or_else(|| "-".into()),
        yes(h.within_60_s),
        yes(h.rss_under_256_mb),
    );
    let met = h.within_60_s && h.rss_under_256_mb && h.stored_once;
    let json = serde_json::json!({"benchmark": "shore --hostile", "targets_met": met, "run": h});
    Ok((json, text, met))
}
