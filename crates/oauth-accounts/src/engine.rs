//! The shared machinery of [`AccountDir`](crate::AccountDir) and [`CliFile`](crate::CliFile):
//! the in-memory view of the account files, versions derived from their content, the
//! compare-and-set write-back, the watcher and the refresh lock.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use oauth_core::{Credential, CredentialId};
use oauth_store::{RefreshGuard, RefreshLock, StoreChange, StoreError, Version, Versioned};
use tokio::sync::broadcast;

use crate::error::AccountError;
use crate::format::Format;
use crate::fsio::{self, LockError};

/// How long a write waits for another writer of the same file by default.
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Capacity of the change feed.
const CHANGE_CAPACITY: usize = 1024;
/// The longest pause between two attempts to take a contended refresh lock.
const REFRESH_POLL_MAX: Duration = Duration::from_millis(50);

/// What the engine manages.
#[derive(Debug)]
pub(crate) enum Source {
    /// Every `*.json` file (not starting with a dot) of a directory, format detected per file.
    Dir { dir: PathBuf },
    /// One file in one format holding one account.
    File {
        path: PathBuf,
        format: Format,
        provider: String,
        id: CredentialId,
    },
}

type Key = (String, CredentialId);

struct Entry {
    key: Key,
    format: Format,
    /// The content the entry was read from (the compare-and-set reference).
    bytes: Vec<u8>,
    version: Version,
    credential: Credential,
}

#[derive(Default)]
struct State {
    by_path: BTreeMap<PathBuf, Entry>,
    by_key: BTreeMap<Key, PathBuf>,
    /// The last version each account had, kept when its file is removed, so a file dropped in
    /// again continues from it (a writer holding an old version can never overwrite it).
    last_version: HashMap<Key, Version>,
    /// Files that could not be read, with the reason (never their content).
    problems: BTreeMap<PathBuf, String>,
    /// When each account was first seen (its `created_at`), kept across content changes.
    first_seen: HashMap<Key, DateTime<Utc>>,
}

/// A file that is in the directory but not in the pool, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (the error's message: it names the file and the kind of problem, never the
    /// content).
    pub detail: String,
}

pub(crate) struct Engine {
    pub(crate) source: Source,
    state: Mutex<State>,
    changes: broadcast::Sender<StoreChange>,
    pub(crate) lock_timeout: Duration,
    watcher: Mutex<Option<RecommendedWatcher>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Engine {
    pub(crate) fn new(source: Source, lock_timeout: Duration) -> Arc<Self> {
        let (changes, _) = broadcast::channel(CHANGE_CAPACITY);
        Arc::new(Self {
            source,
            state: Mutex::new(State::default()),
            changes,
            lock_timeout,
            watcher: Mutex::new(None),
        })
    }

    /// The directory whose entries are watched.
    pub(crate) fn watched_dir(&self) -> &Path {
        match &self.source {
            Source::Dir { dir } => dir,
            Source::File { path, .. } => fsio::parent(path),
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StoreChange> {
        self.changes.subscribe()
    }

    pub(crate) fn is_watching(&self) -> bool {
        lock(&self.watcher).is_some()
    }

    pub(crate) fn account_count(&self) -> usize {
        lock(&self.state).by_path.len()
    }

    pub(crate) fn problems(&self) -> Vec<Problem> {
        lock(&self.state)
            .problems
            .iter()
            .map(|(path, detail)| Problem {
                path: path.clone(),
                detail: detail.clone(),
            })
            .collect()
    }

    /// Starts watching the directory: every change to an account file is reconciled at once and
    /// published on the change feed.
    pub(crate) fn start_watching(self: &Arc<Self>) -> Result<(), StoreError> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Some(engine) = weak.upgrade() else {
                    return;
                };
                match event {
                    Ok(event) if !event.need_rescan() => {
                        for path in event.paths {
                            if engine.is_candidate(&path) {
                                // A malformed file is recorded as a problem; nothing to do here.
                                drop(engine.refresh_path(&path));
                            }
                        }
                    }
                    // The kernel queue overflowed or the watcher failed: look at everything.
                    _ => engine.scan(),
                }
            })
            .map_err(|e| watch_error(self.watched_dir(), e))?;
        watcher
            .watch(self.watched_dir(), RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(self.watched_dir(), e))?;
        *lock(&self.watcher) = Some(watcher);
        Ok(())
    }

