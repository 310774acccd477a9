//! Integration tests of oauth-webhooks: signatures against a real receiver, delivery under
//! failures, alert rules with manual time, and redaction.

mod alerts;
mod delivery;
mod monitor;
mod redaction;
mod signing;
mod support;
