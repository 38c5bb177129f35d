//! Progress over the link: a real HTTPS shore receiver on loopback, the vessel's uplink, and a
//! fault-injecting proxy between them. At the end shore holds every captured record exactly
//! once and the vessel's outbox is empty, whatever the link, a crash or a clock did.

use crate::support::shore::{Shore, drain, linked_vessel, post_batch, seed, sync, sync_env};
use crate::support::{VESSEL, Vessel};
use testkit::faultproxy::{Fault, Proxy};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn every_record_reaches_shore_once_through_a_faulty_link() {
    let mut shore = Shore::new();
    shore.start();
    let proxy = Proxy::start(shore.addr()).unwrap();
    let v = linked_vessel(
        &shore,
        &format!("https://127.0.0.1:{}", proxy.addr.port()),
        "batch_records = 400\n",
    );
    let mut total = seed(&v, 1000, 0);
    assert_eq!(total, 1000);

    // A slow, narrow link: still goes through.
    proxy
        .state
        .latency_ms
        .store(20, std::sync::atomic::Ordering::SeqCst);
    proxy
        .state
        .bandwidth
        .store(200_000, std::sync::atomic::Ordering::SeqCst);
    let first = json(&sync(&v));
    assert!(first["acked_seq"].as_u64().unwrap() >= 1, "{first}");
    proxy
        .state
        .latency_ms
        .store(0, std::sync::atomic::Ordering::SeqCst);
    proxy
        .state
        .bandwidth
        .store(0, std::sync::atomic::Ordering::SeqCst);

    total += seed(&v, 1000, 7);
    // The connection cut in the middle of an upload: nothing acknowledged, retried later.
    proxy.set_fault(Fault::CutUpload(1500));
    let cut = sync(&v);
    assert_eq!(
        cut.status.code(),
        Some(75),
        "held, not failed: {}",
        String::from_utf8_lossy(&cut.stdout)
    );
    assert!(
        json(&cut)["held"]
            .as_str()
            .unwrap()
            .contains("cannot reach shore"),
        "{}",
        json(&cut)
    );
    // Cut after shore stored the batch, before the vessel read the reply: the retry sends the
    // same envelope, shore recognises it and acknowledges without storing anything twice.
    let before = shore.counts();
    proxy.set_fault(Fault::CutReply(1200));
    let _ = sync(&v);
    let stored = shore.counts();
    assert!(
        stored.0 > before.0,
        "shore stored the batch whose reply was lost"
    );
    assert!(
        v.store().outbox_summary().unwrap().batches >= 1,
        "the vessel still waits for its ack"
    );
    // A blackhole: the request times out (uplink.timeout = 3s) and is retried later.
    proxy.set_fault(Fault::Blackhole);
    let hole = sync(&v);
    assert_eq!(hole.status.code(), Some(75));
    proxy.set_fault(Fault::None);

    // The vessel's clock set back a day between captures: nothing lost, nothing twice.
    total += seed(&v, 300, 99);
    let back = sync_env(&v, &[("VESSEL_SYNC_CLOCK_OFFSET", "-86400")]);
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stdout)
    );
    drain(&v, 20);

    let (n, distinct) = shore.counts();
    assert_eq!(
        (n, distinct),
        (total, total),
        "shore holds every record exactly once"
    );
    let s = v.store().outbox_summary().unwrap();
    assert_eq!((s.records, s.batches), (0, 0), "vessel outbox empty");
    assert!(proxy.state.faults.load(std::sync::atomic::Ordering::SeqCst) >= 3);
}

