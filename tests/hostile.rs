//! Law 8 (contained), on board: what an operator key that signs hostile content, or a carrier
//! that reorders and floods, can do to a vessel. Each scenario is one finding of the
//! hostile-parties review, through the real binary.

use std::path::PathBuf;

use wire::envelope::{Draft, Source};

use crate::support::*;

/// A bundle signed by the vessel's trusted operator key whose manifest `edit` changed: what a
/// stolen or careless operator key can produce, which no well-behaved `bundle build` writes.
pub(crate) fn forge(
    v: &Vessel,
    name: &str,
    d: Draft,
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let good = v.bundle(&format!("good-{name}"), d);
    let m = members(&good);
    let mut manifest: serde_json::Value = serde_json::from_slice(&m[0].2).unwrap();
    edit(&mut manifest);
    let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    let sig = v.ops.sign(&bytes).to_bytes();
    let mut raws = vec![
        Raw::file(b"manifest.json", &bytes),
        Raw::file(b"manifest.sig", &sig),
    ];
    for (n, _, data) in &m[2..] {
        raws.push(Raw::file(n, data));
    }
    v.file(&format!("shore/{name}"), &craft(&raws, b""))
}

#[test]
fn a_bundle_whose_id_climbs_out_of_the_work_dir_is_refused_and_touches_nothing() {
    let v = Vessel::new();
    // What the bundle aims at: a directory beside the agent's state, and the archive's parent.
    let victim = v.path("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious.txt"), b"journal backups").unwrap();
    let cases = [
        ("up.vsb", "../../victim"),
        (
            "abs.vsb",
            v.path("victim").to_str().unwrap().to_string().leak() as &str,
        ),
        ("dot.vsb", ".."),
        ("slash.vsb", "a/b"),
    ];
    for (name, id) in cases {
        let bad = forge(&v, name, ack(1, 1), |m| m["id"] = id.into());
        // `bundle verify` calls it invalid, before anything trusts the id.
        let out = v.run(&[
            "bundle",
            "verify",
            bad.to_str().unwrap(),
            "--trust",
            v.path("keys/ops.pub").to_str().unwrap(),
        ]);
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(65), "{id}: {text}");
        assert!(text.contains("bundle id"), "{id}: {text}");
        v.drop_in(&bad, name);
    }
    v.once();
    for (name, _) in cases {
        let reason = v
            .reason(name)
            .unwrap_or_else(|| panic!("{name} not quarantined"));
        assert!(reason.contains("manifest_invalid"), "{reason}");
        assert!(reason.contains("is not a valid id"), "{reason}");
    }
    assert_eq!(
        std::fs::read(victim.join("precious.txt")).unwrap(),
        b"journal backups"
    );
    assert!(!v.path("victim.vsb").exists() && !v.path("state/victim.vsb").exists());
    assert!(
        v.store().commands().unwrap().is_empty(),
        "nothing journaled"
    );
    // The next honest bundle is applied.
    let good = v.bundle("ok.vsb", ack(1, 1));
    v.drop_in(&good, "ok.vsb");
    v.once();
    assert_eq!(v.store().ack("outbox").unwrap().unwrap().acked_seq, 1);
}

