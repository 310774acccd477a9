//! Real fake servers on 127.0.0.1 (random ports) for testing an OAuth credential pool, in this
//! workspace and in users' own tests.
//!
//! - [`token_server`]: a strict OAuth 2.0 token endpoint (refresh-token rotation, reuse detection,
//!   scriptable faults).
//! - [`webhook_receiver`]: a webhook endpoint that verifies signatures with a function it is given.

pub mod token_server;
pub mod webhook_receiver;
