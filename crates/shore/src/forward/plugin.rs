//! Forwarding through the companion plugin `local_vesselsync` on the cloud Moodle: records go
//! in batches ([`BATCH`] a call, [`LANES`] calls at once), each applied inside Moodle through its
//! completion and grade APIs **with the time the learner made it**, newer-wins decided there
//! in the record's own transaction, an outcome per record.
//!
//! A step of the pass takes up to `BATCH × LANES` records. What needs no cloud is decided here
//! ([`super::decide::without_cloud`]); the rest is split into lanes by learner (so the records
//! of one learner stay in order in one call), the step is noted in flight (committed), the
//! calls are made, and every record's ending is committed in one transaction with the
//! watermark past the step. A crash before that commit leaves the step in flight: redone, the
//! cloud already holds what was applied and answers `already` for it, so nothing is applied
//! twice and nothing is skipped. A call that cannot be answered (the cloud down, busy, in
//! maintenance) ends the pass with nothing of the step settled.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use moodle::ws::{Params, Safety, Ws, WsError};
use serde_json::Value;
use wire::progress::RecordKind;

use super::decide::{Outcome, without_cloud};
use crate::store::{Ending, Settled, ShoreDbError, ShoreStore, ToForward};

pub use moodle::plugin::{APPLY, LOOKUP};
/// Records per call (the plugin takes at most 1,000).
pub const BATCH: usize = 250;
/// Calls at once.
pub const LANES: usize = 4;

/// Whether the token's service on the cloud offers the plugin's functions.
pub fn available(ws: &Ws) -> Result<bool, WsError> {
    let info = ws.call(
        "core_webservice_get_site_info",
        &Params::new(),
        Safety::Read,
    )?;
    let has = |name: &str| {
        info["functions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f["name"].as_str() == Some(name))
    };
    Ok(has(APPLY))
}

/// What one step asked of the cloud and what it answered.
pub(crate) struct Step {
    /// Each record's outcome, in the step's order.
    pub outcomes: Vec<Outcome>,
    /// Time spent waiting for the cloud.
    pub waited: Duration,
}

/// Why a step could not be done.
pub(crate) enum StepStop {
    /// The cloud could not answer: the pass ends, nothing of the step settled.
    Cloud(String),
    /// Shore's own store failed.
    Store(ShoreDbError),
}

impl From<ShoreDbError> for StepStop {
    fn from(e: ShoreDbError) -> Self {
        StepStop::Store(e)
    }
}

/// The plugin's kind and value for a record that needs the cloud.
fn kind_of(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Grade => "grade",
        _ => "completion",
    }
}

/// Decides one step: `records` go to the cloud in lanes (those that need it), and each gets
/// its outcome. Nothing is committed here except the in-flight mark before the calls.
pub(crate) fn step(ws: &Ws, db: &mut ShoreStore, records: &[ToForward]) -> Result<Step, StepStop> {
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(records.len());
    let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); LANES];
    let mut params: Vec<Params> = vec![Params::new(); LANES];
    for (i, t) in records.iter().enumerate() {
        if let Some(o) = without_cloud(&t.record) {
            outcomes.push(Some(o));
            continue;
        }
        if t.record.kind == RecordKind::ActivityCompletion
            && matches!(t.record.value.as_str(), "3" | "4")
        {
            outcomes.push(Some(Outcome::Settle(
                "derived",
                "a failed completion follows from the grade in the cloud Moodle".into(),
                None,
            )));
            continue;
        }
        outcomes.push(None);
        let r = &t.record;
        let key = |what: &str, k: &str| -> Result<String, ShoreDbError> {
            Ok(db.mapped(what, k)?.unwrap_or_else(|| k.to_string()))
        };
        let user = key("user", &r.user)?;
        let course = key("course", &r.course)?;
        let item = key("activity", &r.item)?;
        let known = db.written(r)?;
        let lane = lane_of(&user);
        let n = lanes[lane].len();
        let p = &mut params[lane];
        p.field("records", n, "ref", t.rowid);
        p.field("records", n, "kind", kind_of(r.kind));
        p.field("records", n, "course", &course);
        p.field("records", n, "activity", &item);
        p.field("records", n, "user", &user);
        let value = match r.kind {
            // The plugin takes completion states 0 and 1; 2 (passed) is complete.
            RecordKind::ActivityCompletion if r.value == "2" => "1".to_string(),
            _ => r.value.trim().to_string(),
        };
        p.field("records", n, "value", value);
        p.field("records", n, "time", r.time);
        p.field("records", n, "source", &t.vessel);
        if let Some(w) = known {
            p.field("records", n, "knownvalue", &w.value);
            p.field("records", n, "knowntime", w.vtime);
            p.field("records", n, "knownwritten", w.written_at);
        }
        lanes[lane].push(i);
    }
    let mut waited = Duration::ZERO;
    if lanes.iter().any(|l| !l.is_empty()) {
        if let Some(last) = records.last() {
            db.note_inflight(last.rowid)?;
        }
        base::failpoint::hit("forward.before-call");
        let t = Instant::now();
        let replies: Vec<Result<Value, WsError>> = std::thread::scope(|s| {
            let calls: Vec<_> = lanes
                .iter()
                .zip(&params)
                .filter(|(l, _)| !l.is_empty())
                // Newer wins inside Moodle makes a call safe to repeat: what it applied
                // before answers `already`.
                .map(|(_, p)| s.spawn(move || ws.call(APPLY, p, Safety::Read)))
                .collect();
            calls
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(WsError::Unreachable {
                            url: ws.url().to_string(),
                            detail: "the call's thread ended".into(),
                            maybe_applied: true,
                        })
                    })
                })
                .collect()
        });
        waited = t.elapsed();
        base::failpoint::hit("forward.after-call");
        let busy: Vec<&Vec<usize>> = lanes.iter().filter(|l| !l.is_empty()).collect();
        for (lane, reply) in busy.into_iter().zip(replies) {
            let reply = match reply {
                Ok(v) => v,
                Err(e) if base::retry::Retriable::is_retriable(&e) || e.errorcode().is_none() => {
                    return Err(StepStop::Cloud(e.to_string()));
                }
                // Moodle refused the whole call (a parameter it would not take): each record
                // of it is held with Moodle's words.
                Err(e) => {
                    for &i in lane {
                        outcomes[i] = Some(Outcome::Hold(format!(
                            "the cloud Moodle refused the batch: {e}"
                        )));
                    }
                    continue;
                }
            };
            let by_ref: HashMap<i64, &Value> = reply
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| Some((o["ref"].as_str()?.parse::<i64>().ok()?, o)))
                .collect();
            for &i in lane {
                let t = &records[i];
                outcomes[i] = Some(match by_ref.get(&t.rowid) {
                    Some(o) => outcome_of(o),
                    None => Outcome::Hold(
                        "the cloud's plugin answered no outcome for this record".into(),
                    ),
                });
            }
        }
    }
    Ok(Step {
        outcomes: outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Hold("not decided".into())))
            .collect(),
        waited,
    })
}

