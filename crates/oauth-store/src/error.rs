//! The one error type of store operations.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Duration;

use oauth_core::CredentialId;
use thiserror::Error;

use crate::Version;

/// A [`CredentialStore`](crate::CredentialStore) or [`RefreshLock`](crate::RefreshLock)
/// operation failed.
///
/// Messages name files, providers, credential ids and versions, never token values: a corrupt file
/// is described by the kind and position of the problem only, never by its content.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Compare-and-set failed: the stored version is not the expected one. Re-read, re-decide, and
    /// write again against the version just read; the stored credential was left untouched.
    #[error(
        "version conflict on credential {id} of provider {provider:?}: expected {}, found {}",
        version_text(*.expected),
        version_text(*.actual)
    )]
    Conflict {
        /// The provider the credential belongs to.
        provider: String,
        /// The credential concerned.
        id: CredentialId,
        /// The version the writer expected (`None`: expected no credential).
        expected: Option<Version>,
        /// The version actually stored (`None`: no credential).
        actual: Option<Version>,
    },
    /// The credential to delete does not exist.
    #[error("credential {id} of provider {provider:?} not found")]
    NotFound {
        /// The provider the credential belongs to.
        provider: String,
        /// The credential concerned.
        id: CredentialId,
    },
    /// The provider name cannot be stored (it is empty).
    #[error("invalid provider name {provider:?}: it must not be empty")]
    InvalidProvider {
        /// The rejected provider name.
        provider: String,
    },
    /// Reading, writing or locking a file failed.
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A store file exists but cannot be parsed (truncated, not JSON, wrong shape). The file is
    /// left as it is; no write replaces it until someone repairs or removes it.
    #[error("corrupt credential store file {}: {detail}", .path.display())]
    Corrupt {
        /// The corrupt file.
        path: PathBuf,
        /// What is wrong and where (line and column); never the file's content.
        detail: String,
    },
    /// A store file was written by a newer, incompatible version of this crate.
    #[error(
        "credential store file {} has schema version {found}; this version reads schema {supported}",
        .path.display()
    )]
    UnsupportedSchema {
        /// The file concerned.
        path: PathBuf,
        /// The schema version found in the file.
        found: u64,
        /// The schema version this crate reads and writes.
        supported: u64,
    },
    /// A store file can be read by group or others; it holds secrets, so it is refused (as ssh
    /// refuses a private key) until its mode is fixed.
    #[error(
        "credential store file {} is accessible by group or others (mode {mode:04o}); \
         it holds secrets: run `chmod 600` on it",
        .path.display()
    )]
    InsecurePermissions {
        /// The file concerned.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The store directory (or its `locks` subdirectory) can be written by group or others. Anyone
    /// who can write there can replace a credential file or a lock file, so the store refuses it
    /// until its mode is fixed. A directory [`FileStore::open`](crate::FileStore::open) creates is
    /// `0700`.
    #[error(
        "credential store directory {} is writable by group or others (mode {mode:04o}); \
         anyone who can write there can replace the stored credentials: run `chmod 700 {}`",
        .path.display(),
        .path.display()
    )]
    InsecureDirectory {
        /// The directory concerned.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A store file, lock file or directory belongs to another user than the process's effective
    /// user: whoever owns it controls its content (or, for a directory, can replace it), so it is
    /// refused. A directory may also belong to root.
    #[error(
        "credential store path {} is owned by uid {owner}, not by this process's user \
         (uid {expected}): run `chown {expected} {}` or run as its owner",
        .path.display(),
        .path.display()
    )]
    WrongOwner {
        /// The file or directory concerned.
        path: PathBuf,
        /// The uid that owns it.
        owner: u32,
        /// The process's effective uid.
        expected: u32,
    },
    /// A store file or lock file (or the `locks` directory) is a symbolic link. The store never
    /// follows links there: a link could make it read another file or create one outside its
    /// directory.
    #[error(
        "credential store path {} is a symbolic link, which the store does not follow: \
         replace it with the file it points to, or remove it",
        .path.display()
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// A lock could not be taken before the timeout.
    #[error(
        "timed out after {waited:?} waiting for the {what} lock of provider {provider:?}{}",
        .id.as_ref().map(|id| format!(", credential {id}")).unwrap_or_default()
    )]
    LockTimeout {
        /// Which lock: `"refresh"` or `"store"`.
        what: &'static str,
        /// The provider concerned.
        provider: String,
        /// The credential concerned, for a per-credential lock.
        id: Option<CredentialId>,
        /// How long the caller waited.
        waited: Duration,
    },
    /// A failure of another backend (a database, a remote service), for stores implemented outside
    /// this crate. The source must not hold secrets.
    #[error("credential store backend error: {source}")]
    Backend {
        /// The backend's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
        /// Whether retrying the same operation later may succeed.
        retryable: bool,
    },
}

