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

/// Writes a secret (a key, a token, a password) readable by its owner only (mode 0600),
/// replacing what was there.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)
}

/// Refuses a secret file that other users can read or write, or its group write: `what` names
/// it in the error, which says how to fix it. (Readable by the owner's group is allowed: a
/// root-owned key with mode 0640 and the service's group is a common way to hand it over.)
pub fn check_private(what: &str, path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o037 != 0 {
        return Err(format!(
            "{what} {} can be read or written by other users (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        ));
    }
    Ok(())
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

/// Hex SHA-256 of a file, read in a stream (a file of any size takes a buffer's memory).
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod private_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        write_private(&p, b"secret").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(check_private("[shore] tls_key", &p).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(
            check_private("[shore] tls_key", &p).is_ok(),
            "group-readable is allowed"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_private("[shore] tls_key", &p).unwrap_err();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );
    }
}
