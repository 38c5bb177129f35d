//! Progress made through a real Moodle, as learners and teachers make it (a learner's own
//! manual completions and a page view through the web services, a teacher's override, a
//! grade, Moodle's own completion cron task), captured by the agent and matched field by
//! field against Moodle's tables; progress imported from shore applied and never sent back
//! while a real completion made at the same time is.

use std::collections::BTreeSet;

use moodle::ws::Params;
use vessel::store::CommandState;
use wire::progress::record::RecordKind;

use super::{Site, mbz};
use crate::support::cmd;
use testkit::realmoodle::Db;

crate::on_both!(progress_made_in_moodle_is_captured_exactly_and_imported_progress_is_never_echoed,);

/// (cmid, idnumber, module, completion mode) of the course's activities.
pub(super) fn activities(s: &Site, course: i64) -> Vec<(i64, String, String, i64)> {
    s.rows(&format!(
        "SELECT cm.id, COALESCE(cm.idnumber, ''), m.name, cm.completion FROM mdl_course_modules cm JOIN mdl_modules m ON m.id = cm.module WHERE cm.course = {course} ORDER BY cm.id"
    ))
    .into_iter()
    .map(|r| (r[0].parse().unwrap(), r[1].clone(), r[2].clone(), r[3].parse().unwrap()))
    .collect()
}

pub(super) fn learner(s: &Site, name: &str, course: i64, role: i64) -> (i64, String) {
    let t = s.tag.to_lowercase();
    let user = format!("{t}{}", name.to_lowercase());
    let r = s.admin(
        "core_user_create_users",
        &Params::new()
            .set("users[0][username]", &user)
            .set("users[0][firstname]", "Sea")
            .set("users[0][lastname]", name)
            .set(
                "users[0][email]",
                format!("{t}{name}@fleet.example.invalid"),
            )
            .set("users[0][password]", "Sailor#2026")
            .set("users[0][idnumber]", s.name(name)),
    );
    let id = r[0]["id"].as_i64().unwrap();
    s.admin(
        "enrol_manual_enrol_users",
        &Params::new()
            .set("enrolments[0][roleid]", role)
            .set("enrolments[0][userid]", id)
            .set("enrolments[0][courseid]", course),
    );
    (id, s.m.token_for(&user).unwrap())
}

