//! The store and refresh-lock traits and the types they exchange.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oauth_core::{Credential, CredentialId};
use tokio::sync::{broadcast, watch};

use crate::StoreError;

/// A credential's generation in a store: 1 when created, one more on every successful write.
///
/// A credential deleted and created again continues from the deleted one's version, so a writer
/// holding a version of the old credential can never overwrite the new one.
pub type Version = u64;

/// A value together with the store version it was read at (or written as).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version in the store.
    pub version: Version,
}

impl<T> Versioned<T> {
    /// Pairs a value with its version.
    pub fn new(value: T, version: Version) -> Self {
        Self { value, version }
    }
}

/// Where a credential pool keeps its credentials, so rotated refresh tokens survive restarts and are
/// shared by every process using the same store.
///
/// Credentials are grouped by provider (`"anthropic"`, `"openai"`); ids are unique within one
/// provider. Every write is a compare-and-set on the credential's [`Version`], so a writer holding
/// an old snapshot can never overwrite a newer token.
///
/// Implementations must be linearizable per provider: once `save` returned a version, every later
/// `load` (from any process sharing the store) sees that write or a newer one.
#[async_trait]
pub trait CredentialStore: Send + Sync + fmt::Debug {
    /// Every credential of `provider` with its version, sorted by id. A provider with nothing
    /// stored yields an empty list.
    async fn load_all(&self, provider: &str) -> Result<Vec<Versioned<Credential>>, StoreError>;

    /// One credential with its version, or `None` when it is not stored.
    async fn load(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<Versioned<Credential>>, StoreError>;

    /// Compare-and-set: `expected = None` creates (fails with [`StoreError::Conflict`] if the
    /// credential exists); `Some(v)` replaces only if the stored version is `v`. Returns the new
    /// version. On any error the stored credential is unchanged.
    async fn save(
        &self,
        provider: &str,
        credential: &Credential,
        expected: Option<Version>,
    ) -> Result<Version, StoreError>;

    /// Removes a credential: `expected = None` removes whatever version is stored; `Some(v)` only
    /// version `v` ([`StoreError::Conflict`] otherwise). [`StoreError::NotFound`] when there is
    /// nothing to remove.
    async fn delete(
        &self,
        provider: &str,
        id: &CredentialId,
        expected: Option<Version>,
    ) -> Result<(), StoreError>;

    /// Cheap change detection: the current version of every stored credential of `provider`. A
    /// manager polls this and reloads the credentials whose version moved (another process
    /// refreshed them, a CLI re-authorized them).
    async fn versions(&self, provider: &str)
    -> Result<BTreeMap<CredentialId, Version>, StoreError>;

    /// The store's cross-process refresh lock, if it has one.
    fn refresh_lock(&self) -> Option<Arc<dyn RefreshLock>> {
        None
    }

    /// A feed of changes other writers make (another replica refreshed a token, a CLI rewrote an
    /// account file, a file was dropped into a watched directory), so a pool adopts them at once
    /// instead of at its next [`versions`](Self::versions) poll. `None` for stores without one;
    /// a pool then relies on polling. A lagging receiver must treat the gap as
    /// [`StoreChange::Resync`].
    fn changes(&self) -> Option<broadcast::Receiver<StoreChange>> {
        None
    }

    /// Whether the store's backend is reachable now, for stores that can tell (a database: its
    /// connection; `true` while up), as a `watch` receiver whose `changed()` wakes on every
    /// transition. A pool follows it to report an outage (an event, a gauge, its health report)
    /// while it keeps serving the tokens it holds. `None` (the default) for stores without a
    /// backend to lose (memory) or whose failures show only per call (files).
    fn connection_status(&self) -> Option<watch::Receiver<bool>> {
        None
    }

    /// Shares a rate-limit cooldown seen by this process with every process using the store, so
    /// they stop sending to that account too (delivered to them as [`StoreChange::CooledDown`]).
    /// Stores used by one process only keep the default, which does nothing.
    async fn publish_cooldown(
        &self,
        provider: &str,
        id: &CredentialId,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _ = (provider, id, until);
        Ok(())
    }

    /// Shares a change of a credential's state made by this process (an operator disabled or
    /// enabled it, its refresh token was found dead) with every process using the store, so they
    /// stop (or resume) using it too (delivered to them as [`StoreChange::StateChanged`]).
    /// `version` is the stored version the state was decided at, when known: a needs-re-authorization
    /// decided on an older refresh token than a receiver holds does not apply to it. Stores used
    /// by one process only keep the default, which does nothing.
    async fn publish_state(
        &self,
        provider: &str,
        id: &CredentialId,
        state: SharedState,
        version: Option<Version>,
    ) -> Result<(), StoreError> {
        let _ = (provider, id, state, version);
        Ok(())
    }

    /// The states published for `provider`'s credentials that the store keeps: for each
    /// credential the latest of each [`aspect`](SharedState::aspect) (so a disable followed by an
    /// enable is kept as the enable), oldest first. A process re-reads them after missing
    /// notifications (a lost connection, a start after the change) and at its maintenance tick,
    /// so a state published while it was not listening still reaches it. Deleting a credential
    /// forgets its states. Stores that keep none (the default) return an empty list.
    async fn shared_states(&self, provider: &str) -> Result<Vec<SharedStateRecord>, StoreError> {
        let _ = provider;
        Ok(Vec::new())
    }

    /// The cooldowns published for `provider`'s credentials that the store keeps, each with the
    /// latest end published: what a process re-reads at its maintenance tick, so a cooldown it
    /// missed on the feed still keeps it off the account. A store with a clock (a database)
    /// returns only those not ended; others may return ended ones too, which readers ignore.
    /// Stores that keep none (the default) return an empty map.
    async fn active_cooldowns(
        &self,
        provider: &str,
    ) -> Result<BTreeMap<CredentialId, DateTime<Utc>>, StoreError> {
        let _ = provider;
        Ok(BTreeMap::new())
    }
}

/// One kept shared state, from [`CredentialStore::shared_states`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedStateRecord {
    /// The credential.
    pub id: CredentialId,
    /// Its latest state of this aspect.
    pub state: SharedState,
    /// The stored version it was decided at, when known.
    pub version: Option<Version>,
}

