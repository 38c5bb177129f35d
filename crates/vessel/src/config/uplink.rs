//! `[uplink]`: how progress goes home (HTTPS to the shore receiver, files for a carrier, or not
//! at all), the TLS trust, the schedule, batch size, byte budgets and allowed windows.

use std::path::PathBuf;

use base::tomlcheck::Walker;
use toml_edit::{Item, Table};
use wire::net::Trust;

/// How progress goes home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkMode {
    /// Not at all (progress stays in the outbox).
    Off,
    /// HTTPS to the shore receiver.
    Https,
    /// Envelope files into the outbound directory for a store-and-forward carrier.
    Files,
}

/// `[uplink]`.
#[derive(Debug, Clone)]
pub struct UplinkSettings {
    /// Mode.
    pub mode: UplinkMode,
    /// Shore's base URL (`https://shore.example.com:8443`).
    pub url: String,
    /// File holding this vessel's token (mode 0600).
    pub token_file: Option<PathBuf>,
    /// This vessel's signing key (`vessel-sync keygen`).
    pub signing_key: Option<PathBuf>,
    /// TLS trust.
    pub trust: Trust,
    /// Seconds between exchanges while records wait to go home.
    pub interval: u64,
    /// Seconds between check-ins while nothing waits (shore's `poll_in` and new work shorten
    /// it).
    pub idle_interval: u64,
    /// What a megabyte (10^6 bytes) on the link costs, for `status`'s bill; `None`: not shown.
    pub price_per_mb: Option<f64>,
    /// The price's currency as the operator writes it (`USD`, `EUR`); at most 8 characters.
    pub currency: String,
    /// Connect timeout, seconds.
    pub connect_timeout: u64,
    /// Whole-request timeout, seconds.
    pub timeout: u64,
    /// Most records per batch (1 to [`wire::MAX_BATCH_RECORDS`]).
    pub batch_records: u64,
    /// Bytes per UTC day (0: no limit).
    pub daily_budget: u64,
    /// Bytes per UTC month (0: no limit).
    pub monthly_budget: u64,
    /// Allowed UTC windows as (start minute, end minute) of the day; empty: always.
    pub windows: Vec<(u32, u32)>,
    /// Longest wait between retries, seconds.
    pub backoff_max: u64,
    /// File mode: write an unacknowledged batch again after this many seconds.
    pub resend_after: u64,
}

fn parse_window(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    let hm = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
    };
    let (a, b) = (hm(a)?, hm(b)?);
    (a != b).then_some((a, b))
}

