//! Course commands on a real Moodle: every real `.mbz` restored through Moodle's own
//! `restore_backup.php` into a category found by idnumber, the same backup again skipped, a
//! taken shortname refused, a restore killed mid-way cleaned up and redone, `replace_course`,
//! the guarded `delete_course` released by a real shore's acknowledgement, and `set_mapping`'s
//! drift check against the categories, courses and activities Moodle really has.

use std::os::unix::process::ExitStatusExt;

use vessel::store::CommandState;
use wire::envelope::CommandEntry;

use super::{Site, mbz};
use crate::support::cmd;

crate::on_both!(
    every_backup_restores_with_the_wanted_names_and_the_same_backup_again_is_skipped,
    restores_moodle_refuses_fail_with_moodles_words_and_add_no_course,
    a_restore_killed_mid_way_is_cleaned_up_and_redone_once,
    a_guarded_delete_is_held_by_real_progress_until_a_real_shore_acknowledges_it,
    replace_course_puts_the_new_version_live_and_retires_the_old_under_the_guard,
    set_mapping_drift_is_checked_against_real_categories_courses_and_activities,
);

fn restore(id: &str, shortname: &str, category: &str, file: &str) -> CommandEntry {
    cmd(
        "restore_course",
        id,
        serde_json::json!({"shortname": shortname, "idnumber": shortname, "category": category, "visible": true, "file": file}),
        &[file],
    )
}

fn every_backup_restores_with_the_wanted_names_and_the_same_backup_again_is_skipped(
    db: testkit::realmoodle::Db,
) {
    let s = Site::new(db, &format!("rs{}", db.name()));
    let deck = s.category("DECK");
    let engine = s.category("ENGINE");
    let backups = [
        ("safety", "S101", "DECK", "course-SAFETY-101-with-users.mbz"),
        (
            "erm-users",
            "E110U",
            "ENGINE",
            "course-ERM-110-with-users.mbz",
        ),
        ("erm-bare", "E110N", "ENGINE", "course-ERM-110-no-users.mbz"),
    ];
    s.send(
        1,
        backups
            .iter()
            .map(|(id, short, cat, file)| {
                restore(id, &s.name(short), &s.name(cat), &format!("files/{file}"))
            })
            .collect(),
        backups
            .iter()
            .map(|(_, _, _, file)| {
                (
                    Box::leak(format!("files/{file}").into_boxed_str()) as &str,
                    mbz(file),
                )
            })
            .collect(),
    );
    s.once();
    for (id, short, cat, _) in backups {
        let note = s.expect(id, CommandState::Done);
        let want = s.name(short);
        let (cid, shortname, idnumber, category, visible) = s
            .course(&want)
            .unwrap_or_else(|| panic!("{want} not in mdl_course: {note}{}", s.said()));
        assert_eq!(
            (shortname.as_str(), idnumber.as_str(), category, visible),
            (
                want.as_str(),
                want.as_str(),
                if cat == "DECK" { deck } else { engine },
                1
            ),
            "{note}"
        );
        assert!(note.contains(&format!("as course id {cid}")), "{note}");
    }
    assert_eq!(s.courses_in(deck), [s.name("S101")]);
    assert_eq!(s.courses_in(engine), [s.name("E110U"), s.name("E110N")]);
    // The with-users backup brought its learners' completions.
    let done = s.value(&format!(
        "SELECT COUNT(*) FROM mdl_course_modules_completion cmc JOIN mdl_course_modules cm ON cm.id = cmc.coursemoduleid JOIN mdl_course c ON c.id = cm.course WHERE c.shortname = '{}'",
        s.name("S101")
    ));
    assert!(done.parse::<u32>().unwrap() > 0, "no completions restored");

    // The same backup again, in a new bundle: skipped, no second course.
    s.send(
        2,
        vec![restore(
            "safety-again",
            &s.name("S101"),
            &s.name("DECK"),
            "files/course.mbz",
        )],
        vec![("files/course.mbz", mbz("course-SAFETY-101-with-users.mbz"))],
    );
    s.once();
    let note = s.expect("safety-again", CommandState::Done);
    assert!(note.contains("already restored from this backup"), "{note}");
    assert_eq!(s.courses_in(deck), [s.name("S101")]);
}

