//! Refreshing and persistence: the refresher, refresh flights (oauth-refresh's protocol, driven
//! with this pool's "read" and "commit"), the store, the credential provider and pending saves.
//!
//! The 401-and-refresh path, in one line: `execute` → [`Refreshing::refresh`] →
//! [`RefreshCoordinator::refresh`] (single flight) → [`SlotRefresh::read`] (store and provider
//! re-read) → [`SlotRefresh::check`] → `Refresher::refresh` → [`SlotRefresh::commit`] (store
//! compare-and-set, provider update, then publication) → back to `execute`, which retries once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oauth_core::{Credential, CredentialId, EventKind, FailureKind, HealthChange};
use oauth_metrics::RefreshResult;
use oauth_refresh::{Committed, RefreshCoordinator, RefreshError, RefreshTarget, Refresher};
use oauth_store::{CredentialStore, RefreshGuard, StoreError};

use crate::error::{ProviderError, ReauthorizeError};
use crate::manager::OAuthKeyManager;
use crate::provider::{CredentialProvider, NoProvider};
use crate::selection::Slot;
use crate::sharing::{Outgoing, Sharing};

/// How long a process whose token no longer works waits for another process's refresh of the
/// same credential (within the flight's own timeout).
const CROSS_PROCESS_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a refresh lock seen held by another process is taken as still held, for callers
/// whose token still works: they defer to the holder without asking the store again (the lease's
/// own poll interval). Forgotten earlier when the credential changes or this process takes the
/// lock.
const HELD_ELSEWHERE_FOR_MS: i64 = 250;

/// What the pool does when its store cannot be used (I/O error, read-only or full file system)
/// at the start of a refresh. The builder picks `FailClosed` for a store with a change feed
/// (shared between processes) and `RefreshInMemory` for the others, unless told otherwise
/// ([`OAuthKeyManagerBuilder::store_outage`](crate::OAuthKeyManagerBuilder::store_outage)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StoreOutage {
    /// Keep refreshing in memory (`Default`): the refreshed token is kept, saved when the store
    /// recovers, and `PersistenceFailed`/`StoreUnavailable` are reported. Right for a store only
    /// this process uses.
    #[default]
    RefreshInMemory,
    /// Refuse to refresh while the store cannot be read (fail closed): for stores shared between
    /// processes, where refreshing without the store's lock and re-read could present a refresh
    /// token another process already exchanged.
    FailClosed,
}

/// Why a refresh is wanted; re-checked inside the flight against the current credential, so a
/// refresh token that another caller (or process) already exchanged is never presented again.
#[derive(Debug, Clone)]
pub(crate) enum RefreshNeed {
    /// The refresh strategy says the token expires soon.
    Strategy,
    /// The provider rejected this credential's access token (401): refresh unless it has changed
    /// since.
    Rejected(Arc<Credential>),
    /// Maintenance refreshes idle credentials this long before the strategy would.
    Ahead(Duration),
    /// An explicit request.
    Forced,
}

impl RefreshNeed {
    /// Whether a caller with this need waits for another process's refresh of the credential
    /// (for its result) rather than go on with the token it holds: after a 401, for an explicit
    /// request, and when the access token no longer works at `now`.
    fn waits(&self, current: &Credential, now: DateTime<Utc>) -> bool {
        match self {
            Self::Rejected(_) | Self::Forced => true,
            Self::Strategy | Self::Ahead(_) => !current.access_token_valid(now),
        }
    }

    fn as_str(&self) -> &'static str {
        match self {
            Self::Strategy => "expiring",
            Self::Rejected(_) => "rejected",
            Self::Ahead(_) => "ahead",
            Self::Forced => "forced",
        }
    }
}

/// Where an externally changed credential comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin {
    /// The store, at this version.
    Store {
        /// The stored version.
        version: u64,
    },
    /// The credential provider.
    Provider,
}

struct RefresherCell(Arc<dyn Refresher>);
struct ProviderCell(Arc<dyn CredentialProvider>);

