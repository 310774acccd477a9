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

    /// True when the same operation may succeed if retried later without other changes: I/O errors,
    /// lock timeouts, and backend errors that say so. A conflict is not retryable as is (re-read
    /// first); corruption, bad permissions and unsupported schemas need a human.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io { .. } | Self::LockTimeout { .. } => true,
            Self::Backend { retryable, .. } => *retryable,
            Self::Conflict { .. }
            | Self::NotFound { .. }
            | Self::InvalidProvider { .. }
            | Self::Corrupt { .. }
            | Self::UnsupportedSchema { .. }
            | Self::InsecurePermissions { .. } => false,
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
}
