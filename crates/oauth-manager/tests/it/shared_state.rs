//! Two pools over one store with a change feed (two replica views of one `MemoryStore`): a
//! credential disabled, enabled or found dead (invalid_grant) on one reaches the other.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::ManualClock;
use oauth_manager::{
    CredentialState, ExposeSecret, FailureKind, MaintenanceConfig, MaintenanceHandle,
    OAuthKeyManager,
};
use oauth_store::{CredentialStore, MemoryStore};

use crate::support::{CountingRefresher, TestError, counting_refresher, cred, settle, t0};

/// A pool on its own replica view of `shared`, with its maintenance task applying the feed (a
/// day between ticks, no refresh ahead: only the feed moves it).
async fn replica(
    shared: &MemoryStore,
    clock: &ManualClock,
    refresher: &CountingRefresher,
) -> (OAuthKeyManager, MaintenanceHandle) {
    let pool = OAuthKeyManager::builder("test")
        .store(shared.replica())
        .clock(Arc::new(clock.clone()))
        .refresher_arc(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("pool builds from the store");
    let config = MaintenanceConfig::default()
        .with_interval(Duration::from_secs(24 * 3600))
        .with_refresh_ahead(Duration::ZERO);
    let handle = pool.spawn_maintenance(config).expect("maintenance starts");
    settle().await;
    (pool, handle)
}

async fn seeded(ids: &[(&str, TimeDelta)]) -> MemoryStore {
    let shared = MemoryStore::new();
    for (id, expires_in) in ids {
        shared
            .save("test", &cred(id, *expires_in), None)
            .await
            .expect("seeded");
    }
    shared
}

async fn served_token(pool: &OAuthKeyManager) -> Result<String, String> {
    pool.execute_with_failover(|c| {
        let token = c.access_token.expose_secret().to_owned();
        async move { Ok::<_, TestError>((token, None)) }
    })
    .await
    .map(|served| served.value)
    .map_err(|e| e.to_string())
}

fn state(pool: &OAuthKeyManager, id: &str) -> CredentialState {
    pool.credential_health(id).expect("known credential").state
}

#[tokio::test]
async fn a_credential_disabled_on_one_replica_is_out_of_rotation_on_the_other() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1)), ("y", TimeDelta::hours(1))]).await;
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let (a, _a_task) = replica(&shared, &clock, &refresher).await;
    let (b, _b_task) = replica(&shared, &clock, &refresher).await;

    a.disable("x").expect("known");
    settle().await;

    assert_eq!(state(&b, "x"), CredentialState::Disabled);
    for _ in 0..20 {
        let lease = b.next_credential().expect("y serves");
        assert_eq!(lease.into_arc().id.as_str(), "y");
        assert_eq!(served_token(&b).await.as_deref(), Ok("access-y-0"));
    }
    // Applied, not echoed: A stays as its operator left it.
    assert_eq!(state(&a, "x"), CredentialState::Disabled);

    a.enable("x").expect("known");
    settle().await;
    assert_ne!(state(&b, "x"), CredentialState::Disabled);
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..20 {
        ids.insert(
            b.next_credential()
                .expect("serves")
                .into_arc()
                .id
                .to_string(),
        );
    }
    assert!(ids.contains("x"), "x back in rotation on B: {ids:?}");
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_grant_found_dead_on_one_replica_is_not_presented_again_by_the_other() {
    let clock = ManualClock::new(t0());
    // An hour left: no maintenance tick of either replica wants to refresh it, so the only
    // refresh is the one A is told to make (no race for the lease).
    let shared = seeded(&[("x", TimeDelta::hours(1))]).await;
    let dead = counting_refresher(&clock, Duration::ZERO, Some(FailureKind::PermanentAuth));
    let live = counting_refresher(&clock, Duration::ZERO, None);
    let (a, _a_task) = replica(&shared, &clock, &dead).await;
    let (b, _b_task) = replica(&shared, &clock, &live).await;

    assert!(a.refresh_now("x").await.is_err(), "the grant is dead");
    assert_eq!(dead.calls.load(Ordering::SeqCst), 1, "A tried the refresh");
    assert_eq!(state(&a, "x"), CredentialState::NeedsReauthorization);
    // The report crosses a spawned publish, the feed and B's maintenance task: let them run
    // (bounded: yields only, no clock).
    for _ in 0..64 {
        if b.credential_health("x")
            .is_some_and(|h| h.needs_reauthorization)
        {
            break;
        }
        settle().await;
    }

    let h = b.credential_health("x").expect("known");
    assert!(h.needs_reauthorization, "{h:?}");
    assert_eq!(h.state, CredentialState::NeedsReauthorization);
    // 2 minutes left: under the refresh buffer, so every use on B wants a refresh. B keeps
    // serving the still-valid access token, never presenting the dead refresh token.
    clock.advance(Duration::from_secs(58 * 60));
    for _ in 0..5 {
        assert_eq!(served_token(&b).await.as_deref(), Ok("access-x-0"));
    }
    assert_eq!(
        live.calls.load(Ordering::SeqCst),
        0,
        "B called its refresher"
    );
}

