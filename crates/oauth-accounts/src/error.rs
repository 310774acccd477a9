//! The error of reading and writing account files.

use std::path::PathBuf;

use oauth_store::StoreError;
use thiserror::Error;

/// Reading or writing an account file failed.
///
/// Messages name the file and say what is wrong and where (line and column), never the file's
/// content: account files hold tokens.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The file exists but is not a valid account file of its format (not JSON, truncated, a
    /// required field missing or of the wrong type). It is never overwritten.
    #[error("malformed account file {}: {detail}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong and where; never the file's content.
        detail: String,
    },
    /// The file is JSON but in none of the formats this crate reads.
    #[error(
        "account file {} is in no format this crate reads (Gemini CLI, Claude Code, Codex, \
         Qwen Code, or a CLIProxyAPI file with a \"type\" field)",
        .path.display()
    )]
    Unrecognized {
        /// The file.
        path: PathBuf,
    },
    /// Reading, writing or locking the file failed.
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A single-file store was asked to keep another account than the one its file holds.
    #[error(
        "{} holds account {held_provider}/{held_id}, not {provider}/{id}",
        .path.display()
    )]
    WrongAccount {
        /// The file.
        path: PathBuf,
        /// The provider the file's account belongs to.
        held_provider: String,
        /// The id of the file's account.
        held_id: String,
        /// The provider asked for.
        provider: String,
        /// The id asked for.
        id: String,
    },
    /// A new account file cannot be named after this id (it must be made of `A-Z a-z 0-9 . _ -`,
    /// must not start with a dot and must not contain `@`).
    #[error(
        "cannot name an account file after id {id:?}: use only A-Z a-z 0-9 . _ - (no leading dot)"
    )]
    UnsafeFileName {
        /// The id.
        id: String,
    },
}

impl AccountError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Self::Malformed {
            path: path.into(),
            detail: detail.into(),
        }
    }

    /// The file concerned, when there is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Malformed { path, .. }
            | Self::Unrecognized { path }
            | Self::Io { path, .. }
            | Self::WrongAccount { path, .. } => Some(path),
            Self::UnsafeFileName { .. } => None,
        }
    }
}

impl From<AccountError> for StoreError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Malformed { path, detail } => StoreError::Corrupt { path, detail },
            AccountError::Unrecognized { path } => StoreError::Corrupt {
                path,
                detail: "in no account file format this crate reads".to_owned(),
            },
            AccountError::Io { path, source } => StoreError::Io { path, source },
            other @ (AccountError::WrongAccount { .. } | AccountError::UnsafeFileName { .. }) => {
                StoreError::Backend {
                    source: Box::new(other),
                    retryable: false,
                }
            }
        }
    }
}

/// Describes a JSON error by kind and position only: serde_json's own messages can quote values
/// from the file, and the file holds tokens.
pub(crate) fn describe_json(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "read error",
        Category::Syntax => "invalid JSON",
        Category::Data => "unexpected content",
        Category::Eof => "unexpected end of data (truncated file?)",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_do_not_quote_content() {
        let err = serde_json::from_str::<serde_json::Value>(r#"{"access_token": "sk-SECRET"#)
            .expect_err("truncated");
        let text = describe_json(&err);
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.starts_with("unexpected end"), "{text}");
    }

    #[test]
    fn converts_to_store_errors() {
        let e: StoreError = AccountError::malformed("/a/b.json", "no access token").into();
        assert!(matches!(e, StoreError::Corrupt { .. }));
        assert!(e.to_string().contains("/a/b.json"));
        let e: StoreError = AccountError::UnsafeFileName { id: "a@b".into() }.into();
        assert!(!e.is_retryable());
    }
}
