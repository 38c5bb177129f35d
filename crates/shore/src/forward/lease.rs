//! The forwarding lease: one receiver of a shore database forwards at a time. The lease is
//! renewed with every record; a holder stopped mid-pass leaves it to run out, unless it ran on
//! this host and its process is gone (seen in `/proc`), when it is taken over at once.

use crate::store::{ShoreDbError, ShoreStore};

/// The lease name forwarding runs under.
pub(crate) const FORWARD_LEASE: &str = "forward";

/// This process, as a lease holder: `host:pid-namespace:pid:random`.
pub(crate) fn lease_holder() -> &'static str {
    static HOLDER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOLDER.get_or_init(|| {
        let mut r = [0u8; 8];
        let _ = getrandom::fill(&mut r);
        format!("{}:{}:{}", this_host(), std::process::id(), hex::encode(r))
    })
}

/// The host and pid namespace this process runs in: holders that share it can see each
/// other's processes in /proc.
fn this_host() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!("{}:{}", host.trim(), ns.trim_start_matches("pid:"))
}

/// Takes the forwarding lease over from a holder on this host whose process is gone (a
/// `shore forward` or `shore serve` killed mid-pass), instead of waiting for it to run out.
/// A holder elsewhere, or one whose pid is alive (or was reused), keeps it until it expires.
pub(crate) fn took_over_from_dead(
    db: &ShoreStore,
    holder: &str,
    lease: i64,
    now: i64,
) -> Result<bool, ShoreDbError> {
    let Some(current) = db.lease_holder(FORWARD_LEASE)? else {
        return Ok(false);
    };
    let mut parts = current.rsplitn(3, ':');
    let (_random, pid, place) = (parts.next(), parts.next(), parts.next());
    let (Some(pid), Some(place)) = (pid.and_then(|p| p.parse::<u32>().ok()), place) else {
        return Ok(false);
    };
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    if place != this_host() || pid == std::process::id() || alive {
        return Ok(false);
    }
    let took = db.take_over_lease(FORWARD_LEASE, &current, holder, now + lease)?;
    if took {
        tracing::info!(
            "the forwarding lease's holder on this host (pid {pid}) is gone; this process takes it over"
        );
    }
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::{FORWARD_LEASE, lease_holder, this_host, took_over_from_dead};
    use crate::store::ShoreStore;

    #[test]
    fn a_forwarding_lease_left_by_a_killed_process_on_this_host_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = ShoreStore::open(&dir.path().join("shore.db")).unwrap();
        let far = i64::MAX / 2;
        let me = lease_holder();
        // pid_max is at most 2^22: this pid never runs.
        let dead = format!("{}:99999999:00", this_host());
        assert!(db.take_lease(FORWARD_LEASE, &dead, far, 0).unwrap());
        assert!(!db.take_lease(FORWARD_LEASE, me, far, 1).unwrap());
        assert!(took_over_from_dead(&db, me, 300, 2).unwrap());
        assert_eq!(db.lease_holder(FORWARD_LEASE).unwrap().as_deref(), Some(me));
        db.drop_lease(FORWARD_LEASE, me).unwrap();

        // A live process on this host (pid 1), or any holder on another host, keeps it.
        for other in [
            format!("{}:1:00", this_host()),
            "other-host:pid:[1]:99999999:00".to_string(),
        ] {
            assert!(db.take_lease(FORWARD_LEASE, &other, far, 0).unwrap());
            assert!(!took_over_from_dead(&db, me, 300, 2).unwrap(), "{other}");
            assert_eq!(
                db.lease_holder(FORWARD_LEASE).unwrap().as_deref(),
                Some(other.as_str())
            );
            db.drop_lease(FORWARD_LEASE, &other).unwrap();
        }
    }
}
