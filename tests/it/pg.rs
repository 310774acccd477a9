//! The throwaway PostgreSQL cluster of the replica scenarios: oauth-store-postgres's own test
//! harness (feature `test-cluster`). Failing to start panics: the scenarios fail, never skip,
//! without PostgreSQL.

pub(crate) use oauth_store_postgres::test_cluster::Cluster;
