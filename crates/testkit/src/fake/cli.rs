//! The fake Moodle's CLI scripts, played as the transcripts in `shared/moodle/cli/` show:
//! `backup.php`, `restore_backup.php` and `delete_course.php`, quirks included (exit 0 and no
//! file for a bad destination; exit 0 and nothing deleted without `--non-interactive` or for
//! the site course; exit 1 after half-deleting with `--disablerecyclebin`, a rerun finishing the
//! job), plus `admin/tool/uploaduser/cli/uploaduser.php` as `shared/moodle/users-import.md`
//! describes it (row by row, always exit 0, a bad email still creates the user with a warning,
//! a duplicate email refuses the row with two `Error:` lines). The `php` that [`super::FakeMoodle::php`] writes forwards a command line here, so the agent runs a real
//! process with real arguments, exit code and output streams.

use std::collections::HashMap;
use std::io::Read;

use serde_json::{Value, json};

use super::state::{Course, State};

const DATAROOT: &str = "/var/moodledata";

fn reply(code: i32, stdout: String, stderr: &str) -> Value {
    json!({"code": code, "stdout": stdout, "stderr": stderr})
}

/// Runs one script: `form` holds `arg[0]` (the script path), `arg[1]`, ...
pub fn run(st: &mut State, form: &[(String, String)]) -> Value {
    let mut argv: Vec<(usize, String)> = form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("arg[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|i| i.parse().ok())
                .map(|i| (i, v.clone()))
        })
        .collect();
    argv.sort();
    let argv: Vec<String> = argv.into_iter().map(|(_, v)| v).collect();
    if argv.first().map(String::as_str) == Some("admin/cli/upgrade.php") {
        // The agent's readiness check, counted apart from the scripts that do work.
        st.upgrade_checks += 1;
        return if st.upgrade_pending {
            reply(2, String::new(), "An upgrade is pending\n")
        } else {
            reply(
                0,
                String::new(),
                "No upgrade needed for the installed version 5.0.6+ (Build: 20260403) (2025041406.05). Thanks for coming anyway!\n",
            )
        };
    }
    st.cli_runs.push(argv.clone());
    let Some(script) = argv.first() else {
        return reply(1, String::new(), "Could not open input file: (none)\n");
    };
    let mut opts: HashMap<String, String> = HashMap::new();
    for a in &argv[1..] {
        let a = a.trim_start_matches('-');
        let (k, v) = a.split_once('=').unwrap_or((a, ""));
        let k = match k {
            "c" if script.ends_with("delete_course.php") => "courseid",
            "c" => "categoryid",
            "C" => "courseid",
            "f" => "file",
            other => other,
        };
        opts.insert(k.to_string(), v.to_string());
    }
    match script.as_str() {
        "admin/cli/backup.php" => backup(st, &opts),
        "admin/cli/restore_backup.php" => restore(st, &opts),
        "admin/cli/delete_course.php" => delete(st, &opts),
        "admin/tool/uploaduser/cli/uploaduser.php" => upload_users(st, &opts),
        other => reply(
            1,
            String::new(),
            &format!("Could not open input file: {other}\n"),
        ),
    }
}

