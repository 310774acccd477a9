//! Alerts and webhooks for an OAuth credential pool.
//!
//! - [`MonitoringConfig`]: the Go `MonitoringConfig` fields and defaults, plus signing secrets, a
//!   timeout, a [`RetrySchedule`], a queue capacity and the alert cooldown.
//! - [`WebhookEvent`]: the Go JSON shape (`type`, `credential_id`, `timestamp`, `message`,
//!   `details`) plus a stable `id`, built from oauth-core [`Event`](oauth_core::Event)s by
//!   [`WebhookEvent::from_event`]. Failures appear only as their classification.
//! - [`check_alerts`]: the alert rules (the Go `CheckAlerts`) as a pure function of health and usage
//!   snapshots and `now`, with a per-key cooldown kept in [`AlertState`].
//! - [`Notifier`]: where events go. [`NoopNotifier`], [`ChannelNotifier`] (a tokio channel for
//!   applications that consume events themselves), [`MemoryNotifier`] (tests), and, with the default
//!   `http` feature, [`WebhookNotifier`]: Standard Webhooks signatures, a bounded queue that never
//!   blocks the caller, retries with backoff and jitter honouring `Retry-After`, 410 disabling the
//!   endpoint, and a shutdown that flushes with a deadline.
//! - [`sign`] and [`verify`]: the Standard Webhooks signature, for your own receiving endpoint.
//!
//! ```
//! use std::time::Duration;
//! use chrono::{TimeZone, Utc};
//! use oauth_core::{CredentialHealth, CredentialId, HealthPolicy, UsageSnapshot};
//! use oauth_webhooks::{
//!     AlertInput, AlertState, MonitoringConfig, SignatureHeaders, WebhookEventType, WebhookSecret,
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
//! let input = AlertInput {
//!     id: &id,
//!     health: &health,
//!     usage: &usage,
//!     expires_at: Some(now + chrono::TimeDelta::hours(12)),
//! };
//! let mut state = AlertState::new();
//! let alerts = check_alerts(&config, &[input], &mut state, now);
//! let types: Vec<_> = alerts.iter().map(|a| a.event_type).collect();
//! assert_eq!(types, [WebhookEventType::Failure, WebhookEventType::ExpiryWarning]);
//! // The cooldown (1 h) suppresses a repeat.
//! assert!(check_alerts(&config, &[input], &mut state, now).is_empty());
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
//! what you drop. `shutdown` has a default (nothing to flush). `WebhookEvent` serializes to the
//! payload JSON; `webhook_events` filtering is up to the notifier.
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
mod notifier;
mod signing;

pub use alert::{AlertInput, AlertState, check_alerts};
pub use config::{ConfigError, MonitoringConfig, RetrySchedule, WebhookEventType, WebhookSecret};
pub use event::WebhookEvent;
#[cfg(feature = "http")]
pub use http::{DeliveryStats, WebhookNotifier};
pub use notifier::{ChannelNotifier, MemoryNotifier, NoopNotifier, Notifier, ShutdownReport};
pub use signing::{
    DEFAULT_TOLERANCE, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, HeaderLookup,
    SignatureHeaders, VerifyError, sign, sign_all, verify,
};
