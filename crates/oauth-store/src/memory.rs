//! The in-memory reference implementation.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use oauth_core::{Credential, CredentialId};

use crate::table::Table;
use crate::{CredentialStore, RefreshGuard, RefreshLock, StoreError, Version, Versioned};

/// A store that keeps credentials in this process's memory: nothing survives a restart.
///
/// It is the reference implementation of the [`CredentialStore`] contract (the conformance tests run
/// against it and [`FileStore`](crate::FileStore) alike), and a fine store for tests and for pools
/// whose credentials come from configuration every time. Cloning shares the same store, and its
/// [`RefreshLock`] coordinates every pool in this process that shares it.
#[derive(Clone, Default)]
pub struct MemoryStore {
    tables: Arc<Mutex<HashMap<String, Table>>>,
    refresh_lock: Arc<MemoryRefreshLock>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
        self.write(provider, |t| t.save(provider, credential, expected))
    }

    async fn delete(
        &self,
        provider: &str,
        id: &CredentialId,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.write(provider, |t| t.delete(provider, id, expected))
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
