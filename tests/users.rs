//! `vessel-sync users validate|import` against the faithful fake Moodle: the exact report for an
//! 80,000-row file with bad rows of many kinds, every good row created in chunks, bisection of a
//! refused chunk, updates and conflicts with existing users, dry run, resumption after SIGKILL,
//! and Moodle's failures explained.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::fake::{FakeMoodle, TOKEN};
use testkit::sample;

use crate::support::bin;

struct Site {
    moodle: FakeMoodle,
    dir: tempfile::TempDir,
    token: PathBuf,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        Self {
            moodle: FakeMoodle::start().unwrap(),
            dir,
            token,
        }
    }

    fn csv(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn import(&self, csv: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(bin());
        c.arg("users")
            .arg("import")
            .arg(csv)
            .args(["--moodle", self.moodle.url()])
            .arg("--token-file")
            .arg(&self.token)
            .args(extra)
            .env_remove("VESSEL_SYNC_FAILPOINT");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn users(&self) -> usize {
        // Everyone but the admin.
        self.moodle.state().users.len() - 1
    }

    fn calls(&self, f: &str) -> u64 {
        self.moodle.state().calls.get(f).copied().unwrap_or(0)
    }
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn rows_fields(errors: &serde_json::Value) -> Vec<(u64, String)> {
    errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["field"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const HEADER: &str = "username,firstname,lastname,email,idnumber,password,course1\n";

fn seafarers(n: usize) -> String {
    let mut s = HEADER.to_string();
    for i in 0..n {
        s += &format!("u{i:03},Sea,Farer,u{i:03}@fleet.example.invalid,SEAF-{i:05},Sailor#2026,\n");
    }
    s
}

#[test]
fn an_80000_row_file_with_one_percent_bad_rows_gets_the_exact_report_and_every_good_row_is_created_in_chunks()
 {
    let site = Site::new();
    let csv = site.dir.path().join("fleet.csv");
    let expected = sample::write(&csv, 80_000, true).unwrap();

    let out = Command::new(bin())
        .args(["users", "validate", "--json"])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65), "problems found exit 65");
    let report = json(&out);
    let got = rows_fields(&report);
    let want: Vec<(u64, String)> = expected.iter().map(|(r, f)| (*r, f.to_string())).collect();
    assert_eq!(got, want, "exactly the injected problems, in row order");
    let text = |row: u64| -> String {
        report
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["row"] == row)
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    // One of each kind, by where sample::write put it (data index i = row - 2).
    assert!(text(52).contains("is required and empty"), "{}", text(52));
    assert!(text(152).contains("not a valid email"));
    assert!(text(252).contains("row 251 has the same username"));
    assert!(text(352).contains("identity across the fleet"));
    assert!(text(452).contains("not valid UTF-8"));
    assert!(text(552).contains("line break"));
    assert!(text(652).contains("spreadsheet formula"));
    assert!(text(752).contains("row 751 has the same email"));
    let bad_rows: BTreeSet<u64> = expected.iter().map(|(r, _)| *r).collect();

    let out = site.import(&csv, &["--chunk", "500", "--json"], &[]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = json(&out);
    let good = 80_000 - bad_rows.len();
    assert_eq!(summary["created"], good);
    assert_eq!(site.users(), good, "every good row is a user, once");
    assert_eq!(rows_fields(&summary["errors"]), want);
    {
        let st = site.moodle.state();
        assert!(st.user("s000000").is_some());
        assert!(
            st.user("s000050").is_none(),
            "row 52 (empty first name) was not sent"
        );
        assert_eq!(st.user("s000049").unwrap().idnumber, "SEAF-0000049");
        // Every tenth good row asked for SAFETY-101, every twentieth also for ERM-110.
        let want_enrolments = (0..80_000u64)
            .filter(|i| !bad_rows.contains(&(i + 2)))
            .map(|i| match i % 20 {
                0 => 2,
                10 => 1,
                _ => 0,
            })
            .sum::<usize>();
        assert_eq!(st.enrolments.len(), want_enrolments);
    }
    assert_eq!(
        site.calls("core_user_create_users"),
        good.div_ceil(500) as u64,
        "one create call per chunk of 500, none refused"
    );
    let report = site.dir.path().join("fleet.csv.report.json");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(
        rows_fields(&saved["errors"]),
        want,
        "the report file holds every refused row"
    );
    assert!(
        !site
            .dir
            .path()
            .join("fleet.csv.import-progress.json")
            .exists(),
        "a finished import leaves no progress file"
    );
}

#[test]
fn a_chunk_moodle_refuses_is_split_until_the_one_bad_row_is_named_and_the_rest_created() {
    for debug in [false, true] {
        let site = Site::new();
        // Moodle compares emails ignoring case when it creates a user, but looks them up
        // exactly: this one slips past the check and makes Moodle refuse the whole call.
        site.moodle
            .state()
            .add_user("old.hand", "Taken@Fleet.Example.invalid", "SEAF-99999");
        site.moodle.state().debug = debug;
        let mut text = seafarers(40);
        text = text.replace("u029@fleet.example.invalid", "taken@fleet.example.INVALID");
        let csv = site.csv("forty.csv", &text);
        let out = site.import(&csv, &["--chunk", "40", "--json"], &[]);
        assert_eq!(out.status.code(), Some(65));
        let summary = json(&out);
        assert_eq!(summary["created"], 39);
        assert_eq!(site.users(), 40, "39 new users and the old hand");
        assert!(site.moodle.state().user("u029").is_none());
        let errors = summary["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0]["row"], 31, "data row 30 is spreadsheet row 31");
        let msg = errors[0]["message"].as_str().unwrap();
        if debug {
            assert!(msg.contains("Email address already exists"), "{msg}");
        } else {
            assert!(
                msg.contains("without saying why") && msg.contains("debugging"),
                "{msg}"
            );
        }
        let creates = site.calls("core_user_create_users");
        assert!(
            (2..=13).contains(&creates),
            "bisection of 40 rows takes at most 2*log2(40)+1 calls, took {creates}"
        );
    }
}

#[test]
fn existing_users_are_updated_conflicts_refused_before_anything_is_written_and_dry_run_writes_nothing()
 {
    let site = Site::new();
    site.moodle
        .state()
        .add_user("j.hansen", "j.hansen@fleet.example.invalid", "SEAF-100231");
    site.moodle
        .state()
        .add_user("m.santos", "m.santos@fleet.example.invalid", "SEAF-100232");
    let csv = site.csv(
        "mixed.csv",
        &(HEADER.to_string()
            + "j.hansen,Jonas,Hansen-Berg,j.hansen@fleet.example.invalid,SEAF-100231,,SAFETY-101\n"
            + "n.new,Nina,New,n.new@fleet.example.invalid,SEAF-100232,Sailor#2026,\n"
            + "o.other,Olga,Other,M.Santos@fleet.example.invalid,SEAF-200001,Sailor#2026,\n"
            + "p.pike,Per,Pike,p.pike@fleet.example.invalid,SEAF-200002,Sailor#2026,NO-SUCH-101\n"
            + "q.quay,Quinn,Quay,q.quay@fleet.example.invalid,SEAF-200003,,ERM-110\n"),
    );
    let dry = site.import(&csv, &["--dry-run", "--json"], &[]);
    assert_eq!(dry.status.code(), Some(65));
    let s = json(&dry);
    assert_eq!(
        (s["created"].clone(), s["updated"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(site.users(), 2, "a dry run creates nothing");
    assert_eq!(
        site.calls("core_user_create_users") + site.calls("core_user_update_users"),
        0
    );
    assert_eq!(
        site.moodle.state().user("j.hansen").unwrap().lastname,
        "Last"
    );

    let out = site.import(&csv, &["--json"], &[]);
    assert_eq!(out.status.code(), Some(65));
    let s = json(&out);
    let errors: Vec<(u64, String, String)> = s["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["field"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!((errors[0].0, errors[0].1.as_str()), (3, "idnumber"));
    assert!(
        errors[0]
            .2
            .contains("already belongs to the existing user m.santos")
    );
    assert_eq!((errors[1].0, errors[1].1.as_str()), (4, "email"));
    assert!(
        errors[1].2.contains("m.santos"),
        "emails compared ignoring case"
    );
    assert_eq!((errors[2].0, errors[2].1.as_str()), (5, "course"));
    let st = site.moodle.state();
    let j = st.user("j.hansen").unwrap();
    assert_eq!(j.lastname, "Hansen-Berg", "an existing user is updated");
    assert_eq!(j.password, "", "an update never sets the password");
    let q = st.user("q.quay").unwrap();
    assert_eq!(q.firstname, "Quinn");
    assert!(st.user("n.new").is_none() && st.user("o.other").is_none());
    assert!(st.enrolments.contains(&(j.id, 2, 5)) && st.enrolments.contains(&(q.id, 4, 5)));
    assert_eq!(st.users.len(), 4, "admin, two old users, one new");
}

#[test]
fn an_update_moodle_refuses_is_narrowed_to_its_row_and_the_other_updates_go_through() {
    let site = Site::new();
    for i in 0..6 {
        site.moodle.state().add_user(
            &format!("u{i:03}"),
            &format!("u{i:03}@fleet.example.invalid"),
            &format!("SEAF-{i:05}"),
        );
    }
    site.moodle
        .state()
        .add_user("m.santos", "M.Santos@Fleet.example.invalid", "SEAF-100232");
    let text = seafarers(6)
        .replace(",Sea,Farer,", ",Sea,Farer-Smith,")
        .replace(
            "u004@fleet.example.invalid",
            "m.santos@fleet.EXAMPLE.invalid",
        );
    let csv = site.csv("renames.csv", &text);
    let out = site.import(&csv, &["--json"], &[]);
    assert_eq!(out.status.code(), Some(65));
    let s = json(&out);
    assert_eq!(s["updated"], 5);
    assert_eq!(s["errors"][0]["row"], 6);
    assert!(
        s["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("refused to update")
    );
    let st = site.moodle.state();
    assert_eq!(st.user("u000").unwrap().lastname, "Farer-Smith");
    assert_eq!(
        st.user("u004").unwrap().lastname,
        "Last",
        "the refused row is unchanged"
    );
}

#[test]
fn an_import_killed_mid_way_resumes_after_its_last_chunk_and_creates_each_user_once() {
    for failpoint in base::failpoint::USERS {
        let site = Site::new();
        let csv = site.csv("crew.csv", &seafarers(100));
        let armed = format!("{failpoint}@3");
        let out = site.import(
            &csv,
            &["--chunk", "10"],
            &[("VESSEL_SYNC_FAILPOINT", &armed)],
        );
        assert_eq!(out.status.signal(), Some(9), "killed at {armed}");
        assert_eq!(
            site.users(),
            30,
            "three chunks were written before the kill"
        );

        let again = site.import(&csv, &["--chunk", "10"], &[]);
        assert_eq!(again.status.code(), Some(64));
        let err = String::from_utf8_lossy(&again.stderr);
        assert!(err.contains("--resume"), "{err}");
        assert_eq!(site.users(), 30, "refusing to start over writes nothing");

        let out = site.import(&csv, &["--chunk", "10", "--resume", "--json"], &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(site.users(), 100, "each user exactly once");
        let creates = site.calls("core_user_create_users");
        let updates = site.calls("core_user_update_users");
        // At users.chunk-written the third chunk was written but not recorded: it is looked up,
        // found holding exactly its rows, and left alone (counted unchanged), never created
        // twice nor written again.
        assert_eq!((creates, updates), (10, 0), "{failpoint}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let unchanged = if *failpoint == "users.chunk-written" {
            10
        } else {
            0
        };
        assert_eq!(report["unchanged"], unchanged, "{failpoint}: {report}");
    }
}

#[test]
fn moodle_failures_are_explained_and_the_token_never_shown() {
    let site = Site::new();
    let csv = site.csv("few.csv", &seafarers(3));

    std::fs::write(&site.token, "0123456789abcdef0123456789abcdef").unwrap();
    let out = site.import(&csv, &[], &[]);
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Invalid token") && err.contains("--resume"),
        "{err}"
    );
    assert!(
        !err.contains("0123456789abcdef"),
        "the token is never printed"
    );

    std::fs::write(&site.token, TOKEN).unwrap();
    site.moodle.state().rest_disabled = true;
    let out = site.import(&csv, &[], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69));
    assert!(err.contains("REST protocol are switched off"), "{err}");
    assert_eq!(site.users(), 0);

    std::fs::write(&site.token, "").unwrap();
    let out = site.import(&csv, &[], &[]);
    assert_eq!(out.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Manage tokens"));

    std::fs::write(&site.token, TOKEN).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = Command::new(bin())
        .args(["users", "import"])
        .arg(&csv)
        .args(["--moodle", &url, "--token-file"])
        .arg(&site.token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach Moodle"));
}

#[test]
fn the_fake_moodle_ignores_a_json_body_as_moodle_does() {
    let site = Site::new();
    site.moodle
        .state()
        .add_user("j.hansen", "j@x.invalid", "SEAF-1");
    let url = format!("{}/webservice/rest/server.php", site.moodle.url());
    let client = reqwest::blocking::Client::new();
    let reply = client
        .post(format!(
            "{url}?wstoken={TOKEN}&wsfunction=core_user_get_users_by_field&moodlewsrestformat=json"
        ))
        .header("content-type", "application/json")
        .body(r#"{"field":"username","values":["j.hansen"]}"#)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let form: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(form["errorcode"], "invalidparameter", "{form}");
    assert_eq!(form["message"], "Invalid parameter value detected");
}

mod on_the_vessel {
    use std::os::unix::process::ExitStatusExt;

    use testkit::fake::TOKEN;
    use vessel::store::CommandState;
    use wire::envelope::Source;

    use super::{HEADER, Site, seafarers};
    use crate::support::{Options, VESSEL, Vessel, cmd, draft};

    fn vessel(site: &Site, configured: bool) -> Vessel {
        let extra = if configured {
            format!(
                "[moodle]\nurl = \"{}\"\ntoken_file = \"moodle.token\"\nuser_chunk = 10\n",
                site.moodle.url()
            )
        } else {
            String::new()
        };
        let v = Vessel::with(Options {
            extra: Box::leak(extra.into_boxed_str()),
            ..Options::default()
        });
        std::fs::write(v.path("moodle.token"), TOKEN).unwrap();
        v
    }

    fn bundle(v: &Vessel, seq: u64, id: &str, csv: String) {
        let name = format!("users-{seq}.vsb");
        let built = v.bundle(
            &name,
            draft(
                VESSEL,
                seq,
                vec![cmd(
                    "upsert_users",
                    id,
                    serde_json::json!({}),
                    &["files/crew.csv"],
                )],
                vec![("files/crew.csv", Source::Bytes(csv.into_bytes()))],
            ),
        );
        v.drop_in(&built, &name);
    }

    fn state_of(v: &Vessel, id: &str) -> (CommandState, String) {
        let c = v
            .store()
            .commands()
            .unwrap()
            .into_iter()
            .find(|c| c.cmd_id == id)
            .unwrap_or_else(|| panic!("no command {id}: {:?}", v.reason("users-1.vsb")));
        (c.state, c.reason.unwrap_or_default())
    }

    #[test]
    fn upsert_users_killed_mid_import_continues_on_restart_and_creates_each_seafarer_once() {
        let site = Site::new();
        let v = vessel(&site, true);
        let mut csv = seafarers(95);
        csv = csv.replace("u070,Sea,Farer,", "u070,,Farer,");
        bundle(&v, 1, "crew-2026-11", csv);
        let out = v.run_env(
            &["agent", "--once", "--config", v.config.to_str().unwrap()],
            &[("VESSEL_SYNC_FAILPOINT", "users.after-chunk@4")],
        );
        assert_eq!(out.status.signal(), Some(9));
        assert_eq!(site.users(), 40, "four chunks of ten before the kill");
        assert_eq!(state_of(&v, "crew-2026-11").0, CommandState::Running);

        v.once();
        let (state, note) = state_of(&v, "crew-2026-11");
        assert_eq!(state, CommandState::Done, "{note}");
        assert_eq!(site.users(), 94, "every good seafarer once; row 72 refused");
        assert_eq!(site.calls("core_user_create_users"), 10);
        assert!(
            note.contains("95 rows: 94 users created, 0 updated"),
            "{note}"
        );
        assert!(
            note.contains("1 rows refused (first: row 72 firstname"),
            "{note}"
        );
        let report = v.path("state/reports/crew-2026-11.users-report.json");
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
        assert_eq!(r["errors"][0]["row"], 72);
        assert!(
            !v.path("state/reports/crew-2026-11.import-progress.json")
                .exists()
        );

        // The same command id in a later bundle is a duplicate: nothing runs again.
        bundle(&v, 2, "crew-2026-11", seafarers(95));
        v.once();
        assert_eq!(site.calls("core_user_create_users"), 10);
    }

    #[test]
    fn on_a_vessel_with_moodle_code_users_go_through_moodles_upload_cli_and_are_checked() {
        let site = Site::new();
        let v = vessel(&site, true);
        let (php, code) = site.moodle.php(site.dir.path()).unwrap();
        let text = std::fs::read_to_string(&v.config).unwrap().replacen(
            "[moodle]\n",
            &format!(
                "[moodle]\nmoodle_dir = \"{}\"\nphp = \"{}\"\n",
                code.display(),
                php.display()
            ),
            1,
        );
        std::fs::write(&v.config, text).unwrap();
        site.moodle
            .state()
            .add_user("old.hand", "Taken@Fleet.Example.invalid", "SEAF-99999");
        let csv = seafarers(30)
            .replace(
                HEADER,
                "username,firstname,lastname,email,idnumber,password,course1,suspended\n",
            )
            .replace(",Sailor#2026,\n", ",Sailor#2026,,\n")
            .replace(
                "u011,Sea,Farer,u011@fleet.example.invalid,SEAF-00011,Sailor#2026,,",
                "u011,Sea,Farer,u011@fleet.example.invalid,SEAF-00011,Sailor#2026,,1",
            )
            .replace("u007@fleet.example.invalid", "Taken@Fleet.Example.invalid")
            .replace(
                "u003,Sea,Farer,u003@fleet.example.invalid,SEAF-00003,Sailor#2026,",
                "u003,Sea,Farer,u003@fleet.example.invalid,SEAF-00003,Sailor#2026,SAFETY-101",
            );
        bundle(&v, 1, "crew-cli", csv);
        v.once();
        let (state, note) = state_of(&v, "crew-cli");
        assert_eq!(state, CommandState::Done, "{note}");
        // The taken email is refused before the CLI runs (the CLI itself compares emails exactly,
        // as Moodle 5.0 on PostgreSQL does, and would have made a second account).
        assert!(note.starts_with("30 rows: 29 users created, 0 updated, 0 unchanged (not written), 1 enrolments; 1 rows refused (first: row 9 email: already used by the existing user old.hand"), "{note}");
        let st = site.moodle.state();
        let runs: Vec<&str> = st.cli_runs.iter().map(|a| a[0].as_str()).collect();
        assert_eq!(
            runs, ["admin/tool/uploaduser/cli/uploaduser.php"; 3],
            "one run per chunk of 10 (two at a time)"
        );
        assert_eq!(
            st.calls.get("core_user_create_users"),
            None,
            "no web-service creates"
        );
        assert_eq!(st.users.len(), 31, "admin, the old hand, 29 new");
        assert!(
            st.user("u011").unwrap().suspended,
            "the suspended column reaches Moodle"
        );
        assert!(!st.user("u012").unwrap().suspended);
        let u3 = st.user("u003").unwrap().id;
        assert!(
            st.enrolments.contains(&(u3, 2, 5)),
            "the upload CLI enrolled the row's course"
        );
        let left: Vec<String> = std::fs::read_dir(v.path("state/reports"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("upload-chunk"))
            .collect();
        assert!(
            left.is_empty(),
            "the chunk files (with passwords) are removed: {left:?}"
        );
    }

    #[test]
    fn suspend_users_suspends_and_reactivates_by_idnumber_and_names_unknown_accounts() {
        let site = Site::new();
        let v = vessel(&site, true);
        let a = site
            .moodle
            .state()
            .add_user("a.one", "a@x.invalid", "SEAF-1");
        let b = site
            .moodle
            .state()
            .add_user("b.two", "b@x.invalid", "SEAF-2");
        site.moodle.state().users.get_mut(&b).unwrap().suspended = true;
        let built = v.bundle(
            "suspend.vsb",
            draft(
                VESSEL,
                1,
                vec![cmd(
                    "suspend_users",
                    "leavers",
                    serde_json::json!({}),
                    &["files/leavers.csv"],
                )],
                vec![(
                    "files/leavers.csv",
                    Source::Bytes(b"idnumber,suspended\nSEAF-1,1\nSEAF-2,0\nSEAF-404,1\n".to_vec()),
                )],
            ),
        );
        v.drop_in(&built, "suspend.vsb");
        v.once();
        let (state, note) = state_of(&v, "leavers");
        assert_eq!(state, CommandState::Done);
        assert_eq!(
            note,
            "2 accounts set (by idnumber); 1 not on this Moodle: SEAF-404"
        );
        let st = site.moodle.state();
        assert!(st.users[&a].suspended && !st.users[&b].suspended);
    }

    #[test]
    fn upsert_users_waits_with_a_reason_while_moodle_is_not_configured_or_unreachable() {
        let site = Site::new();
        let v = vessel(&site, false);
        bundle(&v, 1, "crew-a", seafarers(3));
        let out = v.once();
        let (state, reason) = state_of(&v, "crew-a");
        assert!(out.contains("waiting"), "{out}");
        assert_eq!(state, CommandState::Waiting);
        assert!(
            reason.contains("set url and token_file under [moodle]"),
            "{reason}"
        );
        let status = String::from_utf8_lossy(
            &v.run(&["status", "--config", v.config.to_str().unwrap()])
                .stdout,
        )
        .into_owned();
        assert!(status.contains("token_file"), "status shows why: {status}");

        let v = vessel(&site, true);
        site.moodle.state().rest_disabled = true;
        bundle(&v, 1, "crew-b", seafarers(3));
        v.once();
        let (state, reason) = state_of(&v, "crew-b");
        assert_eq!(state, CommandState::Waiting);
        assert!(reason.contains("switched off"), "{reason}");
        assert_eq!(site.users(), 0);
    }
}
