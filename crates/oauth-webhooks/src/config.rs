//! Monitoring configuration: what to alert on, where to send it, how to sign and retry.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

/// The kind of a [`WebhookEvent`](crate::WebhookEvent): its JSON `type`.
///
/// The first four are the Go package's types; the others report what it never did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WebhookEventType {
    /// A token refresh succeeded (routine: not in the default filter, see
    /// [`MonitoringConfig::go_default`]).
    Refresh,
    /// A refresh failed, or the failure rate crossed the threshold.
    Failure,
    /// A rotation started or is due.
    Rotation,
    /// Something that will really expire expires within the warning time: the refresh token
    /// (grant), or an access token the pool will not renew.
    ExpiryWarning,
    /// A refresh token, or an access token the pool did not renew, has expired.
    Expired,
    /// The grant is dead: a human must re-authorize the credential.
    NeedsReauthorization,
    /// The OAuth client configuration is wrong (`invalid_client`, a missing client id): fix the
    /// configuration; no sign-in is needed.
    Misconfigured,
    /// No credential can serve requests.
    PoolExhausted,
    /// A refreshed credential could not be persisted.
    PersistenceFailed,
    /// A credential was removed after its rotation grace period.
    Decommissioned,
    /// A decommission was refused and the credential stays.
    DecommissionFailed,
    /// A credential crossed the failure threshold.
    Unhealthy,
    /// A credential succeeded again after failures.
    Recovered,
    /// The pool's store became unreachable (`details.phase = "disconnected"`) or reachable again
    /// (`"reconnected"`): while it is down the pool serves the tokens it holds and, failing closed,
    /// refreshes nothing.
    StoreOutage,
}

impl WebhookEventType {
    /// Every type, in declaration order.
    pub const ALL: [Self; 14] = [
        Self::Refresh,
        Self::Failure,
        Self::Rotation,
        Self::ExpiryWarning,
        Self::Expired,
        Self::NeedsReauthorization,
        Self::Misconfigured,
        Self::PoolExhausted,
        Self::PersistenceFailed,
        Self::Decommissioned,
        Self::DecommissionFailed,
        Self::Unhealthy,
        Self::Recovered,
        Self::StoreOutage,
    ];

    /// The Go package's default filter: `refresh`, `failure`, `rotation`, `expiry_warning`.
    pub const GO_DEFAULTS: [Self; 4] = [
        Self::Refresh,
        Self::Failure,
        Self::Rotation,
        Self::ExpiryWarning,
    ];

    /// The default filter of [`MonitoringConfig::default`]: everything an operator must act on or
    /// should know about, and no routine traffic. Not included: `refresh` (one per successful
    /// refresh: opt in by adding it, or start from [`MonitoringConfig::go_default`]), `unhealthy`
    /// and `recovered` (health flapping).
    pub const DEFAULTS: [Self; 11] = [
        Self::Failure,
        Self::Rotation,
        Self::ExpiryWarning,
        Self::Expired,
        Self::NeedsReauthorization,
        Self::Misconfigured,
        Self::PoolExhausted,
        Self::PersistenceFailed,
        Self::Decommissioned,
        Self::DecommissionFailed,
        Self::StoreOutage,
    ];

    /// The serialized name (`"expiry_warning"`).
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Refresh => "refresh",
            Self::Failure => "failure",
            Self::Rotation => "rotation",
            Self::ExpiryWarning => "expiry_warning",
            Self::Expired => "expired",
            Self::NeedsReauthorization => "needs_reauthorization",
            Self::Misconfigured => "misconfigured",
            Self::PoolExhausted => "pool_exhausted",
            Self::PersistenceFailed => "persistence_failed",
            Self::Decommissioned => "decommissioned",
            Self::DecommissionFailed => "decommission_failed",
            Self::Unhealthy => "unhealthy",
            Self::Recovered => "recovered",
            Self::StoreOutage => "store_outage",
        }
    }
}

impl fmt::Display for WebhookEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Standard Webhooks signing secret (`whsec_` followed by base64 of 24 or more random bytes).
///
/// Held as a keyed HMAC-SHA256 state (the raw key bytes are zeroized once it is built); `Debug`
/// prints `WebhookSecret([REDACTED])`, and there is no `Display` or `Serialize`.
#[derive(Clone)]
pub struct WebhookSecret(Hmac<Sha256>);

