//! The webhook payload, in the Go JSON shape, built from oauth-core [`Event`]s.

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use oauth_core::{CredentialId, Event, EventKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::WebhookEventType;

/// One webhook delivery's payload: the Go `WebhookEvent` (`type`, `credential_id`, `timestamp`,
/// `message`, `details`) plus a stable `id`, which is also the `webhook-id` header (the same on
/// every retry, so receivers can de-duplicate).
///
/// Details hold ids, times, counts and classifications: never a token, a secret or a remote
/// response body.
///
/// ```json
/// {"id":"evt_…","type":"failure","credential_id":"team","timestamp":"2026-01-01T00:00:00Z",
///  "message":"Token refresh failed","details":{"error":"permanent_auth","consecutive_failures":1}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Unique, stable event id (`evt_` + 32 hex digits).
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: WebhookEventType,
    /// The credential concerned; absent for pool-wide events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<CredentialId>,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// A human-readable summary.
    pub message: String,
    /// Structured facts (Go `details`, omitted when empty).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

impl WebhookEvent {
    /// A new event with a fresh id.
    pub fn new(
        event_type: WebhookEventType,
        credential_id: Option<CredentialId>,
        timestamp: DateTime<Utc>,
        message: impl Into<String>,
        details: Map<String, Value>,
    ) -> Self {
        Self {
            id: next_event_id(),
            event_type,
            credential_id,
            timestamp,
            message: message.into(),
            details,
        }
    }

    /// The webhook event for a core event, or `None` for events that are not worth a webhook
    /// (backoffs, cooldowns, enable/disable, external updates).
    ///
    /// Failures appear only as their classification (`"error": "permanent_auth"`). Free-text
    /// reasons of store and hook errors are passed on only when they look like a classification
    /// (a short `snake_case` word); anything else becomes `"unclassified"`, so a store error that
    /// quotes a token cannot leak it.
    pub fn from_event(event: &Event) -> Option<Self> {
        use WebhookEventType as T;
        let credential = event.credential().cloned();
        let (event_type, message, details) = match &event.kind {
            EventKind::Refreshed {
                expires_at,
                refresh_token_rotated,
                ..
            } => (
                T::Refresh,
                "Token successfully refreshed".to_owned(),
                details([
                    ("success", json!(true)),
                    ("expires_at", json_time(*expires_at)),
                    ("refresh_token_rotated", json!(refresh_token_rotated)),
                ]),
            ),
            EventKind::RefreshFailed {
                reason,
                consecutive_failures,
                ..
            } => {
                let mut d = details([
                    ("error", json!(reason.as_str())),
                    ("consecutive_failures", json!(consecutive_failures)),
                ]);
                if let oauth_core::FailureKind::RateLimited {
                    retry_after: Some(after),
                } = reason
                {
                    d.insert("retry_after_secs".into(), json!(after.as_secs()));
                }
                (T::Failure, "Token refresh failed".to_owned(), d)
            }
            EventKind::HighFailureRate {
                failure_rate,
                requests,
                failures,
                ..
            } => (
                T::Failure,
                format!("High failure rate detected: {:.1}%", failure_rate * 100.0),
                failure_rate_details(*failure_rate, *requests, *failures),
            ),
            EventKind::BecameUnhealthy { .. } => (
                T::Unhealthy,
                "Credential became unhealthy".to_owned(),
                Map::new(),
            ),
            EventKind::Recovered { .. } => {
                (T::Recovered, "Credential recovered".to_owned(), Map::new())
            }
            EventKind::NeedsReauthorization {
                access_valid_until, ..
            } => (
                T::NeedsReauthorization,
                reauth_message(*access_valid_until, event.at),
                details([("access_valid_until", json_time(*access_valid_until))]),
            ),
            EventKind::Misconfigured {
                access_valid_until, ..
            } => (
                T::Misconfigured,
                misconfigured_message(*access_valid_until, event.at),
                details([("access_valid_until", json_time(*access_valid_until))]),
            ),
            EventKind::StoreUnavailable { reason, .. } => (
                T::PersistenceFailed,
                "Credential store unavailable; serving and refreshing in memory".to_owned(),
                details([
                    ("reason", json!(classification(reason))),
                    ("phase", json!("store_unavailable")),
                ]),
            ),
            EventKind::RotationDue { age, .. } => (
                T::Rotation,
                "Credential due for rotation".to_owned(),
                details([("phase", json!("due")), ("age_secs", json!(age.as_secs()))]),
            ),
            EventKind::RotationStarted {
                replacement,
                decommission_at,
                ..
            } => (
                T::Rotation,
                "Credential marked for rotation".to_owned(),
                details([
                    ("phase", json!("started")),
                    ("replacement_id", json!(replacement)),
                    ("decommission_at", json_time(Some(*decommission_at))),
                ]),
            ),
            EventKind::Decommissioned { .. } => (
                T::Decommissioned,
                "Credential decommissioned".to_owned(),
                Map::new(),
            ),
            EventKind::DecommissionFailed { reason, .. } => (
                T::DecommissionFailed,
                "Credential decommission refused".to_owned(),
                details([("reason", json!(classification(reason)))]),
            ),
            EventKind::ExpiryWarning { expires_at, .. } => {
                let left = (*expires_at - event.at).to_std().unwrap_or_default();
                (
                    T::ExpiryWarning,
                    format!("Credential expires in {}", go_duration_minutes(left)),
                    expiry_details(*expires_at, left),
                )
            }
            EventKind::Expired { expired_at, .. } => (
                T::Expired,
                format!(
                    "Credential access token expired at {}",
                    expired_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
                details([("expires_at", json_time(Some(*expired_at)))]),
            ),
            EventKind::PersistenceFailed {
                reason, attempts, ..
            } => (
                T::PersistenceFailed,
                "Refreshed credential could not be persisted".to_owned(),
                details([
                    ("reason", json!(classification(reason))),
                    ("attempts", json!(attempts)),
                ]),
            ),
            EventKind::PoolExhausted {
                provider,
                next_available_at,
            } => (
                T::PoolExhausted,
                "No credential is available".to_owned(),
                details([
                    ("provider", json!(provider)),
                    ("next_available_at", json_time(*next_available_at)),
                ]),
            ),
            EventKind::StoreDisconnected { provider } => (
                T::StoreOutage,
                "Credential store unreachable; serving the tokens held, refreshing nothing until it is back"
                    .to_owned(),
                details([
                    ("provider", json!(provider)),
                    ("phase", json!("disconnected")),
                ]),
            ),
            EventKind::StoreReconnected {
                provider,
                disconnected_at,
            } => (
                T::StoreOutage,
                "Credential store reachable again".to_owned(),
                details([
                    ("provider", json!(provider)),
                    ("phase", json!("reconnected")),
                    ("disconnected_at", json_time(Some(*disconnected_at))),
                    (
                        "outage_secs",
                        json!(
                            (event.at - *disconnected_at)
                                .to_std()
                                .unwrap_or_default()
                                .as_secs_f64()
                        ),
                    ),
                ]),
            ),
            _ => return None,
        };
        Some(Self::new(
            event_type, credential, event.at, message, details,
        ))
    }
}

/// `evt_` + a per-process random prefix + a counter: unique within the process and, with
/// overwhelming probability, across processes.
fn next_event_id() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("evt_{seed:016x}{n:016x}")
}

pub(crate) fn details<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

pub(crate) fn json_time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    })
}

