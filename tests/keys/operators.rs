//! Operator keys at sea: certificates from the fleet root, what each grant allows, revocations
//! in either order, and shore refusing at push what a vessel would refuse.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;
use crate::support::shore::Shore;
use crate::support::{VESSEL, Vessel, cmd, draft, now};

#[test]
fn a_lost_operator_key_revoked_while_the_vessel_is_offline_stops_forgeries_in_either_order() {
    let fleet = Fleet::new();
    let anna = SecretKey::from_seed([41u8; 32]);
    let cert = fleet.certify(&anna, "anna", &["*"], now() - DAY, now() + 300 * DAY);

    // Revocation first: shore knew it had issued sequences 1 and 2 with anna's key.
    let v = fleet.vessel();
    send_mapping(&v, 1, "a1", &anna, &cert);
    send(
        &v,
        "r1.vsb",
        &revoke(1, &anna.id, serde_json::json!({VESSEL: 2})),
        &fleet.root,
        None,
    );
    // Bundle 2 was legitimately in transit on a USB stick: still applied.
    send_mapping(&v, 2, "a2", &anna, &cert);
    // The thief's bundle 3 arrives later by USB: refused, with the revocation named.
    send_mapping(&v, 3, "forged", &anna, &cert);
    assert_eq!(applied(&v), ["a1", "a2", "revoke-1"]);
    let why = v.reason("forged.vsb").expect("the forgery is quarantined");
    assert!(why.contains("Code:     revoked_key"), "{why}");
    assert!(
        why.contains("revoke-1") && why.contains("laptop lost in Rotterdam"),
        "{why}"
    );
    let s = status(&v);
    assert_eq!(s["trust"]["revoked"][0]["key_id"], anna.id.as_str());
    assert_eq!(s["trust"]["certified"][0]["revoked"], true);

    // Forgery first: it looks like anna's next bundle and is applied, since the vessel cannot
    // know yet; when the revocation arrives the audit trail names it for the operator, and
    // nothing after it is applied.
    let v = fleet.vessel();
    send_mapping(&v, 1, "a1", &anna, &cert);
    send_mapping(&v, 2, "forged", &anna, &cert);
    send(
        &v,
        "r1.vsb",
        &revoke(1, &anna.id, serde_json::json!({VESSEL: 1})),
        &fleet.root,
        None,
    );
    send_mapping(&v, 3, "forged3", &anna, &cert);
    assert_eq!(applied(&v), ["a1", "forged", "revoke-1"]);
    let flagged = v.audit("revoked_key_applied");
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert!(flagged[0].3.contains("sequence 2"), "{flagged:?}");
    assert!(v.reason("forged3.vsb").unwrap().contains("revoked_key"));
}

#[test]
fn a_bundle_admitted_before_the_revocation_arrived_but_not_yet_run_is_refused() {
    let fleet = Fleet::new();
    let anna = SecretKey::from_seed([41u8; 32]);
    let cert = fleet.certify(&anna, "anna", &["*"], now() - DAY, now() + DAY);
    let v = fleet.vessel();
    // Anna's bundle 2 arrives before 1 and waits for it in the journal.
    send_mapping(&v, 2, "a2", &anna, &cert);
    send(
        &v,
        "r1.vsb",
        &revoke(1, &anna.id, serde_json::json!(1)),
        &fleet.root,
        None,
    );
    send_mapping(&v, 1, "a1", &anna, &cert);
    assert_eq!(applied(&v), ["a1", "revoke-1"]);
    let failed = in_state(&v, "failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].reason.as_deref().unwrap().contains("revoked_key"),
        "{failed:?}"
    );
}

#[test]
fn an_expired_certificate_is_refused_and_says_what_to_do() {
    let fleet = Fleet::new();
    let bob = SecretKey::from_seed([42u8; 32]);
    let cert = fleet.certify(&bob, "bob", &["*"], now() - 30 * DAY, now() - DAY);
    let v = fleet.vessel();
    send_mapping(&v, 1, "b1", &bob, &cert);
    let why = v.reason("b1.vsb").expect("quarantined");
    assert!(why.contains("certificate_expired"), "{why}");
    assert!(why.contains("certifies the key again"), "{why}");
    assert!(applied(&v).is_empty());
}