fn restores_moodle_refuses_fail_with_moodles_words_and_add_no_course(db: testkit::realmoodle::Db) {
    let s = Site::new(db, &format!("rf{}", db.name()));
    let deck = s.category("DECK");
    // A course to collide with.
    s.send(
        1,
        vec![restore(
            "first",
            &s.name("TAKEN"),
            &s.name("DECK"),
            "files/a.mbz",
        )],
        vec![("files/a.mbz", mbz("course-ERM-110-no-users.mbz"))],
    );
    s.once();
    s.expect("first", CommandState::Done);
    s.send(
        2,
        vec![
            restore("truncated", &s.name("T"), &s.name("DECK"), "files/t.mbz"),
            restore("garbage", &s.name("G"), &s.name("DECK"), "files/g.mbz"),
            restore("activity", &s.name("A"), &s.name("DECK"), "files/p.mbz"),
            restore(
                "no-category",
                &s.name("C"),
                &s.name("GALLEY"),
                "files/s.mbz",
            ),
            restore("taken", &s.name("TAKEN"), &s.name("DECK"), "files/s.mbz"),
        ],
        vec![
            ("files/t.mbz", mbz("corrupt-truncated-4000-bytes.mbz")),
            ("files/g.mbz", b"this is not a backup".to_vec()),
            ("files/p.mbz", mbz("activity-page-cm4.mbz")),
            ("files/s.mbz", mbz("course-SAFETY-101-with-users.mbz")),
        ],
    );
    s.once();
    for (id, says) in [
        ("truncated", "Error processing archive file".to_string()),
        (
            "garbage",
            "Call to a member function destroy() on null".to_string(),
        ),
        (
            "activity",
            "is an activity backup (its moodle_backup.xml says type activity)".to_string(),
        ),
        (
            "no-category",
            format!("no course category with idnumber {}", s.name("GALLEY")),
        ),
        ("taken", "already used by course id".to_string()),
    ] {
        let reason = s.expect(id, CommandState::Failed);
        assert!(reason.contains(&says), "{id}: {reason}{}", s.said());
    }
    assert_eq!(s.courses_in(deck), [s.name("TAKEN")], "no course was added");
}

fn a_restore_killed_mid_way_is_cleaned_up_and_redone_once(db: testkit::realmoodle::Db) {
    let s = Site::new(db, &format!("rk{}", db.name()));
    let deck = s.category("DECK");
    s.send(
        1,
        vec![restore(
            "safety",
            &s.name("S102"),
            &s.name("DECK"),
            "files/s.mbz",
        )],
        vec![("files/s.mbz", mbz("course-SAFETY-101-with-users.mbz"))],
    );
    let out = s.run(
        &["agent", "--once"],
        &[("VESSEL_SYNC_FAILPOINT", "restore.after-cli")],
    );
    assert_eq!(out.status.signal(), Some(9), "{}", s.said());
    assert_eq!(
        s.courses_in(deck).len(),
        1,
        "the restore ran before the kill"
    );
    s.once();
    let note = s.expect("safety", CommandState::Done);
    assert_eq!(
        s.courses_in(deck),
        [s.name("S102")],
        "exactly one course, with the wanted name: {note}"
    );
}

