//! Seafarer accounts in bulk: validating a user CSV ([`validate`]) and importing it into a
//! Moodle through its web services or its upload CLI ([`import`], [`upload`]), for `vessel-sync users
//! validate|import` ashore and the `upsert_users` command on board.

pub mod import;
mod site;
pub mod upload;
pub mod validate;
