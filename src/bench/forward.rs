//! `vessel-sync bench forward [--rows N] [--db mariadb|postgres] [--moodle 5.0|4.5]` (lab
//! builds): records forwarded per second into a real Moodle acting as the cloud, through the
//! companion plugin and through core web services in the same run, and the share of that time
//! spent waiting on Moodle.
//!
//! It brings up the test kit's real Moodle (installed from `shared/moodle/src/` on first use and
//! cached), restores a course from a real backup into it, makes enough learners for N activity
//! completions, stores N records as if a vessel had sent them, and times one forwarding pass of
//! shore's forward worker over them ([`shore::forward::pass`]), exactly as `shore serve` runs it.

use std::time::{Duration, Instant};

use base::clock::Clock;
use moodle::ws::{Params, Token, Ws};
use testkit::realmoodle::{Db, RealMoodle, Version};
use wire::progress::{Record, RecordKind};

/// Where the real backups are: the checkout's fixtures, else `shared/moodle/mbz` beside it.
fn backup(name: &str) -> Result<std::path::PathBuf, String> {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        here.join("tests/fixtures/moodle/mbz"),
        here.join("../shared/moodle/mbz"),
    ]
    .into_iter()
    .map(|d| d.join(name))
    .find(|p| p.exists())
    .ok_or_else(|| format!("no {name} under tests/fixtures/moodle/mbz or ../shared/moodle/mbz"))
}

