//! OAuth 2.0 token refresh for an OAuth credential pool.
//!
//! - [`Refresher`]: the async, dyn-compatible trait that exchanges a credential's refresh token
//!   and returns a [`TokenSet`] (applied with `Credential::apply_tokens`), with
//!   [`NoopRefresher`] (refresh not configured) and [`FnRefresher`] (a closure).
//! - [`HttpRefresher`] (feature `http`, on by default): the RFC 6749 section 6 grant over reqwest
//!   with rustls, with classified errors ([`RefreshError::kind`]; configuration mistakes apart
//!   from dead grants), timeouts, a lenient success parser that never discards a usable token
//!   (oddities become [`TokenQuirk`]s), size caps (1 MiB for successes, 16 KiB for errors), and
//!   [`presets`] for Gemini CLI, Claude Code, Codex and Qwen Code accounts that need no other
//!   configuration.
//! - [`RefreshStrategy`]: *when* to refresh (the Go formulas, with continuous requests per hour),
//!   through an `oauth_core::RefreshWindow` that clamps the buffer to the token's lifetime.
//! - [`RefreshCoordinator`]: single-flight refresh, so a credential has at most one refresh in
//!   flight, every concurrent caller gets its result, and an exchanged refresh token is never sent
//!   again.
//!
//! ```
//! use std::sync::Arc;
//! use chrono::{TimeDelta, Utc};
//! use oauth_core::{Credential, ExposeSecret, FailureKind, TokenSet};
//! use oauth_refresh::{FnRefresher, RefreshError, Refresher};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Bring your own refresh logic as a closure (the Go `RefreshFunc`): it returns the tokens the
//! // provider issued, and does no bookkeeping.
//! let refresher: Arc<dyn Refresher> = Arc::new(FnRefresher::new(|cred: Credential| async move {
//!     if cred.refresh_token.is_none() {
//!         return Err(RefreshError::other(FailureKind::PermanentAuth, "no refresh token"));
//!     }
//!     Ok(TokenSet::new("fresh-access-token").with_expires_at(Utc::now() + TimeDelta::hours(1)))
//! }));
//!
//! let now = Utc::now();
//! let mut cred = Credential::new("team", "stale-access-token", now)?
//!     .with_refresh_token("refresh-token")
//!     .with_expires_at(now + TimeDelta::minutes(2));
//! assert!(cred.needs_refresh(now));
//! let tokens = refresher.refresh(&cred).await?;
//! cred.apply_tokens(tokens, now); // RFC 6749 section 6: the old refresh token is kept
//! assert_eq!(cred.access_token.expose_secret(), "fresh-access-token");
//! assert_eq!(cred.refresh_count, 1);
//! assert!(!cred.needs_refresh(now));
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
//!     Ok(tokens) => println!("refreshed {}, expires {:?}", cred.id, tokens.expires_at),
//!     Err(e) if e.kind().is_permanent() => println!("{} needs re-authorization: {e}", cred.id),
//!     Err(e) => println!("retry later: {e}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Implementing [`Refresher`]
//! Implement it with `#[async_trait]` for your provider when neither [`HttpRefresher`] nor a
//! closure fits. Return a [`TokenSet`]: the new access token, its expiry as
//! an absolute time, the rotated refresh token only if the provider sent one, and what else it
//! said. Do no bookkeeping: the caller applies the set with
//! [`Credential::apply_tokens`](oauth_core::Credential::apply_tokens), which keeps the old refresh
//! token when none was rotated and bumps `last_refresh` and `refresh_count` (see the example on
//! [`Refresher`]). Report failures as [`RefreshError`]s: [`RefreshError::other`] with the
//! [`FailureKind`](oauth_core::FailureKind) that fits (`PermanentAuth` for a dead grant,
//! `Misconfigured` for a client that is set up wrong, `Transient` for anything worth retrying),
//! or [`RefreshError::custom`] to carry your own error as the source; never put a token or secret
//! in a message. You need no locking: the [`RefreshCoordinator`] never runs two
//! refreshes of one credential at once.

mod coordinator;
mod error;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
pub mod presets;
mod refresher;
mod strategy;

/// What a [`Refresher`] returns, re-exported from `oauth-core` so an implementer can name it.
pub use oauth_core::{TokenQuirk, TokenSet};

pub use coordinator::{
    BoxFuture, Committed, DEFAULT_FLIGHT_TIMEOUT, RefreshCoordinator, RefreshOutcome, RefreshTarget,
};
pub use error::{MalformedReason, OAuthErrorCode, RefreshError, StrategyError};
#[cfg(feature = "http")]
pub use http::{
    ClientAuth, ClientRequirement, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ERROR_BODY_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_REQUEST_TIMEOUT, Encoding, HttpBuildError, HttpRefresher,
    HttpRefresherBuilder, MAX_ACCESS_TOKEN_LIFETIME, MissingExpiry, TokenEndpoint, TokenResponse,
    parse_error_response, parse_token_response,
};
pub use refresher::{FnRefresher, NoopRefresher, Refresher};
pub use strategy::RefreshStrategy;
