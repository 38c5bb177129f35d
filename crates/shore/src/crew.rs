//! Crew change: `shore crew move USER --to VESSEL` queues, for the vessel a seafarer joins, an
//! `import_progress` bundle with the activity completions the cloud Moodle (the master record)
//! holds for them in the courses that vessel has (those it sent progress of, and `--course`),
//! signed with shore's `signing_key`. What the vessel itself sent is left out (law 2: nothing
//! goes back where it came from); on board the import is never captured again. `shore push` of
//! an `upsert_users` bundle for one vessel does the same for each seafarer on the list whose
//! progress came from another vessel (`follow_crew_list`).

use moodle::ws::{Params, Safety};
use wire::envelope::{SecretKey, Source};

use crate::course::queue_from_shore;
use crate::forward::connect;
use crate::store::ShoreStore;
use crate::{Error, ShoreConfig, operator};
use moodle::ws::Ws;

/// What `shore crew move` did.
#[derive(Debug, Clone)]
pub struct Moved {
    /// What was queued for the vessel (or why nothing was), in words.
    pub summary: String,
}

/// `shore crew move USER --to VESSEL`: queues the seafarer's cloud progress for the vessel.
pub fn move_to(
    cfg: &ShoreConfig,
    user: &str,
    vessel: &str,
    also: &[String],
    now: i64,
) -> Result<Moved, Error> {
    let (key, ws) = signer_and_cloud(cfg)?;
    let db = cfg.open()?;
    check_vessel(&db, vessel)?;
    let summary = move_one(cfg, &db, &key, &ws, user, vessel, also, Again::Skip, now)?;
    Ok(Moved { summary })
}

/// Shore's signing key and the cloud Moodle, or why not.
fn signer_and_cloud(cfg: &ShoreConfig) -> Result<(SecretKey, Ws), Error> {
    let cloud = cfg.cloud.as_ref().ok_or_else(|| {
        Error::Config(
            "no [cloud] section: the seafarer's progress is read from the cloud Moodle".into(),
        )
    })?;
    let key_path = cfg.shore.signing_key.as_ref().ok_or_else(|| {
        Error::Config(
            "[shore] signing_key is not set: shore signs the import bundle with it".into(),
        )
    })?;
    let key = SecretKey::load(key_path).map_err(|e| Error::Config(e.to_string()))?;
    Ok((key, connect(cloud)?))
}

fn check_vessel(db: &ShoreStore, vessel: &str) -> Result<(), Error> {
    match db.vessel(vessel)? {
        Some(v) if v.revoked_at.is_none() => Ok(()),
        Some(_) => Err(Error::Refused(format!("vessel {vessel} is revoked"))),
        None => Err(Error::NotFound(format!(
            "no vessel {vessel} is registered ('shore vessel list')"
        ))),
    }
}

/// A crew list pushed for `vessel` (`upsert_users`) names `users` (their idnumber, else
/// username): each of them whose progress reached shore from another vessel has moved, and
/// their cloud records follow them, for the courses the vessel has and the list enrols them
/// in. One line per seafarer moved, or one saying why none was.
pub(crate) fn follow_crew_list(
    cfg: &ShoreConfig,
    db: &ShoreStore,
    vessel: &str,
    users: &[Member],
    now: i64,
) -> Vec<String> {
    let mut movers: Vec<(&String, &[String])> = Vec::new();
    for (idnumber, username, courses) in users {
        let key = if idnumber.is_empty() {
            username
        } else {
            idnumber
        };
        match db.sailed_elsewhere(key, username, vessel) {
            Ok(true) => movers.push((key, courses)),
            Ok(false) => {}
            Err(e) => return vec![format!("crew change not checked: {e}")],
        }
    }
    if movers.is_empty() {
        return vec![];
    }
    if let Err(e) = check_vessel(db, vessel) {
        return vec![format!("crew change not followed: {e}")];
    }
    let (key, ws) = match signer_and_cloud(cfg) {
        Ok(x) => x,
        Err(e) => {
            return vec![format!(
                "{} seafarer(s) on the list sailed on other vessels ({}), but their progress is not sent: {e}; then run 'vessel-sync shore crew move USER --to {vessel}'",
                movers.len(),
                movers
                    .iter()
                    .map(|m| m.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )];
        }
    };
    movers
        .iter()
        .map(|(u, courses)| match move_one(cfg, db, &key, &ws, u, vessel, courses, Again::Send, now) {
            Ok(line) => line,
            Err(e) => format!("crew move of {u} to {vessel} failed: {e}; run 'vessel-sync shore crew move {u} --to {vessel}' again"),
        })
        .collect()
}

/// What a move does with completions an earlier move sent the same vessel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Again {
    /// Leaves them out (`shore crew move` run again).
    Skip,
    /// Sends them again: a crew list has just (re)created the accounts the earlier import may
    /// have lacked.
    Send,
}

