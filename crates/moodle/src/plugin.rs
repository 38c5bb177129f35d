//! The companion Moodle plugin `local_vesselsync`, carried inside the binary so that one package
//! installs it: [`FILES`] are the plugin's files as they are in `plugins/local/vesselsync/`, and
//! [`install`] writes them into a Moodle's code tree (`local/vesselsync`, or
//! `public/local/vesselsync` in a Moodle 5.1+ layout) and runs Moodle's own
//! `admin/cli/upgrade.php`, which installs or upgrades it.
//!
//! The files are written into a new folder beside the target and renamed over it, so a Moodle
//! never sees half a plugin.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The plugin's component name.
pub const COMPONENT: &str = "local_vesselsync";

/// The plugin's files: (path inside the plugin folder, contents).
pub const FILES: &[(&str, &str)] = &[
    (
        "version.php",
        include_str!("../../../plugins/local/vesselsync/version.php"),
    ),
    (
        "db/access.php",
        include_str!("../../../plugins/local/vesselsync/db/access.php"),
    ),
    (
        "db/services.php",
        include_str!("../../../plugins/local/vesselsync/db/services.php"),
    ),
    (
        "db/install.xml",
        include_str!("../../../plugins/local/vesselsync/db/install.xml"),
    ),
    (
        "classes/resolver.php",
        include_str!("../../../plugins/local/vesselsync/classes/resolver.php"),
    ),
    (
        "classes/external/apply_progress.php",
        include_str!("../../../plugins/local/vesselsync/classes/external/apply_progress.php"),
    ),
    (
        "classes/external/get_users.php",
        include_str!("../../../plugins/local/vesselsync/classes/external/get_users.php"),
    ),
    (
        "classes/external/lookup.php",
        include_str!("../../../plugins/local/vesselsync/classes/external/lookup.php"),
    ),
    (
        "classes/privacy/provider.php",
        include_str!("../../../plugins/local/vesselsync/classes/privacy/provider.php"),
    ),
    (
        "lang/en/local_vesselsync.php",
        include_str!("../../../plugins/local/vesselsync/lang/en/local_vesselsync.php"),
    ),
];

/// The plugin's function that applies progress with its original time.
pub const APPLY: &str = "local_vesselsync_apply_progress";
/// The plugin's lookup function.
pub const LOOKUP: &str = "local_vesselsync_lookup";
/// The plugin's bulk account lookup (what a crew list carries, and enrolments).
pub const GET_USERS: &str = "local_vesselsync_get_users";

/// Whether the token's service on this Moodle offers the plugin's [`APPLY`] function.
pub fn offered(ws: &crate::ws::Ws) -> Result<bool, crate::ws::WsError> {
    offers(ws, APPLY)
}

/// Whether the token's service on this Moodle offers `function`.
pub fn offers(ws: &crate::ws::Ws, function: &str) -> Result<bool, crate::ws::WsError> {
    let info = ws.call(
        "core_webservice_get_site_info",
        &crate::ws::Params::new(),
        crate::ws::Safety::Read,
    )?;
    Ok(info["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|f| f["name"].as_str() == Some(function)))
}

/// Why the plugin could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The folder is not a Moodle code tree.
    #[error(
        "{0}: not a Moodle code folder (no version.php and admin/cli/upgrade.php); name the folder that holds Moodle's config.php"
    )]
    NotMoodle(PathBuf),
    /// Writing the files failed.
    #[error(
        "writing {path}: {source} (run as the user that owns Moodle's code, or with sudo -u www-data)"
    )]
    Write {
        /// What was being written.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// PHP could not be started.
    #[error("starting {php}: {source} (install php-cli, or name it with --php)")]
    Php {
        /// The PHP binary.
        php: String,
        /// Why.
        source: std::io::Error,
    },
    /// Moodle's upgrade script failed.
    #[error("admin/cli/upgrade.php failed (exit {code:?}): {said}")]
    Upgrade {
        /// Its exit code.
        code: Option<i32>,
        /// What it printed (the end of it).
        said: String,
    },
}

/// What an install did.
#[derive(Debug, serde::Serialize)]
pub struct Installed {
    /// Where the plugin now is.
    pub dir: PathBuf,
    /// The plugin's version number (from version.php).
    pub version: String,
    /// Whether a plugin folder was there before (an upgrade).
    pub replaced: bool,
    /// The end of what admin/cli/upgrade.php printed, when it ran.
    pub upgrade: Option<String>,
}

