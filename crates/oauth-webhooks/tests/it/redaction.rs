//! No token, secret or remote response body reaches an event, its JSON, its Debug output, or the
//! bytes a receiver gets.

use std::time::Duration;

use chrono::Utc;
use oauth_core::{ClassifyFailure, CredentialId, Event, EventKind, FailureKind};
use oauth_webhooks::{MonitoringConfig, Notifier, WebhookEvent, WebhookEventType, WebhookNotifier};

use crate::support::{OTHER_SECRET, SPEC_SECRET, config, receiver, secret};

/// The base64 key of [`OTHER_SECRET`], without its prefix.
const OTHER_SECRET_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKio";

const ACCESS: &str = "at-LEAKED-9f8e7d";
const REFRESH: &str = "rt-LEAKED-1a2b3c";

/// The token endpoint answered 200 with tokens but a body the refresher could not accept (say,
/// `expires_in` was a string). Its error keeps the raw body, as many HTTP clients' errors do.
#[derive(Debug)]
struct TokenEndpointError {
    body: String,
}

impl std::fmt::Display for TokenEndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected token response: {}", self.body)
    }
}

impl ClassifyFailure for TokenEndpointError {}

fn endpoint_error() -> TokenEndpointError {
    TokenEndpointError {
        body: format!(
            r#"{{"access_token":"{ACCESS}","refresh_token":"{REFRESH}","expires_in":"soon"}}"#
        ),
    }
}

/// The events a refresh failure like that leads to, built as the pool builds them: the refresh
/// failure (classified), and a store and a rotation hook whose error texts quote the body.
fn events() -> Vec<WebhookEvent> {
    core_events()
        .iter()
        .map(|e| WebhookEvent::from_event(e).expect("reported"))
        .collect()
}

/// The oauth-core events behind [`events`].
fn core_events() -> Vec<Event> {
    let err = endpoint_error();
    assert!(
        err.to_string().contains(ACCESS),
        "the error does hold the token"
    );
    let credential = CredentialId::new("team").expect("valid id");
    let at = Utc::now();
    let core = [
        EventKind::RefreshFailed {
            credential: credential.clone(),
            reason: err.failure_kind(),
            consecutive_failures: 1,
        },
        EventKind::PersistenceFailed {
            credential: credential.clone(),
            reason: err.to_string(),
            attempts: 2,
        },
        EventKind::DecommissionFailed {
            credential,
            reason: format!("hook refused: {err}"),
        },
    ];
    core.into_iter().map(|kind| Event::new(at, kind)).collect()
}

fn assert_clean(text: &str) {
    for secret in [
        ACCESS,
        REFRESH,
        "LEAKED",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        OTHER_SECRET_KEY,
        "URLSECRET",
        "T0KEN",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into: {text}");
    }
}

#[test]
fn events_from_a_refresh_failure_hold_only_the_classification() {
    let events = events();
    let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            WebhookEventType::Failure,
            WebhookEventType::PersistenceFailed,
            WebhookEventType::DecommissionFailed,
        ]
    );
    assert_eq!(events[0].details["error"], "transient");
    assert_eq!(events[1].details["reason"], "unclassified");
    for ev in &events {
        assert_clean(&serde_json::to_string(ev).expect("serializes"));
        assert_clean(&serde_json::to_string_pretty(ev).expect("serializes"));
        assert_clean(&format!("{ev:?}"));
        assert_clean(&ev.message);
    }
    // Kinds that carry a retry-after keep it as a number.
    let limited = WebhookEvent::from_event(&Event::new(
        Utc::now(),
        EventKind::RefreshFailed {
            credential: CredentialId::new("team").expect("valid id"),
            reason: FailureKind::rate_limited(Some(Duration::from_secs(30))),
            consecutive_failures: 3,
        },
    ))
    .expect("reported");
    assert_eq!(limited.details["error"], "rate_limited");
    assert_eq!(limited.details["retry_after_secs"], 30);
}

#[tokio::test]
async fn delivered_bytes_and_headers_hold_no_token_or_secret() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    // A URL with a token in its query: it must not show in Debug output either.
    let cfg = MonitoringConfig {
        webhook_url: Some(format!("{}?token=URLSECRET", rx.url())),
        ..config(rx.url(), vec![secret(SPEC_SECRET)])
    };
    let notifier = WebhookNotifier::new(&cfg).expect("valid config");
    for ev in events() {
        notifier.notify(ev).await;
    }
    assert!(rx.wait_for_accepted(3, Duration::from_secs(10)).await);
    for req in rx.requests() {
        assert_clean(&String::from_utf8_lossy(&req.body));
        for (name, value) in &req.headers {
            assert_clean(&format!("{name}: {value:?}"));
        }
    }
    for text in [format!("{notifier:?}"), format!("{cfg:?}")] {
        assert_clean(&text);
        assert!(!text.contains("URLSECRET"), "{text}");
    }
    assert!(
        notifier
            .endpoint()
            .is_some_and(|e| !e.contains("URLSECRET"))
    );
}

