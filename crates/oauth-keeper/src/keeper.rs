//! The keeper: one pool per provider over an account directory, kept fresh by each pool's
//! maintenance, plus the operations the management API exposes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use oauth_accounts::AccountDir;
use oauth_manager::metrics::prometheus_client::registry::Registry;
use oauth_manager::metrics::{MetricsRecorder, PrometheusRecorder};
use oauth_manager::refresh::{HttpRefresher, RefreshStrategy};
use oauth_manager::store::{CredentialStore, StoreChange};
use oauth_manager::{
    BuildError, Clock, Credential, CredentialHealthInfo, CredentialId, ExposeSecret,
    MaintenanceConfig, MaintenanceHandle, OAuthKeyManager, RefreshNowError, RefreshWindow,
    RemoveError, SecretString, SystemClock, UnknownCredential,
};
use oauth_signin::{PendingSignin, SigninOptions, SigninPrompt};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::BearerToken;
use crate::config::{ConfigError, KeeperConfig};
use crate::error::KeeperError;
use crate::providers::ProviderKind;

/// At most this many sign-ins wait for a browser or a device approval at once.
pub const MAX_PENDING_SIGNINS: usize = 8;

/// Sign-ins remembered (finished ones are forgotten oldest first beyond this).
const MAX_SIGNIN_RECORDS: usize = 64;

struct Pool {
    manager: OAuthKeyManager,
    maintenance: MaintenanceHandle,
}

/// The state of a sign-in started through [`Keeper::start_signin`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SigninStatus {
    /// Waiting for the user.
    Pending {
        /// The provider.
        provider: String,
        /// The account it will create or re-authorize.
        account: String,
    },
    /// The account file is written and the account is in its pool.
    Done {
        /// The provider.
        provider: String,
        /// The account.
        account: String,
    },
    /// The sign-in ended without an account.
    Failed {
        /// The provider.
        provider: String,
        /// The account it was for.
        account: String,
        /// Why (no secret: sign-in errors carry classifications only).
        reason: String,
    },
}

/// A started sign-in: what to show the user, and the id to poll.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SigninStarted {
    /// Poll [`Keeper::signin_status`] with this.
    pub signin: String,
    /// The account it will create (or re-authorize).
    pub account: CredentialId,
    /// The provider.
    pub provider: ProviderKind,
    /// Open a URL, or enter a code.
    pub prompt: SigninPrompt,
}

/// One account as the management API lists it (no secret: ids, states, times, counters).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct AccountView {
    /// The provider (pool name: `gemini`, `anthropic`, `openai`, `qwen`).
    pub provider: &'static str,
    /// Its health and counters, as the pool reports them.
    #[serde(flatten)]
    pub health: CredentialHealthInfo,
}

/// What clearing a cooldown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CooldownCleared {
    /// A transient request backoff was cleared: the account takes traffic again.
    Cleared,
    /// The account was not waiting out anything.
    NothingToClear,
}

