//! Sequence order across a carrier that reorders files: early bundles wait for the gap, proceed
//! after the gap timeout with the skipped sequence recorded, and a late arrival is still handled
//! exactly once (applied, or superseded where a newer sequence acted), never refused as a replay.

use crate::support::*;

fn done_order(v: &Vessel) -> Vec<String> {
    v.audit("command_done").into_iter().map(|r| r.3).collect()
}

#[test]
fn an_early_bundle_waits_for_the_missing_sequence_and_status_names_it() {
    let v = Vessel::new();
    let two = v.bundle("2.vsb", ack(2, 200));
    let one = v.bundle("1.vsb", ack(1, 100));
    v.drop_in(&two, "seq2.vsb");
    let out = v.once();
    assert!(out.contains("waiting      seq2.vsb"), "{out}");
    assert!(
        v.store().ack("outbox").unwrap().is_none(),
        "sequence 2 must not run before 1"
    );

    let status = v.run(&["status", "--json", "--config", v.config.to_str().unwrap()]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["journal"]["gaps"][0]["missing"], 1, "{s}");
    let text = String::from_utf8_lossy(
        &v.run(&["status", "--config", v.config.to_str().unwrap()])
            .stdout,
    )
    .into_owned();
    assert!(text.contains("wait for missing sequence 1"), "{text}");

    v.drop_in(&one, "seq1.vsb");
    v.once();
    let order = done_order(&v);
    assert_eq!(order.len(), 2);
    assert!(
        order[0].contains("up to sequence 100") && order[1].contains("up to sequence 200"),
        "applied in sequence order: {order:?}"
    );
    assert_eq!(v.store().ack("outbox").unwrap().unwrap().acked_seq, 200);
}

#[test]
fn after_the_gap_timeout_later_bundles_proceed_and_a_late_arrival_is_applied_or_superseded_once() {
    let v = Vessel::with(Options {
        gap_timeout: "0s",
        ..Options::default()
    });
    // Sequence 3 sets L-1 and acknowledges 300; sequences 1 and 2 are stuck on the carrier.
    let three = v.bundle(
        "3.vsb",
        mapping(
            3,
            "kind,legacy_id,moodle_key,course\ncourse,L-1,ERM-110-v3,\n",
        ),
    );
    v.drop_in(&three, "seq3.vsb");
    let out = v.once();
    assert!(out.contains("skipped"), "{out}");
    let store = v.store();
    assert_eq!(store.mappings().unwrap()[0].moodle_key, "ERM-110-v3");
    let skipped = store.overview().unwrap().skipped;
    assert_eq!(
        (skipped.len(), skipped[0].first, skipped[0].last),
        (1, 1, 2),
        "sequences 1 and 2 recorded as one skipped gap"
    );
    let audit = v.audit("sequence_skipped");
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0].3.contains("sequences 1 to 2"), "{audit:?}");

    // Sequence 1 turns up late: L-1 (set by the newer sequence 3) is left, L-2 is applied.
    let one = v.bundle(
        "1.vsb",
        mapping(
            1,
            "kind,legacy_id,moodle_key,course\ncourse,L-1,ERM-110-v1,\ncourse,L-2,FIRE-201,\n",
        ),
    );
    v.drop_in(&one, "seq1.vsb");
    let out = v.once();
    assert!(
        out.contains("accepted     seq1.vsb"),
        "a late arrival is not a replay: {out}"
    );
    let maps = v.store().mappings().unwrap();
    let key = |id: &str| {
        maps.iter()
            .find(|m| m.legacy_id == id)
            .unwrap()
            .moodle_key
            .clone()
    };
    assert_eq!(
        key("L-1"),
        "ERM-110-v3",
        "the newer sequence's value stands"
    );
    assert_eq!(
        key("L-2"),
        "FIRE-201",
        "what no newer sequence touched is applied"
    );
    assert!(done_order(&v).last().unwrap().contains(
        "1 mapping(s) stored from files/mapping.csv, 1 left as a newer sequence set them"
    ));

    // Sequence 2 turns up late with an ack below what is known: recorded as superseded.
    let ack3 = v.bundle("4.vsb", ack(4, 300));
    v.drop_in(&ack3, "seq4.vsb");
    v.once();
    let two = v.bundle("2.vsb", ack(2, 250));
    v.drop_in(&two, "seq2.vsb");
    v.once();
    let superseded = v.audit("command_superseded");
    assert_eq!(superseded.len(), 1, "{superseded:?}");
    assert!(
        superseded[0].3.contains("already acknowledged"),
        "{superseded:?}"
    );
    assert_eq!(v.store().ack("outbox").unwrap().unwrap().acked_seq, 300);
    assert!(
        v.store().overview().unwrap().skipped.is_empty(),
        "both late arrivals resolved their skipped slot"
    );

    // The late bundle arriving yet again is a duplicate, not a second application.
    v.drop_in(&one, "seq1-again.vsb");
    let out = v.once();
    assert!(out.contains("duplicate    seq1-again.vsb"), "{out}");
    // A different bundle claiming the now-resolved sequence 1 is a replay.
    let forged = v.bundle("1b.vsb", ack(1, 999));
    v.drop_in(&forged, "seq1-other.vsb");
    v.once();
    assert!(
        v.reason("seq1-other.vsb")
            .unwrap()
            .contains("Code:     replay")
    );
}

#[test]
fn fleet_bundles_have_their_own_sequence_stream() {
    let v = Vessel::new();
    let fleet = v.bundle(
        "f.vsb",
        draft(
            "*",
            1,
            vec![cmd("ack", "", serde_json::json!({"acked_seq": 7}), &[])],
            vec![],
        ),
    );
    let own = v.bundle("o.vsb", ack(1, 3));
    v.drop_in(&fleet, "fleet.vsb");
    v.drop_in(&own, "own.vsb");
    let out = v.once();
    assert!(
        out.contains("accepted     fleet.vsb") && out.contains("accepted     own.vsb"),
        "{out}"
    );
}
