//! `import_progress` end to end: progress from shore applied through the fake Moodle's
//! completion overrides, mirrored into a real PostgreSQL Moodle database as Moodle would write
//! it, captured and synced to a real shore receiver: shore receives nothing from the import,
//! while a learner's real progress made at the same time still goes. Rows for unknown learners,
//! courses or activities are quarantined with reasons.

use testkit::fake::{FakeMoodle, TOKEN};
use vessel::store::CommandState;
use wire::envelope::Source;

use crate::progress::{append, capture};
use crate::support::dbs::Pg;
use crate::support::shore::{Shore, linked_vessel, sync};
use crate::support::{VESSEL, cmd, draft};

/// The fake site holds what the PostgreSQL rig holds: users, courses, course modules.
fn mirror_rig(pg: &Pg, moodle: &FakeMoodle) {
    let mut st = moodle.state();
    st.users.retain(|id, _| *id == 2);
    for line in pg
        .psql(
            "moodle",
            "SELECT id, username, email, idnumber FROM mdl_user WHERE id > 2 ORDER BY id",
        )
        .lines()
    {
        let f: Vec<&str> = line.split('|').collect();
        let id = st.add_user(f[1], f[2], f[3]);
        assert_eq!(
            id.to_string(),
            f[0],
            "the fake numbers users as the rig does"
        );
    }
    for line in pg
        .psql("moodle", "SELECT cm.id, cm.course, m.name, COALESCE(cm.idnumber, '') FROM mdl_course_modules cm JOIN mdl_modules m ON m.id = cm.module ORDER BY cm.id")
        .lines()
    {
        let f: Vec<&str> = line.split('|').collect();
        st.modules.insert(
            f[0].parse().unwrap(),
            (f[1].parse().unwrap(), f[2].to_string(), format!("activity {}", f[0]), f[3].to_string()),
        );
    }
}

#[test]
fn imported_progress_is_applied_never_echoed_to_shore_and_unknown_rows_are_quarantined() {
    let pg = Pg::start();
    let mut shore = Shore::new();
    shore.start();
    let moodle = FakeMoodle::start().unwrap();
    mirror_rig(&pg, &moodle);
    let v = linked_vessel(&shore, &format!("https://{}", shore.addr()), "");
    append(&v, &pg.moodle_section(&v.path("db.pw")));
    // The [moodle] section gains the web services (one table: insert after its header).
    let text = std::fs::read_to_string(&v.config).unwrap().replacen(
        "[moodle]\n",
        &format!(
            "[moodle]\nurl = \"{}\"\ntoken_file = \"moodle.token\"\n",
            moodle.url()
        ),
        1,
    );
    std::fs::write(&v.config, text).unwrap();
    std::fs::write(v.path("moodle.token"), TOKEN).unwrap();

    // Everything on board so far goes home first.
    capture(&v);
    assert!(sync(&v).status.success());
    let before = shore.counts().0;
    assert!(before > 0);

    let csv = "learner,course,activity,state\n\
               SEAF-100235,SAFETY-101,SAFETY-101-PST,1\n\
               SEAF-100231,SAFETY-101,SAFETY-101-PST,1\n\
               SEAF-999999,SAFETY-101,SAFETY-101-PST,1\n\
               SEAF-100234,NAV-900,NAV-900-Q1,1\n\
               SEAF-100234,SAFETY-101,SAFETY-101-XYZ,1\n";
    let built = v.bundle(
        "import.vsb",
        draft(
            VESSEL,
            1,
            vec![cmd(
                "import_progress",
                "history-1",
                serde_json::json!({}),
                &["files/progress.csv"],
            )],
            vec![("files/progress.csv", Source::Bytes(csv.as_bytes().to_vec()))],
        ),
    );
    v.drop_in(&built, "import.vsb");
    let out = v.run(&["agent", "--once", "--config", v.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = v
        .store()
        .commands()
        .unwrap()
        .into_iter()
        .find(|c| c.cmd_id == "history-1")
        .unwrap();
    let note = c.reason.clone().unwrap_or_default();
    assert_eq!(c.state, CommandState::Done, "{note}");
    assert!(note.contains("1 completions applied"), "{note}");
    assert!(
        note.contains("1 already so on board"),
        "SEAF-100231 had it: {note}"
    );
    assert!(
        note.contains("3 rows quarantined (first: row 4 learner \"SEAF-999999\""),
        "{note}"
    );
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(v.path("state/reports/history-1.import-report.json")).unwrap(),
    )
    .unwrap();
    let reasons: Vec<String> = report["quarantined"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| format!("{} {}", q["row"], q["field"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons, ["4 learner", "5 course", "6 activity"]);
    // Moodle got exactly the one override: user 7 (SEAF-100235), cmid 4.
    assert_eq!(
        moodle
            .state()
            .completions
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect::<Vec<_>>(),
        [((7, 4), 1)]
    );

    // Moodle writes the override into its database; a learner also completes something real.
    pg.psql(
        "moodle",
        "INSERT INTO mdl_course_modules_completion (id, coursemoduleid, userid, completionstate, overrideby, timemodified) VALUES (901, 4, 7, 1, 2, 1795400000), (902, 7, 7, 1, NULL, 1795400005);",
    );
    let r = capture(&v);
    assert_eq!(
        (r["echoes"].as_u64(), r["queued"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert!(sync(&v).status.success());
    let mut records = Vec::new();
    shore
        .db()
        .records_since(0, |_, _, r, _| records.push(r))
        .unwrap();
    assert_eq!(
        shore.counts().0,
        before + 1,
        "only the real completion reached shore"
    );
    assert!(
        !records
            .iter()
            .any(|r| r.item == "SAFETY-101-PST" && r.user == "SEAF-100235"),
        "the imported completion never reached shore"
    );
    assert!(
        records
            .iter()
            .any(|r| r.user == "SEAF-100235" && r.item == "SAFETY-101-SFC")
    );
}