fn backup(st: &State, o: &HashMap<String, String>) -> Value {
    let course = if let Some(id) = o.get("courseid") {
        id.parse::<i64>().ok().and_then(|id| st.courses.get(&id))
    } else if let Some(sn) = o.get("courseshortname") {
        st.course(sn)
    } else {
        return reply(
            0,
            "Perform backup of the given course or course module.\n".into(),
            "",
        );
    };
    let Some(c) = course else {
        return reply(
            1,
            "!!! Can't find data record in database. !!!\n".into(),
            "",
        );
    };
    let Some(dest) = o.get("destination") else {
        return reply(
            0,
            "== Performing backup... ==\nBackup completed, the new file is listed in the backup area of the given course\n".into(),
            "",
        );
    };
    let dir = std::path::Path::new(dest);
    let probe = dir.join(".vessel-sync-fake-probe");
    if !dir.is_dir() || std::fs::write(&probe, b"").is_err() {
        return reply(
            0,
            "Destination directory does not exists or not writable.\n".into(),
            "",
        );
    }
    let _ = std::fs::remove_file(&probe);
    let stamp = base::clock::format_time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    );
    let stamp: String = stamp
        .chars()
        .filter(char::is_ascii_digit)
        .take(12)
        .collect();
    let (day, hm) = stamp.split_at(8.min(stamp.len()));
    let path = dir.join(format!(
        "backup-moodle2-course-{}-{}-{day}-{hm}{}.mbz",
        c.id,
        c.shortname.to_lowercase(),
        if st.backup_without_users { "-nu" } else { "" }
    ));
    let body = c
        .mbz
        .clone()
        .unwrap_or_else(|| format!("fake backup of course {}", c.id).into_bytes());
    if std::fs::write(&path, body).is_err() {
        return reply(1, "!!! Error writing the backup file !!!\n".into(), "");
    }
    reply(
        0,
        format!(
            "== Performing backup... ==\nWriting {}\nBackup completed.\n",
            path.display()
        ),
        "",
    )
}

/// What the fake reads from an .mbz: (shortname, fullname, idnumber).
fn read_mbz(bytes: &[u8]) -> Result<(String, String, String), bool> {
    // Err(true): not gzip at all; Err(false): damaged archive.
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(true);
    }
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut manifest = String::new();
    let mut course = String::new();
    let entries = archive.entries().map_err(|_| false)?;
    for e in entries {
        let mut e = e.map_err(|_| false)?;
        let name = e.path().map_err(|_| false)?.display().to_string();
        // Content files are binary: read bytes, look only at the XML.
        let mut raw = Vec::new();
        e.read_to_end(&mut raw).map_err(|_| false)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        match name.as_str() {
            "moodle_backup.xml" => manifest = text,
            "course/course.xml" => course = text,
            _ => {}
        }
    }
    let tag = |xml: &str, t: &str| -> String {
        xml.split_once(&format!("<{t}>"))
            .and_then(|(_, r)| r.split_once(&format!("</{t}>")))
            .map(|(v, _)| v.to_string())
            .unwrap_or_default()
    };
    let shortname = tag(&manifest, "original_course_shortname");
    if shortname.is_empty() {
        return Err(false);
    }
    Ok((
        shortname,
        tag(&manifest, "original_course_fullname"),
        tag(&course, "idnumber"),
    ))
}

fn restore(st: &mut State, o: &HashMap<String, String>) -> Value {
    let Some(file) = o.get("file") else {
        return reply(
            0,
            "Restore backup into provided category or course.\n".into(),
            "",
        );
    };
    let Ok(bytes) = std::fs::read(file) else {
        return reply(
            1,
            "!!! Sorry, the requested file could not be found !!!\n".into(),
            "",
        );
    };
    let category = o.get("categoryid").and_then(|c| c.parse::<i64>().ok());
    let Some(category) = category.filter(|c| st.categories.contains_key(c)) else {
        return reply(1, "!!! Incorrect category ID! !!!\n".into(), "");
    };
    let extract = format!(
        "== Extracting backup file to: {DATAROOT}/temp/backup/{:032x} ==\n",
        bytes.len() as u128 * 7919
    );
    let (shortname, fullname, idnumber) = match read_mbz(&bytes) {
        Ok(m) => m,
        Err(true) => {
            return reply(
                1,
                format!(
                    "{extract}== Preprocessing backup file ==\n!!! Exception - Call to a member function destroy() on null !!!\n"
                ),
                "",
            );
        }
        Err(false) => {
            return reply(
                1,
                format!("{extract}!!! Error processing archive file !!!\n"),
                "",
            );
        }
    };
    let mut sn = shortname.clone();
    let mut full = fullname.clone();
    let mut n = 0;
    while st.course(&sn).is_some() {
        n += 1;
        sn = format!("{shortname}_{n}");
        full = format!("{fullname} copy {n}");
    }
    let idnumber = if st.courses.values().any(|c| c.idnumber == idnumber) {
        String::new()
    } else {
        idnumber
    };
    let id = st.courses.keys().max().copied().unwrap_or(0) + 1;
    st.courses.insert(
        id,
        Course {
            id,
            shortname: sn,
            fullname: full,
            idnumber,
            category,
            visible: true,
            half_deleted: false,
            mbz: Some(bytes),
        },
    );
    reply(
        0,
        format!("{extract}== Preprocessing backup file ==\n== Restored course ID: {id} ==\n"),
        "",
    )
}

