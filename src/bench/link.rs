//! `bench link`: what the link costs with this agent's settings, measured by the agent's own
//! uplink code against a shore receiver of this binary on loopback (both in this process, a
//! throwaway CA, a vessel made for the run). Bytes and round trips are what the uplink's client
//! counted on its socket ([`wire::link`]): TLS records and HTTP, not TCP/IP headers.
//!
//! Scenarios: the first poll of a process (a full TLS 1.3 handshake), a poll on a resumed
//! session, exchanges carrying 1 and 300 records, and an idle day: the agent's schedule run from
//! midnight to midnight with nothing to send, every check-in a real exchange, the clock
//! advanced to each next attempt. With `[uplink] price_per_mb` the day is priced.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use vessel::config::Config;
use vessel::store::Store;
use vessel::uplink::Uplink;
use wire::envelope::SecretKey;
use wire::link::Tally;

const VESSEL: &str = "mv-bench";
const DAY: i64 = 86_400;

/// A shore receiver of this binary on loopback, in `dir`, knowing vessel `VESSEL` with `key`.
/// Returns its address and the vessel's token.
pub fn start_shore(
    dir: &Path,
    key: &SecretKey,
    now: i64,
) -> Result<(std::net::SocketAddr, String), String> {
    let (ca, chain, tls_key) =
        wire::net::generate_server_cert(&["127.0.0.1".into()], now).map_err(|e| e.to_string())?;
    for (name, body) in [("ca.pem", &ca), ("cert.pem", &chain), ("key.pem", &tls_key)] {
        base::fsutil::write_private(&dir.join(name), body.as_bytes()).map_err(|e| e.to_string())?;
    }
    let cfg_path = dir.join("shore.toml");
    std::fs::write(
        &cfg_path,
        "version = 1\n[shore]\nstate_dir = \"shore\"\nlisten = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
    )
    .map_err(|e| e.to_string())?;
    let cfg = shore::ShoreConfig::load(&cfg_path)?;
    let db = cfg.open().map_err(|e| e.to_string())?;
    // A token as 'shore vessel add' makes them: the same length on the wire.
    let token = shore::new_token().map_err(|e| e.to_string())?;
    let pubkey = format!("vessel-sync-ed25519 {} {VESSEL}", {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(key.key.verifying_key().as_bytes())
    });
    db.add_vessel(VESSEL, &shore::token_hash(&token), &pubkey, &key.id, 0)
        .map_err(|e| e.to_string())?;
    drop(db);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = shore::serve::run(cfg, Arc::new(base::clock::SystemClock), move |a| {
            let _ = tx.send(a);
        });
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .map_err(|_| "the shore receiver did not start".to_string())?;
    Ok((addr, token))
}

/// The `[uplink]` lines of `config` that shape the link's cost (none: the defaults).
fn settings_of(config: Option<&Path>) -> Result<String, String> {
    let Some(path) = config else {
        return Ok(String::new());
    };
    let cfg = Config::load(path).map_err(|e| e.to_string())?;
    let u = &cfg.uplink;
    let mut s = format!(
        "interval = {}\nidle_interval = {}\nbatch_records = {}\n",
        u.interval, u.idle_interval, u.batch_records
    );
    if let Some(p) = u.price_per_mb {
        s.push_str(&format!("price_per_mb = {p}\n"));
    }
    if !u.currency.is_empty() {
        s.push_str(&format!("currency = {:?}\n", u.currency));
    }
    Ok(s)
}

/// A crew's progress: `n` completions by 30 seafarers in 10 courses of 5 activities.
fn crew_snapshot(n: u64, t0: i64) -> moodle::db::Snapshot {
    use moodle::db::{CourseRow, Fact, ModuleRow, Snapshot, UserRow};
    let mut s = Snapshot::default();
    for u in 0..30i64 {
        s.users.insert(
            100 + u,
            UserRow {
                username: format!("seafarer{u:02}"),
                idnumber: format!("SEAF-{:06}", 4711 + u),
            },
        );
    }
    for c in 0..10i64 {
        s.courses.insert(
            c,
            CourseRow {
                shortname: format!("STCW-{c:02}"),
                idnumber: format!("STCW-{c:02}"),
            },
        );
        for a in 0..5i64 {
            s.modules.insert(
                c * 10 + a,
                ModuleRow {
                    course: c,
                    modname: "quiz".into(),
                    instance: c * 10 + a,
                    idnumber: format!("STCW-{c:02}-{a}"),
                    name: None,
                },
            );
        }
    }
    for i in 0..i64::try_from(n).unwrap_or(0) {
        s.facts.push(Fact {
            kind: wire::progress::RecordKind::ActivityCompletion,
            userid: 100 + i % 30,
            objid: (i / 30) % 10 * 10 + (i / 300) % 5,
            value: "1".into(),
            time: t0 + i * 97,
        });
    }
    s
}

struct Bench {
    /// Holds the run's files until the benchmark ends.
    _dir: tempfile::TempDir,
    uplink: Uplink,
    store: Store,
    cfg: Config,
}

impl Bench {
    fn cycle(&mut self, now: i64) -> Result<(Tally, i64), String> {
        let r = self
            .uplink
            .cycle(&mut self.store, now)
            .map_err(|e| e.to_string())?;
        if let Some(h) = r.held.as_deref() {
            return Err(format!("the exchange was held: {h}"));
        }
        Ok((r.link, r.next_attempt))
    }

