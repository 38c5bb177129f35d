//! What the stand-in Moodle site holds: users, courses with their activities and completions,
//! categories, enrolments, and the switches a test flips (REST off, debugging, maintenance).

use std::collections::{BTreeMap, HashMap, HashSet};

/// A user row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Username (lower case).
    pub username: String,
    /// First name.
    pub firstname: String,
    /// Last name.
    pub lastname: String,
    /// Email, as given.
    pub email: String,
    /// Idnumber (not unique in Moodle).
    pub idnumber: String,
    /// Authentication method.
    pub auth: String,
    /// Suspended.
    pub suspended: bool,
    /// Password as given (the fake does not hash).
    pub password: String,
}

/// A course row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Course {
    /// Id.
    pub id: i64,
    /// Short name.
    pub shortname: String,
    /// Full name.
    pub fullname: String,
    /// Idnumber.
    pub idnumber: String,
    /// Category id.
    pub category: i64,
    /// Visible.
    pub visible: bool,
    /// Contents deleted by a crashed `delete_course.php --disablerecyclebin`; the row stays.
    pub half_deleted: bool,
    /// The backup it was restored from, if any.
    pub mbz: Option<Vec<u8>>,
}

/// The site's state.
#[derive(Debug, Default)]
pub struct State {
    /// Users by id (admin is 2, as on a fresh site).
    pub users: BTreeMap<i64, User>,
    /// Courses by id (the site course is 1).
    pub courses: BTreeMap<i64, Course>,
    /// (userid, courseid, roleid).
    pub enrolments: HashSet<(i64, i64, i64)>,
    /// Calls per function.
    pub calls: HashMap<String, u64>,
    /// Developer debugging: errors carry `debuginfo`.
    pub debug: bool,
    /// Web services / REST switched off: 403 with an empty body.
    pub rest_disabled: bool,
    /// Categories: id -> (idnumber, name). DECK is 2 and ENGINE 3, as on the rig.
    pub categories: BTreeMap<i64, (String, String)>,
    /// Course modules: cmid -> (course id, modname, name, idnumber).
    pub modules: BTreeMap<i64, (i64, String, String, String)>,
    /// Activity completions: (userid, cmid) -> state, as overrides leave them.
    pub completions: BTreeMap<(i64, i64), i64>,
    /// The site's backup default leaves users out (`backup_general_users = 0`): backups are
    /// named `...-nu.mbz`.
    pub backup_without_users: bool,
    /// The next `delete_course.php` dies half-way, as `--disablerecyclebin` does.
    pub crash_next_delete: bool,
    /// Every CLI run: the script and its arguments (not the readiness checks).
    pub cli_runs: Vec<Vec<String>>,
    /// `admin/cli/upgrade.php --is-pending` answers "An upgrade is pending" (exit 2).
    pub upgrade_pending: bool,
    /// How many times the agent asked `upgrade.php --is-pending`.
    pub upgrade_checks: u32,
    pub(super) next_user: i64,
    pub(super) by_name: HashMap<String, i64>,
    pub(super) by_email: HashMap<String, Vec<i64>>,
    pub(super) by_idnumber: HashMap<String, Vec<i64>>,
}

impl State {
    /// A user by username.
    pub fn user(&self, username: &str) -> Option<&User> {
        self.by_name.get(username).and_then(|id| self.users.get(id))
    }

    /// Whether an account has this email (compared in lower case, as Moodle does on create).
    pub fn email_taken(&self, lower: &str) -> bool {
        self.by_email.get(lower).is_some_and(|v| !v.is_empty())
    }

    pub(super) fn insert(&mut self, mut u: User) -> i64 {
        if u.id == 0 {
            self.next_user = self.next_user.max(3);
            u.id = self.next_user;
            self.next_user += 1;
        }
        let id = u.id;
        self.by_name.insert(u.username.clone(), id);
        self.by_email
            .entry(u.email.to_lowercase())
            .or_default()
            .push(id);
        self.by_idnumber
            .entry(u.idnumber.clone())
            .or_default()
            .push(id);
        self.users.insert(id, u);
        id
    }

    pub(super) fn unindex(&mut self, id: i64) {
        if let Some(u) = self.users.get(&id) {
            let (e, i) = (u.email.to_lowercase(), u.idnumber.clone());
            if let Some(v) = self.by_email.get_mut(&e) {
                v.retain(|x| *x != id);
            }
            if let Some(v) = self.by_idnumber.get_mut(&i) {
                v.retain(|x| *x != id);
            }
        }
    }

    /// Adds a course; returns its id.
    pub fn add_course(&mut self, shortname: &str, idnumber: &str, category: i64) -> i64 {
        let id = self.courses.keys().max().copied().unwrap_or(0) + 1;
        self.courses.insert(
            id,
            Course {
                id,
                shortname: shortname.into(),
                fullname: shortname.into(),
                idnumber: idnumber.into(),
                category,
                visible: true,
                half_deleted: false,
                mbz: None,
            },
        );
        id
    }

    /// A course by shortname.
    pub fn course(&self, shortname: &str) -> Option<&Course> {
        self.courses.values().find(|c| c.shortname == shortname)
    }

    /// Adds a user as an administrator would; returns its id.
    pub fn add_user(&mut self, username: &str, email: &str, idnumber: &str) -> i64 {
        self.insert(User {
            id: 0,
            username: username.into(),
            firstname: "First".into(),
            lastname: "Last".into(),
            email: email.into(),
            idnumber: idnumber.into(),
            auth: "manual".into(),
            suspended: false,
            password: String::new(),
        })
    }
}