/// Queues the cloud's completions of `user` for `vessel` (the courses it has and `also`).
#[allow(clippy::too_many_arguments)]
fn move_one(
    cfg: &ShoreConfig,
    db: &ShoreStore,
    key: &SecretKey,
    ws: &Ws,
    user: &str,
    vessel: &str,
    also: &[String],
    again: Again,
    now: i64,
) -> Result<String, Error> {
    let found = moodle::lookup::users(ws, &[user], || {})?;
    let Some((uid, local)) = found.get(user).cloned() else {
        return Err(Error::NotFound(format!(
            "no learner {user} in the cloud Moodle (by idnumber or username)"
        )));
    };
    // The same person under every key they go by: named by username or by idnumber, what came
    // from the vessel under either is never sent back.
    let person = cloud_keys(ws, uid, user, &local)?;
    let keys: Vec<&str> = person.iter().map(String::as_str).collect();
    let mut courses = db.vessel_courses(vessel)?;
    courses.extend(also.iter().cloned());
    courses.sort();
    courses.dedup();
    if courses.is_empty() {
        let msg = format!(
            "nothing to send {vessel} for {user}: shore knows no course of {vessel} (it has sent no progress yet); name the courses the seafarer takes there with --course KEY"
        );
        db.audit(&operator(), "crew move", &msg, now)?;
        return Ok(msg);
    }
    let enrolled: Vec<i64> = ws
        .call(
            "core_enrol_get_users_courses",
            &Params::new().set("userid", uid),
            Safety::Read,
        )?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_i64())
        .collect();
    let mut csv = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::Failed(e.to_string());
    csv.write_record(["learner", "course", "activity", "state", "time"])
        .map_err(csv_err)?;
    let (mut rows, mut theirs, mut before) = (0u64, 0u64, 0u64);
    let mut sent: Vec<(String, String, String)> = Vec::new();
    for key_of_course in &courses {
        let Some(c) = moodle::lookup::course(ws, key_of_course, || {})? else {
            continue;
        };
        if !enrolled.contains(&c.id) {
            continue;
        }
        let st = ws.call(
            "core_completion_get_activities_completion_status",
            &Params::new().set("courseid", c.id).set("userid", uid),
            Safety::Read,
        )?;
        for s in st["statuses"].as_array().into_iter().flatten() {
            let state = s["state"].as_i64().unwrap_or(0);
            if state != 1 && state != 2 {
                continue;
            }
            let cmid = s["cmid"].as_i64().unwrap_or_default();
            let Some(a) = c.activities.values().find(|a| a.cmid == cmid) else {
                continue;
            };
            if db.sent_completion(vessel, &keys, key_of_course, &a.key)? {
                theirs += 1;
                continue;
            }
            if again == Again::Skip && db.crew_sent_before(vessel, &keys, key_of_course, &a.key)? {
                before += 1;
                continue;
            }
            // When the seafarer completed it, as the cloud holds it: through the plugin on board
            // the ship shows that date too.
            let time = s["timecompleted"]
                .as_i64()
                .filter(|t| *t > 0)
                .map(|t| t.to_string())
                .unwrap_or_default();
            csv.write_record([
                local.as_str(),
                key_of_course.as_str(),
                a.key.as_str(),
                "1",
                time.as_str(),
            ])
            .map_err(csv_err)?;
            sent.push((local.clone(), key_of_course.clone(), a.key.clone()));
            rows += 1;
        }
    }
    let by = operator();
    if rows == 0 {
        let msg = format!(
            "nothing to send {vessel} for {user}: the cloud holds no completion of theirs in its courses ({}) that it lacks ({theirs} came from {vessel} itself, {before} sent there by an earlier crew move)",
            courses.join(", ")
        );
        db.audit(&by, "crew move", &msg, now)?;
        return Ok(msg);
    }
    let (bundle_id, _) = queue_from_shore(
        cfg,
        db,
        key,
        vessel,
        "crew",
        "import_progress",
        serde_json::Map::new(),
        vec![(
            "files/progress.csv".into(),
            Source::Bytes(csv.into_inner().map_err(|e| Error::Failed(e.to_string()))?),
        )],
        now,
    )?;
    db.note_crew_sent(vessel, &sent, &bundle_id, now)?;
    let msg = format!(
        "queued import_progress for {vessel} (bundle {bundle_id}): {rows} completion(s) of {user} from the cloud Moodle ({theirs} left out: they came from {vessel}; {before} sent by an earlier move)"
    );
    db.audit(&by, "crew move", &msg, now)?;
    Ok(msg)
}

