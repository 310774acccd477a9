//! An OAuth credential pool for AI providers.
//!
//! [`OAuthKeyManager`] spreads requests over several OAuth accounts of one provider, tracks each
//! one's health, fails over when one is rate-limited or broken, refreshes tokens before they expire
//! (exactly once, however many callers need it, never presenting a consumed refresh token again),
//! persists refreshed tokens before they are used, rotates credentials with a grace period, and
//! reports metrics and alerts.
//!
//! ```
//! use oauth_manager::{Credential, FailureKind, OAuthKeyManager, Usage};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = chrono::Utc::now();
//! let pool = OAuthKeyManager::builder("gemini")
//!     .credential(Credential::new("team", "access-1", now)?)
//!     .credential(Credential::new("personal", "access-2", now)?)
//!     .build()
//!     .await?;
//!
//! let served = pool
//!     .execute_with_failover(|cred| async move {
//!         // Call the provider with the credential's access token here.
//!         let answer = format!("answered by {}", cred.id);
//!         Ok::<_, std::io::Error>((answer, Some(Usage { total_tokens: 100, ..Usage::default() })))
//!     })
//!     .await?;
//! assert_eq!(served.credential, "team");
//! assert_eq!(pool.credential_metrics("team").map(|m| m.tokens_used), Some(100));
//! # let _ = FailureKind::Transient;
//! # Ok(()) }
//! ```
//!
//! The pieces come from one crate each, re-exported here so one dependency is enough:
//! [`refresh`] (the `Refresher` trait, `HttpRefresher` and provider presets, refresh strategies),
//! [`rotation`], [`metrics`] (`MetricsRecorder`, Prometheus), [`webhooks`] (alerts and signed
//! webhooks), [`store`] (`CredentialStore`, `FileStore`), and the data model from `oauth-core` at the
//! crate root.
//!
//! # Bring your own parts
//! - a refresher: implement [`refresh::Refresher`] (or wrap a closure in `FnRefresher`);
//! - a metrics backend: implement [`metrics::MetricsRecorder`];
//! - a store: implement [`store::CredentialStore`];
//! - an alert sink: implement [`webhooks::Notifier`];
//! - a credential source: implement [`CredentialProvider`].
//!
//! Classify your API client's errors with [`ClassifyFailure`] so failover knows a rate limit from a
//! bad request.

/// The README's quick start, compiled and run as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeQuickStart;

mod builder;
mod clock;
mod error;
mod execute;
mod maintenance;
mod manager;
mod provider;
mod refreshing;
mod reporting;
mod rotating;
mod selection;
mod settings;
mod sharing;
mod telemetry;

pub use builder::OAuthKeyManagerBuilder;
pub use clock::{CoarseClock, TokioClock};
pub use error::{
    AddCredentialError, AttemptError, BuildError, ExecuteError, NoCredentialAvailable,
    ProviderError, ReauthorizeError, RefreshNowError, RemoveError, RotationOpError, SetWeightError,
    SettingsError, UnknownCredential,
};
pub use execute::Served;
pub use maintenance::{
    MIN_MAINTENANCE_INTERVAL, MaintenanceConfig, MaintenanceHandle, MaintenanceReport,
};
pub use manager::{CredentialLease, OAuthKeyManager};
pub use provider::CredentialProvider;
pub use refreshing::StoreOutage;
pub use settings::{FailoverSettings, MAX_WAIT, Selection};

/// What [`OAuthKeyManager::subscribe`] returns: a bounded broadcast receiver of [`Event`]s.
pub type EventReceiver = tokio::sync::broadcast::Receiver<Event>;
/// The error of [`EventReceiver::recv`]: `Lagged(n)` when the receiver fell behind and lost `n`
/// events, `Closed` when the manager is gone.
#[doc(no_inline)]
pub use tokio::sync::broadcast::error::RecvError;

