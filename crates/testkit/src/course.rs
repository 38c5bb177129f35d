//! A generated course backup with content files, for the delta tests and `bench delta`: a real
//! Moodle backup (`SAFETY-101`) with generated files added to its first page's content area,
//! as Moodle itself writes them (`files.xml` entries, the page's `inforef.xml` file references,
//! `files/xx/SHA1` members, the `.ARCHIVE_INDEX` recounted), so a real Moodle restores them.
//! File bytes come from a seeded generator (incompressible, like video): the same seed gives
//! the same file, so two versions share every file whose seed they share.

use std::io::{self, Read, Write};
use std::path::Path;

use sha1::{Digest, Sha1};

/// The real backups of `shared/moodle/mbz/` (copies in `tests/fixtures/moodle/mbz/`), for the
/// benchmark on board: (file name, bytes).
pub static REAL: &[(&str, &[u8])] = &[
    (
        "course-SAFETY-101-with-users.mbz",
        include_bytes!("../../../tests/fixtures/moodle/mbz/course-SAFETY-101-with-users.mbz"),
    ),
    (
        "course-ERM-110-with-users.mbz",
        include_bytes!("../../../tests/fixtures/moodle/mbz/course-ERM-110-with-users.mbz"),
    ),
    (
        "course-ERM-110-no-users.mbz",
        include_bytes!("../../../tests/fixtures/moodle/mbz/course-ERM-110-no-users.mbz"),
    ),
];

/// The backup generated courses are made from (`SAFETY-101`, with users).
pub fn base() -> &'static [u8] {
    REAL[0].1
}

/// One generated content file.
#[derive(Debug, Clone)]
pub struct GenFile {
    /// Its file name in Moodle (`safety-04.mp4`).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// What it is made of.
    pub seed: u64,
}

