//! A throwaway PostgreSQL cluster for the tests, fresh databases in it, and stores on them.
//!
//! The server binaries come from `pg_config --bindir` (or `/usr/lib/postgresql/*/bin`). PostgreSQL
//! refuses to run as root, so as root the cluster belongs to the `postgres` user (`runuser`). Each
//! cluster lives in a temporary directory and is stopped and removed by its `Drop` guard; a
//! watchdog process also stops and removes it once this test process is gone, which covers the
//! cluster shared by the whole binary (a static, never dropped) and a test binary that was killed.

use std::sync::OnceLock;
use std::time::Duration;

use oauth_store::conformance::Fixture;
use oauth_store_postgres::{PostgresConfig, PostgresStore};

pub(crate) const P: &str = "anthropic";

pub(crate) fn id(s: &str) -> oauth_core::CredentialId {
    oauth_core::CredentialId::new(s).expect("valid id")
}

pub(crate) use oauth_store_postgres::test_cluster::Cluster;

/// The cluster shared by every test of this binary that does not stop its server.
pub(crate) fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

/// Settings for tests: short timeouts (2 s connect, 3 s per operation, a ping every 0.5 s) so
/// outages show within seconds, with room for a loaded machine.
pub(crate) fn config(url: &str, replica: &str) -> PostgresConfig {
    PostgresConfig::from_url(url)
        .expect("url")
        .replica_id(replica)
        .pool_size(4)
        .connect_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(3))
        .health_interval(Duration::from_millis(500))
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(500))
}

pub(crate) async fn connect(config: PostgresConfig) -> PostgresStore {
    PostgresStore::connect(config).await.expect("connect")
}

/// A store on a fresh database of the shared cluster (for the conformance suite).
pub(crate) async fn fixture() -> Fixture {
    let url = shared().fresh_database().await;
    Fixture::new(std::sync::Arc::new(
        connect(config(&url, "conformance")).await,
    ))
}

/// A raw client for poking at the tables.
pub(crate) async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(connection);
    client
}

/// Polls `f` every 20 ms until it returns true or `within` passes.
pub(crate) async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
