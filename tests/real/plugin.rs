//! The companion plugin `local_vesselsync` in a real cloud Moodle, on 5.0 (PostgreSQL and
//! MariaDB) and 4.5 LTS (PostgreSQL): shore forwards through it in batches; every completion and
//! grade lands with the time the learner made it (to the second, in SQL), with where it came
//! from kept beside it; newer wins inside Moodle; a course hidden by a retirement still
//! receives its last records; a crash at each forwarding step applies nothing twice; and a
//! learner the cloud lacks is held with the true reason.

use moodle::ws::Params;
use testkit::realmoodle::{Db, Version};
use wire::progress::{Record, RecordKind};

use super::Site;
use super::cloud::{forward, point_at_cloud, restore, restore_from};
use super::progress::{activities, learner};

crate::on_both!(
    through_the_plugin_progress_keeps_its_time_newer_wins_and_a_hidden_course_still_receives_it,
    an_import_on_board_through_the_plugin_keeps_each_completions_time_and_is_never_sent_back,
);

mod moodle45 {
    #[test]
    fn through_the_plugin_on_moodle_4_5_progress_keeps_its_time() {
        super::scenario(
            testkit::realmoodle::Db::Postgres,
            testkit::realmoodle::Version::V45,
        )
    }

    #[test]
    fn the_plugin_installs_and_upgrades_with_one_command_from_the_binary() {
        super::install_from_the_binary()
    }

    #[test]
    fn a_mixed_fleet_a_5_0_cloud_course_restored_on_a_4_5_vessel_and_its_progress_home_with_its_time()
     {
        super::mixed_fleet()
    }
}

fn through_the_plugin_progress_keeps_its_time_newer_wins_and_a_hidden_course_still_receives_it(
    db: Db,
) {
    scenario(db, Version::V50)
}

fn record(
    kind: RecordKind,
    user: &str,
    course: &str,
    item: &str,
    value: &str,
    time: i64,
) -> Record {
    Record {
        kind,
        user: user.into(),
        course: course.into(),
        item: item.into(),
        user_legacy: String::new(),
        course_legacy: String::new(),
        item_legacy: String::new(),
        value: value.into(),
        time,
    }
}

/// Points `shore` at `cloud` with the core functions and the plugin's on its service.
fn point_at_plugin_cloud(shore: &crate::support::shore::Shore, cloud: &Site) {
    point_at_cloud(
        shore,
        cloud,
        "vessel_sync_shore_plugin",
        &[
            shore::forward::CLOUD_FUNCTIONS,
            shore::forward::PLUGIN_FUNCTIONS,
        ]
        .concat(),
    );
}