fn version_text(v: Option<Version>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| format!("version {v}"))
}

impl StoreError {
    /// True for a failed compare-and-set ([`StoreError::Conflict`]): someone else wrote first.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// True for contention: another writer or refresher is active right now. That is a
    /// [`Conflict`](StoreError::Conflict) (someone wrote first: re-read) or a
    /// [`LockTimeout`](StoreError::LockTimeout) (someone holds the lock: wait, then re-read).
    ///
    /// Contention says the store works and is in use, so a caller must not go ahead on its own
    /// (for a refresh: another process may be rotating the same refresh token). Never true together
    /// with [`is_unavailable`](Self::is_unavailable).
    pub fn is_contention(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::LockTimeout { .. })
    }

    /// True when the store itself cannot be used right now, which says nothing about other
    /// writers: [`Io`](StoreError::Io) (unreadable, permission denied, read-only or full file
    /// system, any other OS error), a file the store refuses to use ([`Corrupt`](StoreError::Corrupt),
    /// [`UnsupportedSchema`](StoreError::UnsupportedSchema),
    /// [`InsecurePermissions`](StoreError::InsecurePermissions),
    /// [`InsecureDirectory`](StoreError::InsecureDirectory), [`WrongOwner`](StoreError::WrongOwner),
    /// [`Symlink`](StoreError::Symlink)), or a [`Backend`](StoreError::Backend) failure.
    ///
    /// A caller holding a good token in memory may go on without the store (keep the token, report
    /// the failure, save when the store recovers); contention ([`is_contention`](Self::is_contention))
    /// is never classified here. Combine with [`is_retryable`](Self::is_retryable) to tell a
    /// transient outage (an I/O error: retry later) from one that needs a human (a corrupt file,
    /// wrong permissions or owner, a link).
    ///
    /// Caller mistakes ([`NotFound`](StoreError::NotFound),
    /// [`InvalidProvider`](StoreError::InvalidProvider)) are neither unavailable nor contention.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Io { .. }
            | Self::Corrupt { .. }
            | Self::UnsupportedSchema { .. }
            | Self::InsecurePermissions { .. }
            | Self::InsecureDirectory { .. }
            | Self::WrongOwner { .. }
            | Self::Symlink { .. }
            | Self::Backend { .. } => true,
            Self::Conflict { .. }
            | Self::NotFound { .. }
            | Self::InvalidProvider { .. }
            | Self::LockTimeout { .. } => false,
        }
    }

    /// True when the same operation may succeed if retried later without other changes: I/O errors,
    /// lock timeouts, and backend errors that say so. A conflict is not retryable as is (re-read
    /// first); corruption, bad permissions or owners, links and unsupported schemas need a human.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io { .. } | Self::LockTimeout { .. } => true,
            Self::Backend { retryable, .. } => *retryable,
            Self::Conflict { .. }
            | Self::NotFound { .. }
            | Self::InvalidProvider { .. }
            | Self::Corrupt { .. }
            | Self::UnsupportedSchema { .. }
            | Self::InsecurePermissions { .. }
            | Self::InsecureDirectory { .. }
            | Self::WrongOwner { .. }
            | Self::Symlink { .. } => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> CredentialId {
        CredentialId::new("acct").expect("valid id")
    }

    #[test]
    fn conflict_message_names_versions() {
        let e = StoreError::Conflict {
            provider: "anthropic".into(),
            id: id(),
            expected: Some(1),
            actual: Some(2),
        };
        assert!(e.is_conflict());
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "version conflict on credential acct of provider \"anthropic\": expected version 1, found version 2"
        );
        let e = StoreError::Conflict {
            provider: "p".into(),
            id: id(),
            expected: None,
            actual: Some(3),
        };
        assert!(e.to_string().ends_with("expected none, found version 3"));
    }

    #[test]
    fn classification() {
        assert!(StoreError::io("/x", std::io::Error::other("boom")).is_retryable());
        let timeout = StoreError::LockTimeout {
            what: "refresh",
            provider: "p".into(),
            id: Some(id()),
            waited: Duration::from_millis(5),
        };
        assert!(timeout.is_retryable());
        assert_eq!(
            timeout.to_string(),
            "timed out after 5ms waiting for the refresh lock of provider \"p\", credential acct"
        );
        let perms = StoreError::InsecurePermissions {
            path: "/s/p.json".into(),
            mode: 0o644,
        };
        assert!(!perms.is_retryable());
        assert!(perms.to_string().contains("mode 0644"));
        let backend = StoreError::Backend {
            source: "db down".into(),
            retryable: true,
        };
        assert!(backend.is_retryable());
    }

    /// Every variant, for the classification table below.
    fn one_of_each() -> Vec<StoreError> {
        vec![
            StoreError::Conflict {
                provider: "p".into(),
                id: id(),
                expected: None,
                actual: Some(1),
            },
            StoreError::NotFound {
                provider: "p".into(),
                id: id(),
            },
            StoreError::InvalidProvider {
                provider: String::new(),
            },
            StoreError::io(
                "/s/p.json",
                std::io::Error::from(std::io::ErrorKind::StorageFull),
            ),
            StoreError::Corrupt {
                path: "/s/p.json".into(),
                detail: "the file is empty".into(),
            },
            StoreError::UnsupportedSchema {
                path: "/s/p.json".into(),
                found: 9,
                supported: 1,
            },
            StoreError::InsecurePermissions {
                path: "/s/p.json".into(),
                mode: 0o644,
            },
            StoreError::InsecureDirectory {
                path: "/s".into(),
                mode: 0o777,
            },
            StoreError::WrongOwner {
                path: "/s/p.json".into(),
                owner: 65534,
                expected: 0,
            },
            StoreError::Symlink {
                path: "/s/p.json.lock".into(),
            },
            StoreError::LockTimeout {
                what: "store",
                provider: "p".into(),
                id: None,
                waited: Duration::from_secs(10),
            },
            StoreError::Backend {
                source: "db down".into(),
                retryable: false,
            },
        ]
    }

    #[test]
    fn unavailable_and_contention_never_overlap() {
        let names = |pick: fn(&StoreError) -> bool| -> Vec<String> {
            one_of_each()
                .iter()
                .filter(|e| pick(e))
                .map(|e| {
                    format!("{e:?}")
                        .split([' ', '('])
                        .next()
                        .unwrap_or("")
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(
            names(StoreError::is_contention),
            ["Conflict", "LockTimeout"]
        );
        assert_eq!(
            names(StoreError::is_unavailable),
            [
                "Io",
                "Corrupt",
                "UnsupportedSchema",
                "InsecurePermissions",
                "InsecureDirectory",
                "WrongOwner",
                "Symlink",
                "Backend"
            ]
        );
        for e in one_of_each() {
            assert!(!(e.is_contention() && e.is_unavailable()), "{e:?}");
        }
        // Transient (retry later) versus needs a human, among the unavailable ones.
        assert_eq!(names(|e| e.is_unavailable() && e.is_retryable()), ["Io"]);
    }

    #[test]
    fn hardening_messages_name_the_path_and_the_fix() {
        let dir = StoreError::InsecureDirectory {
            path: "/var/lib/app/oauth".into(),
            mode: 0o777,
        };
        assert_eq!(
            dir.to_string(),
            "credential store directory /var/lib/app/oauth is writable by group or others \
             (mode 0777); anyone who can write there can replace the stored credentials: \
             run `chmod 700 /var/lib/app/oauth`"
        );
        let owner = StoreError::WrongOwner {
            path: "/s/p.json".into(),
            owner: 65534,
            expected: 1000,
        };
        assert_eq!(
            owner.to_string(),
            "credential store path /s/p.json is owned by uid 65534, not by this process's user \
             (uid 1000): run `chown 1000 /s/p.json` or run as its owner"
        );
        let link = StoreError::Symlink {
            path: "/s/p.json.lock".into(),
        };
        assert_eq!(
            link.to_string(),
            "credential store path /s/p.json.lock is a symbolic link, which the store does not \
             follow: replace it with the file it points to, or remove it"
        );
    }
}
