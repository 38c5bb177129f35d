//! The stand-in Moodle (`testkit::fake`, which the fast tests, the demo and `bench users` use)
//! against the real one: the same questions asked of both, and the answers the agent depends on
//! compared: reply shapes of the lookups, the error codes that decide wait, fail or bisect, and
//! the CLI's readiness answer and error markers. A difference here is a wrong belief of the
//! stand-in, fixed in the stand-in.

use std::time::Duration;

use moodle::cli::{Cli, CliError};
use moodle::config::CliSettings;
use moodle::ws::{Params, Safety, Token, Ws, WsError};
use serde_json::Value;
use testkit::fake::{FakeMoodle, TOKEN};
use testkit::realmoodle::{Db, RealMoodle};

crate::on_both!(the_stand_in_answers_what_the_agent_asks_as_the_real_moodle_does);

/// What the agent takes from a reply: the JSON for a success, the error code for a refusal.
fn answer(ws: &Ws, function: &str, p: &Params) -> Result<Value, String> {
    match ws.call(function, p, Safety::Read) {
        Ok(v) => Ok(v),
        // "Record not found" is `invalidrecordunknown` or `invalidrecord` by the site's
        // debugging setting and by version (4.5 says the second where 5.0 says the first); the
        // agent treats them alike, and so does the comparison.
        Err(e @ WsError::Moodle { .. }) => Err(match e.errorcode().unwrap_or_default() {
            "invalidrecord" | "invalidrecordunknown" => "invalidrecord(unknown)".to_string(),
            code => code.to_string(),
        }),
        Err(e) => Err(format!("not a Moodle refusal: {e}")),
    }
}

fn questions() -> Vec<(&'static str, &'static str, Params)> {
    let nobody = "vs-conformance-nobody";
    vec![
        (
            "a course nobody has, by shortname",
            "core_course_get_courses_by_field",
            Params::new().set("field", "shortname").set("value", nobody),
        ),
        (
            "a course nobody has, by idnumber",
            "core_course_get_courses_by_field",
            Params::new().set("field", "idnumber").set("value", nobody),
        ),
        (
            "a category nobody has, by idnumber",
            "core_course_get_categories",
            Params::new()
                .set("criteria[0][key]", "idnumber")
                .set("criteria[0][value]", nobody)
                .set("addsubcategories", 0),
        ),
        (
            "users nobody has, by username",
            "core_user_get_users_by_field",
            Params::new()
                .set("field", "username")
                .set("values[0]", nobody),
        ),
        (
            "a user with an upper-case username (one bad user refuses the call)",
            "core_user_create_users",
            Params::new()
                .set("users[0][username]", "Vs-Conformance-BAD")
                .set("users[0][firstname]", "Sea")
                .set("users[0][lastname]", "Farer")
                .set("users[0][email]", "vs-bad@fleet.example.invalid")
                .set("users[0][password]", "Sailor#2026x"),
        ),
        (
            "a user without a lastname",
            "core_user_create_users",
            Params::new()
                .set("users[0][username]", "vs-conformance-bad")
                .set("users[0][firstname]", "Sea")
                .set("users[0][email]", "vs-bad@fleet.example.invalid")
                .set("users[0][password]", "Sailor#2026x"),
        ),
        (
            "the contents of a course that does not exist",
            "core_course_get_contents",
            Params::new().set("courseid", 999_999),
        ),
    ]
}

