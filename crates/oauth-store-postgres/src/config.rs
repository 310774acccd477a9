//! Connection and behaviour settings of a [`PostgresStore`](crate::PostgresStore).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;

use crate::PostgresError;

/// How a [`PostgresStore`](crate::PostgresStore) connects and behaves.
///
/// Built from a libpq-style URL or key/value string (`postgres://user:pass@host:5432/db`,
/// `host=/run/postgresql dbname=pool`) or from a [`tokio_postgres::Config`]. `Debug` never shows
/// the password.
#[derive(Clone)]
pub struct PostgresConfig {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) lease_ttl: Duration,
    pub(crate) replica_id: String,
    pub(crate) health_interval: Duration,
    pub(crate) reconnect_delay: Duration,
    pub(crate) max_reconnect_delay: Duration,
}

impl PostgresConfig {
    /// Settings for the database `url` points at, with the defaults below.
    ///
    /// # Errors
    /// [`PostgresError::Config`] when `url` cannot be parsed (the message names the option, never
    /// its value).
    pub fn from_url(url: &str) -> Result<Self, PostgresError> {
        let pg = tokio_postgres::Config::from_str(url).map_err(|e| PostgresError::Config {
            detail: e.to_string(),
        })?;
        Ok(Self::new(pg))
    }

    /// Settings for an already built client configuration. Defaults: a pool of 8 connections, a
    /// 3 s connect timeout, a 5 s bound on every operation, 30 s refresh leases, a health ping
    /// every 5 s on the LISTEN connection, reconnect attempts from 100 ms backing off to 2 s, and a
    /// replica id made of the host name and process id.
    pub fn new(pg: tokio_postgres::Config) -> Self {
        Self {
            pg,
            pool_size: 8,
            connect_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(30),
            replica_id: default_replica_id(),
            health_interval: Duration::from_secs(5),
            reconnect_delay: Duration::from_millis(100),
            max_reconnect_delay: Duration::from_secs(2),
        }
    }

    /// Maximum number of pooled connections (at least 1), besides the one LISTEN connection.
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Bound on opening one connection; with the database down, a call fails after about this
    /// long.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on every store operation (waiting for a pooled connection included).
    #[must_use]
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How long a refresh lease lasts on the database clock. It must exceed the longest refresh
    /// (token-endpoint timeout times attempts, plus the write-back): a holder that outlives its
    /// lease may overlap with the next holder, and only the version compare-and-set then keeps the
    /// store right. A holder that dies blocks the credential's refresh for at most this long.
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// The name this replica writes as lease owner and `updated_by` (for operators; uniqueness is
    /// not required for correctness, the fence tells acquisitions apart).
    #[must_use]
    pub fn replica_id(mut self, id: impl Into<String>) -> Self {
        self.replica_id = id.into();
        self
    }

    /// How often the LISTEN connection is pinged; a dead connection (a network partition without
    /// a reset) is noticed within this plus the operation timeout.
    #[must_use]
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval;
        self
    }

    /// First and largest delay between attempts to re-establish the LISTEN connection.
    #[must_use]
    pub fn reconnect_delay(mut self, first: Duration, max: Duration) -> Self {
        self.reconnect_delay = first;
        self.max_reconnect_delay = max.max(first);
        self
    }

    /// The refresh lease duration.
    pub fn get_lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// The replica id.
    pub fn get_replica_id(&self) -> &str {
        &self.replica_id
    }

    /// Where the store connects, for messages: hosts, ports and database, no user or password.
    pub fn target(&self) -> String {
        let hosts: Vec<String> = self
            .pg
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = self.pg.get_ports().iter().map(u16::to_string).collect();
        format!(
            "{}:{}/{}",
            hosts.join(","),
            ports.join(","),
            self.pg.get_dbname().unwrap_or("")
        )
    }

    /// The client configuration with this store's timeouts and keepalives applied.
    pub(crate) fn client_config(&self) -> tokio_postgres::Config {
        let mut pg = self.pg.clone();
        pg.connect_timeout(self.connect_timeout);
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(10));
        pg.keepalives_interval(Duration::from_secs(2));
        pg.keepalives_retries(3);
        if pg.get_application_name().is_none() {
            pg.application_name(format!("oauth-pool {}", self.replica_id));
        }
        pg
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("target", &self.target())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("lease_ttl", &self.lease_ttl)
            .field("replica_id", &self.replica_id)
            .finish_non_exhaustive()
    }
}

fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "replica".to_owned());
    format!("{host}/{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password_and_bad_urls_are_typed() {
        let c = PostgresConfig::from_url("postgres://pool:hunter2secret@127.0.0.1:5433/creds")
            .expect("valid url")
            .replica_id("r1")
            .pool_size(0);
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2secret"), "{text}");
        assert!(text.contains("127.0.0.1:5433/creds"), "{text}");
        assert_eq!(c.pool_size, 1);
        assert_eq!(c.get_replica_id(), "r1");

        let err = PostgresConfig::from_url("host=x port=notaport password=hunter2secret")
            .expect_err("bad port");
        assert!(matches!(err, PostgresError::Config { .. }));
        assert!(!err.to_string().contains("hunter2secret"), "{err}");
    }
}
