//! Vessel keys: a rotation mid-outage with batches on both keys, an operator's rekey ashore,
//! and the chain of batches that refuses a forged history.

use super::*;
use crate::support::shore::{Shore, linked_vessel, post_batch, seed};
use crate::support::{VESSEL, Vessel, now};

/// A batch of `seq` with a few made-up records, signed by `key`, naming `previous`.
fn crafted_batch(seq: u64, key: &SecretKey, previous: Option<String>, n: u64) -> Vec<u8> {
    let rec = wire::progress::Record {
        kind: wire::progress::RecordKind::ActivityCompletion,
        user: format!("forged-{seq}"),
        course: "C1".into(),
        item: "quiz:1".into(),
        user_legacy: String::new(),
        course_legacy: String::new(),
        item_legacy: String::new(),
        value: "1".into(),
        time: 1_795_308_010 + n as i64,
    };
    let extra = Extra {
        previous,
        ..Default::default()
    };
    crate::support::shore::signed_batch(
        seq,
        key,
        wire::progress::codec::encode_batch(&[rec], 0),
        &extra,
    )
}

/// The manifest digest of a batch the vessel built.
fn digest_of(bytes: &[u8], key: &SecretKey) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("b.vsb");
    std::fs::write(&f, bytes).unwrap();
    let o = envelope::open(&f, &Keyring::new([public(key, "v")]), &Default::default()).unwrap();
    o.manifest_sha256
}

fn build(v: &Vessel) {
    let mut store = vessel::store::Store::open(&v.path("state/journal.db"), VESSEL).unwrap();
    let key = SecretKey::load(&v.path("keys/vessel.key")).unwrap();
    vessel::uplink::build_batches(&mut store, VESSEL, &key, 50, 100, &v.path("state"), now())
        .unwrap();
}

fn shore_keys(shore: &Shore) -> Vec<(String, u64, Option<u64>)> {
    shore
        .db()
        .vessel_keys(VESSEL)
        .unwrap()
        .into_iter()
        .map(|k| (k.key_id, k.from_seq, k.until_seq))
        .collect()
}

