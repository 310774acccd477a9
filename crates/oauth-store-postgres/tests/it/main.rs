//! Integration tests of `oauth-store-postgres`, all against a real PostgreSQL: a throwaway cluster
//! shared by the binary (a fresh database per test), and a cluster of its own for the test that
//! restarts the server.

mod conformance;
mod leases;
mod notify;
mod outage;
mod partition;
mod schema;
mod support;