#[test]
fn agent_and_shore_killed_anywhere_in_batching_upload_and_ack_lose_nothing() {
    let mut shore = Shore::new();
    shore.start();
    let v = linked_vessel(
        &shore,
        &format!("https://127.0.0.1:{}", shore.port),
        "batch_records = 150\n",
    );
    let mut total = 0;
    for (i, point) in [
        "batch.before-commit",
        "batch.after-commit",
        "sync.after-ack",
        "shore.before-commit",
        "shore.after-commit",
    ]
    .iter()
    .enumerate()
    {
        total += seed(&v, 400, 1000 * (i as i64 + 1));
        let point = *point;
        if point.starts_with("shore.") {
            shore.stop();
            shore.start_env(&[("VESSEL_SYNC_FAILPOINT", point)]);
            let out = sync(&v);
            assert_eq!(
                out.status.code(),
                Some(75),
                "{point}: shore died, the vessel holds: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            // The shore process is gone (SIGKILL at the failpoint).
            let d = shore.daemon.as_mut().unwrap();
            let st = d.0.wait().unwrap();
            assert!(!st.success(), "{point}: shore was killed");
            shore.start();
        } else {
            let out = sync_env(&v, &[("VESSEL_SYNC_FAILPOINT", point)]);
            assert_eq!(
                out.status.code(),
                None,
                "{point}: the agent was killed by SIGKILL"
            );
        }
        drain(&v, 20);
        let (n, distinct) = shore.counts();
        assert_eq!((n, distinct), (total, total), "after a kill at {point}");
    }
    assert_eq!(v.store().outbox_summary().unwrap().records, 0);
}

#[test]
fn shore_refuses_altered_foreign_and_replayed_batches_and_stores_nothing_from_them() {
    let mut shore = Shore::new();
    shore.start();
    let url = format!("https://127.0.0.1:{}", shore.port);
    let v = linked_vessel(&shore, &url, "batch_records = 100\n");
    seed(&v, 100, 0);
    // Build batch 1 without sending it.
    {
        let mut store = vessel::store::Store::open(&v.path("state/journal.db"), VESSEL).unwrap();
        let key = wire::envelope::SecretKey::load(&v.path("keys/vessel.key")).unwrap();
        vessel::uplink::build_batches(
            &mut store,
            VESSEL,
            &key,
            100,
            1,
            &v.path("state"),
            1_795_000_000,
        )
        .unwrap();
    }
    let batch = v.store().pending_batch().unwrap().unwrap().envelope;
    let post = |body: Vec<u8>| post_batch(&shore, &v, body);
    // Altered in transit: every single flipped byte is refused.
    for at in [20, batch.len() / 2, batch.len() - 10] {
        let mut bad = batch.clone();
        bad[at] ^= 0x40;
        let (status, body) = post(bad);
        assert_eq!(status, 422, "flip at {at}: {body}");
    }
    // Signed by a key shore does not know for this vessel.
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue = wire::envelope::SecretKey::from_seed([66u8; 32]);
    let draft = wire::envelope::Draft {
        kind: wire::envelope::Kind::Progress,
        sender: VESSEL.into(),
        recipient: "shore".into(),
        sequence: 1,
        not_before: None,
        expires: None,
        commands: vec![],
        files: vec![(
            "records.bin".into(),
            wire::envelope::Source::Bytes(wire::progress::codec::encode(
                &v.store().outbox_records().unwrap(),
            )),
        )],
        id: None,
    };
    let f = rogue_dir.path().join("rogue.vsb");
    wire::envelope::write_envelope(&draft, &rogue, 1_795_000_000, &f).unwrap();
    let (status, body) = post(std::fs::read(&f).unwrap());
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("unknown_key")),
        "{body}"
    );
    assert_eq!(
        shore.counts(),
        (0, 0),
        "nothing stored from refused batches"
    );

    // The genuine batch, twice: stored once, then recognised.
    let (status, body) = post(batch.clone());
    assert_eq!(
        (status, body["result"].as_str(), body["new"].as_u64()),
        (200, Some("stored"), Some(100)),
        "{body}"
    );
    let (status, body) = post(batch.clone());
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("duplicate")),
        "{body}"
    );
    // Replayed: the same sequence with other content (a stale copy of the vessel's state).
    let mut other = draft.clone();
    other.files = vec![(
        "records.bin".into(),
        wire::envelope::Source::Bytes(wire::progress::codec::encode(
            &v.store().outbox_records().unwrap()[..10],
        )),
    )];
    let key = wire::envelope::SecretKey::load(&v.path("keys/vessel.key")).unwrap();
    wire::envelope::write_envelope(&other, &key, 1_795_000_100, &f).unwrap();
    let (status, body) = post(std::fs::read(&f).unwrap());
    assert_eq!(
        (status, body["error"].as_str(), body["acked_seq"].as_u64()),
        (409, Some("replayed"), Some(1)),
        "{body}"
    );
    assert_eq!(shore.counts(), (100, 100));
    let status_out = shore.run(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&status_out.stdout).unwrap();
    let codes: Vec<&str> = st["recent_refusals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"unknown_key") && codes.contains(&"replayed"),
        "{st}"
    );
}

