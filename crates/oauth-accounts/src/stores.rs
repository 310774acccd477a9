//! The two stores: a watched directory of account files, and one CLI's own file.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use oauth_core::{Credential, CredentialId};
use oauth_store::{CredentialStore, RefreshLock, StoreChange, StoreError, Version, Versioned};
use tokio::sync::broadcast;

use crate::engine::{AccountRefreshLock, DEFAULT_LOCK_TIMEOUT, Engine, Problem, Source, blocking};
use crate::format::Format;

fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    if !dir.is_dir() {
        return Err(StoreError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    Ok(())
}

fn open_engine(
    source: Source,
    watch: bool,
    lock_timeout: Duration,
) -> Result<Arc<Engine>, StoreError> {
    let engine = Engine::new(source, lock_timeout);
    ensure_dir(engine.watched_dir())?;
    if watch {
        engine.start_watching()?;
    }
    // The first look at the files, after the watch started so nothing falls in between.
    engine.scan();
    Ok(engine)
}

/// A directory with one JSON file per account, in any of the [`Format`]s, as a
/// [`CredentialStore`]: the shape CLIProxyAPI users keep their accounts in (`~/.cli-proxy-api`),
/// and equally a directory of copied CLI files.
///
/// - **Accounts**: every `*.json` file not starting with a dot. Its format is recognised from its
///   content ([`Format::detect`]); its provider is the CLI's (or the file's `"type"`); its id is
///   the file name without `.json`, except that a name holding an e-mail address becomes
///   `<provider>-<hash>` (ids appear in logs and metrics). [`path_of`](Self::path_of) maps back.
/// - **Watched** ([`open`](Self::open)): a file dropped in joins, a changed file is adopted, a
///   removed file leaves, within milliseconds (inotify), announced on
///   [`changes`](CredentialStore::changes) as [`StoreChange::Changed`]/[`StoreChange::Removed`].
///   This store's own writes are not announced.
/// - **Versions** are derived from content: an account's version grows by one each time its
///   file's content is seen to change (by the watcher, a read, or a write). They live in this
///   process's memory: a restarted process starts again at 1, and two processes number
///   independently. What they guard is the compare-and-set: a save whose expected version is not
///   the one of the file's current content is refused with [`StoreError::Conflict`].
/// - **Compare-and-set write-back**: under the file's write lock (`.<name>.write.lock`), the file
///   is re-read and checked against the expected version, the new content is written to a
///   temporary file in the same directory and flushed, and — holding the store's lock — the file
///   is read once more and renamed over only if it is byte for byte what was checked. A CLI that
///   rewrote the file in between wins: its tokens are adopted and the save is refused.
/// - **Exact format**: the write changes only the fields this crate knows in the file's own JSON
///   object and keeps every other field, its indentation style and its permission bits.
/// - **Malformed files** are skipped by [`load_all`](CredentialStore::load_all) and listed by
///   [`problems`](Self::problems) (a CLI mid-write shows up here for a moment); they are never
///   overwritten: [`load`](CredentialStore::load) and [`save`](CredentialStore::save) of such an
///   account fail with [`StoreError::Corrupt`] naming the file.
/// - **New accounts** saved with `expected = None` are created as `<id>.json` in the
///   CLIProxyAPI shape (`"type"` from the provider).
///
/// Locks are `flock(2)` advisory locks: one host only, not on NFS.
#[derive(Clone)]
pub struct AccountDir {
    engine: Arc<Engine>,
}

impl AccountDir {
    /// Opens the directory (creating it with mode `0700` if needed), reads every account file,
    /// and starts watching it.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be created or is not one;
    /// [`StoreError::Backend`] when the watch cannot be set up (inotify limits).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, true)
    }

    /// Like [`open`](Self::open) without watching: changes are seen when the store is read
    /// ([`versions`](CredentialStore::versions), [`load`](CredentialStore::load), ...), and
    /// [`changes`](CredentialStore::changes) stays quiet unless a read finds one.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_unwatched(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, false)
    }

    fn open_with(dir: impl AsRef<Path>, watch: bool) -> Result<Self, StoreError> {
        let source = Source::Dir {
            dir: dir.as_ref().to_path_buf(),
        };
        Ok(Self {
            engine: open_engine(source, watch, DEFAULT_LOCK_TIMEOUT)?,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.engine.watched_dir()
    }

    /// The file holding an account, if there is one.
    pub fn path_of(&self, provider: &str, id: &CredentialId) -> Option<PathBuf> {
        self.engine.path_of(provider, id)
    }

    /// Files that are not in the pool and why (malformed, unrecognised, unreadable).
    pub fn problems(&self) -> Vec<Problem> {
        self.engine.problems()
    }

    /// Whether the directory is watched.
    pub fn is_watching(&self) -> bool {
        self.engine.is_watching()
    }
}

impl fmt::Debug for AccountDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountDir")
            .field("dir", &self.dir())
            .field("accounts", &self.engine.account_count())
            .field("watching", &self.is_watching())
            .finish()
    }
}