    /// Is `path` a file this engine manages?
    fn is_candidate(&self, path: &Path) -> bool {
        match &self.source {
            Source::File { path: own, .. } => path == own,
            Source::Dir { dir } => {
                fsio::parent(path) == dir.as_path()
                    && path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(is_account_file_name)
            }
        }
    }

    fn publish(&self, events: Vec<StoreChange>) {
        for e in events {
            // No receiver is fine: nobody is listening.
            drop(self.changes.send(e));
        }
    }

    /// Re-reads one file and reconciles the view with it, publishing what changed.
    pub(crate) fn refresh_path(&self, path: &Path) -> Result<(), AccountError> {
        let mut events = Vec::new();
        let result = {
            let mut st = lock(&self.state);
            self.observe(&mut st, path, &mut events)
        };
        self.publish(events);
        result
    }

    /// Re-reads every account file (the directory's listing, plus the files known before, which
    /// may have gone).
    pub(crate) fn scan(&self) {
        let mut paths: Vec<PathBuf> = match &self.source {
            Source::File { path, .. } => vec![path.clone()],
            Source::Dir { dir } => fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| {
                            e.file_name().to_str().is_some_and(is_account_file_name)
                                && e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink())
                        })
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut events = Vec::new();
        {
            let mut st = lock(&self.state);
            paths.extend(st.by_path.keys().cloned());
            paths.extend(st.problems.keys().cloned());
            paths.sort();
            paths.dedup();
            for path in &paths {
                // Problems are recorded in the state.
                drop(self.observe(&mut st, path, &mut events));
            }
        }
        self.publish(events);
    }

    /// Reads `path` and reconciles the state with it (the caller holds the state lock).
    fn observe(
        &self,
        st: &mut State,
        path: &Path,
        events: &mut Vec<StoreChange>,
    ) -> Result<(), AccountError> {
        let snapshot = match fsio::read(path) {
            Ok(s) => s,
            Err(e) => {
                let e = AccountError::io(path, e);
                st.problems.insert(path.to_path_buf(), e.to_string());
                return Err(e);
            }
        };
        let Some(snapshot) = snapshot else {
            st.problems.remove(path);
            if let Some(old) = st.by_path.remove(path) {
                st.by_key.remove(&old.key);
                events.push(removed(&old.key));
            }
            return Ok(());
        };
        if st
            .by_path
            .get(path)
            .is_some_and(|e| e.bytes == snapshot.bytes)
        {
            st.problems.remove(path);
            return Ok(());
        }
        match self.parse(st, path, &snapshot) {
            Ok(entry) => {
                st.problems.remove(path);
                self.install(st, path, entry, events);
                Ok(())
            }
            Err(e) => {
                st.problems.insert(path.to_path_buf(), e.to_string());
                Err(e)
            }
        }
    }

    /// Parses a file's content into an entry (version not yet assigned).
    fn parse(
        &self,
        st: &State,
        path: &Path,
        snapshot: &fsio::Snapshot,
    ) -> Result<Entry, AccountError> {
        let (format, fixed) = match &self.source {
            Source::File {
                format,
                provider,
                id,
                ..
            } => (*format, Some((provider.clone(), id.clone()))),
            Source::Dir { .. } => (Format::detect(path, &snapshot.bytes)?, None),
        };
        let placeholder = CredentialId::new(format.default_id())
            .map_err(|e| AccountError::malformed(path, e.to_string()))?;
        let first_seen = snapshot.modified.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let account = format.read(path, &snapshot.bytes, placeholder, first_seen)?;
        let key = match fixed {
            Some(key) => key,
            None => {
                let id = id_for_file(path, &account.provider);
                (account.provider.clone(), id)
            }
        };
        if let Some(other) = st.by_key.get(&key)
            && other != path
        {
            return Err(AccountError::malformed(
                path,
                format!(
                    "holds the same account ({}/{}) as {}",
                    key.0,
                    key.1,
                    other.display()
                ),
            ));
        }
        let mut credential = account.credential;
        credential.id = key.1.clone();
        credential.created_at = st.first_seen.get(&key).copied().unwrap_or(first_seen);
        Ok(Entry {
            key,
            format,
            bytes: snapshot.bytes.clone(),
            version: 0,
            credential,
        })
    }

    /// Puts a parsed entry in place with the next version of its account.
    fn install(
        &self,
        st: &mut State,
        path: &Path,
        mut entry: Entry,
        events: &mut Vec<StoreChange>,
    ) {
        if let Some(old) = st.by_path.remove(path)
            && old.key != entry.key
        {
            st.by_key.remove(&old.key);
            events.push(removed(&old.key));
        }
        let version = st
            .last_version
            .get(&entry.key)
            .copied()
            .unwrap_or(0)
            .saturating_add(1);
        entry.version = version;
        st.last_version.insert(entry.key.clone(), version);
        st.first_seen
            .entry(entry.key.clone())
            .or_insert(entry.credential.created_at);
        st.by_key.insert(entry.key.clone(), path.to_path_buf());
        events.push(StoreChange::Changed {
            provider: entry.key.0.clone(),
            id: entry.key.1.clone(),
        });
        st.by_path.insert(path.to_path_buf(), entry);
    }

    // ---- reads ----

    pub(crate) fn load_all(&self, provider: &str) -> Vec<Versioned<Credential>> {
        self.scan();
        let st = lock(&self.state);
        let mut all: Vec<_> = st
            .by_path
            .iter()
            .filter(|(path, e)| e.key.0 == provider && !st.problems.contains_key(*path))
            .map(|(_, e)| Versioned::new(e.credential.clone(), e.version))
            .collect();
        all.sort_by(|a, b| a.value.id.cmp(&b.value.id));
        all
    }

    pub(crate) fn versions(&self, provider: &str) -> BTreeMap<CredentialId, Version> {
        self.scan();
        let st = lock(&self.state);
        st.by_path
            .iter()
            .filter(|(path, e)| e.key.0 == provider && !st.problems.contains_key(*path))
            .map(|(_, e)| (e.key.1.clone(), e.version))
            .collect()
    }

    /// The file of an account, looking at the directory again when it is not known yet.
    pub(crate) fn path_of(&self, provider: &str, id: &CredentialId) -> Option<PathBuf> {
        let key = (provider.to_owned(), id.clone());
        if let Source::File {
            path,
            provider: own_provider,
            id: own_id,
            ..
        } = &self.source
        {
            // The one account is where it is, readable or not (a malformed file must surface as
            // an error, not as a missing account).
            return (own_provider == provider && own_id == id).then(|| path.clone());
        }
        if let Some(p) = lock(&self.state).by_key.get(&key) {
            return Some(p.clone());
        }
        self.scan();
        lock(&self.state).by_key.get(&key).cloned()
    }

    pub(crate) fn load(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<Versioned<Credential>>, StoreError> {
        let Some(path) = self.path_of(provider, id) else {
            return Ok(None);
        };
        // Always from the file as it is now: this is the re-read before a refresh.
        self.refresh_path(&path)?;
        let st = lock(&self.state);
        Ok(st
            .by_path
            .get(&path)
            .filter(|e| e.key.0 == provider && &e.key.1 == id)
            .map(|e| Versioned::new(e.credential.clone(), e.version)))
    }

    // ---- writes ----

    /// Where a save of `key` goes: its file, or for a new account the file to create.
    fn target_for_save(&self, provider: &str, id: &CredentialId) -> Result<PathBuf, StoreError> {
        match &self.source {
            Source::File {
                path,
                provider: own_provider,
                id: own_id,
                ..
            } => {
                if own_provider != provider || own_id != id {
                    return Err(AccountError::WrongAccount {
                        path: path.clone(),
                        held_provider: own_provider.clone(),
                        held_id: own_id.to_string(),
                        provider: provider.to_owned(),
                        id: id.to_string(),
                    }
                    .into());
                }
                Ok(path.clone())
            }
            Source::Dir { dir } => match self.path_of(provider, id) {
                Some(path) => Ok(path),
                None => {
                    if !is_safe_file_stem(id.as_str()) {
                        return Err(AccountError::UnsafeFileName { id: id.to_string() }.into());
                    }
                    Ok(dir.join(format!("{id}.json")))
                }
            },
        }
    }

    fn write_lock(
        &self,
        path: &Path,
        provider: &str,
        id: &CredentialId,
    ) -> Result<fs::File, StoreError> {
        let lock_path = fsio::lock_path(path, "write");
        fsio::lock_blocking(&lock_path, self.lock_timeout).map_err(|e| match e {
            LockError::Io(e) => StoreError::Io {
                path: lock_path,
                source: e,
            },
            LockError::Timeout(waited) => StoreError::LockTimeout {
                what: "store",
                provider: provider.to_owned(),
                id: Some(id.clone()),
                waited,
            },
        })
    }

    /// Compare-and-set write-back (blocking): under the file's write lock, re-read the file and
    /// refuse unless its version is `expected`; write the new content into a temporary file; then,
    /// holding the state lock, re-read the file once more and rename only if it is still exactly
    /// what was checked, so a CLI's write in between is never overwritten.
    pub(crate) fn save(
        &self,
        provider: &str,
        credential: &Credential,
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        let id = &credential.id;
        let key = (provider.to_owned(), id.clone());
        let path = self.target_for_save(provider, id)?;
        let _write_lock = self.write_lock(&path, provider, id)?;
        fsio::remove_stale_temp_files(&path);

        // Phase 1: where the file stands now.
        let mut events = Vec::new();
        let checked = {
            let mut st = lock(&self.state);
            let observed = self.observe(&mut st, &path, &mut events);
            observed.map(|()| match st.by_path.get(&path) {
                None => Ok(None),
                Some(e) if e.key == key => Ok(Some((e.version, e.bytes.clone(), e.format))),
                Some(e) => Err(AccountError::WrongAccount {
                    path: path.clone(),
                    held_provider: e.key.0.clone(),
                    held_id: e.key.1.to_string(),
                    provider: provider.to_owned(),
                    id: id.to_string(),
                }),
            })
        };
        self.publish(events);
        let current = checked??;
        let actual = current.as_ref().map(|(v, _, _)| *v);
        if actual != expected {
            return Err(conflict(&key, expected, actual));
        }
        let (original, format) = match current {
            Some((_, bytes, format)) => (Some(bytes), format),
            None => (None, self.format_for_new()),
        };
        let mode = fs::metadata(&path).map_or(fsio::NEW_FILE_MODE, |m| {
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777
        });
        let bytes = format.write(&path, original.as_deref(), provider, credential)?;
        let staged = fsio::stage(&path, &bytes, mode).map_err(|e| AccountError::io(&path, e))?;

        // Phase 2: the file must still be what was checked; then it is replaced.
        let mut events = Vec::new();
        let result = {
            let mut st = lock(&self.state);
            let now = fsio::read_bytes(&path).map_err(|e| AccountError::io(&path, e))?;
            if now != original {
                // Someone (a CLI) wrote in between: adopt what they wrote, refuse ours.
                drop(staged);
                let seen = self.observe(&mut st, &path, &mut events);
                let actual = st
                    .by_path
                    .get(&path)
                    .filter(|e| e.key == key)
                    .map(|e| e.version);
                Err(match seen {
                    Ok(()) => conflict(&key, expected, actual),
                    Err(e) => e.into(),
                })
            } else {
                staged.commit().map_err(|e| AccountError::io(&path, e))?;
                // Our own write: reconciled without announcing it.
                let mut own = Vec::new();
                self.observe(&mut st, &path, &mut own)?;
                let State {
                    by_path,
                    last_version,
                    ..
                } = &mut *st;
                let entry = by_path
                    .get_mut(&path)
                    .ok_or_else(|| conflict(&key, expected, None))?;
                if Some(entry.version) == actual {
                    // The same content written again is still a write: one version more.
                    entry.version = entry.version.saturating_add(1);
                    last_version.insert(key.clone(), entry.version);
                }
                Ok(entry.version)
            }
        };
        self.publish(events);
        result
    }

    fn format_for_new(&self) -> Format {
        match &self.source {
            Source::File { format, .. } => *format,
            Source::Dir { .. } => Format::CliProxy,
        }
    }

    pub(crate) fn delete(
        &self,
        provider: &str,
        id: &CredentialId,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        let key = (provider.to_owned(), id.clone());
        let not_found = || StoreError::NotFound {
            provider: provider.to_owned(),
            id: id.clone(),
        };
        let path = self.path_of(provider, id).ok_or_else(not_found)?;
        let _write_lock = self.write_lock(&path, provider, id)?;
        let mut events = Vec::new();
        let result = {
            let mut st = lock(&self.state);
            match self.observe(&mut st, &path, &mut events) {
                Err(e) => Err(e.into()),
                Ok(()) => match st.by_path.get(&path).filter(|e| e.key == key) {
                    None => Err(not_found()),
                    Some(e) if expected.is_some_and(|v| v != e.version) => {
                        Err(conflict(&key, expected, Some(e.version)))
                    }
                    Some(_) => {
                        fsio::remove(&path).map_err(|e| AccountError::io(&path, e))?;
                        let mut own = Vec::new();
                        self.observe(&mut st, &path, &mut own)?;
                        Ok(())
                    }
                },
            }
        };
        self.publish(events);
        result
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (source, what) = match &self.source {
            Source::Dir { dir } => (dir.as_path(), "dir"),
            Source::File { path, .. } => (path.as_path(), "file"),
        };
        f.debug_struct("Engine")
            .field(what, &source)
            .field("accounts", &self.account_count())
            .field("watching", &self.is_watching())
            .finish_non_exhaustive()
    }
}

