//! How the agent reaches its Moodle: the database, read-only, to capture progress ([`db`]); the
//! web services to change users and enrolments ([`ws`]); and a faithful stand-in for Moodle's
//! web services in tests, the demo and benchmarks ([`fake`]).

pub mod db;
pub mod fake;
pub mod ws;