/// The refreshing component.
pub(crate) struct Refreshing {
    provider: String,
    refresher: ArcSwap<RefresherCell>,
    coordinator: RefreshCoordinator,
    store: Arc<dyn CredentialStore>,
    credential_provider: ArcSwap<ProviderCell>,
    outage: StoreOutage,
    /// The store shares changes between processes (it has a change feed): rate-limit cooldowns
    /// and state changes decided here are published to it.
    shared: bool,
    /// The queue of decisions published to the store.
    sharing: Arc<Sharing>,
    /// The store's connection status, for stores that report one.
    status: Option<tokio::sync::watch::Receiver<bool>>,
    /// Credentials whose refresh lock another process was seen holding, until when (the
    /// manager's timeline, ms): callers whose token still works defer to the holder.
    held_elsewhere: Mutex<HashMap<CredentialId, i64>>,
    /// Woken when a credential is added to `held_elsewhere`: callers that joined a flight now
    /// waiting for the other holder stop waiting for it.
    held_seen: tokio::sync::Notify,
}

impl std::fmt::Debug for Refreshing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refreshing")
            .field("refresher", &self.refresher.load().0)
            .field("store", &self.store)
            .field("coordinator", &self.coordinator)
            .finish_non_exhaustive()
    }
}

impl Refreshing {
    pub(crate) fn new(
        provider: String,
        refresher: Arc<dyn Refresher>,
        coordinator: RefreshCoordinator,
        store: Arc<dyn CredentialStore>,
        credential_provider: Arc<dyn CredentialProvider>,
        outage: StoreOutage,
    ) -> Self {
        let shared = store.changes().is_some();
        let status = store.connection_status();
        let sharing = Arc::new(Sharing::new(Arc::clone(&store), provider.clone()));
        Self {
            provider,
            refresher: ArcSwap::from_pointee(RefresherCell(refresher)),
            coordinator,
            store,
            credential_provider: ArcSwap::from_pointee(ProviderCell(credential_provider)),
            outage,
            shared,
            sharing,
            status,
            held_elsewhere: Mutex::default(),
            held_seen: tokio::sync::Notify::new(),
        }
    }

    /// The store's connection status, if it reports one (a receiver of its own).
    pub(crate) fn connection_status(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.status.clone()
    }

    /// Whether the store is reachable now, if it can tell.
    pub(crate) fn store_connected(&self) -> Option<bool> {
        self.status.as_ref().map(|rx| *rx.borrow())
    }

