//! `vessel-sync moodle install-plugin`: puts the companion plugin `local_vesselsync` into a
//! Moodle's code tree and runs Moodle's upgrade script (the library side is
//! [`moodle::plugin`]).

use std::path::PathBuf;

use clap::Subcommand;

use super::fail;
use base::exit;

/// Moodle-side subcommands.
#[derive(Debug, Subcommand)]
pub enum MoodleCmd {
    /// Install (or upgrade) the companion plugin local_vesselsync into a Moodle.
    ///
    /// Writes the plugin carried by this binary into MOODLE_DIR/local/vesselsync (replacing an
    /// older copy whole) and runs `php admin/cli/upgrade.php --non-interactive`, which installs
    /// or upgrades it. Run it as the user that owns Moodle's code (e.g. `sudo -u www-data`).
    /// Then add local_vesselsync_apply_progress and local_vesselsync_lookup to the external
    /// service whose token shore (or the agent) uses. Works on Moodle 4.5 LTS and 5.0.
    InstallPlugin {
        /// Moodle's code folder (the one holding config.php and admin/).
        #[arg(long, value_name = "DIR")]
        moodle_dir: PathBuf,
        /// The PHP command line binary.
        #[arg(long, default_value = "php", value_name = "PATH")]
        php: String,
        /// Only write the files; run the upgrade yourself (or visit Site administration >
        /// Notifications).
        #[arg(long)]
        no_upgrade: bool,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a moodle subcommand; returns the exit code.
pub fn run(cmd: MoodleCmd) -> i32 {
    match cmd {
        MoodleCmd::InstallPlugin {
            moodle_dir,
            php,
            no_upgrade,
            json,
        } => {
            let upgrade = (!no_upgrade).then_some(php.as_str());
            match moodle::plugin::install(&moodle_dir, upgrade) {
                Ok(done) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&done).unwrap_or_default()
                        );
                    } else {
                        println!(
                            "{} {} version {} in {}",
                            if done.replaced {
                                "upgraded"
                            } else {
                                "installed"
                            },
                            moodle::plugin::COMPONENT,
                            done.version,
                            done.dir.display()
                        );
                        match &done.upgrade {
                            Some(said) => println!("admin/cli/upgrade.php: {said}"),
                            None => println!(
                                "now run: php admin/cli/upgrade.php --non-interactive (in {})",
                                moodle_dir.display()
                            ),
                        }
                    }
                    exit::OK
                }
                Err(e @ moodle::plugin::PluginError::NotMoodle(_)) => fail(exit::USAGE, e),
                Err(e @ moodle::plugin::PluginError::Upgrade { .. }) => fail(exit::SOFTWARE, e),
                Err(e) => fail(exit::IOERR, e),
            }
        }
    }
}
