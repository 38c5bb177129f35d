//! `bench delta`: bytes on the wire for a course update sent whole and by content, and the time
//! to rebuild the backup on board. A generated course (a real backup with `--size-mb` MB of
//! incompressible content in 300 files, like videos and PDFs) gets a new version that changes
//! 2 files and the page text; the real backups of `shared/moodle/mbz/` (which hold no content
//! files) show what the skeleton alone costs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use moodle::delta;
use testkit::course::{GenFile, course_with_files};
use wire::envelope::{self, CommandEntry, Draft, Kind, SecretKey, Source};

use super::rss::{peak_rss_mb, reset_peak_rss};

fn draft(mbz: &Path) -> Draft {
    let member = format!(
        "files/{}",
        mbz.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    Draft {
        kind: Kind::Commands,
        sender: "bench".into(),
        recipient: "mv-bench".into(),
        sequence: 1,
        not_before: None,
        expires: None,
        commands: vec![CommandEntry {
            id: String::new(),
            kind: "restore_course".into(),
            args: serde_json::from_value(json!({"shortname": "BENCH", "category": "DECK"}))
                .unwrap_or_default(),
            files: vec![member.clone()],
        }],
        files: vec![(member, Source::Path(mbz.to_path_buf()))],
        id: None,
    }
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Full and by-content bundle of `new` (the recipients hold `base`): (full bytes, delta bytes,
/// the split work directory).
fn both(new: &Path, base: &Path, dir: &Path, key: &SecretKey) -> Result<(u64, u64), String> {
    let full = dir.join("full.vsb");
    envelope::write_envelope(&draft(new), key, 0, &full).map_err(|e| e.to_string())?;
    let mut d = draft(new);
    delta::split_draft(&mut d, &[base.to_path_buf()], &dir.join("split"))?;
    let by_content = dir.join("delta.vsb");
    envelope::write_envelope(&d, key, 0, &by_content).map_err(|e| e.to_string())?;
    Ok((size(&full), size(&by_content)))
}

/// Runs the benchmark: (figures, text).
pub fn run(size_mb: u64) -> Result<(serde_json::Value, String), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = tmp.path();
    let key = SecretKey::from_seed([9u8; 32]);
    let total = size_mb.max(1) << 20;
    let n = 300u64;
    let files = |changed: bool| -> Vec<GenFile> {
        (0..n)
            .map(|i| GenFile {
                name: format!("unit-{i:03}.mp4"),
                size: total / n,
                seed: if changed && i < 2 { 10_000 + i } else { i + 1 },
            })
            .collect()
    };
    let v1 = dir.join("v1.mbz");
    let v2 = dir.join("v2.mbz");
    let io = |e: std::io::Error| e.to_string();
    course_with_files(testkit::course::base(), &files(false), 1, &v1).map_err(io)?;
    course_with_files(testkit::course::base(), &files(true), 2, &v2).map_err(io)?;
    let gen_dir = dir.join("gen");
    std::fs::create_dir_all(&gen_dir).map_err(io)?;
    let t = Instant::now();
    let (full, by_content) = both(&v2, &v1, &gen_dir, &key)?;
    let build_s = t.elapsed().as_secs_f64();

    // On board: the store holds v1's files; the delta brings the rest.
    let store_dir = dir.join("store");
    let held = delta::split(&v1, &HashSet::new(), &store_dir)?;
    let mut store: HashMap<String, PathBuf> =
        held.carried.into_iter().map(|(c, p)| (c.sha1, p)).collect();
    let split_dir = gen_dir.join("split").join("split-0");
    let delta_file = split_dir.join("v2.mbz.delta");
    for (c, p) in delta::split(&v2, &store.keys().cloned().collect(), &dir.join("carried"))?.carried
    {
        store.insert(c.sha1, p);
    }
    reset_peak_rss();
    let t = Instant::now();
    let rebuilt = dir.join("rebuilt.mbz");
    delta::rebuild(&delta_file, &mut |c| store.get(&c.sha1).cloned(), &rebuilt)
        .map_err(|e| e.to_string())?;
    let rebuild_s = t.elapsed().as_secs_f64();
    let rebuild_rss = peak_rss_mb().unwrap_or(0.0);

    let mut real = Vec::new();
    for (name, bytes) in testkit::course::REAL {
        let d = dir.join(format!("real-{name}"));
        std::fs::create_dir_all(&d).map_err(io)?;
        let path = d.join(name);
        std::fs::write(&path, bytes).map_err(io)?;
        let (f, b) = both(&path, &path, &d, &key)?;
        real.push(json!({"backup": name, "full_bytes": f, "by_content_bytes": b}));
    }
    let ratio = full as f64 / by_content.max(1) as f64;
    let v2_mb = size(&v2) as f64 / 1e6;
    let figures = json!({
        "benchmark": "delta",
        "course_mb": v2_mb,
        "content_files": n,
        "changed_files": 2,
        "full_bundle_bytes": full,
        "delta_bundle_bytes": by_content,
        "ratio": ratio,
        "build_both_s": build_s,
        "rebuild_s": rebuild_s,
        "rebuild_mb_per_s": v2_mb / rebuild_s.max(1e-9),
        "rebuild_peak_rss_mb": rebuild_rss,
        "real": real,
    });
    let mut text = format!(
        "bench delta: a {v2_mb:.0} MB course, {n} content files, the new version changes 2 files and the XML\n  full bundle        {full:>12} bytes\n  by content         {by_content:>12} bytes   ({ratio:.0}x smaller)\n  rebuild on board   {rebuild_s:>12.2} s       ({:.0} MB/s, peak RSS {rebuild_rss:.0} MB)\n  real backups (no content files; the skeleton is all):\n",
        v2_mb / rebuild_s.max(1e-9)
    );
    for r in &real {
        text.push_str(&format!(
            "    {:<36} full {:>6} B, by content {:>6} B\n",
            r["backup"].as_str().unwrap_or(""),
            r["full_bytes"],
            r["by_content_bytes"]
        ));
    }
    Ok((figures, text))
}
