//! The progress benchmarks: `vessel-sync bench wire` and `vessel-sync bench outbox`.
//!
//! `wire`: bytes on the wire per progress record, for batches of 100, 1,000 and 100,000
//! generated records, as this build sends them (the signed envelope: compact payload, manifest,
//! signature, tar, zstd) beside two baselines made from the same records: JSON lines at zstd
//! level 19, and a JSON array at gzip level 9. Then round trips per sync exchange, counted at a
//! proxy between a real HTTPS client and an in-process shore receiver: from cold (TCP, TLS 1.3,
//! request) and on the open connection.
//!
//! `outbox`: a throwaway PostgreSQL holding 100,000 activity completions: the first capture
//! (everything new), a second capture (nothing changed: the steady state), and the outbox's raw
//! enqueue rate for 300,000 records, each with the process's peak memory.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::bench::{peak_rss_mb, reset_peak_rss};
use crate::envelope::{Draft, Kind, SecretKey, Source, write_envelope};
use crate::progress::{Record, RecordKind, codec, record::format_id};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Records as a vessel produces them: learners working through STCW-style courses in
/// sessions (a few modules in order, minutes apart, a quiz grade and the course completion
/// after the last module; now and then an override back to incomplete), several learners'
/// sessions overlapping in the evening.
pub fn sample_records(n: u64) -> Vec<Record> {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let users = (n / 25).clamp(10, 5000);
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut start = 1_795_000_000i64;
    let rec = |kind, user: u64, c: u64, item: String, value: String, time| Record {
        kind,
        user: format!("SEAF-{:06}", 100_000 + user),
        course: format!("STCW-{c:02}"),
        item,
        user_legacy: String::new(),
        course_legacy: format!("LMS-{}", 4000 + c),
        item_legacy: String::new(),
        value,
        time,
    };
    while (out.len() as u64) < n {
        start += i64::try_from(rng.below(1800)).unwrap_or(0);
        let (user, c) = (rng.below(users), rng.below(12));
        let first = rng.below(8);
        let modules = 1 + rng.below(8 - first);
        let mut t = start;
        for m in first..first + modules {
            t += 120 + i64::try_from(rng.below(780)).unwrap_or(0);
            let value = if rng.below(20) == 0 { "0" } else { "1" };
            out.push(rec(
                RecordKind::ActivityCompletion,
                user,
                c,
                format!("STCW-{c:02}-M{m:02}"),
                value.into(),
                t,
            ));
            if m == 7 {
                t += 300 + i64::try_from(rng.below(600)).unwrap_or(0);
                let grade = format!("{}.{:05}", 50 + rng.below(51), rng.below(2) * 50_000);
                out.push(rec(
                    RecordKind::Grade,
                    user,
                    c,
                    format!("STCW-{c:02}-QUIZ"),
                    grade.clone(),
                    t,
                ));
                out.push(rec(RecordKind::Grade, user, c, String::new(), grade, t));
                out.push(rec(
                    RecordKind::CourseCompletion,
                    user,
                    c,
                    String::new(),
                    "complete".into(),
                    t,
                ));
            }
        }
    }
    out.truncate(usize::try_from(n).unwrap_or(0));
    out
}

/// The worst case for compression: every field drawn independently at random.
pub fn random_records(n: u64) -> Vec<Record> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let users = (n / 25).clamp(10, 5000);
    let mut t = 1_795_000_000i64;
    (0..n)
        .map(|_| {
            t += i64::try_from(rng.below(900)).unwrap_or(0);
            let c = rng.below(12);
            Record {
                kind: RecordKind::ActivityCompletion,
                user: format!("SEAF-{:06}", 100_000 + rng.below(users)),
                course: format!("STCW-{c:02}"),
                item: format!("STCW-{c:02}-M{:02}", rng.below(8)),
                user_legacy: String::new(),
                course_legacy: format!("LMS-{}", 4000 + c),
                item_legacy: String::new(),
                value: "1".into(),
                time: t,
            }
        })
        .collect()
}