pub(crate) fn failure_rate_details(rate: f64, requests: u64, failures: u64) -> Map<String, Value> {
    details([
        ("failure_rate", json!(rate)),
        ("success_rate", json!(1.0 - rate)),
        ("total_requests", json!(requests)),
        ("error_count", json!(failures)),
    ])
}

pub(crate) fn expiry_details(
    expires_at: DateTime<Utc>,
    left: std::time::Duration,
) -> Map<String, Value> {
    details([
        ("expires_at", json_time(Some(expires_at))),
        ("time_until_expiry", json!(go_duration_minutes(left))),
        ("hours_remaining", json!(left.as_secs_f64() / 3600.0)),
    ])
}

pub(crate) fn reauth_message(
    access_valid_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> String {
    match access_valid_until {
        Some(t) if t > now => format!(
            "Credential needs re-authorization; its access token works until {}",
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        _ => "Credential needs re-authorization; its access token no longer works".to_owned(),
    }
}

pub(crate) fn misconfigured_message(
    access_valid_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> String {
    let fix =
        "Credential's OAuth client is misconfigured; fix the configuration (no sign-in is needed)";
    match access_valid_until {
        Some(t) if t > now => format!(
            "{fix}; its access token works until {}",
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        _ => format!("{fix}; its access token no longer works"),
    }
}

/// A free-text reason, passed on only when it looks like a classification.
fn classification(reason: &str) -> &str {
    let ok = !reason.is_empty()
        && reason.len() <= 40
        && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if ok { reason } else { "unclassified" }
}

/// A duration rounded to the minute in Go's format (`12h0m0s`, `45m0s`, `0s`), as the Go
/// `time_until_expiry` detail.
pub(crate) fn go_duration_minutes(d: std::time::Duration) -> String {
    let minutes = (d.as_secs() + 30) / 60;
    let (h, m) = (minutes / 60, minutes % 60);
    match (h, m) {
        (0, 0) => "0s".to_owned(),
        (0, m) => format!("{m}m0s"),
        (h, m) => format!("{h}h{m}m0s"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;
    use oauth_core::FailureKind;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("valid date")
    }

    fn id() -> CredentialId {
        CredentialId::new("team").expect("valid id")
    }

    #[test]
    fn go_json_shape() {
        let ev = WebhookEvent::from_event(&Event::new(
            at(),
            EventKind::RefreshFailed {
                credential: id(),
                reason: FailureKind::PermanentAuth,
                consecutive_failures: 2,
            },
        ))
        .expect("refresh failures are reported");
        let v = serde_json::to_value(&ev).expect("serializes");
        assert_eq!(v["type"], "failure");
        assert_eq!(v["credential_id"], "team");
        assert_eq!(v["timestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(v["message"], "Token refresh failed");
        assert_eq!(v["details"]["error"], "permanent_auth");
        assert_eq!(v["details"]["consecutive_failures"], 2);
        assert!(v["id"].as_str().is_some_and(|s| s.starts_with("evt_")));
        let back: WebhookEvent = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, ev);
    }

    #[test]
    fn ids_are_unique() {
        let a = next_event_id();
        let b = next_event_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 32);
    }

    #[test]
    fn noise_events_are_not_webhooks() {
        let ev = Event::new(at(), EventKind::Disabled { credential: id() });
        assert!(WebhookEvent::from_event(&ev).is_none());
        let ev = Event::new(
            at(),
            EventKind::CooledDown {
                credential: id(),
                until: at(),
            },
        );
        assert!(WebhookEvent::from_event(&ev).is_none());
    }

    #[test]
    fn pool_exhausted_has_no_credential() {
        let ev = WebhookEvent::from_event(&Event::new(
            at(),
            EventKind::PoolExhausted {
                provider: "anthropic".into(),
                next_available_at: Some(at() + chrono::TimeDelta::seconds(30)),
            },
        ))
        .expect("reported");
        let v = serde_json::to_value(&ev).expect("serializes");
        assert!(v.get("credential_id").is_none());
        assert_eq!(v["type"], "pool_exhausted");
        assert_eq!(v["details"]["next_available_at"], "2026-01-01T00:00:30Z");
    }

    #[test]
    fn store_outages_are_one_pool_wide_type_with_a_phase_and_pass_the_default_filter() {
        let down_at = at();
        let up_at = at() + chrono::TimeDelta::milliseconds(2500);
        let down = Event::new(
            down_at,
            EventKind::StoreDisconnected {
                provider: "anthropic".into(),
            },
        );
        let up = Event::new(
            up_at,
            EventKind::StoreReconnected {
                provider: "anthropic".into(),
                disconnected_at: down_at,
            },
        );
        let config = crate::MonitoringConfig::default();
        let (Some(d), Some(u)) = (
            crate::route_event(&config, &down),
            crate::route_event(&config, &up),
        ) else {
            panic!("store outages are in the default filter");
        };
        for (hook, phase) in [(&d, "disconnected"), (&u, "reconnected")] {
            let v = serde_json::to_value(hook).expect("serializes");
            assert_eq!(v["type"], "store_outage");
            assert!(v.get("credential_id").is_none());
            assert_eq!(v["details"]["provider"], "anthropic");
            assert_eq!(v["details"]["phase"], phase);
        }
        let v = serde_json::to_value(&u).expect("serializes");
        assert_eq!(v["details"]["disconnected_at"], "2026-01-01T00:00:00Z");
        assert_eq!(v["details"]["outage_secs"], 2.5);
        assert_eq!(
            crate::gating_switch(&down.kind),
            None,
            "only the filter decides"
        );
        let mut without = config;
        without
            .webhook_events
            .remove(&crate::WebhookEventType::StoreOutage);
        assert!(crate::route_event(&without, &down).is_none());
    }

    #[test]
    fn free_text_reasons_pass_only_as_classifications() {
        assert_eq!(classification("conflict"), "conflict");
        assert_eq!(classification("permission_denied"), "permission_denied");
        assert_eq!(classification("write failed: rt-SECRET"), "unclassified");
        assert_eq!(classification("sk-ant-abc123"), "unclassified");
        assert_eq!(classification(""), "unclassified");
    }

    #[test]
    fn go_duration_format() {
        assert_eq!(
            go_duration_minutes(Duration::from_secs(12 * 3600)),
            "12h0m0s"
        );
        assert_eq!(
            go_duration_minutes(Duration::from_secs(45 * 60 + 29)),
            "45m0s"
        );
        assert_eq!(
            go_duration_minutes(Duration::from_secs(90 * 60 + 30)),
            "1h31m0s"
        );
        assert_eq!(go_duration_minutes(Duration::from_secs(10)), "0s");
    }
}