#[test]
fn a_vessel_rotating_its_key_mid_outage_has_batches_on_both_keys_accepted_and_the_old_key_refused_after()
 {
    let mut shore = Shore::new();
    let url = format!("https://127.0.0.1:{}", shore.port);
    let v = linked_vessel(&shore, &url, "batch_records = 50\n");
    let old = SecretKey::load(&v.path("keys/vessel.key")).unwrap();
    // The link is down: two batches are built and signed with the old key.
    seed(&v, 100, 0);
    build(&v);
    assert_eq!(v.store().pending_batches().unwrap().len(), 2);
    // The IT officer rotates the key mid-outage.
    let out = v.run(&[
        "rotate-key",
        "--json",
        "--config",
        v.config.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["from_seq"], 3);
    let new_id = r["new_key"].as_str().unwrap().to_string();
    let again = v.run(&["rotate-key", "--config", v.config.to_str().unwrap()]);
    assert!(
        !again.status.success(),
        "a second rotation before shore's ack is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("waits for shore"));
    let s = status(&v);
    assert_eq!(s["trust"]["rotation_pending"]["key_id"], new_id.as_str());
    // More batches, signed with the new key (a different capture: every record is new).
    let later = seed(&v, 200, 0);
    build(&v);
    let pending = v.store().pending_batches().unwrap();
    assert_eq!(pending.len() as u64, 2 + later.div_ceil(50));
    let total = 100 + later;
    // The link comes back: every batch is acknowledged, every record stored once.
    shore.start();
    crate::support::shore::drain(&v, 20);
    assert_eq!(shore.counts(), (total, total));
    assert_eq!(
        shore_keys(&shore),
        vec![(old.id.clone(), 0, Some(3)), (new_id.clone(), 3, None)]
    );
    assert!(status(&v)["trust"]["rotation_pending"].is_null());
    // A batch signed by the old key after the rotation point is refused.
    let (code, body) = post_batch(&shore, &v, crafted_batch(5, &old, None, 1));
    assert_eq!(
        (code, body["error"].as_str()),
        (422, Some("old_key")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("retired from batch 3"),
        "{body}"
    );
    // New batches keep flowing with the new key, without the statement.
    let more = seed(&v, 220, 0);
    assert!(more > 0);
    crate::support::shore::drain(&v, 20);
    let total = total + more;
    assert_eq!(shore.counts(), (total, total));

    // An operator forces a key from shore: the vessel's current key is refused from then on.
    let forced = SecretKey::from_seed([77u8; 32]);
    forced.write_pair(&v.path("keys/forced"), VESSEL).unwrap();
    let out = shore.run(&[
        "vessel",
        "rekey",
        VESSEL,
        "--pubkey",
        v.path("keys/forced.pub").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(seed(&v, 240, 0) > 0);
    let out = crate::support::shore::sync(&v);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("old_key"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        shore.counts(),
        (total, total),
        "nothing from the replaced key is stored"
    );
    let refusals = shore.db().refusals(5).unwrap();
    assert!(
        refusals
            .iter()
            .any(|(_, _, c, m)| c == "old_key" && m.contains("an operator replaced")),
        "{refusals:?}"
    );
}

#[test]
fn a_forged_chain_is_refused_as_a_fork_a_gap_or_a_cut_and_the_true_one_goes_on() {
    let mut shore = Shore::new();
    shore.start();
    let url = format!("https://127.0.0.1:{}", shore.port);
    let v = linked_vessel(&shore, &url, "batch_records = 50\n");
    let key = SecretKey::load(&v.path("keys/vessel.key")).unwrap();
    seed(&v, 100, 0);
    build(&v);
    let batches = v.store().pending_batches().unwrap();
    let d1 = digest_of(&batches[0].envelope, &key);
    let d2 = digest_of(&batches[1].envelope, &key);
    crate::support::shore::drain(&v, 5);
    assert_eq!(shore.counts(), (100, 100));

    // Batch 3 naming a predecessor other than the batch 2 shore holds: a fork.
    let (code, body) = post_batch(&shore, &v, crafted_batch(3, &key, Some(d1.clone()), 1));
    assert_eq!(
        (code, body["error"].as_str()),
        (409, Some("chain_fork")),
        "{body}"
    );
    // Batch 4 naming batch 1 as its predecessor: batches 2 and 3 are missing from its chain.
    let (code, body) = post_batch(&shore, &v, crafted_batch(4, &key, Some(d1), 2));
    assert_eq!(
        (code, body["error"].as_str()),
        (409, Some("chain_gap")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("batches 2 to 3"),
        "{body}"
    );
    // Batch 3 naming no predecessor after a chained history: cut.
    let (code, body) = post_batch(&shore, &v, crafted_batch(3, &key, None, 3));
    assert_eq!(
        (code, body["error"].as_str()),
        (409, Some("chain_broken")),
        "{body}"
    );
    // Batch 4 arriving before 3, then a batch 3 that is not the one batch 4 names.
    let fake3 = crafted_batch(3, &key, Some(d2.clone()), 4);
    let d3 = {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b");
        std::fs::write(&f, crafted_batch(3, &key, Some(d2.clone()), 5)).unwrap();
        envelope::open(&f, &Keyring::new([public(&key, "v")]), &Default::default())
            .unwrap()
            .manifest_sha256
    };
    let (code, body) = post_batch(&shore, &v, crafted_batch(4, &key, Some(d3), 6));
    assert_eq!(code, 200, "{body}");
    let (code, body) = post_batch(&shore, &v, fake3);
    assert_eq!(
        (code, body["error"].as_str()),
        (409, Some("chain_fork")),
        "{body}"
    );
    assert_eq!(
        shore.counts(),
        (101, 101),
        "only the one consistent batch was stored"
    );
    let out = shore.run(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<&str> = s["recent_refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    for c in ["chain_fork", "chain_gap", "chain_broken"] {
        assert!(codes.contains(&c), "{codes:?}");
    }
}
