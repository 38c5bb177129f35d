//! `[capture]`: how often progress is captured from Moodle's database, and which legacy-id
//! mappings a record must have before it may go home.

use base::tomlcheck::Walker;
use toml_edit::Table;

use crate::capture::RequireLegacy;

/// `[capture]`.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// Seconds between scheduled captures.
    pub interval: u64,
    /// Mappings a record must have.
    pub require: RequireLegacy,
}

/// Reads this section of `root`.
pub(crate) fn parse(w: &mut Walker<'_>, root: &Table) -> CaptureSettings {
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
    CaptureSettings {
        interval: w.seconds(capture_t, "capture", "interval", 900).max(10),
        require,
    }
}
