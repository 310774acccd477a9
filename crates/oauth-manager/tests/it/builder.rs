use std::time::Duration;

use oauth_core::ManualClock;
use oauth_manager::{BuildError, FailoverSettings, HealthPolicy, OAuthKeyManager};

use crate::support::{builder, cred, t0};

#[tokio::test]
async fn an_empty_pool_is_a_typed_error() {
    let err = OAuthKeyManager::builder("gemini")
        .build()
        .await
        .expect_err("empty");
    assert!(matches!(err, BuildError::EmptyPool { .. }), "{err}");
    assert!(err.to_string().contains("gemini"));
}

#[tokio::test]
async fn duplicate_ids_are_a_typed_error() {
    let err = OAuthKeyManager::builder("p")
        .credential(cred("a", chrono::TimeDelta::hours(1)))
        .credential(cred("a", chrono::TimeDelta::hours(2)))
        .build()
        .await
        .expect_err("duplicate");
    assert!(
        matches!(err, BuildError::DuplicateId { ref id, .. } if id == "a"),
        "{err}"
    );
}

#[tokio::test]
async fn nonsense_settings_are_typed_errors() {
    let clock = ManualClock::new(t0());
    let bad = HealthPolicy {
        backoff_base: Duration::ZERO,
        ..HealthPolicy::default()
    };
    let err = builder(&["a"], &clock)
        .health_policy(bad)
        .build()
        .await
        .expect_err("zero base");
    assert!(matches!(err, BuildError::InvalidSetting(_)), "{err}");
    assert!(
        crate::support::chain(&err).contains("backoff_base"),
        "{err}"
    );

    let err = builder(&["a"], &clock)
        .failover(FailoverSettings::default().with_max_attempts(0))
        .build()
        .await
        .expect_err("zero attempts");
    assert!(
        crate::support::chain(&err).contains("max_attempts"),
        "{err}"
    );

    let err = OAuthKeyManager::builder(" ")
        .credential(cred("a", chrono::TimeDelta::hours(1)))
        .build()
        .await
        .expect_err("empty provider");
    assert!(matches!(err, BuildError::EmptyProvider));
}

#[tokio::test]
async fn settings_are_copied_in_and_out() {
    let clock = ManualClock::new(t0());
    let manager = builder(&["a"], &clock).build().await.expect("builds");
    let mut strategy = manager.refresh_strategy();
    strategy.buffer_time = Duration::from_secs(600);
    // Changing the copy changes nothing until it is set.
    assert_eq!(
        manager.refresh_strategy().buffer_time,
        Duration::from_secs(300)
    );
    manager.set_refresh_strategy(strategy).expect("valid");
    assert_eq!(
        manager.refresh_strategy().buffer_time,
        Duration::from_secs(600)
    );
    assert!(
        manager.monitoring_config().is_none(),
        "monitoring is off until configured"
    );
    let mut bad = manager.health_policy();
    bad.jitter = 2.0;
    assert!(manager.set_health_policy(bad).is_err());
    assert!((manager.health_policy().jitter - 0.0).abs() < f64::EPSILON);
}
