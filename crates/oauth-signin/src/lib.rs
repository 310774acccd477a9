//! Sign-in flows that turn a person at a browser into an [`oauth_core::Credential`] ready for a
//! pool (or an account directory):
//!
//! - [`AuthorizationCodeSignin`]: the authorization code grant with PKCE (RFC 7636, `S256`) on a
//!   loopback redirect (RFC 8252): a one-shot listener on `127.0.0.1` (an ephemeral port, or the
//!   fixed one a provider registered), a random `state` compared in constant time, a timeout, and
//!   no listener left behind when the flow ends, times out or is dropped. The caller shows
//!   [`authorization_url`](AuthorizationCodeSignin::authorization_url) (opening a browser is its
//!   business) and awaits [`finish`](AuthorizationCodeSignin::finish).
//! - [`DeviceSignin`]: the device authorization grant (RFC 8628), with PKCE where the provider
//!   wants it: the user code and verification URI for the caller to show, then polling that
//!   honours `interval`, `slow_down` (+5 s each time) and `authorization_pending`, and reports
//!   `expired_token` and `access_denied` as typed errors. Waits go through tokio's timer, so tests
//!   run on tokio's paused clock.
//! - [`PendingSignin`] and [`SigninPrompt`]: either flow behind one start / prompt / finish.
//! - [`presets`]: Gemini CLI, Claude Code, Codex and Qwen Code, each cited from the CLI's source,
//!   and [`Provider`] to pick one by name.
//!
//! The credential carries the tokens, their expiry, the scopes, the client id (and secret), and
//! metadata: the id token, the account id and e-mail from its claims, Qwen's `resource_url`.
//!
//! ```
//! use oauth_signin::{AuthorizationCodeConfig, AuthorizationCodeSignin, SigninOptions};
//! use oauth_testkit::authorization_server::{AuthorizationServer, ClientRegistration};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = AuthorizationServer::start().await?; // a strict fake provider on 127.0.0.1
//! let config = AuthorizationCodeConfig::new(server.authorize_url(), server.token_url(), "my-cli")
//!     .with_scopes(["profile"]);
//! let signin =
//!     AuthorizationCodeSignin::start(config, reqwest::Client::new(), SigninOptions::default()).await?;
//! server.register_client(ClientRegistration::new("my-cli").with_redirect_uri(signin.redirect_uri()));
//!
//! // Show this URL to the user; here a "browser" follows it (the fake server approves at once).
//! let browser = reqwest::get(signin.authorization_url().to_owned());
//! let (credential, page) = tokio::join!(signin.finish("alice"), browser);
//! assert!(page?.status().is_success());
//! let credential = credential?;
//! assert_eq!(credential.id.as_str(), "alice");
//! assert!(credential.refresh_token.is_some());
//! let access_token = server.last_issued_access_token().ok_or("no token issued")?;
//! assert!(!format!("{credential:?}").contains(&access_token)); // secrets are redacted
//! # Ok(()) }
//! ```
//!
//! # Why the exchanges are written here and not with the `oauth2` crate
//! `oauth2` 5.0 was considered first. With `default-features = false` it pulls no reqwest (its
//! `reqwest` feature is reqwest 0.12, a second HTTP/TLS stack), and its `AsyncHttpClient` trait
//! could run over this workspace's reqwest 0.13. It was not used, because:
//! - it only sends form bodies, and Anthropic's token endpoint wants JSON with `state` in it;
//! - its `StandardTokenResponse` requires `token_type`, which Codex's token answer is not known to
//!   send, and reading `resource_url`, `account` and the id token needs a custom response type
//!   anyway;
//! - its device poller retries every transport error (doubling up to 10 s) until the code
//!   expires, polls once before waiting the interval, and reads a wall-clock function for its
//!   deadline; here the interval is waited before each poll on tokio's timer, and transport
//!   failures are bounded;
//! - its `RequestTokenError::Parse` carries the raw body, and it adds sha2 0.10, rand 0.8 and
//!   thiserror 1 next to the workspace's versions.
//!
//! What is left is small: PKCE is `BASE64URL(SHA256(verifier))` ([`challenge_of`]), the two
//! token requests are a form or JSON POST, and the poller is one loop.
//!
//! # Extending
//! This crate has no trait to implement: a provider is a [`SigninFlow`] value (start from a
//! preset and change its public fields, or build an [`AuthorizationCodeConfig`] /
//! [`DeviceConfig`]).
//!
//! # Secrets
//! Codes, verifiers, `state`, tokens and client secrets never appear in `Debug` output or in an
//! error: errors carry classifications, HTTP statuses and registered OAuth error codes only.

mod authcode;
mod config;
mod device;
mod error;
mod pkce;
pub mod presets;
mod signin;
mod token;

pub use authcode::{AuthorizationCodeSignin, ExchangeRequest, exchange_code};
pub use config::{
    AuthorizationCodeConfig, DeviceConfig, Encoding, RedirectHost, SigninFlow, SigninOptions,
};
pub use device::{DEFAULT_INTERVAL, DeviceSignin, SLOW_DOWN_STEP};
pub use error::{Endpoint, OAuthErrorCode, SigninError, TransportKind};
pub use pkce::{Pkce, challenge_of};
pub use presets::{Provider, UnknownProvider};
pub use signin::{PendingSignin, SigninPrompt};
