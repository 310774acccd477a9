//! Refresh leases: one row per credential with an owner, a fence counter and an expiry on the
//! database clock.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oauth_core::CredentialId;
use oauth_store::{RefreshGuard, RefreshLock, StoreError};
use tokio::time::Instant;

use crate::PostgresStore;
use crate::listen::{CHANNEL, Notice};
use crate::store::check_provider;

/// Longest pause between two attempts while waiting for a held lease (a release notification
/// wakes waiters earlier).
const MAX_POLL: Duration = Duration::from_millis(250);

/// The refresh lock of a [`PostgresStore`]: a lease per credential, exclusive across every
/// replica using the database.
///
/// A lease is taken with one `INSERT … ON CONFLICT DO UPDATE … WHERE` statement that succeeds only
/// when the row is free or its expiry has passed on the database clock, and bumps the fence
/// counter. It lasts [`lease_ttl`](crate::PostgresConfig::lease_ttl); releasing it (dropping the
/// [`Lease`] or the [`RefreshGuard`]) clears the owner only if the fence is still ours, and
/// NOTIFYs waiters.
#[derive(Clone)]
pub struct PostgresRefreshLock {
    store: PostgresStore,
}

impl PostgresRefreshLock {
    pub(crate) fn new(store: PostgresStore) -> Self {
        Self { store }
    }

    /// One attempt: the lease when it was free (or expired), `None` when another holder has it.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the database cannot be reached: unlike `None`, that says
    /// nothing about other holders, and the caller must not refresh either way.
    pub async fn try_acquire(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<Lease>, StoreError> {
        check_provider(provider)?;
        let store = &self.store;
        let owner = store.config().replica_id.clone();
        let ttl_ms = i64::try_from(store.config().lease_ttl.as_millis()).unwrap_or(i64::MAX);
        let op = "acquire_lease";
        let rows = store
            .run(op, async {
                store
                    .query(
                        op,
                        "INSERT INTO oauth_refresh_leases AS l
                                (provider, credential_id, owner, fence, expires_at)
                         VALUES ($1, $2, $3, 1, now() + $4::bigint * interval '1 millisecond')
                         ON CONFLICT (provider, credential_id) DO UPDATE
                            SET owner = EXCLUDED.owner, fence = l.fence + 1,
                                expires_at = EXCLUDED.expires_at
                          WHERE l.owner IS NULL OR l.expires_at <= now()
                         RETURNING l.fence, l.expires_at",
                        &[&provider, &id.as_str(), &owner, &ttl_ms],
                    )
                    .await
            })
            .await?;
        Ok(rows.first().map(|row| Lease {
            store: self.store.clone(),
            provider: provider.to_owned(),
            id: id.clone(),
            owner,
            fence: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            expires_at: row.get(1),
            runtime: tokio::runtime::Handle::current(),
            released: false,
        }))
    }

    /// Waits until this caller holds the lease of one credential, or `timeout` passes
    /// ([`StoreError::LockTimeout`]). Attempts back off from 10 ms to 250 ms and are woken early
    /// when any lease is released.
    ///
    /// # Errors
    /// [`StoreError::LockTimeout`] when someone else held it throughout; [`StoreError::Backend`]
    /// as soon as the database cannot be reached (waiting on would only delay the caller's
    /// decision not to refresh).
    pub async fn acquire_lease(
        &self,
        provider: &str,
        id: &CredentialId,
        timeout: Duration,
    ) -> Result<Lease, StoreError> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(10);
        let released = &self.store.inner.shared.lease_released;
        loop {
            let woken = released.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(lease) = self.try_acquire(provider, id).await? {
                return Ok(lease);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::LockTimeout {
                    what: "refresh",
                    provider: provider.to_owned(),
                    id: Some(id.clone()),
                    waited: timeout,
                });
            }
            let wait = pause.min(deadline - now);
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep(wait) => {}
            }
            pause = pause.saturating_mul(2).min(MAX_POLL);
        }
    }
}

#[async_trait]
impl RefreshLock for PostgresRefreshLock {
    async fn acquire(
        &self,
        provider: &str,
        id: &CredentialId,
        timeout: Duration,
    ) -> Result<RefreshGuard, StoreError> {
        Ok(self
            .acquire_lease(provider, id, timeout)
            .await?
            .into_guard())
    }