struct Inner {
    config: KeeperConfig,
    store: AccountDir,
    token: Option<BearerToken>,
    secrets: BTreeMap<ProviderKind, SecretString>,
    registry: Registry,
    recorder: PrometheusRecorder,
    pools: RwLock<BTreeMap<ProviderKind, Pool>>,
    structure: tokio::sync::Mutex<()>,
    signins: Mutex<BTreeMap<String, (u64, SigninStatus)>>,
    signin_serial: std::sync::atomic::AtomicU64,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

/// The keeper (cheap to clone). Build it with [`Keeper::builder`]; [`serve`](Keeper::serve)
/// starts the HTTP server.
#[derive(Clone)]
pub struct Keeper {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Keeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keeper")
            .field("listen", &self.inner.config.listen)
            .field("account_dir", &self.inner.config.account_dir)
            .field("providers", &self.providers())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Keeper`].
#[derive(Debug)]
pub struct KeeperBuilder {
    config: KeeperConfig,
    clock: Arc<dyn Clock>,
    http: Option<reqwest::Client>,
}

impl KeeperBuilder {
    /// The clock every pool and sign-in reads (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The HTTP client for sign-ins (the refreshers build their own with bounded timeouts).
    #[must_use]
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Reads the token file and client secrets, opens (and watches) the account directory,
    /// builds one pool per provider present in it, and starts each pool's maintenance.
    ///
    /// # Errors
    /// [`KeeperError`]: a configuration problem, the directory, a pool that cannot be built.
    pub async fn build(self) -> Result<Keeper, KeeperError> {
        let config = self.config;
        config.check_listen()?;
        let token = config
            .token_file
            .as_deref()
            .map(BearerToken::from_file)
            .transpose()?;
        let mut secrets = BTreeMap::new();
        for (kind, o) in &config.providers {
            if let Some(path) = &o.client_secret_file {
                let key = format!("providers.{}.client_secret_file", kind.config_name());
                let text = std::fs::read_to_string(path).map_err(|_| ConfigError::BadFile {
                    key: key.clone(),
                    path: path.clone(),
                    reason: "cannot be read",
                })?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(ConfigError::BadFile {
                        key,
                        path: path.clone(),
                        reason: "is empty",
                    }
                    .into());
                }
                secrets.insert(*kind, SecretString::from(text.to_owned()));
            }
        }
        let store = AccountDir::open(&config.account_dir).map_err(KeeperError::Store)?;
        let mut registry = Registry::with_prefix("oauth_pool");
        let recorder = PrometheusRecorder::new(&mut registry, ProviderKind::Gemini.pool_name());
        let keeper = Keeper {
            inner: Arc::new(Inner {
                config,
                store,
                token,
                secrets,
                registry,
                recorder,
                pools: RwLock::default(),
                structure: tokio::sync::Mutex::new(()),
                signins: Mutex::default(),
                signin_serial: std::sync::atomic::AtomicU64::new(0),
                http: self.http.unwrap_or_default(),
                clock: self.clock,
            }),
        };
        for kind in ProviderKind::ALL {
            keeper.ensure_pool(kind).await?;
        }
        Ok(keeper)
    }
}

impl Keeper {
    /// A builder over `config`.
    pub fn builder(config: KeeperConfig) -> KeeperBuilder {
        KeeperBuilder {
            config,
            clock: Arc::new(SystemClock),
            http: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &KeeperConfig {
        &self.inner.config
    }

    pub(crate) fn token(&self) -> Option<&BearerToken> {
        self.inner.token.as_ref()
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The providers with a pool, in order.
    pub fn providers(&self) -> Vec<ProviderKind> {
        self.pools().keys().copied().collect()
    }

    /// The pool of a provider (to read its credentials in-process; the HTTP API never shows a
    /// token).
    pub fn pool(&self, kind: ProviderKind) -> Option<OAuthKeyManager> {
        self.pools().get(&kind).map(|p| p.manager.clone())
    }

    fn pools(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ProviderKind, Pool>> {
        self.inner
            .pools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn pools_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<ProviderKind, Pool>> {
        self.inner
            .pools
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn maintenance_config(&self) -> MaintenanceConfig {
        MaintenanceConfig::default()
            .with_interval(self.inner.config.maintenance_interval)
            .with_refresh_ahead(self.inner.config.refresh_ahead)
    }

    fn strategy(&self) -> Result<RefreshStrategy, KeeperError> {
        let c = &self.inner.config;
        let window = RefreshWindow::new(
            c.refresh_buffer,
            RefreshWindow::DEFAULT_FRACTION,
            c.refresh_floor,
            c.refresh_min_interval,
        )
        .map_err(|_| ConfigError::InvalidValue {
            key: "refresh_floor".into(),
            value: format!("{:?}", c.refresh_floor),
            reason: "must not exceed refresh_buffer",
        })?;
        Ok(RefreshStrategy {
            buffer_time: c.refresh_buffer,
            window,
            ..RefreshStrategy::default()
        })
    }

    /// Builds the provider's pool if it has none and the directory holds accounts of it.
    async fn ensure_pool(&self, kind: ProviderKind) -> Result<bool, KeeperError> {
        let _structure = self.inner.structure.lock().await;
        self.ensure_pool_locked(kind).await
    }

    async fn ensure_pool_locked(&self, kind: ProviderKind) -> Result<bool, KeeperError> {
        if self.pools().contains_key(&kind) {
            return Ok(false);
        }
        let overrides = self
            .inner
            .config
            .providers
            .get(&kind)
            .cloned()
            .unwrap_or_default();
        let secret = self
            .inner
            .secrets
            .get(&kind)
            .map(|s| s.expose_secret().to_owned());
        let refresher = HttpRefresher::builder(kind.token_endpoint(&overrides, secret))
            .clock(Arc::clone(&self.inner.clock))
            .build()
            .map_err(|e| KeeperError::Refresher {
                provider: kind,
                reason: e.to_string(),
            })?;
        let built = OAuthKeyManager::builder(kind.pool_name())
            .store(self.inner.store.clone())
            .refresher(refresher)
            .refresh_strategy(self.strategy()?)
            .metrics(self.inner.recorder.for_provider(kind.pool_name()))
            .clock_arc(Arc::clone(&self.inner.clock))
            .build()
            .await;
        let manager = match built {
            Ok(m) => m,
            Err(BuildError::EmptyPool { .. }) => return Ok(false),
            Err(e) => {
                return Err(KeeperError::Pool {
                    provider: kind,
                    source: e,
                });
            }
        };
        let maintenance = manager
            .spawn_maintenance(self.maintenance_config())
            .map_err(|e| KeeperError::Pool {
                provider: kind,
                source: BuildError::InvalidSetting(e),
            })?;
        tracing::info!(
            provider = kind.pool_name(),
            accounts = manager.credential_ids().len(),
            "pool started"
        );
        self.pools_mut().insert(
            kind,
            Pool {
                manager,
                maintenance,
            },
        );
        Ok(true)
    }

    /// Watches the directory for accounts of a provider that has no pool yet.
    pub(crate) fn spawn_watcher(&self, mut stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        let mut changes = self.inner.store.changes()?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    c = changes.recv() => c,
                    _ = stop.changed() => break,
                };
                let provider = match change {
                    Ok(
                        StoreChange::Changed { provider, .. } | StoreChange::Resync { provider },
                    ) => provider,
                    Ok(StoreChange::Removed { provider, id }) => {
                        if let Ok(kind) = provider.parse::<ProviderKind>() {
                            this.drop_pool_if_only(kind, &id).await;
                        }
                        continue;
                    }
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        for kind in ProviderKind::ALL {
                            let _ = this.ensure_pool(kind).await;
                        }
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                if let Ok(kind) = provider.parse::<ProviderKind>()
                    && !this.pools().contains_key(&kind)
                    && let Err(e) = this.ensure_pool(kind).await
                {
                    tracing::warn!(provider = %kind, error = %e, "could not start a pool");
                }
            }
        }))
    }

    /// The pool refuses to drop its last credential when its file goes; the keeper drops the
    /// pool instead, once the file is really gone.
    async fn drop_pool_if_only(&self, kind: ProviderKind, id: &CredentialId) {
        let _structure = self.inner.structure.lock().await;
        let only = self
            .pool(kind)
            .is_some_and(|m| m.credential_ids().as_slice() == std::slice::from_ref(id));
        if !only {
            return;
        }
        if !matches!(self.inner.store.load(kind.pool_name(), id).await, Ok(None)) {
            return;
        }
        let pool = self.pools_mut().remove(&kind);
        if let Some(pool) = pool {
            pool.maintenance.stop().await;
        }
        self.inner
            .recorder
            .for_provider(kind.pool_name())
            .remove(id);
        tracing::info!(provider = %kind, account = %id, "last account file removed: pool stopped");
    }

    fn manager_of(&self, kind: ProviderKind, id: &str) -> Result<OAuthKeyManager, KeeperError> {
        let unknown = || KeeperError::UnknownAccount {
            provider: kind,
            id: id.chars().take(128).collect(),
        };
        let m = self.pool(kind).ok_or_else(unknown)?;
        if m.credential_health_info(id).is_none() {
            return Err(unknown());
        }
        Ok(m)
    }

    /// Every account with its health, provider by provider.
    pub fn accounts(&self) -> Vec<AccountView> {
        let pools: Vec<(ProviderKind, OAuthKeyManager)> = self
            .pools()
            .iter()
            .map(|(k, p)| (*k, p.manager.clone()))
            .collect();
        let mut out = Vec::new();
        for (kind, m) in pools {
            for id in m.credential_ids() {
                if let Some(health) = m.credential_health_info(id.as_str()) {
                    out.push(AccountView {
                        provider: kind.pool_name(),
                        health,
                    });
                }
            }
        }
        out
    }

    /// One account.
    ///
    /// # Errors
    /// [`KeeperError::UnknownAccount`].
    pub fn account(&self, kind: ProviderKind, id: &str) -> Result<AccountView, KeeperError> {
        let m = self.manager_of(kind, id)?;
        let health = m
            .credential_health_info(id)
            .ok_or_else(|| KeeperError::UnknownAccount {
                provider: kind,
                id: id.to_owned(),
            })?;
        Ok(AccountView {
            provider: kind.pool_name(),
            health,
        })
    }

    /// Takes an account out of rotation (it is still kept fresh).
    ///
    /// # Errors
    /// [`KeeperError::UnknownAccount`].
    pub fn disable(&self, kind: ProviderKind, id: &str) -> Result<AccountView, KeeperError> {
        self.manager_of(kind, id)?
            .disable(id)
            .map_err(|e| op_error(kind, id, e))?;
        self.account(kind, id)
    }

    /// Puts a disabled account back.
    ///
    /// # Errors
    /// [`KeeperError::UnknownAccount`].
    pub fn enable(&self, kind: ProviderKind, id: &str) -> Result<AccountView, KeeperError> {
        self.manager_of(kind, id)?
            .enable(id)
            .map_err(|e| op_error(kind, id, e))?;
        self.account(kind, id)
    }

    /// Refreshes an account now (its refresh flight: at most one at a time, the file written
    /// back before the pool uses the token).
    ///
    /// # Errors
    /// [`KeeperError::UnknownAccount`], [`KeeperError::Refresh`].
    pub async fn refresh_now(
        &self,
        kind: ProviderKind,
        id: &str,
    ) -> Result<AccountView, KeeperError> {
        let m = self.manager_of(kind, id)?;
        match m.refresh_now(id).await {
            Ok(_) => self.account(kind, id),
            Err(RefreshNowError::UnknownCredential { .. }) => Err(KeeperError::UnknownAccount {
                provider: kind,
                id: id.to_owned(),
            }),
            Err(RefreshNowError::Refresh(e)) => Err(KeeperError::Refresh {
                provider: kind,
                id: id.to_owned(),
                dead_grant: e.is_dead_grant(),
                misconfigured: e.is_misconfiguration(),
                retryable: e.is_retryable(),
            }),
            Err(_) => Err(KeeperError::Refresh {
                provider: kind,
                id: id.to_owned(),
                dead_grant: false,
                misconfigured: false,
                retryable: true,
            }),
        }
    }

    /// Clears what keeps an account waiting: its rate-limit cooldown, request backoff and refresh
    /// backoff ([`OAuthKeyManager::clear_cooldown`]). A dead grant, a misconfiguration or a
    /// disabled account stays.
    ///
    /// # Errors
    /// [`KeeperError::UnknownAccount`].
    pub fn clear_cooldown(
        &self,
        kind: ProviderKind,
        id: &str,
    ) -> Result<CooldownCleared, KeeperError> {
        let m = self.manager_of(kind, id)?;
        match m.clear_cooldown(id) {
            Ok(true) => Ok(CooldownCleared::Cleared),
            Ok(false) => Ok(CooldownCleared::NothingToClear),
            Err(_) => Err(KeeperError::UnknownAccount {
                provider: kind,
                id: id.to_owned(),
            }),
        }
    }

    /// Removes an account: from its pool and its file from the directory. The last account of
    /// a provider takes its pool with it (the pool refuses to remove its last credential).
    ///
    /// # Errors
    /// [`KeeperError::UnknownAccount`], [`KeeperError::Store`].
    pub async fn remove(&self, kind: ProviderKind, id: &str) -> Result<(), KeeperError> {
        let m = self.manager_of(kind, id)?;
        match m.remove_credential(id).await {
            Ok(()) => Ok(()),
            Err(RemoveError::LastCredential { id: cid }) => {
                let _structure = self.inner.structure.lock().await;
                let pool = self.pools_mut().remove(&kind);
                if let Some(pool) = pool {
                    pool.maintenance.stop().await;
                }
                let deleted = self.inner.store.delete(kind.pool_name(), &cid, None).await;
                self.inner
                    .recorder
                    .for_provider(kind.pool_name())
                    .remove(&cid);
                match deleted {
                    Ok(()) | Err(oauth_manager::store::StoreError::NotFound { .. }) => Ok(()),
                    Err(e) => {
                        // The file stays: the pool comes back with it.
                        let _ = self.ensure_pool_locked(kind).await;
                        Err(KeeperError::Store(e))
                    }
                }
            }
            Err(RemoveError::UnknownCredential { .. }) => Err(KeeperError::UnknownAccount {
                provider: kind,
                id: id.to_owned(),
            }),
            Err(RemoveError::Store(e)) => Err(KeeperError::Store(e)),
            Err(_) => Err(KeeperError::UnknownAccount {
                provider: kind,
                id: id.to_owned(),
            }),
        }
    }

    /// Starts a sign-in: returns the URL to open or the code to enter at once; the flow
    /// finishes in the background, writes the account file and adds the account to its pool
    /// (or re-authorizes it, when `account` names an existing one).
    ///
    /// # Errors
    /// [`KeeperError::InvalidAccountId`], [`KeeperError::TooManySignins`],
    /// [`KeeperError::Signin`] when the flow cannot start.
    pub async fn start_signin(
        &self,
        kind: ProviderKind,
        account: Option<&str>,
    ) -> Result<SigninStarted, KeeperError> {
        let serial = random_hex(16)?;
        let account = match account {
            Some(a) => valid_account_id(a)?,
            None => valid_account_id(&format!("{}-{}", kind.config_name(), &serial[..8]))?,
        };
        {
            let mut signins = self
                .inner
                .signins
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let pending = signins
                .values()
                .filter(|(_, s)| matches!(s, SigninStatus::Pending { .. }))
                .count();
            if pending >= MAX_PENDING_SIGNINS {
                return Err(KeeperError::TooManySignins);
            }
            let n = self
                .inner
                .signin_serial
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            signins.insert(
                serial.clone(),
                (
                    n,
                    SigninStatus::Pending {
                        provider: kind.pool_name().to_owned(),
                        account: account.to_string(),
                    },
                ),
            );
        }
        let overrides = self
            .inner
            .config
            .providers
            .get(&kind)
            .cloned()
            .unwrap_or_default();
        let secret = self
            .inner
            .secrets
            .get(&kind)
            .map(|s| s.expose_secret().to_owned());
        let flow = kind.signin_flow(&overrides, secret);
        let options = SigninOptions::default()
            .with_redirect_timeout(self.inner.config.signin_timeout)
            .with_clock(Arc::clone(&self.inner.clock));
        let pending = match PendingSignin::start(flow, self.inner.http.clone(), options).await {
            Ok(p) => p,
            Err(e) => {
                self.set_signin(&serial, None);
                return Err(KeeperError::Signin {
                    provider: kind,
                    source: e,
                });
            }
        };
        let prompt = pending.prompt();
        let this = self.clone();
        let (sid, aid) = (serial.clone(), account.clone());
        let timeout = self.inner.config.signin_timeout.saturating_mul(2);
        tokio::spawn(async move {
            let finished = tokio::time::timeout(timeout, pending.finish(aid.as_str())).await;
            let status = match finished {
                Ok(Ok(credential)) => match this.install(kind, credential).await {
                    Ok(()) => SigninStatus::Done {
                        provider: kind.pool_name().to_owned(),
                        account: aid.to_string(),
                    },
                    Err(e) => failed(kind, &aid, e.to_string()),
                },
                Ok(Err(e)) => failed(kind, &aid, e.to_string()),
                Err(_) => failed(kind, &aid, "the sign-in timed out".to_owned()),
            };
            if let SigninStatus::Failed { reason, .. } = &status {
                tracing::warn!(provider = %kind, account = %aid, reason = %reason, "sign-in failed");
            } else {
                tracing::info!(provider = %kind, account = %aid, "signed in");
            }
            this.set_signin(&sid, Some(status));
        });
        Ok(SigninStarted {
            signin: serial,
            account,
            provider: kind,
            prompt,
        })
    }

    fn set_signin(&self, sid: &str, status: Option<SigninStatus>) {
        let mut signins = self
            .inner
            .signins
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match status {
            None => {
                signins.remove(sid);
            }
            Some(s) => {
                if let Some(entry) = signins.get_mut(sid) {
                    entry.1 = s;
                }
            }
        }
        while signins.len() > MAX_SIGNIN_RECORDS {
            let oldest = signins
                .iter()
                .filter(|(_, (_, s))| !matches!(s, SigninStatus::Pending { .. }))
                .min_by_key(|(_, (n, _))| *n)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => signins.remove(&k),
                None => break,
            };
        }
    }

    /// The state of a sign-in.
    pub fn signin_status(&self, signin: &str) -> Option<SigninStatus> {
        self.inner
            .signins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(signin)
            .map(|(_, s)| s.clone())
    }

    /// Writes a signed-in credential: into its pool (which writes the file), re-authorizing an
    /// existing account of that id, or into the directory and a new pool.
    ///
    /// # Errors
    /// [`KeeperError::Store`], [`KeeperError::Pool`], [`KeeperError::Install`].
    pub async fn install(
        &self,
        kind: ProviderKind,
        credential: Credential,
    ) -> Result<(), KeeperError> {
        let _structure = self.inner.structure.lock().await;
        if let Some(pool) = self.pool(kind) {
            return match pool.add_credential(credential.clone()).await {
                Ok(()) => Ok(()),
                Err(oauth_manager::AddCredentialError::DuplicateId { .. }) => pool
                    .reauthorize(credential)
                    .await
                    .map_err(|e| KeeperError::Install {
                        provider: kind,
                        reason: e.to_string(),
                    }),
                Err(e) => Err(KeeperError::Install {
                    provider: kind,
                    reason: e.to_string(),
                }),
            };
        }
        self.inner
            .store
            .save(kind.pool_name(), &credential, None)
            .await
            .map_err(KeeperError::Store)?;
        self.ensure_pool_locked(kind).await?;
        Ok(())
    }

    /// Starts the HTTP server on the configured address.
    ///
    /// # Errors
    /// [`KeeperError::Bind`].
    pub async fn serve(&self) -> Result<RunningKeeper, KeeperError> {
        let listen = self.inner.config.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| KeeperError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| KeeperError::Bind {
            addr: listen,
            source,
        })?;
        if self.inner.token.is_none() {
            tracing::warn!(%addr, "no token_file: the management API refuses every request");
        }
        let (stop, stopped) = watch::channel(false);
        let watcher = self.spawn_watcher(stopped.clone());
        let app = crate::api::router(self.clone());
        let mut server_stop = stopped;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = server_stop.changed().await;
                })
                .await;
        });
        tracing::info!(%addr, "keeper listening");
        Ok(RunningKeeper {
            keeper: self.clone(),
            addr,
            stop,
            server: Some(server),
            watcher,
        })
    }

    /// Stops every pool's maintenance.
    pub async fn stop_pools(&self) {
        let pools: Vec<Pool> = std::mem::take(&mut *self.pools_mut())
            .into_values()
            .collect();
        for p in pools {
            p.maintenance.stop().await;
        }
    }
}

fn failed(kind: ProviderKind, account: &CredentialId, reason: String) -> SigninStatus {
    SigninStatus::Failed {
        provider: kind.pool_name().to_owned(),
        account: account.to_string(),
        reason,
    }
}

fn op_error(kind: ProviderKind, id: &str, _: UnknownCredential) -> KeeperError {
    KeeperError::UnknownAccount {
        provider: kind,
        id: id.to_owned(),
    }
}

/// Account ids become file names: letters, digits, `.`, `_`, `-`, up to 100 characters, not
/// starting with a dot.
fn valid_account_id(id: &str) -> Result<CredentialId, KeeperError> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(KeeperError::InvalidAccountId);
    }
    CredentialId::new(id).map_err(|_| KeeperError::InvalidAccountId)
}

fn random_hex(bytes: usize) -> Result<String, KeeperError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|_| KeeperError::Random)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A keeper serving HTTP. [`shutdown`](Self::shutdown) stops the server, the directory watch
/// and every pool's maintenance.
#[derive(Debug)]
pub struct RunningKeeper {
    keeper: Keeper,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    watcher: Option<JoinHandle<()>>,
}

impl RunningKeeper {
    /// The address it listens on (the real port when the configuration said `:0`).
    pub const fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The keeper.
    pub const fn keeper(&self) -> &Keeper {
        &self.keeper
    }

    /// Waits until the server ends (it ends on [`shutdown`](Self::shutdown) only).
    pub async fn wait(&mut self) {
        if let Some(server) = self.server.as_mut() {
            let _ = server.await;
            self.server = None;
        }
    }

    /// Stops serving and stops the pools.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        if let Some(w) = self.watcher.take() {
            let _ = w.await;
        }
        self.keeper.stop_pools().await;
    }
}

impl Drop for RunningKeeper {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
