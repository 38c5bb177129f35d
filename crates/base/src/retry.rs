//! The one retry rule of vessel-sync: after the n-th failure in a row, wait the first wait
//! doubled n-1 times, capped, then jittered to between half and the whole of it, so a fleet (or
//! a shore's receivers) that lost its peer at once does not come back at once. A peer's
//! `Retry-After` wins over a shorter wait; that is for the caller, which knows it.

/// An error that knows whether the same work may succeed if tried again later (a peer down, a
/// busy database, a link cut) or will fail the same way until something is changed (a refusal,
/// a bad configuration). The uplink, the forwarder and the operator commands ask this one
/// question; each error type answers it once, beside its variants.
pub trait Retriable {
    /// Whether waiting and trying again may help.
    fn is_retriable(&self) -> bool;
}

/// The HTTP statuses worth trying again after a wait: 408 (the request timed out), 429 (too
/// many requests) and every 5xx. Any other 4xx is a refusal: the same request fails again.
pub fn http_status_is_retriable(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// How long to wait after `failures` failures in a row (1 = the first): `first` doubled per
/// further failure, at most `cap`, jittered. At least one second.
pub fn backoff(failures: u32, first: i64, cap: i64) -> i64 {
    let doubled = first
        .max(1)
        .saturating_mul(1i64 << failures.saturating_sub(1).min(30));
    jitter(doubled.min(cap.max(1))).max(1)
}

/// A wait between half and the whole of `secs`, drawn at random.
pub fn jitter(secs: i64) -> i64 {
    let mut b = [0u8; 2];
    let r = getrandom::fill(&mut b)
        .map(|_| u16::from_le_bytes(b))
        .unwrap_or(32768);
    secs / 2 + (secs / 2) * i64::from(r) / 65_535
}

/// Waits `d` in a loop that polls something with no event to wait on (a child process's exit
/// while its output is read elsewhere, a busy executable, a peer between two tries). The one
/// sleep of the libraries (clippy.toml disallows `std::thread::sleep` elsewhere), so a reader
/// finds every poll loop by this name; never a way to wait for a result that has an event.
#[allow(clippy::disallowed_methods)]
pub fn pause(d: std::time::Duration) {
    std::thread::sleep(d);
}

#[cfg(test)]
mod tests {
    use super::{backoff, jitter};

    #[test]
    fn only_timeouts_overload_and_server_errors_are_worth_retrying() {
        use super::http_status_is_retriable as r;
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(r(s), "{s}");
        }
        for s in [200, 301, 400, 401, 403, 404, 409, 413, 422, 499, 600] {
            assert!(!r(s), "{s}");
        }
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        for _ in 0..100 {
            let j = jitter(600);
            assert!((300..=600).contains(&j), "{j}");
        }
    }

    #[test]
    fn backoff_doubles_from_the_first_wait_up_to_the_cap() {
        for _ in 0..50 {
            assert!((30..=60).contains(&backoff(1, 60, 3600)));
            assert!((60..=120).contains(&backoff(2, 60, 3600)));
            assert!((1800..=3600).contains(&backoff(10, 60, 3600)));
            assert!((1800..=3600).contains(&backoff(u32::MAX, 60, 3600)));
        }
        assert_eq!(backoff(1, 0, 0), 1);
    }
}