fn lines(m: &RealMoodle, sql: &str) -> Result<Vec<String>, String> {
    Ok(m.sql(sql)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Records forwarded through the core path in the same run, for the ratio (it is 20 to 50
/// times slower, so a smaller sample).
const CORE_ROWS: u64 = 200;

/// One timed pass of shore's forwarder over `records`, as a vessel sent them, into the cloud
/// behind `token`.
fn timed_pass(
    m: &RealMoodle,
    token: &str,
    records: &[Record],
) -> Result<(shore::forward::Pass, u64), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    base::fsutil::write_private(&dir.path().join("cloud.token"), token.as_bytes())
        .map_err(|e| e.to_string())?;
    let cfg_path = dir.path().join("shore.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "version = 1\n[shore]\nstate_dir = \"state\"\nlisten = \"127.0.0.1:0\"\n[cloud]\nurl = \"{}\"\ntoken_file = \"cloud.token\"\n",
            m.url
        ),
    )
    .map_err(|e| e.to_string())?;
    let cfg = shore::ShoreConfig::load(&cfg_path)?;
    let mut store = cfg.open().map_err(|e| e.to_string())?;
    let now = base::clock::SystemClock.now();
    store
        .add_vessel("bench-ship", &"0".repeat(64), "", "bench", now)
        .map_err(|e| e.to_string())?;
    let stored = store
        .store_batch(
            &shore::store::BatchIn {
                vessel: "bench-ship",
                seq: 1,
                sha256: &"0".repeat(64),
                envelope_id: "bench",
                records,
                previous: None,
                rotation: None,
                settled: 0,
                via: "https",
            },
            now,
        )
        .map_err(|e| e.to_string())?;
    if let shore::store::Stored::New { duplicate, .. } = stored {
        if duplicate > 0 {
            return Err(format!("{duplicate} generated records were duplicates"));
        }
    }
    let pass = shore::forward::pass(&cfg, &mut store, &base::clock::SystemClock)
        .map_err(|e| e.to_string())?;
    let left = store.forward_summary().map_err(|e| e.to_string())?.pending;
    Ok((pass, left))
}

/// The figures of one pass.
fn figures(pass: &shore::forward::Pass, n: usize) -> serde_json::Value {
    let applied = pass.outcomes.get("applied").copied().unwrap_or(0);
    serde_json::json!({
        "records": n,
        "outcomes": pass.outcomes,
        "seconds": pass.seconds,
        "moodle_seconds": pass.moodle_seconds,
        "records_per_s": applied as f64 / pass.seconds.max(1e-9),
        "moodle_share_percent": 100.0 * pass.moodle_seconds / pass.seconds.max(1e-9),
        "ms_per_record": 1000.0 * pass.seconds / (n.max(1) as f64),
    })
}

/// `bench forward`: `rows` records through the companion plugin and [`CORE_ROWS`] through core
/// web services, into one real Moodle of `version` on `db`.
pub fn run(rows: u64, db: Db, version: Version) -> Result<(serde_json::Value, String), String> {
    let rows = rows.max(1);
    let started = Instant::now();
    let m = RealMoodle::start_on(db, version)?;
    let startup = started.elapsed().as_secs_f64();
    // The cloud's course, from a real backup.
    let mbz = backup("course-SAFETY-101-with-users.mbz")?;
    let out = m.php(&[
        "admin/cli/restore_backup.php",
        &format!("--file={}", mbz.display()),
        "--categoryid=1",
    ])?;
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let cid: i64 = said
        .lines()
        .find_map(|l| l.split("Restored course ID:").nth(1))
        .and_then(|v| v.trim().trim_end_matches('=').trim().parse().ok())
        .ok_or_else(|| format!("restoring {} said: {said}", mbz.display()))?;
    let key = lines(
        &m,
        &format!(
            "SELECT COALESCE(NULLIF(idnumber, ''), shortname) FROM mdl_course WHERE id = {cid}"
        ),
    )?
    .pop()
    .ok_or("the restored course is not in mdl_course")?;
    let tracked: Vec<i64> = lines(
        &m,
        &format!("SELECT id FROM mdl_course_modules WHERE course = {cid} AND completion > 0"),
    )?
    .iter()
    .filter_map(|l| l.trim().parse().ok())
    .collect();
    let core_token = m.service_token("vessel_sync_shore", shore::forward::CLOUD_FUNCTIONS)?;
    let plugin_token = m.service_token(
        "vessel_sync_shore_plugin",
        &[
            shore::forward::CLOUD_FUNCTIONS,
            shore::forward::PLUGIN_FUNCTIONS,
        ]
        .concat(),
    )?;
    let ws = Ws::new(&m.url, Token::new(&core_token)?, Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let course = moodle::lookup::course(&ws, &key, || {})
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the cloud Moodle does not find course {key}"))?;
    let mut acts: Vec<String> = course
        .activities
        .values()
        .filter(|a| tracked.contains(&a.cmid))
        .map(|a| a.key.clone())
        .collect();
    // The map holds an activity under each key it answers to.
    acts.sort();
    acts.dedup();
    if acts.is_empty() {
        return Err(format!(
            "course {key} has no activity with completion tracking"
        ));
    }
    // Learners, enrolled: enough for `rows` completions through the plugin, CORE_ROWS through
    // core web services (other learners), and one more whose completion on board is timed to
    // the cloud.
    let per = acts.len() as u64;
    let core_rows = CORE_ROWS.min(rows);
    let learners = rows.div_ceil(per) + core_rows.div_ceil(per) + 1;
    let stamp = std::process::id();
    let mut users = Vec::new();
    for chunk_start in (0..learners).step_by(100) {
        let mut p = Params::new();
        let end = (chunk_start + 100).min(learners);
        for (i, n) in (chunk_start..end).enumerate() {
            let name = format!("vsfwd{stamp}n{n}");
            p = p
                .set(&format!("users[{i}][username]"), &name)
                .set(&format!("users[{i}][firstname]"), "Bench")
                .set(&format!("users[{i}][lastname]"), n)
                .set(
                    &format!("users[{i}][email]"),
                    format!("{name}@bench.invalid"),
                )
                .set(&format!("users[{i}][password]"), "Sailor#2026")
                .set(&format!("users[{i}][idnumber]"), name.to_uppercase());
        }
        let made = m.admin("core_user_create_users", &p)?;
        let mut e = Params::new();
        for (i, u) in made.as_array().into_iter().flatten().enumerate() {
            let id = u["id"].as_i64().unwrap_or_default();
            e = e
                .set(&format!("enrolments[{i}][roleid]"), 5)
                .set(&format!("enrolments[{i}][userid]"), id)
                .set(&format!("enrolments[{i}][courseid]"), cid);
            users.push(u["username"].as_str().unwrap_or_default().to_uppercase());
        }
        m.admin("enrol_manual_enrol_users", &e)?;
    }
    let setup = started.elapsed().as_secs_f64() - startup;
    let sailor = users.pop().ok_or("no learner was made")?;
    let now = base::clock::SystemClock.now();
    let made = |who: &[String], n: u64| -> Vec<Record> {
        who.iter()
            .flat_map(|u| acts.iter().map(move |a| (u, a)))
            .take(n as usize)
            .map(|(u, a)| Record {
                kind: RecordKind::ActivityCompletion,
                user: u.clone(),
                course: key.clone(),
                item: a.clone(),
                user_legacy: String::new(),
                course_legacy: String::new(),
                item_legacy: String::new(),
                value: "1".into(),
                time: now - 86_400,
            })
            .collect()
    };
    let split = usize::try_from(rows.div_ceil(per))
        .unwrap_or(users.len())
        .min(users.len());
    let plugin_records = made(&users[..split], rows);
    let core_records = made(&users[split..], core_rows);
    let (plugin_pass, plugin_left) = timed_pass(&m, &plugin_token, &plugin_records)?;
    if plugin_pass.path.as_deref() != Some("plugin") {
        return Err(format!(
            "the pass did not go through the plugin: {:?}",
            plugin_pass.path
        ));
    }
    let (core_pass, _) = timed_pass(&m, &core_token, &core_records)?;
    // Through the plugin, the cloud holds the learner's time: checked in SQL.
    let learners_time = lines(
        &m,
        &format!(
            "SELECT COUNT(*) FROM mdl_course_modules_completion cmc JOIN mdl_user u ON u.id = cmc.userid WHERE u.username LIKE 'vsfwd{stamp}n%' AND cmc.timemodified = {}",
            now - 86_400
        ),
    )?;
    let core_stamped = lines(
        &m,
        &format!(
            "SELECT COUNT(*) FROM mdl_course_modules_completion cmc JOIN mdl_user u ON u.id = cmc.userid WHERE u.username LIKE 'vsfwd{stamp}n%' AND cmc.timemodified >= {now}"
        ),
    )?;
    let delay = on_board_to_cloud(&m, &plugin_token, &key, &acts[0], &sailor, db)?;
    let plugin = figures(&plugin_pass, plugin_records.len());
    let core = figures(&core_pass, core_records.len());
    let ratio = plugin["records_per_s"].as_f64().unwrap_or(0.0)
        / core["records_per_s"].as_f64().unwrap_or(1.0).max(1e-9);
    let v = serde_json::json!({
        "benchmark": "forward",
        "moodle": version.name(),
        "moodle_db": db.name(),
        "learners": users.len(),
        "activities": acts.len(),
        "plugin": plugin,
        "core": core,
        "plugin_to_core_ratio": ratio,
        "records_stamped_with_forwarding_time_core_path": core_stamped.first().cloned().unwrap_or_default(),
        "records_with_the_learners_time": learners_time.first().cloned().unwrap_or_default(),
        "moodle_start_seconds": startup,
        "setup_seconds": setup,
        "on_board_to_cloud_seconds": delay.total,
        "capture_and_sync_seconds": delay.agent,
        "left_pending": plugin_left,
    });
    let text = format!(
        "forward into a real Moodle {} on {}:\n\
         through the plugin: {} records in {:.2} s: {:.1} records/s, {:.0} % of it waiting on Moodle; outcomes {:?}\n\
         through core web services: {} records in {:.2} s: {:.1} records/s, {:.0} % of it waiting on Moodle\n\
         the plugin is {ratio:.1} times faster; completions in the cloud with the learner's own time: {} (all through the plugin); stamped with the forwarding time: {} (through core)\n\
         one completion on board to the cloud Moodle, over HTTPS on loopback (the agent's capture and sync, then shore's forward worker at [cloud] interval_secs = 1): {:.2} s, of which {:.2} s the agent's pass\n\
         (Moodle started in {startup:.1} s, course and {} learners made in {setup:.1} s)\n",
        version.name(),
        db.name(),
        plugin_records.len(),
        plugin_pass.seconds,
        plugin["records_per_s"].as_f64().unwrap_or(0.0),
        plugin["moodle_share_percent"].as_f64().unwrap_or(0.0),
        plugin_pass.outcomes,
        core_records.len(),
        core_pass.seconds,
        core["records_per_s"].as_f64().unwrap_or(0.0),
        core["moodle_share_percent"].as_f64().unwrap_or(0.0),
        learners_time.first().map(String::as_str).unwrap_or("?"),
        core_stamped.first().map(String::as_str).unwrap_or("?"),
        delay.total,
        delay.agent,
        users.len(),
    );
    Ok((v, text))
}

/// The timed path of one completion from the ship to the cloud.
struct Delay {
    /// From the completion in the ship's database to its row in the cloud's.
    total: f64,
    /// Of which the agent's pass (capture and sync).
    agent: f64,
}

/// The demo's link: a ship's Moodle database (a throwaway PostgreSQL with Moodle's progress
/// tables, as in `vessel-sync demo`), the agent, and `shore serve` on loopback HTTPS with its
/// forward worker into the real cloud Moodle `m`. `sailor` completes `activity` of `course` on
/// board; timed until the cloud's database holds it.
fn on_board_to_cloud(
    m: &RealMoodle,
    token: &str,
    course: &str,
    activity: &str,
    sailor: &str,
    db: Db,
) -> Result<Delay, String> {
    let io = |e: std::io::Error| e.to_string();
    let dir = tempfile::tempdir().map_err(io)?;
    let d = dir.path();
    let pg = testkit::pgtemp::TempPg::start()?;
    pg.create_moodle("moodle")?;
    let q = |v: &str| v.replace('\'', "''");
    pg.psql(
        "moodle",
        &format!(
            "INSERT INTO mdl_user (id, username, idnumber) VALUES (3, '{}', '{}');
             INSERT INTO mdl_course (id, shortname, idnumber) VALUES (2, '{}', '{}');
             INSERT INTO mdl_page (id, course, name) VALUES (1, 2, 'timed');
             INSERT INTO mdl_course_modules (id, course, module, instance, idnumber) VALUES (4, 2, 15, 1, '{}');",
            q(&sailor.to_lowercase()),
            q(sailor),
            q(course),
            q(course),
            q(activity)
        ),
    )?;
    // Shore, serving on loopback, forwarding every second.
    let (ca, chain, tls_key) = wire::net::generate_server_cert(
        &["127.0.0.1".into()],
        base::clock::Clock::now(&base::clock::SystemClock),
    )
    .map_err(|e| e.to_string())?;
    for (name, body) in [("ca.pem", &ca), ("cert.pem", &chain), ("key.pem", &tls_key)] {
        base::fsutil::write_private(&d.join(name), body.as_bytes()).map_err(io)?;
    }
    base::fsutil::write_private(&d.join("cloud.token"), token.as_bytes()).map_err(io)?;
    let shore_toml = d.join("shore.toml");
    std::fs::write(
        &shore_toml,
        format!(
            "version = 1\n[shore]\nstate_dir = \"shore\"\nlisten = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n[cloud]\nurl = \"{}\"\ntoken_file = \"cloud.token\"\ninterval_secs = 1\n",
            m.url
        ),
    )
    .map_err(io)?;
    let shore_cfg = shore::ShoreConfig::load(&shore_toml)?;
    let vessel_key = wire::envelope::SecretKey::generate().map_err(io)?;
    let (_, vessel_pub) = vessel_key
        .write_pair(&d.join("vessel"), "bench-ship")
        .map_err(|e| e.to_string())?;
    let pub_text = std::fs::read_to_string(&vessel_pub).map_err(io)?;
    let vessel_token = shore::new_token().map_err(|e| e.to_string())?;
    base::fsutil::atomic_write(
        d.join("vessel.token").as_path(),
        format!("{vessel_token}\n").as_bytes(),
    )
    .map_err(io)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            d.join("vessel.token"),
            std::fs::Permissions::from_mode(0o600),
        )
        .map_err(io)?;
    }
    shore_cfg
        .open()
        .map_err(|e| e.to_string())?
        .add_vessel(
            "bench-ship",
            &shore::token_hash(&vessel_token),
            pub_text.trim(),
            &vessel_key.id,
            base::clock::SystemClock.now(),
        )
        .map_err(|e| e.to_string())?;
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(base::clock::SystemClock);
    let (tx, rx) = std::sync::mpsc::channel();
    let serve_clock = clock.clone();
    std::thread::spawn(move || {
        let _ = shore::serve::run(shore_cfg, serve_clock, move |a| {
            let _ = tx.send(a);
        });
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| "the shore receiver did not start".to_string())?;
    // The ship's agent.
    let agent_toml = d.join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "version = 1\n[vessel]\nid = \"bench-ship\"\n[paths]\nstate_dir = \"state\"\ninbox = \"inbox\"\n[keyring]\ntrusted = [\"vessel.pub\"]\n\
             [moodle]\ndb_type = \"postgres\"\ndb_host = \"127.0.0.1\"\ndb_port = {}\ndb_name = \"moodle\"\ndb_user = \"postgres\"\n\
             [uplink]\nmode = \"https\"\nurl = \"https://{addr}\"\ntoken_file = \"vessel.token\"\nsigning_key = \"vessel.key\"\nca_file = \"ca.pem\"\n",
            pg.port
        ),
    )
    .map_err(io)?;
    std::fs::create_dir_all(d.join("inbox")).map_err(io)?;
    let cfg = vessel::config::Config::load(&agent_toml).map_err(|e| e.to_string())?;
    let mut agent = vessel::agent::Agent::start(cfg, clock.clone()).map_err(|e| e.to_string())?;
    agent.run_once().map_err(|e| e.to_string())?;
    // The completion on board, then the clock runs until the cloud holds it.
    let uid = lines(
        m,
        &format!("SELECT id FROM mdl_user WHERE idnumber = '{}'", q(sailor)),
    )?
    .pop()
    .ok_or("the learner is not in the cloud")?;
    let cm = lines(
        m,
        &format!(
            "SELECT cm.id FROM mdl_course_modules cm JOIN mdl_course c ON c.id = cm.course WHERE cm.idnumber = '{}' AND (c.idnumber = '{1}' OR c.shortname = '{1}')",
            q(activity),
            q(course)
        ),
    )?
    .pop()
    .ok_or("the activity is not in the cloud")?;
    let at = base::clock::SystemClock.now();
    let started = Instant::now();
    pg.psql(
        "moodle",
        &format!(
            "INSERT INTO mdl_course_modules_completion (coursemoduleid, userid, completionstate, overrideby, timemodified) VALUES (4, 3, 1, NULL, {at});"
        ),
    )?;
    agent.run_once().map_err(|e| e.to_string())?;
    let agent_s = started.elapsed().as_secs_f64();
    let check = format!(
        "SELECT COUNT(*) FROM mdl_course_modules_completion WHERE userid = {uid} AND coursemoduleid = {cm} AND completionstate = 1"
    );
    loop {
        if lines(m, &check)?.first().map(|n| n.trim()) == Some("1") {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "the completion did not reach the cloud Moodle on {} within 120 s",
                db.name()
            ));
        }
        // Polling the cloud's database: the figure is measured to within this step.
        base::retry::pause(Duration::from_millis(20));
    }
    Ok(Delay {
        total: started.elapsed().as_secs_f64(),
        agent: agent_s,
    })
}
