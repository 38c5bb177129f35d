//! The fleet as the training manager sees it: every vessel worst first, the cloud forwarding
//! summary and recent refusals ([`fleet_view`]), printed by `shore status` and served by the
//! dashboard. Nothing here prints: the command line renders it.

use base::clock::{format_age, format_time};

use crate::ShoreConfig;
use crate::store::{self, ShoreStore, Vessel};

/// One vessel in the fleet view (`shore status`, the dashboard).
#[derive(serde::Serialize)]
pub struct VesselStatus {
    #[serde(flatten)]
    /// The registry's row.
    pub vessel: Vessel,
    /// How long ago it was last heard from.
    pub last_contact_age: Option<String>,
    /// The age of its oldest unsent record, as it last reported.
    pub oldest_unsent_age: Option<String>,
    /// Silent for a day, or holding a record unsent for a day (revoked vessels never are).
    pub behind: bool,
    /// Records its batches carried in the last 7 days.
    pub delivered_7d: u64,
    /// Its observed link rate: those records per hour, averaged over the 7 days (outages in).
    pub link_rate_per_hour: f64,
    /// Seconds to drain the backlog it last reported at that rate, if it has one and a rate.
    pub drain_secs: Option<i64>,
    /// Course deletions it holds until shore has acknowledged their progress.
    pub held_deletions: Vec<store::HeldDeletion>,
    /// Every key the vessel signs or signed with (rotations, rekeys).
    pub keys: Vec<store::VesselKey>,
    /// Course content files shore believes the vessel holds.
    pub content_held: u64,
    /// Content files the vessel asked for and shore sent.
    pub content_sent: u64,
    /// Content files the vessel asked for that shore does not keep.
    pub content_owed: u64,
}

impl VesselStatus {
    /// The vessel's id.
    pub fn id(&self) -> &str {
        &self.vessel.id
    }

    /// How far behind, for sorting worst first: behind vessels, then by the older of the
    /// silence and the oldest unsent record.
    fn lag(&self, now: i64) -> (bool, i64) {
        let silent = self
            .vessel
            .last_contact
            .map(|t| now - t)
            .unwrap_or(i64::MAX);
        (
            self.behind,
            silent.max(self.vessel.oldest_unsent.unwrap_or(0)),
        )
    }
}

/// The fleet as the training manager sees it ([`fleet_view`]).
pub struct Fleet {
    /// Every vessel, worst first.
    pub vessels: Vec<VesselStatus>,
    /// The cloud forwarding summary, when `[cloud]` is set.
    pub forward: Option<store::ForwardSummary>,
    /// The latest refusals: (at, vessel, code, message).
    pub refusals: Vec<(i64, String, String, String)>,
    /// When it was read.
    pub at: i64,
}

impl Fleet {
    /// What `shore status --json` prints and `/dashboard/api/fleet` serves (with the audit
    /// trail's tail).
    pub fn json(&self, db: &ShoreStore) -> serde_json::Value {
        serde_json::json!({
            "at": format_time(self.at),
            "vessels": self.vessels,
            "forward": self.forward,
            "audit": db.audit_trail(20).unwrap_or_default().iter().map(|(at, who, what, detail)| serde_json::json!({"at": format_time(*at), "who": who, "what": what, "detail": detail})).collect::<Vec<_>>(),
            "recent_refusals": self.refusals.iter().map(|(at, v, c, m)| serde_json::json!({"at": format_time(*at), "vessel": v, "code": c, "message": m})).collect::<Vec<_>>(),
        })
    }
}

/// The fleet as the training manager sees it: every vessel, worst first, with the cloud
/// forwarding summary and recent refusals. `shore status` shows it; the dashboard serves it.
pub fn fleet_view(cfg: &ShoreConfig, db: &ShoreStore, now: i64) -> Result<Fleet, String> {
    let (vessels, refusals) = (
        db.vessels().map_err(|e| e.to_string())?,
        db.refusals(10).map_err(|e| e.to_string())?,
    );
    let week = 7 * 86_400;
    let mut rows = Vec::with_capacity(vessels.len());
    for v in vessels {
        let silent = v.last_contact.map(|t| now - t).unwrap_or(i64::MAX);
        let content = db.content_state(&v.id).unwrap_or_default();
        let delivered = db
            .delivered_since(&v.id, now - week)
            .map_err(|e| e.to_string())?;
        let rate = delivered as f64 * 3600.0 / week as f64;
        let drain = match v.outbox_depth {
            Some(d) if d > 0 && rate > 0.0 => Some((d as f64 / rate * 3600.0).ceil() as i64),
            Some(0) => Some(0),
            _ => None,
        };
        rows.push(VesselStatus {
            last_contact_age: v.last_contact.map(|t| format_age(now - t)),
            oldest_unsent_age: v.oldest_unsent.map(format_age),
            behind: v.revoked_at.is_none()
                && (silent > 86_400 || v.oldest_unsent.unwrap_or(0) > 86_400),
            delivered_7d: delivered,
            // Two decimals: a vessel sending a few records a week is slow, not silent.
            link_rate_per_hour: (rate * 100.0).round() / 100.0,
            drain_secs: drain,
            held_deletions: db.held_deletions(&v.id).map_err(|e| e.to_string())?,
            keys: db.vessel_keys(&v.id).unwrap_or_default(),
            content_held: content.0,
            content_sent: content.1,
            content_owed: content.2,
            vessel: v,
        });
    }
    rows.sort_by(|a, b| {
        b.lag(now)
            .cmp(&a.lag(now))
            .then_with(|| a.vessel.id.cmp(&b.vessel.id))
    });
    let forward = cfg
        .cloud
        .as_ref()
        .map(|_| db.forward_summary().unwrap_or_default());
    Ok(Fleet {
        vessels: rows,
        forward,
        refusals,
        at: now,
    })
}

/// `shore vessel list` and `shore status`: the fleet, and the same as the JSON document
/// `--json` prints (with the audit trail's last entries).
pub fn status(cfg: &ShoreConfig, now: i64) -> Result<(Fleet, serde_json::Value), crate::Error> {
    let db = cfg.open()?;
    let fleet = fleet_view(cfg, &db, now).map_err(crate::Error::Failed)?;
    let json = fleet.json(&db);
    Ok((fleet, json))
}