#[test]
fn a_sequence_far_ahead_is_quarantined_and_an_out_of_range_one_is_refused_truly() {
    let v = Vessel::with(Options {
        gap_timeout: "0s",
        extra: "",
        ..Options::default()
    });
    // A typo of a million: quarantined at once with the gap named, no row per missing number.
    let typo = v.bundle("typo.vsb", ack(1_000_000, 5));
    v.drop_in(&typo, "typo.vsb");
    v.once();
    let reason = v.reason("typo.vsb").expect("quarantined");
    assert!(reason.contains("sequence_gap"), "{reason}");
    assert!(reason.contains("999999 ahead"), "{reason}");
    assert!(v.store().overview().unwrap().skipped.is_empty());

    // 2^63 and above: not a "replay", out of range; `bundle build` refuses it too.
    let huge = forge(&v, "huge.vsb", ack(1, 5), |m| {
        m["sequence"] = serde_json::json!(1u64 << 63)
    });
    v.drop_in(&huge, "huge.vsb");
    v.once();
    let reason = v.reason("huge.vsb").expect("quarantined");
    assert!(reason.contains("out of range"), "{reason}");
    assert!(!reason.contains("replay"), "{reason}");
    let spec = v.file(
        "spec.toml",
        format!(
            "recipient = \"{VESSEL}\"\nsequence = 9223372036854775808\n[[command]]\ntype = \"ack\"\nargs = {{ acked_seq = 1 }}\n"
        )
        .as_bytes(),
    );
    let out = v.run(&[
        "bundle",
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--key",
        v.path("keys/ops.key").to_str().unwrap(),
        "--out",
        v.path("shore/huge-built.vsb").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(!v.path("shore/huge-built.vsb").exists());

    // A gap within the limit costs one row however wide: sequence 9,000 after a timeout.
    let far = v.bundle("far.vsb", ack(9_000, 7));
    v.drop_in(&far, "far.vsb");
    v.once();
    let skipped = v.store().overview().unwrap().skipped;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!((skipped[0].first, skipped[0].last), (1, 8_999));
    assert_eq!(v.audit("sequence_skipped").len(), 1);
    assert_eq!(v.store().ack("outbox").unwrap().unwrap().acked_seq, 7);
}

#[test]
fn members_that_are_a_file_and_a_directory_are_quarantined_not_retried() {
    let v = Vessel::new();
    let d = draft(
        VESSEL,
        1,
        vec![cmd("ack", "", serde_json::json!({"acked_seq": 1}), &[])],
        vec![
            ("files/a", Source::Bytes(b"x".to_vec())),
            ("files/b", Source::Bytes(b"y".to_vec())),
        ],
    );
    let bad = forge(&v, "nested.vsb", d, |m| {
        m["files"][1]["name"] = "files/a/b".into();
    });
    v.drop_in(&bad, "nested.vsb");
    v.once();
    let reason = v
        .reason("nested.vsb")
        .expect("quarantined, not left in the inbox");
    assert!(reason.contains("also the directory of"), "{reason}");
    assert!(v.inbox_names().is_empty(), "{:?}", v.inbox_names());
}

#[test]
fn a_damaged_manifest_is_a_bad_signature_not_an_unknown_key() {
    let v = Vessel::new();
    let good = v.bundle("good.vsb", ack(1, 1));
    let m = members(&good);
    let mut man = m[0].2.clone();
    // One byte of the JSON damaged: it no longer parses.
    let brace = man.iter().rposition(|b| *b == b'}').unwrap();
    man[brace] = b'~';
    let bad = craft(
        &[Raw::file(&m[0].0, &man), Raw::file(&m[1].0, &m[1].2)],
        b"",
    );
    let bad = v.file("shore/damaged.vsb", &bad);
    v.drop_in(&bad, "damaged.vsb");
    v.once();
    let reason = v.reason("damaged.vsb").expect("quarantined");
    assert!(reason.contains("bad_signature"), "{reason}");
    assert!(!reason.contains("unknown_key"), "{reason}");
}

#[test]
fn a_reused_command_id_is_held_by_the_earlier_sequence_whatever_arrives_first() {
    let v = Vessel::new();
    let with_id = |seq: u64, acked: u64| {
        draft(
            VESSEL,
            seq,
            vec![cmd(
                "ack",
                "c-shared",
                serde_json::json!({"acked_seq": acked}),
                &[],
            )],
            vec![],
        )
    };
    let one = v.bundle("1.vsb", ack(1, 1));
    let two = v.bundle("2.vsb", with_id(2, 20));
    let three = v.bundle("3.vsb", with_id(3, 30));
    // The carrier delivers 3 before 2 (and 1 last).
    v.drop_in(&three, "a-3.vsb");
    v.once();
    v.drop_in(&two, "b-2.vsb");
    v.once();
    v.drop_in(&one, "c-1.vsb");
    v.once();
    let cmds = v.store().commands().unwrap();
    let holder: Vec<_> = cmds
        .iter()
        .filter(|c| c.cmd_id == "c-shared" && c.state.as_str() == "done")
        .map(|c| c.sequence)
        .collect();
    assert_eq!(holder, vec![2], "{cmds:?}");
    assert_eq!(v.store().ack("outbox").unwrap().unwrap().acked_seq, 20);
}