fn a_guarded_delete_is_held_by_real_progress_until_a_real_shore_acknowledges_it(
    db: testkit::realmoodle::Db,
) {
    let (s, mut shore) = Site::with_shore(db, &format!("gd{}", db.name()));
    let engine = s.category("ENGINE");
    let course = s.name("E110");
    s.send(
        1,
        vec![restore("erm", &course, &s.name("ENGINE"), "files/e.mbz")],
        vec![("files/e.mbz", mbz("course-ERM-110-with-users.mbz"))],
    );
    s.once();
    s.expect("erm", CommandState::Done);
    let (cid, ..) = s.course(&course).unwrap();
    s.send(
        2,
        vec![cmd(
            "delete_course",
            "retire",
            serde_json::json!({"course": course}),
            &[],
        )],
        vec![],
    );
    s.once();
    let (_, first) = s.command("retire");
    assert!(first.contains("waiting for a progress capture"), "{first}");
    s.once_at(120);
    let (state, reason) = s.command("retire");
    assert_eq!(state, CommandState::Waiting, "{reason}{}", s.said());
    assert!(
        reason.contains("waiting for shore to acknowledge") && reason.contains(&course),
        "{reason}"
    );
    let (_, _, _, _, visible) = s.course(&course).expect("held: not deleted");
    assert_eq!(visible, 0, "hidden while held");
    let status = s.run(&["status"], &[]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&course) && text.contains("acknowledge"),
        "{text}"
    );

    // The link comes up: the real shore acknowledges what the capture read, and the agent backs
    // up and deletes.
    shore.start();
    s.once_at(400);
    if s.command("retire").0 == CommandState::Waiting {
        s.once_at(800);
    }
    let (records, _) = shore.counts();
    assert!(records >= 2, "shore holds the course's progress: {records}");
    let note = s.expect("retire", CommandState::Done);
    assert!(s.course(&course).is_none(), "still in mdl_course: {note}");
    assert_eq!(
        s.value(&format!("SELECT COUNT(*) FROM mdl_course WHERE id = {cid}")),
        "0"
    );
    let backups: Vec<std::path::PathBuf> = std::fs::read_dir(s.v.path("state/backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1, "{note}");
    let name = backups[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(note.contains(&name), "{note}");
    // The final backup holds the learners and is restorable by Moodle.
    let members = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&backups[0])
        .output()
        .unwrap();
    let members = String::from_utf8_lossy(&members.stdout);
    assert!(
        members.lines().any(|l| l == "users.xml"),
        "no user data in {name}"
    );
    let out =
        s.m.php(&[
            "admin/cli/restore_backup.php",
            &format!("--file={}", backups[0].display()),
            &format!("--categoryid={engine}"),
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("== Restored course ID:"), "{text}");
    let back = s.value(&format!(
        "SELECT COUNT(*) FROM mdl_course_modules_completion cmc JOIN mdl_course_modules cm ON cm.id = cmc.coursemoduleid JOIN mdl_course c ON c.id = cm.course WHERE c.category = {engine}"
    ));
    assert!(
        back.parse::<u32>().unwrap() > 0,
        "the backup lost the completions"
    );
}

fn replace_course_puts_the_new_version_live_and_retires_the_old_under_the_guard(
    db: testkit::realmoodle::Db,
) {
    let (s, mut shore) = Site::with_shore(db, &format!("rp{}", db.name()));
    let engine = s.category("ENGINE");
    let (old, new) = (s.name("E110"), s.name("E110-V2"));
    s.send(
        1,
        vec![restore("v1", &old, &s.name("ENGINE"), "files/e.mbz")],
        vec![("files/e.mbz", mbz("course-ERM-110-with-users.mbz"))],
    );
    s.once();
    s.expect("v1", CommandState::Done);
    s.send(
        2,
        vec![cmd(
            "replace_course",
            "v2",
            serde_json::json!({"course": old, "shortname": new, "idnumber": new, "category": s.name("ENGINE")}),
            &["files/v2.mbz"],
        )],
        vec![("files/v2.mbz", mbz("course-ERM-110-no-users.mbz"))],
    );
    s.once();
    let (state, reason) = s.command("v2");
    assert_eq!(state, CommandState::Waiting, "{reason}{}", s.said());
    assert!(
        reason.starts_with(&format!("{new} is live; retiring {old}")),
        "{reason}"
    );
    assert_eq!(s.course(&new).expect("new version").4, 1, "live");
    assert_eq!(s.course(&old).expect("old version held").4, 0, "hidden");
    shore.start();
    s.once_at(400);
    if s.command("v2").0 == CommandState::Waiting {
        s.once_at(800);
    }
    let note = s.expect("v2", CommandState::Done);
    assert!(s.course(&old).is_none(), "{note}");
    assert_eq!(s.courses_in(engine), [new]);
}

fn set_mapping_drift_is_checked_against_real_categories_courses_and_activities(
    db: testkit::realmoodle::Db,
) {
    let s = Site::new(db, &format!("map{}", &db.name()[..2]));
    s.category("DECK");
    let course = s.name("S101");
    s.send(
        1,
        vec![restore("safety", &course, &s.name("DECK"), "files/s.mbz")],
        vec![("files/s.mbz", mbz("course-SAFETY-101-with-users.mbz"))],
    );
    s.once();
    s.expect("safety", CommandState::Done);
    // Rows 2, 4, 6 and 7 name what the restored course and its category hold (an activity by
    // its idnumber, and one without an idnumber by `modname:name`, as Moodle names it); rows 3,
    // 5, 8 and 9 name what this Moodle lacks.
    let csv = format!(
        "kind,legacy_id,moodle_key,course\n\
         category,TRS-DECK,{deck},\n\
         category,TRS-GALLEY,{galley},\n\
         course,TRS-0101,{course},\n\
         course,TRS-0900,{nav},\n\
         activity,TRS-0101-A,SAFETY-101-PST,{course}\n\
         activity,TRS-0101-B,forum:Announcements,{course}\n\
         activity,TRS-0101-Z,SAFETY-101-ZZZ,{course}\n\
         activity,TRS-0900-A,NAV-900-A,{nav}\n",
        deck = s.name("DECK"),
        galley = s.name("GALLEY"),
        nav = s.name("NAV900"),
    );
    s.send(
        2,
        vec![cmd(
            "set_mapping",
            "map",
            serde_json::json!({}),
            &["files/mapping.csv"],
        )],
        vec![("files/mapping.csv", csv.into_bytes())],
    );
    s.once();
    let note = s.expect("map", CommandState::Done);
    assert!(
        note.starts_with("8 mapping(s) stored"),
        "stored either way: {note}"
    );
    assert!(
        note.contains("4 row(s) name what this Moodle lacks (first: row 3 moodle_key"),
        "{note}{}",
        s.said()
    );
    let drift: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.v.path("state/reports/map.mapping-drift.json")).unwrap(),
    )
    .unwrap();
    let rows: Vec<(u64, String)> = drift
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["row"].as_u64().unwrap(),
                d["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                3,
                "no category with this idnumber on this Moodle".to_string()
            ),
            (
                5,
                "no course with this idnumber or shortname on this Moodle".to_string()
            ),
            (
                8,
                format!("no activity with this key in course {course} on this Moodle")
            ),
            (
                9,
                "no course with this idnumber or shortname on this Moodle".to_string()
            ),
        ],
        "{}",
        s.said()
    );
}