const DELETED: [&str; 14] = [
    "Completion tracking",
    "Grades, Items, Categories",
    "Outcomes",
    "Scales",
    "Settings",
    "Letters",
    "Blocks",
    "Forum",
    "Page",
    "Activity modules",
    "Content bank",
    "Enrolment methods",
    "Groupings",
    "Groups",
];

fn delete(st: &mut State, o: &HashMap<String, String>) -> Value {
    let Some(id) = o.get("courseid") else {
        return reply(0, "CLI script to delete a course.\n".into(), "");
    };
    let Some(c) = id
        .parse::<i64>()
        .ok()
        .and_then(|id| st.courses.get(&id))
        .cloned()
    else {
        return reply(1, String::new(), "Course not found\n");
    };
    let mut out = format!(
        "Deleting course id {}\nCourse name: {}\nShort name: {}\n",
        c.id, c.fullname, c.shortname
    );
    if !o.contains_key("non-interactive") {
        out.push_str("\nAre you sure you wish to delete this course? (y/N)\n: ");
        return reply(0, out, "");
    }
    if c.id == 1 {
        out.push_str("Updating course count in categories...\nDone!\n");
        return reply(0, out, "");
    }
    let crash = o.contains_key("disablerecyclebin") || st.crash_next_delete;
    if crash {
        st.crash_next_delete = false;
        if o.contains_key("disablerecyclebin") {
            out.push_str("Disabling recycle bin...\n");
        }
    }
    let parts: Vec<&str> = DELETED
        .iter()
        .copied()
        .filter(|p| !(c.half_deleted && matches!(*p, "Forum" | "Page")))
        .collect();
    for p in parts {
        out.push_str(&format!("++ Deleted - {p} ++\n"));
    }
    st.enrolments.retain(|(_, course, _)| *course != c.id);
    if crash {
        if let Some(course) = st.courses.get_mut(&c.id) {
            course.half_deleted = true;
        }
        out.push_str("!!! Exception - Call to undefined function course_get_format() !!!\n");
        return reply(1, out, "");
    }
    st.courses.remove(&c.id);
    out.push_str("Updating course count in categories...\nDone!\n");
    reply(0, out, "")
}

/// A small course backup in Moodle's `.mbz` layout (gzip-compressed tar with
/// `moodle_backup.xml` and `course/course.xml`), enough for this fake's restore (the demo).
pub fn sample_mbz(shortname: &str, fullname: &str) -> std::io::Result<Vec<u8>> {
    let manifest = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<moodle_backup><information><original_course_fullname>{fullname}</original_course_fullname><original_course_shortname>{shortname}</original_course_shortname></information></moodle_backup>\n"
    );
    let course = format!(
        "<course><shortname>{shortname}</shortname><fullname>{fullname}</fullname><idnumber>{shortname}</idnumber></course>\n"
    );
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, body) in [
        ("moodle_backup.xml", manifest),
        ("course/course.xml", course),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, body.as_bytes())?;
    }
    tar.into_inner()?.finish()
}

