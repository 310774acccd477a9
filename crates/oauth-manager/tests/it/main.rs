//! oauth-manager's integration tests: the Go behaviours, as improved, through the public API.

mod builder;
mod churn;
mod deferred_refresh;
mod failover;
mod hot_path;
mod late_tokens;
mod maintenance;
mod maintenance_window;
mod mocks;
mod monitoring;
mod quirks;
mod refresh;
mod reliability;
mod reporting;
mod rotation;
mod selection;
mod shared_state;
mod stress;
mod support;