/// A record as JSON-based sync tools send one: its id, the vessel, the keys, the value and an
/// ISO 8601 time (what `shore export` writes too).
fn json_record(r: &Record, vessel: &str) -> serde_json::Value {
    json!({
        "record_id": format_id(&r.id(vessel)),
        "vessel_id": vessel,
        "kind": r.kind.name(),
        "learner": r.user,
        "course": r.course,
        "activity": r.item,
        "course_legacy_id": r.course_legacy,
        "value": r.value,
        "time": crate::clock::format_time(r.time),
    })
}

fn envelope_bytes(
    records: &[Record],
    key: &SecretKey,
    dir: &std::path::Path,
) -> Result<u64, String> {
    let draft = Draft {
        kind: Kind::Progress,
        sender: "mv-bench".into(),
        recipient: crate::shore::SHORE.into(),
        sequence: 1,
        not_before: None,
        expires: None,
        commands: vec![],
        files: vec![(
            crate::shore::RECORDS_MEMBER.into(),
            Source::Bytes(codec::encode(records)),
        )],
        id: None,
    };
    let p = dir.join("batch.vsb");
    write_envelope(&draft, key, 1_795_000_000, &p).map_err(|e| e.to_string())?;
    Ok(std::fs::metadata(&p).map_err(|e| e.to_string())?.len())
}

/// `bench wire`.
pub fn wire() -> Result<(serde_json::Value, String), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let key = SecretKey::from_seed([3u8; 32]);
    let mut rows = Vec::new();
    let mut text = String::from(
        "bench wire: bytes on the wire per progress record\n  records   vessel-sync   JSON lines+zstd19   JSON+gzip9   vs gzip\n",
    );
    for (shape, n) in [
        ("sessions", 100u64),
        ("sessions", 1_000),
        ("sessions", 100_000),
        ("random", 1_000),
    ] {
        let recs = if shape == "sessions" {
            sample_records(n)
        } else {
            random_records(n)
        };
        let ours = envelope_bytes(&recs, &key, dir.path())?;
        let lines: Vec<u8> = recs
            .iter()
            .flat_map(|r| {
                let mut l = json_record(r, "mv-bench").to_string().into_bytes();
                l.push(b'\n');
                l
            })
            .collect();
        let zstd19 = zstd::encode_all(&lines[..], 19)
            .map_err(|e| e.to_string())?
            .len() as u64;
        let array = serde_json::to_vec(
            &recs
                .iter()
                .map(|r| json_record(r, "mv-bench"))
                .collect::<Vec<_>>(),
        )
        .map_err(|e| e.to_string())?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
        gz.write_all(&array).map_err(|e| e.to_string())?;
        let gzip9 = gz.finish().map_err(|e| e.to_string())?.len() as u64;
        let per = |b: u64| (b as f64 / n as f64 * 100.0).round() / 100.0;
        text.push_str(&format!(
            "  {n:>7}{}   {:>8.2} B     {:>10.2} B        {:>8.2} B   {:>5.1}x smaller\n",
            if shape == "random" {
                " (independent random fields: the worst case)"
            } else {
                ""
            },
            per(ours),
            per(zstd19),
            per(gzip9),
            gzip9 as f64 / ours as f64
        ));
        rows.push(json!({
            "records": n,
            "shape": shape,
            "vessel_sync_bytes": ours,
            "vessel_sync_bytes_per_record": per(ours),
            "json_lines_zstd19_bytes_per_record": per(zstd19),
            "json_gzip9_bytes_per_record": per(gzip9),
            "times_smaller_than_gzip": (gzip9 as f64 / ours as f64 * 10.0).round() / 10.0,
        }));
    }
    let (cold, warm) = round_trips(dir.path(), &key)?;
    text.push_str(&format!(
        "round trips per sync exchange (counted at a proxy): {cold} from cold (TCP + TLS 1.3 + request), {warm} on an open connection\n"
    ));
    Ok((
        json!({"benchmark": "wire", "batches": rows, "round_trips_cold": cold, "round_trips_open_connection": warm}),
        text,
    ))
}

