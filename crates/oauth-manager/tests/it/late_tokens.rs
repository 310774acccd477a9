//! Issue 18: `record_tokens` adds usage that arrives after its request was recorded (a stream's
//! final usage) to the credential's token count, in the manager's metrics and in Prometheus,
//! without counting a request.

use std::time::Duration;

use oauth_core::ManualClock;
use oauth_manager::metrics::prometheus_client::registry::Registry;
use oauth_manager::metrics::{PrometheusRecorder, RequestOutcome, encode_openmetrics};
use oauth_manager::{UnknownCredential, Usage};

use crate::support::{builder, t0};

fn line_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn record_tokens_adds_tokens_but_not_requests() {
    let clock = ManualClock::new(t0());
    let mut registry = Registry::with_prefix("oauth_pool");
    let recorder = PrometheusRecorder::new(&mut registry, "test");
    let manager = builder(&["a", "b"], &clock)
        .metrics(recorder)
        .build()
        .await
        .expect("builds");
    // A streamed call: recorded when its headers arrive, with no usage yet.
    manager
        .execute_with_failover(|_| async {
            Ok::<_, crate::support::TestError>(((), None::<Usage>))
        })
        .await
        .expect("served");
    let served = manager.credential_metrics("a").expect("known");
    assert_eq!((served.request_count, served.tokens_used), (1, 0));
    manager.record_tokens("a", 1500).expect("known id");
    manager.record_tokens("a", 0).expect("known id");
    manager.record_request("a", 20, Duration::from_millis(5), RequestOutcome::Success);

    let a = manager.credential_metrics("a").expect("known");
    assert_eq!(
        (
            a.request_count,
            a.success_count,
            a.error_count,
            a.tokens_used
        ),
        (2, 2, 0, 1520)
    );
    assert_eq!(
        a.recent_requests, 2,
        "no request in the recent window either"
    );
    let b = manager.credential_metrics("b").expect("known");
    assert_eq!((b.request_count, b.tokens_used), (0, 0));
    assert_eq!(
        manager
            .export_prometheus()
            .tokens_used_total
            .get(&oauth_manager::CredentialId::new("a").expect("valid")),
        Some(&1520)
    );

    let text = encode_openmetrics(&registry).expect("encodes");
    let tokens = r#"oauth_pool_tokens_total{provider="test",credential="a"} "#;
    let requests =
        r#"oauth_pool_requests_total{provider="test",credential="a",outcome="success"} "#;
    assert_eq!(line_value(&text, tokens), Some(1520.0), "{text}");
    assert_eq!(line_value(&text, requests), Some(2.0), "{text}");

    // An unknown id is a typed error and records nothing.
    let err = manager.record_tokens("nobody", 9).expect_err("unknown");
    assert!(
        matches!(&err, UnknownCredential { id, .. } if id == "nobody"),
        "{err:?}"
    );
    assert!(manager.credential_metrics("nobody").is_none());

    // Nor does a credential that left the pool: its series stay gone.
    manager.remove_credential("b").await.expect("removed");
    assert!(matches!(
        manager.record_tokens("b", 9),
        Err(UnknownCredential { .. })
    ));
    let text = encode_openmetrics(&registry).expect("encodes");
    assert!(!text.contains(r#"credential="b""#), "{text}");
}
