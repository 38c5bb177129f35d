//! The course commands against the fake Moodle (web services) and the fake `php` (Moodle's CLI
//! scripts as the transcripts show them), with the real `.mbz` backups from
//! `shared/moodle/mbz/`: restores (happy path, the captured failures, SIGKILL mid-restore, the
//! same backup twice) and the guarded deletion (held by unacknowledged progress, released by
//! shore's acknowledgement, backup before delete, a course that never existed, a deletion that
//! dies half-way).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use testkit::fake::{FakeMoodle, TOKEN};
use vessel::store::{CommandState, NewBatch, Store};
use wire::envelope::Source;
use wire::progress::record::{Record, RecordKind};

use crate::support::{Options, VESSEL, Vessel, ack, cmd, draft};

/// A real backup from `shared/moodle/mbz/` (copied into `tests/fixtures/moodle/mbz/`).
fn mbz(name: &str) -> Vec<u8> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = [
        here.join("tests/fixtures/moodle/mbz"),
        here.join("../shared/moodle/mbz"),
    ]
    .into_iter()
    .map(|d| d.join(name))
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("{name} not found in tests/fixtures/moodle/mbz"));
    std::fs::read(path).unwrap()
}

struct Ship {
    moodle: FakeMoodle,
    v: Vessel,
}

impl Ship {
    fn new() -> Self {
        let moodle = FakeMoodle::start().unwrap();
        let scratch = tempfile::tempdir().unwrap().keep();
        let (php, code) = moodle.php(&scratch).unwrap();
        let extra = format!(
            "[moodle]\nurl = \"{}\"\ntoken_file = \"moodle.token\"\nmoodle_dir = \"{}\"\nphp = \"{}\"\ndataroot = \"moodledata\"\n",
            moodle.url(),
            code.display(),
            php.display()
        );
        let v = Vessel::with(Options {
            extra: Box::leak(extra.into_boxed_str()),
            ..Options::default()
        });
        std::fs::write(v.path("moodle.token"), TOKEN).unwrap();
        std::fs::create_dir_all(v.path("moodledata")).unwrap();
        Self { moodle, v }
    }

    /// Sends a bundle of one command without files, runs the agent once, and returns the
    /// command's state and note.
    fn run_one(
        &self,
        seq: u64,
        kind: &str,
        id: &str,
        args: serde_json::Value,
    ) -> (CommandState, String) {
        self.send(seq, vec![cmd(kind, id, args, &[])], vec![]);
        self.v.once();
        self.command(id)
    }

    fn send(
        &self,
        seq: u64,
        commands: Vec<wire::envelope::CommandEntry>,
        files: Vec<(&str, Vec<u8>)>,
    ) {
        let name = format!("{seq:04}.vsb");
        let built = self.v.bundle(
            &name,
            draft(
                VESSEL,
                seq,
                commands,
                files
                    .into_iter()
                    .map(|(n, b)| (n, Source::Bytes(b)))
                    .collect(),
            ),
        );
        self.v.drop_in(&built, &name);
    }

    fn agent(&self, env: &[(&str, &str)]) -> Output {
        self.v.run_env(
            &[
                "agent",
                "--once",
                "--config",
                self.v.config.to_str().unwrap(),
            ],
            env,
        )
    }