/// A `Monitor` reconfigured at run time (URL with a token in its path and query, two secrets,
/// then a rotation): its Debug, status, counters, configuration, errors, and every byte of every
/// delivery but the signature hold no token, secret or URL secret.
#[tokio::test]
async fn monitor_outputs_hold_no_token_secret_or_url_secret() {
    use oauth_webhooks::{HEADER_SIGNATURE, Monitor, WebhookSecret};

    assert!(OTHER_SECRET.ends_with(&format!("{OTHER_SECRET_KEY}=")));
    let rx = receiver(vec![secret(SPEC_SECRET), secret(OTHER_SECRET)]).await;
    let url = format!("{}/T0KEN-path?sig=URLSECRET", rx.url());
    let first = MonitoringConfig {
        webhook_url: Some(url.clone()),
        ..config(rx.url(), vec![secret(SPEC_SECRET)])
    };
    let monitor = Monitor::new(Some(first)).expect("valid");
    let mut outputs = Vec::new();
    for e in core_events() {
        assert!(monitor.notify_event(&e));
    }
    outputs.push(format!("{monitor:?}"));
    monitor
        .reconfigure(Some(MonitoringConfig {
            webhook_url: Some(url.clone()),
            ..config(rx.url(), vec![secret(OTHER_SECRET), secret(SPEC_SECRET)])
        }))
        .expect("valid");
    for e in core_events() {
        assert!(monitor.notify_event(&e));
    }
    assert!(rx.wait_for_accepted(6, Duration::from_secs(10)).await);

    // Errors: a bad secret, a bad URL quoting a token, a refused reconfiguration.
    let bad_secret = WebhookSecret::new("whsec_URLSECRET-not-base64!").expect_err("rejected");
    outputs.push(format!("{bad_secret} {bad_secret:?}"));
    let bad_url = monitor
        .reconfigure(Some(MonitoringConfig {
            webhook_url: Some("http://exa mple.com/T0KEN?sig=URLSECRET".into()),
            ..MonitoringConfig::default()
        }))
        .expect_err("rejected");
    outputs.push(format!("{bad_url} {bad_url:?}"));

    outputs.push(format!("{monitor:?}"));
    outputs.push(format!("{} {:?}", monitor.status(), monitor.status()));
    outputs.push(format!("{:?}", monitor.delivery_stats()));
    outputs.push(format!("{:?}", monitor.config()));
    outputs.push(format!("{:?}", monitor.notifier()));
    for e in events() {
        outputs.push(serde_json::to_string(&e).expect("serializes"));
    }
    for req in rx.requests() {
        assert!(req.verification.is_ok());
        assert_eq!(req.path, "/webhook/T0KEN-path", "the URL is used as given");
        outputs.push(String::from_utf8_lossy(&req.body).into_owned());
        for (name, value) in &req.headers {
            if name.as_str() != HEADER_SIGNATURE {
                outputs.push(format!("{name}: {value:?}"));
            }
        }
    }
    assert!(outputs.len() > 20);
    for text in &outputs {
        assert_clean(text);
    }
}

/// Collects every tracing event (all levels) as text: message and fields.
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut f = Fields(String::new());
        span.record(&mut f);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(f.0);
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut f = Fields(String::new());
        values.record(&mut f);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(f.0);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(format!(
            "{} {}",
            event.metadata().level(),
            event.metadata().target()
        ));
        event.record(&mut f);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(f.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The log lines of failed attempts (connection refused, 500, 410, giving up, an abandoned
/// shutdown) name the event and the redacted endpoint, never the URL's path or query, a secret or
/// a token.
#[tokio::test]
async fn log_lines_hold_no_url_secret_or_token() {
    use oauth_testkit::webhook_receiver::Fault;
    use oauth_webhooks::Monitor;

    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let _guard = tracing::subscriber::set_default(Capture(std::sync::Arc::clone(&lines)));

    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    let with_token = |base: &str| format!("{base}/T0KEN-path?sig=URLSECRET");
    let cfg = MonitoringConfig {
        webhook_url: Some(with_token(&rx.url())),
        retry: crate::support::fast_retry(2),
        ..config(rx.url(), vec![secret(SPEC_SECRET)])
    };
    let monitor = Monitor::new(Some(cfg.clone())).expect("valid");
    // A 500 then a 500 again: retried, then given up.
    rx.fail_next(2, Fault::Status(500));
    let evs = core_events();
    assert!(monitor.notify_event(&evs[0]));
    assert!(rx.wait_for_requests(2, Duration::from_secs(10)).await);
    // A 410: the endpoint is disabled.
    rx.fail_next(1, Fault::Gone);
    assert!(monitor.notify_event(&evs[1]));
    assert!(rx.wait_for_requests(3, Duration::from_secs(10)).await);
    // Connection refused, and a shutdown that gives up on it.
    let refused = MonitoringConfig {
        webhook_url: Some(with_token("http://127.0.0.1:9")),
        retry: crate::support::fast_retry(10_000),
        ..cfg
    };
    monitor.reconfigure(Some(refused)).expect("valid");
    assert!(monitor.notify_event(&evs[2]));
    let report = monitor.shutdown(Duration::from_millis(300)).await;
    assert!(report.timed_out);

    let lines = lines
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let ours: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("oauth_webhooks"))
        .collect();
    for needle in [
        "giving up",
        "410 Gone",
        "attempt failed",
        "attempt rejected",
        "abandoned",
    ] {
        assert!(
            ours.iter().any(|l| l.contains(needle)),
            "no log line says {needle:?}: {ours:#?}"
        );
    }
    for line in &lines {
        assert_clean(line);
    }
}
