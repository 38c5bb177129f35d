//! A course update sent by content, restored by a real Moodle: the first version restored whole
//! (its content files kept on board), the second built by `moodle::delta::split_draft` against
//! the first, carrying only the changed file and the XML. Moodle must end with the same
//! activities as the first version and exactly the second version's files, by content hash,
//! and the second version's page text.

use testkit::course::{GenFile, base, course_with_files};
use vessel::store::CommandState;

use super::Site;
use crate::support::{VESSEL, cmd, draft};

crate::on_both!(a_course_sent_by_content_restores_in_real_moodle_with_the_new_files_by_hash);

fn files(changed: bool) -> Vec<GenFile> {
    (0..6)
        .map(|i| GenFile {
            name: format!("handout-{i}.pdf"),
            size: 20_000 + i * 1000,
            seed: if changed && i == 2 { 700 } else { i + 1 },
        })
        .collect()
}

fn restore(id: &str, shortname: &str, category: &str, file: &str) -> wire::envelope::CommandEntry {
    cmd(
        "restore_course",
        id,
        serde_json::json!({"shortname": shortname, "idnumber": shortname, "category": category, "visible": true, "file": file}),
        &[file],
    )
}

fn a_course_sent_by_content_restores_in_real_moodle_with_the_new_files_by_hash(
    db: testkit::realmoodle::Db,
) {
    let s = Site::new(db, &format!("dl{}", db.name()));
    s.category("DECK");
    let work = tempfile::tempdir().unwrap();
    let v1 = work.path().join("v1.mbz");
    let v2 = work.path().join("v2.mbz");
    course_with_files(base(), &files(false), 1, &v1).unwrap();
    let mut sums = course_with_files(base(), &files(true), 2, &v2).unwrap();
    sums.sort();
    let (c1, c2) = (s.name("V1"), s.name("V2"));
    s.send(
        1,
        vec![restore("v1", &c1, &s.name("DECK"), "files/v1.mbz")],
        vec![("files/v1.mbz", std::fs::read(&v1).unwrap())],
    );
    s.once();
    s.expect("v1", CommandState::Done);
    let mut d = draft(
        VESSEL,
        2,
        vec![restore("v2", &c2, &s.name("DECK"), "files/v2.mbz")],
        vec![("files/v2.mbz", wire::envelope::Source::Path(v2.clone()))],
    );
    let notes = moodle::delta::split_draft(
        &mut d,
        std::slice::from_ref(&v1),
        &work.path().join("split"),
    )
    .unwrap();
    assert_eq!((notes[0].content, notes[0].carried), (6, 1), "{notes:?}");
    let built = s.v.bundle("0002.vsb", d);
    s.v.drop_in(&built, "0002.vsb");
    s.once();
    let note = s.expect("v2", CommandState::Done);
    let hashes = |course: &str| -> Vec<String> {
        s.rows(&format!(
            "SELECT f.contenthash FROM mdl_files f JOIN mdl_context x ON x.id = f.contextid AND x.contextlevel = 70 \
             JOIN mdl_course_modules cm ON cm.id = x.instanceid JOIN mdl_course c ON c.id = cm.course \
             WHERE c.shortname = '{course}' AND f.component = 'mod_page' AND f.filearea = 'content' AND f.filename <> '.' \
             ORDER BY f.contenthash"
        ))
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
    };
    assert_eq!(hashes(&c2), sums, "v2's files, by hash: {note}");
    let modules = |course: &str| {
        s.rows(&format!(
            "SELECT m.name, cm.idnumber FROM mdl_course_modules cm JOIN mdl_modules m ON m.id = cm.module \
             JOIN mdl_course c ON c.id = cm.course WHERE c.shortname = '{course}' ORDER BY m.name, cm.idnumber"
        ))
    };
    assert_eq!(modules(&c2), modules(&c1), "the same activities");
    let page = s.value(&format!(
        "SELECT p.content FROM mdl_page p JOIN mdl_course c ON c.id = p.course WHERE c.shortname = '{c2}' AND p.name = 'Personal Survival Techniques'"
    ));
    assert!(page.contains("(version 2)"), "{page}");
}