#[test]
fn files_mode_goes_home_by_carrier_and_acks_come_back_as_bundles() {
    let shore = Shore::new();
    let v = Vessel::new();
    wire::envelope::SecretKey::from_seed([5u8; 32])
        .write_pair(&v.path("keys/vessel"), VESSEL)
        .unwrap();
    shore.register(&v);
    crate::progress::append(
        &v,
        "[uplink]\nmode = \"files\"\nsigning_key = \"keys/vessel.key\"\nbatch_records = 100\n",
    );
    seed(&v, 250, 0);
    let out = sync(&v);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outbound = v.path("state/outbound");
    let mut files: Vec<_> = std::fs::read_dir(&outbound)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "250 records in batches of 100");
    // The carrier delivers the third batch first: shore stores it but acknowledges nothing.
    let carrier = shore.path("incoming");
    std::fs::create_dir_all(&carrier).unwrap();
    std::fs::copy(&files[2], carrier.join(files[2].file_name().unwrap())).unwrap();
    let acks = shore.path("acks");
    let out = shore.run(&[
        "ingest",
        carrier.to_str().unwrap(),
        "--out",
        acks.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        shore.db().vessel(VESSEL).unwrap().unwrap().acked_seq,
        0,
        "no ack past a gap"
    );
    for f in &files[..2] {
        std::fs::copy(f, carrier.join(f.file_name().unwrap())).unwrap();
    }
    let out = shore.run(&[
        "ingest",
        carrier.to_str().unwrap(),
        "--out",
        acks.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(shore.counts(), (250, 250));
    // The ack bundles travel back through the vessel's inbox (the ack command of the spine).
    for e in std::fs::read_dir(&acks).unwrap().flatten() {
        v.drop_in(&e.path(), &e.file_name().to_string_lossy());
    }
    v.once();
    let s = v.store().outbox_summary().unwrap();
    assert_eq!((s.records, s.batches, s.acked_seq), (0, 0, 3), "{s:?}");
}

#[test]
fn bundles_waiting_ashore_are_fetched_with_resumable_range_requests_and_applied() {
    let mut shore = Shore::new();
    shore.start();
    let v = linked_vessel(&shore, &format!("https://127.0.0.1:{}", shore.port), "");
    // A set_mapping bundle signed by the operator, queued ashore for this vessel.
    crate::support::shore::push_mapping_bundle(&shore, &v);
    // Half of it already arrived in an earlier, interrupted cycle.
    let data = std::fs::read(shore.path("m.vsb")).unwrap();
    std::fs::write(v.inbox().join(".dl-1.part"), &data[..data.len() / 2]).unwrap();
    let out = v.once();
    assert!(out.contains("set_mapping"), "{out}");
    assert_eq!(
        v.store().mappings().unwrap().len(),
        1,
        "the fetched bundle was applied"
    );
    // Offered once: the cursor moved past it.
    let again = json(&sync(&v));
    assert_eq!(again["downloaded"], 0, "{again}");
}

#[test]
fn a_revoked_vessel_is_told_so_and_status_says_why() {
    let mut shore = Shore::new();
    shore.start();
    let v = linked_vessel(&shore, &format!("https://127.0.0.1:{}", shore.port), "");
    seed(&v, 10, 0);
    let out = shore.run(&["vessel", "revoke", VESSEL]);
    assert!(out.status.success());
    let r = json(&sync(&v));
    assert!(r["held"].as_str().unwrap().contains("HTTP 403"), "{r}");
    let st = v.run(&["status", "--config", v.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains("403") && text.contains("10 record"), "{text}");
    assert_eq!(shore.counts(), (0, 0));
}

#[test]
fn a_vessel_whose_acknowledgements_came_by_bundle_continues_its_stream_at_shore() {
    // Shore acknowledged batches up to 41 by an ack bundle (file mode), then the vessel got an
    // IP link: its next batch is 42, and this shore must not wait for 1..41 for ever.
    let mut shore = Shore::new();
    shore.start();
    let v = linked_vessel(&shore, &format!("https://127.0.0.1:{}", shore.port), "");
    v.drop_in(&v.bundle("ack.vsb", crate::support::ack(1, 41)), "ack.vsb");
    v.once();
    seed(&v, 50, 0);
    let r = json(&sync(&v));
    assert_eq!(
        (r["acked_seq"].as_u64(), r["exchanges"].as_u64()),
        (Some(42), Some(1)),
        "{r}"
    );
    assert_eq!(shore.counts(), (50, 50));
    assert_eq!(v.store().outbox_summary().unwrap().records, 0);
}

#[test]
fn a_pinned_certificate_is_trusted_without_a_ca_and_any_other_is_refused() {
    let mut shore = Shore::new();
    shore.start();
    let cert = wire::net::load_certs(&shore.path("cert.pem")).unwrap();
    let pin = wire::net::cert_pin(&cert[0]);
    for (pin, works) in [(pin.clone(), true), ("ab".repeat(32), false)] {
        let v = Vessel::new();
        wire::envelope::SecretKey::from_seed([5u8; 32])
            .write_pair(&v.path("keys/vessel"), VESSEL)
            .unwrap();
        shore.register(&v);
        crate::progress::append(
            &v,
            &format!(
                "[uplink]\nmode = \"https\"\nurl = \"https://127.0.0.1:{}\"\ntoken_file = \"token\"\nsigning_key = \"keys/vessel.key\"\npin_sha256 = [\"{pin}\"]\ntimeout = \"3s\"\n",
                shore.port
            ),
        );
        seed(&v, 20, 0);
        let r = json(&sync(&v));
        if works {
            assert_eq!(r["acked_seq"], 1, "{r}");
        } else {
            assert!(
                r["held"]
                    .as_str()
                    .unwrap()
                    .contains("matches none of [uplink] pin_sha256"),
                "{r}"
            );
        }
    }
}

#[test]
fn when_the_byte_budget_is_tight_progress_goes_first_and_bundles_wait() {
    let mut shore = Shore::new();
    shore.start();
    let v = linked_vessel(
        &shore,
        &format!("https://127.0.0.1:{}", shore.port),
        "daily_budget = \"300KB\"\n",
    );
    // A 400 KB bundle waits ashore (random bytes: it does not compress).
    let mut blob = vec![0u8; 400_000];
    let mut x: u64 = 7;
    for b in blob.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let big = v.bundle(
        "big.vsb",
        crate::support::draft(
            VESSEL,
            1,
            vec![],
            vec![("files/blob.bin", wire::envelope::Source::Bytes(blob))],
        ),
    );
    std::fs::rename(&big, shore.path("big.vsb")).unwrap();
    assert!(
        shore
            .run(&["push", shore.path("big.vsb").to_str().unwrap()])
            .status
            .success()
    );
    seed(&v, 500, 0);
    let r = json(&sync(&v));
    assert_eq!(
        v.store().outbox_summary().unwrap().records,
        0,
        "progress went: {r}"
    );
    assert_eq!(r["downloaded"], 0, "{r}");
    assert!(
        r["held"].as_str().unwrap().contains("kept for progress"),
        "{r}"
    );
    assert!(v.inbox_names().is_empty(), "the bundle waits ashore");
    let st = v.run(&["status", "--config", v.config.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&st.stdout).contains("of 300000 bytes"),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
}

#[test]
fn shore_exports_what_it_received_as_formula_safe_csv() {
    let mut shore = Shore::new();
    shore.start();
    let v = linked_vessel(&shore, &format!("https://127.0.0.1:{}", shore.port), "");
    // A learner key that a spreadsheet would run as a formula.
    {
        std::fs::create_dir_all(v.path("state")).unwrap();
        let mut store = vessel::store::Store::open(&v.path("state/journal.db"), VESSEL).unwrap();
        let mut snap = crate::support::shore::snapshot(30, 0);
        snap.users.get_mut(&100).unwrap().idnumber = "=HYPERLINK(\"http://x\")".into();
        vessel::capture::apply_snapshot(
            &mut store,
            &snap,
            VESSEL,
            Default::default(),
            1_795_000_000,
        )
        .unwrap();
    }
    drain(&v, 3);
    let out = shore.path("export.csv");
    let r = shore.run(&[
        "export",
        "--since",
        "2020-01-01T00:00:00Z",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 30);
    assert!(
        rows.iter().any(|r| &r[3] == "'=HYPERLINK(\"http://x\")"),
        "{text}"
    );
    assert!(
        rows.iter()
            .all(|r| r[0] == *VESSEL && r[1].len() == 36 && r[10].ends_with('Z'))
    );
    // Nothing received after now.
    let r = shore.run(&[
        "export",
        "--since",
        "2099-01-01T00:00:00Z",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().lines().count(),
        1,
        "header only"
    );
    // Without --since each record goes once across runs: all of them, then none; --since
    // exports them again.
    let rows_of = |args: &[&str]| -> usize {
        let mut full = vec!["export", "--out", out.to_str().unwrap()];
        full.extend_from_slice(args);
        let r = shore.run(&full);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        std::fs::read_to_string(&out).unwrap().lines().count() - 1
    };
    assert_eq!(rows_of(&[]), 30, "the first run exports every record");
    assert_eq!(rows_of(&[]), 0, "the next run exports none twice");
    assert_eq!(rows_of(&["--since", "0"]), 30, "--since exports again");
    assert_eq!(rows_of(&[]), 0, "and does not move the cursor back");
}

#[test]
fn a_vessel_tells_shore_once_how_each_command_ended_and_sends_nothing_more_while_nothing_changes() {
    let mut shore = Shore::new();
    shore.start();
    let v = linked_vessel(&shore, &format!("https://127.0.0.1:{}", shore.port), "");
    let bundle = v.bundle(
        "m.vsb",
        crate::support::mapping(1, "kind,legacy_id,moodle_key\ncourse,LEG-1,SAFETY-101\n"),
    );
    let ops = wire::envelope::PublicKey::load(&v.path("keys/ops.pub")).unwrap();
    let id = wire::envelope::open(
        &bundle,
        &wire::envelope::Keyring::new(vec![ops]),
        &wire::envelope::Limits::default(),
    )
    .unwrap()
    .manifest
    .id;
    v.drop_in(&bundle, "m.vsb");
    v.once();
    assert_eq!(v.store().mappings().unwrap().len(), 1);
    // Nothing was captured: the report alone is reason for a batch with no records.
    sync(&v);
    let db = shore.db();
    let reported = db
        .reported(VESSEL, &id)
        .unwrap()
        .expect("shore holds the vessel's report of the command");
    assert_eq!(reported.state, "done", "{reported:?}");
    let acked = db.vessel(VESSEL).unwrap().unwrap().acked_seq;
    assert!(acked >= 1);
    // Told once: further passes with nothing new send no batch.
    v.once();
    sync(&v);
    assert_eq!(
        shore.db().vessel(VESSEL).unwrap().unwrap().acked_seq,
        acked,
        "no batch for nothing"
    );
}

/// `agent --once` applies the bundles its sync fetched in the same run: a download is checked
/// against its digest and renamed into place whole, so it does not wait for the inbox's settle
/// time (an hour here) as a file copied in by hand does (before, a second run was needed).
#[test]
fn agent_once_applies_what_its_sync_fetched_in_the_same_run() {
    let mut shore = Shore::new();
    shore.start();
    let v = crate::support::shore::linked_vessel_with(
        &shore,
        &format!("https://127.0.0.1:{}", shore.port),
        "",
        crate::support::Options {
            settle: "1h",
            ..Default::default()
        },
    );
    crate::support::shore::push_mapping_bundle(&shore, &v);
    let out = v.once();
    assert!(out.contains("set_mapping"), "{out}");
    assert_eq!(
        v.store().mappings().unwrap().len(),
        1,
        "applied in the same run"
    );
}
