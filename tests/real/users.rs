//! Seafarer accounts on a real Moodle: `upsert_users` with 2,000 rows, bad ones among them,
//! through the web services and through Moodle's upload CLI, checked against `mdl_user` and
//! `mdl_user_enrolments`; `suspend_users`; and `vessel-sync users import` from shore.

use moodle::ws::Params;
use vessel::store::CommandState;

use super::{Site, mbz};
use crate::support::cmd;
use testkit::realmoodle::Db;

crate::on_both!(
    two_thousand_rows_through_the_web_services_land_exactly_as_the_report_says,
    two_thousand_rows_through_the_upload_cli_land_exactly_as_the_report_says,
    suspend_users_suspends_and_reactivates_real_accounts,
    users_import_from_shore_creates_real_accounts_and_names_the_refused_row,
    bench_users_against_the_real_moodle_creates_every_account_and_cleans_up,
);

const ROWS: usize = 2000;

/// Creates a user through the admin's web services.
fn make_user(s: &Site, username: &str, email: &str, lastname: &str, idnumber: &str) {
    s.admin(
        "core_user_create_users",
        &Params::new()
            .set("users[0][username]", username)
            .set("users[0][firstname]", "Old")
            .set("users[0][lastname]", lastname)
            .set("users[0][email]", email)
            .set("users[0][password]", "Sailor#2026x")
            .set("users[0][idnumber]", idnumber),
    );
}

