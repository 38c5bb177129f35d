//! The link's cost, measured where a ship's bill measures it: at a proxy between the vessel's
//! uplink and a real shore receiver, set to an L-band link (64 kbit/s, 900 ms round trip). The
//! uplink runs in this process so that its TLS session lives from one exchange to the next, as
//! in the agent's daemon. Every figure the agent counts on its own socket must equal what the
//! proxy counted: `status` bills from the agent's figures.

use std::sync::atomic::Ordering;

use crate::support::shore::{Shore, linked_vessel, seed, snapshot};
use crate::support::{VESSEL, Vessel};
use testkit::faultproxy::Proxy;
use vessel::config::Config;
use vessel::store::Store;
use vessel::uplink::{CycleReport, Uplink};

/// An L-band link: 64 kbit/s, 450 ms each way.
fn l_band(proxy: &Proxy) {
    proxy.state.latency_ms.store(450, Ordering::SeqCst);
    proxy.state.bandwidth.store(8_000, Ordering::SeqCst);
}

struct Link {
    shore: Shore,
    proxy: Proxy,
    v: Vessel,
    uplink: Uplink,
    store: Store,
}

impl Link {
    fn new(extra: &str) -> Self {
        let mut shore = Shore::new();
        shore.start();
        let proxy = Proxy::start(shore.addr()).unwrap();
        let v = linked_vessel(
            &shore,
            &format!("https://127.0.0.1:{}", proxy.addr.port()),
            extra,
        );
        let cfg = Config::load(&v.config).unwrap();
        std::fs::create_dir_all(v.path("state")).unwrap();
        let store = Store::open(&v.path("state/journal.db"), VESSEL).unwrap();
        let uplink = Uplink::new(&cfg).unwrap().unwrap();
        Self {
            shore,
            proxy,
            v,
            uplink,
            store,
        }
    }

    /// One cycle at `now`; the proxy's (bytes, round trips) for it beside the agent's report.
    fn cycle(&mut self, now: i64) -> (CycleReport, u64, u64) {
        let (b0, r0) = self.proxied();
        let r = self.uplink.cycle(&mut self.store, now).unwrap();
        assert!(r.held.is_none(), "held: {:?}", r.held);
        let (b1, r1) = self.proxied();
        assert_eq!(
            r.link.bytes(),
            b1 - b0,
            "the agent counts on its socket what the proxy counted on the link"
        );
        assert_eq!(
            r.link.round_trips,
            r1 - r0,
            "round trips as the proxy counts them"
        );
        (r, b1 - b0, r1 - r0)
    }

    fn proxied(&self) -> (u64, u64) {
        let s = &self.proxy.state;
        (
            s.up.load(Ordering::SeqCst) + s.down.load(Ordering::SeqCst),
            s.round_trips.load(Ordering::SeqCst),
        )
    }
}

/// The empty poll after the first costs at most 900 bytes: no certificate crosses (the session
/// is resumed from shore's ticket), the request leaves with the client's `Finished`, and
/// neither side sends a header the other does not read. Three round trips, not two: TCP, the
/// TLS flight, and the HTTP request with the client's `Finished` (shore's rustls answers no
/// request before the client's `Finished`, so 0-RTT data would save no turn).
#[test]
fn an_idle_vessels_poll_on_a_resumed_session_costs_at_most_900_bytes() {
    let mut l = Link::new("");
    l_band(&l.proxy);
    let now = crate::support::now();
    let (first, first_bytes, _) = l.cycle(now);
    assert_eq!(
        first.link.resumed, 0,
        "the first connection has no ticket yet"
    );
    let (again, bytes, trips) = l.cycle(now + 3600);
    assert_eq!(again.link.resumed, 1, "the second connection resumes");
    assert!(bytes <= 900, "a resumed empty poll cost {bytes} bytes");
    assert!(
        bytes + 300 < first_bytes,
        "resuming saves the certificate: {bytes} vs {first_bytes}"
    );
    assert_eq!(trips, 3, "TCP + TLS + HTTP");
    assert_eq!(again.exchanges, 1);
}

/// A day of a 30-person crew (300 records) goes home in one request on a resumed session, at
/// most 3,000 bytes with the acknowledgement in the reply, and shore holds all 300.
#[test]
fn a_crews_day_of_progress_goes_home_in_one_exchange_of_at_most_3000_bytes() {
    let mut l = Link::new("");
    l_band(&l.proxy);
    let now = crate::support::now();
    l.cycle(now);
    let queued = vessel::capture::apply_snapshot(
        &mut l.store,
        &snapshot(300, 3),
        VESSEL,
        Default::default(),
        now,
    )
    .unwrap()
    .queued;
    assert_eq!(queued, 300);
    let (r, bytes, trips) = l.cycle(now + 60);
    assert_eq!(
        (r.exchanges, r.link.connections, r.link.resumed),
        (1, 1, 1),
        "one request on one resumed connection"
    );
    assert!(bytes <= 3_000, "300 records cost {bytes} bytes");
    assert_eq!(trips, 3);
    assert_eq!(l.shore.counts(), (300, 300), "shore holds each record once");
    assert_eq!(l.store.outbox_summary().unwrap().records, 0, "acknowledged");
}

