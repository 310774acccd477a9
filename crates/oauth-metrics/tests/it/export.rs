//! The export shapes, and agreement between every reporting view.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::{
    CredentialHealth, CredentialHealthInfo, FailureKind, HealthPolicy, RotationFacts, UsageSnapshot,
};
use oauth_metrics::{
    Fanout, HealthSummary, InMemoryRecorder, MetricsRecorder, NoopRecorder, PrometheusMetrics,
    RefreshResult, RequestOutcome, export_json,
};

use crate::{id, t0};

fn usage(ok: u64, failed: u64) -> UsageSnapshot {
    UsageSnapshot {
        request_count: ok + failed,
        success_count: ok,
        error_count: failed,
        tokens_used: 10 * (ok + failed),
        total_latency: Duration::from_millis(100 * (ok + failed)),
        ..UsageSnapshot::default()
    }
}

fn info(name: &str, health: &CredentialHealth, usage: &UsageSnapshot) -> CredentialHealthInfo {
    let policy = HealthPolicy::default();
    CredentialHealthInfo::assemble(
        id(name),
        &health.snapshot(&policy, t0()),
        usage,
        Some(t0() + TimeDelta::hours(1)),
        RotationFacts::default(),
    )
}

fn summary() -> HealthSummary {
    let policy = HealthPolicy::default();
    let healthy = CredentialHealth::default();
    let mut backing_off = CredentialHealth::default();
    backing_off.record_failure(FailureKind::Transient, &policy, t0());
    let mut broken = CredentialHealth::default();
    for _ in 0..3 {
        broken.record_failure(FailureKind::Transient, &policy, t0());
    }
    HealthSummary::from_infos([
        info("a", &healthy, &usage(10, 0)),
        info("b", &backing_off, &usage(5, 5)),
        info("c", &broken, &usage(1, 3)),
        info("d", &healthy, &usage(0, 0)),
    ])
}

#[test]
fn summary_totals() {
    let s = summary();
    assert_eq!(s.total_credentials, 4);
    assert_eq!(s.healthy_credentials, 3);
    assert_eq!(s.unhealthy_credentials, 1);
    assert_eq!(s.credentials_in_backoff, 2);
    assert_eq!(s.total_requests, 24);
    assert_eq!(s.success_rate, 16.0 / 24.0);
    assert_eq!(s.credentials[&id("c")].success_rate, 0.25);
    assert_eq!(s.credentials[&id("d")].success_rate, 1.0);
}

#[test]
fn empty_summary_has_success_rate_one() {
    let s = HealthSummary::from_infos([]);
    assert_eq!((s.total_credentials, s.total_requests), (0, 0));
    assert_eq!(s.success_rate, 1.0);
}

