use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;
use oauth_core::ManualClock;
use oauth_manager::rotation::{HookError, RotationHooks, RotationPolicy};
use oauth_manager::store::{CredentialStore, MemoryStore};
use oauth_manager::{CredentialId, OAuthKeyManager, RotationOpError};

use crate::support::{cred, creds, t0, within};

fn policy(grace: Duration) -> RotationPolicy {
    RotationPolicy {
        enabled: true,
        rotation_interval: Duration::from_secs(30 * 86_400),
        grace_period: grace,
        auto_decommission: true,
    }
}

#[tokio::test]
async fn the_replacement_is_preferred_and_the_old_one_goes_after_the_grace() {
    let clock = ManualClock::new(t0());
    let store = Arc::new(MemoryStore::new());
    let manager = OAuthKeyManager::builder("test")
        .credentials(creds(&["old", "other"]))
        .clock(Arc::new(clock.clone()))
        .store(Arc::clone(&store) as Arc<dyn CredentialStore>)
        .rotation_policy(policy(Duration::from_secs(86_400)))
        .build()
        .await
        .expect("builds");
    clock.advance(Duration::from_secs(31 * 86_400));
    assert_eq!(
        manager.check_rotation_needed().len(),
        2,
        "rotation age comes from created_at"
    );

    let mut fresh = cred("new", TimeDelta::days(40));
    fresh.created_at = clock_now(&clock);
    manager
        .mark_for_rotation("old", fresh)
        .await
        .expect("marked");
    let state = manager.rotation_state("old").expect("tracked");
    assert!(state.marked_for_rotation);
    assert_eq!(
        state.replacement_id.as_ref().map(CredentialId::as_str),
        Some("new")
    );
    assert_eq!(manager.credentials().len(), 3);
    for _ in 0..6 {
        assert_ne!(
            manager.next_credential().expect("available").id,
            "old",
            "the old one is only a fallback"
        );
    }
    // The old one still serves when nothing else can.
    manager.disable("new").expect("known");
    manager.disable("other").expect("known");
    assert_eq!(manager.next_credential().expect("fallback").id, "old");
    manager.enable("new").expect("known");
    manager.enable("other").expect("known");

    let err = manager
        .complete_rotation("old")
        .await
        .expect_err("grace not elapsed");
    assert!(err.to_string().contains("grace"), "{err}");
    clock.advance(Duration::from_secs(86_400));
    manager.complete_rotation("old").await.expect("completed");
    let ids: Vec<_> = manager
        .credentials()
        .into_iter()
        .map(|c| c.id.to_string())
        .collect();
    assert_eq!(ids, ["other", "new"]);
    assert!(manager.rotation_state("old").is_none());
    assert!(
        store
            .load("test", &CredentialId::new("old").expect("valid"))
            .await
            .expect("loads")
            .is_none()
    );
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    oauth_manager::Clock::now(clock)
}

#[tokio::test]
async fn marking_errors_are_typed_and_change_nothing() {
    let clock = ManualClock::new(t0());
    let manager = OAuthKeyManager::builder("test")
        .credentials(creds(&["a", "b"]))
        .clock(Arc::new(clock.clone()))
        .build()
        .await
        .expect("builds");
    assert!(matches!(
        manager
            .mark_for_rotation("nope", cred("n", TimeDelta::hours(1)))
            .await,
        Err(RotationOpError::UnknownCredential(_))
    ));
    assert!(matches!(
        manager
            .mark_for_rotation("a", cred("a", TimeDelta::hours(1)))
            .await,
        Err(RotationOpError::DuplicateId { .. })
    ));
    assert!(matches!(
        manager
            .mark_for_rotation("a", cred("b", TimeDelta::hours(1)))
            .await,
        Err(RotationOpError::DuplicateId { .. })
    ));
    manager
        .mark_for_rotation("a", cred("n", TimeDelta::hours(1)))
        .await
        .expect("marked");
    assert!(
        manager
            .mark_for_rotation("a", cred("m", TimeDelta::hours(1)))
            .await
            .is_err()
    );
    assert_eq!(manager.credentials().len(), 3);
}

/// A decommission hook that calls back into the manager (the Go package deadlocked here).
#[derive(Debug, Default)]
struct ReentrantHook {
    manager: OnceLock<OAuthKeyManager>,
    seen: std::sync::Mutex<Vec<usize>>,
}

#[async_trait]
impl RotationHooks for ReentrantHook {
    async fn on_decommission(&self, _credential: &CredentialId) -> Result<(), HookError> {
        let manager = self
            .manager
            .get()
            .ok_or_else(|| HookError::new("no manager"))?;
        let n = manager.credentials().len();
        let _ = manager.health_summary();
        let _ = manager.rotation_state("old");
        self.seen
            .lock()
            .map_err(|_| HookError::new("poisoned"))?
            .push(n);
        Ok(())
    }
}

#[test]
fn a_reentrant_decommission_hook_finishes() {
    within(Duration::from_secs(20), || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let clock = ManualClock::new(t0());
            let hook = Arc::new(ReentrantHook::default());
            let manager = OAuthKeyManager::builder("test")
                .credentials(creds(&["old", "b"]))
                .clock(Arc::new(clock.clone()))
                .rotation_policy(policy(Duration::from_secs(60)))
                .rotation_hooks(Arc::clone(&hook) as Arc<dyn RotationHooks>)
                .build()
                .await
                .expect("builds");
            hook.manager.set(manager.clone()).expect("set once");
            manager
                .mark_for_rotation("old", cred("new", TimeDelta::hours(1)))
                .await
                .expect("marked");
            clock.advance(Duration::from_secs(61));
            let report = manager.auto_decommission_expired().await;
            assert_eq!(
                report.decommissioned,
                [CredentialId::new("old").expect("valid")]
            );
            assert_eq!(
                *hook.seen.lock().expect("not poisoned"),
                [3],
                "the hook saw the pool"
            );
            assert_eq!(manager.credentials().len(), 2);
        });
    });
}
