//! Two pools over one store with a refresh lock (a shared `MemoryStore`: its lock excludes every
//! pool of the process that holds the store, as a database lease excludes replicas). While pool
//! A holds the lock in a refresh, pool B does not wait for it with a token that still works: its
//! calls are served at once with the current token, also while a flight of B waits for A
//! (after a 401). A call of B whose token does not work (401, expired) waits for A's result and
//! adopts it: B never refreshes, nothing is exchanged twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::ManualClock;
use oauth_manager::refresh::{RefreshError, Refresher, TokenSet};
use oauth_manager::store::{
    CredentialStore, MemoryStore, RefreshGuard, RefreshLock, StoreError, Version, Versioned,
};
use oauth_manager::{
    Clock as _, Credential, CredentialId, ExposeSecret, FailureKind, OAuthKeyManager,
};
use tokio::sync::{Notify, Semaphore};

use crate::support::{TestError, cred, t0};

/// Far below the lock wait (30 s): a call that waited for the other pool's lock cannot finish
/// within it.
const AT_ONCE: Duration = Duration::from_secs(2);

/// A refresher behind a gate the test opens: counts its calls, says when one began, issues
/// `access-<pool>-<n>` for an hour.
#[derive(Debug)]
struct Gated {
    name: &'static str,
    clock: ManualClock,
    calls: AtomicUsize,
    entered: Notify,
    gate: Semaphore,
}

