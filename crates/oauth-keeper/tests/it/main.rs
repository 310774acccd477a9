//! The keeper against oauth-testkit's strict token and authorization servers on 127.0.0.1, over
//! a temporary account directory, driven with a real HTTP client.

mod api;
mod common;
mod signin;
mod soak;