fn progress_made_in_moodle_is_captured_exactly_and_imported_progress_is_never_echoed(db: Db) {
    let s = Site::new(db, &format!("pr{}", &db.name()[..2]));
    s.category("DECK");
    let course = s.name("S101");
    s.send(
        1,
        vec![cmd(
            "restore_course",
            "safety",
            serde_json::json!({"shortname": course, "idnumber": course, "category": s.name("DECK")}),
            &["files/s.mbz"],
        )],
        vec![("files/s.mbz", mbz("course-SAFETY-101-with-users.mbz"))],
    );
    s.once();
    s.expect("safety", CommandState::Done);
    let (cid, ..) = s.course(&course).unwrap();
    let acts = activities(&s, cid);
    let manual: Vec<&(i64, String, String, i64)> = acts.iter().filter(|a| a.3 == 1).collect();
    assert!(manual.len() >= 2, "{acts:?}");
    let (l1, l1_token) = learner(&s, "L1", cid, 5);
    let (_, teacher) = learner(&s, "T1", cid, 3);

    // The learner ticks the first manual activity; the teacher overrides the second one.
    s.m.ws(
        &l1_token,
        "core_completion_update_activity_completion_status_manually",
        &Params::new().set("cmid", manual[0].0).set("completed", 1),
    )
    .unwrap();
    s.m.ws(
        &teacher,
        "core_completion_override_activity_completion_status",
        &Params::new()
            .set("userid", l1)
            .set("cmid", manual[1].0)
            .set("newstate", 1),
    )
    .unwrap();
    // A grade for the assignment, and the completion cron task.
    if let Some(assign) = acts.iter().find(|a| a.2 == "assign") {
        s.admin(
            "core_grades_update_grades",
            &Params::new()
                .set("source", "vessel-sync test")
                .set("courseid", cid)
                .set("component", "mod_assign")
                .set("activityid", assign.0)
                .set("itemnumber", 0)
                .set("grades[0][studentid]", l1)
                .set("grades[0][grade]", "7.5"),
        );
    }
    let cron =
        s.m.php(&[
            "admin/cli/scheduled_task.php",
            "--execute=\\core\\task\\completion_regular_task",
        ])
        .unwrap();
    assert!(
        cron.status.success(),
        "{}",
        String::from_utf8_lossy(&cron.stdout)
    );

    let out = s.run(&["capture", "--json"], &[]);
    assert!(out.status.success(), "capture failed{}", s.said());

    // Ground truth from Moodle's tables, for the new learner.
    let who = s.name("L1");
    let mut truth = BTreeSet::new();
    for r in s.rows(&format!(
        "SELECT COALESCE(cm.idnumber, ''), cmc.completionstate, cmc.timemodified FROM mdl_course_modules_completion cmc JOIN mdl_course_modules cm ON cm.id = cmc.coursemoduleid WHERE cmc.userid = {l1}"
    )) {
        truth.insert(format!("activity_completion {who} {course} {} {} {}", r[0], r[1], r[2]));
    }
    for r in s.rows(&format!(
        "SELECT timecompleted FROM mdl_course_completions WHERE userid = {l1} AND course = {cid} AND timecompleted IS NOT NULL"
    )) {
        truth.insert(format!("course_completion {who} {course}  complete {}", r[0]));
    }
    for r in s.rows(&format!(
        "SELECT COALESCE(cm.idnumber, ''), gg.finalgrade, gg.timemodified, gi.itemtype FROM mdl_grade_grades gg JOIN mdl_grade_items gi ON gi.id = gg.itemid LEFT JOIN mdl_modules m ON m.name = gi.itemmodule LEFT JOIN mdl_course_modules cm ON cm.instance = gi.iteminstance AND cm.module = m.id AND cm.course = gi.courseid WHERE gg.userid = {l1} AND gi.courseid = {cid} AND gg.finalgrade IS NOT NULL"
    )) {
        let item = if r[3] == "course" { "" } else { r[0].as_str() };
        truth.insert(format!("grade {who} {course} {item} {} {}", r[1], r[2]));
    }
    assert!(truth.len() >= 3, "Moodle recorded the progress: {truth:?}");
    let captured: BTreeSet<String> =
        s.v.store()
            .outbox_records()
            .unwrap()
            .into_iter()
            .filter(|r| r.user == who)
            .map(|r| {
                format!(
                    "{} {} {} {} {} {}",
                    r.kind.name(),
                    r.user,
                    r.course,
                    r.item,
                    r.value,
                    r.time
                )
            })
            .collect();
    assert_eq!(captured, truth, "captured = Moodle's tables{}", s.said());
    assert!(
        captured
            .iter()
            .any(|c| c.starts_with(RecordKind::Grade.name())),
        "{captured:?}"
    );

    // History from shore for a second learner, while that learner really completes another
    // activity at the same time: the import is applied and not sent back; the real one goes.
    let (l2, l2_token) = learner(&s, "L2", cid, 5);
    let csv = format!(
        "learner,course,activity,state\n{},{course},{},1\n",
        s.name("L2"),
        manual[1].1
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
    let note = s.expect("history", CommandState::Done);
    assert!(note.contains("1 completions applied"), "{note}");
    assert_eq!(
        s.value(&format!(
            "SELECT completionstate FROM mdl_course_modules_completion WHERE userid = {l2} AND coursemoduleid = {}",
            manual[1].0
        )),
        "1",
        "applied in Moodle"
    );
    s.m.ws(
        &l2_token,
        "core_completion_update_activity_completion_status_manually",
        &Params::new().set("cmid", manual[0].0).set("completed", 1),
    )
    .unwrap();
    let out = s.run(&["capture", "--json"], &[]);
    assert!(out.status.success(), "capture failed{}", s.said());
    let l2_records: Vec<String> =
        s.v.store()
            .outbox_records()
            .unwrap()
            .into_iter()
            .filter(|r| r.user == s.name("L2") && r.kind == RecordKind::ActivityCompletion)
            .map(|r| r.item)
            .collect();
    assert_eq!(
        l2_records,
        [manual[0].1.clone()],
        "only the real completion goes home{}",
        s.said()
    );
}
