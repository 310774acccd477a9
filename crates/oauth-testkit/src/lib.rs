//! Real fake servers on 127.0.0.1 (random ports) for testing an OAuth credential pool, in this
//! workspace and in users' own tests.
//!
//! - [`token_server`]: a strict OAuth 2.0 token endpoint (refresh-token rotation, reuse detection,
//!   scriptable faults).
//! - [`provider`]: a fake chat-completion AI provider that serves only the token server's valid
//!   access tokens, with scriptable per-account faults, and [`provider::ChatClient`] for it.
//! - [`webhook_receiver`]: a webhook endpoint that verifies signatures with a function it is given.
//! - [`authorization_server`]: strict authorization, token (code and device grants) and device
//!   authorization endpoints for sign-in flows: PKCE, exact redirect URIs, single-use short-lived
//!   codes, `slow_down` for polls that come too soon; its tokens can be grants of the token server.
//!
//! ```
//! use std::sync::Arc;
//! use oauth_testkit::provider::{ChatClient, FakeProvider};
//! use oauth_testkit::token_server::TokenServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let tokens = Arc::new(TokenServer::start().await?);
//! let grant = tokens.issue_grant("my-client");
//! let provider = FakeProvider::start(Arc::clone(&tokens)).await?;
//! let client = ChatClient::new(provider.url());
//! // The provider serves only access tokens the token server issued and still honours.
//! assert!(client.chat(&grant.access_token, "hello").await.is_ok());
//! assert!(client.chat("forged-token", "hello").await.is_err());
//! assert_eq!(tokens.stats().refreshes, 0);
//! # Ok(()) }
//! ```
//!
//! The fakes depend on `oauth-core` only: the webhook receiver takes the signature check as a
//! function (pass `oauth_webhooks::verify` in), which keeps the crate graph acyclic.

pub mod authorization_server;
pub mod provider;
mod serving;
pub mod token_server;
pub mod webhook_receiver;
