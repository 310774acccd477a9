//! Real fake servers on 127.0.0.1 (random ports) for testing an OAuth credential pool, in this
//! workspace and in users' own tests.
//!
//! - [`token_server`]: a strict OAuth 2.0 token endpoint (refresh-token rotation, reuse detection,
//!   scriptable faults).
//! - [`provider`]: a fake chat-completion AI provider that serves only the token server's valid
//!   access tokens, with scriptable per-account faults, and [`provider::ChatClient`] for it.
//! - [`webhook_receiver`]: a webhook endpoint that verifies signatures with a function it is given.

pub mod provider;
mod serving;
pub mod token_server;
pub mod webhook_receiver;
