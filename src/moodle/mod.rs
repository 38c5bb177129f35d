//! How the agent reaches its Moodle: the database, read-only, to capture progress ([`db`]); the
//! web services to change users, enrolments and course settings ([`ws`]); the CLI scripts for
//! course backup, restore and deletion ([`cli`]); and a faithful stand-in for Moodle's web
//! services and CLI scripts in tests, the demo and benchmarks ([`fake`], [`fakecli`]).

pub mod cli;
pub mod db;
pub mod fake;
pub mod fakecli;
pub mod ws;