#[tokio::test]
async fn a_dead_grant_reported_for_an_older_version_is_ignored() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1))]).await;
    let live = counting_refresher(&clock, Duration::ZERO, None);
    let (b, _b_task) = replica(&shared, &clock, &live).await;
    let stored = shared
        .load("test", &oauth_core::CredentialId::new("x").expect("id"))
        .await;
    let version = stored.expect("reads").expect("stored").version;

    // Another process reports a dead grant decided on a version older than the stored one.
    let other = shared.replica();
    other
        .publish_state(
            "test",
            &oauth_core::CredentialId::new("x").expect("id"),
            oauth_store::SharedState::NeedsReauthorization,
            Some(version - 1),
        )
        .await
        .expect("published");
    settle().await;
    assert!(
        !b.credential_health("x")
            .expect("known")
            .needs_reauthorization
    );

    // The same report at the current version applies.
    other
        .publish_state(
            "test",
            &oauth_core::CredentialId::new("x").expect("id"),
            oauth_store::SharedState::NeedsReauthorization,
            Some(version),
        )
        .await
        .expect("published");
    settle().await;
    assert!(
        b.credential_health("x")
            .expect("known")
            .needs_reauthorization
    );
}

/// A store view whose saves fail while `failing` is set (the replica's disk or database write
/// path is down; its reads and change feed work).
#[derive(Debug)]
struct SavesFail {
    view: MemoryStore,
    failing: std::sync::atomic::AtomicBool,
}

#[oauth_manager::async_trait]
impl CredentialStore for SavesFail {
    async fn load_all(
        &self,
        p: &str,
    ) -> Result<Vec<oauth_store::Versioned<oauth_manager::Credential>>, oauth_store::StoreError>
    {
        self.view.load_all(p).await
    }
    async fn load(
        &self,
        p: &str,
        id: &oauth_manager::CredentialId,
    ) -> Result<Option<oauth_store::Versioned<oauth_manager::Credential>>, oauth_store::StoreError>
    {
        self.view.load(p, id).await
    }
    async fn save(
        &self,
        p: &str,
        c: &oauth_manager::Credential,
        expected: Option<oauth_store::Version>,
    ) -> Result<oauth_store::Version, oauth_store::StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(oauth_store::StoreError::Io {
                path: "/var/lib/pool/test.json".into(),
                source: std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem),
            });
        }
        self.view.save(p, c, expected).await
    }
    async fn delete(
        &self,
        p: &str,
        id: &oauth_manager::CredentialId,
        expected: Option<oauth_store::Version>,
    ) -> Result<(), oauth_store::StoreError> {
        self.view.delete(p, id, expected).await
    }
    async fn versions(
        &self,
        p: &str,
    ) -> Result<
        std::collections::BTreeMap<oauth_manager::CredentialId, oauth_store::Version>,
        oauth_store::StoreError,
    > {
        self.view.versions(p).await
    }
    fn refresh_lock(&self) -> Option<Arc<dyn oauth_store::RefreshLock>> {
        self.view.refresh_lock()
    }
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<oauth_store::StoreChange>> {
        self.view.changes()
    }
}

/// Review finding on the shared states: a replica that refreshed a credential but could not save
/// the new tokens yet holds a live grant; a needs-re-authorization that another replica decided
/// on the store's older refresh token, at the same version, must not mark it dead.
#[tokio::test]
async fn a_dead_grant_reported_for_the_stores_token_spares_a_replica_holding_a_newer_one() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1))]).await;
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let store = SavesFail {
        view: shared.replica(),
        failing: std::sync::atomic::AtomicBool::new(true),
    };
    let b = OAuthKeyManager::builder("test")
        .store(store)
        .clock(Arc::new(clock.clone()))
        .refresher_arc(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("pool builds from the store");
    let _b_task = b
        .spawn_maintenance(
            MaintenanceConfig::default()
                .with_interval(Duration::from_secs(24 * 3600))
                .with_refresh_ahead(Duration::ZERO),
        )
        .expect("maintenance starts");
    settle().await;
    // B refreshes; its save fails, so it holds refresh-x-1 while the store still has refresh-x-0.
    let _ = b.refresh_now("x").await.expect("refreshed in memory");
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
    let id = oauth_manager::CredentialId::new("x").expect("valid id");
    let stored = shared
        .load("test", &id)
        .await
        .expect("loads")
        .expect("stored");
    // Another replica presents the store's (now consumed) refresh token, is told invalid_grant,
    // and shares that at the stored version.
    shared
        .replica()
        .publish_state(
            "test",
            &id,
            oauth_store::SharedState::NeedsReauthorization,
            Some(stored.version),
        )
        .await
        .expect("published");
    settle().await;
    assert_ne!(state(&b, "x"), CredentialState::NeedsReauthorization);
    assert_eq!(served_token(&b).await.as_deref(), Ok("access-x-1"));
}
