//! What a vessel requires of a command bundle beyond its signature: the kind, the recipient
//! (this vessel or the fleet) and the validity window, with a tolerance for drifting clocks.

use super::Rejection;
use super::manifest::{FLEET, Kind, Manifest};
use base::clock::format_time;

/// Checks what a vessel requires of a command bundle beyond its signature: the kind, the
/// recipient (this vessel or the fleet) and the validity window, with `skew` seconds of
/// tolerance for clocks that drift.
pub fn check_policy(m: &Manifest, vessel: &str, now: i64, skew: i64) -> Result<(), Rejection> {
    if m.kind != Kind::Commands {
        return Err(Rejection::WrongKind(format!("{:?}", m.kind).to_lowercase()));
    }
    if m.recipient != vessel && m.recipient != FLEET {
        return Err(Rejection::WrongVessel {
            recipient: m.recipient.clone(),
            vessel: vessel.into(),
        });
    }
    if let Some(exp) = m.expires.as_deref().and_then(base::clock::parse_time) {
        if now > exp.saturating_add(skew) {
            return Err(Rejection::Expired {
                expires: format_time(exp),
                now: format_time(now),
            });
        }
    }
    if let Some(nb) = m.not_before.as_deref().and_then(base::clock::parse_time) {
        if now.saturating_add(skew) < nb {
            return Err(Rejection::NotYetValid {
                not_before: format_time(nb),
                now: format_time(now),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(recipient: &str, not_before: Option<&str>, expires: Option<&str>) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format": 1, "kind": "commands", "id": "b1", "issuer": "k", "sender": "operator",
            "recipient": recipient, "sequence": 1, "created": "2026-12-01T00:00:00Z",
            "not_before": not_before, "expires": expires, "commands": [], "files": []
        }))
        .unwrap()
    }

    #[test]
    fn the_window_holds_with_the_clock_tolerance_and_only_for_this_vessel_or_the_fleet() {
        let t = |s: &str| base::clock::parse_time(s).unwrap();
        let now = t("2026-12-07T12:00:00Z");
        let code = |m: &Manifest, now: i64| {
            check_policy(m, "mv-aurora", now, 300)
                .map_or_else(|r| r.code().to_string(), |()| "ok".into())
        };
        let window = manifest(
            "mv-aurora",
            Some("2026-12-07T00:00:00Z"),
            Some("2026-12-08T00:00:00Z"),
        );
        assert_eq!(code(&window, now), "ok");
        assert_eq!(
            code(&window, t("2026-12-06T23:56:00Z")),
            "ok",
            "within the tolerance"
        );
        assert_eq!(code(&window, t("2026-12-06T23:54:00Z")), "not_yet_valid");
        assert_eq!(
            code(&window, t("2026-12-08T00:04:00Z")),
            "ok",
            "within the tolerance"
        );
        assert_eq!(code(&window, t("2026-12-08T00:06:00Z")), "expired");
        assert_eq!(code(&manifest("*", None, None), now), "ok");
        assert_eq!(code(&manifest("mv-other", None, None), now), "wrong_vessel");
    }
}