fn scenario(db: Db, version: Version) {
    let tag = format!("pl{}{}", &db.name()[..2], version.name().replace('.', ""));
    let cloud = Site::shared_on(db, version, &tag);
    let cid = restore(&cloud, 1);
    let course = cloud.name("S101");
    let acts = activities(&cloud, cid);
    let manual: Vec<usize> = (0..acts.len()).filter(|&i| acts[i].3 == 1).collect();
    assert!(manual.len() >= 2, "{acts:?}");
    let (m0, m1) = (manual[0], manual[1]);
    let assign = acts
        .iter()
        .position(|a| a.2 == "assign")
        .expect("the backup has an assignment");
    let (l1, _) = learner(&cloud, "L1", cid, 5);
    let (l2, _) = learner(&cloud, "L2", cid, 5);
    let admin = cloud.value("SELECT id FROM mdl_user WHERE username = 'admin'");

    // The course is retired: hidden in the cloud before its last records arrive.
    cloud.admin(
        "core_course_update_courses",
        &Params::new()
            .set("courses[0][id]", cid)
            .set("courses[0][visible]", 0),
    );
    // A trainer in the cloud marks L1's second activity complete now: newer than the ship's.
    cloud.admin(
        "core_completion_override_activity_completion_status",
        &Params::new()
            .set("userid", l1)
            .set("cmid", acts[m1].0)
            .set("newstate", 1),
    );

    // Shore holds what a vessel sent: completions and a grade made days ago at sea.
    let shore = crate::support::shore::Shore::new();
    point_at_plugin_cloud(&shore, &cloud);
    let t0 = 1_780_000_000; // 2026-05-28, long before the test runs
    let (who1, who2) = (cloud.name("L1"), cloud.name("L2"));
    let records = vec![
        record(
            RecordKind::ActivityCompletion,
            &who1,
            &course,
            &acts[m0].1,
            "1",
            t0,
        ),
        record(
            RecordKind::Grade,
            &who1,
            &course,
            &acts[assign].1,
            "7.50000",
            t0 + 60,
        ),
        record(
            RecordKind::ActivityCompletion,
            &who2,
            &course,
            &acts[m0].1,
            "1",
            t0 + 120,
        ),
        // Older than the trainer's change in the cloud: the cloud keeps its value.
        record(
            RecordKind::ActivityCompletion,
            &who1,
            &course,
            &acts[m1].1,
            "0",
            t0 + 180,
        ),
        record(
            RecordKind::ActivityCompletion,
            &cloud.name("NOBODY"),
            &course,
            &acts[m0].1,
            "1",
            t0 + 240,
        ),
        record(
            RecordKind::CourseCompletion,
            &who1,
            &course,
            "",
            "complete",
            t0 + 300,
        ),
    ];
    let mut store = shore.db();
    store
        .add_vessel(crate::support::VESSEL, &"0".repeat(64), "", "test", t0)
        .unwrap();
    store
        .store_batch(
            &shore::store::BatchIn {
                vessel: crate::support::VESSEL,
                seq: 1,
                sha256: &"0".repeat(64),
                envelope_id: "plugin-test",
                records: &records,
                previous: None,
                rotation: None,
                settled: 0,
                via: "https",
            },
            t0 + 400,
        )
        .unwrap();
    drop(store);

    // Shore dies at each step of a batch: before the calls, then after the cloud applied it
    // but before shore committed the outcomes.
    for point in base::failpoint::FORWARD {
        let (ok, _, _) = forward(&shore, &[("VESSEL_SYNC_FAILPOINT", point)]);
        assert!(!ok, "{point} stopped the pass");
    }
    let (ok, pass, err) = forward(&shore, &[]);
    assert!(ok, "{err}{}", cloud.said());
    assert_eq!(pass["pass"]["path"], "plugin", "{pass}");
    let outcomes = &pass["pass"]["outcomes"];
    // The batch the cloud took before the crash is found there, never applied twice.
    assert_eq!(
        outcomes["already"].as_u64().unwrap_or(0) + outcomes["applied"].as_u64().unwrap_or(0),
        3,
        "{pass}"
    );
    assert_eq!(outcomes["older"].as_u64(), Some(1), "{pass}");
    assert_eq!(outcomes["held"].as_u64(), Some(1), "{pass}");
    assert_eq!(outcomes["derived"].as_u64(), Some(1), "{pass}");
    let held = pass["summary"]["held"].to_string();
    assert!(
        held.contains(&format!(
            "no learner {} on the cloud Moodle",
            cloud.name("NOBODY")
        )),
        "the true reason, and nothing 'not enrolled' about the hidden course: {pass}"
    );
    assert!(!held.contains("not enrolled"), "{pass}");

    // In the cloud's database: the learner's time, to the second, and the grade's.
    let completion = |user: &str, cm: i64| {
        cloud.rows(&format!(
            "SELECT completionstate, timemodified, COALESCE(overrideby, 0) FROM mdl_course_modules_completion WHERE userid = {user} AND coursemoduleid = {cm}"
        ))
    };
    assert_eq!(
        completion(&l1.to_string(), acts[m0].0),
        vec![vec!["1".to_string(), t0.to_string(), admin.clone()]]
    );
    assert_eq!(
        completion(&l2.to_string(), acts[m0].0)[0][..2],
        ["1".to_string(), (t0 + 120).to_string()]
    );
    let kept = completion(&l1.to_string(), acts[m1].0);
    assert_eq!(kept[0][0], "1", "the trainer's newer value is kept");
    let grade = cloud.rows(&format!(
        "SELECT gg.rawgrade, gg.timemodified FROM mdl_grade_grades gg JOIN mdl_grade_items gi ON gi.id = gg.itemid WHERE gi.itemmodule = 'assign' AND gi.courseid = {cid} AND gg.userid = {l1}"
    ));
    assert!(grade[0][0].starts_with("7.5"), "{grade:?}");
    assert_eq!(grade[0][1], (t0 + 60).to_string(), "the grade's own time");
    let applied = cloud.rows(&format!(
        "SELECT kind, timeoriginal, source FROM mdl_local_vesselsync_applied WHERE userid = {l1} ORDER BY timeoriginal"
    ));
    assert_eq!(
        applied,
        vec![
            vec![
                "completion".to_string(),
                t0.to_string(),
                crate::support::VESSEL.to_string()
            ],
            vec![
                "grade".to_string(),
                (t0 + 60).to_string(),
                crate::support::VESSEL.to_string()
            ],
        ],
        "where each record came from and when it was made, once each"
    );
    let events = cloud.value(&format!(
        "SELECT COUNT(*) FROM mdl_logstore_standard_log WHERE eventname LIKE '%course_module_completion_updated' AND relateduserid = {l1} AND contextinstanceid = {}",
        acts[m0].0
    ));
    assert_eq!(events, "1", "Moodle's own event, once");
    assert_eq!(
        cloud.value(&format!("SELECT visible FROM mdl_course WHERE id = {cid}")),
        "0",
        "the course stays hidden, and kept"
    );

    // Nothing left, nothing twice; the status says which way the cloud is reached.
    let (ok, again, err) = forward(&shore, &[]);
    assert!(ok, "{err}");
    assert_eq!(
        again["pass"]["outcomes"]["applied"],
        serde_json::Value::Null,
        "{again}"
    );
    let status = String::from_utf8_lossy(&shore.run(&["status"]).stdout).to_string();
    assert!(status.contains("local_vesselsync"), "{status}");
    eprintln!(
        "forward through the plugin into a real Moodle {} on {db:?}: {}",
        version.name(),
        pass["pass"]
    );
}

