//! Forwarding received progress into the cloud Moodle (the master record) through its web
//! services: activity completions as completion overrides, activity grades through the
//! gradebook, each record exactly once and in arrival order behind a watermark in shore's
//! store.
//!
//! The steps of one record, and what a crash at each leaves: the cloud's state for the key is
//! read (nothing written yet: the record is redone); the record is noted in flight (committed);
//! the cloud is changed; its outcome, what shore wrote for the key and the watermark past it are
//! committed in one transaction. A crash between the change and that commit leaves the record
//! in flight: redone, it finds the cloud already in its state and settles as `already`, so no
//! record reaches the cloud twice and none is skipped.
//!
//! Newer wins. A record is applied only when it is newer than what the cloud holds for its key:
//! the time of what shore itself wrote there last (while the cloud still holds that value),
//! else the cloud's own time for it (a change made in the cloud). An older record is `older`,
//! the same time with another value a `tie`; both keep the cloud's value and are logged and
//! listed by `shore forward --conflicts`. Course completions and course totals are `derived`:
//! the cloud's Moodle computes them from the activity completions and grades forwarded (its
//! completion cron completes the course). A value `removed` on board is `ignored`: a course
//! reset on a ship does not erase the master record.
//!
//! A record whose learner, course or activity the cloud lacks, whose learner is not enrolled
//! there, or that the cloud refused, is held with its reason (`shore status`) and retried at
//! every pass, so it is released when the account or a mapping (`shore forward map`) appears.
//! A cloud that cannot be reached ends the pass: nothing is settled, and the next pass starts
//! where this one stopped; under `shore serve` it comes after `[cloud] interval_secs`, doubled
//! per failed pass in a row up to an hour and jittered (`base::retry`, the uplink's rule).
//!
//! Two paths into the cloud. Where the token's service offers the companion plugin
//! `local_vesselsync` (`[cloud] path = "auto"`, the default), records go in batches through it
//! ([`plugin`]): applied inside Moodle with the learner's own time, newer-wins decided there,
//! each step of up to 1,000 records committed ashore in one transaction (the crash rule above
//! holds per step). Elsewhere the core web services take one record a call, stamped with the
//! time of forwarding (the rest of this page).
//!
//! Rooms: this file holds the pass, its worker under `shore serve` and the operator commands'
//! library side; [`plugin`] the plugin path; [`decide`] the core path's decision for one record
//! over a small `Cloud` trait; [`moodle`] that trait over the cloud's web services; [`lease`]
//! the forwarding lease.

mod decide;
mod lease;
mod moodle;
pub mod plugin;

use std::time::{Duration, Instant};

use ::moodle::ws::{Token, Ws};
use base::clock::Clock;

use crate::config::{CloudPath, CloudSettings, ShoreConfig};
use crate::error::{Error, Result};
use crate::store::{ForwardSummary, Settled, ShoreStore, ToForward};
use decide::{Outcome, Stop, one};
use lease::{FORWARD_LEASE, lease_holder, took_over_from_dead};

/// The web-service functions the forwarder calls: what the cloud's external service for
/// vessel-sync's shore must hold.
pub const CLOUD_FUNCTIONS: &[&str] = &[
    "core_webservice_get_site_info",
    "core_course_get_courses_by_field",
    "core_course_get_contents",
    "core_course_get_course_module",
    "core_course_update_courses",
    "core_user_get_users_by_field",
    "core_enrol_get_users_courses",
    "core_enrol_get_enrolled_users",
    "core_completion_get_activities_completion_status",
    "core_completion_override_activity_completion_status",
    "core_grades_update_grades",
    "gradereport_user_get_grade_items",
];

/// The companion plugin's functions, added to the same service when the cloud has
/// `local_vesselsync` installed: forwarding then goes in batches with the original times.
pub const PLUGIN_FUNCTIONS: &[&str] = &[plugin::APPLY, plugin::LOOKUP, ::moodle::plugin::GET_USERS];

/// Records looked at per pass from the stream (held ones are retried besides).
const PASS_LIMIT: u64 = 5_000;

/// What one pass did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Pass {
    /// Records settled or held in this pass, by outcome (`applied`, `already`, `older`, `tie`,
    /// `derived`, `ignored`, `held`).
    pub outcomes: std::collections::BTreeMap<String, u64>,
    /// Held records released (settled) in this pass.
    pub released: u64,
    /// Why the pass stopped early (the cloud unreachable or in maintenance), if it did.
    pub stopped: Option<String>,
    /// Why the pass did not start: another receiver of the same database is forwarding.
    pub busy: Option<String>,
    /// Wall-clock seconds of the pass.
    pub seconds: f64,
    /// Of which waiting for the cloud Moodle's answers.
    pub moodle_seconds: f64,
    /// How the cloud was reached: `plugin` (local_vesselsync, batches, original times) or
    /// `core` (core web services, one record a call).
    pub path: Option<String>,
}

