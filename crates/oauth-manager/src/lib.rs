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
mod telemetry;

pub use builder::OAuthKeyManagerBuilder;
pub use clock::{CoarseClock, TokioClock};
pub use error::{
    AttemptError, BuildError, CredentialOpError, ExecuteError, NoCredentialAvailable,
    ProviderError, ReauthorizeError, RefreshNowError, RemoveError, SettingsError,
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
pub use tokio::sync::broadcast::error::RecvError;

#[cfg(feature = "test-util")]
pub use oauth_core::ManualClock;
pub use oauth_core::{
    Availability, Classified, ClassifyFailure, Clock, Credential, CredentialHealthInfo,
    CredentialId, CredentialState, Event, EventKind, ExposeSecret, FailureKind, HealthPolicy,
    HealthSnapshot, REFRESH_BUFFER, SecretString, SystemClock, Usage, UsageSnapshot,
    parse_retry_after,
};

/// Token refresh: the `Refresher` trait, strategies, single flight, HTTP refresher and presets.
pub mod refresh {
    pub use oauth_refresh::*;
}

/// Credential rotation: policy, hooks, state.
pub mod rotation {
    pub use oauth_rotation::*;
}

/// Metrics: recorders, Prometheus, export shapes.
pub mod metrics {
    pub use oauth_metrics::*;
}

/// Alerts and webhooks.
pub mod webhooks {
    pub use oauth_webhooks::*;
}

/// Credential persistence.
pub mod store {
    pub use oauth_store::*;
}
