//! Course updates by content: a real backup with generated content files, bundles built by
//! `vessel-sync bundle build`, queued with `shore push` on a real shore over HTTPS, restored by
//! the agent against the stand-in Moodle. A new version crosses the link as what changed; the
//! archive Moodle receives is byte for byte the new version's; a vessel whose content store was
//! wiped, or holds a damaged copy, asks shore in its next batch and still restores; a crash
//! while the backup is rebuilt leaves no course and no half-written file.

use std::io::Read;
use std::path::{Path, PathBuf};

use testkit::course::{GenFile, course_with_files};
use testkit::fake::{FakeMoodle, TOKEN};
use vessel::store::CommandState;

use crate::support::VESSEL;
use crate::support::shore::{Shore, linked_vessel, sync};

fn fixture() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        here.join("tests/fixtures/moodle/mbz"),
        here.join("../shared/moodle/mbz"),
    ]
    .into_iter()
    .map(|d| d.join("course-SAFETY-101-with-users.mbz"))
    .find(|p| p.exists())
    .unwrap()
}

/// 24 files of 48 KiB; `changed` gives file 5 other bytes.
fn files(changed: bool) -> Vec<GenFile> {
    (0..24)
        .map(|i| GenFile {
            name: format!("lesson-{i:02}.mp4"),
            size: 48 << 10,
            seed: if changed && i == 5 { 1005 } else { i + 1 },
        })
        .collect()
}

fn tar_of(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut v)
        .unwrap();
    v
}

struct Fleet {
    shore: Shore,
    moodle: FakeMoodle,
    v: crate::support::Vessel,
    work: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Self {
        let mut shore = Shore::new();
        shore.start();
        let url = format!("https://127.0.0.1:{}", shore.port);
        let v = linked_vessel(&shore, &url, "");
        let moodle = FakeMoodle::start().unwrap();
        let work = tempfile::tempdir().unwrap();
        let (php, code) = moodle.php(work.path()).unwrap();
        crate::progress::append(
            &v,
            &format!(
                "[moodle]\nurl = \"{}\"\ntoken_file = \"moodle.token\"\nmoodle_dir = \"{}\"\nphp = \"{}\"\ndataroot = \"moodledata\"\n",
                moodle.url(),
                code.display(),
                php.display()
            ),
        );
        std::fs::write(v.path("moodle.token"), TOKEN).unwrap();
        std::fs::create_dir_all(v.path("moodledata")).unwrap();
        Self {
            shore,
            moodle,
            v,
            work,
        }
    }

    fn course(&self, name: &str, version: u32, changed: bool) -> PathBuf {
        let out = self.work.path().join(name);
        course_with_files(
            &std::fs::read(fixture()).unwrap(),
            &files(changed),
            version,
            &out,
        )
        .unwrap();
        out
    }