#[test]
fn export_json_is_go_shaped_pretty_and_round_trips() {
    let s = summary();
    let json = export_json(&s).expect("serializes");
    assert!(json.starts_with("{\n  \"credentials\": {\n    \"a\": {\n      \"id\": \"a\","));
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
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
    // Top-level keys appear in the text in Go's (alphabetical) order.
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| json.find(&format!("\n  \"{k}\":")).expect("top-level key"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(v["credentials"]["b"]["average_latency"], 100_000_000);
    assert_eq!(v["total_requests"], 24);
    let back: HealthSummary = serde_json::from_str(&json).expect("round trip");
    assert_eq!(back, s);
}

#[test]
fn prometheus_metrics_from_snapshots() {
    let mut snaps = BTreeMap::new();
    snaps.insert(
        id("a"),
        UsageSnapshot {
            refresh_count: 2,
            refresh_failures: 1,
            ..usage(2, 1)
        },
    );
    snaps.insert(id("idle"), UsageSnapshot::default());
    let p = PrometheusMetrics::from_snapshots(&snaps);
    assert_eq!(p.requests_total[&id("a")], 3);
    assert_eq!(p.success_total[&id("a")], 2);
    assert_eq!(p.errors_total[&id("a")], 1);
    assert_eq!(p.tokens_used_total[&id("a")], 30);
    assert_eq!(p.refreshes_total[&id("a")], 2);
    assert_eq!(p.refresh_failures_total[&id("a")], 1);
    assert_eq!(p.average_latency[&id("a")], Duration::from_millis(100));
    assert_eq!(p.requests_total[&id("idle")], 0);
    assert!(
        !p.average_latency.contains_key(&id("idle")),
        "Go omits zero averages"
    );
    let json = serde_json::to_value(&p).expect("json");
    assert_eq!(json["RequestsTotal"]["a"], 3);
    assert_eq!(json["AverageLatency"]["a"], 100_000_000);
    let back: PrometheusMetrics = serde_json::from_value(json).expect("round trip");
    assert_eq!(back, p);
}

/// One workload through a fan-out; every view reports the same counts, refreshes included.
#[test]
fn all_views_agree() {
    let memory = Arc::new(InMemoryRecorder::new());
    #[cfg(feature = "prometheus")]
    let mut registry = oauth_metrics::prometheus_client::registry::Registry::with_prefix("p");
    let fanout = Fanout::new(vec![memory.clone(), Arc::new(NoopRecorder)]);
    assert_eq!(fanout.len(), 2);
    #[cfg(feature = "prometheus")]
    let fanout = fanout.with(Arc::new(oauth_metrics::PrometheusRecorder::new(
        &mut registry,
        "prov",
    )));
    let h = fanout.handle(&id("a"));
    let ms = Duration::from_millis;
    h.record_request(100, ms(50), RequestOutcome::Success, t0());
    h.record_request(200, ms(100), RequestOutcome::Success, t0());
    h.record_request(
        150,
        ms(75),
        RequestOutcome::Failure(FailureKind::Transient),
        t0(),
    );
    h.record_refresh(RefreshResult::Success, ms(300), t0());
    h.record_refresh(
        RefreshResult::Success,
        ms(300),
        t0() + TimeDelta::minutes(1),
    );
    h.record_refresh(
        RefreshResult::Failure(FailureKind::Transient),
        ms(300),
        t0(),
    );
    fanout.record_failover(&id("a"), FailureKind::Transient);

    let now = t0() + TimeDelta::minutes(2);
    let snaps = memory.snapshots(now);
    let usage = &snaps[&id("a")];
    let mut health = CredentialHealth::default();
    health.record_refresh_success(t0() + TimeDelta::minutes(1));
    let info = info("a", &health, usage);
    let summary = HealthSummary::from_infos([info.clone()]);
    let prom = PrometheusMetrics::from_snapshots(&snaps);

    assert_eq!(usage.request_count, 3);
    assert_eq!(info.request_count, 3);
    assert_eq!(summary.total_requests, 3);
    assert_eq!(prom.requests_total[&id("a")], 3);
    assert_eq!(usage.refresh_count, 2);
    assert_eq!(info.refresh_count, 2);
    assert_eq!(prom.refreshes_total[&id("a")], 2);
    assert_eq!(info.last_refresh, usage.last_refresh);
    assert_eq!(info.tokens_used, prom.tokens_used_total[&id("a")]);
    assert_eq!(memory.failovers(&id("a")), Some(1));
    #[cfg(feature = "prometheus")]
    {
        let text = oauth_metrics::encode_openmetrics(&registry).expect("encodes");
        let e = crate::openmetrics::Exposition::parse(&text);
        let l = |k, v| vec![("provider", "prov"), ("credential", "a"), (k, v)];
        assert_eq!(e.value("p_refreshes_total", &l("result", "success")), 2.0);
        assert_eq!(e.value("p_requests_total", &l("outcome", "success")), 2.0);
        assert_eq!(e.value("p_requests_total", &l("outcome", "transient")), 1.0);
        // Failovers are per provider by default.
        let failovers = e.value(
            "p_failovers_total",
            &[("provider", "prov"), ("reason", "transient")],
        );
        assert_eq!(failovers, 1.0);
        let tokens = e.value(
            "p_tokens_total",
            &[("provider", "prov"), ("credential", "a")],
        );
        assert_eq!(tokens, 450.0);
    }
}