/// The web-service client for `[cloud]`.
pub fn connect(cloud: &CloudSettings) -> Result<Ws> {
    let token =
        Token::from_file(&cloud.token_file).map_err(|e| Error::Config(format!("[cloud] {e}")))?;
    Ok(Ws::new(
        &cloud.url,
        token,
        Duration::from_secs(cloud.timeout_secs),
    )?)
}

/// One forwarding pass: the held records, then the stream past the watermark. The clock
/// renews the forwarding lease as the pass goes on.
pub fn pass(cfg: &ShoreConfig, db: &mut ShoreStore, clock: &dyn Clock) -> Result<Pass> {
    let Some(cloud) = cfg.cloud.as_ref() else {
        return Err(Error::Config(format!(
            "{}: no [cloud] section: add the cloud Moodle's url and token_file to forward progress",
            cfg.path.display()
        )));
    };
    // One receiver of a database forwards at a time: a lease, renewed with every record, that
    // a receiver stopped mid-pass leaves to run out.
    let holder = lease_holder();
    let lease = i64::try_from(cloud.timeout_secs.saturating_mul(3).max(300)).unwrap_or(300);
    let held_until = |db: &ShoreStore| -> Result<bool> {
        let t = clock.now();
        Ok(db.take_lease(FORWARD_LEASE, holder, t + lease, t)?)
    };
    if !held_until(db)? && !took_over_from_dead(db, holder, lease, clock.now())? {
        return Ok(Pass {
            busy: Some("another shore receiver of this database is forwarding; this one takes over when it stops".into()),
            ..Pass::default()
        });
    }
    let out = pass_leased(cloud, db, clock.now(), &held_until);
    let dropped = db.drop_lease(FORWARD_LEASE, holder);
    let out = out?;
    dropped?;
    Ok(out)
}