impl WebhookSecret {
    /// The prefix of the textual form.
    pub const PREFIX: &'static str = "whsec_";
    /// The shortest key accepted, in bytes (the Standard Webhooks recommendation).
    pub const MIN_LEN: usize = 24;

    /// Parses `whsec_<base64>` (the prefix is optional, as in the reference libraries).
    ///
    /// # Errors
    /// [`ConfigError::InvalidSecret`] when the text is not base64 or the key is shorter than
    /// [`MIN_LEN`](Self::MIN_LEN). The error never echoes the text.
    pub fn new(text: &str) -> Result<Self, ConfigError> {
        let b64 = text.strip_prefix(Self::PREFIX).unwrap_or(text);
        let key = STANDARD
            .decode(b64)
            .map_err(|_| ConfigError::InvalidSecret {
                reason: "not base64 after the whsec_ prefix",
            })?;
        Self::from_bytes(key)
    }

    /// Wraps raw key bytes.
    ///
    /// # Errors
    /// [`ConfigError::InvalidSecret`] when the key is shorter than [`MIN_LEN`](Self::MIN_LEN).
    pub fn from_bytes(key: Vec<u8>) -> Result<Self, ConfigError> {
        let key = SecretSlice::from(key);
        if key.expose_secret().len() < Self::MIN_LEN {
            return Err(ConfigError::InvalidSecret {
                reason: "the key must be at least 24 bytes",
            });
        }
        <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose_secret())
            .map(Self)
            .map_err(|_| ConfigError::InvalidSecret {
                reason: "the key length is not accepted by HMAC-SHA256",
            })
    }

    /// A fresh MAC keyed with this secret.
    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        self.0.clone()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

/// When to retry a failed delivery: exponential backoff with jitter.
///
/// Attempt 1 is immediate; before attempt `n + 1` the delivery waits
/// `min(initial_delay * 2^(n-1), max_delay)`, shortened by up to `jitter` of itself, or longer when
/// the endpoint sent `Retry-After` (honoured up to `max_delay`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySchedule {
    /// Attempts per event, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_delay: Duration,
    /// Upper bound of any wait, including one asked for by `Retry-After`.
    pub max_delay: Duration,
    /// Fraction (`0.0..=1.0`) by which a wait is randomly shortened, so that many senders do not
    /// retry in lockstep.
    pub jitter: f64,
}

impl Default for RetrySchedule {
    /// 10 attempts over about half an hour: immediately, then 5 s, 10 s, 20 s ... capped at 10 min.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(10 * 60),
            jitter: 0.2,
        }
    }
}

impl RetrySchedule {
    /// The wait before retry number `retry` (1 for the first retry), before jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(31);
        self.initial_delay
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The wait before retry number `retry`: the jittered [`delay`](Self::delay), or the
    /// endpoint's `Retry-After` when that is longer (clamped to `max_delay`).
    pub fn wait_before(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        jitter: &mut oauth_core::Jitter,
    ) -> Duration {
        let backoff = jitter.apply(self.delay(retry), self.jitter);
        retry_after.map_or(backoff, |asked| backoff.max(asked.min(self.max_delay)))
    }

    /// Checks the schedule.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::Zero {
                field: "retry.max_attempts",
            });
        }
        if self.initial_delay.is_zero() {
            return Err(ConfigError::Zero {
                field: "retry.initial_delay",
            });
        }
        if self.max_delay < self.initial_delay {
            return Err(ConfigError::BoundBelowBase {
                field: "retry.max_delay",
                lower_field: "retry.initial_delay",
            });
        }
        check_fraction("retry.jitter", self.jitter)
    }
}

