//! The command line as an operator uses it: keygen, bundle build/inspect/verify, check-config,
//! status, audit, and `--help` that explains.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

fn s(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn keygen_build_inspect_verify_round_trip() {
    let v = Vessel::new();
    let p = |r: &str| v.path(r).to_str().unwrap().to_string();
    let out = v.run(&["keygen", "--out", &p("keys/desk")]);
    assert!(out.status.success(), "{:?}", s(&out));
    let mode = std::fs::metadata(v.path("keys/desk.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // Refuses to overwrite.
    assert!(
        !v.run(&["keygen", "--out", &p("keys/desk")])
            .status
            .success()
    );

    v.file(
        "spec/mapping.csv",
        b"kind,legacy_id,moodle_key,course\ncourse,L-1,ERM-110,\n",
    );
    v.file(
        "spec/spec.toml",
        format!(
            "recipient = \"{VESSEL}\"\nsequence = 1\nexpires_in = \"30days\"\n\n[[command]]\ntype = \"set_mapping\"\nid = \"map-1\"\nfiles = [\"mapping.csv\"]\n\n[[command]]\ntype = \"ack\"\nargs = {{ acked_seq = 12 }}\n"
        )
        .as_bytes(),
    );
    let out = v.run(&[
        "bundle",
        "build",
        "--spec",
        &p("spec/spec.toml"),
        "--key",
        &p("keys/desk.key"),
        "--out",
        &p("out.vsb"),
    ]);
    assert!(out.status.success(), "{:?}", s(&out));

    let (text, _) = s(&v.run(&["bundle", "inspect", &p("out.vsb")]));
    assert!(
        text.contains("set_mapping map-1")
            && text.contains("files/mapping.csv")
            && text.contains("NOT verified"),
        "{text}"
    );
    let json = v.run(&["bundle", "inspect", "--json", &p("out.vsb")]);
    let m: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(m["sequence"], 1);
    assert_eq!(m["commands"][1]["args"]["acked_seq"], 12);

    // (bundle, trusted key, --vessel, expected exit code, what stderr must say)
    let cases: [(&str, &str, Option<&str>, i32, &str); 4] = [
        ("out.vsb", "keys/desk.pub", Some(VESSEL), 0, ""),
        (
            "out.vsb",
            "keys/ops.pub",
            None,
            65,
            "not in this vessel's keyring",
        ),
        (
            "out.vsb",
            "keys/desk.pub",
            Some("mv-other"),
            65,
            "addressed to vessel",
        ),
        ("nope.vsb", "keys/desk.pub", None, 66, ""),
    ];
    for (file, key, vessel, code, says) in cases {
        let (file, key) = (p(file), p(key));
        let mut args = vec!["bundle", "verify", &file, "--trust", &key];
        if let Some(id) = vessel {
            args.extend(["--vessel", id]);
        }
        let out = v.run(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {:?}", s(&out));
        assert!(s(&out).1.contains(says), "{args:?}: {:?}", s(&out));
    }
}

#[test]
fn check_config_reports_every_error_with_its_line_and_exits_78() {
    let v = Vessel::new();
    let bad = v.file(
        "bad.toml",
        b"version = 1\n[vessel]\nid = \"MV Aurora!\"\n[inbox]\nsettle = \"soon\"\nscan_intervall = 5\n[keyring]\ntrusted = [\"keys/missing.pub\"]\n[moodle]\nuri = \"http://x\"\n",
    );
    let out = v.run(&["check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let err = s(&out).1;
    for (line, what) in [
        (3, "vessel.id"),
        (5, "inbox.settle"),
        (6, "did you mean 'scan_interval'"),
        (8, "keyring.trusted"),
        (9, "[moodle] needs db_type"),
        (10, "unknown key 'uri'"),
    ] {
        assert!(
            err.contains(&format!("bad.toml:{line}: ")) && err.contains(what),
            "line {line} / {what} missing in:\n{err}"
        );
    }
    assert!(err.contains("6 problems"), "{err}");
    let good = v.run(&["check-config", "--config", v.config.to_str().unwrap()]);
    assert!(good.status.success(), "{:?}", s(&good));
    assert!(!v.path("state").exists(), "check-config creates nothing");
    // The agent itself refuses a bad config with the same exit code (systemd does not restart).
    assert_eq!(
        v.run(&["agent", "--once", "--config", bad.to_str().unwrap()])
            .status
            .code(),
        Some(78)
    );
    let missing = v.run(&["check-config", "--config", "/nonexistent/agent.toml"]);
    assert_eq!(missing.status.code(), Some(78));
    assert!(s(&missing).1.contains("cannot read the config file"));
}

#[test]
fn audit_exports_json_lines_and_formula_safe_csv() {
    let v = Vessel::new();
    let b = v.bundle("b.vsb", ack(1, 3));
    v.drop_in(&b, "b.vsb");
    std::fs::write(v.inbox().join("=HYPERLINK(evil).vsb"), b"junk").unwrap();
    v.once();
    let cfg = v.config.to_str().unwrap();
    let json = v.run(&["audit", "--json", "--config", cfg]);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"bundle_accepted")
            && kinds.contains(&"command_done")
            && kinds.contains(&"bundle_rejected"),
        "{kinds:?}"
    );
    let accepted = events
        .iter()
        .find(|e| e["event"] == "bundle_accepted")
        .unwrap();
    assert_eq!(
        accepted["actor"],
        v.ops.id.as_str(),
        "actor is the issuer key id"
    );
    let csv = s(&v.run(&["audit", "--csv", "--config", cfg])).0;
    assert!(
        csv.starts_with("id,time,actor,bundle_id,command_id,event,outcome,detail\n"),
        "{csv}"
    );
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    for rec in r.records() {
        for cell in rec.unwrap().iter() {
            assert!(!cell.starts_with('='), "formula-looking cell: {cell}");
        }
    }
}

#[test]
fn help_explains_every_level() {
    let v = Vessel::new();
    for args in [
        &["--help"][..],
        &["bundle", "--help"],
        &["bundle", "build", "--help"],
        &["agent", "--help"],
        &["bundle", "verify", "--help"],
    ] {
        let out = v.run(args);
        assert!(out.status.success());
        let text = s(&out).0;
        assert!(text.len() > 400, "{args:?} help is too thin:\n{text}");
    }
    let top = s(&v.run(&["--help"])).0;
    assert!(top.contains("vessel-sync demo"), "{top}");
    let verify = s(&v.run(&["bundle", "verify", "--help"])).0;
    assert!(verify.contains("Exit 0 only when valid"), "{verify}");
}

#[cfg(not(feature = "lab"))]
#[test]
fn the_packaged_build_has_no_demo_and_says_where_it_lives() {
    let v = Vessel::new();
    let out = v.run(&["demo", "--dir", v.path("demo").to_str().unwrap()]);
    let (text, err) = s(&out);
    assert_eq!(out.status.code(), Some(69), "{text}\n{err}");
    assert!(err.contains("cargo run --release -- demo"), "{err}");
    assert!(
        !v.path("demo").exists(),
        "the packaged build made a demo folder"
    );
    let out = v.run(&["bench", "users"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(
        s(&out).1.contains("packaging/cross-build.sh lab"),
        "{}",
        s(&out).1
    );
}

#[cfg(feature = "lab")]
#[test]
fn demo_runs_and_shows_apply_replay_and_quarantine() {
    let v = Vessel::new();
    let out = v.run(&["demo", "--dir", v.path("demo").to_str().unwrap()]);
    let (text, err) = s(&out);
    assert!(out.status.success(), "{text}\n{err}");
    assert!(text.contains("accepted     0001-mapping.vsb"), "{text}");
    assert!(
        text.contains("duplicate    0001-mapping-again.vsb"),
        "{text}"
    );
    assert!(
        text.contains("QUARANTINED  0001-old-ack.vsb (replay)"),
        "{text}"
    );
    assert!(
        text.contains("QUARANTINED  0002-tampered.vsb (digest_mismatch)"),
        "{text}"
    );
    assert!(
        text.contains("QUARANTINED  0002-rogue.vsb (unknown_key)"),
        "{text}"
    );
    assert!(text.contains("accepted     0002-mapping.vsb"), "{text}");
}

#[test]
fn the_shipped_example_config_is_valid_once_edited_and_refused_before() {
    let v = Vessel::new();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/agent.toml.example"
    ))
    .unwrap();
    let raw = v.file("example.toml", example.as_bytes());
    let out = v.run(&["check-config", "--config", raw.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(78),
        "the unedited example must not start"
    );
    let err = s(&out).1;
    assert!(err.contains("still the placeholder"), "{err}");
    // Edited as the README says (vessel id, key path, directories): every documented key is valid.
    let state = v.path("state");
    let edited = example
        .replace("\"CHANGE-ME\"", "\"mv-aurora\"")
        .replace(
            "/etc/vessel-sync/keys/shore-ops.pub",
            v.path("keys/ops.pub").to_str().unwrap(),
        )
        .replace("/var/lib/vessel-sync", state.to_str().unwrap());
    let ok = v.file("edited.toml", edited.as_bytes());
    let out = v.run(&["check-config", "--config", ok.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", s(&out));
}

#[test]
fn man_pages_and_completions_come_from_the_cli_definition() {
    let v = Vessel::new();
    let dir = v.path("man");
    let out = v.run(&["manpages", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", s(&out));
    for page in [
        "vessel-sync.1",
        "vessel-sync-agent.1",
        "vessel-sync-bundle-build.1",
        "vessel-sync-check-config.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not a man page"
        );
    }
    let agent = std::fs::read_to_string(dir.join("vessel-sync-agent.1")).unwrap();
    assert!(
        agent.contains("exactly once"),
        "the long help is in the page"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = v.run(&["completions", shell]);
        let text = s(&out).0;
        assert!(
            out.status.success() && text.contains("check-config"),
            "{shell}: {text}"
        );
    }
    let bash = v.file("completion.bash", &v.run(&["completions", "bash"]).stdout);
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&bash)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "bash completion does not parse: {:?}",
        s(&syntax)
    );
}

#[test]
fn a_report_piped_into_head_ends_quietly_when_head_has_read_enough() {
    // `status`, `audit`, `shore status`, `shore course status` and `completions` share this;
    // completions print 100 kB, more than a pipe holds, so the write after `head` left fails.
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            r#""$0" completions bash | head -c 100 >/dev/null; echo "${PIPESTATUS[0]}""#,
        ])
        .arg(crate::support::bin())
        .output()
        .unwrap();
    let (code, err) = s(&out);
    assert_eq!(
        code.trim(),
        "141",
        "ended by SIGPIPE, like any Unix tool: {err}"
    );
    assert!(
        !err.contains("panicked"),
        "no panic on a closed pipe: {err}"
    );
}

#[test]
fn bench_shore_counts_every_record_of_every_vessel_stored_once_and_acknowledged() {
    let v = Vessel::new();
    // The test run's own PostgreSQL server, named as a ship's IT officer would name theirs: the
    // packaged build (the suite under qemu) starts none of its own.
    let pg = testkit::pgtemp::TempPg::shared().expect("a throwaway PostgreSQL server");
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
    let out = v.run(&[
        "bench",
        "shore",
        "--vessels",
        "12",
        "--postgres",
        &url,
        "--json",
    ]);
    let (text, err) = s(&out);
    assert!(out.status.success(), "{text}\n{err}");
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    // One receiver on SQLite, one on PostgreSQL, two on PostgreSQL: each counted.
    let runs = j["runs"].as_array().unwrap();
    let setups: Vec<(String, u64)> = runs
        .iter()
        .map(|r| {
            (
                r["store"].as_str().unwrap().to_string(),
                r["receivers"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        setups,
        [
            ("sqlite".into(), 1),
            ("postgres".into(), 1),
            ("postgres".into(), 2)
        ],
        "{j}"
    );
    for r in runs {
        assert_eq!(r["vessels"], 12, "{j}");
        assert_eq!(r["stored_records"], 12_000, "{j}");
        assert_eq!(r["acknowledged"], 12, "{j}");
        assert_eq!(r["refused"], 0, "{j}");
    }
}

/// The agent's log written to a file or a pipe (`agent > agent.log`, cron) is plain text: no
/// ANSI colour codes, which made such logs unreadable.
#[test]
fn the_log_in_a_file_or_a_pipe_carries_no_colour_codes() {
    let shore = crate::support::shore::Shore::new();
    let v = crate::support::shore::linked_vessel(&shore, "https://127.0.0.1:1", "");
    let out = v.run(&["sync", "--config", v.config.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("cannot reach shore"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log: {log:?}"
    );
}

/// `keygen`'s advice fits the key: a vessel's own key stays on board and its .pub goes ashore;
/// an operator's key stays ashore (it was told "keep it ashore" for a vessel's key too).
#[test]
fn keygen_advice_fits_a_vessels_own_key_and_an_operators() {
    let v = Vessel::new();
    let out = v.run(&[
        "keygen",
        "--vessel",
        "--out",
        v.path("keys/mv").to_str().unwrap(),
    ]);
    let (text, err) = s(&out);
    assert!(out.status.success(), "{err}");
    assert!(text.contains("stays on board"), "{text}");
    assert!(
        text.contains("shore vessel add ID --pubkey mv.pub"),
        "{text}"
    );
    assert!(!text.contains("keep it ashore"), "{text}");
    let out = v.run(&["keygen", "--out", v.path("keys/desk").to_str().unwrap()]);
    let (text, _) = s(&out);
    assert!(text.contains("keep it ashore"), "{text}");
    let out = v.run(&[
        "keygen",
        "--vessel",
        "--root",
        "--out",
        v.path("keys/x").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "a root key is no vessel's key");
}

/// `check-config` names a secret file the agent would fail to read at work: the Moodle
/// database password, the web-service token, the uplink's token (before, a missing one was
/// found only at the first capture or sync).
#[test]
fn check_config_reports_missing_password_and_token_files() {
    let v = Vessel::with(Options {
        extra: "[moodle]\ndb_type = \"postgres\"\ndb_password_file = \"missing-db.password\"\nurl = \"http://127.0.0.1:1\"\ntoken_file = \"missing-ws.token\"\n",
        ..Options::default()
    });
    let out = v.run(&["check-config", "--config", v.config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78), "{:?}", s(&out));
    let err = s(&out).1;
    assert!(
        err.contains("moodle.db_password_file") && err.contains("missing-db.password"),
        "{err}"
    );
    assert!(
        err.contains("moodle.token_file") && err.contains("missing-ws.token"),
        "{err}"
    );
    std::fs::write(v.path("missing-db.password"), "secret\n").unwrap();
    std::fs::write(v.path("missing-ws.token"), "t\n").unwrap();
    let out = v.run(&["check-config", "--config", v.config.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", s(&out));
}
