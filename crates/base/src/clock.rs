//! The time seam. Nothing in the library reads the wall clock except through [`Clock`], so tests
//! can fix or move time; timestamps are Unix seconds (UTC) internally and RFC 3339 on the outside.

// This module is the time seam: the one place that names the real clock (clippy.toml).
#![allow(clippy::disallowed_types)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place that reads the wall clock (the time seam).
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// The system clock shifted by a fixed number of seconds: `VESSEL_SYNC_CLOCK_OFFSET` (a test
/// and diagnosis seam for a ship's clock that is set wrong; never needed in normal operation).
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock(pub i64);

impl Clock for OffsetClock {
    fn now(&self) -> i64 {
        SystemClock.now().saturating_add(self.0)
    }
}

/// The process clock: the system clock, shifted when `VESSEL_SYNC_CLOCK_OFFSET` is set.
pub fn from_env() -> std::sync::Arc<dyn Clock> {
    match std::env::var("VESSEL_SYNC_CLOCK_OFFSET")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        Some(off) if off != 0 => std::sync::Arc::new(OffsetClock(off)),
        _ => std::sync::Arc::new(SystemClock),
    }
}

/// A clock that stands still unless moved (tests).
#[derive(Debug, Default)]
pub struct FixedClock(pub std::sync::atomic::AtomicI64);

impl FixedClock {
    /// A clock at `t`.
    pub fn at(t: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(t))
    }
    /// Moves the clock forward (or back, with a negative value).
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-22T10:00:00Z`).
pub fn format_time(t: i64) -> String {
    let st = if t >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(t.unsigned_abs())
    };
    humantime::format_rfc3339_seconds(st).to_string()
}

/// Parses RFC 3339 (UTC, `Z` suffix, optional fraction) into Unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let st = humantime::parse_rfc3339(s).ok()?;
    let secs = st.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// Formats a duration in seconds the way an operator reads it ("3 days 4h", "12m").
pub fn format_age(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = 1_795_000_000;
        assert_eq!(parse_time(&format_time(t)), Some(t));
        assert_eq!(parse_time("2026-11-22T00:00:00Z"), Some(1_795_305_600));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(format_age(3 * 86_400 + 7200), "3d 2h");
    }
}
