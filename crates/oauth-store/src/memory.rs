//! The in-memory reference implementation.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oauth_core::{Credential, CredentialId};
use tokio::sync::broadcast;

use crate::table::Table;
use crate::{
    CredentialStore, RefreshGuard, RefreshLock, SharedState, SharedStateRecord, StoreChange,
    StoreError, Version, Versioned,
};

/// Room in each replica's change feed before it lags (a lagging receiver resyncs).
const FEED_CAPACITY: usize = 1024;

/// A store that keeps credentials in this process's memory: nothing survives a restart.
///
/// It is the reference implementation of the [`CredentialStore`] contract (the conformance tests run
/// against it and [`FileStore`](crate::FileStore) alike), and a fine store for tests and for pools
/// whose credentials come from configuration every time. Cloning shares the same store, and its
/// [`RefreshLock`] coordinates every pool in this process that shares it.
///
/// A store has no change feed ([`CredentialStore::changes`] is `None`) unless it is a
/// [`replica`](Self::replica) view, which plays one process of a multi-replica deployment: the
/// other replicas' writes, published cooldowns and published states reach its feed.
#[derive(Clone, Default)]
pub struct MemoryStore {
    tables: Arc<Mutex<HashMap<String, Table>>>,
    refresh_lock: Arc<MemoryRefreshLock>,
    feeds: Arc<Feeds>,
    states: Arc<Mutex<States>>,
    /// This view's own feed, for a replica view.
    member: Option<(u64, broadcast::Sender<StoreChange>)>,
}

/// The published states kept for [`CredentialStore::shared_states`]: the latest of each aspect of
/// each credential, with the order they were published in.
#[derive(Default)]
struct States {
    next: u64,
    latest: HashMap<StateKey, (u64, SharedState, Option<Version>)>,
    /// The latest end published per provider and credential (never pruned: a memory store has
    /// no clock; readers ignore ended ones).
    cooldowns: HashMap<(String, CredentialId), DateTime<Utc>>,
}

