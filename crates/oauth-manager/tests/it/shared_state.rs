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
    // 60 s left: under the refresh buffer, so every use wants a refresh; still valid.
    let shared = seeded(&[("x", TimeDelta::seconds(60))]).await;
    let dead = counting_refresher(&clock, Duration::ZERO, Some(FailureKind::PermanentAuth));
    let live = counting_refresher(&clock, Duration::ZERO, None);
    let (a, _a_task) = replica(&shared, &clock, &dead).await;
    let (b, _b_task) = replica(&shared, &clock, &live).await;

    let _ = served_token(&a).await;
    assert_eq!(dead.calls.load(Ordering::SeqCst), 1, "A tried the refresh");
    assert_eq!(state(&a, "x"), CredentialState::NeedsReauthorization);
    settle().await;

    let h = b.credential_health("x").expect("known");
    assert!(h.needs_reauthorization, "{h:?}");
    assert_eq!(h.state, CredentialState::NeedsReauthorization);
    // B keeps serving the still-valid access token, never presenting the dead refresh token.
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