#[test]
fn the_root_trusts_a_new_operator_and_every_rule_of_the_grant_holds() {
    let dir = tempfile::tempdir().unwrap();
    // The key ceremony with the real commands.
    let bin = crate::support::bin();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    run(&[
        "keygen",
        "--root",
        "--out",
        &p("root"),
        "--comment",
        "fleet root",
    ]);
    run(&["keygen", "--out", &p("carla"), "--comment", "carla"]);
    let said = run(&[
        "key",
        "certify",
        "--root",
        &p("root.key"),
        "--key",
        &p("carla.pub"),
        "--may-sign",
        "set_mapping",
        "--days",
        "90",
        "--out",
        &p("carla.cert"),
    ]);
    assert!(said.contains("may sign set_mapping"), "{said}");
    let shown = run(&["key", "show", &p("carla.cert"), "--root", &p("root.pub")]);
    assert!(shown.contains("signature:  valid"), "{shown}");
    let root = SecretKey::load(Path::new(&p("root.key"))).unwrap();
    let carla = SecretKey::load(Path::new(&p("carla.key"))).unwrap();
    let cert = Certificate::load(Path::new(&p("carla.cert"))).unwrap();
    let fleet = Fleet { root };
    let v = fleet.vessel();

    // Before the root has said anything, a bundle from carla without her certificate is unknown.
    send(
        &v,
        "early.vsb",
        &mapping(VESSEL, 1, "early", 1),
        &carla,
        None,
    );
    assert!(v.reason("early.vsb").unwrap().contains("unknown_key"));
    // The root's trust_key, then carla's bundles apply without carrying the certificate.
    send(&v, "t1.vsb", &trust(1, &cert), &fleet.root, None);
    send(&v, "c1.vsb", &mapping(VESSEL, 1, "c1", 1), &carla, None);
    assert_eq!(applied(&v), ["c1", "trust-1"]);
    // `bundle build` finds carla.cert beside carla.key and carries it.
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        dir.path().join("m.csv"),
        "kind,legacy_id,moodle_key\ncourse,L9,C9\n",
    )
    .unwrap();
    std::fs::write(&spec, format!("recipient = \"{VESSEL}\"\nsequence = 2\n[[command]]\ntype = \"set_mapping\"\nid = \"c2\"\nfiles = [\"m.csv\"]\n")).unwrap();
    run(&[
        "bundle",
        "build",
        "--spec",
        spec.to_str().unwrap(),
        "--key",
        &p("carla.key"),
        "--out",
        &p("c2.vsb"),
    ]);
    let inspected = run(&["bundle", "inspect", &p("c2.vsb")]);
    assert!(
        inspected.contains("certified  operator carla"),
        "{inspected}"
    );
    deliver(&v, Path::new(&p("c2.vsb")));
    assert_eq!(applied(&v), ["c1", "c2", "trust-1"]);

    // Outside the grant: a command type she may not sign.
    let hide = draft(
        VESSEL,
        3,
        vec![cmd(
            "hide_course",
            "h",
            serde_json::json!({"course": "C1"}),
            &[],
        )],
        vec![],
    );
    send(&v, "hide.vsb", &hide, &carla, None);
    assert!(
        v.reason("hide.vsb")
            .unwrap()
            .contains("certified to sign set_mapping only")
    );
    // The root's own commands from an operator, and an operator's from the root.
    send(
        &v,
        "op-revoke.vsb",
        &revoke(3, &carla.id, serde_json::json!(0)),
        &carla,
        None,
    );
    assert!(
        v.reason("op-revoke.vsb")
            .unwrap()
            .contains("must be signed by the fleet root key")
    );
    send(
        &v,
        "root-map.vsb",
        &mapping(VESSEL, 2, "rm", 5),
        &fleet.root,
        None,
    );
    assert!(
        v.reason("root-map.vsb")
            .unwrap()
            .contains("signs only trust_key and revoke_key")
    );
    // A certificate whose grant was widened after signing.
    let mut forged = cert.clone();
    forged.body.may_sign = vec!["*".into()];
    send(&v, "widened.vsb", &hide, &carla, Some(&forged));
    assert!(
        v.reason("widened.vsb")
            .unwrap()
            .contains("certificate_invalid")
    );
    assert_eq!(applied(&v), ["c1", "c2", "trust-1"]);
    let s = status(&v);
    assert_eq!(s["trust"]["certified"][0]["name"], "carla");
    assert_eq!(s["trust"]["certified"][0]["may_sign"][0], "set_mapping");
}

/// One bundle of the property test's fleet.
#[derive(Debug, Clone)]
struct Item {
    name: &'static str,
    path: PathBuf,
}

