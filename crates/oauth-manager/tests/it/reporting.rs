use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::ManualClock;
use oauth_manager::metrics::RequestOutcome;
use oauth_manager::webhooks::{MemoryNotifier, MonitoringConfig, Notifier, WebhookEventType};
use oauth_manager::{Credential, FailureKind};

use crate::support::{counting_refresher, cred, t0};

const SECRETS: [&str; 4] = [
    "SECRET-ACCESS",
    "SECRET-REFRESH",
    "SECRET-CLIENT",
    "access-a-1",
];

fn secret_cred(id: &str) -> Credential {
    Credential::new(id, format!("{}-{id}", SECRETS[0]), t0())
        .expect("valid")
        .with_refresh_token(format!("{}-{id}", SECRETS[1]))
        .with_client("client-id", Some(SECRETS[2].to_owned()))
        .with_expires_at(t0() + TimeDelta::minutes(2))
}

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} leaks {s}: {text}");
    }
}

#[tokio::test]
async fn no_secret_reaches_debug_exports_events_or_alerts() {
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let notifier = Arc::new(MemoryNotifier::new());
    let manager = crate::support::builder_of([secret_cred("a"), secret_cred("b")], &clock)
        .refresher(Arc::clone(&refresher.refresher))
        .notifier(Arc::clone(&notifier) as Arc<dyn Notifier>)
        .monitoring(MonitoringConfig::default())
        .build()
        .await
        .expect("builds");
    let mut events = manager.subscribe();
    crate::support::call_ok(&manager).await.expect("served");
    manager.report_failure_kind("b", FailureKind::PermanentAuth);
    let alerts = manager.check_alerts();
    assert!(!alerts.is_empty());
    crate::support::settle().await;

    assert_clean("manager Debug", &format!("{manager:?}"));
    assert_clean("credentials Debug", &format!("{:?}", manager.credentials()));
    assert_clean("export_json", &manager.export_json().expect("serializes"));
    assert_clean(
        "export_prometheus",
        &format!("{:?}", manager.export_prometheus()),
    );
    assert_clean(
        "health info",
        &format!("{:?}", manager.credential_health_info("a")),
    );
    assert_clean(
        "alerts",
        &serde_json::to_string(&alerts).expect("serializes"),
    );
    while let Ok(e) = events.try_recv() {
        assert_clean("event", &serde_json::to_string(&e).expect("serializes"));
    }
    assert_clean(
        "notified",
        &serde_json::to_string(&notifier.events()).expect("serializes"),
    );
}

#[tokio::test]
async fn the_health_summary_has_the_go_json_shape_and_all_views_agree() {
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let manager = crate::support::builder_of(
        [
            cred("a", TimeDelta::minutes(2)),
            cred("b", TimeDelta::hours(2)),
        ],
        &clock,
    )
    .refresher(Arc::clone(&refresher.refresher))
    .build()
    .await
    .expect("builds");
    for _ in 0..4 {
        crate::support::call_ok(&manager).await.expect("served");
    }
    manager.record_request(
        "ghost",
        5,
        Duration::from_millis(10),
        RequestOutcome::Success,
    );

    let json: serde_json::Value =
        serde_json::from_str(&manager.export_json().expect("serializes")).expect("json");
    let keys: Vec<_> = json.as_object().expect("object").keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "credentials",
            "credentials_in_backoff",
            "healthy_credentials",
            "success_rate",
            "total_credentials",
            "total_requests",
            "unhealthy_credentials"
        ]
    );
    assert_eq!(json["total_credentials"], 2);
    assert_eq!(json["total_requests"], 4);
    assert_eq!(json["credentials"]["a"]["refresh_count"], 1);

    let info = manager.credential_health_info("a").expect("known");
    let usage = manager.credential_metrics("a").expect("recorded");
    let prom = manager.export_prometheus();
    let a = oauth_manager::CredentialId::new("a").expect("valid");
    assert_eq!(info.refresh_count, 1);
    assert_eq!(usage.refresh_count, 1);
    assert_eq!(prom.refreshes_total.get(&a), Some(&1));
    assert_eq!(info.request_count, usage.request_count);
    assert_eq!(prom.requests_total.get(&a), Some(&usage.request_count));
    // Go parity: ids recorded by hand appear in the metrics maps, not in the pool summary.
    assert!(manager.all_metrics().contains_key("ghost"));
    assert!(json["credentials"].get("ghost").is_none());
}

#[tokio::test]
async fn monitoring_sends_filtered_events_and_alerts_to_the_notifier() {
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, Some(FailureKind::PermanentAuth));
    let notifier = Arc::new(MemoryNotifier::new());
    let config = MonitoringConfig {
        webhook_events: [
            WebhookEventType::Failure,
            WebhookEventType::NeedsReauthorization,
        ]
        .into_iter()
        .collect(),
        ..MonitoringConfig::default()
    };
    let manager = crate::support::builder_of(
        [
            cred("a", TimeDelta::minutes(2)),
            cred("b", TimeDelta::hours(2)),
        ],
        &clock,
    )
    .refresher(Arc::clone(&refresher.refresher))
    .notifier(Arc::clone(&notifier) as Arc<dyn Notifier>)
    .monitoring(config)
    .build()
    .await
    .expect("builds");
    crate::support::call_ok(&manager).await.expect("b serves");
    crate::support::settle().await;
    let types: Vec<_> = notifier.events().iter().map(|e| e.event_type).collect();
    assert!(types.contains(&WebhookEventType::Failure), "{types:?}");
    assert!(
        types.contains(&WebhookEventType::NeedsReauthorization),
        "{types:?}"
    );
    assert!(types.iter().all(|t| matches!(
        t,
        WebhookEventType::Failure | WebhookEventType::NeedsReauthorization
    )));
    assert!(manager.monitoring_config().is_some());
    manager.set_monitoring_config(None).expect("valid");
    assert!(
        manager.check_alerts().is_empty(),
        "monitoring off: no alerts"
    );
}

#[tokio::test]
async fn the_summary_counts_healthy_unhealthy_and_backing_off_credentials() {
    let clock = ManualClock::new(t0());
    let manager = crate::support::pool(&["a", "b", "c", "d"], &clock).await;
    for _ in 0..3 {
        manager.report_failure_kind("a", FailureKind::Transient); // unhealthy and backing off
    }
    manager.report_failure_kind("b", FailureKind::Transient); // backing off, still healthy
    manager.report_failure_kind("c", FailureKind::PermanentAuth); // unhealthy, never available
    for _ in 0..3 {
        manager.record_request("d", 10, Duration::from_millis(5), RequestOutcome::Success);
    }
    manager.record_request(
        "d",
        0,
        Duration::from_millis(5),
        RequestOutcome::Failure(FailureKind::Transient),
    );
    let s = manager.health_summary();
    assert_eq!(s.total_credentials, 4);
    assert_eq!(s.healthy_credentials, 2, "{s:?}");
    assert_eq!(s.unhealthy_credentials, 2, "{s:?}");
    assert_eq!(s.credentials_in_backoff, 2, "{s:?}");
    assert_eq!(s.total_requests, 4);
    assert!((s.success_rate - 0.75).abs() < 1e-9);
}
