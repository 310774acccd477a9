//! The durable file store and its cross-process refresh lock.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use oauth_core::{Credential, CredentialId, PersistedCredential};
use rustix::fs::OFlags;
use serde::{Deserialize, Serialize};

use crate::table::Table;
use crate::{CredentialStore, RefreshGuard, RefreshLock, StoreError, Version, Versioned};

/// The on-disk schema version this crate reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

/// How long a write waits for another process's write by default.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The first and the longest pause between two attempts to take a contended lock file.
const POLL_MIN: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(20);
/// The longest pause between two attempts to take a contended refresh lock (a refresh takes an HTTP
/// round trip, so a coarser poll is fine).
const REFRESH_POLL_MAX: Duration = Duration::from_millis(50);

/// Permission bits that must not be set on a file holding secrets.
const GROUP_OTHER_BITS: u32 = 0o077;
/// Permission bits that must not be set on the store directory: whoever may write there can
/// replace a file.
const GROUP_OTHER_WRITE_BITS: u32 = 0o022;

/// Extra `open(2)` flags for every data and lock file: never follow a symbolic link in the last
/// component (the open fails with `ELOOP` instead), never block on a FIFO planted in its place.
/// Both flag values are small constants, so the cast cannot wrap.
#[allow(clippy::cast_possible_wrap)]
const OPEN_FLAGS: i32 = (OFlags::NOFOLLOW.bits() | OFlags::NONBLOCK.bits()) as i32;

/// The embedded default store: one JSON file per provider in a directory, safe against crashes and
/// shared safely by several processes **on one host**.
///
/// # Layout
/// - `<dir>/<provider>.json`: the provider's credentials, `{"schema": 1, "provider": …,
///   "credentials": {<id>: {"version": n, "credential": {…}}}, "retired_high_water": n}`, mode
///   `0600`. Secrets are stored in clear text (protected by the file mode), through
///   [`Credential::persisted`]. `retired_high_water` is the highest version any deleted
///   credential reached: a credential created afterwards (a deleted one re-created, or a new id)
///   starts above it, so a writer holding a version of a deleted credential can never match its
///   successor, and deletions leave nothing else behind (the file does not grow with churn).
/// - `<dir>/<provider>.json.lock`: the advisory lock taken around every read-modify-write.
/// - `<dir>/locks/<provider>.<id>.lock`: the per-credential [`RefreshLock`] files.
///
/// Provider names and ids are escaped for file names (`[A-Za-z0-9_-]` kept, every other byte
/// written `%XX`; very long names are shortened and suffixed with a hash).
///
/// # Guarantees
/// - **Atomic writes**: a write goes to a temporary file in the same directory, is flushed to disk
///   (`fsync`), renamed over the old file, and the directory is flushed too. A crash at any moment
///   leaves either the old or the new file, never a mix and never an empty file.
/// - **No lost updates across processes**: every write takes the provider's lock file, re-reads the
///   file under it, checks the expected version against what is on disk, and only then writes.
///   Reads take no lock (a rename is atomic).
/// - **Secrets stay private**: files are created with mode `0600` in a directory created `0700`; a
///   file that group or others can access is refused with [`StoreError::InsecurePermissions`].
/// - **Nobody else controls the files** (checked on every operation, as ssh checks a private
///   key): a store directory (or `locks` directory) that group or others can write is
///   [`StoreError::InsecureDirectory`]; a data or lock file owned by another user than the
///   process's effective user, or a directory owned by neither that user nor root, is
///   [`StoreError::WrongOwner`]; a data file, lock file or `locks` directory that is a symbolic
///   link is [`StoreError::Symlink`] (files are opened with `O_NOFOLLOW`, so a planted link can
///   neither be read through nor make the store create a file elsewhere). The store directory
///   itself may be a link; it is the path the operator chose.
/// - **Corruption is loud**: a file that does not parse is [`StoreError::Corrupt`] (naming the
///   file, never quoting it), for reads and writes alike; it is never replaced by an empty store.
///   A missing file is an empty store.
///
/// # One host only
/// The locks are `flock(2)` advisory locks (`std::fs::File::lock`): they coordinate the processes
/// of one machine and are released when their process dies. `flock` is not reliable on NFS or
/// other network file systems; replicas on several hosts need a shared backend (a database with a
/// lease row and a version column) instead.
///
/// A write whose future is dropped still finishes on tokio's blocking pool and may commit; the new
/// version then shows in [`versions`](CredentialStore::versions).
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
    refresh_lock: Arc<FileRefreshLock>,
}

