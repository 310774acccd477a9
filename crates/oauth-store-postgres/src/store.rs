//! [`PostgresStore`]: the [`CredentialStore`] over a pool of PostgreSQL connections.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use oauth_core::{Credential, CredentialId};
use oauth_store::{
    CredentialStore, RefreshLock, SharedState, SharedStateRecord, StoreChange, StoreError, Version,
    Versioned,
};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::lease::PostgresRefreshLock;
use crate::listen::{self, CHANNEL, Notice};
use crate::{LeaseState, PostgresConfig, PostgresError, schema};

/// How many changes a slow [`changes`](CredentialStore::changes) receiver may fall behind before
/// it sees `Lagged` (which it must treat as a resync).
const CHANGE_BUFFER: usize = 1024;

/// A [`CredentialStore`] in PostgreSQL, shared by every replica connected to the same database.
///
/// - Every write is one autocommit statement doing a compare-and-set on the `version` column, so
///   it works behind any connection pooler, and a stale writer gets [`StoreError::Conflict`].
/// - [`refresh_lock`](CredentialStore::refresh_lock) hands out leases: a row per credential with
///   an owner, a fence counter that grows on every acquisition, and an expiry computed on the
///   database clock (`now()`), so a replica killed while holding one blocks nobody for longer
///   than the lease duration.
/// - [`changes`](CredentialStore::changes) delivers other replicas' writes, deletes,
///   [`publish_cooldown`](CredentialStore::publish_cooldown) and
///   [`publish_state`](CredentialStore::publish_state) calls through LISTEN/NOTIFY (sent in the
///   same statement as the write, so only committed changes are announced), and a
///   [`StoreChange::Resync`] per provider after the LISTEN connection was lost and re-established,
///   followed by a [`StoreChange::CooledDown`] for every cooldown still in force and a
///   [`StoreChange::StateChanged`] for every kept state, in publication order. A pool sharing
///   one `PostgresStore` between two managers of the same provider would not hear their changes
///   to each other (a store skips its own notifications); give each its own store.
/// - With the database down every call fails within the configured bounds with an error for
///   which [`is_unavailable`](crate::is_unavailable) holds; the pool and the LISTEN connection
///   reconnect by themselves. [`is_connected`](Self::is_connected) and
///   [`connection_status`](Self::connection_status) report it.
///
/// Cloning is cheap and shares the pool, the LISTEN connection and the change feed.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) config: PostgresConfig,
    pub(crate) shared: Arc<Shared>,
    listener: JoinHandle<()>,
}

/// What the LISTEN task and the store share.
pub(crate) struct Shared {
    /// Tells this store's notifications from other replicas' ones.
    pub(crate) instance: String,
    pub(crate) changes: broadcast::Sender<StoreChange>,
    pub(crate) connected: watch::Sender<bool>,
    /// Woken when any lease is released (here or, via NOTIFY, elsewhere).
    pub(crate) lease_released: Notify,
    pub(crate) reconnects: AtomicU64,
    pub(crate) notifications: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

static INSTANCES: AtomicU64 = AtomicU64::new(0);

impl PostgresStore {
    /// Connects, brings the schema to [`SCHEMA_VERSION`](crate::SCHEMA_VERSION) (concurrent
    /// replicas serialize on an advisory lock; a current schema is left alone), and waits until
    /// the LISTEN connection is up, so no change committed after this returns is missed.
    ///
    /// # Errors
    /// [`PostgresError::Unavailable`] / [`PostgresError::Timeout`] when the database cannot be
    /// reached within the connect timeout, [`PostgresError::UnsupportedSchema`] when another
    /// replica already migrated it to a newer schema, [`PostgresError::Config`] for settings the
    /// pool refuses.
    pub async fn connect(config: PostgresConfig) -> Result<Self, PostgresError> {
        Self::connect_with_tls(config, NoTls).await
    }

