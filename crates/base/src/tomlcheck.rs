//! Checking a TOML config file against a schema: the file is parsed into a span-keeping
//! document, every key is checked, and every problem (unknown key with a suggestion, wrong type,
//! bad value) is collected with its line before anything is returned, so an operator fixes a
//! file in one pass. Each config section (the agent's `[inbox]`, `[uplink]`, `[moodle]`...) reads
//! its keys through a [`Walker`] and keeps its schema beside its validation.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use toml_edit::{Item, Table};

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

/// Walks a parsed TOML document, collecting [`Issue`]s with their lines.
pub struct Walker<'a> {
    src: &'a str,
    /// Relative paths in the file are resolved against this directory (the file's own).
    pub base: PathBuf,
    /// The problems found so far.
    pub issues: Vec<Issue>,
}

impl<'a> Walker<'a> {
    /// A walker over the text `src` of a file in directory `base`.
    pub fn new(src: &'a str, base: PathBuf) -> Self {
        Walker {
            src,
            base,
            issues: Vec::new(),
        }
    }
}

impl Walker<'_> {
    /// The 1-based line of a span (0 without one).
    pub fn line(&self, span: Option<Range<usize>>) -> usize {
        span.map(|s| {
            self.src[..s.start.min(self.src.len())]
                .matches('\n')
                .count()
                + 1
        })
        .unwrap_or(0)
    }

    /// Records a problem at `span`.
    pub fn push(&mut self, span: Option<Range<usize>>, message: String) {
        let line = self.line(span);
        self.issues.push(Issue { line, message });
    }

    /// Reports keys of `table` not in `allowed`, suggesting the closest allowed one.
    pub fn only(&mut self, table: &Table, label: &str, allowed: &[&str]) {
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

    /// The `[name]` section of `root`, if present (a problem if it is not a table).
    pub fn sub<'t>(&mut self, root: &'t Table, name: &str) -> Option<&'t Table> {
        match root.get(name) {
            None => None,
            Some(Item::Table(t)) => Some(t),
            Some(other) => {
                self.push(other.span(), format!("'{name}' must be a [{name}] section"));
                None
            }
        }
    }

    /// `label.key` as a string, with its span.
    pub fn string(
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

    /// `label.key` as a path (relative to [`Walker::base`]), or `default`.
    pub fn path(&mut self, t: Option<&Table>, label: &str, key: &str, default: PathBuf) -> PathBuf {
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

    /// `label.key` as a duration in seconds (`\"5m\"` or whole seconds), or `default`.
    pub fn seconds(&mut self, t: Option<&Table>, label: &str, key: &str, default: u64) -> u64 {
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

    /// `label.key` as a positive size in bytes (`\"200MiB\"` or whole bytes), or `default`.
    pub fn bytes(&mut self, t: Option<&Table>, label: &str, key: &str, default: u64) -> u64 {
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

    /// `label.key` as a list of strings, each with its span.
    pub fn strings(
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

    /// `label.key` as a positive whole number, or `default`.
    pub fn count(&mut self, t: Option<&Table>, label: &str, key: &str, default: u64) -> u64 {
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

/// Fails with every issue sorted by line, or succeeds when there is none.
pub fn finish(path: &std::path::Path, mut issues: Vec<Issue>) -> Result<(), ConfigError> {
    if issues.is_empty() {
        return Ok(());
    }
    issues.sort_by_key(|i| i.line);
    Err(ConfigError {
        path: path.to_path_buf(),
        issues,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("200MiB"), Some(200 << 20));
        assert_eq!(parse_size("4 GiB"), Some(4 << 30));
        assert_eq!(parse_size("10KB"), Some(10_000));
        assert_eq!(parse_size("ten"), None);
    }
}
