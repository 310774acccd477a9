//! OAuth 2.0 token refresh for an OAuth credential pool.
//!
//! - [`Refresher`]: the async, dyn-compatible trait that exchanges a credential's refresh token,
//!   with [`NoopRefresher`] (refresh not configured) and [`FnRefresher`] (a closure).
//! - [`HttpRefresher`] (feature `http`, on by default): the RFC 6749 section 6 grant over reqwest
//!   with rustls, with classified errors ([`RefreshError::kind`]), timeouts and a response size
//!   cap, and [`presets`] for Google Gemini, Anthropic Claude, OpenAI Codex and Qwen.
//! - [`RefreshStrategy`]: *when* to refresh (the Go formulas, with continuous requests per hour).
//! - [`RefreshCoordinator`]: single-flight refresh, so a credential has at most one refresh in
//!   flight, every concurrent caller gets its result, and an exchanged refresh token is never sent
//!   again.
//!
//! ```
//! use std::sync::Arc;
//! use chrono::{TimeDelta, Utc};
//! use oauth_core::{Credential, ExposeSecret, FailureKind};
//! use oauth_refresh::{FnRefresher, RefreshError, Refresher};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Bring your own refresh logic as a closure (the Go `RefreshFunc`).
//! let refresher: Arc<dyn Refresher> = Arc::new(FnRefresher::new(|mut cred: Credential| async move {
//!     if cred.refresh_token.is_none() {
//!         return Err(RefreshError::other(FailureKind::PermanentAuth, "no refresh token"));
//!     }
//!     let now = Utc::now();
//!     cred.access_token = "fresh-access-token".to_string().into();
//!     cred.expires_at = Some(now + TimeDelta::hours(1));
//!     cred.last_refresh = Some(now);
//!     cred.refresh_count += 1;
//!     Ok(cred)
//! }));
//!
//! let now = Utc::now();
//! let cred = Credential::new("team", "stale-access-token", now)?
//!     .with_refresh_token("refresh-token")
//!     .with_expires_at(now + TimeDelta::minutes(2));
//! assert!(cred.needs_refresh(now));
//! let fresh = refresher.refresh(&cred).await?;
//! assert_eq!(fresh.access_token.expose_secret(), "fresh-access-token");
//! assert!(!fresh.needs_refresh(now));
//! # Ok(()) }
//! ```
//!
//! With a provider preset (needs the network, so not run here):
//!
//! ```no_run
//! # #[cfg(feature = "http")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use chrono::Utc;
//! use oauth_core::Credential;
//! use oauth_refresh::{HttpRefresher, Refresher, presets};
//!
//! let refresher = HttpRefresher::builder(presets::openai_codex())
//!     .request_timeout(std::time::Duration::from_secs(20))
//!     .build()?;
//! let cred = Credential::new("codex-1", "access-token", Utc::now())?
//!     .with_refresh_token("refresh-token");
//! match refresher.refresh(&cred).await {
//!     Ok(fresh) => println!("refreshed {}, expires {:?}", fresh.id, fresh.expires_at),
//!     Err(e) if e.kind().is_permanent() => println!("{} needs re-authorization: {e}", cred.id),
//!     Err(e) => println!("retry later: {e}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Implementing [`Refresher`]
//! Implement it with `#[async_trait]` for your provider when neither [`HttpRefresher`] nor a
//! closure fits. Return the refreshed credential with the same id, the new access token and
//! expiry, the rotated refresh token if the provider sent one (the old one otherwise),
//! `last_refresh = now` and `refresh_count + 1`. Report failures as [`RefreshError`]s:
//! [`RefreshError::other`] with the [`FailureKind`](oauth_core::FailureKind) that fits
//! (`PermanentAuth` for a dead grant, `Transient` for anything worth retrying), and never put a
//! token or secret in the message. You need no locking: the [`RefreshCoordinator`] never runs two
//! refreshes of one credential at once.

mod coordinator;
mod error;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
pub mod presets;
mod refresher;
mod strategy;

pub use coordinator::{BoxFuture, RefreshCoordinator, RefreshOutcome};
pub use error::{MalformedReason, OAuthErrorCode, RefreshError, StrategyError};
#[cfg(feature = "http")]
pub use http::{
    ClientAuth, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_REQUEST_TIMEOUT,
    Encoding, HttpBuildError, HttpRefresher, HttpRefresherBuilder, MissingExpiry, TokenEndpoint,
    TokenResponse, parse_error_response, parse_token_response,
};
pub use refresher::{FnRefresher, NoopRefresher, Refresher};
pub use strategy::RefreshStrategy;