impl Gated {
    fn new(name: &'static str, clock: &ManualClock, open: bool) -> Arc<Self> {
        Arc::new(Self {
            name,
            clock: clock.clone(),
            calls: AtomicUsize::new(0),
            entered: Notify::new(),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[oauth_manager::async_trait]
impl Refresher for Gated {
    async fn refresh(&self, credential: &Credential) -> Result<TokenSet, RefreshError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.entered.notify_one();
        let _pass = self
            .gate
            .acquire()
            .await
            .map_err(|_| RefreshError::other(FailureKind::Transient, "gate closed"))?;
        let now = self.clock.now();
        Ok(TokenSet::new(format!("access-{}-{n}", self.name))
            .with_refresh_token(format!("refresh-{}-{}-{n}", credential.id, self.name))
            .with_expires_at(oauth_core::after(now, Duration::from_secs(3600))))
    }
}

/// The shared `MemoryStore` as one pool sees it, telling when that pool starts waiting for the
/// refresh lock (a flight of it waits for the other pool's refresh).
#[derive(Debug)]
struct Observed {
    store: MemoryStore,
    waiting: Arc<Notify>,
}

#[derive(Debug)]
struct ObservedLock {
    lock: Arc<dyn RefreshLock>,
    waiting: Arc<Notify>,
}

#[oauth_manager::async_trait]
impl RefreshLock for ObservedLock {
    async fn acquire(
        &self,
        provider: &str,
        id: &CredentialId,
        timeout: Duration,
    ) -> Result<RefreshGuard, StoreError> {
        self.waiting.notify_one();
        self.lock.acquire(provider, id, timeout).await
    }

    async fn try_acquire(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<RefreshGuard>, StoreError> {
        self.lock.try_acquire(provider, id).await
    }
}

#[oauth_manager::async_trait]
impl CredentialStore for Observed {
    async fn load_all(&self, p: &str) -> Result<Vec<Versioned<Credential>>, StoreError> {
        self.store.load_all(p).await
    }
    async fn load(
        &self,
        p: &str,
        id: &CredentialId,
    ) -> Result<Option<Versioned<Credential>>, StoreError> {
        self.store.load(p, id).await
    }
    async fn save(
        &self,
        p: &str,
        c: &Credential,
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        self.store.save(p, c, expected).await
    }
    async fn delete(
        &self,
        p: &str,
        id: &CredentialId,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.store.delete(p, id, expected).await
    }
    async fn versions(&self, p: &str) -> Result<BTreeMap<CredentialId, Version>, StoreError> {
        self.store.versions(p).await
    }
    fn refresh_lock(&self) -> Option<Arc<dyn RefreshLock>> {
        let lock = self.store.refresh_lock()?;
        Some(Arc::new(ObservedLock {
            lock,
            waiting: Arc::clone(&self.waiting),
        }))
    }
}

/// Two pools over one store holding `credential`, each with its own gated refresher (A's
/// closed); B's view of the store tells when B waits for the lock.
async fn two_pools(
    credential: Credential,
    clock: &ManualClock,
) -> (
    OAuthKeyManager,
    Arc<Gated>,
    OAuthKeyManager,
    Arc<Gated>,
    Arc<Notify>,
) {
    let shared = MemoryStore::new();
    shared
        .save("test", &credential, None)
        .await
        .expect("seeded");
    let b_waits = Arc::new(Notify::new());
    let mut out = Vec::new();
    for (name, open) in [("a", false), ("b", true)] {
        let refresher = Gated::new(name, clock, open);
        let store: Arc<dyn CredentialStore> = if open {
            Arc::new(Observed {
                store: shared.clone(),
                waiting: Arc::clone(&b_waits),
            })
        } else {
            Arc::new(shared.clone())
        };
        let pool = OAuthKeyManager::builder("test")
            .store_arc(store)
            .clock(Arc::new(clock.clone()))
            .refresher_arc(Arc::clone(&refresher) as Arc<dyn Refresher>)
            .build()
            .await
            .expect("pool builds from the store");
        out.push((pool, refresher));
    }
    let (b, gate_b) = out.pop().expect("b");
    let (a, gate_a) = out.pop().expect("a");
    (a, gate_a, b, gate_b, b_waits)
}

/// One call returning the token it was given; 401 for `rejected` (telling `seen`).
async fn call(
    pool: &OAuthKeyManager,
    rejected: Option<(String, Arc<Notify>)>,
) -> Result<String, String> {
    pool.execute_with_failover(|c| {
        let rejected = rejected.clone();
        async move {
            let token = c.access_token.expose_secret().to_owned();
            if let Some((_, seen)) = rejected.filter(|(r, _)| *r == token) {
                seen.notify_one();
                return Err(TestError::new(FailureKind::Unauthorized, "401"));
            }
            Ok((token, None))
        }
    })
    .await
    .map(|served| served.value)
    .map_err(|e| e.to_string())
}

async fn served_at_once(pool: &OAuthKeyManager) -> String {
    tokio::time::timeout(AT_ONCE, call(pool, None))
        .await
        .expect("the call waited for the other pool's refresh lock")
        .expect("served")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_is_served_at_once_while_another_pool_holds_the_refresh_lock() {
    let clock = ManualClock::new(t0());
    // 60 s left under the 5-minute buffer: due for a proactive refresh, still valid (the clock
    // moves only where the test says).
    let (a, gate_a, b, gate_b, b_waits) =
        two_pools(cred("x", TimeDelta::seconds(60)), &clock).await;
    let old = "access-x-0".to_owned();

    let entered = gate_a.entered.notified();
    let a_call = tokio::spawn({
        let a = a.clone();
        async move { call(&a, None).await }
    });
    tokio::time::timeout(AT_ONCE, entered)
        .await
        .expect("A's refresh began, holding the lock");

    for _ in 0..5 {
        assert_eq!(served_at_once(&b).await, old);
    }

    // A 401 on B: its refresh waits for A (holder of the lock).
    let seen = Arc::new(Notify::new());
    let answered = seen.notified();
    let waiting = b_waits.notified();
    let rejected = tokio::spawn({
        let (b, old, seen) = (b.clone(), old.clone(), Arc::clone(&seen));
        async move { call(&b, Some((old, seen))).await }
    });
    tokio::time::timeout(AT_ONCE, answered)
        .await
        .expect("the 401 was answered");
    tokio::time::timeout(AT_ONCE, waiting)
        .await
        .expect("B's refresh after the 401 waits for the lock");
    // Past the moment a holder seen is remembered: callers whose token works would now ask the
    // store again, or join B's flight waiting for A; they still do not wait.
    clock.advance(Duration::from_secs(1));
    for _ in 0..5 {
        assert_eq!(served_at_once(&b).await, old);
    }
    assert!(!a_call.is_finished(), "A's refresher is still held");
    assert!(!rejected.is_finished(), "the 401 call waits for A's result");

    gate_a.gate.add_permits(1);
    let fresh = a_call.await.expect("task").expect("A served");
    assert_eq!(fresh, "access-a-1");
    let retried = tokio::time::timeout(Duration::from_secs(10), rejected)
        .await
        .expect("the 401 call ended once A released the lock")
        .expect("task")
        .expect("served with A's token");
    assert_eq!(
        retried, fresh,
        "adopted from the store, not refreshed again"
    );
    assert_eq!(served_at_once(&b).await, fresh);
    assert_eq!(gate_a.calls(), 1);
    assert_eq!(gate_b.calls(), 0, "B never refreshed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_waits_for_the_holder_and_adopts_its_result() {
    let clock = ManualClock::new(t0());
    let (a, gate_a, b, gate_b, b_waits) =
        two_pools(cred("x", TimeDelta::seconds(60)), &clock).await;
    clock.advance(Duration::from_secs(61));

    let entered = gate_a.entered.notified();
    let a_call = tokio::spawn({
        let a = a.clone();
        async move { call(&a, None).await }
    });
    tokio::time::timeout(AT_ONCE, entered)
        .await
        .expect("A's refresh began, holding the lock");
    // B's token has expired: its call waits for A's refresh instead of failing or refreshing.
    let waiting = b_waits.notified();
    let b_call = tokio::spawn({
        let b = b.clone();
        async move { call(&b, None).await }
    });
    tokio::time::timeout(AT_ONCE, waiting)
        .await
        .expect("B's call waits for the lock A holds");
    assert!(!b_call.is_finished());
    gate_a.gate.add_permits(1);
    let fresh = a_call.await.expect("task").expect("A served");
    let got = tokio::time::timeout(Duration::from_secs(10), b_call)
        .await
        .expect("B's call ended once A released the lock")
        .expect("task")
        .expect("B served");
    assert_eq!(got, fresh, "B's call waited for A's result and used it");
    assert_eq!((gate_a.calls(), gate_b.calls()), (1, 0));
}