/// Provider, credential, [`aspect`](SharedState::aspect).
type StateKey = (String, CredentialId, &'static str);

/// The change feeds of every replica view of one store.
#[derive(Default)]
struct Feeds {
    members: Mutex<Vec<(u64, broadcast::Sender<StoreChange>)>>,
    next: AtomicU64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another process's view of this store: the same contents and refresh lock, plus a change
    /// feed that carries what the other views write (saves, deletes, published cooldowns and
    /// states), not what this view writes itself, as a shared database's feed would. Each
    /// replica's feed lives as long as the store.
    pub fn replica(&self) -> Self {
        let id = self.feeds.next.fetch_add(1, Ordering::Relaxed);
        let (tx, _) = broadcast::channel(FEED_CAPACITY);
        self.feeds
            .members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, tx.clone()));
        Self {
            tables: Arc::clone(&self.tables),
            refresh_lock: Arc::clone(&self.refresh_lock),
            feeds: Arc::clone(&self.feeds),
            states: Arc::clone(&self.states),
            member: Some((id, tx)),
        }
    }

    /// Delivers `change` to every replica view but this one.
    fn announce(&self, change: &StoreChange) {
        let own = self.member.as_ref().map(|(id, _)| *id);
        let members = self
            .feeds
            .members
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (id, tx) in members.iter() {
            if Some(*id) != own {
                // No receiver yet: nobody to tell.
                let _ = tx.send(change.clone());
            }
        }
    }

    fn states(&self) -> MutexGuard<'_, States> {
        // Every change is one insert or retain: nothing is left half-done by a panic.
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the kept states and cooldowns of one credential.
    fn forget_shared(&self, provider: &str, id: &CredentialId) {
        let mut states = self.states();
        states
            .latest
            .retain(|(p, i, _), _| !(p == provider && i == id));
        states.cooldowns.remove(&(provider.to_owned(), id.clone()));
    }

    fn tables(&self) -> MutexGuard<'_, HashMap<String, Table>> {
        // The table is only mutated through methods that cannot leave it half-changed.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read<R>(&self, provider: &str, f: impl FnOnce(&Table) -> R) -> Result<R, StoreError> {
        crate::check_provider(provider)?;
        let tables = self.tables();
        let empty = Table::default();
        Ok(f(tables.get(provider).unwrap_or(&empty)))
    }

    fn write<R>(
        &self,
        provider: &str,
        f: impl FnOnce(&mut Table) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        crate::check_provider(provider)?;
        let mut tables = self.tables();
        let table = tables.entry(provider.to_owned()).or_default();
        // `Table` methods check before they change anything, so an error leaves it as it was.
        f(table)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tables = self.tables();
        let mut counts: Vec<(&str, usize)> = tables
            .iter()
            .map(|(provider, table)| (provider.as_str(), table.len()))
            .collect();
        counts.sort_unstable();
        f.debug_struct("MemoryStore")
            .field("credentials", &counts)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl CredentialStore for MemoryStore {
    async fn load_all(&self, provider: &str) -> Result<Vec<Versioned<Credential>>, StoreError> {
        self.read(provider, Table::all)
    }

    async fn load(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<Versioned<Credential>>, StoreError> {
        self.read(provider, |t| t.get(id))
    }

    async fn save(
        &self,
        provider: &str,
        credential: &Credential,
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        let version = self.write(provider, |t| t.save(provider, credential, expected))?;
        if expected.is_none() {
            // A (re-)created credential starts without a predecessor's states and cooldowns.
            self.forget_shared(provider, &credential.id);
        }
        self.announce(&StoreChange::Changed {
            provider: provider.to_owned(),
            id: credential.id.clone(),
        });
        Ok(version)
    }

    async fn delete(
        &self,
        provider: &str,
        id: &CredentialId,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.write(provider, |t| t.delete(provider, id, expected))?;
        self.forget_shared(provider, id);
        self.announce(&StoreChange::Removed {
            provider: provider.to_owned(),
            id: id.clone(),
        });
        Ok(())
    }

    async fn versions(
        &self,
        provider: &str,
    ) -> Result<BTreeMap<CredentialId, Version>, StoreError> {
        self.read(provider, Table::versions)
    }

    fn refresh_lock(&self) -> Option<Arc<dyn RefreshLock>> {
        Some(Arc::clone(&self.refresh_lock) as Arc<dyn RefreshLock>)
    }

    /// `Some` for a [`replica`](MemoryStore::replica) view only.
    fn changes(&self) -> Option<broadcast::Receiver<StoreChange>> {
        self.member.as_ref().map(|(_, tx)| tx.subscribe())
    }

    async fn publish_cooldown(
        &self,
        provider: &str,
        id: &CredentialId,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        crate::check_provider(provider)?;
        let until = *self
            .states()
            .cooldowns
            .entry((provider.to_owned(), id.clone()))
            .and_modify(|kept| *kept = (*kept).max(until))
            .or_insert(until);
        self.announce(&StoreChange::CooledDown {
            provider: provider.to_owned(),
            id: id.clone(),
            until,
        });
        Ok(())
    }

    async fn publish_state(
        &self,
        provider: &str,
        id: &CredentialId,
        state: SharedState,
        version: Option<Version>,
    ) -> Result<(), StoreError> {
        crate::check_provider(provider)?;
        // Kept and announced for a credential the store holds only, as in a database.
        if self.read(provider, |t| t.get(id).is_none())? {
            return Ok(());
        }
        {
            let mut states = self.states();
            let seq = states.next;
            states.next = seq.wrapping_add(1);
            states.latest.insert(
                (provider.to_owned(), id.clone(), state.aspect()),
                (seq, state, version),
            );
        }
        self.announce(&StoreChange::StateChanged {
            provider: provider.to_owned(),
            id: id.clone(),
            state,
            version,
        });
        Ok(())
    }

    async fn shared_states(&self, provider: &str) -> Result<Vec<SharedStateRecord>, StoreError> {
        // Of credentials the store holds (a state published while its credential was being
        // deleted may have outlived it; the credential's re-creation drops it).
        let live = self.read(provider, Table::versions)?;
        let states = self.states();
        let mut kept: Vec<_> = states
            .latest
            .iter()
            .filter(|((p, id, _), _)| p == provider && live.contains_key(id))
            .map(|((_, id, _), &(seq, state, version))| {
                (seq, SharedStateRecord::new(id.clone(), state, version))
            })
            .collect();
        kept.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(kept.into_iter().map(|(_, record)| record).collect())
    }

    async fn active_cooldowns(
        &self,
        provider: &str,
    ) -> Result<BTreeMap<CredentialId, DateTime<Utc>>, StoreError> {
        crate::check_provider(provider)?;
        Ok(self
            .states()
            .cooldowns
            .iter()
            .filter(|((p, _), _)| p == provider)
            .map(|((_, id), until)| (id.clone(), *until))
            .collect())
    }
}

/// The refresh lock of a [`MemoryStore`]: one async mutex per credential, shared by everything in
/// this process that holds the same store.
#[derive(Default)]
pub struct MemoryRefreshLock {
    /// One entry per credential ever locked (a pool's credentials: a small, bounded set).
    locks: Mutex<HashMap<LockKey, Arc<tokio::sync::Mutex<()>>>>,
}

type LockKey = (String, CredentialId);

impl MemoryRefreshLock {
    /// A lock set with no credential locked.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for MemoryRefreshLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("MemoryRefreshLock")
            .field("credentials", &known)
            .finish()
    }
}

#[async_trait]
impl RefreshLock for MemoryRefreshLock {
    async fn acquire(
        &self,
        provider: &str,
        id: &CredentialId,
        timeout: Duration,
    ) -> Result<RefreshGuard, StoreError> {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(locks.entry((provider.to_owned(), id.clone())).or_default())
        };
        match tokio::time::timeout(timeout, mutex.lock_owned()).await {
            Ok(held) => Ok(RefreshGuard::new(provider, id.clone(), move || drop(held))),
            Err(_) => Err(StoreError::LockTimeout {
                what: "refresh",
                provider: provider.to_owned(),
                id: Some(id.clone()),
                waited: timeout,
            }),
        }
    }

    async fn try_acquire(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<RefreshGuard>, StoreError> {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(locks.entry((provider.to_owned(), id.clone())).or_default())
        };
        Ok(mutex
            .try_lock_owned()
            .ok()
            .map(|held| RefreshGuard::new(provider, id.clone(), move || drop(held))))
    }
}