struct Inner {
    dir: PathBuf,
    lock_timeout: Duration,
    /// Queues this process's writers so that only one at a time polls the lock file.
    writers: tokio::sync::Mutex<()>,
}

impl FileStore {
    /// Opens (creating it with mode `0700` if needed) the store directory `dir`. Files are read
    /// lazily, per provider.
    ///
    /// Point it at a directory of its own (a subdirectory it creates is fine): a shared or
    /// world-writable one (`/tmp`, a Kubernetes `emptyDir` mounted `0777`) is refused.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be created or is not a directory;
    /// [`StoreError::InsecureDirectory`] when group or others can write it;
    /// [`StoreError::WrongOwner`] when it belongs to neither this process's user nor root.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| StoreError::io(&dir, e))?;
        check_store_dir(&dir)?;
        Ok(Self {
            refresh_lock: Arc::new(FileRefreshLock::new(&dir)),
            inner: Arc::new(Inner {
                dir,
                lock_timeout: DEFAULT_LOCK_TIMEOUT,
                writers: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// How long a write waits for other processes' writes before failing with
    /// [`StoreError::LockTimeout`] (default 10 s).
    #[must_use]
    pub fn with_lock_timeout(self, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir: self.inner.dir.clone(),
                lock_timeout: timeout,
                writers: tokio::sync::Mutex::new(()),
            }),
            refresh_lock: self.refresh_lock,
        }
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The file holding `provider`'s credentials (it may not exist yet).
    pub fn file_path(&self, provider: &str) -> PathBuf {
        self.inner
            .dir
            .join(format!("{}.json", file_name_part(provider)))
    }

    async fn read<R: Send + 'static>(
        &self,
        provider: &str,
        f: impl FnOnce(Table) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        crate::check_provider(provider)?;
        let dir = self.inner.dir.clone();
        let path = self.file_path(provider);
        let provider = provider.to_owned();
        blocking(move || {
            check_store_dir(&dir)?;
            read_table(&path, &provider).map(|s| f(s.table))
        })
        .await
    }

    async fn modify<R: Send + 'static>(
        &self,
        provider: &str,
        f: impl FnOnce(&mut Stored) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        crate::check_provider(provider)?;
        let _queued = self.inner.writers.lock().await;
        let inner = Arc::clone(&self.inner);
        let path = self.file_path(provider);
        let provider = provider.to_owned();
        blocking(move || {
            check_store_dir(&inner.dir)?;
            let lock_path = path.with_extension("json.lock");
            let lock = lock_file(&lock_path, inner.lock_timeout, &provider)?;
            let mut stored = read_table(&path, &provider)?;
            let result = f(&mut stored)?;
            write_table(&inner.dir, &path, &provider, &stored)?;
            // Closing the file would release it too; unlocking explicitly says when.
            drop(lock.unlock());
            Ok(result)
        })
        .await
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .field("lock_timeout", &self.inner.lock_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl CredentialStore for FileStore {
    async fn load_all(&self, provider: &str) -> Result<Vec<Versioned<Credential>>, StoreError> {
        self.read(provider, |t| t.all()).await
    }

    async fn load(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<Versioned<Credential>>, StoreError> {
        let id = id.clone();
        self.read(provider, move |t| t.get(&id)).await
    }

    async fn save(
        &self,
        provider: &str,
        credential: &Credential,
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        let credential = credential.clone();
        let owned = provider.to_owned();
        self.modify(provider, move |s| s.save(&owned, &credential, expected))
            .await
    }

    async fn delete(
        &self,
        provider: &str,
        id: &CredentialId,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        let id = id.clone();
        let owned = provider.to_owned();
        self.modify(provider, move |s| s.delete(&owned, &id, expected))
            .await
    }

    async fn versions(
        &self,
        provider: &str,
    ) -> Result<BTreeMap<CredentialId, Version>, StoreError> {
        self.read(provider, |t| t.versions()).await
    }

    fn refresh_lock(&self) -> Option<Arc<dyn RefreshLock>> {
        Some(Arc::clone(&self.refresh_lock) as Arc<dyn RefreshLock>)
    }
}

/// The [`RefreshLock`] of a [`FileStore`]: one lock file per credential,
/// `<dir>/locks/<provider>.<id>.lock`, locked with `flock(2)`.
///
/// It excludes other processes on the same host and other lock handles in the same process (each
/// acquisition opens the file anew). A process that dies releases its locks. Lock files are never
/// deleted (deleting a lock file while another process waits on it would split the lock in two).
/// Not reliable on NFS.
///
/// The same checks as [`FileStore`]'s apply: the store directory and `locks` must not be writable
/// by group or others, `locks` and the lock files must not be symbolic links, and the lock files
/// must belong to the process's effective user.
pub struct FileRefreshLock {
    dir: PathBuf,
}

impl FileRefreshLock {
    /// The refresh locks of the store directory `store_dir` (kept in its `locks` subdirectory).
    pub fn new(store_dir: impl AsRef<Path>) -> Self {
        Self {
            dir: store_dir.as_ref().join("locks"),
        }
    }

    /// The lock file of one credential.
    pub fn lock_path(&self, provider: &str, id: &CredentialId) -> PathBuf {
        self.dir.join(format!(
            "{}.{}.lock",
            file_name_part(provider),
            file_name_part(id.as_str())
        ))
    }
}

impl fmt::Debug for FileRefreshLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRefreshLock")
            .field("dir", &self.dir)
            .finish()
    }
}

#[async_trait]
impl RefreshLock for FileRefreshLock {
    async fn acquire(
        &self,
        provider: &str,
        id: &CredentialId,
        timeout: Duration,
    ) -> Result<RefreshGuard, StoreError> {
        crate::check_provider(provider)?;
        let started = Instant::now();
        let dir = self.dir.clone();
        let path = self.lock_path(provider, id);
        let file = {
            let path = path.clone();
            blocking(move || {
                ensure_locks_dir(&dir)?;
                open_lock_file(&path)
            })
            .await?
        };
        let mut pause = POLL_MIN;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(RefreshGuard::new(provider, id.clone(), move || {
                        drop(file.unlock());
                    }));
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(StoreError::io(&path, e)),
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(StoreError::LockTimeout {
                    what: "refresh",
                    provider: provider.to_owned(),
                    id: Some(id.clone()),
                    waited,
                });
            }
            tokio::time::sleep(pause.min(timeout - waited)).await;
            pause = (pause * 2).min(REFRESH_POLL_MAX);
        }
    }
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend {
            source: Box::new(e),
            retryable: false,
        })?
}

