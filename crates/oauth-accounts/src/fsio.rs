//! File plumbing: reading, the durable replace (temp file in the same directory, fsync, rename,
//! directory fsync), and `flock(2)` lock files.

use std::fs::{self, File, OpenOptions, Permissions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// The mode of a file this crate creates.
pub(crate) const NEW_FILE_MODE: u32 = 0o600;

/// A file's bytes and what we keep of its metadata.
pub(crate) struct Snapshot {
    pub(crate) bytes: Vec<u8>,
    pub(crate) modified: Option<DateTime<Utc>>,
}

/// Reads a file; `None` when it does not exist. A directory or other non-file is an error.
pub(crate) fn read(path: &Path) -> io::Result<Option<Snapshot>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(Some(Snapshot {
        bytes,
        modified: meta.modified().ok().map(DateTime::<Utc>::from),
    }))
}

/// Reads only the bytes (for the compare-and-set re-read).
pub(crate) fn read_bytes(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Per-process counter making temporary file names unique.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fully written and flushed temporary file next to its target, not yet renamed over it.
/// Dropping it without [`commit`](Staged::commit) removes it (it holds secrets).
pub(crate) struct Staged {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

/// The temporary-file prefix of `target` (`.<name>.`): a dotfile, so directory scans skip it.
fn tmp_prefix(target: &Path) -> String {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.")
}

/// Writes `bytes` to a new temporary file in `target`'s directory with permission bits `mode`
/// (set explicitly, so the umask does not change them), and flushes it to disk.
///
/// A `target` that is a symbolic link is resolved first: the file it points to is replaced and the
/// link stays a link (users link `~/.gemini/oauth_creds.json` into a synced directory).
pub(crate) fn stage(target: &Path, bytes: &[u8], mode: u32) -> io::Result<Staged> {
    let resolved;
    let target = match fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => {
            resolved = fs::canonicalize(target)?;
            resolved.as_path()
        }
        _ => target,
    };
    let dir = parent(target);
    let prefix = tmp_prefix(target);
    let tmp = dir.join(format!(
        "{prefix}{}.{}.tmp",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let staged = Staged {
        tmp,
        target: target.to_path_buf(),
        committed: false,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(NEW_FILE_MODE)
        .open(&staged.tmp)?;
    file.set_permissions(Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(staged)
}

impl Staged {
    /// Renames the temporary file over the target, then flushes the directory so the rename is
    /// durable. Once the rename succeeded the new content is in place; a failing directory flush is
    /// retried once and otherwise not reported (every reader already sees the new file, so a
    /// failure would wrongly invite a retry against a version that is no longer current).
    pub(crate) fn commit(mut self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.target)?;
        self.committed = true;
        let dir = parent(&self.target).to_path_buf();
        let sync_dir = || File::open(&dir).and_then(|d| d.sync_all());
        if sync_dir().is_err() {
            drop(sync_dir());
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            drop(fs::remove_file(&self.tmp));
        }
    }
}

/// Removes `path` and flushes its directory.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    drop(File::open(parent(path)).and_then(|d| d.sync_all()));
    Ok(())
}

/// Removes temporary files a crashed writer of `target` left behind (the caller holds the
/// target's write lock, so no live writer owns one).
pub(crate) fn remove_stale_temp_files(target: &Path) {
    let prefix = tmp_prefix(target);
    let Ok(entries) = fs::read_dir(parent(target)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            drop(fs::remove_file(entry.path()));
        }
    }
}

pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The lock file of `target` for `purpose` (`write` or `refresh`): `.<name>.<purpose>.lock` in
/// the same directory (a dotfile, skipped by directory scans).
pub(crate) fn lock_path(target: &Path, purpose: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(target).join(format!(".{name}.{purpose}.lock"))
}

pub(crate) fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(NEW_FILE_MODE)
        .open(path)
}

/// Why a lock was not taken.
pub(crate) enum LockError {
    Io(io::Error),
    Timeout(Duration),
}

/// The first and the longest pause between two attempts to take a contended lock.
pub(crate) const POLL_MIN: Duration = Duration::from_millis(1);
pub(crate) const POLL_MAX: Duration = Duration::from_millis(20);

/// Opens and locks `path` exclusively (`flock`), polling until `timeout`, blocking the thread.
/// The lock is released when the returned file is closed.
pub(crate) fn lock_blocking(path: &Path, timeout: Duration) -> Result<File, LockError> {
    let file = open_lock_file(path).map_err(LockError::Io)?;
    let started = Instant::now();
    let mut pause = POLL_MIN;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(LockError::Timeout(waited));
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(POLL_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_file_keeps_the_mode_and_vanishes_when_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let target = dir.path().join("a.json");
        let staged = stage(&target, b"{}", 0o640).expect("stage");
        let tmp = staged.tmp.clone();
        assert_eq!(
            fs::metadata(&tmp).expect("tmp").permissions().mode() & 0o777,
            0o640
        );
        drop(staged);
        assert!(!tmp.exists());
        stage(&target, b"{\"a\":1}", 0o600)
            .expect("stage")
            .commit()
            .expect("commit");
        let snap = read(&target).expect("read").expect("exists");
        assert_eq!(snap.bytes, b"{\"a\":1}");
        assert_eq!(
            fs::metadata(&target).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert!(read(&dir.path().join("missing")).expect("read").is_none());
    }

    #[test]
    fn names() {
        let p = Path::new("/x/oauth_creds.json");
        assert_eq!(
            lock_path(p, "write"),
            Path::new("/x/.oauth_creds.json.write.lock")
        );
        assert_eq!(tmp_prefix(p), ".oauth_creds.json.");
        assert_eq!(parent(Path::new("a.json")), Path::new("."));
    }
}