/// The plugin's version number, as its version.php declares it.
pub fn version() -> String {
    FILES
        .iter()
        .find(|(p, _)| *p == "version.php")
        .and_then(|(_, body)| {
            body.lines()
                .find(|l| l.contains("$plugin->version"))
                .and_then(|l| l.split('=').nth(1))
                .map(|v| v.trim().trim_end_matches(';').trim().to_string())
        })
        .unwrap_or_default()
}

/// The `local/` folder of a Moodle code tree (5.1+ keeps plugins under `public/`).
fn local_dir(moodle: &Path) -> Result<PathBuf, PluginError> {
    if !(moodle.join("version.php").is_file() && moodle.join("admin/cli/upgrade.php").is_file()) {
        return Err(PluginError::NotMoodle(moodle.to_path_buf()));
    }
    let public = moodle.join("public/local");
    Ok(if public.is_dir() {
        public
    } else {
        moodle.join("local")
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Writes the plugin into `moodle`'s code tree and, when `upgrade` names a PHP binary, runs
/// `admin/cli/upgrade.php --non-interactive` with it (with `max_input_vars=5000`, which Moodle's
/// environment check wants).
pub fn install(moodle: &Path, upgrade: Option<&str>) -> Result<Installed, PluginError> {
    let local = local_dir(moodle)?;
    let dest = local.join("vesselsync");
    let write = |path: &Path, e: std::io::Error| PluginError::Write {
        path: path.to_path_buf(),
        source: e,
    };
    let fresh = local.join(".vesselsync.new");
    let _ = std::fs::remove_dir_all(&fresh);
    for (rel, body) in FILES {
        let path = fresh.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| write(parent, e))?;
        }
        std::fs::write(&path, body).map_err(|e| write(&path, e))?;
    }
    let replaced = dest.exists();
    if replaced {
        let old = local.join(".vesselsync.old");
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&dest, &old).map_err(|e| write(&dest, e))?;
        std::fs::rename(&fresh, &dest).map_err(|e| write(&dest, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| write(&old, e))?;
    } else {
        std::fs::rename(&fresh, &dest).map_err(|e| write(&dest, e))?;
    }
    let upgrade = match upgrade {
        None => None,
        Some(php) => {
            // Moodle's environment check refuses an upgrade under PHP's default
            // max_input_vars (Debian's php.ini says 1000, Moodle wants 5000); this run only.
            let out = Command::new(php)
                .args([
                    "-d",
                    "max_input_vars=5000",
                    "admin/cli/upgrade.php",
                    "--non-interactive",
                ])
                .current_dir(moodle)
                .output()
                .map_err(|e| PluginError::Php {
                    php: php.to_string(),
                    source: e,
                })?;
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if !out.status.success() {
                return Err(PluginError::Upgrade {
                    code: out.status.code(),
                    said: tail(&said, 20),
                });
            }
            Some(tail(&said, 5))
        }
    };
    Ok(Installed {
        dir: dest,
        version: version(),
        replaced,
        upgrade,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the plugin's folder is carried, and nothing else.
    #[test]
    fn the_binary_carries_every_file_of_the_plugin() {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/local/vesselsync");
        let mut on_disk = Vec::new();
        walk(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut carried: Vec<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        carried.sort();
        assert_eq!(carried, on_disk);
        assert!(version().starts_with("20"), "{}", version());
    }

    #[test]
    fn a_folder_that_is_not_moodle_is_refused_and_nothing_is_written() {
        let d = tempfile::tempdir().unwrap();
        let e = install(d.path(), None).unwrap_err();
        assert!(matches!(e, PluginError::NotMoodle(_)), "{e}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn it_installs_into_local_and_replaces_an_older_copy_whole() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("version.php"), "<?php").unwrap();
        std::fs::create_dir_all(d.path().join("admin/cli")).unwrap();
        std::fs::write(d.path().join("admin/cli/upgrade.php"), "<?php").unwrap();
        std::fs::create_dir_all(d.path().join("local/vesselsync")).unwrap();
        std::fs::write(d.path().join("local/vesselsync/stale.php"), "<?php").unwrap();
        let done = install(d.path(), None).unwrap();
        assert!(done.replaced);
        assert!(!d.path().join("local/vesselsync/stale.php").exists());
        assert!(
            d.path()
                .join("local/vesselsync/classes/external/apply_progress.php")
                .is_file()
        );
    }
}
