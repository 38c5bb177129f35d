//! The process's peak memory, as the benchmarks report it (Linux `/proc/self`).

/// Peak resident set size of this process in MB (VmHWM), if the kernel tells.
pub fn peak_rss_mb() -> Option<f64> {
    peak_of("self")
}

/// Peak resident set size of process `pid` in MB (a child the benchmark started).
pub fn peak_rss_mb_of(pid: u32) -> Option<f64> {
    peak_of(&pid.to_string())
}

fn peak_of(who: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{who}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak RSS mark so the next reading covers only what follows (Linux >= 4.0).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}
