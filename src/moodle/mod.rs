//! How the agent reaches its Moodle. This version reads the database, read-only, to capture
//! progress ([`db`]); the web-service client and the CLI runner come with the commands that
//! change Moodle.

pub mod db;