    fn once_at(&self, offset: i64) {
        let o = self.offset(offset);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    fn offset(&self, offset: i64) -> Output {
        self.agent(&[("VESSEL_SYNC_CLOCK_OFFSET", &offset.to_string())])
    }

    fn command(&self, id: &str) -> (CommandState, String) {
        self.v
            .find_command(id)
            .unwrap_or_else(|| panic!("no command {id}"))
    }

    fn scripts(&self) -> Vec<String> {
        self.moodle
            .state()
            .cli_runs
            .iter()
            .map(|a| a[0].trim_start_matches("admin/cli/").to_string())
            .collect()
    }
}

fn restore_cmd(id: &str, shortname: &str, category: &str) -> wire::envelope::CommandEntry {
    cmd(
        "restore_course",
        id,
        serde_json::json!({"shortname": shortname, "idnumber": shortname, "category": category, "visible": true}),
        &["files/course.mbz"],
    )
}

#[test]
fn a_restore_gets_the_wanted_names_that_moodle_dropped_and_the_same_backup_again_is_skipped() {
    let ship = Ship::new();
    // ERM-110 exists: Moodle restores the copy as ERM-110_1 without an idnumber.
    ship.send(
        1,
        vec![restore_cmd("erm-v2", "ERM-110-V2", "ENGINE")],
        vec![("files/course.mbz", mbz("course-ERM-110-with-users.mbz"))],
    );
    ship.v.once();
    let (state, note) = ship.command("erm-v2");
    assert_eq!(state, CommandState::Done, "{note}");
    let id = {
        let st = ship.moodle.state();
        let c = st.course("ERM-110-V2").expect("the wanted shortname");
        assert_eq!(
            (c.idnumber.as_str(), c.category, c.visible),
            ("ERM-110-V2", 3, true)
        );
        assert!(
            st.course("ERM-110_1").is_none(),
            "the suffixed name was replaced"
        );
        assert_eq!(st.courses.len(), 5);
        c.id
    };
    assert!(note.contains(&format!("as course id {id}")), "{note}");
    assert_eq!(ship.scripts(), ["restore_backup.php"]);

    // A second bundle with the same backup for the same course: skipped, no second course.
    ship.send(
        2,
        vec![restore_cmd("erm-v2-again", "ERM-110-V2", "ENGINE")],
        vec![("files/course.mbz", mbz("course-ERM-110-with-users.mbz"))],
    );
    ship.v.once();
    let (state, note) = ship.command("erm-v2-again");
    assert_eq!(state, CommandState::Done);
    assert!(note.contains("already restored from this backup"), "{note}");
    assert_eq!(ship.moodle.state().courses.len(), 5);
    assert_eq!(ship.scripts().len(), 1);
}

#[test]
fn restores_that_moodle_refuses_fail_with_moodles_reason_and_leave_no_course() {
    let ship = Ship::new();
    ship.send(
        1,
        vec![restore_cmd("truncated", "SAFE-T", "DECK")],
        vec![("files/course.mbz", mbz("corrupt-truncated-4000-bytes.mbz"))],
    );
    ship.send(
        2,
        vec![restore_cmd("garbage", "SAFE-G", "DECK")],
        vec![("files/course.mbz", b"this is not a backup".to_vec())],
    );
    ship.send(
        3,
        vec![restore_cmd("no-category", "SAFE-C", "GALLEY")],
        vec![("files/course.mbz", mbz("course-SAFETY-101-with-users.mbz"))],
    );
    ship.send(
        4,
        vec![restore_cmd("taken", "SAFETY-101", "DECK")],
        vec![("files/course.mbz", mbz("course-SAFETY-101-with-users.mbz"))],
    );
    ship.v.once();
    for (id, says) in [
        ("truncated", "Error processing archive file"),
        ("garbage", "Call to a member function destroy() on null"),
        ("no-category", "no course category with idnumber GALLEY"),
        ("taken", "already used by course id 2"),
    ] {
        let (state, reason) = ship.command(id);
        assert_eq!(state, CommandState::Failed, "{id}: {reason}");
        assert!(reason.contains(says), "{id}: {reason}");
    }
    assert_eq!(ship.moodle.state().courses.len(), 4, "no course was added");
}

#[test]
fn an_agent_killed_mid_restore_removes_the_half_built_course_and_ends_with_exactly_one() {
    let ship = Ship::new();
    ship.send(
        1,
        vec![restore_cmd("safety-v2", "SAFETY-102", "DECK")],
        vec![("files/course.mbz", mbz("course-SAFETY-101-with-users.mbz"))],
    );
    let out = ship.agent(&[("VESSEL_SYNC_FAILPOINT", "restore.after-cli")]);
    assert_eq!(out.status.signal(), Some(9));
    assert_eq!(
        ship.moodle.state().courses.len(),
        5,
        "the killed restore left a course"
    );
    ship.v.once();
    let (state, note) = ship.command("safety-v2");
    assert_eq!(state, CommandState::Done, "{note}");
    let st = ship.moodle.state();
    assert_eq!(st.courses.len(), 5, "exactly one restored course");
    assert_eq!(
        st.courses
            .values()
            .filter(|c| c.idnumber == "SAFETY-102")
            .count(),
        1
    );
    assert!(st.course("SAFETY-101_1").is_none());
    drop(st);
    assert_eq!(
        ship.scripts(),
        [
            "restore_backup.php",
            "delete_course.php",
            "restore_backup.php"
        ],
        "the half-built course was deleted before the second restore"
    );
}

/// Two captured, unacknowledged records of ERM-110 in the outbox, in batch 1.
fn unacknowledged(v: &Vessel, course: &str) {
    let mut store = Store::open(&v.path("state/journal.db"), VESSEL).unwrap();
    store
        .write(|tx| {
            for user in ["SEAF-100231", "SEAF-100232"] {
                let rec = Record {
                    kind: RecordKind::ActivityCompletion,
                    user: user.into(),
                    course: course.into(),
                    item: "ERM-110-Q1".into(),
                    user_legacy: String::new(),
                    course_legacy: String::new(),
                    item_legacy: String::new(),
                    value: "1".into(),
                    time: 1_795_308_010,
                };
                tx.enqueue(&rec, &rec.id(VESSEL), 1_795_308_100)?;
            }
            tx.store_batch(
                &NewBatch {
                    seq: 1,
                    envelope_id: "batch-1",
                    first: 0,
                    last: i64::MAX,
                    records: 2,
                    envelope: b"signed bytes",
                },
                1_795_308_200,
            )
        })
        .unwrap();
}

#[test]
fn a_guarded_delete_waits_for_shores_acknowledgement_then_backs_up_then_deletes() {
    let ship = Ship::new();
    ship.v.once(); // creates the journal
    unacknowledged(&ship.v, "ERM-110");
    let (state, reason) = ship.run_one(
        1,
        "delete_course",
        "retire-erm",
        serde_json::json!({"course": "ERM-110"}),
    );
    assert_eq!(state, CommandState::Waiting);
    assert!(
        reason.contains("waiting for shore to acknowledge 2 records of ERM-110"),
        "{reason}"
    );
    {
        let st = ship.moodle.state();
        let c = st
            .course("ERM-110")
            .expect("not deleted while progress is unacknowledged");
        assert!(!c.visible, "hidden first");
    }
    assert!(ship.scripts().is_empty(), "no backup, no delete yet");
    let status = ship
        .v
        .run(&["status", "--config", ship.v.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        text.contains("2 records of ERM-110"),
        "status names the hold: {text}"
    );
    assert!(
        text.contains("impact:  ERM-110: 0 learner(s) have progress in it on board; 2 record(s) not yet acknowledged by shore, oldest"),
        "{text}"
    );

    // Shore acknowledges batch 1: the deletion goes ahead in the same run, the pass after the
    // acknowledgement (not at its retry time, five minutes later).
    let a = ship.v.bundle("0002.vsb", ack(2, 1));
    ship.v.drop_in(&a, "0002.vsb");
    ship.once_at(0);
    let (state, note) = ship.command("retire-erm");
    assert_eq!(state, CommandState::Done, "{note}");
    assert!(ship.moodle.state().course("ERM-110").is_none(), "deleted");
    assert_eq!(
        ship.scripts(),
        ["backup.php", "delete_course.php"],
        "backup before delete"
    );
    let backups: Vec<PathBuf> = std::fs::read_dir(ship.v.path("state/backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1);
    let name = backups[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("backup-moodle2-course-4-erm-110-"),
        "{name}"
    );
    assert!(
        note.contains(&name) && note.contains("absence is verified"),
        "{note}"
    );
}

#[test]
fn deleting_a_course_that_never_existed_ends_done_with_a_note() {
    let ship = Ship::new();
    let (state, note) = ship.run_one(
        1,
        "delete_course",
        "ghost",
        serde_json::json!({"course": "NAV-999"}),
    );
    assert_eq!(state, CommandState::Done);
    assert!(note.contains("does not exist on this Moodle"), "{note}");
    assert!(ship.scripts().is_empty());
}

#[test]
fn a_deletion_that_dies_half_way_is_finished_by_the_next_attempt() {
    let ship = Ship::new();
    ship.moodle.state().crash_next_delete = true;
    let (state, reason) = ship.run_one(
        1,
        "delete_course",
        "fire",
        serde_json::json!({"course": "FIRE-201", "keep_backup": false}),
    );
    assert_eq!(state, CommandState::Waiting);
    assert!(
        reason.contains("still there") && reason.contains("course_get_format"),
        "{reason}"
    );
    assert!(ship.moodle.state().course("FIRE-201").unwrap().half_deleted);
    ship.once_at(120);
    let (state, note) = ship.command("fire");
    assert_eq!(state, CommandState::Done, "{note}");
    assert!(ship.moodle.state().course("FIRE-201").is_none());
    assert_eq!(ship.scripts(), ["delete_course.php", "delete_course.php"]);
}

#[test]
fn maintenance_mode_holds_course_commands_without_running_anything() {
    let ship = Ship::new();
    std::fs::write(
        ship.v.path("moodledata/climaintenance.html"),
        "<h1>upgrade</h1>",
    )
    .unwrap();
    let (state, reason) = ship.run_one(
        1,
        "delete_course",
        "fire",
        serde_json::json!({"course": "FIRE-201", "keep_backup": false}),
    );
    assert_eq!(state, CommandState::Waiting);
    assert!(reason.contains("maintenance mode"), "{reason}");
    assert!(ship.scripts().is_empty());
    std::fs::remove_file(ship.v.path("moodledata/climaintenance.html")).unwrap();
    ship.once_at(400);
    assert_eq!(ship.command("fire").0, CommandState::Done);
}

#[test]
fn the_fake_php_plays_the_transcripts_quirks() {
    let ship = Ship::new();
    let scratch = tempfile::tempdir().unwrap();
    let (php, code) = ship.moodle.php(scratch.path()).unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(&php)
            .current_dir(&code)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code0, out, _) = run(&[
        "admin/cli/backup.php",
        "--courseid=4",
        "--destination=/no-such-dir",
    ]);
    assert_eq!(
        (code0, out.as_str()),
        (
            Some(0),
            "Destination directory does not exists or not writable.\n"
        )
    );
    let (c, out, _) = run(&[
        "admin/cli/backup.php",
        "--courseid=999",
        "--destination=/tmp",
    ]);
    assert_eq!(
        (c, out.as_str()),
        (Some(1), "!!! Can't find data record in database. !!!\n")
    );
    let (c, _, err) = run(&[
        "admin/cli/delete_course.php",
        "--courseid=999",
        "--non-interactive",
    ]);
    assert_eq!((c, err.as_str()), (Some(1), "Course not found\n"));
    let (c, out, _) = run(&["admin/cli/delete_course.php", "--courseid=3"]);
    assert_eq!(c, Some(0));
    assert!(out.ends_with("(y/N)\n: "), "{out}");
    assert!(
        ship.moodle.state().course("FIRE-201").is_some(),
        "without --non-interactive nothing is deleted"
    );
    let (c, out, _) = run(&[
        "admin/cli/delete_course.php",
        "--courseid=1",
        "--non-interactive",
    ]);
    assert_eq!(c, Some(0));
    assert!(out.ends_with("Done!\n"));
    let (c, out, _) = run(&[
        "admin/cli/delete_course.php",
        "--courseid=3",
        "--non-interactive",
        "--disablerecyclebin",
    ]);
    assert_eq!(c, Some(1));
    assert!(
        out.contains("Disabling recycle bin...")
            && out
                .ends_with("!!! Exception - Call to undefined function course_get_format() !!!\n")
    );
    assert!(
        ship.moodle.state().course("FIRE-201").is_some(),
        "half-deleted: the row stays"
    );
    let (c, out, _) = run(&[
        "admin/cli/delete_course.php",
        "--courseid=3",
        "--non-interactive",
    ]);
    assert_eq!(c, Some(0));
    assert!(out.ends_with("Done!\n") && !out.contains("++ Deleted - Page ++"));
    assert!(ship.moodle.state().course("FIRE-201").is_none());
}

#[test]
fn replace_course_puts_the_new_version_live_at_once_and_retires_the_old_under_the_guard() {
    let ship = Ship::new();
    ship.v.once();
    unacknowledged(&ship.v, "ERM-110");
    ship.send(
        1,
        vec![cmd(
            "replace_course",
            "erm-v2",
            serde_json::json!({"course": "ERM-110", "shortname": "ERM-110-V2", "idnumber": "ERM-110-V2", "category": "ENGINE"}),
            &["files/course.mbz"],
        )],
        vec![("files/course.mbz", mbz("course-ERM-110-no-users.mbz"))],
    );
    ship.v.once();
    let (state, reason) = ship.command("erm-v2");
    assert_eq!(state, CommandState::Waiting);
    assert!(
        reason.starts_with(
            "ERM-110-V2 is live; retiring ERM-110: waiting for shore to acknowledge 2 records"
        ),
        "{reason}"
    );
    {
        let st = ship.moodle.state();
        assert!(
            st.course("ERM-110-V2").unwrap().visible,
            "the new version is live"
        );
        assert!(
            !st.course("ERM-110").unwrap().visible,
            "the old one is hidden"
        );
    }
    let a = ship.v.bundle("0002.vsb", ack(2, 1));
    ship.v.drop_in(&a, "0002.vsb");
    ship.once_at(0);
    ship.once_at(400);
    let (state, note) = ship.command("erm-v2");
    assert_eq!(state, CommandState::Done, "{note}");
    assert!(
        note.starts_with("ERM-110-V2 (idnumber ERM-110-V2) is live; course ERM-110 (id 4) deleted (replaced by ERM-110-V2)"),
        "{note}"
    );
    let st = ship.moodle.state();
    assert!(st.course("ERM-110").is_none() && st.course("ERM-110-V2").is_some());
    drop(st);
    assert_eq!(
        ship.scripts(),
        ["restore_backup.php", "backup.php", "delete_course.php"]
    );
}

#[test]
fn set_mapping_reports_rows_that_name_what_this_moodle_lacks() {
    let ship = Ship::new();
    ship.moodle.state().modules.insert(
        4,
        (
            2,
            "page".into(),
            "Personal survival techniques".into(),
            "SAFETY-101-PST".into(),
        ),
    );
    let csv = "kind,legacy_id,moodle_key,course\n\
               category,TRS-DECK,DECK,\n\
               category,TRS-GALLEY,GALLEY,\n\
               course,TRS-0101,SAFETY-101,\n\
               course,TRS-0900,NAV-900,\n\
               activity,TRS-0101-A,SAFETY-101-PST,SAFETY-101\n\
               activity,TRS-0101-B,page:Personal survival techniques,SAFETY-101\n\
               activity,TRS-0101-Z,SAFETY-101-ZZZ,SAFETY-101\n";
    ship.send(
        1,
        vec![cmd(
            "set_mapping",
            "map-1",
            serde_json::json!({}),
            &["files/mapping.csv"],
        )],
        vec![("files/mapping.csv", csv.as_bytes().to_vec())],
    );
    ship.v.once();
    let (state, note) = ship.command("map-1");
    assert_eq!(state, CommandState::Done, "{note}");
    assert!(
        note.starts_with("7 mapping(s) stored"),
        "stored either way: {note}"
    );
    assert!(
        note.contains("3 row(s) name what this Moodle lacks (first: row 3 moodle_key \"GALLEY\""),
        "{note}"
    );
    let drift: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ship.v.path("state/reports/map-1.mapping-drift.json")).unwrap(),
    )
    .unwrap();
    let rows: Vec<u64> = drift
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["row"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, [3, 5, 8]);
}

#[test]
fn a_guarded_delete_asks_for_a_capture_after_hiding_and_then_counts_what_it_captured() {
    let pg = crate::support::dbs::Pg::start();
    let ship = Ship::new();
    let db = pg.moodle_section(&ship.v.path("db.pw"));
    let text = std::fs::read_to_string(&ship.v.config)
        .unwrap()
        .replacen("[moodle]\n", &db, 1);
    std::fs::write(&ship.v.config, text).unwrap();
    let (state, reason) = ship.run_one(
        1,
        "delete_course",
        "retire-safety",
        serde_json::json!({"course": "SAFETY-101"}),
    );
    assert_eq!(state, CommandState::Waiting);
    assert!(
        reason.contains("waiting for a progress capture"),
        "{reason}"
    );
    assert!(!ship.moodle.state().course("SAFETY-101").unwrap().visible);
    // The agent captured in the same run; the next look counts SAFETY-101's records in the outbox.
    ship.once_at(10);
    let (state, reason) = ship.command("retire-safety");
    assert_eq!(state, CommandState::Waiting);
    let records: Vec<_> = ship
        .v
        .store()
        .outbox_records()
        .unwrap()
        .into_iter()
        .filter(|r| r.course == "SAFETY-101")
        .collect();
    let learners: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r.user.as_str()).collect();
    assert!(!records.is_empty());
    assert!(
        reason.contains(&format!(
            "waiting for shore to acknowledge {} records of SAFETY-101",
            records.len()
        )) && reason.contains(&format!(
            "({} learners have progress in this course)",
            learners.len()
        )),
        "{reason}"
    );
    assert!(ship.scripts().is_empty(), "nothing backed up or deleted");
}

