//! The cloud half against two real Moodles: progress earned on a ship's Moodle goes through a
//! real shore into a second real Moodle (the cloud), once, held while the cloud lacks the
//! learner and released when the account appears, never overwriting a newer value in the
//! cloud, surviving a crash between the cloud's change and shore's commit; and what the ship
//! imported from shore is never forwarded again.

use moodle::ws::Params;
use vessel::store::CommandState;

use super::progress::{activities, learner};
use super::{Site, mbz};
use crate::support::cmd;
use testkit::realmoodle::Db;

crate::on_both!(progress_from_sea_lands_in_the_cloud_once_newer_wins_and_imports_never_echo,);

pub(super) fn restore(s: &Site, seq: u64) -> i64 {
    restore_from(s, seq, mbz("course-SAFETY-101-with-users.mbz"))
}

/// Restores `backup` as the test's course `TAG-S101` through the agent; its id.
pub(super) fn restore_from(s: &Site, seq: u64, backup: Vec<u8>) -> i64 {
    s.category("DECK");
    let course = s.name("S101");
    s.send(
        seq,
        vec![cmd(
            "restore_course",
            "safety",
            serde_json::json!({"shortname": course, "idnumber": course, "category": s.name("DECK")}),
            &["files/s.mbz"],
        )],
        vec![("files/s.mbz", backup)],
    );
    s.once();
    s.expect("safety", CommandState::Done);
    s.course(&course).unwrap().0
}

/// Gives `shore` a `[cloud]` section for `cloud`, with the admin's token on a service `name`
/// holding exactly `functions`.
pub(super) fn point_at_cloud(
    shore: &crate::support::shore::Shore,
    cloud: &Site,
    name: &str,
    functions: &[&str],
) {
    let token = cloud.m.service_token(name, functions).unwrap();
    base::fsutil::write_private(&shore.path("cloud.token"), token.as_bytes()).unwrap();
    let mut cfg = std::fs::read_to_string(shore.path("shore.toml")).unwrap();
    cfg.push_str(&format!(
        "[cloud]\nurl = \"{}\"\ntoken_file = \"cloud.token\"\n",
        cloud.m.url
    ));
    std::fs::write(shore.path("shore.toml"), cfg).unwrap();
}