fn pass_leased(
    cloud: &CloudSettings,
    db: &mut ShoreStore,
    now: i64,
    renew: &dyn Fn(&ShoreStore) -> Result<bool>,
) -> Result<Pass> {
    let started = Instant::now();
    let ws = connect(cloud)?;
    let mut out = Pass::default();
    if let Some(rowid) = db.forward_inflight()? {
        tracing::info!(
            record = rowid,
            "forwarding was stopped during a call to the cloud; that record is redone"
        );
    }
    let held = db.held(PASS_LIMIT)?;
    let stream = db.to_forward(PASS_LIMIT)?;
    let n_held = held.len();
    let all: Vec<(bool, ToForward)> = held
        .into_iter()
        .map(|(t, _)| t)
        .chain(stream)
        .enumerate()
        .map(|(i, t)| (i < n_held, t))
        .collect();
    let through_plugin = match cloud.path {
        CloudPath::Core => false,
        CloudPath::Plugin => true,
        CloudPath::Auto => match plugin::available(&ws) {
            Ok(yes) => yes,
            Err(e) => {
                out.stopped = Some(e.to_string());
                out.seconds = started.elapsed().as_secs_f64();
                return Ok(out);
            }
        },
    };
    db.note_cloud_path(through_plugin)?;
    out.path = Some(if through_plugin { "plugin" } else { "core" }.into());
    if through_plugin {
        let mut waited = Duration::ZERO;
        for chunk in all.chunks(plugin::BATCH * plugin::LANES) {
            if !renew(db)? {
                out.stopped =
                    Some("the forwarding lease ran out and another receiver took it".into());
                break;
            }
            let records: Vec<ToForward> = chunk.iter().map(|(_, t)| t.clone()).collect();
            let step = match plugin::step(&ws, db, &records) {
                Ok(s) => s,
                Err(plugin::StepStop::Cloud(why)) => {
                    tracing::warn!(
                        "the cloud Moodle cannot be reached or is busy: {why}; forwarding resumes at the next pass"
                    );
                    out.stopped = Some(why);
                    break;
                }
                Err(plugin::StepStop::Store(e)) => return Err(e.into()),
            };
            waited += step.waited;
            plugin::end(db, &records, &step.outcomes, now)?;
            for ((was_held, t), o) in chunk.iter().zip(&step.outcomes) {
                count(t, o, *was_held, &mut out);
            }
        }
        out.moodle_seconds = waited.as_secs_f64();
        out.seconds = started.elapsed().as_secs_f64();
        return Ok(out);
    }
    let mut c = moodle::MoodleCloud::new(ws);
    for (was_held, t) in all {
        if !renew(db)? {
            out.stopped = Some("the forwarding lease ran out and another receiver took it".into());
            break;
        }
        let outcome = match one(&mut c, db, &t) {
            Ok(o) => o,
            Err(Stop::Cloud(why)) => {
                tracing::warn!(
                    "the cloud Moodle cannot be reached or is busy: {why}; forwarding resumes at the next pass"
                );
                out.stopped = Some(why);
                break;
            }
            Err(Stop::Store(e)) => return Err(e.into()),
        };
        record(db, &t, &outcome, now)?;
        count(&t, &outcome, was_held, &mut out);
    }
    out.moodle_seconds = c.waited.as_secs_f64();
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Counts a record's outcome in the pass (and logs a conflict).
fn count(t: &ToForward, outcome: &Outcome, was_held: bool, out: &mut Pass) {
    match outcome {
        Outcome::Settle(o, detail, _) => {
            if *o == "older" || *o == "tie" {
                tracing::warn!(vessel = %t.vessel, user = %t.record.user, course = %t.record.course, item = %t.record.item, "forward conflict ({o}): {detail}");
            }
            *out.outcomes.entry(o.to_string()).or_default() += 1;
            if was_held {
                out.released += 1;
            }
        }
        Outcome::Hold(_) => {
            if !was_held {
                *out.outcomes.entry("held".to_string()).or_default() += 1;
            }
        }
    }
}

/// Keeps a record's outcome (settled, or held with its reason).
fn record(db: &mut ShoreStore, t: &ToForward, outcome: &Outcome, now: i64) -> Result<()> {
    match outcome {
        Outcome::Settle(o, detail, wrote) => db.settle(
            t,
            &Settled {
                outcome: o,
                detail,
                wrote: wrote.as_deref(),
            },
            now,
        )?,
        Outcome::Hold(why) => db.hold(t, why, now)?,
    }
    Ok(())
}

/// Passes under `shore serve`, on their own thread and database connection, until `stop`:
/// one every `[cloud] interval_secs`, and at once again while a pass leaves records behind.
pub fn worker(
    cfg: ShoreConfig,
    clock: std::sync::Arc<dyn base::clock::Clock>,
    stop: std::sync::mpsc::Receiver<()>,
) {
    let interval = Duration::from_secs(cfg.cloud.as_ref().map_or(60, |c| c.interval_secs.max(1)));
    let mut db = match cfg.open() {
        Ok(db) => db,
        Err(e) => {
            tracing::error!("forwarding to the cloud Moodle cannot start: {e}");
            return;
        }
    };
    // A cloud that cannot be reached is tried again under the one retry rule: the interval
    // doubled per failure in a row, up to an hour, jittered.
    let cap = Duration::from_secs(3600).max(interval);
    let mut failures = 0u32;
    loop {
        let stopped = match pass(&cfg, &mut db, clock.as_ref()) {
            Ok(p) => {
                let n: u64 = p.outcomes.values().sum();
                if n > 0 || p.released > 0 {
                    tracing::info!(
                        records = n,
                        released = p.released,
                        seconds = p.seconds,
                        "forwarded to the cloud Moodle: {:?}",
                        p.outcomes
                    );
                }
                match p.stopped {
                    Some(why) => Err(why),
                    None => Ok(p.busy.is_none()
                        && db.forward_summary().map(|s| s.pending > 0).unwrap_or(false)),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let wait = match stopped {
            Ok(more) => {
                failures = 0;
                if more { Duration::ZERO } else { interval }
            }
            Err(why) => {
                failures += 1;
                let secs = base::retry::backoff(
                    failures,
                    i64::try_from(interval.as_secs()).unwrap_or(60),
                    i64::try_from(cap.as_secs()).unwrap_or(3600),
                );
                let wait = Duration::from_secs(u64::try_from(secs).unwrap_or(60));
                tracing::warn!(
                    failures,
                    "forwarding to the cloud Moodle stopped ({why}); next pass in {}s",
                    wait.as_secs()
                );
                wait
            }
        };
        match stop.recv_timeout(wait) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// `shore forward`: one pass now, audited; the pass and what remains to forward.
pub fn run_once(cfg: &ShoreConfig, clock: &dyn Clock) -> Result<(Pass, ForwardSummary)> {
    let mut db = cfg.open()?;
    let p = pass(cfg, &mut db, clock)?;
    let summary = db.forward_summary()?;
    if p.busy.is_none() {
        let n: u64 = p.outcomes.values().sum();
        let _ = db.audit(
            &crate::operator(),
            "forward",
            &format!("{n} record(s): {:?}", p.outcomes),
            clock.now(),
        );
    }
    Ok((p, summary))
}

/// A record that met a newer or equally new value in the cloud: (record, outcome, detail).
pub type Conflict = (ToForward, String, String);

/// `shore forward --conflicts`: the records that met a newer or equally new value in the cloud.
pub fn conflicts(cfg: &ShoreConfig) -> Result<Vec<Conflict>> {
    Ok(cfg.open()?.conflicts(0)?)
}

/// `shore forward map`: a ship's key for a learner, course or activity means this key in the
/// cloud; held records waiting for it are retried at the next pass.
pub fn map(cfg: &ShoreConfig, what: &str, from: &str, to: &str, now: i64) -> Result<()> {
    if from.trim().is_empty() || to.trim().is_empty() {
        return Err(Error::Usage("both keys must be non-empty".into()));
    }
    let db = cfg.open()?;
    db.map_key(what, from, to, now)?;
    db.audit(
        &crate::operator(),
        "forward map",
        &format!("{what} {from} -> {to}"),
        now,
    )?;
    Ok(())
}
