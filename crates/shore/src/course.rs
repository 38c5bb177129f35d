//! Retiring a course fleet-wide: `shore course retire COURSE` hides it in the cloud Moodle
//! (kept there for reporting) and queues a guarded `delete_course`, signed with shore's
//! `signing_key`, for every vessel that sent progress of it (and those named); each vessel
//! deletes it only once shore has acknowledged every record of it captured on board (law 3).
//! `shore course status COURSE` shows, per vessel, whether the bundle was fetched, what shore
//! received of the course, and what the vessel last reported of the deletion in its batches
//! (waiting for what, records unacknowledged on board, learners, deleted, never had it).

use moodle::ws::{Params, Safety};
use sha2::{Digest, Sha256};
use wire::SHORE;
use wire::envelope::{self, CommandEntry, Draft, Kind, SecretKey};

use crate::forward::connect;
use crate::store::{Queued, Retirement};
use crate::{Error, ShoreConfig, operator};

/// Hides `course` in the cloud; Ok(note) says what was done there.
/// Hides `course` in the cloud Moodle: what was done, and whether the cloud has the course.
fn hide_in_cloud(cfg: &ShoreConfig, course: &str) -> Result<(String, bool), Error> {
    let Some(cloud) = cfg.cloud.as_ref() else {
        return Ok((
            "no [cloud] configured: not hidden in a cloud Moodle".into(),
            false,
        ));
    };
    let ws = connect(cloud)?;
    let found = moodle::lookup::course(&ws, course, || {})?;
    let Some(c) = found else {
        return Ok((
            format!(
                "no course {course} in the cloud Moodle (by idnumber or shortname): nothing hidden there"
            ),
            false,
        ));
    };
    if !c.visible {
        return Ok((
            format!("hidden in the cloud Moodle already (id {})", c.id),
            true,
        ));
    }
    ws.call(
        "core_course_update_courses",
        &Params::new()
            .set("courses[0][id]", c.id)
            .set("courses[0][visible]", 0),
        Safety::Write,
    )?;
    Ok((
        format!(
            "hidden in the cloud Moodle (id {}), kept for reporting",
            c.id
        ),
        true,
    ))
}

/// Signs a one-command bundle with shore's key for `vessel`, next in the stream of the bundles
/// shore signs for it, and queues it: (bundle id, queue id).
#[allow(clippy::too_many_arguments)]
pub(crate) fn queue_from_shore(
    cfg: &ShoreConfig,
    db: &crate::store::ShoreStore,
    key: &SecretKey,
    vessel: &str,
    id_prefix: &str,
    kind: &str,
    args: serde_json::Map<String, serde_json::Value>,
    files: Vec<(String, envelope::Source)>,
    now: i64,
) -> Result<(String, i64), Error> {
    let seq = db.next_ack_bundle_seq(vessel)?;
    let draft = Draft {
        kind: Kind::Commands,
        sender: SHORE.into(),
        recipient: vessel.to_string(),
        sequence: seq,
        not_before: None,
        expires: None,
        commands: vec![CommandEntry {
            id: format!("{id_prefix}-{vessel}-{seq}"),
            kind: kind.into(),
            args,
            files: files.iter().map(|(n, _)| n.clone()).collect(),
        }],
        files,
        id: None,
    };
    let tmp = cfg
        .shore
        .state_dir
        .join("tmp")
        .join(format!("{id_prefix}-{vessel}-{seq}.vsb"));
    let m = envelope::write_envelope(&draft, key, now, &tmp).map_err(Error::io(&tmp))?;
    let name = format!("{}.vsb", m.id);
    let dest = cfg.shore.state_dir.join("bundles").join(&name);
    let data = std::fs::read(&tmp).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, &dest).map_err(Error::io(&dest))?;
    let q = Queued {
        id: 0,
        recipient: vessel.to_string(),
        bundle_id: m.id.clone(),
        file: name,
        size: data.len() as u64,
        sha256: hex::encode(Sha256::digest(&data)),
    };
    let id = db.enqueue_bundle(&q, now)?;
    Ok((m.id, id))
}

/// What `shore course retire` did.
#[derive(Debug, Clone)]
pub struct Retired {
    /// What the cloud Moodle did (the course hidden, or why not).
    pub cloud: String,
    /// The vessels a `delete_course` bundle was queued for: (vessel, bundle id).
    pub queued: Vec<(String, String)>,
}