/// Monitoring and alerting: the Go `MonitoringConfig` fields and defaults, plus signing, timeout,
/// retry, queue and cooldown settings.
///
/// `Debug` shows neither the secrets nor the URL's path and query (webhook URLs of chat services
/// embed a token in the path).
#[derive(Clone)]
pub struct MonitoringConfig {
    /// Where to POST events (signed Standard Webhooks deliveries from [`Monitor`](crate::Monitor)'s
    /// default notifier). `None` (the default) delivers nothing: the alert rules still run and
    /// `check_alerts` still returns their alerts, and [`Monitor::status`](crate::Monitor::status)
    /// reports [`DeliveryStatus::NoWebhookUrl`](crate::DeliveryStatus::NoWebhookUrl). A custom
    /// [`Notifier`](crate::Notifier) receives events whatever this says.
    pub webhook_url: Option<String>,
    /// Which event types are sent (Go `WebhookEvents`). Default:
    /// [`WebhookEventType::DEFAULTS`] (no routine `refresh` events).
    pub webhook_events: BTreeSet<WebhookEventType>,
    /// Alert when the recent failure rate exceeds `failure_rate_threshold`.
    pub alert_on_high_failure_rate: bool,
    /// Failure rate (`0.0..=1.0`) above which a `failure` alert is raised (strictly above, as in Go).
    pub failure_rate_threshold: f64,
    /// Requests needed in the window before the failure rate counts.
    pub min_requests_for_failure_rate: u64,
    /// Alert when a credential's refresh has failed.
    pub alert_on_refresh_failure: bool,
    /// Alert when something that will really expire expires within `expiry_warning_time`, or has
    /// expired: the refresh token (grant), or an access token the pool will not renew (no
    /// refresher, a dead grant). Never for an access token the pool is about to refresh.
    pub alert_on_expiry_soon: bool,
    /// How early to warn of an expiry; zero means 24 h, as in Go.
    pub expiry_warning_time: Duration,
    /// Alert when a credential needs re-authorization (not in Go).
    pub alert_on_needs_reauthorization: bool,
    /// Alert when a credential's OAuth client is misconfigured (not in Go).
    pub alert_on_misconfigured: bool,
    /// Alert when no credential is available (not in Go).
    pub alert_on_pool_exhausted: bool,
    /// Signing secrets; each delivery carries one signature per secret (rotation). Empty sends
    /// unsigned deliveries.
    pub signing_secrets: Vec<WebhookSecret>,
    /// Per-delivery timeout (connect to end of response).
    pub timeout: Duration,
    /// Retries of a failed delivery.
    pub retry: RetrySchedule,
    /// Events waiting for delivery; when full, the oldest is dropped and counted.
    pub queue_capacity: usize,
    /// Deliveries in flight at once (each with its own retries).
    pub max_concurrent_deliveries: usize,
    /// An alert key (`failure:<id>`) is not raised again within this time (Go: 1 h).
    pub alert_cooldown: Duration,
}

impl Default for MonitoringConfig {
    /// The Go `DefaultMonitoringConfig()` (no URL, threshold 0.25 over at least 10 requests,
    /// refresh-failure and 24 h expiry alerts) with the filter [`WebhookEventType::DEFAULTS`]: the
    /// new alert types (`expired`, `needs_reauthorization`, `pool_exhausted`,
    /// `persistence_failed`, `decommissioned`, `decommission_failed`) on, routine `refresh` events
    /// off (Go sent one per refresh; [`go_default`](Self::go_default) keeps them). Plus: a 15 s
    /// timeout, [`RetrySchedule::default`], a queue of 1024 events, 4 concurrent deliveries and a
    /// 1 h cooldown.
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_events: WebhookEventType::DEFAULTS.into_iter().collect(),
            alert_on_high_failure_rate: true,
            failure_rate_threshold: 0.25,
            min_requests_for_failure_rate: 10,
            alert_on_refresh_failure: true,
            alert_on_expiry_soon: true,
            expiry_warning_time: Duration::from_secs(24 * 3600),
            alert_on_needs_reauthorization: true,
            alert_on_misconfigured: true,
            alert_on_pool_exhausted: true,
            signing_secrets: Vec::new(),
            timeout: Duration::from_secs(15),
            retry: RetrySchedule::default(),
            queue_capacity: 1024,
            max_concurrent_deliveries: 4,
            alert_cooldown: Duration::from_secs(3600),
        }
    }
}

impl MonitoringConfig {
    /// The Go `DefaultMonitoringConfig()` as Go users know it: [`default`](Self::default) with
    /// routine `refresh` events in the filter (Go's `WebhookEvents` listed `refresh`, so every
    /// successful refresh posts a webhook). Set `webhook_url` to deliver them.
    pub fn go_default() -> Self {
        let mut config = Self::default();
        config.webhook_events.extend(WebhookEventType::GO_DEFAULTS);
        config
    }

    /// Is `event_type` in the filter?
    pub fn wants(&self, event_type: WebhookEventType) -> bool {
        self.webhook_events.contains(&event_type)
    }