/// `import_progress` on a ship whose Moodle has the plugin on the agent's service: each
/// completion shows the date in the CSV's `time` column, newer progress already on board is
/// kept, and nothing imported is captured as new progress.
fn an_import_on_board_through_the_plugin_keeps_each_completions_time_and_is_never_sent_back(
    db: Db,
) {
    use vessel::store::CommandState;
    let s = Site::new(db, &format!("ib{}", &db.name()[..2]));
    s.use_plugin_token();
    let cid = restore(&s, 1);
    let course = s.name("S101");
    let acts = activities(&s, cid);
    let manual: Vec<usize> = (0..acts.len()).filter(|&i| acts[i].3 == 1).collect();
    let (m0, m1) = (manual[0], manual[1]);
    let (l1, l1_token) = learner(&s, "L1", cid, 5);
    // On board the learner already completed the second activity, today.
    s.m.ws(
        &l1_token,
        "core_completion_update_activity_completion_status_manually",
        &Params::new().set("cmid", acts[m1].0).set("completed", 1),
    )
    .unwrap();
    assert!(s.run(&["capture"], &[]).status.success(), "{}", s.said());
    let before = s.v.store().course_impact(&course).unwrap().0.records;
    let t0 = 1_760_000_000; // 2025-10-09: history from the cloud
    let csv = format!(
        "learner,course,activity,state,time\n{0},{course},{1},1,{t0}\n{0},{course},{2},0,{t0}\n",
        s.name("L1"),
        acts[m0].1,
        acts[m1].1
    );
    s.send(
        2,
        vec![crate::support::cmd(
            "import_progress",
            "history",
            serde_json::json!({}),
            &["files/p.csv"],
        )],
        vec![("files/p.csv", csv.into_bytes())],
    );
    s.once();
    let note = s.expect("history", CommandState::Done);
    assert!(
        note.contains("1 of them with their original time") && note.contains("1 kept newer"),
        "{note}"
    );
    let row = |cm: i64| {
        s.rows(&format!(
            "SELECT completionstate, timemodified FROM mdl_course_modules_completion WHERE userid = {l1} AND coursemoduleid = {cm}"
        ))
    };
    assert_eq!(
        row(acts[m0].0),
        vec![vec!["1".to_string(), t0.to_string()]],
        "the completion shows the date it was made"
    );
    assert_eq!(
        row(acts[m1].0)[0][0],
        "1",
        "newer progress on board is kept"
    );
    // Nothing imported is captured as new progress.
    assert!(s.run(&["capture"], &[]).status.success(), "{}", s.said());
    let after = s.v.store().course_impact(&course).unwrap().0.records;
    assert_eq!(after, before, "the import is never queued for shore");
}

