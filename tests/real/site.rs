//! The whole site changing under the agent, on a Moodle of the test's own: maintenance mode
//! switched on with `admin/cli/maintenance.php --enable`, and a new Moodle version deployed and
//! then upgraded with `admin/cli/upgrade.php --non-interactive`. Commands that change Moodle
//! wait with the reason in `vessel-sync status`, nothing is lost or done twice, and they go on
//! once Moodle is back; progress capture keeps working throughout (it reads the database).

use vessel::store::CommandState;

use super::{Site, mbz};
use crate::support::cmd;
use testkit::realmoodle::Db;

crate::on_both!(
    maintenance_mode_holds_every_command_with_the_reason_until_it_is_switched_off,
    an_upgrade_under_the_agent_holds_commands_until_upgrade_php_has_run,
);

/// A bundle of one of each command that changes Moodle: a restore, three accounts through the
/// upload CLI, and hiding a course that is already there.
fn bundle(s: &Site, seq: u64, existing: &str) {
    let t = s.tag.to_lowercase();
    let course = s.name(&format!("R{seq}"));
    let mut csv = String::from("username,firstname,lastname,email,idnumber,password\n");
    for i in 0..3 {
        csv += &format!(
            "{t}s{seq}{i},Sea,Farer,{t}s{seq}{i}@fleet.example.invalid,{}-{seq}{i},Sailor#2026\n",
            s.tag
        );
    }
    s.send(
        seq,
        vec![
            cmd(
                "restore_course",
                &format!("restore-{seq}"),
                serde_json::json!({"shortname": course, "idnumber": course, "category": s.name("C")}),
                &["files/e.mbz"],
            ),
            cmd(
                "upsert_users",
                &format!("users-{seq}"),
                serde_json::json!({}),
                &["files/users.csv"],
            ),
            cmd(
                "hide_course",
                &format!("hide-{seq}"),
                serde_json::json!({"course": existing}),
                &[],
            ),
        ],
        vec![
            ("files/e.mbz", mbz("course-ERM-110-no-users.mbz")),
            ("files/users.csv", csv.into_bytes()),
        ],
    );
}

/// The first command of bundle `seq` waits with a reason holding `why`, the others wait
/// behind it, `status` shows why; Moodle has none of their effects.
fn all_wait(s: &Site, seq: u64, existing: &str, why: &str) {
    let note = s.expect(&format!("restore-{seq}"), CommandState::Waiting);
    assert!(note.contains(why), "restore-{seq}: {note}{}", s.said());
    assert!(note.contains("nothing was changed"), "{note}");
    // The bundle's later commands keep their order: not run before the first.
    for id in ["users", "hide"] {
        let (state, note) = s.command(&format!("{id}-{seq}"));
        assert_eq!(state, CommandState::Ready, "{id}-{seq}: {note}{}", s.said());
    }
    let status = s.run(&["status"], &[]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(why),
        "status shows why the commands wait:\n{text}{}",
        s.said()
    );
    assert_eq!(s.course(&s.name(&format!("R{seq}"))), None);
    let t = s.tag.to_lowercase();
    assert_eq!(
        s.value(&format!(
            "SELECT COUNT(*) FROM mdl_user WHERE username LIKE '{t}s{seq}%'"
        )),
        "0"
    );
    assert_eq!(s.course(existing).map(|c| c.4), Some(1), "still visible");
}

/// Then, once Moodle is back, all three are done exactly once.
fn all_done(s: &Site, seq: u64, existing: &str) {
    for id in ["restore", "users", "hide"] {
        s.expect(&format!("{id}-{seq}"), CommandState::Done);
    }
    let course = s.name(&format!("R{seq}"));
    assert!(s.course(&course).is_some(), "{course} restored{}", s.said());
    assert_eq!(
        s.value(&format!(
            "SELECT COUNT(*) FROM mdl_course WHERE shortname LIKE '{course}%'"
        )),
        "1",
        "restored once"
    );
    let t = s.tag.to_lowercase();
    assert_eq!(
        s.value(&format!(
            "SELECT COUNT(*) FROM mdl_user WHERE username LIKE '{t}s{seq}%'"
        )),
        "3"
    );
    assert_eq!(s.course(existing).map(|c| c.4), Some(0), "hidden");
}

/// A site with category C and a visible course in it.
fn site(db: Db, tag: &str) -> (Site, String) {
    let s = Site::alone(db, tag);
    s.category("C");
    let existing = s.name("OLD");
    s.send(
        1,
        vec![cmd(
            "restore_course",
            "old",
            serde_json::json!({"shortname": existing, "idnumber": existing, "category": s.name("C"), "visible": true}),
            &["files/e.mbz"],
        )],
        vec![("files/e.mbz", mbz("course-ERM-110-no-users.mbz"))],
    );
    s.once();
    s.expect("old", CommandState::Done);
    (s, existing)
}

fn php_ok(s: &Site, args: &[&str]) -> String {
    let o = s.m.php(args).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "php {args:?}: {text}");
    text
}

fn maintenance_mode_holds_every_command_with_the_reason_until_it_is_switched_off(db: Db) {
    let (s, existing) = site(db, &format!("mm{}", &db.name()[..2]));
    php_ok(&s, &["admin/cli/maintenance.php", "--enable"]);
    // What the site says to a browser and the web services now.
    let refused =
        s.m.admin("core_webservice_get_site_info", &Default::default());
    assert!(
        refused.is_err(),
        "the web services answer in maintenance mode"
    );
    bundle(&s, 2, &existing);
    s.once();
    all_wait(&s, 2, &existing, "climaintenance.html");
    // Capture keeps reading the database meanwhile.
    let out = s.run(&["capture", "--json"], &[]);
    assert!(
        out.status.success(),
        "capture in maintenance mode{}",
        s.said()
    );

    php_ok(&s, &["admin/cli/maintenance.php", "--disable"]);
    // Not before the retry time: still waiting, nothing run.
    s.once();
    s.expect("restore-2", CommandState::Waiting);
    s.once_at(301);
    all_done(&s, 2, &existing);
}

fn an_upgrade_under_the_agent_holds_commands_until_upgrade_php_has_run(db: Db) {
    let (s, existing) = site(db, &format!("up{}", &db.name()[..2]));
    // A new version of one plugin deployed: Moodle's code is ahead of its database.
    let version = s.m.code.join("mod/page/version.php");
    let text = std::fs::read_to_string(&version).unwrap();
    let (head, tail) = text.split_once("$plugin->version   = ").unwrap();
    let (number, rest) = tail.split_once(';').unwrap();
    let bumped: u64 = number.trim().parse::<u64>().unwrap() + 1;
    std::fs::write(
        &version,
        format!("{head}$plugin->version   = {bumped};{rest}"),
    )
    .unwrap();
    bundle(&s, 2, &existing);
    s.once();
    all_wait(&s, 2, &existing, "An upgrade is pending");

    // Moodle's environment check wants max_input_vars >= 5000; Debian's php.ini says 1000.
    let said = php_ok(
        &s,
        &[
            "-d",
            "max_input_vars=5000",
            "admin/cli/upgrade.php",
            "--non-interactive",
        ],
    );
    assert!(said.contains("mod_page"), "{said}");
    assert_eq!(
        s.value(
            "SELECT value FROM mdl_config_plugins WHERE plugin = 'mod_page' AND name = 'version'"
        ),
        bumped.to_string()
    );
    s.once_at(301);
    all_done(&s, 2, &existing);
}
