//! Durable credential persistence for the OAuth credential pool: a rotated refresh token, once
//! saved, is never lost and never overwritten by an older one.
//!
//! - [`CredentialStore`]: the async, dyn-compatible trait. Every credential carries a [`Version`];
//!   every write is a compare-and-set against it, so a writer holding an old snapshot gets
//!   [`StoreError::Conflict`] instead of overwriting a newer token. [`CredentialStore::versions`] is
//!   the cheap poll that tells a pool which credentials changed outside its process.
//! - [`RefreshLock`]: the per-credential lock processes sharing a store take before refreshing, so
//!   one refreshes and the others re-read its result. [`RefreshGuard`] releases it on drop.
//! - [`MemoryStore`]: the in-memory reference implementation.
//! - [`FileStore`]: the embedded default; one JSON file per provider, atomic crash-safe writes,
//!   mode `0600`, cross-process locking for the processes of **one host**.
//!
//! ```
//! use chrono::Utc;
//! use oauth_core::Credential;
//! use oauth_store::{CredentialStore, FileStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = FileStore::open(dir.path())?;
//! let cred = Credential::new("team", "access-1", Utc::now())?.with_refresh_token("refresh-1");
//! let v1 = store.save("anthropic", &cred, None).await?; // create
//! assert_eq!(v1, 1);
//!
//! // Another process rotated the token meanwhile: our stale write is refused.
//! let rotated = cred.clone().with_refresh_token("refresh-2");
//! store.save("anthropic", &rotated, Some(v1)).await?;
//! let stale = store.save("anthropic", &cred, Some(v1)).await.expect_err("stale write");
//! assert!(stale.is_conflict());
//! assert!(!stale.to_string().contains("refresh-"));
//!
//! let stored = store.load("anthropic", &cred.id).await?.expect("stored");
//! assert_eq!(stored.version, 2);
//! assert!(stored.value.same_tokens(&rotated));
//! # Ok(())
//! # }
//! ```
//!
//! # Implementing [`CredentialStore`]
//! Keep a version per credential, starting at 1 and growing by one on every write, and make
//! [`save`](CredentialStore::save) and [`delete`](CredentialStore::delete) a single atomic
//! compare-and-set against it (in SQL: `UPDATE … SET version = version + 1 WHERE version = $expected`;
//! zero rows is a [`StoreError::Conflict`]). Persist secrets deliberately through
//! [`Credential::persisted`](oauth_core::Credential::persisted) and read them back with plain
//! `Deserialize`; never put a token in an error. Report backend failures as
//! [`StoreError::Backend`], saying whether a retry may help. If processes on several hosts share
//! the store, return a [`RefreshLock`] from [`refresh_lock`](CredentialStore::refresh_lock) (for
//! example a lease row with an owner, a fence counter and an expiry on the database clock), built
//! on [`RefreshGuard::new`]; a store whose backend can be unreachable (a database) reports it
//! through [`connection_status`](CredentialStore::connection_status). The lock only makes
//! duplicate refreshes rare; the version check keeps them harmless. The contract is spelled out case by case in the conformance suite, module
//! `conformance` behind this crate's `conformance` feature, which both stores here pass; run it
//! against a new store with `oauth_store::conformance_tests!` from its tests.

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod file;
mod memory;
mod store;
mod table;

pub use error::StoreError;
pub use file::{FileRefreshLock, FileStore, SCHEMA_VERSION};
pub use memory::{MemoryRefreshLock, MemoryStore};
pub use store::{
    CredentialStore, RefreshGuard, RefreshLock, SharedState, SharedStateRecord, StoreChange,
    Version, Versioned,
};

/// Rejects provider names no store can keep (the empty one).
fn check_provider(provider: &str) -> Result<(), StoreError> {
    if provider.is_empty() {
        return Err(StoreError::InvalidProvider {
            provider: provider.to_owned(),
        });
    }
    Ok(())
}