/// Where a record's time goes inside Moodle (run by hand:
/// `cargo test --test integration -- --ignored real::plugin::profile --nocapture`).
#[test]
#[ignore]
fn profile() {
    let cloud = Site::alone_on(Db::Postgres, Version::V50, "prof");
    let cid = restore(&cloud, 1);
    let mut p = Params::new();
    let mut e = Params::new();
    for i in 0..300 {
        let name = format!("prof{i}");
        p = p
            .set(&format!("users[{i}][username]"), &name)
            .set(&format!("users[{i}][firstname]"), "P")
            .set(&format!("users[{i}][lastname]"), i)
            .set(&format!("users[{i}][email]"), format!("{name}@x.invalid"))
            .set(&format!("users[{i}][password]"), "Sailor#2026")
            .set(&format!("users[{i}][idnumber]"), name.to_uppercase());
    }
    let made = cloud.admin("core_user_create_users", &p);
    for (i, u) in made.as_array().unwrap().iter().enumerate() {
        e = e
            .set(&format!("enrolments[{i}][roleid]"), 5)
            .set(
                &format!("enrolments[{i}][userid]"),
                u["id"].as_i64().unwrap(),
            )
            .set(&format!("enrolments[{i}][courseid]"), cid);
    }
    cloud.admin("enrol_manual_enrol_users", &e);
    std::fs::write(cloud.m.code.join("prof.php"), include_str!("profile.php")).unwrap();
    let course = cloud.name("S101");
    for (mode, prefix) in [("single", "prof1"), ("bulk", "prof2"), ("execute", "prof")] {
        let o = cloud.m.php(&["prof.php", &course, prefix, mode]).unwrap();
        eprintln!(
            "{mode}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// A fleet upgrading ship by ship: the cloud on Moodle 5.0, a vessel still on 4.5 LTS. A course
/// backed up on the cloud is restored on the vessel by the agent, a learner completes an
/// activity on board, and the completion reaches the cloud through a real shore and the plugin
/// with the time it was made on board.
fn mixed_fleet() {
    let tag = "mx45";
    let cloud = Site::shared_on(Db::Postgres, Version::V50, tag);
    let cid = restore(&cloud, 1);
    let course = cloud.name("S101");
    // The cloud's own backup of the course (Moodle 5.0's backup CLI).
    let out_dir = tempfile::tempdir().unwrap();
    let o = cloud
        .m
        .php(&[
            "admin/cli/backup.php",
            &format!("--courseid={cid}"),
            &format!("--destination={}", out_dir.path().display()),
        ])
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let backup = std::fs::read_dir(out_dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "mbz"))
        .expect("the backup CLI wrote an .mbz");
    let (s, mut shore) = Site::with_shore_on(Db::Postgres, Version::V45, tag);
    assert_eq!(s.m.version, Version::V45);
    let vcid = restore_from(&s, 1, std::fs::read(&backup).unwrap());
    let ship = activities(&s, vcid);
    let clouds = activities(&cloud, cid);
    let m0 = (0..ship.len())
        .find(|&i| ship[i].3 == 1)
        .expect("a manual activity");
    assert_eq!(
        ship[m0].1, clouds[m0].1,
        "the same activity keys on both versions"
    );
    let (l1, l1_token) = learner(&s, "L1", vcid, 5);
    let (c1, _) = learner(&cloud, "L1", cid, 5);
    s.m.ws(
        &l1_token,
        "core_completion_update_activity_completion_status_manually",
        &Params::new().set("cmid", ship[m0].0).set("completed", 1),
    )
    .unwrap();
    let on_board = s.value(&format!(
        "SELECT timemodified FROM mdl_course_modules_completion WHERE userid = {l1} AND coursemoduleid = {}",
        ship[m0].0
    ));
    shore.start();
    assert!(s.run(&["capture"], &[]).status.success(), "{}", s.said());
    s.sync();
    shore.stop();
    point_at_plugin_cloud(&shore, &cloud);
    let (ok, pass, err) = forward(&shore, &[]);
    assert!(ok, "{err}");
    assert!(
        pass["pass"]["outcomes"]["applied"].as_u64().unwrap_or(0) >= 1,
        "{pass}"
    );
    let in_cloud = cloud.rows(&format!(
        "SELECT completionstate, timemodified FROM mdl_course_modules_completion WHERE userid = {c1} AND coursemoduleid = {}",
        clouds[m0].0
    ));
    assert_eq!(
        in_cloud,
        vec![vec!["1".to_string(), on_board.clone()]],
        "the 4.5 vessel's completion in the 5.0 cloud, with the time it was made on board ({course})"
    );
}

/// `vessel-sync moodle install-plugin` on a Moodle 4.5 without the plugin: the files written
/// and Moodle's upgrade run, the plugin's version and functions registered; run again, an
/// upgrade in place.
fn install_from_the_binary() {
    let site = Site::alone_on(Db::Postgres, Version::V45, "inst");
    site.m.uninstall_plugin().unwrap();
    let registered = || {
        site.value(
            "SELECT COUNT(*) FROM mdl_external_functions WHERE component = 'local_vesselsync'",
        )
    };
    assert_eq!(registered(), "0", "uninstalled through Moodle's CLI");
    let code = site.m.code.display().to_string();
    let o = site.v.run(&[
        "moodle",
        "install-plugin",
        "--moodle-dir",
        &code,
        "--php",
        "/usr/bin/php",
    ]);
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success() && said.contains("installed local_vesselsync version"),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(registered(), "3", "the three functions registered");
    assert_eq!(
        site.value("SELECT value FROM mdl_config_plugins WHERE plugin = 'local_vesselsync' AND name = 'version'"),
        moodle::plugin::version()
    );
    let o = site.v.run(&[
        "moodle",
        "install-plugin",
        "--moodle-dir",
        &code,
        "--php",
        "/usr/bin/php",
    ]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("upgraded"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = site
        .v
        .run(&["moodle", "install-plugin", "--moodle-dir", "/tmp"]);
    assert_eq!(
        o.status.code(),
        Some(64),
        "a folder that is not Moodle is refused"
    );
}