/// The lane of a learner: stable, so one learner's records stay in order in one call.
fn lane_of(user: &str) -> usize {
    let h = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    usize::try_from(h % LANES as u64).unwrap_or(0)
}

/// A record's outcome from the plugin's answer.
fn outcome_of(o: &Value) -> Outcome {
    let detail = o["detail"].as_str().unwrap_or_default().to_string();
    let value = o["cloudvalue"].as_str().map(str::to_string);
    match o["outcome"].as_str().unwrap_or_default() {
        "applied" => Outcome::Settle("applied", detail, value),
        "already" => Outcome::Settle("already", detail, value),
        "older" => Outcome::Settle("older", detail, None),
        "tie" => Outcome::Settle("tie", detail, None),
        "held" => Outcome::Hold(detail),
        other => Outcome::Hold(format!(
            "the cloud's plugin answered an outcome shore does not know: {other:?}"
        )),
    }
}

/// Commits every record's ending of a step in one transaction.
pub(crate) fn end(
    db: &mut ShoreStore,
    records: &[ToForward],
    outcomes: &[Outcome],
    now: i64,
) -> Result<(), ShoreDbError> {
    let ends: Vec<(&ToForward, Ending<'_>)> = records
        .iter()
        .zip(outcomes)
        .map(|(t, o)| {
            (
                t,
                match o {
                    Outcome::Settle(outcome, detail, wrote) => Ending::Settled(Settled {
                        outcome,
                        detail,
                        wrote: wrote.as_deref(),
                    }),
                    Outcome::Hold(why) => Ending::Held(why),
                },
            )
        })
        .collect();
    db.end_many(&ends, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_learners_records_always_share_a_lane() {
        for user in ["SEAF-1", "crew.002", "", "ÅSE"] {
            assert_eq!(lane_of(user), lane_of(user));
            assert!(lane_of(user) < LANES);
        }
        let lanes: std::collections::HashSet<usize> =
            (0..100).map(|i| lane_of(&format!("SEAF-{i}"))).collect();
        assert_eq!(lanes.len(), LANES, "learners spread over every lane");
    }

    #[test]
    fn the_plugins_answers_become_outcomes_and_an_unknown_one_is_held() {
        let o = |v: serde_json::Value| outcome_of(&v);
        assert_eq!(
            o(serde_json::json!({"outcome": "applied", "detail": "d", "cloudvalue": "1"})),
            Outcome::Settle("applied", "d".into(), Some("1".into()))
        );
        assert_eq!(
            o(serde_json::json!({"outcome": "older", "detail": "d", "cloudvalue": "0"})),
            Outcome::Settle("older", "d".into(), None)
        );
        assert_eq!(
            o(serde_json::json!({"outcome": "held", "detail": "no learner X"})),
            Outcome::Hold("no learner X".into())
        );
        assert!(matches!(
            o(serde_json::json!({"outcome": "exploded"})),
            Outcome::Hold(w) if w.contains("does not know")
        ));
    }
}