    fn seed(&mut self, n: u64, t0: i64, now: i64) -> Result<(), String> {
        let snap = crew_snapshot(n, t0);
        vessel::capture::apply_snapshot(
            &mut self.store,
            &snap,
            VESSEL,
            self.cfg.capture.require,
            now,
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn setup(config: Option<&Path>, now: i64) -> Result<Bench, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let d = dir.path();
    let key = SecretKey::generate().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(d.join("keys")).map_err(|e| e.to_string())?;
    key.write_pair(&d.join("keys/vessel"), VESSEL)
        .map_err(|e| e.to_string())?;
    let ops = SecretKey::generate().map_err(|e| e.to_string())?;
    ops.write_pair(&d.join("keys/ops"), "ops")
        .map_err(|e| e.to_string())?;
    let (addr, token) = start_shore(d, &key, now)?;
    base::fsutil::write_private(&d.join("token"), token.as_bytes()).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(d.join("inbox")).map_err(|e| e.to_string())?;
    let agent = d.join("agent.toml");
    std::fs::write(
        &agent,
        format!(
            "version = 1\n[vessel]\nid = \"{VESSEL}\"\n[paths]\nstate_dir = \"state\"\ninbox = \"inbox\"\n\
             [keyring]\ntrusted = [\"keys/ops.pub\"]\n[uplink]\nmode = \"https\"\nurl = \"https://127.0.0.1:{}\"\n\
             token_file = \"token\"\nsigning_key = \"keys/vessel.key\"\nca_file = \"ca.pem\"\n{}",
            addr.port(),
            settings_of(config)?
        ),
    )
    .map_err(|e| e.to_string())?;
    let cfg = Config::load(&agent).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&cfg.paths.state_dir).map_err(|e| e.to_string())?;
    let store =
        Store::open(&cfg.paths.state_dir.join("journal.db"), VESSEL).map_err(|e| e.to_string())?;
    let uplink = Uplink::new(&cfg)
        .map_err(|e| e.to_string())?
        .ok_or("the bench's uplink is off")?;
    Ok(Bench {
        _dir: dir,
        uplink,
        store,
        cfg,
    })
}

fn row(name: &str, t: &Tally) -> serde_json::Value {
    json!({
        "scenario": name,
        "bytes_up": t.up,
        "bytes_down": t.down,
        "bytes": t.bytes(),
        "round_trips": t.round_trips,
        "connections": t.connections,
        "resumed": t.resumed > 0,
    })
}

/// `bench link [--config FILE]`.
pub fn run(config: Option<&Path>, now: i64) -> Result<(serde_json::Value, String), String> {
    let mut b = setup(config, now)?;
    let mut rows = Vec::new();
    let mut text = format!(
        "bench link: the agent's uplink against a shore on loopback ({}; idle_interval {} s, interval {} s)\n",
        if config.is_some() {
            "settings of --config"
        } else {
            "default settings"
        },
        b.cfg.uplink.idle_interval,
        b.cfg.uplink.interval
    );
    text.push_str("  scenario                     bytes up  down   total  round trips\n");
    let mut line = |name: &str, t: &Tally, rows: &mut Vec<serde_json::Value>| {
        text.push_str(&format!(
            "  {name:<27} {:>8} {:>5} {:>7}  {}{}\n",
            t.up,
            t.down,
            t.bytes(),
            t.round_trips,
            if t.resumed > 0 { " (resumed)" } else { "" }
        ));
        rows.push(row(name, t));
    };
    let (first, _) = b.cycle(now)?;
    line("empty poll, first", &first, &mut rows);
    let (poll, _) = b.cycle(now + 60)?;
    line("empty poll, resumed", &poll, &mut rows);
    b.seed(1, now - 3 * DAY, now + 120)?;
    let (one, _) = b.cycle(now + 120)?;
    line("1 record", &one, &mut rows);
    // 300 new records: a day of a 30-person crew.
    let before = b.store.outbox_summary().map_err(|e| e.to_string())?.records;
    b.seed(301, now - 3 * DAY, now + 180)?;
    let queued = b.store.outbox_summary().map_err(|e| e.to_string())?.records - before;
    let (day_batch, _) = b.cycle(now + 180)?;
    line(&format!("{queued} records"), &day_batch, &mut rows);
    // An idle day on the agent's own schedule.
    let start = now + 240;
    let (mut t, mut idle, mut exchanges) = (start, Tally::default(), 0u64);
    while t < start + DAY {
        let (spent, next) = b.cycle(t)?;
        idle = Tally {
            up: idle.up + spent.up,
            down: idle.down + spent.down,
            round_trips: idle.round_trips + spent.round_trips,
            connections: idle.connections + spent.connections,
            resumed: idle.resumed + spent.resumed,
        };
        exchanges += 1;
        t = next.max(t + 1);
    }
    text.push_str(&format!(
        "  idle day: {exchanges} check-ins, {} bytes ({:.1} KB), {} of them resumed\n",
        idle.bytes(),
        idle.bytes() as f64 / 1000.0,
        idle.resumed
    ));
    let price = b.cfg.uplink.price_per_mb;
    let cost = price.map(|p| idle.bytes() as f64 / 1e6 * p);
    if let (Some(p), Some(c)) = (price, cost) {
        text.push_str(&format!(
            "  at {p} {cur} per MB: {c:.3} {cur} a day, {:.2} {cur} a 30-day month\n",
            c * 30.0,
            cur = b.cfg.uplink.currency
        ));
    }
    text.push_str("  (TLS and HTTP bytes as the agent's socket counted them; TCP/IP headers, about 52 bytes a packet, come on top)\n");
    Ok((
        json!({
            "benchmark": "link",
            "interval_s": b.cfg.uplink.interval,
            "idle_interval_s": b.cfg.uplink.idle_interval,
            "scenarios": rows,
            "idle_day": {
                "check_ins": exchanges,
                "bytes": idle.bytes(),
                "round_trips": idle.round_trips,
                "resumed": idle.resumed,
                "price_per_mb": price,
                "currency": b.cfg.uplink.currency,
                "cost": cost,
            },
        }),
        text,
    ))
}