/// `shore course retire`: hides the course in the cloud Moodle and queues a guarded
/// `delete_course` for every vessel that sent progress of it (and those in `also`).
pub fn retire(
    cfg: &ShoreConfig,
    course: &str,
    also: &[String],
    now: i64,
) -> Result<Retired, Error> {
    if course.trim().is_empty() {
        return Err(Error::Usage(
            "name the course by its idnumber or shortname".into(),
        ));
    }
    let key_path = cfg.shore.signing_key.as_ref().ok_or_else(|| {
        Error::Config(
            "[shore] signing_key is not set: shore signs the delete_course bundles with it".into(),
        )
    })?;
    let key = SecretKey::load(key_path).map_err(|e| Error::Config(e.to_string()))?;
    let db = cfg.open()?;
    let (cloud, in_cloud) = hide_in_cloud(cfg, course)?;
    let mut vessels = db.course_vessels(course)?;
    if !in_cloud && vessels.is_empty() && also.is_empty() && db.retirements(course)?.is_empty() {
        // A typo must not pass for a retirement that found nothing to do.
        let where_cloud = if cfg.cloud.is_some() {
            "it is not in the cloud Moodle (by idnumber or shortname)"
        } else {
            "no [cloud] is configured to look in"
        };
        return Err(Error::NotFound(format!(
            "no course {course} is known: {where_cloud}, no vessel sent progress of it, and \
             none was named with --vessel; check its idnumber or shortname, or name the vessels \
             that hold it with --vessel ID"
        )));
    }
    for v in also {
        if db.vessel(v)?.is_none() {
            return Err(Error::NotFound(format!(
                "no vessel {v} is registered ('shore vessel list')"
            )));
        }
        vessels.push(v.clone());
    }
    vessels.sort();
    vessels.dedup();
    let done: Vec<String> = db
        .retirements(course)?
        .into_iter()
        .map(|r| r.vessel)
        .collect();
    let by = operator();
    let mut queued = Vec::new();
    for v in vessels {
        let Some(vessel) = db.vessel(&v)? else {
            continue;
        };
        if vessel.revoked_at.is_some() || done.contains(&v) {
            continue;
        }
        let mut args = serde_json::Map::new();
        args.insert("course".into(), course.into());
        args.insert("keep_backup".into(), true.into());
        let (bundle_id, id) = queue_from_shore(
            cfg,
            &db,
            &key,
            &v,
            "retire",
            "delete_course",
            args,
            vec![],
            now,
        )?;
        db.note_retirement(course, &v, &bundle_id, id, &by, now)?;
        queued.push((v, bundle_id));
    }
    let mut said = vec![cloud.clone()];
    said.extend(
        queued
            .iter()
            .map(|(v, b)| format!("queued delete_course for {v} (bundle {b})")),
    );
    db.audit(
        &by,
        "course retire",
        &format!("{course}: {}", said.join("; ")),
        now,
    )?;
    Ok(Retired { cloud, queued })
}

/// Where a vessel's part in a retirement stands: a one-word phase (`queued`, `fetched`,
/// `waiting`, `deleted`, `not_held`, `failed`, or the command's own state) and what to tell.
pub fn phase(r: &Retirement) -> (String, String) {
    let Some(rep) = &r.reported else {
        return if r.fetched {
            (
                "fetched".into(),
                "fetched; no report from the vessel yet (it reports in its next batch)".into(),
            )
        } else {
            ("queued".into(), "queued: not yet fetched".into())
        };
    };
    let reason = rep.reason.clone().unwrap_or_default();
    let at = &rep.at;
    match rep.state.as_str() {
        "done" if reason.contains("does not exist on this Moodle") => (
            "not_held".into(),
            format!("never had the course, nothing to delete ({at})"),
        ),
        "done" => ("deleted".into(), format!("deleted {at}: {reason}")),
        "waiting" => ("waiting".into(), format!("waiting since {at}: {reason}")),
        "failed" => ("failed".into(), format!("FAILED {at}: {reason}")),
        other => (other.to_string(), format!("{other} {at}: {reason}")),
    }
}

/// `shore course status`: each vessel's part in the course's retirement (none: not retired).
pub fn retirement(cfg: &ShoreConfig, course: &str) -> Result<Vec<Retirement>, Error> {
    Ok(cfg.open()?.retirements(course)?)
}

#[cfg(test)]
mod tests {
    use super::phase;
    use crate::store::{Reported, Retirement};

    fn row(fetched: bool, state: Option<(&str, &str)>) -> Retirement {
        Retirement {
            vessel: "mv-aurora".into(),
            bundle_id: "b".into(),
            queue_id: 1,
            queued_at: 0,
            by: "carla".into(),
            fetched,
            records: 0,
            last_record_at: None,
            reported: state.map(|(s, r)| Reported {
                state: s.into(),
                reason: Some(r.into()),
                at: "2026-12-04T10:00:00Z".into(),
                unacked_records: None,
                learners: None,
            }),
        }
    }

    #[test]
    fn a_vessel_that_never_had_the_course_is_not_a_failure() {
        let p = |f, s| phase(&row(f, s)).0;
        assert_eq!(p(false, None), "queued");
        assert_eq!(p(true, None), "fetched");
        assert_eq!(
            p(
                true,
                Some(("waiting", "waiting for shore to acknowledge 3 records"))
            ),
            "waiting"
        );
        assert_eq!(
            p(
                true,
                Some((
                    "done",
                    "course SAFETY-101 does not exist on this Moodle: nothing to delete"
                ))
            ),
            "not_held"
        );
        assert_eq!(
            p(
                true,
                Some(("done", "course SAFETY-101 (id 7) deleted after ..."))
            ),
            "deleted"
        );
        assert_eq!(p(true, Some(("failed", "still there"))), "failed");
    }
}
