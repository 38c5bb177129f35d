//! Laws 4 and 7 (exactly-once effect, commit before side effect) as named crash scenarios: the
//! agent is killed with SIGKILL at every failpoint of admission and command execution, while it
//! works a multi-command bundle, then restarted; every command's effect happened exactly once,
//! and the journal and the audit trail agree.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;

use base::failpoint;
use wire::envelope::Source;

use crate::support::*;

fn multi_command_bundle(v: &Vessel) -> std::path::PathBuf {
    let a = "kind,legacy_id,moodle_key,course\ncourse,L-110,ERM-110,\ncategory,L-DECK,DECK,\n";
    let b = "kind,legacy_id,moodle_key,course\ncourse,L-101,SAFETY-101,\nactivity,L-101-Q,quiz-1,SAFETY-101\n";
    let d = draft(
        VESSEL,
        1,
        vec![
            cmd(
                "set_mapping",
                "map-a",
                serde_json::json!({}),
                &["files/a.csv"],
            ),
            cmd("ack", "ack-10", serde_json::json!({"acked_seq": 10}), &[]),
            cmd(
                "set_mapping",
                "map-b",
                serde_json::json!({}),
                &["files/b.csv"],
            ),
            cmd("ack", "ack-20", serde_json::json!({"acked_seq": 20}), &[]),
        ],
        vec![
            ("files/a.csv", Source::Bytes(a.into())),
            ("files/b.csv", Source::Bytes(b.into())),
        ],
    );
    v.bundle("multi.vsb", d)
}

