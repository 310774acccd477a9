//! The end-to-end suite: `OAuthKeyManager` against oauth-testkit's real servers on 127.0.0.1 (a
//! strict token endpoint with refresh-token rotation and reuse detection, a fake chat-completion
//! provider, a webhook receiver that verifies signatures). One module per scenario; each scenario
//! writes a result row for `cargo xtask integration` (see `support::report`).

mod cli_accounts;
mod crash_window;
mod cross_process;
mod endpoint_down;
mod invalid_grant;
mod metrics;
mod outage_flow;
mod pg;
mod rate_limit;
mod replicas;
mod replicas_kill;
mod replicas_lease;
mod replicas_outage;
mod replicas_restart;
mod restart;
mod rotation;
mod soak;
mod support;
mod unauthorized;
