//! Integration tests of `oauth-accounts`: the formats on fixtures, the stores (compare-and-set,
//! malformed files, modes), the watcher, and a second process acting as the CLI.

mod concurrent_cli;
mod formats;
mod stores;
mod support;
mod watch;