fn fleet_bundles(fleet: &Fleet, v: &Vessel, t0: i64) -> Vec<Item> {
    let anna = SecretKey::from_seed([41u8; 32]);
    let bea = SecretKey::from_seed([43u8; 32]);
    let cid = SecretKey::from_seed([44u8; 32]);
    let ca = fleet.certify(&anna, "anna", &["*"], t0 - DAY, t0 + DAY);
    let cb = fleet.certify(&bea, "bea", &["set_mapping"], t0 - DAY, t0 + DAY);
    let cc = fleet.certify(&cid, "cid", &["*"], t0 - DAY, t0 + DAY);
    // In the order shore issued them: the root trusts bea and cid, anna signs two bundles, the
    // root revokes anna after them, bea signs two bundles (the second to the whole fleet).
    let items = [
        ("t1", trust(1, &cb), &fleet.root, None),
        ("a1", mapping(VESSEL, 1, "a1", 1), &anna, Some(&ca)),
        ("t2", trust(2, &cc), &fleet.root, None),
        ("a2", mapping(VESSEL, 2, "a2", 2), &anna, Some(&ca)),
        (
            "r3",
            revoke(3, &anna.id, serde_json::json!({VESSEL: 2})),
            &fleet.root,
            None,
        ),
        ("b1", mapping(VESSEL, 1, "b1", 3), &bea, Some(&cb)),
        ("b2", mapping("*", 1, "b2", 4), &bea, Some(&cb)),
    ];
    items
        .into_iter()
        .map(|(name, d, key, cert)| Item {
            name,
            path: signed(v, &format!("{name}.vsb"), &d, key, cert),
        })
        .collect()
}

/// The trust state as it matters: who is trusted for what, who is revoked and from where.
fn trust_state(v: &Vessel) -> serde_json::Value {
    let s = status(v);
    let t = &s["trust"];
    let certified: Vec<serde_json::Value> = t["certified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| serde_json::json!([c["key_id"], c["may_sign"], c["not_after"], c["revoked"]]))
        .collect();
    let revoked: Vec<serde_json::Value> = t["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::json!([r["key_id"], r["last_good"], r["by_command"]]))
        .collect();
    serde_json::json!({"certified": certified, "revoked": revoked})
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Any delivery order of trust, revoke and command bundles gives the same final trust state
    /// and the same applied commands as delivery in the order they were issued.
    #[test]
    fn any_delivery_order_gives_the_trust_state_and_commands_of_in_order_delivery(
        order in Just((0..7usize).collect::<Vec<_>>()).prop_shuffle(),
        batch in 1..4usize,
    ) {
        let fleet = Fleet::new();
        let t0 = now();
        let reference = fleet.vessel();
        for item in fleet_bundles(&fleet, &reference, t0) {
            deliver(&reference, &item.path);
        }
        let want_applied = applied(&reference);
        prop_assert_eq!(
            &want_applied,
            &vec!["a1", "a2", "b1", "b2", "revoke-3", "trust-1", "trust-2"]
        );
        let want_trust = trust_state(&reference);

        let v = fleet.vessel();
        let items = fleet_bundles(&fleet, &v, t0);
        // Several files may arrive between two agent passes (a USB stick with a few on it).
        for chunk in order.chunks(batch) {
            for &i in chunk {
                let it = &items[i];
                v.drop_in(&it.path, &format!("{}.vsb", it.name));
            }
            v.once();
        }
        prop_assert_eq!(applied(&v), want_applied);
        prop_assert_eq!(trust_state(&v), want_trust);
    }
}

#[test]
fn shore_queues_root_and_certified_bundles_and_refuses_what_a_vessel_would() {
    let fleet = Fleet::new();
    let shore = Shore::new();
    std::fs::write(
        shore.path("keys/root.pub"),
        format!("{}\n", public(&fleet.root, "fleet root").file_text()),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&shore.config).unwrap();
    text.push_str("root = [\"keys/root.pub\"]\n");
    std::fs::write(&shore.config, text).unwrap();
    let v = Vessel::new();
    let dora = SecretKey::from_seed([45u8; 32]);
    let cert = fleet.certify(&dora, "dora", &["set_mapping"], now() - DAY, now() + DAY);
    let push = |b: &Path| shore.run(&["push", b.to_str().unwrap()]);
    let ok = push(&signed(
        &v,
        "d1.vsb",
        &mapping(VESSEL, 1, "d1", 1),
        &dora,
        Some(&cert),
    ));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ok = push(&signed(&v, "t1.vsb", &trust(1, &cert), &fleet.root, None));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = push(&signed(
        &v,
        "r.vsb",
        &mapping(VESSEL, 2, "r", 2),
        &fleet.root,
        None,
    ));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("signs only trust_key and revoke_key"));
    let hide = draft(
        VESSEL,
        2,
        vec![cmd(
            "hide_course",
            "h",
            serde_json::json!({"course": "C1"}),
            &[],
        )],
        vec![],
    );
    let bad = push(&signed(&v, "h.vsb", &hide, &dora, Some(&cert)));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("certified to sign set_mapping only"));
    assert_eq!(shore.db().bundles_for(VESSEL, 0).unwrap().len(), 2);
}
