//! The accounts people already have: the official CLIs' credential files (Gemini CLI, Claude
//! Code, Codex, Qwen Code) and CLIProxyAPI-style account directories, as an
//! [`oauth_store::CredentialStore`] a pool loads its credentials from and writes refreshed tokens
//! back to — in each CLI's own format, so the CLI keeps working on the same login.
//!
//! - [`Format`]: the five file formats, each read into a [`Credential`](oauth_core::Credential)
//!   (tokens, expiry, scopes, and [`metadata`](oauth_core::Credential::metadata): account id,
//!   id token, resource URL, e-mail and plan where the file or its id token holds them) and
//!   written back into the file's own JSON object, changing only the known fields.
//! - [`AccountDir`]: a watched directory with one file per account; files dropped in join, changed
//!   files are adopted, removed files leave, announced on
//!   [`changes`](oauth_store::CredentialStore::changes).
//! - [`CliFile`]: one CLI's own file as a one-account store (`CliFile::gemini(path)`).
//!
//! Both write back with compare-and-set **on the file's content**: a save whose expected version
//! is not the one of what the file holds now is refused, and the file is re-read just before the
//! rename, so a CLI's concurrent refresh is never overwritten with older tokens. Writes are
//! durable (temporary file in the same directory, fsync, rename, directory fsync) and keep the
//! file's permission bits. A malformed file is a typed error naming the file — never quoting it —
//! and is never overwritten.
//!
//! ```
//! use oauth_accounts::{CliFile, providers};
//! use oauth_store::CredentialStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let path = dir.path().join("oauth_creds.json"); // ~/.gemini/oauth_creds.json
//! std::fs::write(&path, r#"{"access_token": "ya29.a", "refresh_token": "1//r",
//!     "expiry_date": 1767225600000, "token_type": "Bearer", "project": "kept"}"#)?;
//! let store = CliFile::gemini(&path)?;
//! let stored = store.load(providers::GEMINI, store.id()).await?.expect("the CLI's account");
//!
//! // The pool refreshed: written back in the CLI's format, unknown fields kept.
//! let refreshed = stored.value.clone().with_refresh_token("1//rotated");
//! let v2 = store.save(providers::GEMINI, &refreshed, Some(stored.version)).await?;
//! let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
//! assert_eq!(json["refresh_token"], "1//rotated");
//! assert_eq!(json["project"], "kept");
//!
//! // A write based on the old content (the CLI refreshed meanwhile) is refused.
//! let stale = store.save(providers::GEMINI, &stored.value, Some(stored.version)).await;
//! assert!(stale.expect_err("stale").is_conflict());
//! assert!(!format!("{store:?}").contains("1//"));
//! # let _ = v2;
//! # Ok(())
//! # }
//! ```
//!
//! # What a refresher sharing a CLI's file must do
//! The protocol every writer follows (the pool's refresh flight, a `CredentialProvider`, a helper
//! process): take the store's [`refresh_lock`](oauth_store::CredentialStore::refresh_lock), **re-read**
//! the account with [`load`](oauth_store::CredentialStore::load); if its refresh token differs from
//! the one you were about to spend, the CLI (or another process) refreshed — adopt its tokens and
//! do not refresh; otherwise refresh and save with the version you just read. A
//! [`Conflict`](oauth_store::StoreError::Conflict) means the file changed after the re-read: load
//! it again and adopt it (the refresh token you spent is gone either way; the file's is newer).
//!
//! # Implementing another format
//! Formats are a closed enum; to read another CLI's file, write a [`CredentialStore`]
//! (oauth_store's trait docs say how) or convert the file to the CLIProxyAPI shape (`"type"` plus
//! flat `access_token`, `refresh_token`, `expired`).
//!
//! [`CredentialStore`]: oauth_store::CredentialStore

mod engine;
mod error;
mod format;
mod fsio;
mod jwt;
mod order;
mod stores;

pub use engine::Problem;
pub use error::AccountError;
pub use format::{
    Account, Format, cliproxy_type_of_provider, provider_of_cliproxy_type, providers,
};
pub use stores::{AccountDir, CliFile};