/// One CLI's own credential file (`~/.gemini/oauth_creds.json`, ...) as a one-account
/// [`CredentialStore`], so a pool shares the login with the CLI.
///
/// The file is read in its [`Format`], written back in it (only the known fields change; every
/// other field and the file's mode are kept), and watched, with the same compare-and-set
/// write-back and the same guarantees as [`AccountDir`]: when the CLI refreshes the tokens, the
/// pool's next read sees them (and its [`changes`](CredentialStore::changes) feed says so at
/// once), and a pool write based on older content is refused instead of overwriting the CLI's
/// newer tokens.
///
/// The account's provider is the CLI's ([`Format::provider`]) and its id defaults to
/// [`Format::default_id`]; [`open`](Self::open) chooses another.
#[derive(Clone)]
pub struct CliFile {
    engine: Arc<Engine>,
    path: PathBuf,
    format: Format,
    provider: String,
    id: CredentialId,
}

impl CliFile {
    /// Gemini CLI's `oauth_creds.json` at `path`, as account `gemini-cli` of provider `gemini`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn gemini(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open(Format::GeminiCli, path, Format::GeminiCli.default_id())
    }

    /// Claude Code's `.credentials.json` at `path`, as account `claude-code` of provider
    /// `anthropic`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn claude(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open(Format::ClaudeCode, path, Format::ClaudeCode.default_id())
    }

    /// Codex's `auth.json` at `path`, as account `codex-cli` of provider `openai`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn codex(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open(Format::Codex, path, Format::Codex.default_id())
    }

    /// Qwen Code's `oauth_creds.json` at `path`, as account `qwen-code` of provider `qwen`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn qwen(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open(Format::QwenCode, path, Format::QwenCode.default_id())
    }

    /// The CLI's file at its usual place under `$HOME` ([`Format::default_path`]).
    ///
    /// # Errors
    /// [`StoreError::Io`] when `$HOME` is not set; otherwise as [`open`](Self::open).
    pub fn at_default_path(format: Format) -> Result<Self, StoreError> {
        let path = format.default_path().ok_or_else(|| StoreError::Io {
            path: PathBuf::from("~"),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no home directory ($HOME is not set) or no default file for this format",
            ),
        })?;
        Self::open(format, path, format.default_id())
    }

    /// The file at `path` in `format` as account `id` of the format's provider (for
    /// [`Format::CliProxy`], of the provider named by the file's `"type"`, read now), watched.
    /// The file need not exist yet: a save with `expected = None` creates it (mode `0600`).
    ///
    /// # Errors
    /// [`StoreError::Io`] when the parent directory cannot be created;
    /// [`StoreError::Corrupt`] for a CLIProxyAPI file whose provider cannot be read;
    /// [`StoreError::Backend`] for an invalid id or when the watch cannot be set up.
    pub fn open(
        format: Format,
        path: impl AsRef<Path>,
        id: impl AsRef<str>,
    ) -> Result<Self, StoreError> {
        Self::open_with(format, path.as_ref(), id.as_ref(), true)
    }

    /// Like [`open`](Self::open) without watching (changes are seen when the store is read).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_unwatched(
        format: Format,
        path: impl AsRef<Path>,
        id: impl AsRef<str>,
    ) -> Result<Self, StoreError> {
        Self::open_with(format, path.as_ref(), id.as_ref(), false)
    }

    fn open_with(format: Format, path: &Path, id: &str, watch: bool) -> Result<Self, StoreError> {
        let id = CredentialId::new(id).map_err(|e| StoreError::Backend {
            source: Box::new(e),
            retryable: false,
        })?;
        // Normalised so watcher events (directory + name) match it.
        let name = path.file_name().ok_or_else(|| StoreError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        })?;
        let path = crate::fsio::parent(path).join(name);
        let provider = match format.provider() {
            Some(p) => p.to_owned(),
            None => cliproxy_provider_of(&path)?,
        };
        let source = Source::File {
            path: path.clone(),
            format,
            provider: provider.clone(),
            id: id.clone(),
        };
        Ok(Self {
            engine: open_engine(source, watch, DEFAULT_LOCK_TIMEOUT)?,
            path,
            format,
            provider,
            id,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The account's provider.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The account's id.
    pub fn id(&self) -> &CredentialId {
        &self.id
    }

    /// The file's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Why the file is not readable right now, if it is not.
    pub fn problem(&self) -> Option<Problem> {
        self.engine.problems().into_iter().next()
    }

    /// Whether the file is watched.
    pub fn is_watching(&self) -> bool {
        self.engine.is_watching()
    }
}

fn cliproxy_provider_of(path: &Path) -> Result<String, StoreError> {
    let bytes = std::fs::read(path).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: crate::error::describe_json(&e),
        })?;
    value
        .get("type")
        .and_then(serde_json::Value::as_str)
        .map(crate::format::provider_of_cliproxy_type)
        .ok_or_else(|| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: "field \"type\" is missing or not a string".to_owned(),
        })
}