#[test]
fn a_final_backup_without_user_data_holds_the_deletion() {
    let ship = Ship::new();
    ship.moodle.state().backup_without_users = true;
    let (state, reason) = ship.run_one(
        1,
        "delete_course",
        "fire",
        serde_json::json!({"course": "FIRE-201"}),
    );
    assert_eq!(state, CommandState::Waiting);
    assert!(
        reason.contains("without user data") && reason.contains("backup_general_users --set=1"),
        "{reason}"
    );
    assert!(
        ship.moodle.state().course("FIRE-201").is_some(),
        "not deleted"
    );
    assert_eq!(ship.scripts(), ["backup.php"]);
    ship.moodle.state().backup_without_users = false;
    ship.once_at(4000);
    assert_eq!(ship.command("fire").0, CommandState::Done);
    assert!(ship.moodle.state().course("FIRE-201").is_none());
}

/// `shore course retire` of a course nobody knows (a typo) is an error that says what was
/// looked at; naming a vessel that holds it queues the guarded deletion for it.
#[test]
fn retiring_a_course_nobody_knows_is_an_error_unless_a_vessel_is_named() {
    let mut shore = crate::support::shore::Shore::new();
    shore.start();
    let v = crate::support::shore::linked_vessel(
        &shore,
        &format!("https://127.0.0.1:{}", shore.port),
        "",
    );
    let out = shore.run(&["course", "retire", "ERM-11O"]);
    assert_eq!(out.status.code(), Some(65), "{:?}", out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no course ERM-11O is known") && err.contains("--vessel"),
        "{err}"
    );
    let out = shore.run(&["course", "retire", "ERM-11O", "--vessel", VESSEL]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("queued delete_course"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = v;
}
