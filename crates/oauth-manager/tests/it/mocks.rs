//! Interaction checks with mockall: what the manager asks of its collaborators, exactly.
//! (Behaviour is tested against real parts elsewhere; these pin down calls and arguments.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;
use mockall::predicate::eq;
use oauth_core::ManualClock;
use oauth_manager::metrics::{CredentialRecorder, MetricsRecorder, NoopRecorder};
use oauth_manager::store::{CredentialStore, RefreshLock, StoreError, Version, Versioned};
use oauth_manager::{Credential, CredentialId, ExposeSecret, FailureKind, OAuthKeyManager, Usage};

use crate::support::{TestError, counting_refresher, cred, t0};

mockall::mock! {
    #[derive(Debug)]
    Recorder {}
    impl MetricsRecorder for Recorder {
        fn handle(&self, credential: &CredentialId) -> Arc<dyn CredentialRecorder>;
        fn record_failover(&self, from: &CredentialId, reason: FailureKind);
        fn remove(&self, credential: &CredentialId);
    }
}

mockall::mock! {
    #[derive(Debug)]
    Store {}
    #[async_trait]
    impl CredentialStore for Store {
        async fn load_all(&self, provider: &str) -> Result<Vec<Versioned<Credential>>, StoreError>;
        async fn load(&self, provider: &str, id: &CredentialId) -> Result<Option<Versioned<Credential>>, StoreError>;
        async fn save(&self, provider: &str, credential: &Credential, expected: Option<Version>) -> Result<Version, StoreError>;
        async fn delete(&self, provider: &str, id: &CredentialId, expected: Option<Version>) -> Result<(), StoreError>;
        async fn versions(&self, provider: &str) -> Result<BTreeMap<CredentialId, Version>, StoreError>;
        fn refresh_lock(&self) -> Option<Arc<dyn RefreshLock>>;
    }
}

fn id(s: &str) -> CredentialId {
    CredentialId::new(s).expect("valid id")
}

#[tokio::test]
async fn a_failover_is_reported_once_with_its_reason() {
    let clock = ManualClock::new(t0());
    let mut recorder = MockRecorder::new();
    recorder
        .expect_handle()
        .times(2)
        .returning(|_| Arc::new(NoopRecorder) as Arc<dyn CredentialRecorder>);
    recorder
        .expect_record_failover()
        .with(eq(id("c1")), eq(FailureKind::Transient))
        .times(1)
        .return_const(());
    let manager = crate::support::builder(&["c1", "c2"], &clock)
        .metrics(Arc::new(recorder))
        .build()
        .await
        .expect("builds");
    let served = manager
        .execute_with_failover(|c| async move {
            if c.id == "c1" {
                Err(TestError::new(FailureKind::Transient, "503"))
            } else {
                Ok(((), Some(Usage::default())))
            }
        })
        .await
        .expect("c2 serves");
    assert_eq!(served.credential, "c2");
    // A request-scoped failure is not a failover: no further call is expected.
    let _ = manager
        .execute_with_failover(|_| async {
            Err::<((), Option<Usage>), _>(TestError::new(FailureKind::RequestScoped, "bad"))
        })
        .await;
}

#[tokio::test]
async fn a_decommissioned_credential_is_removed_from_the_recorder() {
    let clock = ManualClock::new(t0());
    let mut recorder = MockRecorder::new();
    recorder
        .expect_handle()
        .times(3)
        .returning(|_| Arc::new(NoopRecorder) as Arc<dyn CredentialRecorder>);
    recorder
        .expect_remove()
        .with(eq(id("old")))
        .times(1)
        .return_const(());
    let manager = crate::support::builder(&["old", "b"], &clock)
        .metrics(Arc::new(recorder))
        .build()
        .await
        .expect("builds");
    manager
        .mark_for_rotation("old", cred("new", TimeDelta::hours(1)))
        .await
        .expect("marked");
    clock.advance(Duration::from_secs(8 * 86_400));
    manager.complete_rotation("old").await.expect("completed");
}

#[tokio::test]
async fn a_conflicting_save_after_a_refresh_rereads_the_version_and_keeps_the_new_tokens() {
    // Another writer bumped the stored version between our load and our save: the freshly
    // refreshed credential (the only holder of the rotated refresh token) must still be stored.
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let stored = cred("c1", TimeDelta::minutes(2));
    let mut store = MockStore::new();
    let initial = stored.clone();
    store
        .expect_load_all()
        .times(1)
        .returning(move |_| Ok(vec![Versioned::new(initial.clone(), 3)]));
    store.expect_refresh_lock().returning(|| None);
    let reread = stored.clone();
    // Inside the flight the manager re-reads the stored copy (unchanged at v3), then after the
    // conflict re-reads the version (now v4).
    let mut loads = mockall::Sequence::new();
    store
        .expect_load()
        .times(1)
        .in_sequence(&mut loads)
        .returning(move |_, _| Ok(Some(Versioned::new(reread.clone(), 3))));
    let bumped = stored.clone();
    store
        .expect_load()
        .times(1)
        .in_sequence(&mut loads)
        .returning(move |_, _| Ok(Some(Versioned::new(bumped.clone(), 4))));
    let mut saves = mockall::Sequence::new();
    store
        .expect_save()
        .withf(|_, c, expected| {
            *expected == Some(3) && c.access_token.expose_secret() == "access-c1-1"
        })
        .times(1)
        .in_sequence(&mut saves)
        .returning(|_, c, _| {
            Err(StoreError::Conflict {
                provider: "test".into(),
                id: c.id.clone(),
                expected: Some(3),
                actual: Some(4),
            })
        });
    store
        .expect_save()
        .withf(|_, c, expected| {
            *expected == Some(4)
                && c.refresh_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned())
                    == Some("refresh-c1-1".to_owned())
        })
        .times(1)
        .in_sequence(&mut saves)
        .returning(|_, _, _| Ok(5));
    let manager = OAuthKeyManager::builder("test")
        .store(Arc::new(store))
        .clock(Arc::new(clock.clone()))
        .refresher(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("builds");
    let served = crate::support::call_token(&manager).await.expect("served");
    assert_eq!(served.value, "access-c1-1");
}
