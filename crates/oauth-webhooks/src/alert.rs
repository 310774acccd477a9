//! Alert rules (the Go `CheckAlerts`): pure functions of snapshots, configuration and `now`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, Event, EventKind, HealthSnapshot, UsageSnapshot, after, delta};
use serde_json::{Map, json};

use crate::config::{MonitoringConfig, WebhookEventType};
use crate::event::{
    WebhookEvent, details, expiry_details, failure_rate_details, json_time, reauth_message,
};

/// What the rules look at for one credential.
#[derive(Debug, Clone, Copy)]
pub struct AlertInput<'a> {
    /// The credential.
    pub id: &'a CredentialId,
    /// Its health at `now`.
    pub health: &'a HealthSnapshot,
    /// Its usage counters.
    pub usage: &'a UsageSnapshot,
    /// Its access token's expiry, if known.
    pub expires_at: Option<DateTime<Utc>>,
}

/// When each alert key was last raised, for the per-key cooldown.
///
/// Entries older than the cooldown are pruned on every check, so the map holds at most the keys
/// raised within one cooldown window (Go's map was never pruned).
#[derive(Debug, Clone, Default)]
pub struct AlertState {
    last: HashMap<String, DateTime<Utc>>,
}

impl AlertState {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Nothing remembered?
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// When `key` (e.g. `failure:team`) was last raised, if within memory.
    pub fn last_raised(&self, key: &str) -> Option<DateTime<Utc>> {
        self.last.get(key).copied()
    }

    /// Records that an event already told the operator what an alert rule would repeat (a refresh
    /// failure, a credential needing re-authorization, the pool exhausted), so [`check_alerts`] does
    /// not send it again within the cooldown. Other events are ignored.
    pub fn note_event(&mut self, event: &Event) {
        let key = match &event.kind {
            EventKind::RefreshFailed { credential, .. } => format!("refresh_failure:{credential}"),
            EventKind::NeedsReauthorization { credential, .. } => {
                format!("needs_reauthorization:{credential}")
            }
            EventKind::PoolExhausted { .. } => "pool_exhausted".to_owned(),
            _ => return,
        };
        self.last.insert(key, event.at);
    }

    /// Forgets every key (e.g. after an operator acknowledged the alerts).
    pub fn clear(&mut self) {
        self.last.clear();
    }

    /// Raises `key` unless it was raised within `cooldown` before `now`; records it if raised.
    /// A clock that went backwards suppresses until it passes the recorded time plus `cooldown`.
    fn admit(&mut self, key: String, cooldown: Duration, now: DateTime<Utc>) -> bool {
        if let Some(last) = self.last.get(&key)
            && now < after(*last, cooldown)
        {
            return false;
        }
        self.last.insert(key, now);
        true
    }

    fn prune(&mut self, cooldown: Duration, now: DateTime<Utc>) {
        self.last.retain(|_, last| now < after(*last, cooldown));
    }
}

