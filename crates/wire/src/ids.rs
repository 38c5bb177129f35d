//! The one rule for ids that name files: every id that arrives from a bundle, a batch, a
//! manifest, a config or a vessel (bundle id, vessel id, need_files bundle, report bundle) passes
//! [`check_id`] before any code joins it into a path, and a command id passes
//! [`check_command_id`]. The rule is `[A-Za-z0-9._-]{1,64}`, never `.` or `..` (a UUID passes):
//! such an id is one plain path component, so `dir.join(id)` stays inside `dir`.
//!
//! Command ids also allow `:` (the default id is `BUNDLE_ID:N`) and 128 bytes; they name files
//! only through the journal's file-safe form (`vessel::commands::Ctx::safe_id`).

/// Longest id that names a file.
pub const MAX_ID: usize = 64;
/// Longest command id.
pub const MAX_COMMAND_ID: usize = 128;

/// Why an id was refused: what it is, and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {shown} is not a valid id: {rule}")]
pub struct IdError {
    /// What the id names (`bundle id`, `vessel id`, ...).
    pub what: &'static str,
    /// The id as shown: quoted, control characters escaped, at most 80 characters.
    pub shown: String,
    /// The rule it broke.
    pub rule: &'static str,
}

fn refuse(what: &'static str, id: &str, rule: &'static str) -> IdError {
    IdError {
        what,
        shown: format!("{:?}", base::text::clip(id, 80)),
        rule,
    }
}

/// An id that names a file: 1 to 64 bytes of `A-Z a-z 0-9 . _ -`, not `.` or `..`.
pub fn check_id(what: &'static str, id: &str) -> Result<(), IdError> {
    check(what, id, MAX_ID, false)
}

/// A command id: 1 to 128 bytes of `A-Z a-z 0-9 . _ - :`, not `.` or `..`.
pub fn check_command_id(id: &str) -> Result<(), IdError> {
    check("command id", id, MAX_COMMAND_ID, true)
}

fn check(what: &'static str, id: &str, max: usize, colon: bool) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(refuse(what, id, "it is empty"));
    }
    if id.len() > max {
        return Err(refuse(
            what,
            id,
            if max == MAX_ID {
                "it is longer than 64 bytes"
            } else {
                "it is longer than 128 bytes"
            },
        ));
    }
    if id == "." || id == ".." {
        return Err(refuse(what, id, "'.' and '..' name directories"));
    }
    let ok = |b: u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') || (colon && b == b':')
    };
    if !id.bytes().all(ok) {
        return Err(refuse(
            what,
            id,
            if colon {
                "only A-Z a-z 0-9 . _ - : are allowed"
            } else {
                "only A-Z a-z 0-9 . _ - are allowed (no '/', no spaces)"
            },
        ));
    }
    Ok(())
}

/// Any id made into one safe file-name component, for ids that predate [`check_id`] or may hold
/// `:` (command ids): every character but `A-Z a-z 0-9 -` becomes `_`.
pub fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_that_would_leave_a_directory_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "/etc",
            "a/b",
            "a\\b",
            "a b",
            "a\0b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(check_id("bundle id", bad).is_err(), "{bad:?} passed");
        }
        for good in [
            "a",
            "9f3c0d7e-3b1a-4c55-9d0e-1f2a3b4c5d6e",
            "erm-110_v4.2",
            "..a",
            &"x".repeat(64),
        ] {
            assert!(check_id("bundle id", good).is_ok(), "{good:?} refused");
        }
        assert!(check_command_id("b-1:2").is_ok());
        assert!(check_id("bundle id", "b-1:2").is_err());
    }

    proptest! {
        /// Whatever passes is one plain path component: joined onto a directory it stays
        /// directly inside it.
        #[test]
        fn a_valid_id_is_one_component_inside_its_directory(id in "\\PC{0,70}") {
            if check_id("bundle id", &id).is_ok() {
                let p = std::path::Path::new("/base").join(&id);
                prop_assert_eq!(p.parent(), Some(std::path::Path::new("/base")));
                let comps: Vec<_> = p.components().collect();
                prop_assert_eq!(comps.len(), 3);
                prop_assert!(matches!(comps[2], std::path::Component::Normal(_)));
            }
        }
    }
}