fn round_trips(dir: &std::path::Path, vessel_key: &SecretKey) -> Result<(u64, u64), String> {
    use std::sync::atomic::Ordering;
    let (ca, chain, tls_key) =
        crate::net::generate_server_cert(&["127.0.0.1".into()]).map_err(|e| e.to_string())?;
    for (name, body) in [("ca.pem", &ca), ("cert.pem", &chain), ("key.pem", &tls_key)] {
        std::fs::write(dir.join(name), body).map_err(|e| e.to_string())?;
    }
    let cfg_path = dir.join("shore.toml");
    std::fs::write(
        &cfg_path,
        "version = 1\n[shore]\nstate_dir = \"shore\"\nlisten = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
    )
    .map_err(|e| e.to_string())?;
    let cfg = crate::shore::ShoreConfig::load(&cfg_path)?;
    let db = cfg.open()?;
    let token = "bench-token";
    let pubkey = format!("vessel-sync-ed25519 {} mv-bench", {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(vessel_key.key.verifying_key().as_bytes())
    });
    db.add_vessel(
        "mv-bench",
        &crate::shore::token_hash(token),
        &pubkey,
        &vessel_key.id,
        0,
    )
    .map_err(|e| e.to_string())?;
    drop(db);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = crate::shore::serve::run(cfg, Arc::new(crate::clock::SystemClock), move |a| {
            let _ = tx.send(a);
        });
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .map_err(|_| "the shore receiver did not start".to_string())?;
    let proxy = crate::faultproxy::Proxy::start(addr).map_err(|e| e.to_string())?;
    let client = crate::net::http_client(
        &crate::net::Trust {
            ca_file: Some(dir.join("ca.pem")),
            pins: vec![],
        },
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(30),
    )
    .map_err(|e| e.to_string())?;
    let recs = sample_records(1000);
    let mut counts = Vec::new();
    for seq in 1..=2u64 {
        let draft = Draft {
            kind: Kind::Progress,
            sender: "mv-bench".into(),
            recipient: crate::shore::SHORE.into(),
            sequence: seq,
            not_before: None,
            expires: None,
            commands: vec![],
            files: vec![(
                crate::shore::RECORDS_MEMBER.into(),
                Source::Bytes(codec::encode(&recs)),
            )],
            id: None,
        };
        let p = dir.join(format!("b{seq}.vsb"));
        write_envelope(&draft, vessel_key, 1_795_000_000, &p).map_err(|e| e.to_string())?;
        let body = std::fs::read(&p).map_err(|e| e.to_string())?;
        let before = proxy.state.round_trips.load(Ordering::SeqCst);
        let resp = client
            .post(format!("https://127.0.0.1:{}/v1/sync", proxy.addr.port()))
            .header("authorization", format!("Bearer {token}"))
            .header("x-vessel-id", "mv-bench")
            .body(body)
            .send()
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let _ = resp.bytes();
        if !status.is_success() {
            return Err(format!("shore answered {status}"));
        }
        counts.push(proxy.state.round_trips.load(Ordering::SeqCst) - before);
    }
    Ok((counts[0], counts[1]))
}

