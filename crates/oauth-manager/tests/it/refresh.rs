use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;
use oauth_core::ManualClock;
use oauth_manager::refresh::{FnRefresher, RefreshError, TokenSet};
use oauth_manager::store::{CredentialStore, MemoryStore, StoreError, Version, Versioned};
use oauth_manager::{
    Credential, CredentialId, CredentialProvider, EventKind, ExposeSecret, MaintenanceConfig,
    OAuthKeyManager, ProviderError,
};

use crate::support::{TestError, counting_refresher, cred, t0};

fn expiring_pool(clock: &ManualClock) -> oauth_manager::OAuthKeyManagerBuilder {
    crate::support::builder_of([cred("c1", TimeDelta::minutes(2))], clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_of_10000_calls_refreshes_once_and_all_succeed() {
    // Go: one refresh, 999 of 1,000 callers failed, and the credential was left in backoff.
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::from_millis(50), None);
    let manager = expiring_pool(&clock)
        .refresher(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("builds");
    let barrier = Arc::new(tokio::sync::Barrier::new(10_000));
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let (manager, barrier) = (manager.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                crate::support::call_token(&manager).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let served = t.await.expect("task ran").expect("every call succeeds");
        assert_eq!(
            served.value, "access-c1-1",
            "everyone used the refreshed token"
        );
        ok += 1;
    }
    assert_eq!(ok, 10_000);
    assert_eq!(
        refresher.calls.load(Ordering::SeqCst),
        1,
        "exactly one refresh"
    );
    assert_eq!(refresher.reused.load(Ordering::SeqCst), 0);
    let h = manager.credential_health("c1").expect("known");
    assert!(
        h.is_available && h.is_healthy && h.failure_count == 0,
        "{h:?}"
    );
    let m = manager.credential_metrics("c1").expect("recorded");
    assert_eq!(
        (m.request_count, m.success_count, m.refresh_count),
        (10_000, 10_000, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_caller_neither_cancels_the_refresh_nor_leaves_it_stuck() {
    // The refresh signals when it has started and waits to be let go, so the first caller is
    // cancelled while the refresh is surely in flight.
    let clock = ManualClock::new(t0());
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let refresher = {
        let (started, release, calls) = (
            Arc::clone(&started),
            Arc::clone(&release),
            Arc::clone(&calls),
        );
        FnRefresher::new(move |_c: Credential| {
            let (started, release, calls) = (
                Arc::clone(&started),
                Arc::clone(&release),
                Arc::clone(&calls),
            );
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                started.notify_one();
                release.notified().await;
                Ok::<_, RefreshError>(
                    TokenSet::new("access-c1-1").with_expires_at(t0() + TimeDelta::hours(1)),
                )
            }
        })
    };
    let manager = expiring_pool(&clock)
        .refresher(Arc::new(refresher))
        .build()
        .await
        .expect("builds");
    let first = {
        let manager = manager.clone();
        tokio::spawn(async move { crate::support::call_ok(&manager).await })
    };
    started.notified().await;
    first.abort();
    assert!(first.await.expect_err("cancelled").is_cancelled());
    release.notify_one();
    let served = crate::support::call_token(&manager)
        .await
        .expect("the second caller is served");
    assert_eq!(served.value, "access-c1-1");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the cancelled caller's refresh completed once"
    );
}

#[tokio::test]
async fn a_refreshed_credential_is_in_the_store_before_it_is_used() {
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let store = Arc::new(MemoryStore::new());
    let manager = expiring_pool(&clock)
        .store(Arc::clone(&store) as Arc<dyn CredentialStore>)
        .refresher(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("builds");
    let id = CredentialId::new("c1").expect("valid");
    let stored = store.clone();
    manager
        .execute_with_failover(|c| {
            let (stored, id) = (stored.clone(), id.clone());
            async move {
                let in_store = stored
                    .load("test", &id)
                    .await
                    .expect("loads")
                    .expect("present");
                assert!(
                    in_store.value.same_tokens(&c),
                    "the store already holds the token in use"
                );
                Ok::<_, TestError>(((), None))
            }
        })
        .await
        .expect("served");
    let saved = store
        .load("test", &id)
        .await
        .expect("loads")
        .expect("present");
    assert_eq!(
        saved
            .value
            .refresh_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        Some("refresh-c1-1".to_owned()),
        "the rotated refresh token is persisted"
    );
    assert_eq!(saved.version, 2);
}

#[tokio::test]
async fn stored_credentials_win_over_configured_ones() {
    let clock = ManualClock::new(t0());
    let store = Arc::new(MemoryStore::new());
    let rotated = cred("c1", TimeDelta::hours(1)).with_refresh_token("refresh-c1-7");
    store.save("test", &rotated, None).await.expect("seeded");
    let manager = expiring_pool(&clock)
        .credential(cred("c2", TimeDelta::hours(1)))
        .store(Arc::clone(&store) as Arc<dyn CredentialStore>)
        .build()
        .await
        .expect("builds");
    let c1 = manager.credential("c1").expect("present");
    assert_eq!(
        c1.refresh_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        Some("refresh-c1-7".to_owned())
    );
    assert!(
        store
            .load("test", &CredentialId::new("c2").expect("valid"))
            .await
            .expect("loads")
            .is_some(),
        "configured credentials seed the store"
    );
}

/// A store whose saves fail until healed.
#[derive(Debug, Default)]
struct FlakyStore {
    inner: MemoryStore,
    broken: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl CredentialStore for FlakyStore {
    async fn load_all(&self, provider: &str) -> Result<Vec<Versioned<Credential>>, StoreError> {
        self.inner.load_all(provider).await
    }
    async fn load(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<Versioned<Credential>>, StoreError> {
        self.inner.load(provider, id).await
    }
    async fn save(
        &self,
        provider: &str,
        credential: &Credential,
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                path: "/nonexistent/disk".into(),
                source: std::io::Error::other("disk full"),
            });
        }
        self.inner.save(provider, credential, expected).await
    }
    async fn delete(
        &self,
        provider: &str,
        id: &CredentialId,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.inner.delete(provider, id, expected).await
    }
    async fn versions(
        &self,
        provider: &str,
    ) -> Result<std::collections::BTreeMap<CredentialId, Version>, StoreError> {
        self.inner.versions(provider).await
    }
}

#[tokio::test]
async fn a_failed_persist_is_surfaced_keeps_the_token_and_is_retried() {
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let store = Arc::new(FlakyStore::default());
    let manager = expiring_pool(&clock)
        .store(Arc::clone(&store) as Arc<dyn CredentialStore>)
        .refresher(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("builds");
    let mut events = manager.subscribe();
    store.broken.store(true, Ordering::SeqCst);
    let served = crate::support::call_token(&manager)
        .await
        .expect("served with the refreshed token");
    assert_eq!(served.value, "access-c1-1");
    let mut failed = false;
    while let Ok(e) = events.try_recv() {
        if let EventKind::PersistenceFailed { ref reason, .. } = e.kind {
            failed = true;
            assert!(
                !reason.contains("refresh-c1-1") && !reason.contains("access-c1-1"),
                "{reason}"
            );
        }
    }
    assert!(failed, "a PersistenceFailed event was emitted");
    // A second use does not refresh again: the new token is kept in memory.
    crate::support::call_ok(&manager).await.expect("served");
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
    store.broken.store(false, Ordering::SeqCst);
    let report = manager
        .run_maintenance_once(&MaintenanceConfig::default())
        .await;
    assert_eq!(report.persisted, [CredentialId::new("c1").expect("valid")]);
    let saved = store
        .load("test", &CredentialId::new("c1").expect("valid"))
        .await
        .expect("loads")
        .expect("present");
    assert_eq!(saved.value.access_token.expose_secret(), "access-c1-1");
}

#[derive(Debug, Default)]
struct RecordingProvider {
    credentials: std::sync::Mutex<Vec<Credential>>,
    updates: AtomicUsize,
    failing: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl CredentialProvider for RecordingProvider {
    async fn credentials(&self, _provider: &str) -> Result<Vec<Credential>, ProviderError> {
        Ok(self
            .credentials
            .lock()
            .map_err(|_| ProviderError::new("poisoned"))?
            .clone())
    }
    async fn update_credential(
        &self,
        _provider: &str,
        credential: &Credential,
    ) -> Result<(), ProviderError> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(ProviderError::new("secrets manager unavailable"));
        }
        let mut all = self
            .credentials
            .lock()
            .map_err(|_| ProviderError::new("poisoned"))?;
        for c in all.iter_mut() {
            if c.id == credential.id {
                *c = credential.clone();
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_credential_provider_is_updated_after_a_refresh_so_it_is_not_repeated() {
    // Go never called UpdateCredential: 5 requests gave 5 refreshes.
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let provider = Arc::new(RecordingProvider::default());
    *provider.credentials.lock().expect("fresh") = vec![cred("p1", TimeDelta::minutes(2))];
    let manager = crate::support::builder_of([cred("c1", TimeDelta::hours(2))], &clock)
        .refresher(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("builds");
    manager
        .set_credential_provider(Arc::clone(&provider) as Arc<dyn CredentialProvider>)
        .await
        .expect("provider read");
    assert!(
        manager.credential("p1").is_some(),
        "provider credentials join the pool"
    );
    manager.disable("c1").expect("known");
    for _ in 0..5 {
        let served = manager
            .execute_with_failover(|c| async move { Ok::<_, TestError>((c.id.to_string(), None)) })
            .await
            .expect("served");
        assert_eq!(served.credential, "p1");
    }
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
    assert_eq!(provider.updates.load(Ordering::SeqCst), 1);
    let stored = provider.credentials.lock().expect("not poisoned")[0].clone();
    assert_eq!(stored.access_token.expose_secret(), "access-p1-1");
}

#[tokio::test]
async fn the_adaptive_strategy_sees_the_credentials_usage() {
    use oauth_manager::refresh::RefreshStrategy;

    // 5m30s left: outside the default 5 min buffer, inside the adaptive one once a 200 ms request
    // has been recorded (Go vector: one request at 200 ms gives a 6 min buffer).
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let manager = crate::support::builder_of([cred("c1", TimeDelta::seconds(330))], &clock)
        .refresher(Arc::clone(&refresher.refresher))
        .refresh_strategy(RefreshStrategy::adaptive())
        .build()
        .await
        .expect("builds");
    crate::support::call_ok(&manager).await.expect("served");
    assert_eq!(
        refresher.calls.load(Ordering::SeqCst),
        0,
        "no usage yet: 5 min buffer"
    );
    manager.record_request(
        "c1",
        0,
        Duration::from_millis(200),
        oauth_manager::metrics::RequestOutcome::Success,
    );
    manager.record_request(
        "c1",
        0,
        Duration::from_millis(400),
        oauth_manager::metrics::RequestOutcome::Success,
    );
    crate::support::call_ok(&manager).await.expect("served");
    assert_eq!(
        refresher.calls.load(Ordering::SeqCst),
        1,
        "the adaptive buffer grew past 5m30s"
    );
}

#[tokio::test]
async fn a_stale_provider_copy_never_replaces_tokens_waiting_to_be_persisted() {
    // A refresh rotates p1's refresh token but the provider's update fails; the provider then
    // serves its old copy again. Adopting it would present the consumed refresh token again.
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let provider = Arc::new(RecordingProvider::default());
    *provider.credentials.lock().expect("fresh") = vec![cred("p1", TimeDelta::minutes(2))];
    let manager = OAuthKeyManager::builder("test")
        .credential_provider(Arc::clone(&provider) as Arc<dyn CredentialProvider>)
        .clock(Arc::new(clock.clone()))
        .refresher(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("builds");
    provider.failing.store(true, Ordering::SeqCst);
    let served = crate::support::call_token(&manager).await.expect("served");
    assert_eq!(served.value, "access-p1-1");
    // Maintenance while the provider still fails: its stale copy is not adopted.
    let report = manager
        .run_maintenance_once(&MaintenanceConfig::default())
        .await;
    assert!(report.persisted.is_empty());
    assert_eq!(
        manager
            .credential("p1")
            .expect("present")
            .access_token
            .expose_secret(),
        "access-p1-1"
    );
    // The provider heals: the pending credential is written back.
    provider.failing.store(false, Ordering::SeqCst);
    let report = manager
        .run_maintenance_once(&MaintenanceConfig::default())
        .await;
    assert_eq!(report.persisted, [CredentialId::new("p1").expect("valid")]);
    let held = provider.credentials.lock().expect("not poisoned")[0].clone();
    assert_eq!(held.access_token.expose_secret(), "access-p1-1");
    // Next expiry: the refresh presents the rotated token, never the consumed one.
    clock.advance(Duration::from_secs(3_500));
    crate::support::call_ok(&manager).await.expect("served");
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        refresher.reused.load(Ordering::SeqCst),
        0,
        "no refresh token presented twice"
    );
}

#[tokio::test]
async fn a_provider_copy_refreshed_later_is_adopted() {
    let clock = ManualClock::new(t0());
    let provider = Arc::new(RecordingProvider::default());
    *provider.credentials.lock().expect("fresh") = vec![cred("p1", TimeDelta::hours(1))];
    let manager = OAuthKeyManager::builder("test")
        .credential_provider(Arc::clone(&provider) as Arc<dyn CredentialProvider>)
        .clock(Arc::new(clock.clone()))
        .build()
        .await
        .expect("builds");
    let mut newer = cred("p1", TimeDelta::hours(2));
    newer.access_token = oauth_manager::SecretString::from("access-from-elsewhere".to_owned());
    newer.last_refresh = Some(t0());
    newer.refresh_count = 1;
    // An older copy (fewer refreshes, none later) is ignored; a newer one is adopted.
    let mut older = cred("p1", TimeDelta::hours(1));
    older.access_token = oauth_manager::SecretString::from("access-stale".to_owned());
    *provider.credentials.lock().expect("not poisoned") = vec![older];
    manager.sync_from_provider().await.expect("read");
    assert_eq!(
        manager
            .credential("p1")
            .expect("present")
            .access_token
            .expose_secret(),
        "access-p1-0"
    );
    *provider.credentials.lock().expect("not poisoned") = vec![newer];
    manager.sync_from_provider().await.expect("read");
    assert_eq!(
        manager
            .credential("p1")
            .expect("present")
            .access_token
            .expose_secret(),
        "access-from-elsewhere"
    );
}

#[tokio::test]
async fn a_refresher_that_changes_the_id_does_not_lose_the_new_tokens() {
    let clock = ManualClock::new(t0());
    // A refresher returns a `TokenSet`, which carries no id: the tokens can only land on the
    // credential that was refreshed. The test keeps that checked through the manager.
    let refresher = FnRefresher::new(|_c: Credential| async move {
        Ok::<_, RefreshError>(
            TokenSet::new("access-c1-1")
                .with_refresh_token("refresh-c1-1")
                .with_expires_at(t0() + TimeDelta::hours(1)),
        )
    });
    let manager = expiring_pool(&clock)
        .refresher(Arc::new(refresher))
        .build()
        .await
        .expect("builds");
    let served = crate::support::call_token(&manager).await.expect("served");
    assert_eq!(served.value, "access-c1-1");
    assert_eq!(
        manager.credential_ids(),
        [CredentialId::new("c1").expect("valid")]
    );
    let held = manager.credential("c1").expect("still c1");
    assert_eq!(
        held.refresh_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        Some("refresh-c1-1".to_owned())
    );
}
