//! Monitoring that tells the truth (issue 15): webhooks from `MonitoringConfig`, gauges computed at
//! scrape time, counters that exist at zero, tracing spans without secrets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use oauth_core::ManualClock;
use oauth_manager::metrics::{PrometheusRecorder, encode_openmetrics};
use oauth_manager::webhooks::{MonitoringConfig, WebhookSecret};
use oauth_manager::{CredentialState, ExposeSecret, FailureKind, Usage};
use oauth_testkit::webhook_receiver::{VerifyFn, WebhookReceiver};
use prometheus_client::registry::Registry;

use crate::support::{TestError, builder, builder_of, counting_refresher, cred, t0};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn receiver() -> WebhookReceiver {
    let secret = WebhookSecret::new(SECRET).expect("valid secret");
    let verify: VerifyFn = Arc::new(move |headers, body| {
        oauth_manager::webhooks::verify(
            std::slice::from_ref(&secret),
            headers,
            body,
            Utc::now(),
            Duration::from_secs(300),
        )
        .map_err(|e| e.to_string())
    });
    WebhookReceiver::start(verify)
        .await
        .expect("receiver starts")
}

/// The Go sequence: set a monitoring configuration with a webhook URL at run time, refresh, wait:
/// a signed POST of type `refresh` arrives for the credential. (It posted nothing before: the
/// manager delivered only through a notifier fixed at build time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_a_monitoring_config_with_a_url_delivers_signed_webhooks() {
    let hooks = receiver().await;
    let clock = ManualClock::new(Utc::now());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let manager = builder(&["team"], &clock)
        .refresher_arc(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("builds");
    let config = MonitoringConfig {
        webhook_url: Some(hooks.url()),
        signing_secrets: vec![WebhookSecret::new(SECRET).expect("valid")],
        ..MonitoringConfig::go_default()
    };
    manager
        .set_monitoring_config(Some(config))
        .expect("valid configuration");
    manager.refresh_now("team").await.expect("refreshed");
    let mut delivered = Vec::new();
    for _ in 0..200 {
        delivered = hooks.accepted_events();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refresh = delivered
        .iter()
        .find(|e| e["type"] == "refresh")
        .unwrap_or_else(|| panic!("a signed refresh POST: {delivered:?}"));
    assert_eq!(refresh["credential_id"], "team", "{refresh}");
    assert!(hooks.rejections().is_empty(), "every delivery verified");
    for request in hooks.requests() {
        let body = String::from_utf8_lossy(&request.body);
        assert!(
            !body.contains("access-team") && !body.contains("refresh-team"),
            "{body}"
        );
    }
}

/// Gauges are read when scraped: after a cooldown ends, `/metrics` says active exactly when the
/// health report does, with no call in between; a credential that never changed has its state
/// and expiry from the first scrape. Failure counters exist at 0 before the first failure.
#[tokio::test]
async fn scrapes_agree_with_health_at_every_scrape() {
    let clock = ManualClock::new(t0());
    let mut registry = Registry::default();
    let recorder = PrometheusRecorder::new(&mut registry, "test");
    let manager = builder(&["a", "b"], &clock)
        .metrics(recorder)
        .build()
        .await
        .expect("builds");
    let state_line = |text: &str, id: &str, state: CredentialState| {
        let needle = format!("credential=\"{id}\",state=\"{}\"}} 1", state.as_str());
        text.lines()
            .any(|l| l.contains("credential_state") && l.contains(&needle))
    };
    let scrape = |r: &Registry| encode_openmetrics(r).expect("encodes");

    let first = scrape(&registry);
    assert!(state_line(&first, "b", CredentialState::Active), "{first}");
    assert!(
        first
            .lines()
            .any(|l| l.contains("token_expiry") && l.contains("credential=\"b\"")),
        "an expiry from the first scrape: {first}"
    );
    let failures_before = count_of(&first, "a", "rate_limited");
    assert_eq!(
        failures_before,
        Some(0.0),
        "the failure series exists at 0: {first}"
    );

    manager
        .execute_with_failover(|c| async move {
            if c.id == "a" {
                Err(TestError::new(
                    FailureKind::rate_limited(Some(Duration::from_secs(3))),
                    "429",
                ))
            } else {
                Ok(((), None::<Usage>))
            }
        })
        .await
        .expect("b serves");
    let during = scrape(&registry);
    assert_eq!(
        manager.credential_health("a").expect("known").state,
        CredentialState::CoolingDown
    );
    assert!(
        state_line(&during, "a", CredentialState::CoolingDown),
        "{during}"
    );
    assert_eq!(
        count_of(&during, "a", "rate_limited"),
        Some(1.0),
        "then 1: {during}"
    );

    clock.advance(Duration::from_secs(3));
    let after = scrape(&registry);
    assert_eq!(
        manager.credential_health("a").expect("known").state,
        CredentialState::Active
    );
    assert!(
        state_line(&after, "a", CredentialState::Active),
        "the cooldown ended: the scrape says so too: {after}"
    );
}

/// The value of the request counter of credential `id` with outcome `outcome`.
fn count_of(text: &str, id: &str, outcome: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with("requests_total") || l.contains("_requests_total"))
        .find(|l| {
            l.contains(&format!("credential=\"{id}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// One span per call and per attempt (and per refresh), with credential, attempt and outcome, and
/// a warn event when a call fails over: a user with a tracing subscriber sees why a call moved. No
/// secret appears in any span or event.
#[tokio::test]
async fn a_scripted_failover_is_traced_without_secrets() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let _capturing = Capturing::start(Arc::clone(&lines));

    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let manager = builder_of(
        [
            cred("a", TimeDelta::minutes(2)),
            cred("b", TimeDelta::hours(1)),
        ],
        &clock,
    )
    .refresher_arc(Arc::clone(&refresher.refresher))
    .build()
    .await
    .expect("builds");
    manager
        .execute_with_failover(|c| async move {
            if c.id == "a" {
                Err(TestError::new(FailureKind::Transient, "503"))
            } else {
                Ok(((), None::<Usage>))
            }
        })
        .await
        .expect("b serves");

    let lines = lines.lock().expect("lines").clone();
    let all = lines.join("\n");
    assert!(all.contains("oauth.execute"), "{all}");
    assert!(
        all.contains("oauth.refresh") && all.contains("credential=a"),
        "{all}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("oauth.attempt") && l.contains("outcome=transient")),
        "{all}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("oauth.attempt") && l.contains("outcome=success")),
        "{all}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("event WARN") && l.contains("failing over")),
        "{all}"
    );
    let a = manager.credential("a").expect("known");
    let secrets = [
        a.access_token.expose_secret().to_owned(),
        "access-a-0".to_owned(),
        "refresh-a-0".to_owned(),
        "refresh-a-1".to_owned(),
        "access-b-0".to_owned(),
    ];
    for secret in &secrets {
        assert!(
            !all.contains(secret.as_str()),
            "{secret} leaked into tracing: {all}"
        );
    }
}

thread_local! {
    static CAPTURED: std::cell::RefCell<Option<Arc<Mutex<Vec<String>>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Captures the spans and events of the current thread into `lines` while alive. The subscriber
/// is global (installed once for this test binary), so no callsite can have cached "nobody is
/// interested" before a capture starts; it records only on threads that are capturing.
struct Capturing;

impl Capturing {
    fn start(lines: Arc<Mutex<Vec<String>>>) -> Self {
        use tracing_subscriber::layer::SubscriberExt as _;
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            let subscriber = tracing_subscriber::registry().with(Capture);
            let _ = tracing::subscriber::set_global_default(subscriber);
            tracing::callsite::rebuild_interest_cache();
        });
        CAPTURED.with(|c| *c.borrow_mut() = Some(lines));
        Self
    }
}

impl Drop for Capturing {
    fn drop(&mut self) {
        CAPTURED.with(|c| *c.borrow_mut() = None);
    }
}

fn capture(line: String) {
    CAPTURED.with(|c| {
        if let Some(lines) = c.borrow().as_ref() {
            lines.lock().expect("lines").push(line);
        }
    });
}

/// A subscriber layer that writes every span (with its fields, as recorded) and event as a line.
struct Capture;

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!(" {}={value}", field.name()));
    }
}

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(format!("span {}", attrs.metadata().name()));
        attrs.record(&mut fields);
        capture(fields.0);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let name = ctx.span(id).map_or("?", |s| s.name());
        let mut fields = Fields(format!("span {name} (recorded)"));
        values.record(&mut fields);
        capture(fields.0);
    }

    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(format!("event {}", event.metadata().level()));
        event.record(&mut fields);
        capture(fields.0);
    }
}

