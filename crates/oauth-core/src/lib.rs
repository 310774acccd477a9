//! The bottom of the OAuth credential pool: the data model and the pure logic every other crate of
//! the workspace shares.
//!
//! - [`Credential`], [`CredentialId`] and [`Usage`]: one OAuth account and what a request consumed.
//!   Tokens and the client secret are [`SecretString`]s: redacted `Debug`, no `Display`, serialized
//!   only through [`Credential::persisted`].
//! - [`CredentialHealth`]: the health state machine (backoffs, cooldowns, re-authorization), pure,
//!   taking `now`, tuned by a [`HealthPolicy`] whose defaults are the Go constants.
//! - [`FailureKind`] and [`ClassifyFailure`]: what an attempt's failure means, and the trait a
//!   caller's error type implements to say so. [`parse_retry_after`] reads `Retry-After`.
//! - [`TokenSet`]: what a refresh returns, applied by [`Credential::apply_tokens`] (RFC 6749
//!   section 6 in one place); [`RefreshWindow`]: when to refresh, clamped to the token's lifetime
//!   with a minimum interval between refreshes.
//! - [`Clock`]: injected time ([`SystemClock`]; `ManualClock` with the `test-util` feature).
//! - [`Event`]: every state change the pool reports; never secret material.
//! - [`UsageSnapshot`] and [`CredentialHealthInfo`]: the reports concern crates exchange.
//!
//! ```
//! use std::time::Duration;
//! use chrono::{TimeZone, Utc};
//! use oauth_core::{Credential, CredentialHealth, FailureKind, HealthPolicy};
//!
//! let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
//! let cred = Credential::new("team", "access-token", now)?
//!     .with_expires_at(now + chrono::TimeDelta::minutes(3));
//! assert!(cred.needs_refresh(now)); // within the 5-minute buffer
//! assert!(!format!("{cred:?}").contains("access-token"));
//!
//! let policy = HealthPolicy::default();
//! let mut health = CredentialHealth::default();
//! health.record_failure(FailureKind::Transient, &policy, now);
//! assert!(!health.is_available(now));
//! assert!(health.is_available(now + chrono::TimeDelta::seconds(1)));
//! # Ok::<(), oauth_core::CredentialError>(())
//! ```
//!
//! # Implementing [`ClassifyFailure`]
//! Implement it on your API client's error type; leave the default method for errors that say
//! nothing about their cause (they count as transient). See the trait's example.

mod clock;
mod credential;
mod error;
mod event;
mod failure;
mod health;
pub mod hint;
mod id;
pub mod secret;
mod tokens;
mod usage;
mod window;

#[cfg(any(test, feature = "test-util"))]
pub use clock::ManualClock;
pub use clock::{Clock, SystemClock, process_monotonic};
pub use credential::{Credential, PersistedCredential, REFRESH_BUFFER, Usage, after, delta};
pub use error::{CredentialError, PolicyError, RetryAfterError};
pub use event::{Event, EventKind};
pub use failure::{Classified, ClassifyFailure, FailureKind, parse_retry_after};
pub use health::{
    Availability, CredentialHealth, CredentialState, HealthChange, HealthPolicy, HealthSnapshot,
    Jitter,
};
pub use id::CredentialId;
pub use secret::{ExposeSecret, SecretString};
pub use tokens::{CredentialMetadata, TokenQuirk, TokenSet, TokensApplied};
pub use usage::{CredentialHealthInfo, RotationFacts, UsageSnapshot};
pub use window::{RefreshWindow, RefreshWindowError};
