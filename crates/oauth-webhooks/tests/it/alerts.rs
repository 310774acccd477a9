//! Every alert rule, driven by `ManualClock` time and the oauth-core health state machine.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use oauth_core::{
    Clock, CredentialHealth, CredentialId, FailureKind, HealthPolicy, HealthSnapshot, ManualClock,
    UsageSnapshot,
};
use oauth_webhooks::{
    AlertInput, AlertState, MonitoringConfig, WebhookEvent, WebhookEventType, check_alerts,
};
use serde_json::json;

/// One credential's facts, owned, so inputs can borrow them.
struct Cred {
    id: CredentialId,
    health: CredentialHealth,
    usage: UsageSnapshot,
    expires_at: Option<DateTime<Utc>>,
}

impl Cred {
    fn new(id: &str) -> Self {
        Self {
            id: CredentialId::new(id).expect("valid id"),
            health: CredentialHealth::default(),
            usage: UsageSnapshot::default(),
            expires_at: None,
        }
    }

    /// `failures` of `requests` in a 5-minute recent window (and in the lifetime counters).
    fn with_traffic(mut self, requests: u64, failures: u64) -> Self {
        self.usage = UsageSnapshot {
            request_count: requests,
            success_count: requests - failures,
            error_count: failures,
            recent_requests: requests,
            recent_failures: failures,
            recent_window: Duration::from_secs(300),
            ..UsageSnapshot::default()
        };
        self
    }

    fn expiring(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
    }
}

fn check(
    config: &MonitoringConfig,
    creds: &[Cred],
    state: &mut AlertState,
    now: DateTime<Utc>,
) -> Vec<WebhookEvent> {
    let policy = HealthPolicy::default();
    let snapshots: Vec<HealthSnapshot> = creds
        .iter()
        .map(|c| c.health.snapshot(&policy, now))
        .collect();
    let inputs: Vec<AlertInput<'_>> = creds
        .iter()
        .zip(&snapshots)
        .map(|(c, h)| AlertInput {
            id: &c.id,
            health: h,
            usage: &c.usage,
            expires_at: c.expires_at,
        })
        .collect();
    check_alerts(config, &inputs, state, now)
}

fn kinds(events: &[WebhookEvent]) -> Vec<(WebhookEventType, Option<String>)> {
    events
        .iter()
        .map(|e| {
            (
                e.event_type,
                e.credential_id.as_ref().map(ToString::to_string),
            )
        })
        .collect()
}

fn go_config() -> MonitoringConfig {
    MonitoringConfig {
        failure_rate_threshold: 0.5,
        expiry_warning_time: Duration::from_secs(24 * 3600),
        ..MonitoringConfig::default()
    }
}

fn some(id: &str) -> Option<String> {
    Some(id.to_owned())
}