    /// The store's change feed, if it has one.
    pub(crate) fn changes(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<oauth_store::StoreChange>> {
        self.store.changes()
    }

    /// Shares a cooldown with the other processes using the store (queued, in order, retried;
    /// nothing for a store without a change feed). `now` is the wall time.
    pub(crate) fn publish_cooldown(
        &self,
        id: &oauth_core::CredentialId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        if self.shared {
            let id = id.clone();
            self.sharing.share(Outgoing::Cooldown { id, until }, now);
        }
    }

    /// Shares a credential's state (disabled, enabled, dead grant) with the other processes using
    /// the store, as decided at stored `version` (queued, in order, retried; nothing for a store
    /// without a change feed). `now` is the wall time.
    pub(crate) fn publish_state(
        &self,
        id: &oauth_core::CredentialId,
        state: oauth_store::SharedState,
        version: Option<u64>,
        now: DateTime<Utc>,
    ) {
        if self.shared {
            let id = id.clone();
            self.sharing
                .share(Outgoing::State { id, state, version }, now);
        }
    }

    /// What this process shares with the others (its queue of unsent decisions).
    pub(crate) fn sharing(&self) -> &Sharing {
        &self.sharing
    }

    /// Sends the decisions still queued (after a failure, or made outside a runtime); true when
    /// none is left.
    pub(crate) async fn flush_shared(&self, now: DateTime<Utc>) -> bool {
        !self.shared || self.sharing.flush_unless_sending(now).await
    }

    /// The cooldowns processes published and the store keeps (none for a store without a change
    /// feed).
    pub(crate) async fn active_cooldowns(
        &self,
    ) -> Result<std::collections::BTreeMap<CredentialId, DateTime<Utc>>, StoreError> {
        if !self.shared {
            return Ok(std::collections::BTreeMap::new());
        }
        self.store.active_cooldowns(&self.provider).await
    }

    /// The states other processes published and the store keeps (none for a store without a
    /// change feed).
    pub(crate) async fn shared_states(
        &self,
    ) -> Result<Vec<oauth_store::SharedStateRecord>, StoreError> {
        if !self.shared {
            return Ok(Vec::new());
        }
        self.store.shared_states(&self.provider).await
    }

    /// One stored credential, for a credential that joined the store from elsewhere.
    pub(crate) async fn load(
        &self,
        id: &oauth_core::CredentialId,
    ) -> Result<Option<oauth_store::Versioned<Credential>>, StoreError> {
        self.store.load(&self.provider, id).await
    }

    pub(crate) fn refresher(&self) -> Arc<dyn Refresher> {
        Arc::clone(&self.refresher.load().0)
    }

    /// Whether refreshing is possible at all (a refresher is configured).
    pub(crate) fn is_configured(&self) -> bool {
        self.refresher.load().0.is_configured()
    }

    pub(crate) fn set_refresher(&self, refresher: Arc<dyn Refresher>) {
        self.refresher.store(Arc::new(RefresherCell(refresher)));
    }

    pub(crate) fn set_credential_provider(&self, provider: Arc<dyn CredentialProvider>) {
        self.credential_provider
            .store(Arc::new(ProviderCell(provider)));
    }

    fn credential_provider(&self) -> Arc<dyn CredentialProvider> {
        Arc::clone(&self.credential_provider.load().0)
    }

    /// All credentials the credential provider holds for this pool's provider.
    pub(crate) async fn provider_credentials(&self) -> Result<Vec<Credential>, ProviderError> {
        self.credential_provider().credentials(&self.provider).await
    }

    /// Saves a new credential ("expected none"); its store version.
    pub(crate) async fn create(&self, credential: &Credential) -> Result<u64, StoreError> {
        self.store.save(&self.provider, credential, None).await
    }

    /// Deletes a credential from the store (nothing stored is fine).
    pub(crate) async fn delete(&self, id: &oauth_core::CredentialId) -> Result<(), StoreError> {
        match self.store.delete(&self.provider, id, None).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// THE refresh of `slot`, shared with every concurrent caller: at most one in flight per
    /// credential (and, with a store that has a refresh lock, across processes). Returns the
    /// credential to use.
    pub(crate) async fn refresh(
        &self,
        manager: &OAuthKeyManager,
        slot: &Arc<Slot>,
        need: RefreshNeed,
    ) -> Result<Arc<Credential>, RefreshError> {
        use tracing::Instrument as _;
        let span = tracing::info_span!(
            "oauth.refresh",
            provider = %self.provider,
            credential = %slot.id,
            need = need.as_str(),
            outcome = tracing::field::Empty,
        );
        let result = self
            .refresh_or_defer(manager, slot, need)
            .instrument(span.clone())
            .await;
        span.record(
            "outcome",
            match &result {
                Ok(outcome) if outcome.refreshed => "refreshed",
                Ok(_) => "current",
                Err(RefreshError::Deferred { .. }) => "deferred",
                Err(e) => e.kind().as_str(),
            },
        );
        result?;
        Ok(slot.credential())
    }

    /// The flight of [`refresh`](Self::refresh), for a caller that waits for another process's
    /// refresh or for one that defers to it.
    ///
    /// A caller whose token still works (`Strategy`, `Ahead`) never waits for another
    /// process: while another process holds the credential's refresh lock (or the shared store
    /// cannot be reached) it gets [`RefreshError::Deferred`] at once, also when it joined a
    /// flight of this process that waits for the other holder, and goes on with its token; the
    /// holder's result arrives through the store. A caller whose token does not work (a 401, an
    /// expired token, `Forced`) waits for the holder (bounded by the lock wait and the flight
    /// timeout) and re-reads; if it joined a flight that deferred, it runs its own.
    async fn refresh_or_defer(
        &self,
        manager: &OAuthKeyManager,
        slot: &Arc<Slot>,
        need: RefreshNeed,
    ) -> Result<oauth_refresh::RefreshOutcome, RefreshError> {
        let waits = need.waits(&slot.credential(), manager.now());
        if !waits && self.defers(manager, &slot.id) {
            return Err(RefreshError::Deferred {
                id: slot.id.clone(),
            });
        }
        // A caller that waits and joined a flight that deferred runs its own: a flight defers
        // only when its caller's token works, so a few rounds at most.
        let mut rounds = 0;
        loop {
            let target = Arc::new(SlotRefresh {
                manager: manager.clone(),
                slot: Arc::clone(slot),
                need: need.clone(),
                waits,
                guard: Mutex::new(None),
            });
            let flight = self.coordinator.refresh(&slot.id, target, self.refresher());
            let result = if waits {
                flight.await
            } else {
                tokio::select! {
                    result = flight => result,
                    () = self.seen_held_elsewhere(manager, &slot.id) => Err(RefreshError::Deferred {
                        id: slot.id.clone(),
                    }),
                }
            };
            rounds += 1;
            match result {
                Err(RefreshError::Deferred { .. }) if waits && rounds < 4 => {}
                other => return other,
            }
        }
    }

    /// Whether callers whose token still works defer the refresh of `id` now, without asking
    /// the store: another process was seen holding its refresh lock a moment ago, or the
    /// shared store reports itself unreachable (a shared store fails closed: nothing would be
    /// refreshed, and asking it could take its connect timeout).
    fn defers(&self, manager: &OAuthKeyManager, id: &CredentialId) -> bool {
        if self.outage == StoreOutage::FailClosed && self.store_connected() == Some(false) {
            return true;
        }
        self.held_elsewhere_now(manager, id)
    }

    fn held_elsewhere_now(&self, manager: &OAuthKeyManager, id: &CredentialId) -> bool {
        let held = lock(&self.held_elsewhere);
        held.get(id)
            .is_some_and(|until| manager.inner.time.now_ms() < *until)
    }

    /// Another process holds `id`'s refresh lock: callers whose token works defer to it for
    /// `for_ms`, and those waiting in a flight of this process stop waiting.
    fn note_held_elsewhere(&self, manager: &OAuthKeyManager, id: &CredentialId, for_ms: i64) {
        let now = manager.inner.time.now_ms();
        let mut held = lock(&self.held_elsewhere);
        // Keep the map to credentials that are held now.
        held.retain(|_, until| now < *until);
        held.insert(id.clone(), now.saturating_add(for_ms));
        drop(held);
        self.held_seen.notify_waiters();
    }

    /// `id` changed, or this process holds its lock: the holder seen before is forgotten.
    fn forget_held_elsewhere(&self, id: &CredentialId) {
        let mut held = lock(&self.held_elsewhere);
        if !held.is_empty() {
            held.remove(id);
        }
    }

    /// Resolves once `id`'s refresh lock has been seen held by another process.
    async fn seen_held_elsewhere(&self, manager: &OAuthKeyManager, id: &CredentialId) {
        loop {
            let seen = self.held_seen.notified();
            tokio::pin!(seen);
            seen.as_mut().enable();
            if self.held_elsewhere_now(manager, id) {
                return;
            }
            seen.await;
        }
    }

    /// Runs `work` inside `slot`'s flight (no refresh of it interleaves) and returns its value.
    async fn exclusive<T, F, Fut>(&self, slot: &Arc<Slot>, work: F) -> Result<T, RefreshError>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + Send + 'static,
    {
        self.coordinator.exclusive(&slot.id, work).await
    }

    /// Installs re-authorized tokens inside the credential's flight.
    pub(crate) async fn reauthorize(
        &self,
        manager: OAuthKeyManager,
        slot: Arc<Slot>,
        credential: Credential,
    ) -> Result<(), ReauthorizeError> {
        let id = slot.id.clone();
        let flight_slot = Arc::clone(&slot);
        let persisted = self
            .exclusive(&slot, move || async move {
                let slot = flight_slot;
                let refreshing = &manager.inner.refreshing;
                let result = refreshing.persist(&slot, &credential).await;
                if result.is_ok() {
                    slot.set_credential(credential);
                    let now = manager.inner.time.health();
                    let ((), published) = slot.with_health(now, |h| h.mark_reauthorized());
                    manager.after_health_change(&slot, Some(HealthChange::Recovered), published);
                }
                result
            })
            .await;
        match persisted {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(ReauthorizeError::Persist { id, reason }),
            Err(e) => Err(ReauthorizeError::Interrupted { id, source: e }),
        }
    }

    /// Retries saving a refreshed credential that could not be persisted; `Some(result)` when
    /// something was pending.
    pub(crate) async fn retry_persistence(
        &self,
        manager: &OAuthKeyManager,
        slot: &Arc<Slot>,
    ) -> Option<Result<(), String>> {
        if !slot.persist_pending() {
            return None;
        }
        let (this, flight_slot) = (manager.clone(), Arc::clone(slot));
        let outcome = self
            .exclusive(slot, move || async move {
                let slot = flight_slot;
                if !slot.persist_pending() || slot.is_removed() {
                    return None;
                }
                let credential = slot.credential();
                let outcome = this.inner.refreshing.persist(&slot, &credential).await;
                if outcome.is_ok() {
                    slot.persisted();
                }
                Some(outcome)
            })
            .await
            .ok()
            .flatten()?;
        if let Err(reason) = &outcome {
            let attempts = slot.record_persistence_failure();
            manager.emit(EventKind::PersistenceFailed {
                credential: slot.id.clone(),
                reason: reason.clone(),
                attempts,
            });
        }
        Some(outcome)
    }

    /// Adopts `cred` (changed outside this process) inside `slot`'s flight; whether it was.
    pub(crate) async fn adopt_in_flight(
        &self,
        manager: &OAuthKeyManager,
        slot: &Arc<Slot>,
        cred: Credential,
        origin: Origin,
    ) -> bool {
        let (this, flight_slot) = (manager.clone(), Arc::clone(slot));
        self.exclusive(slot, move || async move {
            this.inner
                .refreshing
                .adopt_external(&this, &flight_slot, cred, origin)
        })
        .await
        .unwrap_or(false)
    }

    /// Re-reads one credential from the store inside its flight and adopts a newer version.
    pub(crate) async fn adopt_from_store(
        &self,
        manager: &OAuthKeyManager,
        slot: &Arc<Slot>,
    ) -> bool {
        let (this, flight_slot) = (manager.clone(), Arc::clone(slot));
        self.exclusive(slot, move || async move {
            let refreshing = &this.inner.refreshing;
            match refreshing
                .store
                .load(&refreshing.provider, &flight_slot.id)
                .await
            {
                Ok(Some(stored)) if stored.version != flight_slot.version() => refreshing
                    .adopt_external(
                        &this,
                        &flight_slot,
                        stored.value,
                        Origin::Store {
                            version: stored.version,
                        },
                    ),
                _ => false,
            }
        })
        .await
        .unwrap_or(false)
    }

    /// The store's versions, for change detection.
    pub(crate) async fn stored_versions(
        &self,
    ) -> Result<std::collections::BTreeMap<oauth_core::CredentialId, u64>, StoreError> {
        self.store.versions(&self.provider).await
    }

    /// Adopts a credential changed outside this process, if it is newer than the slot's. Runs
    /// inside the credential's flight, so no refresh commits meanwhile. Returns whether it was
    /// adopted.
    ///
    /// - From the store, versions order the copies: a different version is a newer one.
    /// - From a credential provider, which has no versions, the provider's copy is newer when it was
    ///   refreshed later (`last_refresh`) or more often (`refresh_count`), or when this one needs
    ///   re-authorization and the provider's holds another grant (someone re-authorized it). It is
    ///   never adopted while this one waits to be persisted: that one holds the newest tokens, and
    ///   the provider's copy may be the one whose refresh token was just exchanged.
    fn adopt_external(
        &self,
        manager: &OAuthKeyManager,
        slot: &Arc<Slot>,
        cred: Credential,
        origin: Origin,
    ) -> bool {
        if slot.is_removed() {
            return false;
        }
        let current = slot.credential();
        let other_grant = current.refresh_token_differs(&cred);
        let needs_reauth = slot.read_health(|h| h.needs_reauthorization());
        match origin {
            Origin::Store { version } => slot.set_version(version),
            Origin::Provider => {
                if slot.persist_pending() {
                    return false;
                }
                let refreshed_later = cred.last_refresh > current.last_refresh
                    || cred.refresh_count > current.refresh_count;
                if !(refreshed_later || (other_grant && needs_reauth)) {
                    return false;
                }
            }
        }
        if current.same_tokens(&cred) {
            return false;
        }
        slot.set_credential(cred);
        // The holder's result (or someone else's change) is here: nothing to defer to.
        self.forget_held_elsewhere(&slot.id);
        if other_grant {
            let now = manager.inner.time.health();
            let ((), published) = slot.with_health(now, |h| {
                if h.needs_reauthorization() {
                    h.mark_reauthorized();
                }
            });
            manager.after_health_change(slot, None, published);
        }
        manager.emit(EventKind::ExternallyUpdated {
            credential: slot.id.clone(),
        });
        true
    }

    /// Writes `credential` to the store (compare-and-set on the slot's version; on a conflict the
    /// freshly refreshed credential wins, since it holds the newest tokens the server issued,
    /// unless the credential was deleted meanwhile: a removed credential stays removed) and to
    /// the credential provider. Returns a secret-free reason on failure.
    pub(crate) async fn persist(&self, slot: &Slot, credential: &Credential) -> Result<(), String> {
        if slot.is_removed() {
            return Ok(()); // nothing to save: it left the pool
        }
        let expected = Some(slot.version()).filter(|v| *v != 0);
        let saved = match self.store.save(&self.provider, credential, expected).await {
            Err(e) if e.is_conflict() => {
                match self
                    .store
                    .load(&self.provider, &credential.id)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    // Deleted meanwhile (by us or by another process): never re-created.
                    None => return Ok(()),
                    Some(actual) => {
                        self.store
                            .save(&self.provider, credential, Some(actual.version))
                            .await
                    }
                }
            }
            other => other,
        };
        let version = saved.map_err(|e| e.to_string())?;
        slot.set_version(version);
        self.credential_provider()
            .update_credential(&self.provider, credential)
            .await
            // The provider's message is its implementer's text: not passed on to events.
            .map_err(|_| "the credential provider refused the update".to_owned())?;
        Ok(())
    }

    /// Reads the source of truth for `slot` inside its flight (the protocol's "read").
    ///
    /// Another process may be refreshing the same credential: take the store's refresh lock,
    /// then re-read what the store holds. When another process holds the lock, a flight that
    /// `waits` (its caller's token does not work) waits for it and then re-reads, adopting the
    /// holder's result; one that does not ends with [`RefreshError::Deferred`] at once (as it
    /// does when a shared store cannot be reached).
    async fn read(
        &self,
        manager: &OAuthKeyManager,
        slot: &Arc<Slot>,
        waits: bool,
    ) -> Result<Option<(Credential, Option<RefreshGuard>)>, RefreshError> {
        if slot.is_removed() {
            return Ok(None);
        }
        let deferred = || RefreshError::Deferred {
            id: slot.id.clone(),
        };
        let mut guard = None;
        if let Some(lock) = self.store.refresh_lock() {
            if !waits && self.defers(manager, &slot.id) {
                return Err(deferred());
            }
            match lock.try_acquire(&self.provider, &slot.id).await {
                Ok(Some(g)) => guard = Some(g),
                Ok(None) if !waits => {
                    self.note_held_elsewhere(manager, &slot.id, HELD_ELSEWHERE_FOR_MS);
                    return Err(deferred());
                }
                Ok(None) => {
                    // Callers whose token works defer for as long as this flight waits.
                    let _waiting = WaitingForHolder::new(self, manager, &slot.id);
                    match lock
                        .acquire(&self.provider, &slot.id, CROSS_PROCESS_LOCK_TIMEOUT)
                        .await
                    {
                        Ok(g) => guard = Some(g),
                        Err(e) => self.store_trouble(manager, slot, &e)?,
                    }
                }
                Err(e)
                    if !waits && e.is_unavailable() && self.outage == StoreOutage::FailClosed =>
                {
                    return Err(deferred());
                }
                Err(e) => self.store_trouble(manager, slot, &e)?,
            }
            if guard.is_some() {
                self.forget_held_elsewhere(&slot.id);
            }
        }
        match self.store.load(&self.provider, &slot.id).await {
            Ok(Some(stored)) if stored.version != slot.version() => {
                self.adopt_external(
                    manager,
                    slot,
                    stored.value,
                    Origin::Store {
                        version: stored.version,
                    },
                );
            }
            // Stored before, gone now: deleted by another process; never re-created here.
            Ok(None) if slot.version() != 0 => return Ok(None),
            Ok(_) => {}
            Err(e) => self.store_trouble(manager, slot, &e)?,
        }
        if slot.is_removed() {
            return Ok(None);
        }
        Ok(Some(((*slot.credential()).clone(), guard)))
    }

    /// A store error at the start of a refresh: contention stops the refresh; an outage stops it
    /// only when failing closed, and is reported either way.
    fn store_trouble(
        &self,
        manager: &OAuthKeyManager,
        slot: &Slot,
        e: &StoreError,
    ) -> Result<(), RefreshError> {
        let in_memory = e.is_unavailable() && self.outage == StoreOutage::RefreshInMemory;
        if in_memory {
            // Reported here; the refresh goes on in memory. Otherwise the refresh fails and is
            // reported as a refresh failure.
            manager.emit(EventKind::StoreUnavailable {
                credential: slot.id.clone(),
                reason: e.to_string(),
            });
            Ok(())
        } else {
            Err(RefreshError::custom(
                if e.is_retryable() || e.is_unavailable() {
                    FailureKind::Transient
                } else {
                    FailureKind::Misconfigured
                },
                StoreCause(e.to_string()),
            ))
        }
    }
}

/// A flight waiting for another process to release a credential's refresh lock: while it
/// waits, callers whose token works defer to the holder (instead of joining the wait); when it
/// ends, however it ends (lock taken, timed out, flight dropped), they defer for the usual
/// moment only.
struct WaitingForHolder<'a> {
    refreshing: &'a Refreshing,
    manager: &'a OAuthKeyManager,
    id: &'a CredentialId,
}

