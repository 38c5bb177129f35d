//! The agent's configuration file (TOML, default `/etc/vessel-sync/agent.toml`).
//!
//! Parse, validate, then construct: the whole file is read into a span-keeping document, every
//! key is checked against the schema below, and every problem (unknown key, wrong type, bad
//! value, unreadable key file) is collected with its line before anything is returned. A config
//! is either entirely valid or rejected with the full list. The commented example
//! `packaging/agent.toml.example` documents every key and default.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{Document, Item, Table};

use crate::envelope::{Keyring, Limits, PublicKey};
use crate::moodle::db::{DbSettings, DbType};
use crate::net::Trust;
use crate::progress::capture::RequireLegacy;

/// Where the packaged service looks by default.
pub const DEFAULT_PATH: &str = "/etc/vessel-sync/agent.toml";
/// The config format version this build reads.
pub const CONFIG_VERSION: i64 = 1;
/// The vessel id of the shipped example, which must be edited before the agent starts.
pub const PLACEHOLDER_ID: &str = "CHANGE-ME";

/// One problem in the file.
#[derive(Debug, Clone)]
pub struct Issue {
    /// 1-based line, 0 when not tied to a line.
    pub line: usize,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// All issues, in file order.
    pub issues: Vec<Issue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        writeln!(
            f,
            "{}: {n} problem{} found:",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for i in &self.issues {
            if i.line > 0 {
                writeln!(f, "  {}:{}: {}", self.path.display(), i.line, i.message)?;
            } else {
                writeln!(f, "  {}: {}", self.path.display(), i.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Directories the agent uses.
#[derive(Debug, Clone)]
pub struct Paths {
    /// State directory: the journal database lives here.
    pub state_dir: PathBuf,
    /// Where bundles arrive.
    pub inbox: PathBuf,
    /// Where verified bundles are extracted while their commands run.
    pub work: PathBuf,
    /// Where journaled bundles are kept.
    pub archive: PathBuf,
    /// Where rejected files go, each with a `.reason.txt`.
    pub quarantine: PathBuf,
    /// Where outgoing envelopes are written for a file carrier.
    pub outbound: PathBuf,
}

impl Paths {
    /// The journal database.
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("journal.db")
    }
}

/// Inbox and ordering settings.
#[derive(Debug, Clone)]
pub struct InboxSettings {
    /// Full rescan period in seconds (file system events are only hints).
    pub scan_interval: u64,
    /// A file must be unchanged (size and mtime) for this many seconds before it is read.
    pub settle: u64,
    /// How long a bundle that arrived ahead of a missing sequence waits before proceeding.
    pub gap_timeout: u64,
    /// Tolerance for not-before/expiry against a drifting clock.
    pub clock_skew: u64,
}

/// A loaded, valid agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// This vessel's id.
    pub vessel_id: String,
    /// Directories.
    pub paths: Paths,
    /// Trusted operator keys.
    pub keyring: Keyring,
    /// Inbox behaviour.
    pub inbox: InboxSettings,
    /// Envelope caps.
    pub limits: Limits,
    /// Log level filter (`info`, `debug`, or a tracing filter).
    pub log_level: String,
    /// Moodle's database (None: no capture configured).
    pub moodle_db: Option<DbSettings>,
    /// Moodle's web services (None: commands that change Moodle wait until configured).
    pub moodle_ws: Option<WsSettings>,
    /// Moodle's CLI scripts (None: course commands wait until configured).
    pub moodle_cli: Option<CliSettings>,
    /// Capture schedule and rules.
    pub capture: CaptureSettings,
    /// The link to shore.
    pub uplink: UplinkSettings,
}

/// `[moodle]` web-service settings.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// The site's address (wwwroot).
    pub url: String,
    /// File holding the token.
    pub token_file: PathBuf,
    /// Seconds to wait for one reply.
    pub timeout: u64,
    /// Users per call in `upsert_users`.
    pub user_chunk: usize,
}

/// `[moodle]` CLI settings (backup, restore, delete of courses).
#[derive(Debug, Clone)]
pub struct CliSettings {
    /// Moodle's code root (holds `admin/cli/`).
    pub moodle_dir: PathBuf,
    /// The PHP binary.
    pub php: PathBuf,
    /// Words put before the php binary (e.g. `sudo -u www-data`), never a shell string.
    pub prefix: Vec<String>,
    /// Seconds one script may run.
    pub timeout: u64,
    /// Moodle's dataroot, to see CLI maintenance mode (`climaintenance.html`).
    pub dataroot: Option<PathBuf>,
    /// Where final backups go (default `STATE_DIR/backups`).
    pub backup_dir: Option<PathBuf>,
    /// Seconds final backups are kept.
    pub keep_backups: u64,
    /// `upsert_users` writes users through Moodle's upload CLI (`user_import = "cli"`, the
    /// default with `moodle_dir`) instead of the web services.
    pub upload_cli: bool,
}

/// `[capture]`.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// Seconds between scheduled captures.
    pub interval: u64,
    /// Mappings a record must have.
    pub require: RequireLegacy,
}

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
    /// Seconds between sync cycles.
    pub interval: u64,
    /// Connect timeout, seconds.
    pub connect_timeout: u64,
    /// Whole-request timeout, seconds.
    pub timeout: u64,
    /// Most records per batch.
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

struct Walker<'a> {
    src: &'a str,
    base: PathBuf,
    issues: Vec<Issue>,
}

