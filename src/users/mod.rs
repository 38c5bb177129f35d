//! Seafarer accounts in bulk: validating a user CSV ([`validate`]) and importing it into a
//! Moodle through its web services ([`import`]), for `vessel-sync users validate|import`.

pub mod import;
pub mod sample;
pub mod validate;