fn upsert(db: Db, tag: &str, extra: &str) {
    let s = Site::with(db, tag, extra);
    let t = s.tag.to_lowercase();
    s.category("C");
    let course = s.name("E110");
    s.send(
        1,
        vec![cmd(
            "restore_course",
            "course",
            serde_json::json!({"shortname": course, "idnumber": course, "category": s.name("C")}),
            &["files/e.mbz"],
        )],
        vec![("files/e.mbz", mbz("course-ERM-110-no-users.mbz"))],
    );
    s.once();
    s.expect("course", CommandState::Done);
    // Already on the site: one row updates it; another row wants a taken email.
    make_user(
        &s,
        &format!("{t}u0005"),
        &format!("{t}u0005@fleet.example.invalid"),
        "Old",
        &format!("{}-0005", s.tag),
    );
    make_user(
        &s,
        &format!("{t}other"),
        &format!("{t}taken@fleet.example.invalid"),
        "Other",
        &format!("{}-OTHER", s.tag),
    );

    let mut csv = String::from("username,firstname,lastname,email,idnumber,password,course1\n");
    for i in 0..ROWS {
        let first = if i == 100 { "" } else { "Sea" };
        let email = match i {
            200 => format!("{t}TAKEN@fleet.example.invalid"),
            300 => "not-an-email".to_string(),
            _ => format!("{t}u{i:04}@fleet.example.invalid"),
        };
        let c = if i % 10 == 0 { course.as_str() } else { "" };
        csv += &format!(
            "{t}u{i:04},{first},Farer{i},{email},{}-{i:04},Sailor#2026,{c}\n",
            s.tag
        );
    }
    s.send(
        2,
        vec![cmd(
            "upsert_users",
            "crew",
            serde_json::json!({}),
            &["files/crew.csv"],
        )],
        vec![("files/crew.csv", csv.clone().into_bytes())],
    );
    s.once();
    let note = s.expect("crew", CommandState::Done);
    assert!(
        note.starts_with(&format!(
            "{ROWS} rows: {} users created, 1 updated, 0 unchanged (not written), 197 enrolments; 3 rows refused",
            ROWS - 4
        )),
        "{note}{}",
        s.said()
    );
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.v.path("state/reports/crew.users-report.json")).unwrap(),
    )
    .unwrap();
    let refused: Vec<(u64, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let rows: Vec<u64> = refused.iter().map(|r| r.0).collect();
    assert_eq!(rows, [102, 202, 302], "{refused:?}");
    assert!(refused[1].1.to_lowercase().contains("email"), "{refused:?}");

    // Moodle's tables hold exactly that.
    let count = |cond: &str| -> usize {
        s.value(&format!(
            "SELECT COUNT(*) FROM mdl_user WHERE deleted = 0 AND username LIKE '{t}u%' {cond}"
        ))
        .parse()
        .unwrap()
    };
    assert_eq!(count(""), ROWS - 3, "every good row is one account");
    for i in [100, 200, 300] {
        assert_eq!(
            count(&format!("AND username = '{t}u{i:04}'")),
            0,
            "row {} refused",
            i + 2
        );
    }
    let (last, idn) = {
        let r = s.rows(&format!(
            "SELECT lastname, idnumber FROM mdl_user WHERE username = '{t}u0005'"
        ));
        (r[0][0].clone(), r[0][1].clone())
    };
    assert_eq!(
        (last.as_str(), idn.as_str()),
        ("Farer5", format!("{}-0005", s.tag).as_str())
    );
    assert_eq!(
        s.value(&format!(
            "SELECT idnumber FROM mdl_user WHERE username = '{t}u1999'"
        )),
        format!("{}-1999", s.tag)
    );
    let enrolled = s.value(&format!(
        "SELECT COUNT(*) FROM mdl_user_enrolments ue JOIN mdl_enrol e ON e.id = ue.enrolid JOIN mdl_course c ON c.id = e.courseid WHERE c.shortname = '{course}'"
    ));
    assert_eq!(enrolled, "197");

    // The same list sent again costs only the check: nothing is written.
    let changed_before = s.value(&format!(
        "SELECT COALESCE(MAX(timemodified), 0) FROM mdl_user WHERE username LIKE '{t}u%'"
    ));
    s.send(
        3,
        vec![cmd(
            "upsert_users",
            "crew-again",
            serde_json::json!({}),
            &["files/crew.csv"],
        )],
        vec![("files/crew.csv", csv.clone().into_bytes())],
    );
    s.once();
    let note = s.expect("crew-again", CommandState::Done);
    assert!(
        note.starts_with(&format!(
            "{ROWS} rows: 0 users created, 0 updated, {} unchanged (not written), 0 enrolments; 3 rows refused",
            ROWS - 3
        )),
        "{note}{}",
        s.said()
    );
    assert_eq!(
        s.value(&format!(
            "SELECT COALESCE(MAX(timemodified), 0) FROM mdl_user WHERE username LIKE '{t}u%'"
        )),
        changed_before,
        "no account was touched"
    );
    // Five emails changed: exactly those five are updated.
    let mut edited = String::new();
    for line in csv.lines() {
        let n = (10..15).find(|i| line.starts_with(&format!("{t}u{i:04},")));
        match n {
            Some(i) => {
                edited += &line.replace(
                    &format!("{t}u{i:04}@fleet"),
                    &format!("{t}u{i:04}.new@fleet"),
                )
            }
            None => edited += line,
        }
        edited.push('\n');
    }
    s.send(
        4,
        vec![cmd(
            "upsert_users",
            "crew-five",
            serde_json::json!({}),
            &["files/crew.csv"],
        )],
        vec![("files/crew.csv", edited.into_bytes())],
    );
    s.once();
    let note = s.expect("crew-five", CommandState::Done);
    assert!(
        note.starts_with(&format!(
            "{ROWS} rows: 0 users created, 5 updated, {} unchanged (not written)",
            ROWS - 8
        )),
        "{note}{}",
        s.said()
    );
    assert_eq!(
        s.value(&format!(
            "SELECT COUNT(*) FROM mdl_user WHERE username LIKE '{t}u%' AND email LIKE '%.new@fleet.example.invalid'"
        )),
        "5"
    );
}

fn two_thousand_rows_through_the_web_services_land_exactly_as_the_report_says(db: Db) {
    upsert(
        db,
        &format!("uw{}", &db.name()[..2]),
        "user_import = \"webservice\"\n",
    );
}

fn two_thousand_rows_through_the_upload_cli_land_exactly_as_the_report_says(db: Db) {
    upsert(db, &format!("uc{}", &db.name()[..2]), "");
}