/// The Go case: expiring in 12 h with 15 failures out of 20 requests, thresholds 0.5 and 24 h,
/// gives both a failure and an expiry_warning; the cooldown suppresses a repeat within the window,
/// and a different key is not suppressed.
#[test]
fn go_case_failure_and_expiry_warning_then_cooldown() {
    let clock = ManualClock::default();
    let now = clock.now();
    let config = go_config();
    let mut state = AlertState::new();
    let a = Cred::new("acct-a")
        .with_traffic(20, 15)
        .expiring(now + TimeDelta::hours(12));

    let alerts = check(&config, std::slice::from_ref(&a), &mut state, now);
    assert_eq!(
        kinds(&alerts),
        [
            (WebhookEventType::Failure, some("acct-a")),
            (WebhookEventType::ExpiryWarning, some("acct-a")),
        ]
    );
    let failure = &alerts[0];
    assert_eq!(failure.message, "High failure rate detected: 75.0%");
    assert_eq!(failure.details["failure_rate"], json!(0.75));
    assert_eq!(failure.details["success_rate"], json!(0.25));
    assert_eq!(failure.details["total_requests"], json!(20));
    assert_eq!(failure.details["error_count"], json!(15));
    let expiry = &alerts[1];
    assert_eq!(expiry.message, "Credential expires in 12h0m0s");
    assert_eq!(expiry.details["time_until_expiry"], json!("12h0m0s"));
    assert_eq!(expiry.details["hours_remaining"], json!(12.0));
    assert_eq!(expiry.timestamp, now);

    // Within the 1 h cooldown: suppressed.
    clock.advance(Duration::from_secs(59 * 60));
    assert!(check(&config, std::slice::from_ref(&a), &mut state, clock.now()).is_empty());

    // A different key (another credential failing) is not suppressed.
    let b = Cred::new("acct-b").with_traffic(10, 10);
    let both = [a, b];
    let alerts = check(&config, &both, &mut state, clock.now());
    assert_eq!(
        kinds(&alerts),
        [(WebhookEventType::Failure, some("acct-b"))]
    );

    // Once the window has passed, acct-a's alerts come back (acct-b's is still cooling).
    clock.advance(Duration::from_secs(60));
    let alerts = check(&config, &both, &mut state, clock.now());
    assert_eq!(
        kinds(&alerts),
        [
            (WebhookEventType::Failure, some("acct-a")),
            (WebhookEventType::ExpiryWarning, some("acct-a")),
        ]
    );
}

#[test]
fn failure_rate_needs_the_minimum_volume_and_is_strictly_above_the_threshold() {
    let now = ManualClock::default().now();
    let config = go_config();
    let cases = [
        (Cred::new("nine-of-nine").with_traffic(9, 9), false),
        (Cred::new("exactly-half").with_traffic(20, 10), false),
        (Cred::new("just-above").with_traffic(20, 11), true),
        (Cred::new("quiet").with_traffic(0, 0), false),
    ];
    for (cred, alert) in cases {
        let got = check(
            &config,
            std::slice::from_ref(&cred),
            &mut AlertState::new(),
            now,
        );
        assert_eq!(!got.is_empty(), alert, "{}", cred.id);
    }
    // Go's default threshold (0.25) with its minimum of 10 requests: 3 of 10 alerts.
    let default = MonitoringConfig::default();
    let cred = Cred::new("go-default").with_traffic(10, 3);
    assert_eq!(
        check(&default, &[cred], &mut AlertState::new(), now).len(),
        1
    );
}

#[test]
fn failure_rate_uses_the_recent_window_not_lifetime_counters() {
    let now = ManualClock::default().now();
    let config = go_config();
    // A bad past (900 of 1000 failed) but a healthy recent window (0 of 50): no alert.
    let mut recovered = Cred::new("recovered");
    recovered.usage = UsageSnapshot {
        request_count: 1000,
        error_count: 900,
        success_count: 100,
        recent_requests: 50,
        recent_failures: 0,
        recent_window: Duration::from_secs(300),
        ..UsageSnapshot::default()
    };
    assert!(check(&config, &[recovered], &mut AlertState::new(), now).is_empty());
    // A recorder that keeps no window (recent_window zero) is judged on lifetime counters, as Go.
    let mut lifetime = Cred::new("lifetime");
    lifetime.usage = UsageSnapshot {
        request_count: 20,
        error_count: 15,
        success_count: 5,
        ..UsageSnapshot::default()
    };
    let got = check(&config, &[lifetime], &mut AlertState::new(), now);
    assert_eq!(kinds(&got), [(WebhookEventType::Failure, some("lifetime"))]);
    assert_eq!(got[0].details["window_secs"], json!(0));
}

