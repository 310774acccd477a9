//! Integration tests of `oauth-store`: one conformance suite for every store, the file store's
//! error cases, and multi-process tests (crash safety, concurrent writers, the refresh lock) that
//! re-execute this test binary as child processes.

mod conformance;
mod crash;
mod file_errors;
mod hardening;
mod multiprocess;
mod refresh_lock;
mod support;
