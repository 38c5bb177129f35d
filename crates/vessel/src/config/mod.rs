//! The agent's configuration file (TOML, default `/etc/vessel-sync/agent.toml`).
//!
//! Parse, validate, then construct: the whole file is read into a span-keeping document, every
//! key is checked against its section's schema, and every problem (unknown key, wrong type, bad
//! value, unreadable key file) is collected with its line before anything is returned
//! ([`base::tomlcheck`]). A config is either entirely valid or rejected with the full list. The
//! commented example `packaging/agent.toml.example` documents every key and default.
//!
//! This file reads the top level (`version`, `[vessel]`, `[paths]`, `[log]`); each other section
//! has its schema and validation in a file of its own: [`keyring`] (`[keyring]`, `[limits]`),
//! [`inbox`], [`capture`], [`uplink`], and `[moodle]` in the Moodle crate
//! ([`moodle::config`]).

mod capture;
mod inbox;
mod keyring;
mod uplink;

use std::path::{Path, PathBuf};

use base::tomlcheck::{ConfigError, Issue, Walker};
use moodle::config::{CliSettings, WsSettings};
use moodle::db::DbSettings;
use toml_edit::{Document, Table};
use wire::envelope::{Keyring, Limits};
use wire::valid_vessel_id;

pub use capture::CaptureSettings;
pub use inbox::InboxSettings;
pub use uplink::{UplinkMode, UplinkSettings};

/// Where the packaged service looks by default.
pub const DEFAULT_PATH: &str = "/etc/vessel-sync/agent.toml";
/// The config format version this build reads.
pub const CONFIG_VERSION: i64 = 1;
/// The vessel id of the shipped example, which must be edited before the agent starts.
pub const PLACEHOLDER_ID: &str = "CHANGE-ME";

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

/// A loaded, valid agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// This vessel's id.
    pub vessel_id: String,
    /// Directories.
    pub paths: Paths,
    /// Operator keys trusted outright (`[keyring] trusted`).
    pub keyring: Keyring,
    /// Fleet root keys (`[keyring] root`).
    pub roots: Keyring,
    /// Inbox behaviour.
    pub inbox: InboxSettings,
    /// Envelope caps.
    pub limits: Limits,
    /// Bytes of course content kept on board for delta bundles (`[limits] content_store_bytes`;
    /// 0 keeps none).
    pub content_store_bytes: u64,
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
        let mut w = Walker::new(text, base);
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

        let (keyring, roots, limits, content_store_bytes) = keyring::parse(&mut w, root);
        let inbox = inbox::parse(&mut w, root);
        let log_t = w.sub(root, "log");
        if let Some(t) = log_t {
            w.only(t, "[log]", &["level"]);
        }
        let log_level = w
            .string(log_t, "log", "level")
            .map(|(s, _)| s)
            .unwrap_or_else(|| "info".into());

        let moodle = moodle::config::parse(&mut w, root);
        let capture = capture::parse(&mut w, root);
        let uplink = uplink::parse(&mut w, root);

        base::tomlcheck::finish(path, w.issues)?;
        Ok(Config {
            path: path.to_path_buf(),
            vessel_id,
            paths,
            keyring,
            roots,
            inbox,
            limits,
            content_store_bytes,
            log_level,
            moodle_db: moodle.db,
            moodle_ws: moodle.ws,
            moodle_cli: moodle.cli,
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
}