impl Walker<'_> {
    fn line(&self, span: Option<Range<usize>>) -> usize {
        span.map(|s| {
            self.src[..s.start.min(self.src.len())]
                .matches('\n')
                .count()
                + 1
        })
        .unwrap_or(0)
    }

    fn push(&mut self, span: Option<Range<usize>>, message: String) {
        let line = self.line(span);
        self.issues.push(Issue { line, message });
    }

    /// Reports keys of `table` not in `allowed`.
    fn only(&mut self, table: &Table, label: &str, allowed: &[&str]) {
        for (k, _) in table.iter() {
            if !allowed.contains(&k) {
                let span = table.key(k).and_then(|key| key.span());
                let hint = closest(k, allowed)
                    .map(|c| format!(" (did you mean '{c}'?)"))
                    .unwrap_or_default();
                self.push(
                    span,
                    format!(
                        "unknown key '{k}' in {label}{hint}; allowed here: {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn sub<'t>(&mut self, root: &'t Table, name: &str) -> Option<&'t Table> {
        match root.get(name) {
            None => None,
            Some(Item::Table(t)) => Some(t),
            Some(other) => {
                self.push(other.span(), format!("'{name}' must be a [{name}] section"));
                None
            }
        }
    }

    fn string(
        &mut self,
        t: Option<&Table>,
        label: &str,
        key: &str,
    ) -> Option<(String, Option<Range<usize>>)> {
        let item = t.and_then(|t| t.get(key))?;
        match item.as_str() {
            Some(s) => Some((s.to_string(), item.span())),
            None => {
                self.push(
                    item.span(),
                    format!("{label}.{key} must be a string in quotes"),
                );
                None
            }
        }
    }

    fn path(&mut self, t: Option<&Table>, label: &str, key: &str, default: PathBuf) -> PathBuf {
        match self.string(t, label, key) {
            Some((s, span)) => {
                if s.is_empty() {
                    self.push(span, format!("{label}.{key} is empty"));
                }
                let p = PathBuf::from(&s);
                if p.is_absolute() {
                    p
                } else {
                    self.base.join(p)
                }
            }
            None => default,
        }
    }

    fn seconds(&mut self, t: Option<&Table>, label: &str, key: &str, default: u64) -> u64 {
        let Some(item) = t.and_then(|t| t.get(key)) else {
            return default;
        };
        if let Some(i) = item.as_integer() {
            if i >= 0 {
                return i.unsigned_abs();
            }
        } else if let Some(s) = item.as_str() {
            if let Ok(d) = humantime::parse_duration(s) {
                return d.as_secs();
            }
        }
        self.push(
            item.span(),
            format!("{label}.{key} must be a duration such as \"30s\", \"5m\", \"2days\" (or whole seconds)"),
        );
        default
    }

    fn bytes(&mut self, t: Option<&Table>, label: &str, key: &str, default: u64) -> u64 {
        let Some(item) = t.and_then(|t| t.get(key)) else {
            return default;
        };
        let parsed = if let Some(i) = item.as_integer() {
            u64::try_from(i).ok()
        } else {
            item.as_str().and_then(parse_size)
        };
        match parsed {
            Some(v) if v > 0 => v,
            _ => {
                self.push(
                    item.span(),
                    format!("{label}.{key} must be a positive size such as \"200MiB\", \"4GiB\" (or whole bytes)"),
                );
                default
            }
        }
    }

    fn strings(
        &mut self,
        t: Option<&Table>,
        label: &str,
        key: &str,
    ) -> Vec<(String, Option<Range<usize>>)> {
        let Some(item) = t.and_then(|t| t.get(key)) else {
            return Vec::new();
        };
        match item.as_array() {
            Some(arr) if arr.iter().all(|v| v.as_str().is_some()) => arr
                .iter()
                .map(|v| (v.as_str().unwrap_or_default().to_string(), v.span()))
                .collect(),
            _ => {
                self.push(
                    item.span(),
                    format!("{label}.{key} must be a list of strings"),
                );
                Vec::new()
            }
        }
    }

    fn count(&mut self, t: Option<&Table>, label: &str, key: &str, default: u64) -> u64 {
        let Some(item) = t.and_then(|t| t.get(key)) else {
            return default;
        };
        match item.as_integer().and_then(|i| u64::try_from(i).ok()) {
            Some(v) if v > 0 => v,
            _ => {
                self.push(
                    item.span(),
                    format!("{label}.{key} must be a positive whole number"),
                );
                default
            }
        }
    }
}

/// Parses sizes like `512`, `10KB`, `200MiB`, `4 GiB` (KB/MB/GB are powers of 1000).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn closest<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    options
        .iter()
        .map(|o| (edit_distance(word, o), *o))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, o)| o)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A vessel id: 1-64 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
pub fn valid_vessel_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && id != "shore"
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            issues: vec![Issue {
                line: 0,
                message: format!(
                    "cannot read the config file: {e}{}",
                    if e.kind() == std::io::ErrorKind::NotFound {
                        " (start from packaging/agent.toml.example, or pass --config FILE)"
                    } else {
                        ""
                    }
                ),
            }],
        })?;
        Self::parse(&text, path)
    }

    /// Validates config text; `path` is used for messages and to resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let fail = |issues| ConfigError {
            path: path.to_path_buf(),
            issues,
        };
        let doc = Document::parse(text.to_string()).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            let msg = e.message().trim().to_string();
            fail(vec![Issue {
                line,
                message: format!("not valid TOML: {msg}"),
            }])
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut w = Walker {
            src: text,
            base,
            issues: Vec::new(),
        };
        let root = doc.as_table();
        w.only(
            root,
            "the top level",
            &[
                "version", "vessel", "paths", "keyring", "inbox", "limits", "log", "moodle",
                "capture", "uplink",
            ],
        );
        match root.get("version") {
            None => w.push(
                None,
                format!("missing 'version = {CONFIG_VERSION}' at the top of the file"),
            ),
            Some(item) => {
                if item.as_integer() != Some(CONFIG_VERSION) {
                    w.push(
                        item.span(),
                        format!("version must be {CONFIG_VERSION} (this build reads config version {CONFIG_VERSION})"),
                    );
                }
            }
        }

        let vessel = w.sub(root, "vessel");
        if let Some(t) = vessel {
            w.only(t, "[vessel]", &["id"]);
        }
        let vessel_id = match w.string(vessel, "vessel", "id") {
            Some((id, span)) => {
                if id == PLACEHOLDER_ID {
                    w.push(span, format!("vessel.id is still the placeholder {PLACEHOLDER_ID:?}: set this vessel's id (what shore addresses bundles to) before starting the agent"));
                } else if !valid_vessel_id(&id) {
                    w.push(span, format!("vessel.id {id:?} is not valid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (and not 'shore')"));
                }
                id
            }
            None => {
                w.push(vessel.and_then(Table::span), "vessel.id is required: the id shore addresses bundles to, e.g. id = \"mv-aurora\"".into());
                String::new()
            }
        };

        let paths_t = w.sub(root, "paths");
        if let Some(t) = paths_t {
            w.only(
                t,
                "[paths]",
                &[
                    "state_dir",
                    "inbox",
                    "work",
                    "archive",
                    "quarantine",
                    "outbound",
                ],
            );
        }
        let state_dir = w.path(
            paths_t,
            "paths",
            "state_dir",
            PathBuf::from("/var/lib/vessel-sync"),
        );
        let paths = Paths {
            inbox: w.path(paths_t, "paths", "inbox", state_dir.join("inbox")),
            work: w.path(paths_t, "paths", "work", state_dir.join("work")),
            archive: w.path(paths_t, "paths", "archive", state_dir.join("archive")),
            quarantine: w.path(paths_t, "paths", "quarantine", state_dir.join("quarantine")),
            outbound: w.path(paths_t, "paths", "outbound", state_dir.join("outbound")),
            state_dir,
        };

        let keyring_t = w.sub(root, "keyring");
        if let Some(t) = keyring_t {
            w.only(t, "[keyring]", &["trusted"]);
        }
        let mut keys = Vec::new();
        match keyring_t.and_then(|t| t.get("trusted")) {
            None => w.push(keyring_t.and_then(Table::span), "[keyring] trusted is required: a list of operator .pub files, e.g. trusted = [\"/etc/vessel-sync/keys/shore-ops.pub\"]".into()),
            Some(item) => match item.as_array() {
                None => w.push(item.span(), "keyring.trusted must be a list of file paths".into()),
                Some(arr) => {
                    if arr.is_empty() {
                        w.push(item.span(), "keyring.trusted is empty: with no trusted key every bundle would be refused".into());
                    }
                    for v in arr.iter() {
                        match v.as_str() {
                            None => w.push(v.span(), "keyring.trusted entries must be strings".into()),
                            Some(s) => {
                                let p = PathBuf::from(s);
                                let p = if p.is_absolute() { p } else { w.base.join(p) };
                                match PublicKey::load(&p) {
                                    Ok(k) => keys.push(k),
                                    Err(e) => w.push(v.span(), format!("keyring.trusted: {e}")),
                                }
                            }
                        }
                    }
                }
            },
        }

        let inbox_t = w.sub(root, "inbox");
        if let Some(t) = inbox_t {
            w.only(
                t,
                "[inbox]",
                &["scan_interval", "settle", "gap_timeout", "clock_skew"],
            );
        }
        let inbox = InboxSettings {
            scan_interval: w.seconds(inbox_t, "inbox", "scan_interval", 30).max(1),
            settle: w.seconds(inbox_t, "inbox", "settle", 5),
            gap_timeout: w.seconds(inbox_t, "inbox", "gap_timeout", 2 * 86_400),
            clock_skew: w.seconds(inbox_t, "inbox", "clock_skew", 300),
        };

        let limits_t = w.sub(root, "limits");
        if let Some(t) = limits_t {
            w.only(
                t,
                "[limits]",
                &[
                    "max_bundle_bytes",
                    "max_member_bytes",
                    "max_members",
                    "max_manifest_bytes",
                ],
            );
        }
        let d = Limits::default();
        let limits = Limits {
            max_total_bytes: w.bytes(limits_t, "limits", "max_bundle_bytes", d.max_total_bytes),
            max_member_bytes: w.bytes(limits_t, "limits", "max_member_bytes", d.max_member_bytes),
            max_members: w.count(limits_t, "limits", "max_members", d.max_members),
            max_manifest_bytes: w.bytes(
                limits_t,
                "limits",
                "max_manifest_bytes",
                d.max_manifest_bytes,
            ),
            max_window_log: d.max_window_log,
        };

        let log_t = w.sub(root, "log");
        if let Some(t) = log_t {
            w.only(t, "[log]", &["level"]);
        }
        let log_level = w
            .string(log_t, "log", "level")
            .map(|(s, _)| s)
            .unwrap_or_else(|| "info".into());

        let moodle_t = w.sub(root, "moodle");
        if let Some(t) = moodle_t {
            w.only(
                t,
                "[moodle]",
                &[
                    "db_type",
                    "db_host",
                    "db_port",
                    "db_name",
                    "db_user",
                    "db_password_file",
                    "prefix",
                    "url",
                    "token_file",
                    "ws_timeout",
                    "user_chunk",
                    "moodle_dir",
                    "php",
                    "cli_prefix",
                    "cli_timeout",
                    "dataroot",
                    "backup_dir",
                    "keep_backups",
                    "user_import",
                ],
            );
        }
        let moodle_ws = match w.string(moodle_t, "moodle", "url") {
            None => None,
            Some((url, span)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    w.push(span.clone(), format!("moodle.url {url:?}: the Moodle site's address (its wwwroot), starting with http:// or https://"));
                }
                if moodle_t.and_then(|t| t.get("token_file")).is_none() {
                    w.push(span, "moodle.url needs moodle.token_file: a file holding the web-service token (mode 0640, readable by the agent's user)".into());
                }
                Some(WsSettings {
                    url,
                    token_file: w.path(moodle_t, "moodle", "token_file", PathBuf::new()),
                    timeout: w.seconds(moodle_t, "moodle", "ws_timeout", 300),
                    user_chunk: usize::try_from(w.count(moodle_t, "moodle", "user_chunk", 500))
                        .unwrap_or(500)
                        .clamp(1, 5000),
                })
            }
        };
        let moodle_db = match w.string(moodle_t, "moodle", "db_type") {
            None => None,
            Some((ty, span)) => {
                let db_type = match ty.as_str() {
                    "postgres" | "pgsql" | "postgresql" => Some(DbType::Postgres),
                    "mariadb" | "mysql" | "mysqli" => Some(DbType::MariaDb),
                    _ => {
                        w.push(span, format!("moodle.db_type {ty:?}: use \"postgres\" or \"mariadb\" (also for MySQL)"));
                        None
                    }
                };
                let default_port = if db_type == Some(DbType::MariaDb) {
                    3306
                } else {
                    5432
                };
                let port = w.count(moodle_t, "moodle", "db_port", default_port);
                let prefix = w
                    .string(moodle_t, "moodle", "prefix")
                    .map(|(s, _)| s)
                    .unwrap_or_else(|| "mdl_".into());
                if !prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    w.push(moodle_t.and_then(|t| t.get("prefix")).and_then(Item::span), format!("moodle.prefix {prefix:?}: lower-case letters, digits and _ only (as in Moodle's config.php $CFG->prefix)"));
                }
                let password_file = moodle_t
                    .and_then(|t| t.get("db_password_file"))
                    .map(|_| w.path(moodle_t, "moodle", "db_password_file", PathBuf::new()));
                db_type.map(|db_type| DbSettings {
                    db_type,
                    host: w
                        .string(moodle_t, "moodle", "db_host")
                        .map(|(s, _)| s)
                        .unwrap_or_else(|| "localhost".into()),
                    port: u16::try_from(port).unwrap_or(5432),
                    name: w
                        .string(moodle_t, "moodle", "db_name")
                        .map(|(s, _)| s)
                        .unwrap_or_else(|| "moodle".into()),
                    user: w
                        .string(moodle_t, "moodle", "db_user")
                        .map(|(s, _)| s)
                        .unwrap_or_else(|| "vessel_sync".into()),
                    password_file,
                    prefix,
                })
            }
        };
        let moodle_cli = if moodle_t.and_then(|t| t.get("moodle_dir")).is_some() {
            let dir = w.path(moodle_t, "moodle", "moodle_dir", PathBuf::new());
            let span = moodle_t
                .and_then(|t| t.get("moodle_dir"))
                .and_then(Item::span);
            if !dir.join("admin/cli").is_dir() {
                w.push(span.clone(), format!("moodle.moodle_dir {}: no admin/cli/ in it; give Moodle's code root (the directory holding config.php and admin/)", dir.display()));
            }
            if moodle_ws.is_none() {
                w.push(span, "moodle.moodle_dir needs moodle.url and moodle.token_file too: the course commands look courses up through the web services".into());
            }
            let prefix: Vec<String> = w
                .strings(moodle_t, "moodle", "cli_prefix")
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            Some(CliSettings {
                moodle_dir: dir,
                php: w.path(moodle_t, "moodle", "php", PathBuf::from("/usr/bin/php")),
                prefix,
                timeout: w.seconds(moodle_t, "moodle", "cli_timeout", 3600),
                dataroot: moodle_t
                    .and_then(|t| t.get("dataroot"))
                    .map(|_| w.path(moodle_t, "moodle", "dataroot", PathBuf::new())),
                backup_dir: moodle_t
                    .and_then(|t| t.get("backup_dir"))
                    .map(|_| w.path(moodle_t, "moodle", "backup_dir", PathBuf::new())),
                keep_backups: w.seconds(moodle_t, "moodle", "keep_backups", 30 * 86_400),
                upload_cli: match w.string(moodle_t, "moodle", "user_import") {
                    None => true,
                    Some((v, _)) if v == "cli" => true,
                    Some((v, _)) if v == "webservice" => false,
                    Some((v, span)) => {
                        w.push(span, format!("moodle.user_import {v:?}: \"cli\" (Moodle's upload CLI, about 3x faster) or \"webservice\""));
                        true
                    }
                },
            })
        } else {
            None
        };
        if moodle_db.is_none()
            && moodle_ws.is_none()
            && moodle_t.is_some_and(|t| !t.is_empty())
            && moodle_t.and_then(|t| t.get("db_type")).is_none()
        {
            w.push(
                moodle_t.and_then(Table::span),
                "[moodle] needs db_type = \"postgres\" or \"mariadb\"".into(),
            );
        }

        let capture_t = w.sub(root, "capture");
        if let Some(t) = capture_t {
            w.only(t, "[capture]", &["interval", "require_legacy"]);
        }
        let mut require = RequireLegacy::default();
        for (v, span) in w.strings(capture_t, "capture", "require_legacy") {
            match v.as_str() {
                "course" => require.course = true,
                "activity" => require.activity = true,
                _ => w.push(
                    span,
                    format!("capture.require_legacy: {v:?} is not \"course\" or \"activity\""),
                ),
            }
        }
        let capture = CaptureSettings {
            interval: w.seconds(capture_t, "capture", "interval", 900).max(10),
            require,
        };

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
        let token_file = opt_path(&mut w, "token_file");
        let signing_key = opt_path(&mut w, "signing_key");
        let ca_file = opt_path(&mut w, "ca_file");
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
                    .then(|| PathBuf::from(crate::net::SYSTEM_CA_FILE))
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
        let uplink = UplinkSettings {
            mode,
            url: url.trim_end_matches('/').to_string(),
            token_file,
            signing_key,
            trust,
            interval: w.seconds(uplink_t, "uplink", "interval", 300).max(1),
            connect_timeout: w.seconds(uplink_t, "uplink", "connect_timeout", 30).max(1),
            timeout: w.seconds(uplink_t, "uplink", "timeout", 300).max(1),
            batch_records: w.count(uplink_t, "uplink", "batch_records", 20_000),
            daily_budget,
            monthly_budget,
            windows,
            backoff_max: w.seconds(uplink_t, "uplink", "backoff_max", 3600).max(1),
            resend_after: w
                .seconds(uplink_t, "uplink", "resend_after", 3 * 86_400)
                .max(60),
        };

        if !w.issues.is_empty() {
            let mut issues = w.issues;
            issues.sort_by_key(|i| i.line);
            return Err(fail(issues));
        }
        Ok(Config {
            path: path.to_path_buf(),
            vessel_id,
            paths,
            keyring: Keyring::new(keys),
            inbox,
            limits,
            log_level,
            moodle_db,
            moodle_ws,
            moodle_cli,
            capture,
            uplink,
        })
    }

    /// Checks, without creating or writing anything, that every directory is writable by this
    /// user, or can be created (its nearest existing parent is writable); returns problems.
    pub fn check_directories(&self) -> Vec<String> {
        let p = &self.paths;
        let mut problems = Vec::new();
        for (label, dir) in [
            ("state_dir", &p.state_dir),
            ("inbox", &p.inbox),
            ("work", &p.work),
            ("archive", &p.archive),
            ("quarantine", &p.quarantine),
            ("outbound", &p.outbound),
        ] {
            let existing = dir.ancestors().find(|a| a.exists());
            match existing {
                Some(a) if !a.is_dir() => problems.push(format!(
                    "paths.{label} {}: {} is not a directory",
                    dir.display(),
                    a.display()
                )),
                Some(a) if !writable(a) => problems.push(format!(
                    "paths.{label} {}: {} is not writable by this user{}",
                    dir.display(),
                    a.display(),
                    if a == dir.as_path() {
                        ""
                    } else {
                        " (so the directory cannot be created)"
                    }
                )),
                Some(_) => {}
                None => problems.push(format!(
                    "paths.{label} {}: no existing parent",
                    dir.display()
                )),
            }
        }
        problems
    }
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access() with a valid NUL-terminated path has no other preconditions.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_reported_at_once_with_its_line() {
        let text = "version = 1\n[vessel]\nid = \"bad id!\"\ncolour = \"red\"\n[inbox]\nsettle = \"soon\"\n[limits]\nmax_members = -3\n[keyring]\ntrusted = [\"/nonexistent/ops.pub\"]\n";
        let err = Config::parse(text, Path::new("/tmp/agent.toml")).unwrap_err();
        let lines: Vec<usize> = err.issues.iter().map(|i| i.line).collect();
        assert_eq!(lines, vec![3, 4, 6, 8, 10], "{err}");
        let text = err.to_string();
        assert!(text.contains("5 problems"), "{text}");
        assert!(text.contains("unknown key 'colour'"), "{text}");
    }

    #[test]
    fn typo_gets_a_suggestion_and_missing_version_is_named() {
        let text = "[inbox]\nscan_intervall = 5\n";
        let err = Config::parse(text, Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean 'scan_interval'"), "{err}");
        assert!(err.contains("missing 'version = 1'"), "{err}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("200MiB"), Some(200 << 20));
        assert_eq!(parse_size("4 GiB"), Some(4 << 30));
        assert_eq!(parse_size("10KB"), Some(10_000));
        assert_eq!(parse_size("ten"), None);
    }
}