impl SharedStateRecord {
    /// A record of `state` for `id`, decided at `version`.
    pub fn new(id: CredentialId, state: SharedState, version: Option<Version>) -> Self {
        Self { id, state, version }
    }
}

/// A credential state one process shares with the others using the same store
/// ([`CredentialStore::publish_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SharedState {
    /// Taken out of rotation by an operator.
    Disabled,
    /// Put back into rotation by an operator.
    Enabled,
    /// Its refresh token was rejected as dead (invalid_grant): nobody should present it again.
    NeedsReauthorization,
}

impl SharedState {
    /// A short stable name, for wire formats and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Enabled => "enabled",
            Self::NeedsReauthorization => "needs_reauthorization",
        }
    }

    /// What the state is about: states of the same aspect replace each other (an enable undoes a
    /// disable), states of different aspects do not (enabling does not revive a dead grant).
    /// `"enablement"` for [`Disabled`](Self::Disabled) and [`Enabled`](Self::Enabled), `"grant"`
    /// for [`NeedsReauthorization`](Self::NeedsReauthorization).
    pub const fn aspect(self) -> &'static str {
        match self {
            Self::Disabled | Self::Enabled => "enablement",
            Self::NeedsReauthorization => "grant",
        }
    }

    /// The state named by [`as_str`](Self::as_str), if any.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "disabled" => Some(Self::Disabled),
            "enabled" => Some(Self::Enabled),
            "needs_reauthorization" => Some(Self::NeedsReauthorization),
            _ => None,
        }
    }
}

/// A change to a store's contents, from [`CredentialStore::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreChange {
    /// A credential was created or changed: reload it.
    Changed {
        /// Its provider.
        provider: String,
        /// The credential.
        id: CredentialId,
    },
    /// A credential was removed.
    Removed {
        /// Its provider.
        provider: String,
        /// The credential.
        id: CredentialId,
    },
    /// Another process saw a rate limit on this credential: keep off it until `until` (wall
    /// time, as processes on several hosts share no monotonic clock).
    CooledDown {
        /// Its provider.
        provider: String,
        /// The credential.
        id: CredentialId,
        /// End of the cooldown.
        until: DateTime<Utc>,
    },
    /// Another process changed this credential's state (disabled, enabled, found its grant
    /// dead): adopt it without publishing it again.
    StateChanged {
        /// Its provider.
        provider: String,
        /// The credential.
        id: CredentialId,
        /// The new state.
        state: SharedState,
        /// The stored version the state was decided at, when known.
        version: Option<Version>,
    },
    /// Changes may have been missed (the feed reconnected or lagged): reload everything of
    /// `provider`.
    Resync {
        /// The provider.
        provider: String,
    },
}

/// A per-credential lock that processes sharing a store take before refreshing a credential, so that
/// one of them refreshes and the others find the new token when they re-read the store.
///
/// The refresh protocol: take the lock, re-read the credential with [`CredentialStore::load`], skip
/// the refresh if it no longer needs one, otherwise refresh and save with the version just read,
/// then drop the guard. A lock only makes duplicate refreshes rare; the version compare-and-set on
/// save is what keeps a stale writer from overwriting a newer token.
#[async_trait]
pub trait RefreshLock: Send + Sync + fmt::Debug {
    /// Waits (asynchronously) until this caller holds the refresh lock of one credential, or
    /// `timeout` passes ([`StoreError::LockTimeout`]). The lock is released when the guard drops.
    async fn acquire(
        &self,
        provider: &str,
        id: &CredentialId,
        timeout: Duration,
    ) -> Result<RefreshGuard, StoreError>;

