//! Crew change: `shore crew move USER --to VESSEL` queues, for the vessel a seafarer joins, an
//! `import_progress` bundle with the activity completions the cloud Moodle (the master record)
//! holds for them in the courses that vessel has (those it sent progress of, and `--course`),
//! signed with shore's `signing_key`. What the vessel itself sent is left out (law 2: nothing
//! goes back where it came from); on board the import is never captured again.

use base::exit;
use moodle::ws::{Params, Safety};
use wire::envelope::{SecretKey, Source};

use crate::ShoreConfig;
use crate::course::queue_from_shore;
use crate::forward::{connect, operator};

/// `shore crew move`.
pub fn move_to(cfg: &ShoreConfig, user: &str, vessel: &str, also: &[String], now: i64) -> i32 {
    let run = || -> Result<String, String> {
        let cloud = cfg
            .cloud
            .as_ref()
            .ok_or("no [cloud] section: the seafarer's progress is read from the cloud Moodle")?;
        let key_path = cfg
            .shore
            .signing_key
            .as_ref()
            .ok_or("[shore] signing_key is not set: shore signs the import bundle with it")?;
        let key = SecretKey::load(key_path).map_err(|e| e.to_string())?;
        let db = cfg.open()?;
        match db.vessel(vessel).map_err(|e| e.to_string())? {
            Some(v) if v.revoked_at.is_none() => {}
            Some(_) => return Err(format!("vessel {vessel} is revoked")),
            None => {
                return Err(format!(
                    "no vessel {vessel} is registered ('shore vessel list')"
                ));
            }
        }
        let ws = connect(cloud)?;
        let found = moodle::lookup::users(&ws, &[user], || {}).map_err(|e| e.to_string())?;
        let Some((uid, _)) = found.get(user).cloned() else {
            return Err(format!(
                "no learner {user} in the cloud Moodle (by idnumber or username)"
            ));
        };
        let mut courses = db.vessel_courses(vessel).map_err(|e| e.to_string())?;
        courses.extend(also.iter().cloned());
        courses.sort();
        courses.dedup();
        let enrolled: Vec<i64> = ws
            .call(
                "core_enrol_get_users_courses",
                &Params::new().set("userid", uid),
                Safety::Read,
            )
            .map_err(|e| e.to_string())?
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_i64())
            .collect();
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(["learner", "course", "activity", "state"])
            .map_err(|e| e.to_string())?;
        let (mut rows, mut theirs) = (0u64, 0u64);
        for key_of_course in &courses {
            let Some(c) =
                moodle::lookup::course(&ws, key_of_course, || {}).map_err(|e| e.to_string())?
            else {
                continue;
            };
            if !enrolled.contains(&c.id) {
                continue;
            }
            let st = ws
                .call(
                    "core_completion_get_activities_completion_status",
                    &Params::new().set("courseid", c.id).set("userid", uid),
                    Safety::Read,
                )
                .map_err(|e| e.to_string())?;
            for s in st["statuses"].as_array().into_iter().flatten() {
                let state = s["state"].as_i64().unwrap_or(0);
                if state != 1 && state != 2 {
                    continue;
                }
                let cmid = s["cmid"].as_i64().unwrap_or_default();
                let Some(a) = c.activities.values().find(|a| a.cmid == cmid) else {
                    continue;
                };
                if db
                    .sent_completion(vessel, user, key_of_course, &a.key)
                    .map_err(|e| e.to_string())?
                {
                    theirs += 1;
                    continue;
                }
                csv.write_record([user, key_of_course.as_str(), a.key.as_str(), "1"])
                    .map_err(|e| e.to_string())?;
                rows += 1;
            }
        }
        let by = operator();
        if rows == 0 {
            let msg = format!(
                "nothing to send {vessel} for {user}: the cloud holds no completion of theirs in its courses ({}) that it lacks ({theirs} came from {vessel} itself)",
                courses.join(", ")
            );
            db.audit(&by, "crew move", &msg, now)
                .map_err(|e| e.to_string())?;
            return Ok(msg);
        }
        let (bundle_id, _) = queue_from_shore(
            cfg,
            &db,
            &key,
            vessel,
            "crew",
            "import_progress",
            serde_json::Map::new(),
            vec![(
                "files/progress.csv".into(),
                Source::Bytes(csv.into_inner().map_err(|e| e.to_string())?),
            )],
            now,
        )?;
        let msg = format!(
            "queued import_progress for {vessel} (bundle {bundle_id}): {rows} completion(s) of {user} from the cloud Moodle ({theirs} left out: they came from {vessel})"
        );
        db.audit(&by, "crew move", &msg, now)
            .map_err(|e| e.to_string())?;
        Ok(msg)
    };
    match run() {
        Ok(msg) => {
            println!("{msg}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}