fn assert_applied_exactly_once(v: &Vessel, scenario: &str) {
    let store = v.store();
    let cmds = store.commands().unwrap();
    assert_eq!(cmds.len(), 4, "{scenario}");
    for c in &cmds {
        assert_eq!(
            c.state.as_str(),
            "done",
            "{scenario}: {} is {:?}",
            c.cmd_id,
            c.state
        );
    }
    // One completion per command in the audit trail, and as many starts as the journal counted.
    let done: Vec<String> = v
        .audit("command_done")
        .into_iter()
        .filter_map(|r| r.1)
        .collect();
    let mut sorted = done.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["ack-10", "ack-20", "map-a", "map-b"],
        "{scenario}: each command done once"
    );
    let mut starts: BTreeMap<String, i64> = BTreeMap::new();
    for r in v.audit("command_started") {
        *starts.entry(r.1.unwrap()).or_default() += 1;
    }
    for c in &cmds {
        assert_eq!(
            starts.get(&c.cmd_id).copied().unwrap_or(0),
            c.attempts,
            "{scenario}: journal attempts of {} match the audit",
            c.cmd_id
        );
    }
    assert_eq!(
        done,
        vec!["map-a", "ack-10", "map-b", "ack-20"],
        "{scenario}: in bundle order"
    );
    assert_eq!(
        v.audit("bundle_accepted").len(),
        1,
        "{scenario}: journaled once"
    );
    assert_eq!(
        v.audit("bundle_finished").len(),
        1,
        "{scenario}: finished once"
    );
    let maps: Vec<(String, String)> = store
        .mappings()
        .unwrap()
        .into_iter()
        .map(|m| (m.legacy_id, m.moodle_key))
        .collect();
    assert_eq!(maps.len(), 4, "{scenario}: {maps:?}");
    assert_eq!(
        store.ack("outbox").unwrap().unwrap().acked_seq,
        20,
        "{scenario}"
    );
    assert!(v.inbox_names().is_empty(), "{scenario}: inbox empty");
    let archived: Vec<_> = std::fs::read_dir(v.path("state/archive"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(archived.len(), 1, "{scenario}: archived once");
    let work: Vec<_> = std::fs::read_dir(v.path("state/work"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        work.is_empty(),
        "{scenario}: no leftovers in work/: {work:?}"
    );
}

#[test]
fn sigkill_at_every_failpoint_then_restart_applies_every_command_exactly_once() {
    let mut scenarios = 0;
    for point in failpoint::ALL {
        // Command failpoints are reached once per command; kill at each of the four.
        let hits = if point.starts_with("command.") { 4 } else { 1 };
        for n in 1..=hits {
            let scenario = format!("{point}@{n}");
            let v = Vessel::new();
            let b = multi_command_bundle(&v);
            v.drop_in(&b, "multi.vsb");
            let out = v.run_env(
                &["agent", "--once", "--config", v.config.to_str().unwrap()],
                &[("VESSEL_SYNC_FAILPOINT", &scenario)],
            );
            assert_eq!(
                out.status.signal(),
                Some(9),
                "{scenario}: the agent should have been killed; stdout {}",
                String::from_utf8_lossy(&out.stdout)
            );
            v.once();
            // A second restart finds nothing more to do.
            let again = v.once();
            assert!(again.contains("nothing to do"), "{scenario}: {again}");
            assert_applied_exactly_once(&v, &scenario);
            scenarios += 1;
        }
    }
    assert_eq!(scenarios, 3 + 3 * 4 + 1);
}

#[test]
fn killed_twice_in_a_row_still_exactly_once() {
    let v = Vessel::new();
    let b = multi_command_bundle(&v);
    v.drop_in(&b, "multi.vsb");
    for point in ["command.before-commit@2", "command.after-start@1"] {
        let out = v.run_env(
            &["agent", "--once", "--config", v.config.to_str().unwrap()],
            &[("VESSEL_SYNC_FAILPOINT", point)],
        );
        assert_eq!(out.status.signal(), Some(9), "{point}");
    }
    v.once();
    assert_applied_exactly_once(&v, "twice");
}

#[test]
fn same_bundle_twice_or_while_the_agent_is_down_is_applied_once() {
    let v = Vessel::new();
    let b = multi_command_bundle(&v);
    // Two copies arrive while the agent is down.
    v.drop_in(&b, "multi.vsb");
    v.drop_in(&b, "multi-copy.vsb");
    let out = v.once();
    assert!(
        out.contains("duplicate    multi.vsb") || out.contains("duplicate    multi-copy.vsb"),
        "{out}"
    );
    // And once more later.
    v.drop_in(&b, "multi-again.vsb");
    let out = v.once();
    assert!(out.contains("duplicate    multi-again.vsb"), "{out}");
    assert_applied_exactly_once(&v, "duplicates");
    assert_eq!(
        v.audit("bundle_duplicate").len(),
        2,
        "one audit line per duplicate"
    );
}

/// Law 4 with at-least-once: a command the agent keeps dying under is resumed while it makes
/// progress (a power blip storm during a long import), given up only after dying again and
/// again with none, and then retried on board without a new bundle from shore.
#[test]
fn interrupted_is_not_failed_and_a_given_up_command_is_retried_on_board() {
    let kill = |v: &Vessel| {
        let out = v.run_env(
            &["agent", "--once", "--config", v.config.to_str().unwrap()],
            &[("VESSEL_SYNC_FAILPOINT", "command.after-start")],
        );
        assert!(!out.status.success(), "the failpoint killed the agent");
    };
    let csv = "kind,legacy_id,moodle_key,course\ncourse,L-1,ERM-110,\n";

    // Twelve deaths, each after the command checkpointed a little further: resumed every time.
    let v = Vessel::new();
    v.drop_in(&v.bundle("m.vsb", mapping(1, csv)), "m.vsb");
    for i in 0..12 {
        kill(&v);
        let cmd = &v.store().commands().unwrap()[0];
        let safe = cmd.cmd_id.replace(':', "_");
        v.file(
            &format!("state/reports/{safe}.import-progress.json"),
            format!("{{\"rows_done\": {}}}", (i + 1) * 500).as_bytes(),
        );
    }
    v.once();
    let cmd = &v.store().commands().unwrap()[0];
    assert_eq!(cmd.state.as_str(), "done", "{:?}", cmd.reason);
    assert_eq!(v.store().mappings().unwrap().len(), 1);

    // Ten deaths with no progress at all: given up, with what to do; the rest proceeds.
    let v = Vessel::new();
    v.drop_in(&v.bundle("m.vsb", mapping(1, csv)), "m.vsb");
    for _ in 0..10 {
        kill(&v);
    }
    v.drop_in(&v.bundle("a.vsb", ack(2, 7)), "a.vsb");
    v.once();
    let mapping_cmd = |v: &Vessel| {
        v.store()
            .commands()
            .unwrap()
            .into_iter()
            .find(|c| c.kind == "set_mapping")
            .unwrap()
    };
    let cmd = mapping_cmd(&v);
    assert_eq!(cmd.state.as_str(), "failed");
    let reason = cmd.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("given up") && reason.contains("vessel-sync retry"),
        "{reason}"
    );
    assert_eq!(
        v.store().ack("outbox").unwrap().unwrap().acked_seq,
        7,
        "the next bundle ran"
    );
    assert!(v.store().mappings().unwrap().is_empty());

    // The IT officer retries it on board: it runs from the archived bundle, once.
    let out = v.run(&["retry", &cmd.cmd_id, "--config", v.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    v.once();
    let after = mapping_cmd(&v);
    assert_eq!(after.state.as_str(), "done", "{:?}", after.reason);
    assert_eq!(v.store().mappings().unwrap().len(), 1);
    assert_eq!(v.audit("command_retried").len(), 1);
    let unknown = v.run(&["retry", "no-such", "--config", v.config.to_str().unwrap()]);
    assert_eq!(unknown.status.code(), Some(66));
}
