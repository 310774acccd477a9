//! HTTP client adapters over an OAuth credential pool: a [`reqwest_middleware::Middleware`]
//! ([`OAuthMiddleware`]) and a [`tower::Layer`](::tower::Layer) ([`OAuthLayer`] / [`OAuthService`]).
//!
//! Each request goes through
//! [`OAuthKeyManager::execute_with_failover`](oauth_manager::OAuthKeyManager::execute_with_failover):
//! the pool picks an
//! available credential (refreshing its token first when due), the adapter sets
//! `Authorization: Bearer` and the provider's per-account headers from the credential's metadata
//! ([`ProviderRequests`]: Codex's `chatgpt-account-id`, Qwen's `resource_url` as the API base),
//! sends the request, classifies the answer with the provider's classifier from
//! `oauth-providers` (rate limits cool the account down for exactly the provider's wait, a 401
//! refreshes and retries once, an overload fails over without a penalty, ...), records the
//! usage the answer reports, and fails over with a copy of the request when the body can be
//! copied. A streamed answer (`text/event-stream`) is classified on its status and headers and
//! never retried once returned; its usage is read as it passes ([`StreamUsage`]) and added to the
//! pool's token counts when it ends.
//!
//! Why a crate of its own: the adapters need the facade (`oauth-manager`) and the classifiers
//! (`oauth-providers`, which depends on `oauth-core` only); putting them above the facade keeps
//! reqwest-middleware and tower out of the manager's dependencies.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use oauth_http::{OAuthMiddleware, ServedBy};
//! use oauth_manager::{Credential, OAuthKeyManager};
//! use oauth_providers::Provider;
//! use oauth_testkit::provider::{Dialect, FakeProvider, ProviderFault, dialect};
//! use oauth_testkit::token_server::TokenServer;
//!
//! // A fake Anthropic on 127.0.0.1 and two accounts of its token server.
//! let tokens = Arc::new(TokenServer::start().await?);
//! let anthropic = FakeProvider::start(Arc::clone(&tokens)).await?;
//! anthropic.set_dialect(Dialect::Anthropic);
//! let (a, b) = (tokens.issue_grant("a"), tokens.issue_grant("b"));
//! let now = chrono::Utc::now();
//! let pool = OAuthKeyManager::builder("anthropic")
//!     .credential(Credential::new("a", a.access_token.clone(), now)?)
//!     .credential(Credential::new("b", b.access_token.clone(), now)?)
//!     .build()
//!     .await?;
//!
//! // `a` is overloaded once: the call fails over to `b`, and `a` is not penalized.
//! anthropic.inject_times(a.family, ProviderFault::Answer(dialect::anthropic_overloaded()), 1);
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(OAuthMiddleware::new(pool.clone(), Provider::Anthropic))
//!     .build();
//! let answer = client
//!     .post(format!("{}/v1/messages", anthropic.base_url()))
//!     .json(&serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
//!         "messages": [{"role": "user", "content": "Hello"}]}))
//!     .send()
//!     .await?;
//! assert_eq!(answer.status(), 200);
//! let served = answer.extensions().get::<ServedBy>().cloned().expect("always set");
//! assert_eq!((served.credential.as_str(), served.attempts), ("b", 2));
//! assert!(pool.credential_health("a").expect("known").is_available);
//! # Ok(()) }
//! ```
//!
//! # Implementing the traits
//! - A provider `oauth-providers` does not know: implement
//!   [`oauth_providers::ClassifyResponse`] and pass it with [`PoolClient::with_classifier`]; say
//!   which per-account headers to send with [`PoolClient::with_requests`].
//! - A tower request body: implement [`ReplayBody`] (`try_clone` returns a copy for another
//!   attempt, or `None` to send it once); in-memory bodies already do, and [`OnceBody`] marks a
//!   body to be sent once.

mod credential;
mod error;
mod middleware;
mod pool;
pub mod tower;

pub use credential::{ANTHROPIC_OAUTH_BETA, CODEX_ACCOUNT_HEADER, ProviderRequests, rebase};
pub use error::OAuthHttpError;
pub use middleware::OAuthMiddleware;
pub use pool::{OnStreamEnd, PoolClient, ServedBy, StreamEnd, StreamUsage, WatchedBody};
pub use tower::{OAuthLayer, OAuthService, OnceBody, ReplayBody, ReqwestService, ResponseBody};