fn suspend_users_suspends_and_reactivates_real_accounts(db: Db) {
    let s = Site::new(db, &format!("su{}", &db.name()[..2]));
    let t = s.tag.to_lowercase();
    make_user(
        &s,
        &format!("{t}a"),
        &format!("{t}a@x.invalid"),
        "A",
        &format!("{t}a-OLD"),
    );
    make_user(
        &s,
        &format!("{t}b"),
        &format!("{t}b@x.invalid"),
        "B",
        &format!("{t}b-OLD"),
    );
    let csv = format!("idnumber,suspended\n{t}a-OLD,1\n{t}b-OLD,0\n{t}-404,1\n");
    s.send(
        1,
        vec![cmd(
            "suspend_users",
            "leavers",
            serde_json::json!({}),
            &["files/l.csv"],
        )],
        vec![("files/l.csv", csv.into_bytes())],
    );
    s.once();
    let note = s.expect("leavers", CommandState::Done);
    assert_eq!(
        note,
        format!("2 accounts set (by idnumber); 1 not on this Moodle: {t}-404")
    );
    let susp = |u: &str| {
        s.value(&format!(
            "SELECT suspended FROM mdl_user WHERE username = '{t}{u}'"
        ))
    };
    assert_eq!((susp("a").as_str(), susp("b").as_str()), ("1", "0"));
}

fn users_import_from_shore_creates_real_accounts_and_names_the_refused_row(db: Db) {
    let s = Site::new(db, &format!("ui{}", &db.name()[..2]));
    let t = s.tag.to_lowercase();
    let mut csv = String::from("username,firstname,lastname,email,idnumber,password\n");
    for i in 0..120 {
        let first = if i == 50 { "" } else { "Sea" };
        csv += &format!(
            "{t}{i:03},{first},Farer,{t}{i:03}@fleet.example.invalid,{}-{i:03},Sailor#2026\n",
            s.tag
        );
    }
    let file = s.v.path("crew.csv");
    std::fs::write(&file, csv).unwrap();
    let token = s.v.path("ws.token");
    std::fs::write(&token, &s.m.agent_token).unwrap();
    let out = s.v.run(&[
        "users",
        "import",
        file.to_str().unwrap(),
        "--moodle",
        &s.m.url,
        "--token-file",
        token.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "one row refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["created"], 119, "{r}");
    assert_eq!(r["errors"][0]["row"], 52, "{r}");
    assert_eq!(
        s.value(&format!(
            "SELECT COUNT(*) FROM mdl_user WHERE username LIKE '{t}%' AND deleted = 0"
        )),
        "119"
    );
}

/// `vessel-sync bench users --config agent.toml`: the three imports of the benchmark create
/// every account on the real Moodle, and the accounts are deleted afterwards. The figures are
/// printed (`VESSEL_SYNC_BENCH_ROWS` sets the rows; the closing note's figures used 2,000).
fn bench_users_against_the_real_moodle_creates_every_account_and_cleans_up(db: Db) {
    let s = Site::new(db, &format!("bu{}", &db.name()[..2]));
    // On MariaDB (or with VESSEL_SYNC_BENCH_PLUGIN set) the agent's service also offers the
    // companion plugin: the checks go through local_vesselsync_get_users.
    let plugin = db == Db::MariaDb || std::env::var_os("VESSEL_SYNC_BENCH_PLUGIN").is_some();
    if plugin {
        let token =
            s.m.service_token(
                "vessel_sync_plugin",
                &[
                    testkit::realmoodle::AGENT_FUNCTIONS,
                    shore::forward::PLUGIN_FUNCTIONS,
                ]
                .concat(),
            )
            .unwrap();
        s.use_token(&token);
    }
    let rows = std::env::var("VESSEL_SYNC_BENCH_ROWS").unwrap_or_else(|_| "150".into());
    let o = s.run(&["bench", "users", "--rows", &rows, "--json"], &[]);
    assert!(o.status.success(), "bench users failed{}", s.said());
    let f: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("bench users on {} (plugin: {plugin}): {f}", db.name());
    let n: u64 = rows.parse().unwrap();
    for k in [
        "upload_cli_users_created",
        "vessel_cli_users_created",
        "vessel_ws_users_created",
    ] {
        assert_eq!(f[k].as_u64(), Some(n), "{k}: {f}");
    }
    assert_eq!(
        (
            f["vessel_again_created"].as_u64(),
            f["vessel_again_updated"].as_u64(),
            f["vessel_again_unchanged"].as_u64()
        ),
        (Some(0), Some(0), Some(n)),
        "the same list again writes nothing: {f}"
    );
    assert!(f["cleanup"].as_str().unwrap().starts_with("deleted"), "{f}");
    assert_eq!(
        s.value("SELECT COUNT(*) FROM mdl_user WHERE username LIKE 'vsbench%' AND deleted = 0"),
        "0",
        "every benchmark account deleted"
    );
}