fn the_stand_in_answers_what_the_agent_asks_as_the_real_moodle_does(db: Db) {
    let real = RealMoodle::shared(db).unwrap();
    let fake = FakeMoodle::start().unwrap();
    let client = |url: &str, token: &str| {
        Ws::new(url, Token::new(token).unwrap(), Duration::from_secs(60)).unwrap()
    };
    let r = client(&real.url, &real.agent_token);
    let f = client(fake.url(), TOKEN);
    let mut differ = Vec::new();
    let mut seen = Vec::new();
    for (what, function, p) in questions() {
        let (a, b) = (answer(&r, function, &p), answer(&f, function, &p));
        seen.push(a.clone());
        if a != b {
            differ.push(format!(
                "{what} ({function}):\n  real: {a:?}\n  fake: {b:?}"
            ));
        }
    }
    // The real answers are the ones the agent's decisions are written for.
    let refused = |code: &str| Err::<Value, String>(code.to_string());
    assert_eq!(
        seen[0],
        Ok(serde_json::json!({"courses": [], "warnings": []}))
    );
    assert_eq!(seen[2], Ok(serde_json::json!([])));
    assert_eq!(seen[3], Ok(serde_json::json!([])));
    assert_eq!(seen[4], refused("invalidparameter"));
    assert_eq!(seen[5], refused("invalidparameter"));
    // A token Moodle does not know.
    let p = Params::new();
    let (a, b) = (
        answer(
            &client(&real.url, "0123456789abcdef0123456789abcdef"),
            "core_webservice_get_site_info",
            &p,
        ),
        answer(
            &client(fake.url(), "0123456789abcdef0123456789abcdef"),
            "core_webservice_get_site_info",
            &p,
        ),
    );
    assert_eq!(a, refused("invalidtoken"));
    if a != b {
        differ.push(format!("an unknown token:\n  real: {a:?}\n  fake: {b:?}"));
    }

    // The CLI: the readiness check on a site with nothing to upgrade, and a restore of a file
    // that is not a backup.
    let scratch = tempfile::tempdir().unwrap();
    let (fake_php, fake_code) = fake.php(scratch.path()).unwrap();
    let settings = |php: std::path::PathBuf, code: std::path::PathBuf| CliSettings {
        moodle_dir: code,
        php,
        prefix: Vec::new(),
        timeout: 300,
        dataroot: None,
        backup_dir: None,
        keep_backups: 0,
        upload_cli: true,
        upload_workers: 2,
    };
    let (rs, fs) = (
        settings("/usr/bin/php".into(), real.code.clone()),
        settings(fake_php, fake_code),
    );
    let (rc, fc) = (Cli::new(&rs, &|| {}), Cli::new(&fs, &|| {}));
    let ready = |c: &Cli<'_>| match c.ready() {
        Ok(()) => "ready".to_string(),
        Err(CliError::Maintenance(_)) => "maintenance".into(),
        Err(e) => format!("error: {e}"),
    };
    if ready(&rc) != ready(&fc) {
        differ.push(format!(
            "upgrade.php --is-pending:\n  real: {}\n  fake: {}",
            ready(&rc),
            ready(&fc)
        ));
    }
    let junk = scratch.path().join("not-a-backup.mbz");
    std::fs::write(&junk, b"this is not a Moodle backup").unwrap();
    let restore = |c: &Cli<'_>| {
        let run = c
            .run(
                "restore_backup.php",
                &[
                    format!("--file={}", junk.display()),
                    "--categoryid=1".into(),
                ],
            )
            .unwrap();
        // The agent decides by the `!!! message !!!` marker and by the course id line.
        (
            run.error().is_some(),
            run.after("Restored course ID:").is_some(),
        )
    };
    assert_eq!(ready(&rc), "ready");
    let (a, b) = (restore(&rc), restore(&fc));
    assert_eq!(
        a,
        (true, false),
        "Moodle marks the refusal and names no course"
    );
    if a != b {
        differ.push(format!(
            "restore_backup.php of a file that is not a backup (error marker, course id line):\n  real: {a:?}\n  fake: {b:?}"
        ));
    }
    // The upload CLI: the per-line report the agent reads (what was created or updated, and
    // the Error:/Warning: lines it quotes for a refused row), for new users, a bad email, an
    // email taken by another row, an unknown course, and then one of them updated.
    let tag = format!(
        "vsc{}{}",
        std::process::id(),
        crate::support::now() % 1_000_000
    );
    let first = format!(
        "username,password,firstname,lastname,email,idnumber,auth,course1\n\
         {tag}a,Sailor#2026x,Sea,Farer,{tag}a@fleet.example.invalid,{tag}-A,manual,\n\
         {tag}b,Sailor#2026x,Sea,Farer,not-an-email,{tag}-B,manual,\n\
         {tag}c,Sailor#2026x,Sea,Farer,{tag}a@fleet.example.invalid,{tag}-C,manual,\n\
         {tag}d,Sailor#2026x,Sea,Farer,{tag}d@fleet.example.invalid,{tag}-D,manual,{tag}-NO-SUCH-COURSE\n"
    );
    let second = format!(
        "username,password,firstname,lastname,email,idnumber,auth\n\
         {tag}a,,Sea,Captain,{tag}a@fleet.example.invalid,{tag}-A,manual\n"
    );
    let upload = |c: &Cli<'_>, name: &str, text: &str| {
        let file = scratch.path().join(name);
        std::fs::write(&file, text).unwrap();
        let run = c
            .run(
                moodle::users::upload::UPLOAD_SCRIPT,
                &moodle::users::upload::upload_args(&file),
            )
            .unwrap();
        let mut report: Vec<(u64, moodle::users::upload::Said)> =
            moodle::users::upload::cli_said(&run.stdout)
                .into_iter()
                .collect();
        report.sort_by_key(|(n, _)| *n);
        let problems: Vec<String> = run
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("Error:") || l.starts_with("Warning:"))
            .map(|l| l.replace(&tag, "TAG"))
            .collect();
        (report, problems, run.stdout.replace(&tag, "TAG"))
    };
    for (name, text) in [("first.csv", &first), ("second.csv", &second)] {
        let (a, b) = (upload(&rc, name, text), upload(&fc, name, text));
        if (&a.0, &a.1) != (&b.0, &b.1) {
            differ.push(format!(
                "uploaduser.php on {name} (report, problem lines):\n  real: {:?} {:?}\n  fake: {:?} {:?}\n--- real stdout\n{}\n--- fake stdout\n{}",
                a.0, a.1, b.0, b.1, a.2, b.2
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "the stand-in answers differently from the real Moodle {} on {}:\n{}\n--- PHP\n{}",
        real.version.name(),
        db.name(),
        differ.join("\n"),
        real.web_log()
    );
}
