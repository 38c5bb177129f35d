//! Course commands on a real Moodle: every real `.mbz` restored through Moodle's own
//! `restore_backup.php` into a category found by idnumber, the same backup again skipped, a
//! taken shortname refused, a restore killed mid-way cleaned up and redone, `replace_course`,
//! `hide_course`, and the guarded `delete_course` released by a real shore's acknowledgement.

use std::os::unix::process::ExitStatusExt;

use vessel::store::CommandState;
use wire::envelope::CommandEntry;

use super::{Site, mbz};
use crate::support::cmd;

crate::on_both!(
    every_backup_restores_with_the_wanted_names_and_the_same_backup_again_is_skipped,
    restores_moodle_refuses_fail_with_moodles_words_and_add_no_course,
    a_restore_killed_mid_way_is_cleaned_up_and_redone_once,
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