/// For implementing the async traits (`Refresher`, `CredentialStore`, `Notifier`,
/// `CredentialProvider`, `RotationHooks`) without a direct dependency.
#[doc(no_inline)]
pub use async_trait::async_trait;
/// The date-time crate the API speaks (`DateTime<Utc>` in credentials, events and reports).
#[doc(no_inline)]
pub use chrono;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
#[doc(no_inline)]
pub use oauth_core::ManualClock;
#[doc(no_inline)]
pub use oauth_core::{
    Availability, Classified, ClassifyFailure, Clock, Credential, CredentialError,
    CredentialHealthInfo, CredentialId, CredentialMetadata, CredentialState, Event, EventKind,
    ExposeSecret, FailureKind, HealthPolicy, HealthSnapshot, PolicyError, REFRESH_BUFFER,
    RefreshWindow, RefreshWindowError, RetryAfterError, SecretString, SystemClock, TokenQuirk,
    TokenSet, Usage, UsageSnapshot, parse_retry_after,
};

/// Token refresh: the `Refresher` trait, strategies, the refresh protocol, the HTTP refresher and
/// provider presets.
pub mod refresh {
    #[doc(no_inline)]
    pub use oauth_refresh::{
        BoxFuture, Committed, DEFAULT_FLIGHT_TIMEOUT, FnRefresher, MalformedReason, NoopRefresher,
        OAuthErrorCode, RefreshCoordinator, RefreshError, RefreshOutcome, RefreshStrategy,
        RefreshTarget, Refresher, StrategyError, TokenQuirk, TokenSet,
    };
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[doc(no_inline)]
    pub use oauth_refresh::{
        ClientAuth, ClientRequirement, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ERROR_BODY_BYTES,
        DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_REQUEST_TIMEOUT, Encoding, HttpBuildError,
        HttpRefresher, HttpRefresherBuilder, MAX_ACCESS_TOKEN_LIFETIME, MissingExpiry,
        TokenEndpoint, TokenResponse, parse_error_response, parse_token_response,
    };
    /// Token endpoints of the providers' official CLIs, with their public client ids.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub mod presets {
        #[doc(no_inline)]
        pub use oauth_refresh::presets::*;
    }
}

/// Credential rotation: policy, hooks, state.
pub mod rotation {
    #[doc(no_inline)]
    pub use oauth_rotation::{
        AutoDecommissionReport, HookError, NoopHooks, RotationError, RotationHooks, RotationPolicy,
        RotationState,
    };
}

/// Metrics: recorders, Prometheus, export shapes.
pub mod metrics {
    /// The `prometheus-client` crate the recorder registers in (for its `Registry`).
    #[cfg(feature = "prometheus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    #[doc(no_inline)]
    pub use oauth_metrics::prometheus_client;
    #[doc(no_inline)]
    pub use oauth_metrics::{
        Buckets, BucketsError, CredentialMetrics, CredentialRecorder, DEFAULT_MAX_CREDENTIALS,
        DURATION_BUCKETS, Fanout, GaugeRow, GaugeSource, HealthSummary, InMemoryRecorder,
        MetricsRecorder, NoopRecorder, PrometheusMetrics, RefreshResult, RequestOutcome,
        export_json,
    };
    #[cfg(feature = "prometheus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    #[doc(no_inline)]
    pub use oauth_metrics::{
        EncodeError, Format, Granularity, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE,
        PrometheusConfig, PrometheusRecorder, Scrape, encode_openmetrics, encode_scrape,
        negotiate_format,
    };
}

/// Alerts and webhooks.
pub mod webhooks {
    #[doc(no_inline)]
    pub use oauth_webhooks::{
        AlertFacts, ChannelNotifier, ConfigError, DEFAULT_TOLERANCE, DeliveryStatus,
        MemoryNotifier, Monitor, MonitoringConfig, NoopNotifier, Notifier, RetrySchedule,
        ShutdownReport, VerifyError, WebhookEvent, WebhookEventType, WebhookSecret, route_event,
        sign, verify,
    };
    #[cfg(feature = "webhooks")]
    #[cfg_attr(docsrs, doc(cfg(feature = "webhooks")))]
    #[doc(no_inline)]
    pub use oauth_webhooks::{DeliveryStats, WebhookNotifier};
}

/// Credential persistence.
pub mod store {
    #[doc(no_inline)]
    pub use oauth_store::{
        CredentialStore, FileRefreshLock, FileStore, MemoryRefreshLock, MemoryStore, RefreshGuard,
        RefreshLock, SharedState, SharedStateRecord, StoreChange, StoreError, Version, Versioned,
    };
}