/// Reads this section of `root`.
pub(crate) fn parse(w: &mut Walker<'_>, root: &Table) -> UplinkSettings {
    let uplink_t = w.sub(root, "uplink");
    if let Some(t) = uplink_t {
        w.only(
            t,
            "[uplink]",
            &[
                "mode",
                "url",
                "token_file",
                "signing_key",
                "ca_file",
                "pin_sha256",
                "interval",
                "idle_interval",
                "price_per_mb",
                "currency",
                "connect_timeout",
                "timeout",
                "batch_records",
                "daily_budget",
                "monthly_budget",
                "windows",
                "backoff_max",
                "resend_after",
            ],
        );
    }
    let mode = match w.string(uplink_t, "uplink", "mode") {
        None => UplinkMode::Off,
        Some((m, span)) => match m.as_str() {
            "off" => UplinkMode::Off,
            "https" => UplinkMode::Https,
            "files" => UplinkMode::Files,
            _ => {
                w.push(
                    span,
                    format!("uplink.mode {m:?}: use \"https\", \"files\" or \"off\""),
                );
                UplinkMode::Off
            }
        },
    };
    let opt_path = |w: &mut Walker<'_>, key: &str| {
        uplink_t
            .and_then(|t| t.get(key))
            .map(|_| w.path(uplink_t, "uplink", key, PathBuf::new()))
    };
    let token_file = opt_path(w, "token_file");
    let signing_key = opt_path(w, "signing_key");
    let ca_file = opt_path(w, "ca_file");
    let mut pins = Vec::new();
    for (p, span) in w.strings(uplink_t, "uplink", "pin_sha256") {
        let p = p.to_ascii_lowercase().replace(':', "");
        if p.len() != 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            w.push(span, "uplink.pin_sha256 entries are 64 hex digits (SHA-256 of the certificate, as 'vessel-sync shore gen-cert' prints)".into());
        }
        pins.push(p);
    }
    let url = w
        .string(uplink_t, "uplink", "url")
        .map(|(s, _)| s)
        .unwrap_or_default();
    if mode != UplinkMode::Off && signing_key.is_none() {
        w.push(uplink_t.and_then(Table::span), "uplink.signing_key is required: this vessel's key (from 'vessel-sync keygen') signs every batch".into());
    }
    if mode == UplinkMode::Https {
        if !url.starts_with("https://") {
            w.push(
                uplink_t
                    .and_then(|t| t.get("url"))
                    .and_then(Item::span)
                    .or(uplink_t.and_then(Table::span)),
                "uplink.url must be an https:// URL of the shore receiver".into(),
            );
        }
        if token_file.is_none() {
            w.push(uplink_t.and_then(Table::span), "uplink.token_file is required for mode = \"https\" (the file 'vessel-sync shore vessel add' wrote)".into());
        }
    }
    let mut windows = Vec::new();
    for (s, span) in w.strings(uplink_t, "uplink", "windows") {
        match parse_window(&s) {
            Some(win) => windows.push(win),
            None => w.push(
                span,
                format!("uplink.windows: {s:?} is not a UTC window such as \"22:00-06:00\""),
            ),
        }
    }
    let trust = Trust {
        ca_file: ca_file.or_else(|| {
            pins.is_empty()
                .then(|| PathBuf::from(wire::net::SYSTEM_CA_FILE))
        }),
        pins,
    };
    let daily_budget = match uplink_t.and_then(|t| t.get("daily_budget")) {
        Some(_) => w.bytes(uplink_t, "uplink", "daily_budget", 0),
        None => 0,
    };
    let monthly_budget = match uplink_t.and_then(|t| t.get("monthly_budget")) {
        Some(_) => w.bytes(uplink_t, "uplink", "monthly_budget", 0),
        None => 0,
    };
    let price_per_mb = match uplink_t.and_then(|t| t.get("price_per_mb")) {
        None => None,
        Some(item) => {
            let v = item
                .as_float()
                .or_else(|| item.as_integer().map(|i| i as f64));
            match v {
                Some(p) if (0.0..1e6).contains(&p) => Some(p),
                _ => {
                    w.push(item.span(), "uplink.price_per_mb is what one megabyte on the link costs, a number such as 0.13 or 18.78".into());
                    None
                }
            }
        }
    };
    let currency = match w.string(uplink_t, "uplink", "currency") {
        None => String::new(),
        Some((c, span)) => {
            let c = c.trim().to_string();
            if c.chars().count() > 8 || c.chars().any(|ch| ch.is_control()) {
                w.push(
                    span,
                    "uplink.currency is a short name such as \"USD\" (at most 8 characters)".into(),
                );
                String::new()
            } else {
                c
            }
        }
    };
    let interval = w.seconds(uplink_t, "uplink", "interval", 300).max(1);
    UplinkSettings {
        mode,
        url: url.trim_end_matches('/').to_string(),
        token_file,
        signing_key,
        trust,
        interval,
        idle_interval: w
            .seconds(uplink_t, "uplink", "idle_interval", 3600)
            .max(interval),
        price_per_mb,
        currency,
        connect_timeout: w.seconds(uplink_t, "uplink", "connect_timeout", 30).max(1),
        timeout: w.seconds(uplink_t, "uplink", "timeout", 300).max(1),
        batch_records: w
            .count(uplink_t, "uplink", "batch_records", 20_000)
            .clamp(1, wire::MAX_BATCH_RECORDS),
        daily_budget,
        monthly_budget,
        windows,
        backoff_max: w.seconds(uplink_t, "uplink", "backoff_max", 3600).max(1),
        resend_after: w
            .seconds(uplink_t, "uplink", "resend_after", 3 * 86_400)
            .max(60),
    }
}
