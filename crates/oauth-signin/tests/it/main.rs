//! Sign-in flows against the testkit's strict authorization server, over real HTTP on 127.0.0.1.

mod authcode;
mod device;
mod presets;
mod support;
