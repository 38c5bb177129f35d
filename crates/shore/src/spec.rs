//! The bundle spec: the small TOML file an operator writes to describe a command bundle.
//!
//! ```toml
//! recipient = "mv-aurora"          # a vessel id, or "*" for the whole fleet
//! sequence = 7                     # next number in this (key, recipient) stream, from 1
//! sender = "shore-ops"             # optional label, default "shore"
//! not_before = "2026-12-01T00:00:00Z"   # optional, RFC 3339 UTC
//! expires = "2027-01-01T00:00:00Z"      # optional; or expires_in = "30days"
//!
//! [[command]]
//! type = "set_mapping"
//! id = "mapping-2026-11"           # optional; default BUNDLE_ID:N
//! files = ["mapping.csv"]          # paths relative to this spec file
//! args = {}                        # type-specific arguments
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use wire::envelope::{CommandEntry, Draft, Kind, Source};

/// A parsed spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Vessel id or `*`.
    pub recipient: String,
    /// Sequence in the stream.
    pub sequence: u64,
    /// Sender label.
    #[serde(default)]
    pub sender: Option<String>,
    /// Not before (RFC 3339).
    #[serde(default)]
    pub not_before: Option<String>,
    /// Expiry (RFC 3339).
    #[serde(default)]
    pub expires: Option<String>,
    /// Expiry relative to now ("30days").
    #[serde(default)]
    pub expires_in: Option<String>,
    /// Commands.
    #[serde(default, rename = "command")]
    pub commands: Vec<SpecCommand>,
}

/// One command in a spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecCommand {
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Optional id.
    #[serde(default)]
    pub id: Option<String>,
    /// Files, relative to the spec.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Arguments.
    #[serde(default)]
    pub args: BTreeMap<String, toml::Value>,
}

fn to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// Reads a spec file and turns it into a [`Draft`]; errors name the spec file and what to fix.
pub fn load(path: &Path, now: i64) -> Result<Draft, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec: Spec = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    if spec.recipient != wire::envelope::manifest::FLEET && !wire::valid_vessel_id(&spec.recipient)
    {
        return Err(format!(
            "{}: recipient {:?} is not a vessel id or \"*\"",
            path.display(),
            spec.recipient
        ));
    }
    let time = |label: &str, v: &Option<String>| -> Result<Option<i64>, String> {
        v.as_deref()
            .map(|s| {
                base::clock::parse_time(s).ok_or_else(|| {
                    format!(
                        "{}: {label} {s:?} is not an RFC 3339 UTC time like 2026-12-01T00:00:00Z",
                        path.display()
                    )
                })
            })
            .transpose()
    };
    let not_before = time("not_before", &spec.not_before)?;
    let mut expires = time("expires", &spec.expires)?;
    if let Some(rel) = &spec.expires_in {
        if expires.is_some() {
            return Err(format!(
                "{}: give expires or expires_in, not both",
                path.display()
            ));
        }
        let d = humantime::parse_duration(rel)
            .map_err(|e| format!("{}: expires_in {rel:?}: {e}", path.display()))?;
        expires = Some(now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
    }
    let mut files: Vec<(String, Source)> = Vec::new();
    let mut by_path: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut commands = Vec::new();
    for (i, c) in spec.commands.iter().enumerate() {
        let mut names = Vec::new();
        for f in &c.files {
            let full = if f.is_absolute() {
                f.clone()
            } else {
                base.join(f)
            };
            if !full.is_file() {
                return Err(format!(
                    "{}: command {} ({}) names file {}, which does not exist",
                    path.display(),
                    i + 1,
                    c.kind,
                    full.display()
                ));
            }
            let name = match by_path.get(&full) {
                Some(n) => n.clone(),
                None => {
                    let base_name = full
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let member = format!("files/{base_name}");
                    wire::envelope::manifest::check_member_name(&member)
                        .map_err(|e| format!("{}: {e}; rename the file", path.display()))?;
                    if files.iter().any(|(n, _)| *n == member) {
                        return Err(format!(
                            "{}: two different files are both called {base_name}; rename one",
                            path.display()
                        ));
                    }
                    files.push((member.clone(), Source::Path(full.clone())));
                    by_path.insert(full, member.clone());
                    member
                }
            };
            names.push(name);
        }
        commands.push(CommandEntry {
            id: c.id.clone().unwrap_or_default(),
            kind: c.kind.clone(),
            args: c
                .args
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
            files: names,
        });
    }
    if commands.is_empty() {
        return Err(format!(
            "{}: no [[command]] given; a bundle needs at least one",
            path.display()
        ));
    }
    Ok(Draft {
        kind: Kind::Commands,
        sender: spec.sender.unwrap_or_else(|| "shore".into()),
        recipient: spec.recipient,
        sequence: spec.sequence,
        not_before,
        expires,
        commands,
        files,
        id: None,
    })
}