    /// The expiry warning time, with Go's rule that zero means 24 h.
    pub fn effective_expiry_warning(&self) -> Duration {
        if self.expiry_warning_time.is_zero() {
            Duration::from_secs(24 * 3600)
        } else {
            self.expiry_warning_time
        }
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending field (never echoing the URL or a secret).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.webhook_url {
            let lower = url.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("https://")
                .or_else(|| lower.strip_prefix("http://"))
                .ok_or(ConfigError::InvalidUrl {
                    reason: "the scheme must be http or https",
                })?;
            if rest.is_empty() || rest.starts_with('/') {
                return Err(ConfigError::InvalidUrl {
                    reason: "the URL has no host",
                });
            }
        }
        check_fraction("failure_rate_threshold", self.failure_rate_threshold)?;
        if self.timeout.is_zero() {
            return Err(ConfigError::Zero { field: "timeout" });
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::Zero {
                field: "queue_capacity",
            });
        }
        if self.max_concurrent_deliveries == 0 {
            return Err(ConfigError::Zero {
                field: "max_concurrent_deliveries",
            });
        }
        self.retry.validate()
    }
}

impl fmt::Debug for MonitoringConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitoringConfig")
            .field("webhook_url", &self.webhook_url.as_deref().map(redact_url))
            .field("webhook_events", &self.webhook_events)
            .field(
                "alert_on_high_failure_rate",
                &self.alert_on_high_failure_rate,
            )
            .field("failure_rate_threshold", &self.failure_rate_threshold)
            .field(
                "min_requests_for_failure_rate",
                &self.min_requests_for_failure_rate,
            )
            .field("alert_on_refresh_failure", &self.alert_on_refresh_failure)
            .field("alert_on_expiry_soon", &self.alert_on_expiry_soon)
            .field("expiry_warning_time", &self.expiry_warning_time)
            .field(
                "alert_on_needs_reauthorization",
                &self.alert_on_needs_reauthorization,
            )
            .field("alert_on_misconfigured", &self.alert_on_misconfigured)
            .field("alert_on_pool_exhausted", &self.alert_on_pool_exhausted)
            .field("signing_secrets", &self.signing_secrets)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_concurrent_deliveries", &self.max_concurrent_deliveries)
            .field("alert_cooldown", &self.alert_cooldown)
            .finish()
    }
}

/// `scheme://host[:port]/…`: the URL without path, query or credentials.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("?", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if rest.len() > authority.len() {
        format!("{scheme}://{host}/…")
    } else {
        format!("{scheme}://{host}")
    }
}

fn check_fraction(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::FractionOutOfRange { field, value })
    }
}