fn upload_users(st: &mut State, o: &HashMap<String, String>) -> Value {
    let Some(file) = o.get("file") else {
        return reply(1, String::new(), "Missing argument: file\n");
    };
    let Ok(text) = std::fs::read_to_string(file) else {
        return reply(
            1,
            String::new(),
            &format!("File {file} does not exist or is not readable\n"),
        );
    };
    let update = o.get("uutype").map(String::as_str) == Some("2");
    let make_password = o.get("uupasswordnew").map(String::as_str) == Some("1");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map(|h| h.iter().map(str::to_string).collect())
        .unwrap_or_default();
    let (mut created, mut updated, mut errors) = (0, 0, 0);
    let mut out = String::new();
    // Moodle 5.0's report: `Line N` (the header is line 1), then the row's status lines and
    // its fields' warnings and errors, two spaces in; the conformance test holds it to that.
    for (n, rec) in reader.records().flatten().enumerate() {
        out.push_str(&format!("Line {}\n", n + 2));
        let get = |k: &str| {
            header
                .iter()
                .position(|h| h == k)
                .and_then(|i| rec.get(i))
                .unwrap_or("")
                .to_string()
        };
        let username = get("username");
        let email = get("email");
        let existing = st.user(&username).map(|u| u.id);
        let id = match existing {
            Some(id) if update => {
                if let Some(u) = st.users.get_mut(&id) {
                    u.firstname = get("firstname");
                    u.lastname = get("lastname");
                    u.idnumber = get("idnumber");
                    match get("suspended").as_str() {
                        "1" => u.suspended = true,
                        "0" => u.suspended = false,
                        _ => {}
                    }
                }
                updated += 1;
                out.push_str("  User updated\n");
                id
            }
            Some(_) => {
                out.push_str("  Warning: User not added - already registered\n");
                continue;
            }
            None => {
                // `record_exists('user', ['email' => ...])`: exact on PostgreSQL (a MariaDB
                // collation may ignore case; the agent refuses either before the CLI runs).
                if st.users.values().any(|u| u.email == email) {
                    out.push_str(
                        "  Error: User not added - error\n  Error: Email address: Duplicate address\n",
                    );
                    errors += 1;
                    continue;
                }
                if get("password").is_empty() && !make_password {
                    out.push_str("  Error: User not added - error\n  Error: Password: Required\n");
                    errors += 1;
                    continue;
                }
                out.push_str("  New user\n");
                if !email.contains('@') {
                    out.push_str("  Warning: Email address: Invalid email address\n");
                }
                let id = st.add_user(&username, &email, &get("idnumber"));
                if let Some(u) = st.users.get_mut(&id) {
                    u.firstname = get("firstname");
                    u.lastname = get("lastname");
                    u.password = get("password");
                    u.suspended = get("suspended") == "1";
                }
                created += 1;
                id
            }
        };
        for (i, h) in header.iter().enumerate() {
            let Some(course) = h
                .strip_prefix("course")
                .filter(|n| n.parse::<u32>().is_ok())
                .and(rec.get(i))
            else {
                continue;
            };
            if course.is_empty() {
                continue;
            }
            match st.course(course).map(|c| c.id) {
                Some(cid) => {
                    st.enrolments.insert((id, cid, 5));
                }
                None => out.push_str(&format!(
                    "  Error: Enrolments: Unknown course named \"{course}\"\n"
                )),
            }
        }
    }
    out.push_str(&format!(
        "{}\nUsers created: {created}\nUsers updated: {updated}\nUsers having a weak password: 0\nErrors: {errors}\n",
        "-".repeat(79)
    ));
    reply(0, out, "")
}

/// A script's reply as the fake `php` reads it: `CODE\nSTDOUT_LEN\nSTDERR_LEN\n` and then the
/// bytes of stdout and stderr.
pub(super) fn raw(reply: &Value) -> String {
    let out = reply["stdout"].as_str().unwrap_or_default();
    let err = reply["stderr"].as_str().unwrap_or_default();
    let code = reply["code"].as_i64().unwrap_or(70);
    format!("{code}\n{}\n{}\n{out}{err}", out.len(), err.len())
}
