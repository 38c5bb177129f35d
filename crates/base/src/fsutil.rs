//! Durable file operations: atomic writes (temporary name, fsync, rename, fsync the directory)
//! and moves that survive crossing file systems (an inbox on a USB stick, an archive on disk).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temporary name a writer uses beside `path`: `.NAME.part`, which every reader ignores.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.part"))
}

/// Flushes a directory entry change (create, rename, unlink) to disk.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `data` to `path` atomically: readers see the old file or the whole new one.
pub fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fsync_dir(parent(path))
}

/// Renames a finished temporary file into place and makes the rename durable.
pub fn commit_temp(tmp: &Path, path: &Path) -> io::Result<()> {
    fs::rename(tmp, path)?;
    fsync_dir(parent(path))
}

/// Moves a file, falling back to copy + fsync + remove across file systems. The destination
/// appears atomically either way.
pub fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Ok(()) => {
            fsync_dir(parent(to))?;
            fsync_dir(parent(from))
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let tmp = temp_path(to);
            {
                let mut src = File::open(from)?;
                let mut dst = File::create(&tmp)?;
                io::copy(&mut src, &mut dst)?;
                dst.sync_all()?;
            }
            commit_temp(&tmp, to)?;
            fs::remove_file(from)?;
            fsync_dir(parent(from))
        }
        Err(e) => Err(e),
    }
}

/// A path in `dir` named `name` that does not exist yet (adds `.1`, `.2`, ... before clashing).
pub fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    (1..)
        .map(|n| dir.join(format!("{name}.{n}")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}