    /// One attempt, without waiting: `Ok(Some(guard))` when the lock was free, `Ok(None)` when
    /// someone else holds it. A pool uses it when its current access token still works: it does
    /// not wait for another holder's refresh then, it keeps serving and adopts the holder's
    /// result when it reaches the store.
    ///
    /// The default makes one [`acquire`](Self::acquire) with a zero timeout and maps
    /// [`StoreError::LockTimeout`] to `Ok(None)`; implementations with a cheaper probe override
    /// it.
    ///
    /// # Errors
    /// What [`acquire`](Self::acquire) returns other than a timeout (the store cannot be
    /// reached, a lock file cannot be opened): unlike `Ok(None)`, that says nothing about other
    /// holders.
    async fn try_acquire(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<RefreshGuard>, StoreError> {
        match self.acquire(provider, id, Duration::ZERO).await {
            Ok(guard) => Ok(Some(guard)),
            Err(StoreError::LockTimeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Proof of holding a [`RefreshLock`]; dropping it releases the lock.
///
/// Implementations build one with [`RefreshGuard::new`], handing it whatever releases the lock (a
/// locked file, a mutex guard, a task that clears a lease row).
#[must_use = "the refresh lock is released as soon as the guard is dropped"]
pub struct RefreshGuard {
    provider: String,
    id: CredentialId,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl RefreshGuard {
    /// A guard for the lock of `provider`/`id` that calls `release` exactly once, when dropped.
    pub fn new(
        provider: impl Into<String>,
        id: CredentialId,
        release: impl FnOnce() + Send + Sync + 'static,
    ) -> Self {
        Self {
            provider: provider.into(),
            id,
            release: Some(Box::new(release)),
        }
    }

    /// The provider whose credential is locked.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The locked credential.
    pub fn id(&self) -> &CredentialId {
        &self.id
    }
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl fmt::Debug for RefreshGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshGuard")
            .field("provider", &self.provider)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A shared store is a store (so `Arc<FileStore>` plugs in wherever one is taken).
#[async_trait]
impl<S: CredentialStore + ?Sized> CredentialStore for Arc<S> {
    async fn load_all(&self, provider: &str) -> Result<Vec<Versioned<Credential>>, StoreError> {
        (**self).load_all(provider).await
    }

    async fn load(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<Versioned<Credential>>, StoreError> {
        (**self).load(provider, id).await
    }

    async fn save(
        &self,
        provider: &str,
        credential: &Credential,
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        (**self).save(provider, credential, expected).await
    }

    async fn delete(
        &self,
        provider: &str,
        id: &CredentialId,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        (**self).delete(provider, id, expected).await
    }

    async fn versions(
        &self,
        provider: &str,
    ) -> Result<BTreeMap<CredentialId, Version>, StoreError> {
        (**self).versions(provider).await
    }

    fn refresh_lock(&self) -> Option<Arc<dyn RefreshLock>> {
        (**self).refresh_lock()
    }

    fn changes(&self) -> Option<broadcast::Receiver<StoreChange>> {
        (**self).changes()
    }

    fn connection_status(&self) -> Option<watch::Receiver<bool>> {
        (**self).connection_status()
    }

    async fn publish_cooldown(
        &self,
        provider: &str,
        id: &CredentialId,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        (**self).publish_cooldown(provider, id, until).await
    }

    async fn publish_state(
        &self,
        provider: &str,
        id: &CredentialId,
        state: SharedState,
        version: Option<Version>,
    ) -> Result<(), StoreError> {
        (**self).publish_state(provider, id, state, version).await
    }

    async fn shared_states(&self, provider: &str) -> Result<Vec<SharedStateRecord>, StoreError> {
        (**self).shared_states(provider).await
    }

    async fn active_cooldowns(
        &self,
        provider: &str,
    ) -> Result<BTreeMap<CredentialId, DateTime<Utc>>, StoreError> {
        (**self).active_cooldowns(provider).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn guard_releases_once_on_drop() {
        let released = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&released);
        let guard = RefreshGuard::new("p", CredentialId::new("a").expect("id"), move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(guard.provider(), "p");
        assert_eq!(guard.id(), "a");
        assert_eq!(
            format!("{guard:?}"),
            r#"RefreshGuard { provider: "p", id: "a", .. }"#
        );
        assert_eq!(released.load(Ordering::SeqCst), 0);
        drop(guard);
        assert_eq!(released.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn connection_status_defaults_to_none_and_passes_through_arc() {
        let memory: Arc<dyn CredentialStore> = Arc::new(crate::MemoryStore::new());
        assert!(memory.connection_status().is_none());
        let store = Arc::new(crate::conformance::WithConnectionStatus::new(true));
        let shared: Arc<dyn CredentialStore> = Arc::new(Arc::clone(&store));
        let status = shared.connection_status().expect("forwarded");
        assert!(*status.borrow());
        store.set_connected(false);
        assert!(!*status.borrow());
    }

    #[test]
    fn traits_are_dyn_compatible() {
        fn takes(_: Option<Arc<dyn CredentialStore>>, _: Option<Arc<dyn RefreshLock>>) {}
        takes(None, None);
    }
}