/// Evaluates every enabled alert rule at `now` and returns the alerts not suppressed by the
/// cooldown, in a deterministic order: by rule (high failure rate, refresh failure, needs
/// re-authorization, expiry warning / expired, pool exhausted), then by credential id.
///
/// Rules, each enabled by its `alert_on_*` flag:
/// - **failure** (`failure:<id>`): the failure rate over the usage snapshot's recent window is
///   strictly above `failure_rate_threshold`, with at least `min_requests_for_failure_rate`
///   requests in the window. A snapshot without a window (`recent_window` zero) is judged on its
///   lifetime counters, as in Go.
/// - **failure** (`refresh_failure:<id>`): the latest refresh failed (`refresh_fail_count > 0`), unless
///   the credential needs re-authorization, which has its own alert.
/// - **needs_reauthorization** (`needs_reauthorization:<id>`), with the time its access token stops
///   working.
/// - **expiry_warning** (`expiry_warning:<id>`): the token expires within the warning time (zero means
///   24 h); **expired** (`expired:<id>`): it has already expired (Go said nothing).
/// - **pool_exhausted** (`pool_exhausted`): no credential is available; details say when the first
///   one will be again.
///
/// The returned events are not filtered by `webhook_events`: the notifier does that, so the caller
/// can still see every alert.
pub fn check_alerts(
    config: &MonitoringConfig,
    inputs: &[AlertInput<'_>],
    state: &mut AlertState,
    now: DateTime<Utc>,
) -> Vec<WebhookEvent> {
    let cooldown = config.alert_cooldown;
    state.prune(cooldown, now);
    let mut sorted: Vec<&AlertInput<'_>> = inputs.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(b.id));

    let mut out = Vec::new();
    let mut raise = |key: String, event: WebhookEvent, state: &mut AlertState| {
        if state.admit(key, cooldown, now) {
            out.push(event);
        }
    };

    if config.alert_on_high_failure_rate {
        for input in &sorted {
            if let Some(event) = high_failure_rate(config, input, now) {
                raise(format!("failure:{}", input.id), event, state);
            }
        }
    }
    if config.alert_on_refresh_failure {
        for input in &sorted {
            let h = input.health;
            if h.refresh_fail_count > 0 && !h.needs_reauthorization {
                let reason = h.last_refresh_failure.map_or("unknown", |k| k.as_str());
                let event = WebhookEvent::new(
                    WebhookEventType::Failure,
                    Some(input.id.clone()),
                    now,
                    "Token refresh failed",
                    details([
                        ("error", json!(reason)),
                        ("consecutive_failures", json!(h.refresh_fail_count)),
                        ("refresh_backoff_until", json_time(h.refresh_backoff_until)),
                    ]),
                );
                raise(format!("refresh_failure:{}", input.id), event, state);
            }
        }
    }
    if config.alert_on_needs_reauthorization {
        for input in &sorted {
            let h = input.health;
            if h.needs_reauthorization {
                let event = WebhookEvent::new(
                    WebhookEventType::NeedsReauthorization,
                    Some(input.id.clone()),
                    now,
                    reauth_message(h.access_valid_until, now),
                    details([
                        ("access_valid_until", json_time(h.access_valid_until)),
                        ("since", json_time(h.needs_reauthorization_since)),
                    ]),
                );
                raise(format!("needs_reauthorization:{}", input.id), event, state);
            }
        }
    }
    if config.alert_on_expiry_soon {
        let warning = delta(config.effective_expiry_warning());
        for input in &sorted {
            let Some(expires_at) = input.expires_at else {
                continue;
            };
            if expires_at <= now {
                let event = WebhookEvent::new(
                    WebhookEventType::Expired,
                    Some(input.id.clone()),
                    now,
                    format!(
                        "Credential access token expired {} ago",
                        crate::event::go_duration_minutes(
                            (now - expires_at).to_std().unwrap_or_default()
                        )
                    ),
                    details([("expires_at", json_time(Some(expires_at)))]),
                );
                raise(format!("expired:{}", input.id), event, state);
            } else if expires_at - now <= warning {
                let left = (expires_at - now).to_std().unwrap_or_default();
                let event = WebhookEvent::new(
                    WebhookEventType::ExpiryWarning,
                    Some(input.id.clone()),
                    now,
                    format!(
                        "Credential expires in {}",
                        crate::event::go_duration_minutes(left)
                    ),
                    expiry_details(expires_at, left),
                );
                raise(format!("expiry_warning:{}", input.id), event, state);
            }
        }
    }
    if config.alert_on_pool_exhausted
        && !sorted.is_empty()
        && sorted.iter().all(|i| !i.health.is_available)
    {
        let next = sorted.iter().filter_map(|i| i.health.available_at).min();
        let mut d = Map::new();
        d.insert("credentials".into(), json!(sorted.len()));
        if let Some(next) = next {
            d.insert("next_available_at".into(), json_time(Some(next)));
        }
        let event = WebhookEvent::new(
            WebhookEventType::PoolExhausted,
            None,
            now,
            format!("No credential is available ({} configured)", sorted.len()),
            d,
        );
        raise("pool_exhausted".to_owned(), event, state);
    }
    out
}

fn high_failure_rate(
    config: &MonitoringConfig,
    input: &AlertInput<'_>,
    now: DateTime<Utc>,
) -> Option<WebhookEvent> {
    let u = input.usage;
    let (requests, failures) = if u.recent_window.is_zero() {
        (u.request_count, u.error_count)
    } else {
        (u.recent_requests, u.recent_failures)
    };
    if requests == 0 || requests < config.min_requests_for_failure_rate {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = failures as f64 / requests as f64;
    if rate <= config.failure_rate_threshold {
        return None;
    }
    let mut d = failure_rate_details(rate, requests, failures);
    d.insert("window_secs".into(), json!(u.recent_window.as_secs()));
    Some(WebhookEvent::new(
        WebhookEventType::Failure,
        Some(input.id.clone()),
        now,
        format!("High failure rate detected: {:.1}%", rate * 100.0),
        d,
    ))
}
