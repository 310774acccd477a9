//! oauth-refresh's integration tests, against the strict fake token server of oauth-testkit.

mod coordinator;
mod http;
mod parser;
mod presets;
mod quirks;
mod stampede;
mod strategy;
mod support;
