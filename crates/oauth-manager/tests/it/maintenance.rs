use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::ManualClock;
use oauth_manager::store::{CredentialStore, MemoryStore};
use oauth_manager::{CredentialId, ExposeSecret, MaintenanceConfig, OAuthKeyManager, SecretString};

use crate::support::{counting_refresher, cred, t0};

#[tokio::test]
async fn idle_credentials_are_refreshed_ahead_of_expiry_and_fresh_ones_are_left_alone() {
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let manager = crate::support::builder_of(
        [
            cred("soon", TimeDelta::minutes(8)),
            cred("later", TimeDelta::hours(2)),
        ],
        &clock,
    )
    .refresher(Arc::clone(&refresher.refresher))
    .build()
    .await
    .expect("builds");
    // Buffer 5 min + lead up to 10 min: "soon" (8 min left) is due; "later" is not.
    let config = MaintenanceConfig::default().with_refresh_ahead(Duration::from_secs(600));
    let report = manager.run_maintenance_once(&config).await;
    let soon = CredentialId::new("soon").expect("valid");
    // The per-credential lead is spread over [5, 10] min, so with the 5 min buffer a credential
    // with 8 min left is always due and one with 2 h left never is.
    assert_eq!(report.refreshed, [soon]);
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
    let again = manager.run_maintenance_once(&config).await;
    assert!(again.refreshed.is_empty(), "nothing is refreshed twice");
}

#[tokio::test]
async fn credentials_changed_in_the_store_by_another_process_are_adopted() {
    let clock = ManualClock::new(t0());
    let store = Arc::new(MemoryStore::new());
    let manager = crate::support::builder_of([cred("a", TimeDelta::hours(1))], &clock)
        .store(Arc::clone(&store) as Arc<dyn CredentialStore>)
        .build()
        .await
        .expect("builds");
    let id = CredentialId::new("a").expect("valid");
    let stored = store
        .load("test", &id)
        .await
        .expect("loads")
        .expect("present");
    let mut other = stored.value.clone();
    other.access_token = SecretString::from("access-from-another-process".to_owned());
    store
        .save("test", &other, Some(stored.version))
        .await
        .expect("saved");

    let report = manager
        .run_maintenance_once(&MaintenanceConfig::default())
        .await;
    assert_eq!(report.adopted, [id]);
    assert_eq!(
        manager
            .credential("a")
            .expect("present")
            .access_token
            .expose_secret(),
        "access-from-another-process"
    );
}

#[tokio::test(start_paused = true)]
async fn the_maintenance_loop_starts_and_stops() {
    let clock = oauth_manager::TokioClock::new(t0());
    let refresher = counting_refresher(&ManualClock::new(t0()), Duration::ZERO, None);
    let manager = OAuthKeyManager::builder("test")
        .credential(cred("a", TimeDelta::minutes(30)))
        .clock(Arc::new(clock))
        .refresher(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("builds");
    let handle = manager
        .spawn_maintenance(MaintenanceConfig::default().with_interval(Duration::from_secs(60)))
        .expect("a valid maintenance configuration");
    // After ~20 minutes of (virtual) time the credential is within buffer + lead: refreshed once.
    tokio::time::sleep(Duration::from_secs(25 * 60)).await;
    handle.stop().await;
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
    let calls = refresher.calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    assert_eq!(refresher.calls.load(Ordering::SeqCst), calls, "stopped");
}