/// Issue 14.6: a healthy pool of 1-hour tokens with a working refresher, under the default
/// monitoring configuration, sends no expiry warning in a simulated day (Go sent one per
/// credential per hour) and no routine refresh webhook.
#[tokio::test]
async fn a_healthy_pool_of_one_hour_tokens_sends_no_expiry_warning_in_a_day() {
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let sink = Arc::new(oauth_manager::webhooks::MemoryNotifier::new());
    let manager = builder(&["a", "b", "c"], &clock)
        .refresher_arc(Arc::clone(&refresher.refresher))
        .monitoring(MonitoringConfig::default())
        .notifier_arc(sink.clone())
        .build()
        .await
        .expect("builds");
    let mut alerts = Vec::new();
    for _minute in 0..24 * 60 {
        clock.advance(Duration::from_secs(60));
        for _ in 0..3 {
            crate::support::call_ok(&manager).await.expect("served");
        }
        alerts.extend(manager.check_alerts());
    }
    crate::support::settle().await;
    let warnings = alerts
        .iter()
        .filter(|a| {
            a.event_type == oauth_manager::webhooks::WebhookEventType::ExpiryWarning
                || a.event_type == oauth_manager::webhooks::WebhookEventType::Expired
        })
        .count();
    let refreshes = refresher.calls.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("a day of 1-hour tokens: {refreshes} refreshes, {warnings} expiry alerts");
    assert!(
        refreshes >= 3 * 24,
        "the pool refreshed all day: {refreshes}"
    );
    assert_eq!(warnings, 0, "{alerts:?}");
    let routine = sink
        .events()
        .iter()
        .filter(|e| e.event_type == oauth_manager::webhooks::WebhookEventType::Refresh)
        .count();
    assert_eq!(routine, 0, "routine refresh webhooks are an opt-in");
}
