//! Law 5 (only trusted orders) and law 6 (bounded): every kind of bad input is quarantined with
//! its own reason, the agent keeps going, and the next good bundle is applied.

use wire::envelope::Source;

use crate::support::*;

#[test]
fn each_bad_input_is_quarantined_with_its_own_reason_and_good_bundles_still_apply() {
    let v = Vessel::with(Options {
        extra: "[limits]\nmax_bundle_bytes = \"8MiB\"\n",
        ..Options::default()
    });
    let t = now();
    // The good first bundle opens the stream at sequence 1.
    let first = v.bundle("first.vsb", ack(1, 1));
    v.drop_in(&first, "00-first.vsb");

    // A valid sequence-2 bundle whose members the attacks below reuse.
    let csv = "kind,legacy_id,moodle_key,course\ncourse,L-1,ERM-110,\n";
    let base = v.bundle("base.vsb", mapping(2, csv));
    let (man, sig) = signed_head(&base);
    let payload = csv.as_bytes();
    let with = |extra: Vec<Raw>| {
        let mut m = vec![
            Raw::file(&man.name, &man.data),
            Raw::file(&sig.name, &sig.data),
        ];
        m.extend(extra);
        m
    };
    let good_member = || Raw::file(b"files/mapping.csv", payload);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();

    let good_bytes = std::fs::read(&base).unwrap();
    cases.push((
        "10-truncated.vsb",
        good_bytes[..good_bytes.len() / 2].to_vec(),
        "truncated",
    ));
    cases.push((
        "11-not-zstd.vsb",
        b"this is just a text file someone saved in the inbox\n".to_vec(),
        "not_zstd",
    ));
    cases.push((
        "12-not-tar.vsb",
        zstd::encode_all(&b"hello, not a tar archive at all"[..], 3).unwrap(),
        "not_tar",
    ));
    cases.push((
        "13-manifest-not-first.vsb",
        craft(
            &[
                good_member(),
                Raw::file(&man.name, &man.data),
                Raw::file(&sig.name, &sig.data),
            ],
            b"",
        ),
        "manifest_not_first",
    ));
    let mut forged = man.data.clone();
    let pos = forged
        .windows(12)
        .position(|w| w == b"\"sequence\": ")
        .unwrap()
        + 12;
    forged[pos] = b'9';
    cases.push((
        "14-bad-signature.vsb",
        craft(
            &[
                Raw::file(&man.name, &forged),
                Raw::file(&sig.name, &sig.data),
                good_member(),
            ],
            b"",
        ),
        "bad_signature",
    ));
    let rogue = v.bundle_with("rogue.vsb", mapping(2, csv), &v.rogue);
    cases.push((
        "15-unknown-key.vsb",
        std::fs::read(rogue).unwrap(),
        "unknown_key",
    ));
    let elsewhere = v.bundle(
        "elsewhere.vsb",
        draft(
            "mv-other",
            1,
            vec![cmd("ack", "", serde_json::json!({"acked_seq": 3}), &[])],
            vec![],
        ),
    );
    cases.push((
        "16-wrong-vessel.vsb",
        std::fs::read(elsewhere).unwrap(),
        "wrong_vessel",
    ));
    let replay = v.bundle("replay.vsb", ack(1, 99));
    cases.push(("17-replay.vsb", std::fs::read(replay).unwrap(), "replay"));
    let mut d = ack(2, 5);
    d.expires = Some(t - 86_400);
    cases.push((
        "18-expired.vsb",
        std::fs::read(v.bundle("expired.vsb", d)).unwrap(),
        "expired",
    ));
    let mut d = ack(2, 5);
    d.not_before = Some(t + 86_400);
    cases.push((
        "19-not-yet-valid.vsb",
        std::fs::read(v.bundle("early.vsb", d)).unwrap(),
        "not_yet_valid",
    ));
    cases.push((
        "20-unlisted.vsb",
        craft(
            &with(vec![
                good_member(),
                Raw::file(b"files/extra.sh", b"rm -rf /\n"),
            ]),
            b"",
        ),
        "unlisted_member",
    ));
    let mut longer = payload.to_vec();
    longer.push(b'\n');
    cases.push((
        "21-size-mismatch.vsb",
        craft(&with(vec![Raw::file(b"files/mapping.csv", &longer)]), b""),
        "size_mismatch",
    ));
    let mut altered = payload.to_vec();
    *altered.last_mut().unwrap() = b'X';
    cases.push((
        "22-digest-mismatch.vsb",
        craft(&with(vec![Raw::file(b"files/mapping.csv", &altered)]), b""),
        "digest_mismatch",
    ));
    cases.push((
        "23-traversal.vsb",
        craft(
            &with(vec![Raw::file(b"files/../../etc/cron.d/evil", payload)]),
            b"",
        ),
        "path_traversal",
    ));
    cases.push((
        "24-absolute.vsb",
        craft(&with(vec![Raw::file(b"/etc/cron.d/evil", payload)]), b""),
        "absolute_path",
    ));
    let link = |kind: u8| Raw {
        name: b"files/mapping.csv".to_vec(),
        kind,
        link: b"/etc/shadow".to_vec(),
        data: vec![],
        size: None,
    };
    cases.push((
        "25-symlink.vsb",
        craft(&with(vec![link(b'2')]), b""),
        "symlink",
    ));
    cases.push((
        "26-hardlink.vsb",
        craft(&with(vec![link(b'1')]), b""),
        "hardlink",
    ));
    cases.push((
        "27-device.vsb",
        craft(&with(vec![link(b'3')]), b""),
        "device",
    ));
    // A bomb the manifest admits to, and one it hides: 64 MiB of zeros after the end marker.
    let big = v.bundle(
        "big.vsb",
        draft(
            VESSEL,
            2,
            vec![],
            vec![("files/zeros.bin", Source::Bytes(vec![0u8; 20 << 20]))],
        ),
    );
    cases.push((
        "28-bomb-declared.vsb",
        std::fs::read(big).unwrap(),
        "too_large",
    ));
    cases.push((
        "29-bomb-hidden.vsb",
        craft(&with(vec![good_member()]), &vec![0u8; 64 << 20]),
        "too_large",
    ));
    cases.push(("30-empty.vsb", Vec::new(), "empty"));
    for (name, bytes, _) in &cases {
        std::fs::write(v.inbox().join(name), bytes).unwrap();
    }
    // Not files at all: a symlink to a good bundle and a FIFO (opening it would block for ever).
    std::os::unix::fs::symlink(&base, v.inbox().join("31-symlink.vsb")).unwrap();
    let fifo = std::ffi::CString::new(v.inbox().join("32-fifo.vsb").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    cases.push(("31-symlink.vsb", vec![], "not_a_file"));
    cases.push(("32-fifo.vsb", vec![], "not_a_file"));
    assert!(
        std::fs::metadata(v.inbox().join("29-bomb-hidden.vsb"))
            .unwrap()
            .len()
            < 100_000,
        "the hidden bomb is small on disk"
    );

    // The next good bundle: valid, with an unknown command type and a mapping CSV with bad rows
    // among good commands; then one more good bundle.
    let bad_csv = "kind,legacy_id,moodle_key,course\ncourse,L-1,ERM-110,\ncours,L-2,FIRE-201,\nactivity,L-3,quiz-1,\ncourse,L-1,SAFETY-101,\n";
    let good = draft(
        VESSEL,
        2,
        vec![
            cmd("ack", "c-ack", serde_json::json!({"acked_seq": 5}), &[]),
            cmd("reboot_ship", "c-unknown", serde_json::json!({}), &[]),
            cmd(
                "set_mapping",
                "c-badrows",
                serde_json::json!({}),
                &["files/bad.csv"],
            ),
            cmd(
                "set_mapping",
                "c-goodrows",
                serde_json::json!({}),
                &["files/mapping.csv"],
            ),
        ],
        vec![
            ("files/bad.csv", Source::Bytes(bad_csv.into())),
            ("files/mapping.csv", Source::Bytes(csv.into())),
        ],
    );
    v.drop_in(&v.bundle("good.vsb", good), "zz-good.vsb");
    v.drop_in(&v.bundle("final.vsb", ack(3, 9)), "zz3-final.vsb");

    let out = v.once();
    for (name, _, code) in &cases {
        let reason = v
            .reason(name)
            .unwrap_or_else(|| panic!("{name} was not quarantined:\n{out}"));
        assert!(
            reason.contains(&format!("Code:     {code}\n")),
            "{name}: expected {code}, got:\n{reason}"
        );
        assert!(
            v.quarantine().join(name).exists(),
            "{name} itself is kept in quarantine"
        );
    }
    assert_eq!(
        v.inbox_names(),
        Vec::<String>::new(),
        "nothing left in the inbox:\n{out}"
    );
    let rejected = v.audit("bundle_rejected");
    assert_eq!(
        rejected.len(),
        cases.len(),
        "one audit line per rejected file"
    );
    let codes: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.2).collect();
    assert_eq!(
        codes.len(),
        cases.len() - 2,
        "every case but the two bombs and the two non-files has its own reason"
    );
    assert!(
        v.reason("31-symlink.vsb")
            .unwrap()
            .contains("symbolic link")
    );
    assert!(v.reason("32-fifo.vsb").unwrap().contains("FIFO"));

    let store = v.store();
    let cmds = store.commands().unwrap();
    let state = |id: &str| {
        cmds.iter()
            .find(|c| c.cmd_id == id)
            .unwrap_or_else(|| panic!("{id}"))
            .clone()
    };
    assert_eq!(state("c-ack").state.as_str(), "done");
    let unknown = state("c-unknown");
    assert_eq!(unknown.state.as_str(), "failed");
    assert!(
        unknown
            .reason
            .unwrap()
            .contains("unknown command type \"reboot_ship\"")
    );
    let bad = state("c-badrows");
    assert_eq!(bad.state.as_str(), "failed");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(v.path("state/reports/c-badrows.mapping-report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        report,
        serde_json::json!([
            {"row": 3, "field": "kind", "value": "cours", "message": "must be category, course or activity"},
            {"row": 4, "field": "course", "value": "", "message": "is empty"},
            {"row": 5, "field": "legacy_id", "value": "L-1", "message": "duplicate course legacy_id (first on row 2)"},
        ])
    );
    assert!(
        bad.reason
            .unwrap()
            .contains("row 3 kind \"cours\": must be category, course or activity")
    );
    assert_eq!(state("c-goodrows").state.as_str(), "done");
    assert_eq!(
        store.ack("outbox").unwrap().unwrap().acked_seq,
        9,
        "the last good bundle was applied"
    );
    let maps = store.mappings().unwrap();
    assert_eq!(
        maps.len(),
        1,
        "only the valid mapping file was stored: {maps:?}"
    );
    assert_eq!(maps[0].moodle_key, "ERM-110");
}

#[test]
fn a_file_still_being_written_is_left_until_it_settles() {
    let v = Vessel::with(Options {
        settle: "1h",
        ..Options::default()
    });
    let b = v.bundle("b.vsb", ack(1, 4));
    let bytes = std::fs::read(&b).unwrap();
    let target = v.inbox().join("arriving.vsb");
    std::fs::write(&target, &bytes[..bytes.len() / 2]).unwrap();
    let out = v.once();
    assert!(out.contains("arriving"), "{out}");
    assert_eq!(
        v.inbox_names(),
        vec!["arriving.vsb"],
        "a half-written file is neither read nor quarantined"
    );
    assert!(v.reason("arriving.vsb").is_none());
    // The carrier finishes the copy; an hour later the file is settled and applied.
    std::fs::write(&target, &bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&target).unwrap();
    // A file's modification time two hours ago (the file system's clock, not the product's).
    #[allow(clippy::disallowed_methods)]
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    f.set_modified(two_hours_ago).unwrap();
    drop(f);
    let out = v.once();
    assert!(out.contains("accepted     arriving.vsb"), "{out}");
    assert_eq!(v.store().ack("outbox").unwrap().unwrap().acked_seq, 4);
}

#[test]
fn temporary_and_hidden_names_are_never_read() {
    let v = Vessel::new();
    let b = v.bundle("b.vsb", ack(1, 4));
    v.drop_in(&b, "copying.vsb.part");
    v.drop_in(&b, ".hidden.vsb");
    v.drop_in(&b, "x.tmp");
    let out = v.once();
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(v.inbox_names().len(), 3);
}