// ---- file names ----

/// Longest escaped name part before it is shortened and hashed (keeps whole names below 255 bytes).
const MAX_NAME_PART: usize = 110;

/// Escapes `s` for use in a file name: `[A-Za-z0-9_-]` kept, every other byte `%XX`, so names are
/// unambiguous (no `.`, `/`, or leading dot survives). Long results keep a prefix plus a stable hash.
fn file_name_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_NAME_PART {
        out.truncate(MAX_NAME_PART - 17);
        out.push_str(&format!("~{:016x}", fnv1a(s.as_bytes())));
    }
    out
}

/// FNV-1a, 64 bits: stable across Rust versions and processes (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---- locking ----

/// Opens (creating it `0600` if needed) a lock file, without following a link, and checks it is a
/// regular file of ours.
fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(OPEN_FLAGS)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    let meta = file.metadata().map_err(|e| StoreError::io(path, e))?;
    check_owner(path, &meta, false)?;
    if !meta.is_file() {
        return Err(StoreError::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    Ok(file)
}

/// Opens and locks the store lock file `path` exclusively, polling until `timeout` (blocking the
/// calling thread).
fn lock_file(path: &Path, timeout: Duration, provider: &str) -> Result<File, StoreError> {
    let file = open_lock_file(path)?;
    let started = Instant::now();
    let mut pause = POLL_MIN;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(StoreError::io(path, e)),
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(StoreError::LockTimeout {
                what: "store",
                provider: provider.to_owned(),
                id: None,
                waited,
            });
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(POLL_MAX);
    }
}

// ---- ownership, modes and links ----

/// The process's effective uid: files it creates belong to it, and files it uses must.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Maps a failed `open(2)` with [`OPEN_FLAGS`]: `ELOOP` on a link in the last component becomes
/// [`StoreError::Symlink`].
fn open_error(path: &Path, e: io::Error) -> StoreError {
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
        && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
    {
        return StoreError::Symlink {
            path: path.to_path_buf(),
        };
    }
    StoreError::io(path, e)
}

/// A file must belong to the effective user; a directory may also belong to root (only root can
/// change a root-owned directory that is not group- or other-writable, and root can do anything
/// anyway).
fn check_owner(path: &Path, meta: &fs::Metadata, root_allowed: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let (owner, expected) = (meta.uid(), euid());
    if owner == expected || (root_allowed && owner == 0) {
        return Ok(());
    }
    Err(StoreError::WrongOwner {
        path: path.to_path_buf(),
        owner,
        expected,
    })
}