    /// One `INSERT … ON CONFLICT` (the inherent [`try_acquire`](PostgresRefreshLock::try_acquire)).
    async fn try_acquire(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<RefreshGuard>, StoreError> {
        Ok(PostgresRefreshLock::try_acquire(self, provider, id)
            .await?
            .map(Lease::into_guard))
    }
}

impl fmt::Debug for PostgresRefreshLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresRefreshLock")
            .field("store", &self.store)
            .finish()
    }
}

/// A held refresh lease. Dropping it releases the lease in the background (on the runtime it
/// was acquired on); [`release`](Self::release) does it now and says whether it was still ours.
#[must_use = "the lease is released as soon as it is dropped"]
pub struct Lease {
    store: PostgresStore,
    provider: String,
    id: CredentialId,
    owner: String,
    fence: u64,
    expires_at: DateTime<Utc>,
    runtime: tokio::runtime::Handle,
    released: bool,
}

impl Lease {
    /// The provider of the leased credential.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The leased credential.
    pub fn id(&self) -> &CredentialId {
        &self.id
    }

    /// The owner written into the row (the store's replica id).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// This acquisition's fence: larger than that of every earlier acquisition of the same
    /// credential, by any replica.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// When the lease ends on the database clock unless released earlier.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }

    /// Releases the lease now. `Ok(false)` when it was no longer ours (it expired and another
    /// replica took it, so our refresh may have overlapped with theirs: the version
    /// compare-and-set decided which write stands).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the database cannot be reached; the lease then ends at its
    /// expiry.
    pub async fn release(mut self) -> Result<bool, StoreError> {
        self.released = true;
        release(
            &self.store,
            &self.provider,
            &self.id,
            &self.owner,
            self.fence,
        )
        .await
    }

    /// This lease as the crate-independent [`RefreshGuard`] (which releases it on drop).
    pub fn into_guard(self) -> RefreshGuard {
        let provider = self.provider.clone();
        let id = self.id.clone();
        RefreshGuard::new(provider, id, move || drop(self))
    }
}

async fn release(
    store: &PostgresStore,
    provider: &str,
    id: &CredentialId,
    owner: &str,
    fence: u64,
) -> Result<bool, StoreError> {
    let op = "release_lease";
    let notice = store.notice(&Notice::Released {
        provider,
        id: id.as_str(),
    });
    let fence_pg = i64::try_from(fence).unwrap_or(-1);
    let rows = store
        .run(op, async {
            store
                .query(
                    op,
                    "WITH w AS (
                       UPDATE oauth_refresh_leases SET owner = NULL, expires_at = NULL
                        WHERE provider = $1 AND credential_id = $2 AND owner = $3 AND fence = $4
                       RETURNING fence)
                     SELECT fence, pg_notify($5, $6)::text FROM w",
                    &[
                        &provider,
                        &id.as_str(),
                        &owner,
                        &fence_pg,
                        &CHANNEL,
                        &notice,
                    ],
                )
                .await
        })
        .await?;
    // Wake this store's own waiters without waiting for the notification's round trip.
    store.inner.shared.lease_released.notify_waiters();
    Ok(!rows.is_empty())
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let store = self.store.clone();
        let provider = std::mem::take(&mut self.provider);
        let id = self.id.clone();
        let owner = std::mem::take(&mut self.owner);
        let fence = self.fence;
        // If the runtime is gone the task never runs and the lease ends at its expiry.
        drop(self.runtime.spawn(async move {
            if let Err(e) = release(&store, &provider, &id, &owner, fence).await {
                tracing::debug!(
                    target: "oauth_store_postgres",
                    error = %e,
                    "could not release a refresh lease; it ends at its expiry"
                );
            }
        }));
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("provider", &self.provider)
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("fence", &self.fence)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A lease row as the database sees it, from [`PostgresStore::lease_state`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseState {
    /// The last holder (`None` once released).
    pub owner: Option<String>,
    /// The fence of the last acquisition.
    pub fence: u64,
    /// When the last acquisition ends (`None` once released).
    pub expires_at: Option<DateTime<Utc>>,
    /// True while someone holds it: an owner and an expiry still in the future.
    pub held: bool,
    /// The database clock when this was read.
    pub database_now: DateTime<Utc>,
}
