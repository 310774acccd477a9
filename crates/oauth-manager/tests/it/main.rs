//! oauth-manager's integration tests: the Go behaviours, as improved, through the public API.

mod builder;
mod failover;
mod hot_path;
mod maintenance;
mod mocks;
mod monitoring;
mod refresh;
mod reliability;
mod reporting;
mod rotation;
mod selection;
mod stress;
mod support;