/// A monitoring configuration, secret or URL is unusable.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A webhook notifier needs `webhook_url`.
    #[error("webhook_url is not set: a webhook notifier needs an endpoint")]
    MissingUrl,
    /// The URL cannot be used (it is not echoed: it may embed a token).
    #[error("webhook_url is invalid: {reason}")]
    InvalidUrl {
        /// What is wrong.
        reason: &'static str,
    },
    /// A signing secret cannot be used (it is not echoed).
    #[error("invalid webhook signing secret: {reason}")]
    InvalidSecret {
        /// What is wrong.
        reason: &'static str,
    },
    /// A value that must be positive is zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The offending field.
        field: &'static str,
    },
    /// A bound is below the value it bounds.
    #[error("{field} must not be below {lower_field}")]
    BoundBelowBase {
        /// The upper bound's field.
        field: &'static str,
        /// The field it must not be below.
        lower_field: &'static str,
    },
    /// A fraction is outside `0.0..=1.0` or not a number.
    #[error("{field} must be within 0.0..=1.0 (got {value})")]
    FractionOutOfRange {
        /// The offending field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("cannot build the webhook HTTP client")]
    HttpClient(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ConfigError {
    /// Configuration errors never go away by retrying.
    pub const fn is_retryable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn defaults_are_the_go_defaults() {
        let c = MonitoringConfig::default();
        assert!(c.webhook_url.is_none());
        for t in WebhookEventType::GO_DEFAULTS {
            // Routine refreshes are opt-in; Go's other defaults are on.
            assert_eq!(c.wants(t), t != WebhookEventType::Refresh, "{t}");
        }
        assert!(!c.wants(WebhookEventType::Recovered));
        let go = MonitoringConfig::go_default();
        for t in WebhookEventType::GO_DEFAULTS
            .into_iter()
            .chain(WebhookEventType::DEFAULTS)
        {
            assert!(go.wants(t), "{t}");
        }
        assert_eq!(
            go.webhook_events.len(),
            WebhookEventType::DEFAULTS.len() + 1
        );
        assert!(c.alert_on_high_failure_rate && c.alert_on_refresh_failure);
        assert!(c.alert_on_expiry_soon);
        assert!((c.failure_rate_threshold - 0.25).abs() < f64::EPSILON);
        assert_eq!(c.min_requests_for_failure_rate, 10);
        assert_eq!(c.expiry_warning_time, Duration::from_secs(86_400));
        assert_eq!(c.timeout, Duration::from_secs(15));
        assert_eq!(c.alert_cooldown, Duration::from_secs(3600));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn zero_expiry_warning_means_24h() {
        let c = MonitoringConfig {
            expiry_warning_time: Duration::ZERO,
            ..MonitoringConfig::default()
        };
        assert_eq!(c.effective_expiry_warning(), Duration::from_secs(86_400));
    }

    #[test]
    fn validate_rejects_bad_values_without_echoing_the_url() {
        let bad_url = MonitoringConfig {
            webhook_url: Some("ftp://hooks.example/T0KEN-in-path".into()),
            ..MonitoringConfig::default()
        };
        let err = bad_url.validate().expect_err("ftp is rejected");
        assert!(!err.to_string().contains("T0KEN"));
        let cases = [
            MonitoringConfig {
                failure_rate_threshold: 1.5,
                ..MonitoringConfig::default()
            },
            MonitoringConfig {
                failure_rate_threshold: f64::NAN,
                ..MonitoringConfig::default()
            },
            MonitoringConfig {
                queue_capacity: 0,
                ..MonitoringConfig::default()
            },
            MonitoringConfig {
                timeout: Duration::ZERO,
                ..MonitoringConfig::default()
            },
            MonitoringConfig {
                webhook_url: Some("https://".into()),
                ..MonitoringConfig::default()
            },
            MonitoringConfig {
                retry: RetrySchedule {
                    max_delay: Duration::from_millis(1),
                    ..RetrySchedule::default()
                },
                ..MonitoringConfig::default()
            },
        ];
        for c in cases {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn secrets_and_url_path_are_redacted_in_debug() {
        let c = MonitoringConfig {
            webhook_url: Some("https://hooks.example.com/services/T0KEN?sig=abc".into()),
            signing_secrets: vec![WebhookSecret::new(SPEC_SECRET).expect("spec secret")],
            ..MonitoringConfig::default()
        };
        let dbg = format!("{c:?}");
        assert!(dbg.contains("https://hooks.example.com/…"), "{dbg}");
        assert!(!dbg.contains("T0KEN") && !dbg.contains("sig=abc"), "{dbg}");
        assert!(!dbg.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{dbg}");
        assert!(dbg.contains("WebhookSecret([REDACTED])"), "{dbg}");
    }

    #[test]
    fn secret_parsing() {
        assert!(WebhookSecret::new(SPEC_SECRET).is_ok());
        assert!(WebhookSecret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(WebhookSecret::new("whsec_not base64!").is_err());
        assert!(WebhookSecret::new("whsec_c2hvcnQ=").is_err()); // "short"
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let r = RetrySchedule {
            max_attempts: 5,
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(30),
            jitter: 0.0,
        };
        let got: Vec<u64> = (1..=5).map(|n| r.delay(n).as_secs()).collect();
        assert_eq!(got, [5, 10, 20, 30, 30]);
        assert_eq!(r.delay(200), Duration::from_secs(30));
    }

    #[test]
    fn retry_after_lengthens_the_wait_up_to_the_cap() {
        let r = RetrySchedule {
            max_attempts: 5,
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(60),
            jitter: 0.5,
        };
        let mut j = oauth_core::Jitter::new(7);
        for retry in 1..=4 {
            let w = r.wait_before(retry, None, &mut j);
            assert!(w <= r.delay(retry) && w >= r.delay(retry) / 2, "{w:?}");
        }
        let asked = Some(Duration::from_secs(30));
        assert_eq!(r.wait_before(1, asked, &mut j), Duration::from_secs(30));
        let huge = Some(Duration::from_secs(3600));
        assert_eq!(r.wait_before(1, huge, &mut j), Duration::from_secs(60));
        // A Retry-After shorter than the backoff does not shorten it.
        let no_jitter = RetrySchedule { jitter: 0.0, ..r };
        let short = Some(Duration::from_secs(1));
        assert_eq!(
            no_jitter.wait_before(3, short, &mut j),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn event_type_serde_names() {
        for t in WebhookEventType::ALL {
            let json = serde_json::to_string(&t).expect("serializes");
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
    }
}
