//! oauth-core's integration tests: the public API as a user sees it.

mod credential;
mod health;
mod secrets;
mod window;
