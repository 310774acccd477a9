//! Alerts and webhooks for an OAuth credential pool.
//!
//! - [`Monitor`]: the pool's monitoring as one component. It holds the current
//!   [`MonitoringConfig`] (swapped at run time without a lock on the send path), routes
//!   oauth-core [`Event`](oauth_core::Event)s ([`route_event`]: which `alert_on_*` switch gates
//!   which event, the `webhook_events` filter, conversion), runs the alert rules, and delivers to
//!   the configuration's `webhook_url` (signed, queued, retried) or to a custom [`Notifier`]. Its
//!   [`status`](Monitor::status) says when nothing is delivered.
//! - [`MonitoringConfig`]: the Go `MonitoringConfig` fields and defaults, plus signing secrets, a
//!   timeout, a [`RetrySchedule`], a queue capacity and the alert cooldown. Routine `refresh`
//!   events are opt-in ([`MonitoringConfig::go_default`] has them, as Go did).
//! - [`WebhookEvent`]: the Go JSON shape (`type`, `credential_id`, `timestamp`, `message`,
//!   `details`) plus a stable `id`, built by [`WebhookEvent::from_event`]. Failures appear only as
//!   their classification.
//! - [`check_alerts`]: the alert rules (the Go `CheckAlerts`) as a pure function of
//!   [`AlertFacts`] and `now`, with a per-key cooldown kept in [`AlertState`]. Expiry alerts are
//!   about what will really expire, never an access token the pool is about to refresh.
//! - [`Notifier`]: where events go. [`NoopNotifier`], [`ChannelNotifier`] (a tokio channel for
//!   applications that consume events themselves), [`MemoryNotifier`] (tests), and, with the default
//!   `http` feature, [`WebhookNotifier`]: Standard Webhooks signatures, a bounded queue that never
//!   blocks the caller, retries with backoff and jitter honouring `Retry-After`, 410 disabling the
//!   endpoint, reconfiguration at run time, and a shutdown that flushes with a deadline.
//! - [`sign`] and [`verify`]: the Standard Webhooks signature, for your own receiving endpoint.
//!
//! The guide `docs/guides/webhooks.md` covers setup, verification on the receiver, retries and the
//! event types.
//!
//! ```
//! use std::time::Duration;
//! use chrono::{TimeZone, Utc};
//! use oauth_core::{CredentialHealth, CredentialId, HealthPolicy, UsageSnapshot};
//! use oauth_webhooks::{
//!     AlertFacts, AlertState, MonitoringConfig, SignatureHeaders, WebhookEventType, WebhookSecret,
//!     check_alerts, sign, verify,
//! };
//!
//! let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
//! let config = MonitoringConfig { failure_rate_threshold: 0.5, ..MonitoringConfig::default() };
//! let id = CredentialId::new("team")?;
//! let health = CredentialHealth::default().snapshot(&HealthPolicy::default(), now);
//! let usage = UsageSnapshot {
//!     recent_requests: 20,
//!     recent_failures: 15,
//!     recent_window: Duration::from_secs(300),
//!     ..UsageSnapshot::default()
//! };
//! // Its access token expires in 12 h and the pool has no refresher for it: worth a warning.
//! let facts = AlertFacts::new(&id, &health, &usage)
//!     .with_access_token_expiry(Some(now + chrono::TimeDelta::hours(12)))
//!     .with_refreshable(false);
//! let mut state = AlertState::new();
//! let alerts = check_alerts(&config, &[facts], &mut state, now);
//! let types: Vec<_> = alerts.iter().map(|a| a.event_type).collect();
//! assert_eq!(types, [WebhookEventType::Failure, WebhookEventType::ExpiryWarning]);
//! // The cooldown (1 h) suppresses a repeat.
//! assert!(check_alerts(&config, &[facts], &mut state, now).is_empty());
//! // With a refresher the pool renews the token: no expiry warning.
//! let renewed = facts.with_refreshable(true);
//! let alerts = check_alerts(&config, &[renewed], &mut AlertState::new(), now);
//! assert_eq!(alerts.len(), 1);
//!
//! // What a receiving endpoint does with a delivery.
//! let secret = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let body = serde_json::to_vec(&alerts[0])?;
//! let ts = now.timestamp().to_string();
//! let signature = sign(&secret, &alerts[0].id, now.timestamp(), &body);
//! let headers = SignatureHeaders { id: &alerts[0].id, timestamp: &ts, signature: &signature };
//! verify(&[secret], &headers, &body, now, Duration::from_secs(300))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Implementing [`Notifier`]
//! `notify` must return quickly and never fail: queue the event and deliver it elsewhere, counting
//! what you drop. Events reach a notifier already routed and filtered by the configuration. The
//! other methods have defaults: `shutdown` (nothing to flush), `reconfigure` (ignore the new
//! configuration; override it to follow URL or settings changes) and `status`
//! ([`DeliveryStatus::Custom`]).
//!
//! ```
//! use async_trait::async_trait;
//! use oauth_webhooks::{Notifier, WebhookEvent};
//!
//! #[derive(Debug)]
//! struct Log;
//!
//! #[async_trait]
//! impl Notifier for Log {
//!     async fn notify(&self, event: WebhookEvent) {
//!         tracing::info!(event_type = %event.event_type, message = %event.message, "alert");
//!     }
//! }
//! ```

mod alert;
mod config;
mod event;
#[cfg(feature = "http")]
mod http;
mod monitor;
mod notifier;
mod route;
mod signing;

pub use alert::{AlertFacts, AlertInput, AlertState, check_alerts};
pub use config::{ConfigError, MonitoringConfig, RetrySchedule, WebhookEventType, WebhookSecret};
pub use event::WebhookEvent;
#[cfg(feature = "http")]
pub use http::{DeliveryStats, WebhookNotifier};
pub use monitor::Monitor;
pub use notifier::{
    ChannelNotifier, DeliveryStatus, MemoryNotifier, NoopNotifier, Notifier, ShutdownReport,
};
pub use route::{gating_switch, route_event};
pub use signing::{
    DEFAULT_TOLERANCE, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, HeaderLookup,
    SignatureHeaders, VerifyError, sign, sign_all, verify,
};

/// The webhooks guide's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/guides/webhooks.md")]
struct WebhooksGuide;