/// `bench outbox`.
pub fn outbox() -> Result<(serde_json::Value, String), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut text = String::from("bench outbox\n");
    let mut out = json!({"benchmark": "outbox"});
    match crate::pgtemp::TempPg::start() {
        Err(e) => {
            text.push_str(&format!("  capture: skipped ({e})\n"));
            out["capture_skipped"] = e.into();
        }
        Ok(pg) => {
            pg.create_moodle("bench")?;
            pg.psql(
                "bench",
                "INSERT INTO mdl_user (id, username, idnumber) SELECT g, 'user' || g, 'SEAF-' || (100000 + g) FROM generate_series(1, 500) g;
                 INSERT INTO mdl_course (id, shortname, idnumber) SELECT g, 'C-' || g, 'COURSE-' || g FROM generate_series(1, 20) g;
                 INSERT INTO mdl_page (id, course, name) SELECT g, 1 + (g - 1) / 10, 'Page ' || g FROM generate_series(1, 200) g;
                 INSERT INTO mdl_course_modules (id, course, module, instance, idnumber) SELECT g, 1 + (g - 1) / 10, 15, g, 'ACT-' || g FROM generate_series(1, 200) g;
                 INSERT INTO mdl_course_modules_completion (coursemoduleid, userid, completionstate, timemodified)
                   SELECT 1 + (g % 200), 1 + (g / 200), 1, 1795000000 + g FROM generate_series(0, 99999) g;",
            )?;
            let mut store = crate::store::Store::open(&dir.path().join("journal.db"), "mv-bench")
                .map_err(|e| e.to_string())?;
            let mut db = crate::moodle::db::Database::connect(&pg.settings("bench"))
                .map_err(|e| e.to_string())?;
            for (label, key) in [
                ("first capture (100,000 rows, all new)", "first"),
                ("second capture (100,000 rows, none changed)", "steady"),
            ] {
                reset_peak_rss();
                let t = Instant::now();
                let snap =
                    crate::moodle::db::Source::snapshot(&mut db).map_err(|e| e.to_string())?;
                let read = t.elapsed().as_secs_f64();
                let r = crate::progress::capture::apply_snapshot(
                    &mut store,
                    &snap,
                    "mv-bench",
                    Default::default(),
                    1_795_500_000,
                )
                .map_err(|e| e.to_string())?;
                let total = t.elapsed().as_secs_f64();
                drop(snap);
                let rss = peak_rss_mb().unwrap_or(0.0);
                text.push_str(&format!(
                    "  {label}: {total:.3} s (read {read:.3} s, diff+queue {:.3} s), {} queued, peak RSS {rss:.1} MB\n",
                    total - read,
                    r.queued
                ));
                out[key] = json!({"seconds": (total * 1000.0).round() / 1000.0, "read_seconds": (read * 1000.0).round() / 1000.0, "queued": r.queued, "peak_rss_mb": (rss * 10.0).round() / 10.0});
            }
        }
    }
    // Raw enqueue rate.
    let mut store = crate::store::Store::open(&dir.path().join("enqueue.db"), "mv-bench")
        .map_err(|e| e.to_string())?;
    // Records are made as they are queued (ids computed too), as a capture does.
    let n = 300_000u64;
    let recs = sample_records(1000);
    reset_peak_rss();
    let t = Instant::now();
    store
        .write(|tx| {
            let mut chunk = Vec::with_capacity(32_768);
            for i in 0..n {
                let mut r = recs[(i % 1000) as usize].clone();
                r.time += i64::try_from(i / 1000).unwrap_or(0);
                let id = r.id("mv-bench");
                chunk.push((r, id));
                if chunk.len() == 32_768 || i + 1 == n {
                    tx.enqueue_many(&chunk, 1_795_500_000)?;
                    chunk.clear();
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    let rate = n as f64 / secs;
    let rss = peak_rss_mb().unwrap_or(0.0);
    text.push_str(&format!(
        "  outbox enqueue: {n} records in {secs:.3} s = {rate:.0} records/s, peak RSS {rss:.1} MB\n"
    ));
    out["enqueue"] = json!({"records": n, "seconds": (secs * 1000.0).round() / 1000.0, "records_per_s": rate.round(), "peak_rss_mb": (rss * 10.0).round() / 10.0});
    Ok((out, text))
}