impl<'a> WaitingForHolder<'a> {
    fn new(refreshing: &'a Refreshing, manager: &'a OAuthKeyManager, id: &'a CredentialId) -> Self {
        refreshing.note_held_elsewhere(manager, id, i64::MAX);
        Self {
            refreshing,
            manager,
            id,
        }
    }
}

impl Drop for WaitingForHolder<'_> {
    fn drop(&mut self) {
        self.refreshing
            .note_held_elsewhere(self.manager, self.id, HELD_ELSEWHERE_FOR_MS);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A store error as a refresh error's source (its text holds no secret: store errors never do).
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
struct StoreCause(String);

/// The protocol's view of one slot, for one flight.
struct SlotRefresh {
    manager: OAuthKeyManager,
    slot: Arc<Slot>,
    need: RefreshNeed,
    /// The caller waits for another process's refresh ([`RefreshNeed::waits`]).
    waits: bool,
    /// The store's cross-process refresh lock, held from the read to the commit.
    guard: Mutex<Option<RefreshGuard>>,
}

impl SlotRefresh {
    fn refreshing(&self) -> &Refreshing {
        &self.manager.inner.refreshing
    }
}

#[async_trait]
impl RefreshTarget for SlotRefresh {
    async fn read(&self) -> Result<Option<Credential>, RefreshError> {
        Ok(
            match self
                .refreshing()
                .read(&self.manager, &self.slot, self.waits)
                .await?
            {
                Some((credential, guard)) => {
                    *self.guard.lock().unwrap_or_else(PoisonError::into_inner) = guard;
                    Some(credential)
                }
                None => None,
            },
        )
    }

    fn check(&self, current: &Credential) -> Result<bool, RefreshError> {
        let forced = matches!(self.need, RefreshNeed::Forced);
        let time = &self.manager.inner.time;
        let health_now = time.health();
        let (dead, backoff) = self.slot.read_health(|h| {
            (
                h.needs_reauthorization() || h.is_misconfigured(),
                h.refresh_backoff_until(health_now),
            )
        });
        if dead && !forced {
            return Ok(false);
        }
        let wall = time.wall();
        let needed = match &self.need {
            RefreshNeed::Strategy => self.manager.needs_refresh_before_use(
                &self.slot,
                current,
                &self.manager.settings().strategy,
                wall,
            ),
            RefreshNeed::Rejected(old) => current.same_tokens(old),
            RefreshNeed::Ahead(ahead) => crate::maintenance::due_ahead(
                &self.manager.settings().strategy,
                current,
                *ahead,
                wall,
            ),
            RefreshNeed::Forced => true,
        };
        match backoff {
            // At most one attempt per backoff step, whatever the call rate.
            Some(until) if needed && !forced => Err(RefreshError::BackingOff {
                id: self.slot.id.clone(),
                until: time.to_wall(until),
            }),
            _ => Ok(needed),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.manager.now()
    }

    async fn commit(
        &self,
        _previous: &Credential,
        refreshed: &Credential,
        change: Committed<'_>,
    ) -> Result<(), RefreshError> {
        let manager = &self.manager;
        let slot = &self.slot;
        if slot.is_removed() {
            return Err(RefreshError::Removed {
                id: slot.id.clone(),
            });
        }
        let persisted = self.refreshing().persist(slot, refreshed).await;
        // Published whatever the store said: the refresh token it replaces is consumed.
        slot.set_credential(refreshed.clone());
        drop(
            self.guard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        match persisted {
            Ok(()) => slot.persisted(),
            Err(reason) => {
                slot.set_persist_pending();
                let attempts = slot.record_persistence_failure();
                manager.emit(EventKind::PersistenceFailed {
                    credential: slot.id.clone(),
                    reason,
                    attempts,
                });
            }
        }
        let wall = manager.now();
        slot.record_refresh(RefreshResult::Success, change.took, wall);
        let (health_change, published) = slot.with_health(manager.inner.time.health(), |h| {
            h.record_refresh_success(manager.inner.time.health())
        });
        manager.after_health_change(slot, health_change, published);
        // Each kind of quirk once per response: an event and a count in the recorder
        // (`token_response_quirks_total` in Prometheus).
        let mut seen = Vec::new();
        for quirk in change.quirks {
            if !seen.contains(quirk) {
                seen.push(*quirk);
                manager.inner.telemetry.record_token_quirk(&slot.id, *quirk);
                manager.emit(EventKind::TokenResponseQuirk {
                    credential: slot.id.clone(),
                    quirk: *quirk,
                });
            }
        }
        manager.emit(EventKind::Refreshed {
            credential: slot.id.clone(),
            expires_at: refreshed.expires_at,
            refresh_token_rotated: change.applied.refresh_token_rotated,
        });
        Ok(())
    }

    async fn failed(
        &self,
        current: &Credential,
        error: &RefreshError,
        took: Duration,
    ) -> Option<Credential> {
        let manager = &self.manager;
        let slot = &self.slot;
        let time = &manager.inner.time;
        let kind = error.kind();
        // Before declaring a grant dead, look again: another process (a replica, a CLI) may have
        // rotated it since our read, and the store then holds the live refresh token.
        if kind == FailureKind::PermanentAuth {
            let refreshing = self.refreshing();
            if let Ok(Some(stored)) = refreshing.store.load(&refreshing.provider, &slot.id).await
                && stored.value.refresh_token_differs(current)
            {
                drop(
                    self.guard
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take(),
                );
                refreshing.adopt_external(
                    manager,
                    slot,
                    stored.value,
                    Origin::Store {
                        version: stored.version,
                    },
                );
                // The call goes on with the live token instead of failing.
                return Some((*slot.credential()).clone());
            }
        }
        drop(
            self.guard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        slot.record_refresh(RefreshResult::Failure(kind), took, time.wall());
        let policy = manager.settings().health.clone();
        // After a 401 the provider has already rejected the access token: it is not usable, whatever
        // its expiry says. A token without an expiry works until the provider says otherwise.
        let usable_until = match self.need {
            RefreshNeed::Rejected(_) => None,
            _ => Some(
                current
                    .expires_at
                    .map_or(DateTime::<Utc>::MAX_UTC, |t| time.on_timeline(t)),
            ),
        };
        let now = time.health();
        let ((change, failures), published) = slot.with_health(now, |h| {
            let change = h.record_refresh_failure(kind, usable_until, &policy, now);
            (change, h.refresh_failures())
        });
        tracing::warn!(
            credential = %slot.id,
            reason = kind.as_str(),
            consecutive_failures = failures,
            "token refresh failed"
        );
        manager.emit(EventKind::RefreshFailed {
            credential: slot.id.clone(),
            reason: kind,
            consecutive_failures: failures,
        });
        if matches!(change, Some(HealthChange::NeedsReauthorization { .. })) {
            // The other replicas must not present this refresh token again either.
            self.refreshing().publish_state(
                &slot.id,
                oauth_store::SharedState::NeedsReauthorization,
                Some(slot.version()),
                time.wall(),
            );
        }
        manager.after_health_change(slot, change, published);
        None
    }
}

impl OAuthKeyManager {
    /// Whether the credential must be refreshed before this use (wall time `now`).
    pub(crate) fn needs_refresh_before_use(
        &self,
        slot: &Slot,
        credential: &Credential,
        strategy: &oauth_refresh::RefreshStrategy,
        now: DateTime<Utc>,
    ) -> bool {
        let usage = if strategy.adaptive_buffer || strategy.preemptive_refresh {
            Some(slot.usage().snapshot(now))
        } else {
            None
        };
        strategy.should_refresh(credential, usage.as_ref(), now)
            && !slot.read_health(|h| h.needs_reauthorization() || h.is_misconfigured())
    }

    /// Refreshes the credential now, whatever its expiry (an operator's "refresh now").
    ///
    /// # Errors
    /// [`RefreshNowError`](crate::RefreshNowError): unknown id, or the refresh's error.
    pub async fn refresh_now(&self, id: &str) -> Result<Credential, crate::RefreshNowError> {
        let slot = self
            .slot(id)
            .ok_or_else(|| crate::RefreshNowError::UnknownCredential { id: id.to_owned() })?;
        let c = self
            .inner
            .refreshing
            .refresh(self, &slot, RefreshNeed::Forced)
            .await?;
        Ok((*c).clone())
    }
}

// The default credential provider: none.
impl Default for ProviderCell {
    fn default() -> Self {
        Self(Arc::new(NoProvider))
    }
}