impl fmt::Debug for CliFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CliFile")
            .field("path", &self.path())
            .field("format", &self.format())
            .field("provider", &self.provider())
            .field("id", self.id())
            .field("watching", &self.is_watching())
            .finish()
    }
}

/// Both stores are the engine behind a different source.
macro_rules! engine_store {
    ($ty:ty) => {
        #[async_trait]
        impl CredentialStore for $ty {
            async fn load_all(
                &self,
                provider: &str,
            ) -> Result<Vec<Versioned<Credential>>, StoreError> {
                check_provider(provider)?;
                let engine = Arc::clone(&self.engine);
                let provider = provider.to_owned();
                blocking(move || Ok(engine.load_all(&provider))).await
            }

            async fn load(
                &self,
                provider: &str,
                id: &CredentialId,
            ) -> Result<Option<Versioned<Credential>>, StoreError> {
                check_provider(provider)?;
                let engine = Arc::clone(&self.engine);
                let (provider, id) = (provider.to_owned(), id.clone());
                blocking(move || engine.load(&provider, &id)).await
            }

            async fn save(
                &self,
                provider: &str,
                credential: &Credential,
                expected: Option<Version>,
            ) -> Result<Version, StoreError> {
                check_provider(provider)?;
                let engine = Arc::clone(&self.engine);
                let (provider, credential) = (provider.to_owned(), credential.clone());
                blocking(move || engine.save(&provider, &credential, expected)).await
            }

            async fn delete(
                &self,
                provider: &str,
                id: &CredentialId,
                expected: Option<Version>,
            ) -> Result<(), StoreError> {
                check_provider(provider)?;
                let engine = Arc::clone(&self.engine);
                let (provider, id) = (provider.to_owned(), id.clone());
                blocking(move || engine.delete(&provider, &id, expected)).await
            }

            async fn versions(
                &self,
                provider: &str,
            ) -> Result<BTreeMap<CredentialId, Version>, StoreError> {
                check_provider(provider)?;
                let engine = Arc::clone(&self.engine);
                let provider = provider.to_owned();
                blocking(move || Ok(engine.versions(&provider))).await
            }

            fn refresh_lock(&self) -> Option<Arc<dyn RefreshLock>> {
                Some(Arc::new(AccountRefreshLock {
                    engine: Arc::clone(&self.engine),
                }))
            }

            fn changes(&self) -> Option<broadcast::Receiver<StoreChange>> {
                Some(self.engine.subscribe())
            }
        }
    };
}

engine_store!(AccountDir);
engine_store!(CliFile);

fn check_provider(provider: &str) -> Result<(), StoreError> {
    if provider.is_empty() {
        return Err(StoreError::InvalidProvider {
            provider: provider.to_owned(),
        });
    }
    Ok(())
}