#[test]
fn refresh_failure_alerts_with_its_classification() {
    let clock = ManualClock::default();
    let now = clock.now();
    let policy = HealthPolicy::default();
    let mut cred = Cred::new("acct");
    cred.health
        .record_refresh_failure(FailureKind::Transient, None, &policy, now);
    let mut state = AlertState::new();
    // A healthy second credential keeps the pool-exhausted rule quiet.
    let creds = [cred, Cred::new("healthy")];
    let got = check(&MonitoringConfig::default(), &creds, &mut state, now);
    assert_eq!(kinds(&got), [(WebhookEventType::Failure, some("acct"))]);
    assert_eq!(got[0].message, "Token refresh failed");
    assert_eq!(got[0].details["error"], json!("transient"));
    assert_eq!(got[0].details["consecutive_failures"], json!(1));
    assert_eq!(state.last_raised("refresh_failure:acct"), Some(now));

    // A refresh success clears it: nothing after the cooldown.
    let [mut cred, _] = creds;
    cred.health.record_refresh_success(now);
    clock.advance(Duration::from_secs(2 * 3600));
    assert!(
        check(
            &MonitoringConfig::default(),
            &[cred],
            &mut state,
            clock.now()
        )
        .is_empty()
    );
}

#[test]
fn needs_reauthorization_alerts_with_the_time_the_access_token_stops_working() {
    let now = ManualClock::default().now();
    let policy = HealthPolicy::default();
    let valid_until = now + TimeDelta::minutes(40);
    let mut cred = Cred::new("dead-grant").expiring(valid_until);
    cred.health
        .record_refresh_failure(FailureKind::PermanentAuth, Some(valid_until), &policy, now);
    let got = check(
        &MonitoringConfig::default(),
        &[cred],
        &mut AlertState::new(),
        now,
    );
    // Re-authorization (not also a generic refresh failure), then the expiry warning.
    assert_eq!(
        kinds(&got),
        [
            (WebhookEventType::NeedsReauthorization, some("dead-grant")),
            (WebhookEventType::ExpiryWarning, some("dead-grant")),
        ]
    );
    let reauth = &got[0];
    assert_eq!(
        reauth.details["access_valid_until"],
        json!(valid_until.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    );
    assert!(reauth.message.contains("works until"), "{}", reauth.message);
}

#[test]
fn expired_tokens_alert_and_far_expiries_do_not() {
    let now = ManualClock::default().now();
    let creds = [
        Cred::new("expired").expiring(now - TimeDelta::minutes(5)),
        Cred::new("far").expiring(now + TimeDelta::hours(25)),
        Cred::new("soon").expiring(now + TimeDelta::minutes(30)),
        Cred::new("no-expiry"),
    ];
    let got = check(
        &MonitoringConfig::default(),
        &creds,
        &mut AlertState::new(),
        now,
    );
    assert_eq!(
        kinds(&got),
        [
            (WebhookEventType::Expired, some("expired")),
            (WebhookEventType::ExpiryWarning, some("soon")),
        ]
    );
    assert_eq!(got[0].message, "Credential access token expired 5m0s ago");
    assert_eq!(got[1].details["time_until_expiry"], json!("30m0s"));
    // Zero warning time means 24 h, as in Go.
    let zero = MonitoringConfig {
        expiry_warning_time: Duration::ZERO,
        ..MonitoringConfig::default()
    };
    let got = check(&zero, &creds[2..3], &mut AlertState::new(), now);
    assert_eq!(
        kinds(&got),
        [(WebhookEventType::ExpiryWarning, some("soon"))]
    );
}

#[test]
fn all_credentials_unavailable_raises_pool_exhausted() {
    let now = ManualClock::default().now();
    let policy = HealthPolicy::default();
    let mut a = Cred::new("a");
    let mut b = Cred::new("b");
    a.health
        .record_failure(FailureKind::Transient, &policy, now);
    b.health.record_failure(
        FailureKind::rate_limited(Some(Duration::from_secs(120))),
        &policy,
        now,
    );
    let mut config = MonitoringConfig::default();
    let got = check(&config, &[a, b], &mut AlertState::new(), now);
    assert_eq!(kinds(&got), [(WebhookEventType::PoolExhausted, None)]);
    assert_eq!(got[0].details["credentials"], json!(2));
    // The first back is a (a 1 s request backoff), not b (120 s cooldown).
    let next: DateTime<Utc> =
        serde_json::from_value(got[0].details["next_available_at"].clone()).expect("a time");
    assert!(next > now && next <= now + TimeDelta::seconds(1), "{next}");

    // One available credential: no alert. Disabled rule: no alert.
    let mut c = Cred::new("c");
    c.health
        .record_failure(FailureKind::Transient, &policy, now);
    let fine = Cred::new("d");
    assert!(check(&config, &[c, fine], &mut AlertState::new(), now).is_empty());
    config.alert_on_pool_exhausted = false;
    let mut e = Cred::new("e");
    e.health
        .record_failure(FailureKind::Transient, &policy, now);
    assert!(check(&config, &[e], &mut AlertState::new(), now).is_empty());
}

#[test]
fn disabled_rules_raise_nothing() {
    let now = ManualClock::default().now();
    let policy = HealthPolicy::default();
    let config = MonitoringConfig {
        alert_on_high_failure_rate: false,
        alert_on_refresh_failure: false,
        alert_on_expiry_soon: false,
        alert_on_needs_reauthorization: false,
        alert_on_misconfigured: false,
        alert_on_pool_exhausted: false,
        ..go_config()
    };
    let mut cred = Cred::new("everything-wrong")
        .with_traffic(20, 20)
        .expiring(now - TimeDelta::hours(1));
    cred.health
        .record_refresh_failure(FailureKind::Transient, None, &policy, now);
    cred.health
        .record_failure(FailureKind::PermanentAuth, &policy, now);
    assert!(check(&config, &[cred], &mut AlertState::new(), now).is_empty());
}

#[test]
fn order_is_by_rule_then_credential_id_whatever_the_input_order() {
    let now = ManualClock::default().now();
    let soon = now + TimeDelta::hours(1);
    let creds = [
        Cred::new("c").with_traffic(10, 10).expiring(soon),
        Cred::new("a").with_traffic(10, 10).expiring(soon),
        Cred::new("b").with_traffic(10, 10).expiring(soon),
    ];
    let got = check(&go_config(), &creds, &mut AlertState::new(), now);
    let f = WebhookEventType::Failure;
    let w = WebhookEventType::ExpiryWarning;
    assert_eq!(
        kinds(&got),
        [
            (f, some("a")),
            (f, some("b")),
            (f, some("c")),
            (w, some("a")),
            (w, some("b")),
            (w, some("c")),
        ]
    );
}

#[test]
fn alert_state_is_pruned_after_the_cooldown() {
    let clock = ManualClock::default();
    let config = go_config();
    let mut state = AlertState::new();
    let creds: Vec<Cred> = (0..50)
        .map(|i| Cred::new(&format!("c{i}")).with_traffic(10, 10))
        .collect();
    assert_eq!(check(&config, &creds, &mut state, clock.now()).len(), 50);
    assert_eq!(state.len(), 50);
    clock.advance(Duration::from_secs(3600));
    assert!(check(&config, &[], &mut state, clock.now()).is_empty());
    assert!(state.is_empty());
}

/// What one simulated day produced.
#[derive(Debug, Default, PartialEq, Eq)]
struct Day {
    refreshes: usize,
    refresh_webhooks: usize,
    expiry_alerts: usize,
    other_alerts: usize,
    delivered: usize,
}

/// 24 h of a healthy pool: three credentials with 1-hour tokens and a working refresher, each
/// refreshed when 5 minutes remain, the alert rules checked every minute (as a maintenance loop
/// would), every event routed through a `Monitor` into a `MemoryNotifier`. `legacy` feeds the rules
/// the Go view (`AlertInput`, which cannot say that a refresher renews the token).
async fn simulate_a_day(config: MonitoringConfig, legacy: bool) -> Day {
    use std::sync::Arc;

    use oauth_core::{Event, EventKind};
    use oauth_webhooks::{AlertFacts, AlertInput, MemoryNotifier, Monitor, Notifier};

    let clock = ManualClock::default();
    let policy = HealthPolicy::default();
    let memory = Arc::new(MemoryNotifier::new());
    let monitor = Monitor::with_notifier(Some(config), Arc::clone(&memory) as Arc<dyn Notifier>)
        .expect("valid");
    let mut creds: Vec<Cred> = ["a", "b", "c"]
        .iter()
        .map(|id| Cred::new(id).expiring(clock.now() + TimeDelta::hours(1)))
        .collect();
    let mut day = Day::default();
    for _minute in 0..24 * 60 {
        let now = clock.now();
        for c in &mut creds {
            let due = c
                .expires_at
                .is_some_and(|t| t - now <= TimeDelta::minutes(5));
            if due {
                c.health.record_refresh_success(now);
                c.expires_at = Some(now + TimeDelta::hours(1));
                day.refreshes += 1;
                let event = Event::new(
                    now,
                    EventKind::Refreshed {
                        credential: c.id.clone(),
                        expires_at: c.expires_at,
                        refresh_token_rotated: true,
                    },
                );
                if monitor.notify_event(&event) {
                    day.refresh_webhooks += 1;
                }
            }
        }
        let snapshots: Vec<HealthSnapshot> = creds
            .iter()
            .map(|c| c.health.snapshot(&policy, now))
            .collect();
        let alerts = if legacy {
            let inputs: Vec<AlertInput<'_>> = creds
                .iter()
                .zip(&snapshots)
                .map(|(c, h)| AlertInput {
                    id: &c.id,
                    health: h,
                    usage: &c.usage,
                    expires_at: c.expires_at,
                })
                .collect();
            monitor.check_alerts(&inputs, now)
        } else {
            let facts: Vec<AlertFacts<'_>> = creds
                .iter()
                .zip(&snapshots)
                .map(|(c, h)| {
                    AlertFacts::new(&c.id, h, &c.usage)
                        .with_access_token_expiry(c.expires_at)
                        .with_refreshable(true)
                })
                .collect();
            monitor.check_alerts(&facts, now)
        };
        for a in &alerts {
            match a.event_type {
                WebhookEventType::ExpiryWarning | WebhookEventType::Expired => {
                    day.expiry_alerts += 1;
                }
                _ => day.other_alerts += 1,
            }
        }
        clock.advance(Duration::from_secs(60));
    }
    let expected = day.refresh_webhooks + day.expiry_alerts + day.other_alerts;
    crate::support::settle_until(|| memory.events().len() >= expected).await;
    day.delivered = memory.events().len();
    day
}

/// Issue 14.6: with the default configuration a healthy pool of 1-hour tokens sends no expiry
/// warning and no routine refresh webhook in a day; Go's view of the same day warned every
/// credential every hour. Go's default filter (`go_default`) still gets one `refresh` per refresh.
#[tokio::test]
async fn a_healthy_pool_of_one_hour_tokens_sends_no_expiry_warning_in_a_day() {
    let default = simulate_a_day(MonitoringConfig::default(), false).await;
    let go = simulate_a_day(MonitoringConfig::go_default(), false).await;
    let before = simulate_a_day(MonitoringConfig::default(), true).await;
    eprintln!("default: {default:?}\ngo_default: {go:?}\nGo's view (before): {before:?}");

    // 3 credentials, a refresh every 55 minutes: 26 refreshes each (at 0:55, 1:50, ... 23:50).
    assert_eq!(default.refreshes, 3 * 26);
    assert_eq!(
        default,
        Day {
            refreshes: 78,
            refresh_webhooks: 0,
            expiry_alerts: 0,
            other_alerts: 0,
            delivered: 0,
        }
    );
    assert_eq!(go.expiry_alerts, 0);
    assert_eq!(go.refresh_webhooks, 78);
    assert_eq!(go.delivered, 78);
    // The old rule: one warning per credential per cooldown hour.
    assert_eq!(before.expiry_alerts, 3 * 24);
    assert_eq!(before.delivered, 3 * 24);
}

fn facts_alerts(
    creds: &[(Cred, bool, Option<DateTime<Utc>>)],
    now: DateTime<Utc>,
) -> Vec<WebhookEvent> {
    use oauth_webhooks::AlertFacts;
    let policy = HealthPolicy::default();
    let snapshots: Vec<HealthSnapshot> = creds
        .iter()
        .map(|(c, _, _)| c.health.snapshot(&policy, now))
        .collect();
    let facts: Vec<AlertFacts<'_>> = creds
        .iter()
        .zip(&snapshots)
        .map(|((c, refreshable, refresh_expiry), h)| {
            AlertFacts::new(&c.id, h, &c.usage)
                .with_access_token_expiry(c.expires_at)
                .with_refresh_token_expiry(*refresh_expiry)
                .with_refreshable(*refreshable)
        })
        .collect();
    let config = MonitoringConfig {
        alert_on_refresh_failure: false,
        alert_on_needs_reauthorization: false,
        alert_on_misconfigured: false,
        alert_on_pool_exhausted: false,
        ..MonitoringConfig::default()
    };
    check_alerts(&config, &facts, &mut AlertState::new(), now)
}

/// An expiry alert is about something that will really expire: a refresh token, an access token
/// with no refresher, a dead grant's or a misconfigured client's remaining validity, a token that
/// lapsed while its refreshes failed. Not an access token the pool will refresh, nor an idle
/// credential's lapsed token that its next use will refresh.
#[test]
fn expiry_alerts_are_about_what_really_expires() {
    let now = ManualClock::default().now();
    let policy = HealthPolicy::default();
    let soon = now + TimeDelta::minutes(40);
    let mut dead = Cred::new("dead-grant").expiring(soon);
    dead.health
        .record_refresh_failure(FailureKind::PermanentAuth, Some(soon), &policy, now);
    let mut misconfigured = Cred::new("misconfigured").expiring(soon);
    misconfigured.health.record_refresh_failure(
        FailureKind::Misconfigured,
        Some(soon),
        &policy,
        now,
    );
    let mut failing = Cred::new("lapsed-failing").expiring(now - TimeDelta::minutes(2));
    failing.health.record_refresh_failure(
        FailureKind::Transient,
        Some(now - TimeDelta::minutes(2)),
        &policy,
        now - TimeDelta::minutes(1),
    );
    let creds = [
        (Cred::new("renewed").expiring(soon), true, None),
        (
            Cred::new("lapsed-idle").expiring(now - TimeDelta::hours(3)),
            true,
            None,
        ),
        (Cred::new("no-refresher").expiring(soon), false, None),
        (
            Cred::new("refresh-token-ends").expiring(soon),
            true,
            Some(now + TimeDelta::hours(12)),
        ),
        (
            Cred::new("refresh-token-ended").expiring(soon),
            true,
            Some(now - TimeDelta::hours(1)),
        ),
        (dead, true, None),
        (misconfigured, true, None),
        (failing, true, None),
    ];
    let got = facts_alerts(&creds, now);
    let seen: Vec<(WebhookEventType, String, String, String)> = got
        .iter()
        .map(|e| {
            (
                e.event_type,
                e.credential_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                e.details["token"].as_str().unwrap_or_default().to_owned(),
                e.details
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let w = WebhookEventType::ExpiryWarning;
    let x = WebhookEventType::Expired;
    let row = |t, id: &str, token: &str, reason: &str| {
        (t, id.to_owned(), token.to_owned(), reason.to_owned())
    };
    assert_eq!(
        seen,
        [
            row(w, "dead-grant", "access_token", "needs_reauthorization"),
            row(x, "lapsed-failing", "access_token", "refresh_failing"),
            row(w, "misconfigured", "access_token", "misconfigured"),
            row(w, "no-refresher", "access_token", "not_refreshable"),
            row(x, "refresh-token-ended", "refresh_token", ""),
            row(w, "refresh-token-ends", "refresh_token", ""),
        ]
    );
    let ends = got
        .iter()
        .find(|e| e.details["token"] == "refresh_token" && e.event_type == w)
        .expect("the refresh token warning");
    assert_eq!(
        ends.message,
        "Credential refresh token expires in 12h0m0s; sign in again before then"
    );
}