    /// [`connect`](Self::connect) through a TLS connector, for example
    /// `tokio_postgres_rustls::MakeRustlsConnect` or `postgres_native_tls::MakeTlsConnector`
    /// (used for the pooled connections and the LISTEN connection alike; `sslmode` in the URL
    /// decides whether TLS is required). This crate itself is tested without TLS.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_with_tls<T>(config: PostgresConfig, tls: T) -> Result<Self, PostgresError>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + Sync + 'static,
        T::TlsConnect: Send + Sync,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let pg = config.client_config();
        let manager = Manager::from_config(
            pg.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(config.connect_timeout))
            .wait_timeout(Some(config.operation_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| PostgresError::Config {
                detail: e.to_string(),
            })?;

        let mut client = get(&pool, "migrate", &config).await?;
        let bound = config
            .operation_timeout
            .saturating_add(config.connect_timeout);
        tokio::time::timeout(bound, schema::migrate(&mut client))
            .await
            .map_err(|_| PostgresError::Timeout {
                operation: "migrate",
                after: bound,
            })??;
        drop(client);

        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        let (connected, mut status) = watch::channel(false);
        let shared = Arc::new(Shared {
            instance: format!(
                "{}#{}#{}",
                config.replica_id,
                std::process::id(),
                INSTANCES.fetch_add(1, Ordering::Relaxed)
            ),
            changes,
            connected,
            lease_released: Notify::new(),
            reconnects: AtomicU64::new(0),
            notifications: AtomicU64::new(0),
        });
        let listener = tokio::spawn(listen::run(Arc::clone(&shared), pg, tls, config.clone()));
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                config,
                shared,
                listener,
            }),
        };
        let wait = store.inner.config.connect_timeout.saturating_mul(2);
        match tokio::time::timeout(wait, status.wait_for(|up| *up)).await {
            Ok(Ok(_)) => Ok(store),
            _ => Err(PostgresError::Timeout {
                operation: "listen",
                after: wait,
            }),
        }
    }

    /// Connects to `url` with default settings (see [`PostgresConfig::new`]).
    ///
    /// # Errors
    /// As [`connect`](Self::connect), plus [`PostgresError::Config`] for a bad URL.
    pub async fn connect_url(url: &str) -> Result<Self, PostgresError> {
        Self::connect(PostgresConfig::from_url(url)?).await
    }

    /// The settings this store runs with.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// True while the LISTEN connection is up (pinged every
    /// [`health_interval`](PostgresConfig::health_interval)): the database is reachable and
    /// changes are being delivered. Cheap: no round trip.
    pub fn is_connected(&self) -> bool {
        *self.inner.shared.connected.borrow()
    }

    /// Follows [`is_connected`](Self::is_connected): `changed()` wakes on every transition, for
    /// events, metrics and health endpoints.
    pub fn connection_status(&self) -> watch::Receiver<bool> {
        self.inner.shared.connected.subscribe()
    }

    /// How many times the LISTEN connection was re-established after being lost (each time a
    /// [`StoreChange::Resync`] went out per provider).
    pub fn reconnects(&self) -> u64 {
        self.inner.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Runs the migrations again (a no-op when the schema is current); returns how many ran.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn migrate(&self) -> Result<usize, PostgresError> {
        let mut client = get(&self.inner.pool, "migrate", &self.inner.config).await?;
        let bound = self.inner.config.operation_timeout;
        tokio::time::timeout(bound, schema::migrate(&mut client))
            .await
            .map_err(|_| PostgresError::Timeout {
                operation: "migrate",
                after: bound,
            })?
    }

    /// The schema version recorded in the database.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the database cannot be read.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        self.run("schema_version", async {
            let row = self
                .query_one(
                    "schema_version",
                    &format!(
                        "SELECT COALESCE(max(version), 0) FROM {}",
                        schema::VERSION_TABLE
                    ),
                    &[],
                )
                .await?;
            Ok(row.get(0))
        })
        .await
    }

    /// The database's clock (`now()`), which lease expiries are measured on.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the database cannot be read.
    pub async fn database_now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.run("database_now", async {
            Ok(self
                .query_one("database_now", "SELECT now()", &[])
                .await?
                .get(0))
        })
        .await
    }

    /// The refresh lease row of one credential as the database sees it now, or `None` when no
    /// lease was ever taken for it.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the database cannot be read.
    pub async fn lease_state(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<LeaseState>, StoreError> {
        check_provider(provider)?;
        self.run("lease_state", async {
            let client = self.client("lease_state").await?;
            let stmt = client
                .prepare_cached(
                    "SELECT owner, fence, expires_at,
                            (owner IS NOT NULL AND expires_at > now()) AS held, now()
                       FROM oauth_refresh_leases WHERE provider = $1 AND credential_id = $2",
                )
                .await
                .map_err(|e| PostgresError::from_pg("lease_state", &e))?;
            let row = client
                .query_opt(&stmt, &[&provider, &id.as_str()])
                .await
                .map_err(|e| PostgresError::from_pg("lease_state", &e))?;
            Ok(row.map(|r| LeaseState {
                owner: r.get(0),
                fence: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                expires_at: r.get(2),
                held: r.get(3),
                database_now: r.get(4),
            }))
        })
        .await
    }

    /// This store's refresh lock with its lease API ([`PostgresRefreshLock::try_acquire`],
    /// [`PostgresRefreshLock::acquire_lease`]), the same lock
    /// [`refresh_lock`](CredentialStore::refresh_lock) returns as a trait object.
    pub fn leases(&self) -> PostgresRefreshLock {
        PostgresRefreshLock::new(self.clone())
    }

    // ---- plumbing ----

    /// Bounds `f` by the operation timeout and converts its error.
    pub(crate) async fn run<T>(
        &self,
        operation: &'static str,
        f: impl Future<Output = Result<T, PostgresError>>,
    ) -> Result<T, StoreError> {
        let bound = self.inner.config.operation_timeout;
        match tokio::time::timeout(bound, f).await {
            Ok(result) => result.map_err(PostgresError::into_store_error),
            Err(_) => Err(PostgresError::Timeout {
                operation,
                after: bound,
            }
            .into_store_error()),
        }
    }

    pub(crate) async fn client(&self, operation: &'static str) -> Result<Object, PostgresError> {
        get(&self.inner.pool, operation, &self.inner.config).await
    }

    pub(crate) async fn query(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, PostgresError> {
        let client = self.client(operation).await?;
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(|e| PostgresError::from_pg(operation, &e))?;
        client
            .query(&stmt, params)
            .await
            .map_err(|e| PostgresError::from_pg(operation, &e))
    }

    async fn query_one(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, PostgresError> {
        self.query(operation, sql, params)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| PostgresError::Database {
                operation,
                code: "02000".to_owned(),
                message: "no row returned".to_owned(),
            })
    }

    pub(crate) fn notice(&self, notice: &Notice<'_>) -> String {
        notice.payload(&self.inner.shared.instance)
    }

    /// The stored version of a live credential (for conflict reports).
    async fn current_version(
        &self,
        operation: &'static str,
        provider: &str,
        id: &str,
    ) -> Result<Option<Version>, PostgresError> {
        let rows = self
            .query(
                operation,
                "SELECT version FROM oauth_credentials
                  WHERE provider = $1 AND credential_id = $2 AND payload IS NOT NULL",
                &[&provider, &id],
            )
            .await?;
        rows.first()
            .map(|r| version_of(provider, id, r.get(0)))
            .transpose()
    }
}

async fn get(
    pool: &Pool,
    operation: &'static str,
    config: &PostgresConfig,
) -> Result<Object, PostgresError> {
    pool.get()
        .await
        .map_err(|e| PostgresError::from_pool(operation, &e, config.operation_timeout))
}

pub(crate) fn check_provider(provider: &str) -> Result<(), StoreError> {
    if provider.is_empty() {
        return Err(StoreError::InvalidProvider {
            provider: provider.to_owned(),
        });
    }
    Ok(())
}

fn parse_id(provider: &str, id: String) -> Result<CredentialId, PostgresError> {
    CredentialId::new(&id).map_err(|_| PostgresError::CorruptRow {
        provider: provider.to_owned(),
        detail: "the credential id column is not a valid credential id".to_owned(),
        id,
    })
}

fn version_of(provider: &str, id: &str, v: i64) -> Result<Version, PostgresError> {
    Version::try_from(v).map_err(|_| PostgresError::CorruptRow {
        provider: provider.to_owned(),
        id: id.to_owned(),
        detail: format!("negative version {v}"),
    })
}

fn decode(
    provider: &str,
    id: String,
    version: i64,
    payload: &[u8],
) -> Result<Versioned<Credential>, PostgresError> {
    let version = version_of(provider, &id, version)?;
    let credential: Credential = serde_json::from_slice(payload).map_err(|e| {
        // The kind and position only: serde_json's message may quote the offending value.
        PostgresError::CorruptRow {
            provider: provider.to_owned(),
            id: id.clone(),
            detail: format!(
                "payload is not a credential ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        }
    })?;
    if credential.id.as_str() != id {
        return Err(PostgresError::CorruptRow {
            provider: provider.to_owned(),
            id,
            detail: format!("payload holds credential {:?}", credential.id.as_str()),
        });
    }
    Ok(Versioned::new(credential, version))
}

fn encode(provider: &str, credential: &Credential) -> Result<Vec<u8>, PostgresError> {
    serde_json::to_vec(&credential.persisted()).map_err(|e| PostgresError::CorruptRow {
        provider: provider.to_owned(),
        id: credential.id.as_str().to_owned(),
        detail: format!("cannot serialize the credential ({:?})", e.classify()),
    })
}

fn pg_version(v: Version) -> i64 {
    // Versions beyond i64::MAX cannot be stored; such an expectation matches no row.
    i64::try_from(v).unwrap_or(-1)
}

#[async_trait]
impl CredentialStore for PostgresStore {
    async fn load_all(&self, provider: &str) -> Result<Vec<Versioned<Credential>>, StoreError> {
        check_provider(provider)?;
        let op = "load_all";
        self.run(op, async {
            let rows = self
                .query(
                    op,
                    "SELECT credential_id, version, payload FROM oauth_credentials
                      WHERE provider = $1 AND payload IS NOT NULL
                      ORDER BY credential_id COLLATE \"C\"",
                    &[&provider],
                )
                .await?;
            rows.iter()
                .map(|r| decode(provider, r.get(0), r.get(1), r.get(2)))
                .collect()
        })
        .await
    }

    async fn load(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<Versioned<Credential>>, StoreError> {
        check_provider(provider)?;
        let op = "load";
        self.run(op, async {
            let rows = self
                .query(
                    op,
                    "SELECT credential_id, version, payload FROM oauth_credentials
                      WHERE provider = $1 AND credential_id = $2 AND payload IS NOT NULL",
                    &[&provider, &id.as_str()],
                )
                .await?;
            rows.first()
                .map(|r| decode(provider, r.get(0), r.get(1), r.get(2)))
                .transpose()
        })
        .await
    }

    async fn save(
        &self,
        provider: &str,
        credential: &Credential,
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        check_provider(provider)?;
        let op = "save";
        let id = credential.id.as_str();
        self.run(op, async {
            let payload = encode(provider, credential)?;
            let notice = self.notice(&Notice::Changed { provider, id });
            let by = self.inner.config.replica_id.as_str();
            let rows = match expected {
                None => {
                    self.query(
                        op,
                        "WITH w AS (
                           INSERT INTO oauth_credentials AS c
                                  (provider, credential_id, version, payload, expires_at, updated_by)
                           VALUES ($1, $2, 1, $3, $4, $5)
                           ON CONFLICT (provider, credential_id) DO UPDATE
                              SET version = c.version + 1, payload = EXCLUDED.payload,
                                  expires_at = EXCLUDED.expires_at, updated_at = now(),
                                  updated_by = EXCLUDED.updated_by
                            WHERE c.payload IS NULL
                           RETURNING c.version),
                         -- A (re-)created credential starts without a predecessor's states and
                         -- cooldowns (one published while the delete ran may have survived it).
                         s AS (
                           DELETE FROM oauth_credential_states
                            WHERE provider = $1 AND credential_id = $2
                              AND EXISTS (SELECT 1 FROM w)),
                         d AS (
                           DELETE FROM oauth_cooldowns
                            WHERE provider = $1 AND credential_id = $2
                              AND EXISTS (SELECT 1 FROM w))
                         SELECT version, pg_notify($6, $7)::text FROM w",
                        &[
                            &provider,
                            &id,
                            &payload,
                            &credential.expires_at,
                            &by,
                            &CHANNEL,
                            &notice,
                        ],
                    )
                    .await?
                }
                Some(v) => {
                    self.query(
                        op,
                        "WITH w AS (
                           UPDATE oauth_credentials
                              SET version = version + 1, payload = $3, expires_at = $4,
                                  updated_at = now(), updated_by = $5
                            WHERE provider = $1 AND credential_id = $2 AND version = $6
                              AND payload IS NOT NULL
                           RETURNING version)
                         SELECT version, pg_notify($7, $8)::text FROM w",
                        &[
                            &provider,
                            &id,
                            &payload,
                            &credential.expires_at,
                            &by,
                            &pg_version(v),
                            &CHANNEL,
                            &notice,
                        ],
                    )
                    .await?
                }
            };
            if let Some(row) = rows.first() {
                return Ok(Ok(version_of(provider, id, row.get(0))?));
            }
            let actual = self.current_version(op, provider, id).await?;
            Ok(Err(StoreError::Conflict {
                provider: provider.to_owned(),
                id: credential.id.clone(),
                expected,
                actual,
            }))
        })
        .await
        .and_then(|r| r)
    }

    async fn delete(
        &self,
        provider: &str,
        id: &CredentialId,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        check_provider(provider)?;
        let op = "delete";
        let raw = id.as_str();
        self.run(op, async {
            let notice = self.notice(&Notice::Removed { provider, id: raw });
            let expected_pg: Option<i64> = expected.map(pg_version);
            let rows = self
                .query(
                    op,
                    // A re-created credential starts without its predecessor's states.
                    "WITH w AS (
                       UPDATE oauth_credentials
                          SET payload = NULL, expires_at = NULL, updated_at = now(),
                              updated_by = $3
                        WHERE provider = $1 AND credential_id = $2 AND payload IS NOT NULL
                          AND ($4::bigint IS NULL OR version = $4)
                       RETURNING version),
                     s AS (
                       DELETE FROM oauth_credential_states
                        WHERE provider = $1 AND credential_id = $2 AND EXISTS (SELECT 1 FROM w)),
                     d AS (
                       DELETE FROM oauth_cooldowns
                        WHERE provider = $1 AND credential_id = $2 AND EXISTS (SELECT 1 FROM w))
                     SELECT version, pg_notify($5, $6)::text FROM w",
                    &[
                        &provider,
                        &raw,
                        &self.inner.config.replica_id.as_str(),
                        &expected_pg,
                        &CHANNEL,
                        &notice,
                    ],
                )
                .await?;
            if !rows.is_empty() {
                return Ok(Ok(()));
            }
            Ok(Err(match self.current_version(op, provider, raw).await? {
                None => StoreError::NotFound {
                    provider: provider.to_owned(),
                    id: id.clone(),
                },
                actual => StoreError::Conflict {
                    provider: provider.to_owned(),
                    id: id.clone(),
                    expected,
                    actual,
                },
            }))
        })
        .await
        .and_then(|r| r)
    }

    async fn versions(
        &self,
        provider: &str,
    ) -> Result<BTreeMap<CredentialId, Version>, StoreError> {
        check_provider(provider)?;
        let op = "versions";
        self.run(op, async {
            let rows = self
                .query(
                    op,
                    "SELECT credential_id, version FROM oauth_credentials
                      WHERE provider = $1 AND payload IS NOT NULL",
                    &[&provider],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let id: String = r.get(0);
                    let v = version_of(provider, &id, r.get(1))?;
                    Ok((parse_id(provider, id)?, v))
                })
                .collect()
        })
        .await
    }

    fn refresh_lock(&self) -> Option<Arc<dyn RefreshLock>> {
        Some(Arc::new(self.leases()))
    }

    fn changes(&self) -> Option<broadcast::Receiver<StoreChange>> {
        Some(self.inner.shared.changes.subscribe())
    }

    /// [`PostgresStore::connection_status`]: follows the LISTEN connection.
    fn connection_status(&self) -> Option<watch::Receiver<bool>> {
        Some(PostgresStore::connection_status(self))
    }

    async fn publish_cooldown(
        &self,
        provider: &str,
        id: &CredentialId,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        check_provider(provider)?;
        let op = "publish_cooldown";
        self.run(op, async {
            // The notification carries the cooldown in force after the upsert (a longer one
            // published meanwhile wins), in microseconds since the epoch.
            self.query(
                op,
                "WITH w AS (
                   INSERT INTO oauth_cooldowns AS c (provider, credential_id, until, updated_by)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (provider, credential_id) DO UPDATE
                      SET until = GREATEST(c.until, EXCLUDED.until), updated_at = now(),
                          updated_by = EXCLUDED.updated_by
                   RETURNING c.until)
                 SELECT pg_notify($5, $6 || floor(extract(epoch FROM until) * 1000000)::bigint
                                         || $7)::text
                   FROM w",
                &[
                    &provider,
                    &id.as_str(),
                    &until,
                    &self.inner.config.replica_id.as_str(),
                    &CHANNEL,
                    &listen::cooldown_prefix(&self.inner.shared.instance),
                    &listen::cooldown_suffix(provider, id.as_str()),
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// Kept in `oauth_credential_states` (the latest of each aspect per credential) and
    /// announced in the same statement: replicas listening now adopt it at once; one that was not
    /// listening gets it replayed after its reconnect's [`StoreChange::Resync`] and reads it at
    /// its maintenance tick ([`shared_states`](CredentialStore::shared_states)).
    async fn publish_state(
        &self,
        provider: &str,
        id: &CredentialId,
        state: SharedState,
        version: Option<Version>,
    ) -> Result<(), StoreError> {
        check_provider(provider)?;
        let op = "publish_state";
        // Names too long for a payload: kept, not announced (read at the next maintenance tick).
        let payload = listen::state_payload(
            &self.inner.shared.instance,
            provider,
            id.as_str(),
            state,
            version,
        );
        let decided: Option<i64> = version.map(pg_version);
        self.run(op, async {
            self.query(
                op,
                // Kept and announced for a credential the store holds only (a state sent after
                // the credential's delete would otherwise outlive it).
                "WITH w AS (
                   INSERT INTO oauth_credential_states AS s
                          (provider, credential_id, aspect, state, decided_version, seq, updated_by)
                   SELECT $1::text, $2::text, $3::text, $4::text, $5::bigint,
                          nextval('oauth_credential_state_seq'), $6::text
                     FROM oauth_credentials c
                    WHERE c.provider = $1 AND c.credential_id = $2 AND c.payload IS NOT NULL
                   ON CONFLICT (provider, credential_id, aspect) DO UPDATE
                      SET state = EXCLUDED.state, decided_version = EXCLUDED.decided_version,
                          seq = EXCLUDED.seq, updated_at = now(), updated_by = EXCLUDED.updated_by
                   RETURNING 1)
                 SELECT pg_notify($7, $8)::text FROM w WHERE $8::text IS NOT NULL",
                &[
                    &provider,
                    &id.as_str(),
                    &state.aspect(),
                    &state.as_str(),
                    &decided,
                    &self.inner.config.replica_id.as_str(),
                    &CHANNEL,
                    &payload,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// The cooldowns of `provider` that have not ended yet (on the database clock), as published
    /// by any replica.
    async fn active_cooldowns(
        &self,
        provider: &str,
    ) -> Result<BTreeMap<CredentialId, DateTime<Utc>>, StoreError> {
        check_provider(provider)?;
        let op = "active_cooldowns";
        self.run(op, async {
            let rows = self
                .query(
                    op,
                    "SELECT credential_id, until FROM oauth_cooldowns
                      WHERE provider = $1 AND until > now()",
                    &[&provider],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let id: String = r.get(0);
                    Ok((parse_id(provider, id)?, r.get(1)))
                })
                .collect()
        })
        .await
    }

    async fn shared_states(&self, provider: &str) -> Result<Vec<SharedStateRecord>, StoreError> {
        check_provider(provider)?;
        let op = "shared_states";
        self.run(op, async {
            let rows = self
                .query(
                    op,
                    "SELECT s.credential_id, s.state, s.decided_version
                       FROM oauth_credential_states s
                       JOIN oauth_credentials c USING (provider, credential_id)
                      WHERE s.provider = $1 AND c.payload IS NOT NULL
                      ORDER BY s.seq",
                    &[&provider],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| state_record(provider, r.get(0), r.get(1), r.get(2)))
                .collect())
        })
        .await
    }
}

/// One row of `oauth_credential_states`, or `None` for a state this version does not know (a
/// newer replica's) or an id it cannot read: skipped, as its notification would be.
pub(crate) fn state_record(
    provider: &str,
    id: String,
    state: &str,
    version: Option<i64>,
) -> Option<SharedStateRecord> {
    let state = SharedState::parse(state)?;
    let id = parse_id(provider, id).ok()?;
    let version = version.and_then(|v| Version::try_from(v).ok());
    Some(SharedStateRecord::new(id, state, version))
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.inner.config.target())
            .field("replica_id", &self.inner.config.replica_id)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}