struct Gen {
    state: u64,
    left: u64,
}

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX))
            & !7;
        let n = if n == 0 {
            buf.len().min(self.left as usize)
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let b = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn content(f: &GenFile) -> Gen {
    Gen {
        state: f.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        left: f.size,
    }
}

/// The SHA-1 (Moodle's content hash) of a generated file.
pub fn sha1_of(f: &GenFile) -> String {
    let mut h = Sha1::new();
    let _ = io::copy(&mut content(f), &mut h);
    hex::encode(h.finalize())
}

fn attr(xml: &str, name: &str) -> Option<String> {
    let at = xml.find(&format!("{name}=\""))? + name.len() + 2;
    Some(xml[at..].split('"').next()?.to_string())
}

/// Writes to `out` the backup `base` (its bytes) with `files` in its first page's content area, and
/// `version` written into that page's text (so two versions differ in XML too). Returns the
/// SHA-1 of each file, in order.
pub fn course_with_files(
    base: &[u8],
    files: &[GenFile],
    version: u32,
    out: &Path,
) -> io::Result<Vec<String>> {
    let mut members: Vec<(String, bool, u64, Vec<u8>)> = Vec::new();
    let gz = flate2::read::GzDecoder::new(base);
    let mut archive = tar::Archive::new(gz);
    for e in archive.entries()? {
        let mut e = e?;
        let name = e.path()?.to_string_lossy().into_owned();
        let dir = e.header().entry_type().is_dir();
        let mtime = e.header().mtime().unwrap_or(0);
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        members.push((name, dir, mtime, data));
    }
    let page_dir = members
        .iter()
        .find(|(n, ..)| n.starts_with("activities/page_") && n.ends_with("/page.xml"))
        .map(|(n, ..)| n.trim_end_matches("page.xml").to_string())
        .ok_or_else(|| io::Error::other("the base backup has no page activity"))?;
    let page_xml = members
        .iter()
        .find(|(n, ..)| *n == format!("{page_dir}page.xml"))
        .map(|(_, _, _, d)| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default();
    let context = attr(&page_xml, "contextid").unwrap_or_else(|| "1".into());
    let sums: Vec<String> = files.iter().map(sha1_of).collect();
    let mut files_xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<files>\n");
    let mut refs = String::from("  <fileref>\n");
    for (i, (f, sum)) in files.iter().zip(&sums).enumerate() {
        let id = 9000 + i;
        files_xml.push_str(&format!(
            "  <file id=\"{id}\">\n    <contenthash>{sum}</contenthash>\n    <contextid>{context}</contextid>\n    <component>mod_page</component>\n    <filearea>content</filearea>\n    <itemid>0</itemid>\n    <filepath>/</filepath>\n    <filename>{}</filename>\n    <userid>$@NULL@$</userid>\n    <filesize>{}</filesize>\n    <mimetype>application/octet-stream</mimetype>\n    <status>0</status>\n    <timecreated>1795308001</timecreated>\n    <timemodified>1795308001</timemodified>\n    <source>{}</source>\n    <author>$@NULL@$</author>\n    <license>$@NULL@$</license>\n    <sortorder>0</sortorder>\n    <repositorytype>$@NULL@$</repositorytype>\n    <repositoryid>$@NULL@$</repositoryid>\n    <reference>$@NULL@$</reference>\n  </file>\n",
            f.name, f.size, f.name
        ));
        refs.push_str(&format!("    <file>\n      <id>{id}</id>\n    </file>\n"));
    }
    files_xml.push_str("</files>");
    refs.push_str("  </fileref>\n");
    for (name, _, _, data) in members.iter_mut() {
        if name == "files.xml" {
            *data = files_xml.clone().into_bytes();
        } else if *name == format!("{page_dir}inforef.xml") {
            let text =
                String::from_utf8_lossy(data).replace("</inforef>", &format!("{refs}</inforef>"));
            *data = text.into_bytes();
        } else if *name == format!("{page_dir}page.xml") {
            let text = String::from_utf8_lossy(data).replacen(
                "</content>",
                &format!(" (version {version})</content>"),
                1,
            );
            *data = text.into_bytes();
        }
    }
    let mut dirs: Vec<String> = vec!["files/".into()];
    for s in &sums {
        let d = format!("files/{}/", &s[..2]);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    // Moodle's index: a count line, then path, d|f, size, mtime per entry.
    let mut index_lines = Vec::new();
    for (name, dir, mtime, data) in &members {
        if name == ".ARCHIVE_INDEX" {
            continue;
        }
        index_lines.push(if *dir {
            format!("{name}\td\t0\t?")
        } else {
            format!("{name}\tf\t{}\t{mtime}", data.len())
        });
    }
    for d in &dirs {
        index_lines.push(format!("{d}\td\t0\t?"));
    }
    for (f, s) in files.iter().zip(&sums) {
        index_lines.push(format!("files/{}/{s}\tf\t{}\t1795308001", &s[..2], f.size));
    }
    let index = format!(
        "Moodle archive file index. Count: {}\n{}\n",
        index_lines.len(),
        index_lines.join("\n")
    );
    let file = std::fs::File::create(out)?;
    let gz = flate2::write::GzEncoder::new(io::BufWriter::new(file), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let put = |b: &mut tar::Builder<_>,
               name: &str,
               dir: bool,
               mtime: u64,
               size: u64,
               data: &mut dyn Read|
     -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mtime(mtime);
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_cksum();
        b.append_data(&mut h, name, data)
    };
    put(
        &mut b,
        ".ARCHIVE_INDEX",
        false,
        1795308001,
        index.len() as u64,
        &mut index.as_bytes(),
    )?;
    for (name, dir, mtime, data) in &members {
        if name == ".ARCHIVE_INDEX" {
            continue;
        }
        put(
            &mut b,
            name,
            *dir,
            *mtime,
            data.len() as u64,
            &mut &data[..],
        )?;
    }
    for d in &dirs {
        put(&mut b, d, true, 1795308001, 0, &mut io::empty())?;
    }
    for (f, s) in files.iter().zip(&sums) {
        put(
            &mut b,
            &format!("files/{}/{s}", &s[..2]),
            false,
            1795308001,
            f.size,
            &mut content(f),
        )?;
    }
    let gz = b.into_inner()?;
    let mut w = gz.finish()?;
    w.flush()?;
    Ok(sums)
}