fn conflict(key: &Key, expected: Option<Version>, actual: Option<Version>) -> StoreError {
    StoreError::Conflict {
        provider: key.0.clone(),
        id: key.1.clone(),
        expected,
        actual,
    }
}

fn removed(key: &Key) -> StoreChange {
    StoreChange::Removed {
        provider: key.0.clone(),
        id: key.1.clone(),
    }
}

fn watch_error(dir: &Path, e: notify::Error) -> StoreError {
    StoreError::Backend {
        source: format!("cannot watch {}: {e}", dir.display()).into(),
        retryable: false,
    }
}

/// A directory entry that may be an account file: `*.json`, not a dotfile (temporary and lock
/// files are dotfiles).
fn is_account_file_name(name: &str) -> bool {
    name.ends_with(".json") && !name.starts_with('.') && name.len() > ".json".len()
}

/// An id usable as a file stem as is.
fn is_safe_file_stem(id: &str) -> bool {
    !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The credential id of a file in an account directory: its name without `.json`, unless that
/// holds an e-mail address (CLIProxyAPI names files after the account's e-mail) or is not a valid
/// id: then `<provider>-<12 hex digits of a hash of the name>`, since ids appear in logs and
/// metrics and must not be e-mail addresses.
pub(crate) fn id_for_file(path: &Path, provider: &str) -> CredentialId {
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".json"))
        .unwrap_or_default();
    if !stem.contains('@')
        && let Ok(id) = CredentialId::new(stem)
    {
        return id;
    }
    let hash = fnv1a(stem.as_bytes());
    let short = format!("{provider}-{:012x}", hash >> 16);
    CredentialId::new(&short)
        .or_else(|_| CredentialId::new(format!("account-{:012x}", hash >> 16)))
        .unwrap_or_else(|_| unreachable_id())
}