pub(super) fn forward(
    shore: &crate::support::shore::Shore,
    env: &[(&str, &str)],
) -> (bool, serde_json::Value, String) {
    let cfg = shore.path("shore.toml");
    let out = std::process::Command::new(crate::support::bin())
        .args([
            "shore",
            "forward",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        v,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn progress_from_sea_lands_in_the_cloud_once_newer_wins_and_imports_never_echo(db: Db) {
    let tag = format!("cl{}", &db.name()[..2]);
    let (s, mut shore) = Site::with_shore(db, &tag);
    let cloud = Site::alone(db, &tag);
    let course = s.name("S101");
    let ship_cid = restore(&s, 1);
    let cloud_cid = restore(&cloud, 1);
    let ship_acts = activities(&s, ship_cid);
    let cloud_acts = activities(&cloud, cloud_cid);
    let manual: Vec<usize> = (0..ship_acts.len())
        .filter(|&i| ship_acts[i].3 == 1)
        .collect();
    assert!(manual.len() >= 2, "{ship_acts:?}");
    let (m0, m1) = (manual[0], manual[1]);
    assert_eq!(ship_acts[m0].1, cloud_acts[m0].1, "the same course on both");

    // At sea: the learner ticks one activity, the teacher overrides another, a grade.
    let (l1, l1_token) = learner(&s, "L1", ship_cid, 5);
    let (_, teacher) = learner(&s, "T1", ship_cid, 3);
    s.m.ws(
        &l1_token,
        "core_completion_update_activity_completion_status_manually",
        &Params::new()
            .set("cmid", ship_acts[m0].0)
            .set("completed", 1),
    )
    .unwrap();
    s.m.ws(
        &teacher,
        "core_completion_override_activity_completion_status",
        &Params::new()
            .set("userid", l1)
            .set("cmid", ship_acts[m1].0)
            .set("newstate", 1),
    )
    .unwrap();
    let assign = ship_acts
        .iter()
        .position(|a| a.2 == "assign")
        .expect("the backup has an assignment");
    s.admin(
        "core_grades_update_grades",
        &Params::new()
            .set("source", "test")
            .set("courseid", ship_cid)
            .set("component", "mod_assign")
            .set("activityid", ship_acts[assign].0)
            .set("itemnumber", 0)
            .set("grades[0][studentid]", l1)
            .set("grades[0][grade]", "7.5"),
    );
    // A second learner's history imported from shore: applied on board, never sent home.
    let (l2, _) = learner(&s, "L2", ship_cid, 5);
    let csv = format!(
        "learner,course,activity,state\n{},{course},{},1\n",
        s.name("L2"),
        ship_acts[m0].1
    );
    s.send(
        2,
        vec![cmd(
            "import_progress",
            "history",
            serde_json::json!({}),
            &["files/p.csv"],
        )],
        vec![("files/p.csv", csv.into_bytes())],
    );
    s.once();
    s.expect("history", CommandState::Done);
    assert_eq!(s.value(&format!("SELECT completionstate FROM mdl_course_modules_completion WHERE userid = {l2} AND coursemoduleid = {}", ship_acts[m0].0)), "1");
    shore.start();
    let out = s.run(&["capture", "--json"], &[]);
    assert!(out.status.success(), "capture{}", s.said());
    s.sync();
    let received = shore.db().forward_summary().unwrap().records;
    assert!(
        received >= 3,
        "shore received the ship's progress: {received}"
    );

    // The cloud: shore's token on a service with exactly the functions the README lists.
    point_at_cloud(
        &shore,
        &cloud,
        "vessel_sync_shore",
        shore::forward::CLOUD_FUNCTIONS,
    );

    // The learner has no account in the cloud yet: every forwardable record is held, with why.
    let (ok, first, err) = forward(&shore, &[]);
    assert!(ok, "{err}");
    assert!(
        first["pass"]["outcomes"]["held"].as_u64().unwrap_or(0) >= 3,
        "{first}"
    );
    assert_eq!(
        first["pass"]["outcomes"]["applied"].as_u64().unwrap_or(0),
        0,
        "{first}"
    );
    let status = String::from_utf8_lossy(&shore.run(&["status"]).stdout).to_string();
    assert!(
        status.contains(&format!("no learner {} on the cloud Moodle", s.name("L1"))),
        "{status}"
    );

    // The account appears; meanwhile a trainer in the cloud marks the second activity
    // incomplete, later than the ship's override (or in the same second: a tie, which keeps
    // the cloud's value too).
    let (c1, _) = learner(&cloud, "L1", cloud_cid, 5);
    let (c2, _) = learner(&cloud, "L2", cloud_cid, 5);
    cloud.admin(
        "core_completion_override_activity_completion_status",
        &Params::new()
            .set("userid", c1)
            .set("cmid", cloud_acts[m1].0)
            .set("newstate", 1),
    );
    cloud.admin(
        "core_completion_override_activity_completion_status",
        &Params::new()
            .set("userid", c1)
            .set("cmid", cloud_acts[m1].0)
            .set("newstate", 0),
    );

    // Shore dies at each step of a record's forwarding: noted in flight but not yet sent, then
    // taken by the cloud but not yet committed ashore.
    for point in base::failpoint::FORWARD {
        let (ok, _, _) = forward(&shore, &[("VESSEL_SYNC_FAILPOINT", point)]);
        assert!(!ok, "{point} stopped the pass");
    }
    let (ok, second, err) = forward(&shore, &[]);
    assert!(ok, "{err}");
    let outcomes = &second["pass"]["outcomes"];
    assert_eq!(
        outcomes["already"].as_u64(),
        Some(1),
        "the record in flight is found done in the cloud, not applied twice: {second}"
    );
    assert!(outcomes["applied"].as_u64().unwrap_or(0) >= 1, "{second}");
    assert_eq!(
        outcomes["older"].as_u64().unwrap_or(0) + outcomes["tie"].as_u64().unwrap_or(0),
        1,
        "{second}"
    );
    let held = second["summary"]["held"].to_string();
    assert!(
        !held.contains(&s.name("L1")),
        "the learner's records are released: {second}"
    );
    eprintln!(
        "forward pass into a real Moodle on {db:?}: {}",
        second["pass"]
    );

    let state = |user: i64, cm: i64| {
        cloud.value(&format!(
        "SELECT COALESCE(MAX(completionstate), -1) FROM mdl_course_modules_completion WHERE userid = {user} AND coursemoduleid = {cm}"))
    };
    assert_eq!(
        state(c1, cloud_acts[m0].0),
        "1",
        "the learner's completion is in the cloud"
    );
    assert_eq!(
        state(c1, cloud_acts[m1].0),
        "0",
        "the cloud's newer value is kept"
    );
    assert_ne!(
        state(c2, cloud_acts[m0].0),
        "1",
        "the import is not echoed into the cloud"
    );
    let grade = cloud.value(&format!(
        "SELECT gg.finalgrade FROM mdl_grade_grades gg JOIN mdl_grade_items gi ON gi.id = gg.itemid WHERE gi.itemmodule = 'assign' AND gi.courseid = {cloud_cid} AND gg.userid = {c1}"));
    assert!(grade.starts_with("7.5"), "grade in the cloud: {grade}");
    let changes = cloud.value(&format!(
        "SELECT COUNT(*) FROM mdl_logstore_standard_log WHERE eventname LIKE '%course_module_completion_updated' AND relateduserid = {c1} AND contextinstanceid = {}", cloud_acts[m0].0));
    assert_eq!(
        changes, "1",
        "the cloud was changed once for that completion"
    );

    let conflicts = shore.run(&["forward", "--conflicts"]);
    let text = String::from_utf8_lossy(&conflicts.stdout).to_string();
    assert!(
        text.lines().count() == 2 && text.contains(&cloud_acts[m1].1),
        "{text}"
    );

    // Nothing left, nothing twice.
    let (ok, third, err) = forward(&shore, &[]);
    assert!(ok, "{err}");
    assert_eq!(third["pass"]["outcomes"], serde_json::json!({}), "{third}");

    // Crew change. Back to the same ship: nothing, since what the cloud holds came from it.
    let who = s.name("L1");
    let r = shore.run(&["crew", "move", &who, "--to", crate::support::VESSEL]);
    let said = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        r.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        said.contains("nothing to send"),
        "no echo to the ship it came from: {said}"
    );
    // Named by username, the same person: still nothing back to the ship it came from.
    let username = format!("{}l1", s.tag.to_lowercase());
    let r = shore.run(&["crew", "move", &username, "--to", crate::support::VESSEL]);
    let said = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        r.status.success() && said.contains("nothing to send") && said.contains("came from"),
        "no echo by username either: {said}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // To another ship that has the course: the cloud's completion goes with the seafarer.
    let keys = shore.path("keys/ship-b");
    wire::envelope::SecretKey::from_seed([7u8; 32])
        .write_pair(&keys, "ship-b")
        .unwrap();
    let pubkey = shore.path("keys/ship-b.pub");
    let token = shore.path("ship-b.token");
    let r = shore.run(&[
        "vessel",
        "add",
        "ship-b",
        "--pubkey",
        pubkey.to_str().unwrap(),
        "--token-out",
        token.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = shore.run(&["crew", "move", &who, "--to", "ship-b", "--course", &course]);
    let said = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        said.contains("queued import_progress for ship-b") && said.contains("1 completion(s)"),
        "{said}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let queued = shore.db().bundles_for("ship-b", 0).unwrap();
    assert_eq!(queued.len(), 1);
    // Run again: what the first move sent is not sent twice.
    let r = shore.run(&["crew", "move", &who, "--to", "ship-b", "--course", &course]);
    let again = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        again.contains("nothing to send") && again.contains("1 sent there by an earlier crew move"),
        "{again}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(shore.db().bundles_for("ship-b", 0).unwrap().len(), 1);
    let file = std::fs::File::open(shore.path("state/bundles").join(&queued[0].file)).unwrap();
    // The test reads shore's own copy to check it: no bound needed.
    #[allow(clippy::disallowed_methods)]
    let decoder = zstd::stream::read::Decoder::new(file).unwrap();
    let mut tar = tar::Archive::new(decoder);
    let mut csv = String::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path()
            .unwrap()
            .to_string_lossy()
            .ends_with("progress.csv")
        {
            std::io::Read::read_to_string(&mut e, &mut csv).unwrap();
        }
    }
    let completed = cloud.value(&format!(
        "SELECT timemodified FROM mdl_course_modules_completion WHERE userid = {c1} AND coursemoduleid = {}",
        cloud_acts[m0].0
    ));
    assert_eq!(
        csv,
        format!(
            "learner,course,activity,state,time\n{who},{course},{},1,{completed}\n",
            ship_acts[m0].1
        ),
        "the cloud's completion with the cloud's time, not the one the cloud kept at 0"
    );

    // A crew list pushed for ship-b naming the seafarer is a crew change too: shore queues
    // the cloud's records for the courses the list enrols him in (again: the list has just
    // made the account the first import may have lacked).
    let list = format!(
        "username,firstname,lastname,email,idnumber,course1\n{username},Sea,L1,{username}@fleet.example.invalid,{who},{course}\n"
    );
    let built = s.v.bundle(
        "crew-b.vsb",
        crate::support::draft(
            "ship-b",
            1,
            vec![cmd(
                "upsert_users",
                "crew-b",
                serde_json::json!({}),
                &["files/users.csv"],
            )],
            vec![(
                "files/users.csv",
                wire::envelope::Source::Bytes(list.into_bytes()),
            )],
        ),
    );
    let r = shore.run(&["push", built.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        r.status.success()
            && said.contains("queued import_progress for ship-b")
            && said.contains("1 completion(s)"),
        "{said}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(
        shore.db().bundles_for("ship-b", 0).unwrap().len(),
        3,
        "the list and the import after it"
    );
    // Shore's own key signs only what shore makes: an operator bundle signed with it is
    // refused, even where the key is (by mistake) trusted for pushing.
    let toml = std::fs::read_to_string(shore.path("shore.toml")).unwrap();
    std::fs::write(
        shore.path("shore.toml"),
        toml.replacen(
            "trusted = [\"keys/ops.pub\"]",
            "trusted = [\"keys/ops.pub\", \"keys/shore.pub\"]",
            1,
        ),
    )
    .unwrap();
    let own = wire::envelope::SecretKey::load(&shore.path("keys/shore.key")).unwrap();
    let forged = s.v.bundle_with(
        "own.vsb",
        crate::support::draft(
            "ship-b",
            9,
            vec![cmd("set_mapping", "m", serde_json::json!({}), &[])],
            vec![],
        ),
        &own,
    );
    let r = shore.run(&["push", forged.to_str().unwrap()]);
    assert!(
        !r.status.success() && String::from_utf8_lossy(&r.stderr).contains("shore's own key"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );

    // The course is retired fleet-wide: hidden in the cloud, a guarded deletion queued for
    // the ship that sent progress of it, and the table says where each vessel stands.
    let r = shore.run(&["course", "retire", &course]);
    let said = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(
        r.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(said.contains("hidden in the cloud Moodle"), "{said}");
    assert_eq!(
        cloud.value(&format!(
            "SELECT visible FROM mdl_course WHERE idnumber = '{course}'"
        )),
        "0"
    );
    let table: serde_json::Value =
        serde_json::from_slice(&shore.run(&["course", "status", &course, "--json"]).stdout)
            .unwrap();
    let vessels = table["vessels"].as_array().unwrap();
    assert_eq!(
        vessels.len(),
        1,
        "only the ship that sent progress of it: {table}"
    );
    assert_eq!(vessels[0]["fetched"], false, "{table}");
    assert!(vessels[0]["records"].as_u64().unwrap() >= 3, "{table}");
    let again = shore.run(&["course", "retire", &course]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already"),
        "a second retire queues nothing twice"
    );
    let audit: serde_json::Value =
        serde_json::from_slice(&shore.run(&["status", "--json"]).stdout).unwrap();
    assert!(
        audit["audit"].to_string().contains("course retire"),
        "{audit}"
    );

    // Fresh progress at sea after the retirement: the cloud course is hidden, and the record
    // still reaches it (a hidden course is not "not enrolled").
    s.m.ws(
        &l1_token,
        "core_completion_update_activity_completion_status_manually",
        &Params::new()
            .set("cmid", ship_acts[m0].0)
            .set("completed", 0),
    )
    .unwrap();
    assert!(s.run(&["capture"], &[]).status.success(), "{}", s.said());
    s.sync();
    let (ok, late, err) = forward(&shore, &[]);
    assert!(ok, "{err}");
    assert_eq!(late["pass"]["outcomes"]["applied"], 1, "{late}");
    assert!(
        !late["summary"]["held"]
            .to_string()
            .contains(&format!("learner {who} is not enrolled")),
        "{late}"
    );
    assert_eq!(
        state(c1, cloud_acts[m0].0),
        "0",
        "the last record of a retired course is in the cloud"
    );

    // The ship fetches the deletion and works through its guard, reporting each step in its
    // next batch; the table ashore follows it to the end.
    let row = || -> serde_json::Value {
        let t: serde_json::Value =
            serde_json::from_slice(&shore.run(&["course", "status", &course, "--json"]).stdout)
                .unwrap();
        t["vessels"][0].clone()
    };
    let id = format!("retire-{}-1", crate::support::VESSEL);
    s.sync();
    s.once();
    // With the link up, one run may do it all: the deletion hides the course, the capture
    // records its last progress, the sync gets it acknowledged, and the deletion goes ahead in
    // the pass after the acknowledgement. Otherwise it waits, and the table says so.
    let (state, note) = s.command(&id);
    if state == CommandState::Waiting {
        s.sync();
        let waiting = row();
        assert_eq!(waiting["phase"], "waiting", "{waiting}");
        assert!(
            waiting["reported"]["learners"].as_u64().unwrap_or(0) >= 1,
            "{waiting}"
        );
    } else {
        assert_eq!(state, CommandState::Done, "{note}{}", s.said());
    }
    let mut at = 0;
    while !s.command(&id).0.is_final() && at < 3600 {
        assert!(s.run(&["capture"], &[]).status.success(), "{}", s.said());
        s.sync();
        at += 600;
        s.once_at(at);
    }
    let note = s.expect(&id, CommandState::Done);
    assert!(
        note.contains("deleted") && note.contains("final backup"),
        "{note}"
    );
    assert!(
        s.course(&course).is_none(),
        "the course is gone from the ship"
    );
    s.sync();
    let done = row();
    assert_eq!(done["phase"], "deleted", "{done}");
    assert!(
        done["reported"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("learners"),
        "{done}"
    );
    // The deleted course's rows are not sent home as removed progress: nothing waits on board.
    assert!(s.run(&["capture"], &[]).status.success(), "{}", s.said());
    let left = s.v.store().course_impact(&course).unwrap().0.records;
    assert_eq!(left, 0, "no record of the deleted course queued after it");
    let text =
        String::from_utf8_lossy(&shore.run(&["course", "status", &course]).stdout).to_string();
    assert!(
        text.contains("deleted") && text.contains("final backup"),
        "{text}"
    );
    shore.stop();
}