/// An idle vessel at the default settings, run through a whole day on its own schedule (the
/// clock advanced to each next attempt, every check-in a real exchange through the proxy):
/// 24 check-ins and at most 30 KB, where polling every 5 minutes with full handshakes cost
/// about 535 KB.
#[test]
fn an_idle_vessel_at_default_settings_spends_at_most_30_kb_a_day() {
    let mut l = Link::new("");
    let start = crate::support::now();
    let (mut t, mut bytes, mut exchanges) = (start, 0, 0);
    while t < start + 86_400 {
        let (r, b, _) = l.cycle(t);
        bytes += b;
        exchanges += r.exchanges;
        t = r.next_attempt;
    }
    assert_eq!(exchanges, 24, "hourly check-ins (uplink.idle_interval)");
    assert!(bytes <= 30_000, "an idle day cost {bytes} bytes");
}

/// Polling follows the work: records waiting bring the next exchange to `uplink.interval`
/// after the last contact (or now), not the idle hour; shore's `poll_in` (bundles offered)
/// brings it back within five minutes; and a link in backoff is not hurried by new work.
#[test]
fn new_work_and_shores_poll_in_bring_an_idle_vessels_next_exchange_forward() {
    let mut l = Link::new("");
    let now = crate::support::now();
    let (r, _, _) = l.cycle(now);
    assert_eq!(r.next_attempt, now + 3600, "idle: check in after an hour");
    seed(&l.v, 10, 1);
    let at = l
        .uplink
        .nudge(&mut l.store, now + 60, "a capture found progress to send")
        .unwrap();
    assert_eq!(at, now + 300, "uplink.interval after the last contact");
    let at = l
        .uplink
        .nudge(&mut l.store, now + 900, "a capture found progress to send")
        .unwrap();
    assert_eq!(at, now + 300, "never later than already scheduled");
    // Records still waiting after a cycle: the next one after uplink.interval.
    let state = l.store.uplink_state().unwrap();
    assert!(state.next_attempt_at <= now + 300);

    // A bundle waiting ashore: shore's reply asks the vessel back within five minutes.
    let (r, _, _) = l.cycle(now + 300);
    assert_eq!(r.next_attempt, now + 300 + 3600, "sent, idle again");
    crate::support::shore::push_mapping_bundle(&l.shore, &l.v);
    let (r, _, _) = l.cycle(now + 400);
    assert_eq!(r.poll_in, Some(shore::serve::POLL_IN_BUSY));
    assert!(r.downloaded >= 1, "{r:?}");
    assert_eq!(r.next_attempt, now + 400 + shore::serve::POLL_IN_BUSY);

    // In backoff (shore unreachable), new work waits for the backoff.
    l.proxy.set_fault(testkit::faultproxy::Fault::CutUpload(10));
    let r = l.uplink.cycle(&mut l.store, now + 800).unwrap();
    assert!(r.held.is_some());
    seed(&l.v, 20, 2);
    let at = l.uplink.nudge(&mut l.store, now + 801, "work").unwrap();
    assert_eq!(at, r.next_attempt, "the backoff holds");
}

/// With `[uplink] price_per_mb`, `status` bills the bytes the link really carried, today and
/// this month, in the configured currency.
#[test]
fn status_shows_what_the_link_cost_today_and_this_month() {
    let l = Link::new("price_per_mb = 18.78\ncurrency = \"USD\"\n");
    let out =
        l.v.run(&["sync", "--config", l.v.config.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sync: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = sync["link"]["up"].as_u64().unwrap() + sync["link"]["down"].as_u64().unwrap();
    let (proxied, _) = l.proxied();
    assert_eq!(bytes, proxied);
    let out =
        l.v.run(&["status", "--config", l.v.config.to_str().unwrap(), "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &s["progress"];
    assert_eq!(p["bytes_today"].as_u64(), Some(bytes));
    let want = (bytes as f64 / 1e6 * 18.78 * 1000.0).round() / 1000.0;
    assert_eq!(p["cost_today"].as_f64(), Some(want));
    assert_eq!(p["currency"], "USD");
    let text =
        l.v.run(&["status", "--config", l.v.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("today {bytes} bytes, {want:.3} USD")),
        "{text}"
    );
}

/// A ship whose only way out is an HTTP proxy: with `HTTPS_PROXY` set the uplink tunnels to
/// shore through it with `CONNECT` (as reqwest did before the uplink had its own client), and
/// the proxy's answer counts as one more round trip.
#[test]
fn the_uplink_reaches_shore_through_an_http_proxy_with_connect() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    let mut shore = Shore::new();
    shore.start();
    let v = linked_vessel(&shore, &format!("https://127.0.0.1:{}", shore.port), "");
    seed(&v, 5, 0);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let tunnels = Arc::new(AtomicU64::new(0));
    let (seen, target) = (tunnels.clone(), shore.port);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && client.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let line = String::from_utf8_lossy(&head).into_owned();
            if !line.starts_with(&format!("CONNECT 127.0.0.1:{target} HTTP/1.1")) {
                let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n");
                continue;
            }
            seen.fetch_add(1, Ordering::SeqCst);
            let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut c2, &mut s2));
            let (mut s, mut c) = (server, client);
            std::thread::spawn(move || std::io::copy(&mut s, &mut c));
        }
    });
    let out = v.run_env(
        &["sync", "--config", v.config.to_str().unwrap(), "--json"],
        &[("HTTPS_PROXY", &format!("http://127.0.0.1:{proxy_port}"))],
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tunnels.load(Ordering::SeqCst) >= 1, "the proxy carried it");
    assert_eq!(shore.counts(), (5, 5));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["link"]["round_trips"], 4,
        "TCP, CONNECT, TLS, request: {r}"
    );
}