#[allow(clippy::expect_used)] // a constant valid id
fn unreachable_id() -> CredentialId {
    CredentialId::new("account").expect("constant id is valid")
}

/// FNV-1a, 64 bits: stable across Rust versions and processes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---- the refresh lock ----

/// The [`RefreshLock`] of an account store: one `flock(2)` lock file per account file,
/// `.<file name>.refresh.lock` beside it. Processes on one host that share the file (two pools, a
/// pool and a helper following the same protocol) take it before refreshing; the official CLIs do
/// not, which is why the write-back is compare-and-set on the file's content as well.
pub(crate) struct AccountRefreshLock {
    pub(crate) engine: Arc<Engine>,
}

impl std::fmt::Debug for AccountRefreshLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRefreshLock")
            .field("dir", &self.engine.watched_dir())
            .finish()
    }
}

#[async_trait]
impl RefreshLock for AccountRefreshLock {
    async fn acquire(
        &self,
        provider: &str,
        id: &CredentialId,
        timeout: Duration,
    ) -> Result<RefreshGuard, StoreError> {
        let started = Instant::now();
        let engine = Arc::clone(&self.engine);
        let (p, i) = (provider.to_owned(), id.clone());
        let lock_path = blocking(move || {
            let path = match &engine.source {
                Source::File { path, .. } => path.clone(),
                Source::Dir { .. } => engine.path_of(&p, &i).ok_or(StoreError::NotFound {
                    provider: p.clone(),
                    id: i.clone(),
                })?,
            };
            Ok(fsio::lock_path(&path, "refresh"))
        })
        .await?;
        let file = {
            let lock_path = lock_path.clone();
            blocking(move || {
                fsio::open_lock_file(&lock_path).map_err(|e| StoreError::Io {
                    path: lock_path.clone(),
                    source: e,
                })
            })
            .await?
        };
        let mut pause = fsio::POLL_MIN;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(RefreshGuard::new(provider, id.clone(), move || {
                        drop(file.unlock());
                    }));
                }
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(e)) => {
                    return Err(StoreError::Io {
                        path: lock_path,
                        source: e,
                    });
                }
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
pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend {
            source: Box::new(e),
            retryable: false,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_hide_email_addresses() {
        let id = id_for_file(Path::new("/d/team-a.json"), "openai");
        assert_eq!(id, "team-a");
        let id = id_for_file(Path::new("/d/codex-someone@example.com-pro.json"), "openai");
        assert!(id.as_str().starts_with("openai-"), "{id}");
        assert!(!id.as_str().contains('@'));
        assert_eq!(
            id,
            id_for_file(Path::new("/e/codex-someone@example.com-pro.json"), "openai"),
            "stable"
        );
        assert_ne!(
            id,
            id_for_file(Path::new("/d/codex-other@example.com-pro.json"), "openai")
        );
    }

    #[test]
    fn account_file_names() {
        assert!(is_account_file_name("a.json"));
        assert!(!is_account_file_name(".a.json"));
        assert!(!is_account_file_name(".a.json.write.lock"));
        assert!(!is_account_file_name(".json"));
        assert!(!is_account_file_name("a.json.tmp"));
        assert!(is_safe_file_stem("team-1.a_b"));
        assert!(!is_safe_file_stem(".hidden"));
        assert!(!is_safe_file_stem("a@b"));
        assert!(!is_safe_file_stem("a/b"));
    }
}