/// Owner and mode of a directory the store writes in.
fn check_dir_meta(path: &Path, meta: &fs::Metadata) -> Result<(), StoreError> {
    if !meta.is_dir() {
        return Err(StoreError::io(
            path,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    check_owner(path, meta, true)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER_WRITE_BITS != 0 {
        return Err(StoreError::InsecureDirectory {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// The store directory (following a link: the operator chose that path).
fn check_store_dir(dir: &Path) -> Result<(), StoreError> {
    let meta = fs::metadata(dir).map_err(|e| StoreError::io(dir, e))?;
    check_dir_meta(dir, &meta)
}

/// Creates (`0700`) or checks the refresh locks' directory, which must not be a link, and the
/// store directory above it.
fn ensure_locks_dir(dir: &Path) -> Result<(), StoreError> {
    if let Some(store_dir) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        match fs::metadata(store_dir) {
            Ok(meta) => check_dir_meta(store_dir, &meta)?,
            // Created below, with mode 0700.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(store_dir, e)),
        }
    }
    match fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError::io(dir, e))?,
        Err(e) => return Err(StoreError::io(dir, e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| StoreError::io(dir, e))?;
    if meta.file_type().is_symlink() {
        return Err(StoreError::Symlink {
            path: dir.to_path_buf(),
        });
    }
    check_dir_meta(dir, &meta)
}

// ---- the on-disk format ----

#[derive(Serialize)]
struct DiskFileOut<'a> {
    schema: u64,
    provider: &'a str,
    credentials: BTreeMap<&'a CredentialId, DiskEntryOut<'a>>,
    retired_high_water: Version,
}

#[derive(Serialize)]
struct DiskEntryOut<'a> {
    version: Version,
    credential: PersistedCredential<'a>,
}

#[derive(Debug, Deserialize)]
struct SchemaProbe {
    schema: u64,
}

#[derive(Deserialize)]
struct DiskFileIn {
    provider: String,
    credentials: BTreeMap<CredentialId, DiskEntryIn>,
    /// One marker per deleted credential, as earlier versions of this crate wrote them (read, folded
    /// into the high-water mark, never written again).
    #[serde(default)]
    retired: BTreeMap<CredentialId, Version>,
    #[serde(default)]
    retired_high_water: Version,
}

/// One provider's file in memory: the credentials, and the highest version a deleted one reached.
struct Stored {
    table: Table,
    retired_high_water: Version,
}

impl Stored {
    /// Compare-and-set write. A credential created while none of its id is stored starts above
    /// every deleted credential's last version (continuing from its own deleted predecessor, if it
    /// had one, or from a later one's).
    fn save(
        &mut self,
        provider: &str,
        credential: &Credential,
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        let id = &credential.id;
        if expected.is_none() && self.retired_high_water > 0 && self.table.get(id).is_none() {
            self.table
                .retired
                .insert(id.clone(), self.retired_high_water);
        }
        let saved = self.table.save(provider, credential, expected);
        self.table.retired.clear();
        saved
    }

    /// Compare-and-delete; the deleted credential's version raises the high-water mark.
    fn delete(
        &mut self,
        provider: &str,
        id: &CredentialId,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.table.delete(provider, id, expected)?;
        self.fold_retired();
        Ok(())
    }

    /// Replaces the table's per-id deletion markers by the one high-water mark.
    fn fold_retired(&mut self) {
        let highest = self.table.retired.values().copied().max().unwrap_or(0);
        self.retired_high_water = self.retired_high_water.max(highest);
        self.table.retired.clear();
    }
}

#[derive(Deserialize)]
struct DiskEntryIn {
    version: Version,
    credential: Credential,
}

/// Describes a parse error by kind and position only: serde_json's own messages can quote values
/// from the file, and the file holds tokens.
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "read error",
        Category::Syntax => "invalid JSON",
        Category::Data => "unexpected content (a field is missing or has the wrong type or value)",
        Category::Eof => "unexpected end of data (truncated file?)",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Reads a provider's file (never through a link; it must belong to the effective user); a missing
/// file is an empty table.
fn read_table(path: &Path, provider: &str) -> Result<Stored, StoreError> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS)
        .open(path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Stored {
                table: Table::default(),
                retired_high_water: 0,
            });
        }
        Err(e) => return Err(open_error(path, e)),
    };
    let meta = file.metadata().map_err(|e| StoreError::io(path, e))?;
    check_owner(path, &meta, false)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(StoreError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    if !meta.is_file() {
        return Err(corrupt("not a regular file".to_owned()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(|e| StoreError::io(path, e))?;
    if bytes.is_empty() {
        return Err(corrupt("the file is empty".to_owned()));
    }
    let probe: SchemaProbe = serde_json::from_slice(&bytes).map_err(|e| corrupt(describe(&e)))?;
    if probe.schema != SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema {
            path: path.to_path_buf(),
            found: probe.schema,
            supported: SCHEMA_VERSION,
        });
    }
    let disk: DiskFileIn = serde_json::from_slice(&bytes).map_err(|e| corrupt(describe(&e)))?;
    if disk.provider != provider {
        return Err(corrupt(format!(
            "the file belongs to provider {:?}, not {provider:?}",
            disk.provider
        )));
    }
    let mut stored = Stored {
        table: Table {
            retired: disk.retired,
            ..Table::default()
        },
        retired_high_water: disk.retired_high_water,
    };
    stored.fold_retired();
    let table = &mut stored.table;
    for (id, entry) in disk.credentials {
        if entry.credential.id != id {
            return Err(corrupt(format!(
                "entry {id} holds credential {}",
                entry.credential.id
            )));
        }
        if entry.version == 0 {
            return Err(corrupt(format!("credential {id} has version 0")));
        }
        table
            .credentials
            .insert(id, Versioned::new(entry.credential, entry.version));
    }
    Ok(stored)
}

/// Per-process counter making temporary file names unique.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces a provider's file atomically. The caller holds the provider's lock file.
fn write_table(dir: &Path, path: &Path, provider: &str, stored: &Stored) -> Result<(), StoreError> {
    let table = &stored.table;
    let out = DiskFileOut {
        schema: SCHEMA_VERSION,
        provider,
        credentials: table
            .credentials
            .iter()
            .map(|(id, c)| {
                (
                    id,
                    DiskEntryOut {
                        version: c.version,
                        credential: c.value.persisted(),
                    },
                )
            })
            .collect(),
        retired_high_water: stored.retired_high_water,
    };
    let mut bytes = serde_json::to_vec_pretty(&out).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("cannot serialize: {}", describe(&e)),
    })?;
    bytes.push(b'\n');

    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp_prefix = format!(".{file_name}.");
    remove_stale_temp_files(dir, &tmp_prefix);
    let tmp = dir.join(format!(
        "{tmp_prefix}{}.{}.tmp",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_synced(&tmp, &bytes).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        // Best effort: the temporary file holds secrets; a later write removes it otherwise.
        drop(fs::remove_file(&tmp));
        return Err(StoreError::io(path, e));
    }
    // Make the rename itself durable. The new version is already in place (every reader sees it),
    // so a failure here is not reported as a failed save: that would tell the caller nothing
    // changed and invite a retry against a version that is no longer current. One more attempt
    // covers a transient error; past that, durability across a power loss is what is at risk.
    let sync_dir = || File::open(dir).and_then(|d| d.sync_all());
    if sync_dir().is_err() {
        drop(sync_dir());
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OPEN_FLAGS)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Removes temporary files a crashed writer left behind (only this provider's; the caller holds its
/// lock, so no live writer owns one).
fn remove_stale_temp_files(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(prefix) && name.ends_with(".tmp") {
            drop(fs::remove_file(entry.path()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_escaped_and_bounded() {
        assert_eq!(file_name_part("anthropic"), "anthropic");
        assert_eq!(file_name_part("team-1_a"), "team-1_a");
        assert_eq!(file_name_part("a.b/c d"), "a%2Eb%2Fc%20d");
        assert_eq!(file_name_part(".."), "%2E%2E");
        assert_eq!(file_name_part("é"), "%C3%A9");
        let long = "x".repeat(128);
        let other = format!("{}y", "x".repeat(127));
        assert_eq!(file_name_part(&long).len(), MAX_NAME_PART);
        assert_ne!(file_name_part(&long), file_name_part(&other));
        // Distinct inputs stay distinct: `%` itself is escaped.
        assert_ne!(file_name_part("%2E"), file_name_part("."));
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn parse_errors_do_not_quote_content() {
        let err = serde_json::from_str::<SchemaProbe>(r#"{"schema": "sk-secret-value"}"#)
            .expect_err("wrong type");
        assert!(
            err.to_string().contains("sk-secret-value"),
            "serde quotes it"
        );
        let text = describe(&err);
        assert!(!text.contains("sk-secret-value"), "{text}");
        assert!(text.starts_with("unexpected content"), "{text}");
    }
}