/// Every key the cloud's learner `uid` goes by: the one the operator gave, their idnumber and
/// their username.
fn cloud_keys(ws: &Ws, uid: i64, given: &str, local: &str) -> Result<Vec<String>, Error> {
    let r = ws.call(
        "core_user_get_users_by_field",
        &Params::new().set("field", "id").set("values[0]", uid),
        Safety::Read,
    )?;
    let mut keys = vec![given.to_string(), local.to_string()];
    for u in r.as_array().into_iter().flatten() {
        for f in ["idnumber", "username"] {
            if let Some(k) = u[f].as_str().filter(|k| !k.is_empty()) {
                keys.push(k.to_string());
            }
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// A crew list row: idnumber, username, and the courses it enrols the seafarer in.
pub(crate) type Member = (String, String, Vec<String>);

/// Every row of a crew list CSV (`upsert_users`); a file that cannot be read gives none (the
/// vessel's import reports its problems).
pub(crate) fn list_members(path: &std::path::Path) -> Vec<Member> {
    let Ok(mut r) = csv::ReaderBuilder::new().flexible(true).from_path(path) else {
        return vec![];
    };
    let Ok(header) = r.headers().cloned() else {
        return vec![];
    };
    let names: Vec<String> = header
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_ascii_lowercase())
        .collect();
    let col = |name: &str| names.iter().position(|h| h == name);
    let courses: Vec<usize> = (0..names.len())
        .filter(|&i| {
            names[i]
                .strip_prefix("course")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    let (Some(u), i) = (col("username"), col("idnumber")) else {
        return vec![];
    };
    r.records()
        .flatten()
        .filter_map(|row| {
            let username = row.get(u)?.trim().to_string();
            let idnumber = i.and_then(|i| row.get(i)).unwrap_or("").trim().to_string();
            let enrolled = courses
                .iter()
                .filter_map(|&c| row.get(c))
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect();
            (!username.is_empty() || !idnumber.is_empty()).then_some((idnumber, username, enrolled))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::list_members;

    #[test]
    fn a_crew_list_gives_each_seafarers_keys_and_the_courses_it_enrols_them_in() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users.csv");
        std::fs::write(
            &f,
            "\u{feff}Username,firstname,lastname,email,IDNUMBER,course1,course2\r\n\
             j.hansen,J,Hansen,j@x.invalid,SEAF-1,SAFETY-101,\r\n\
             m.santos,M,Santos,m@x.invalid,,ERM-110,SAFETY-101\r\n",
        )
        .unwrap();
        assert_eq!(
            list_members(&f),
            vec![
                (
                    "SEAF-1".into(),
                    "j.hansen".into(),
                    vec!["SAFETY-101".into()]
                ),
                (
                    String::new(),
                    "m.santos".into(),
                    vec!["ERM-110".into(), "SAFETY-101".into()]
                ),
            ]
        );
        std::fs::write(&f, "not,a,crew,list\n1,2,3,4\n").unwrap();
        assert!(list_members(&f).is_empty(), "no username column: no one");
    }
}