    /// `bundle build` of one restore_course, then `shore push`; returns the bundle's size.
    fn push(&self, seq: u64, id: &str, shortname: &str, mbz: &Path, base: Option<&Path>) -> u64 {
        let spec = self.work.path().join(format!("{id}.toml"));
        std::fs::write(
            &spec,
            format!(
                "recipient = \"{VESSEL}\"\nsequence = {seq}\n[[command]]\ntype = \"restore_course\"\nid = \"{id}\"\nfiles = [\"{}\"]\nargs = {{ shortname = \"{shortname}\", category = \"DECK\" }}\n",
                mbz.display()
            ),
        )
        .unwrap();
        let out = self.work.path().join(format!("{id}.vsb"));
        let key = self.shore.path("keys/ops.key");
        let mut args = vec![
            "bundle",
            "build",
            "--spec",
            spec.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if let Some(b) = base {
            args.extend(["--base", b.to_str().unwrap()]);
        }
        let o = self.v.run(&args);
        assert!(
            o.status.success(),
            "bundle build: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = self.shore.run(&["push", out.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "push: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::metadata(&out).unwrap().len()
    }

    /// One sync; the bytes of the bundles now in the inbox.
    fn sync(&self) -> u64 {
        let o = sync(&self.v);
        assert!(
            o.status.success(),
            "sync: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        walk(&self.v.inbox())
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    fn command(&self, id: &str) -> (CommandState, String) {
        self.v
            .find_command(id)
            .unwrap_or_else(|| panic!("no command {id}"))
    }

    fn restored(&self, shortname: &str) -> Option<Vec<u8>> {
        let st = self.moodle.state();
        st.course(shortname).and_then(|c| c.mbz.clone())
    }

    /// v1 restored whole (its content kept on board).
    fn with_v1(&self) -> PathBuf {
        let v1 = self.course("v1.mbz", 1, false);
        self.push(1, "v1", "SAFE-V1", &v1, None);
        self.sync();
        self.v.once();
        let (state, note) = self.command("v1");
        assert_eq!(state, CommandState::Done, "{note}");
        let (files, _, needed) = self.v.store().content_summary().unwrap();
        assert_eq!((files, needed), (24, 0), "v1's content is kept on board");
        v1
    }
}

#[test]
fn a_course_update_crosses_the_link_as_only_what_changed_and_moodle_gets_the_exact_archive() {
    let f = Fleet::new();
    f.with_v1();
    let v2 = f.course("v2.mbz", 2, true);
    let full = f.push(2, "v2", "SAFE-V2", &v2, None);
    // Shore sends this vessel a copy without the 23 files it already holds.
    let got = f.sync();
    assert!(
        got * 8 < full,
        "the vessel downloaded {got} bytes of a {full}-byte bundle"
    );
    f.v.once();
    let (state, note) = f.command("v2");
    assert_eq!(state, CommandState::Done, "{note}");
    let restored = f.restored("SAFE-V2").expect("v2 restored");
    assert_eq!(
        tar_of(&restored),
        tar_of(&std::fs::read(&v2).unwrap()),
        "Moodle got the archive of v2, byte for byte"
    );
    // v2's one new file joined the store; nothing is owed.
    assert_eq!(f.v.store().content_summary().unwrap().0, 25);
    assert_eq!(f.v.store().content_summary().unwrap().2, 0);

    // The same version again, to a vessel whose store is gone: skipped, nothing fetched.
    std::fs::remove_dir_all(f.v.path("state/content")).unwrap();
    let v1 = f.work.path().join("v1.mbz");
    f.push(3, "v2-again", "SAFE-V2", &v2, Some(&v1));
    f.sync();
    f.v.once();
    let (state, note) = f.command("v2-again");
    assert_eq!(state, CommandState::Done, "{note}");
    assert!(note.contains("already restored from this backup"), "{note}");
    assert_eq!(
        f.v.store().content_summary().unwrap().2,
        0,
        "nothing asked of shore"
    );
}

#[test]
fn a_delta_to_a_vessel_whose_store_was_wiped_asks_shore_and_still_restores() {
    let f = Fleet::new();
    let v1 = f.with_v1();
    std::fs::remove_dir_all(f.v.path("state/content")).unwrap();
    let v2 = f.course("v2.mbz", 2, true);
    // Built against the base the operator believes the fleet holds: one file carried.
    let size = f.push(2, "v2", "SAFE-V2", &v2, Some(&v1));
    assert!(size < 200 << 10, "the delta bundle is {size} bytes");
    f.sync();
    // One agent pass: the restore waits for the 23 files, the pass's sync asks shore for them
    // in a batch, shore's answer comes back in the same exchange, and the restore runs.
    let said = f.v.once();
    assert!(
        said.contains("waiting      restore_course v2: 23 of the 24 content files"),
        "{said}"
    );
    let (state, note) = f.command("v2");
    assert_eq!(state, CommandState::Done, "{note}\n{said}");
    let (_, answered, open) = f.shore.db().content_state(VESSEL).unwrap();
    assert_eq!((answered, open), (23, 0));
    assert_eq!(f.v.audit("bundle_supplied").len(), 1);
    assert_eq!(
        tar_of(&f.restored("SAFE-V2").unwrap()),
        tar_of(&std::fs::read(&v2).unwrap())
    );
    assert_eq!(f.v.store().content_summary().unwrap().2, 0, "nothing owed");
}

#[test]
fn a_tampered_file_in_the_store_is_caught_and_fetched_again() {
    let f = Fleet::new();
    f.with_v1();
    // Alter one kept file that v2 shares with v1, keeping its size.
    let sha1 = testkit::course::sha1_of(&files(false)[7]);
    let kept = f.v.path(&format!("state/content/{}/{sha1}", &sha1[..2]));
    let mut bytes = std::fs::read(&kept).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&kept, bytes).unwrap();
    let v2 = f.course("v2.mbz", 2, true);
    f.push(2, "v2", "SAFE-V2", &v2, None);
    f.sync();
    let said = f.v.once();
    assert!(
        said.contains("waiting      restore_course v2: 1 of the 24 content files"),
        "{said}"
    );
    let (state, note) = f.command("v2");
    assert_eq!(state, CommandState::Done, "{note}");
    assert_eq!(
        tar_of(&f.restored("SAFE-V2").unwrap()),
        tar_of(&std::fs::read(&v2).unwrap())
    );
}

#[test]
fn a_crash_while_the_backup_is_rebuilt_leaves_nothing_half_restored() {
    for point in base::failpoint::DELTA {
        let f = Fleet::new();
        f.with_v1();
        let v2 = f.course("v2.mbz", 2, true);
        f.push(2, "v2", "SAFE-V2", &v2, None);
        f.sync();
        let o = f.v.run_env(
            &["agent", "--once", "--config", f.v.config.to_str().unwrap()],
            &[("VESSEL_SYNC_FAILPOINT", point)],
        );
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{point}: the agent was killed there"
        );
        assert!(f.restored("SAFE-V2").is_none(), "{point}: no course yet");
        f.v.once();
        let (state, note) = f.command("v2");
        assert_eq!(state, CommandState::Done, "{point}: {note}");
        let restores = f
            .moodle
            .state()
            .cli_runs
            .iter()
            .filter(|a| a[0].ends_with("restore_backup.php"))
            .count();
        assert_eq!(restores, 2, "{point}: v1 and v2, each once");
        assert_eq!(
            tar_of(&f.restored("SAFE-V2").unwrap()),
            tar_of(&std::fs::read(&v2).unwrap()),
            "{point}"
        );
        let leftovers: Vec<_> = walk(&f.v.path("state"))
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".part"))
            .collect();
        assert!(leftovers.is_empty(), "{point}: {leftovers:?}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
