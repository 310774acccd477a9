//! The builder: validates a configuration, loads credentials, assembles the components.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use oauth_core::{Clock, Credential, CredentialId, HealthPolicy};
use oauth_metrics::{InMemoryRecorder, MetricsRecorder, NoopRecorder};
use oauth_refresh::{NoopRefresher, RefreshCoordinator, RefreshStrategy, Refresher};
use oauth_rotation::{NoopHooks, RotationHooks, RotationPolicy, RotationTracker};
use oauth_store::{CredentialStore, StoreError, Version, Versioned};
use oauth_webhooks::{Monitor, MonitoringConfig, Notifier};

use crate::clock::Timeline;
use crate::error::{BuildError, SettingsError};
use crate::manager::{Inner, OAuthKeyManager};
use crate::provider::{CredentialProvider, NoProvider};
use crate::refreshing::{Refreshing, StoreOutage};
use crate::rotating::Rotating;
use crate::selection::{MAX_WEIGHT, Pool, Selector, Slot, check_weight, seed_of};
use crate::settings::{FailoverSettings, Settings};
use crate::telemetry::Telemetry;

/// Builds an [`OAuthKeyManager`]. Everything but the provider name and the credentials has a
/// default: no refresher (tokens are used until they expire), the default refresh strategy, health
/// policy and rotation policy, in-memory metrics only, monitoring off, the system clock.
///
/// Setters take any implementation of the part's trait (`.refresher(HttpRefresher::…)`); the
/// `*_arc` forms take a shared one (`Arc<dyn Refresher>`).
#[must_use = "call build() to get a manager"]
pub struct OAuthKeyManagerBuilder {
    provider: String,
    credentials: Vec<Credential>,
    store: Option<Arc<dyn CredentialStore>>,
    store_outage: Option<StoreOutage>,
    credential_provider: Arc<dyn CredentialProvider>,
    refresher: Arc<dyn Refresher>,
    strategy: RefreshStrategy,
    health: HealthPolicy,
    rotation: RotationPolicy,
    hooks: Arc<dyn RotationHooks>,
    metrics: Arc<dyn MetricsRecorder>,
    notifier: Option<Arc<dyn Notifier>>,
    monitoring: Option<MonitoringConfig>,
    /// `None`: the default [`CoarseClock`](crate::CoarseClock), read without dynamic dispatch.
    clock: Option<Arc<dyn Clock>>,
    failover: FailoverSettings,
    max_concurrent_refreshes: Option<usize>,
    refresh_timeout: Option<Duration>,
    usage_window: Option<Duration>,
    weights: Vec<(String, u32)>,
    seed: u64,
}

impl fmt::Debug for OAuthKeyManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthKeyManagerBuilder")
            .field("provider", &self.provider)
            .field(
                "credentials",
                &self.credentials.iter().map(|c| &c.id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl OAuthKeyManagerBuilder {
    pub(crate) fn new(provider: String) -> Self {
        Self {
            provider,
            credentials: Vec::new(),
            store: None,
            store_outage: None,
            credential_provider: Arc::new(NoProvider),
            refresher: Arc::new(NoopRefresher),
            strategy: RefreshStrategy::default(),
            health: HealthPolicy::default(),
            rotation: RotationPolicy::default(),
            hooks: Arc::new(NoopHooks),
            metrics: Arc::new(NoopRecorder),
            notifier: None,
            monitoring: None,
            clock: None,
            failover: FailoverSettings::default(),
            max_concurrent_refreshes: None,
            refresh_timeout: None,
            usage_window: None,
            weights: Vec::new(),
            seed: 0x5eed,
        }
    }

    /// Adds credentials to the pool. With a store, stored credentials win over these (the store
    /// may hold a rotated refresh token) unless one of these holds a newer grant (see
    /// [`store`](Self::store)); these seed the store when it lacks them.
    pub fn credentials(mut self, credentials: impl IntoIterator<Item = Credential>) -> Self {
        self.credentials.extend(credentials);
        self
    }

    /// Adds one credential.
    pub fn credential(mut self, credential: Credential) -> Self {
        self.credentials.push(credential);
        self
    }

    /// Persists credentials in `store`: the pool is loaded from it, refreshed credentials are saved
    /// to it before use (compare-and-set on its versions), and its cross-process refresh lock, if it
    /// has one, guards every refresh.
    ///
    /// At build, a stored credential wins over a supplied one with the same id, except when the
    /// supplied one holds another grant that is newer: refreshed later, or its access token
    /// expires later (someone signed in again). A supplied credential with an old or unknown
    /// expiry never overwrites the store: it may hold a refresh token the store's copy replaced.
    pub fn store(self, store: impl CredentialStore + 'static) -> Self {
        self.store_arc(Arc::new(store))
    }

    /// [`store`](Self::store) with a shared store.
    pub fn store_arc(mut self, store: Arc<dyn CredentialStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// What a refresh does while the store cannot be used. Default:
    /// [`StoreOutage::FailClosed`] for a store shared between processes through a change feed
    /// (PostgreSQL, a watched account directory: refreshing without its lock and re-read could
    /// present a token another process already exchanged), [`StoreOutage::RefreshInMemory`] for
    /// the others.
    pub fn store_outage(mut self, outage: StoreOutage) -> Self {
        self.store_outage = Some(outage);
        self
    }

    /// Reads credentials from `provider` and writes refreshed ones back to it.
    pub fn credential_provider(self, provider: impl CredentialProvider + 'static) -> Self {
        self.credential_provider_arc(Arc::new(provider))
    }

    /// [`credential_provider`](Self::credential_provider) with a shared provider.
    pub fn credential_provider_arc(mut self, provider: Arc<dyn CredentialProvider>) -> Self {
        self.credential_provider = provider;
        self
    }

    /// The token refresher (default: none, the Go `NoOpRefreshFunc`).
    pub fn refresher(self, refresher: impl Refresher + 'static) -> Self {
        self.refresher_arc(Arc::new(refresher))
    }

    /// [`refresher`](Self::refresher) with a shared refresher.
    pub fn refresher_arc(mut self, refresher: Arc<dyn Refresher>) -> Self {
        self.refresher = refresher;
        self
    }

    /// When to refresh (default: [`RefreshStrategy::default`]).
    pub fn refresh_strategy(mut self, strategy: RefreshStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Bounds every refresh flight (default
    /// [`DEFAULT_FLIGHT_TIMEOUT`](oauth_refresh::DEFAULT_FLIGHT_TIMEOUT)): a refresher or store
    /// that never answers cannot block a credential's callers longer.
    pub fn refresh_timeout(mut self, timeout: Duration) -> Self {
        self.refresh_timeout = Some(timeout);
        self
    }

    /// Health thresholds and backoff schedules (default: the Go constants).
    pub fn health_policy(mut self, policy: HealthPolicy) -> Self {
        self.health = policy;
        self
    }

    /// The rotation policy (default: disabled, 30 d interval, 7 d grace).
    pub fn rotation_policy(mut self, policy: RotationPolicy) -> Self {
        self.rotation = policy;
        self
    }

    /// Rotation hooks (called with no lock held, so they may call the manager).
    pub fn rotation_hooks(self, hooks: impl RotationHooks + 'static) -> Self {
        self.rotation_hooks_arc(Arc::new(hooks))
    }

    /// [`rotation_hooks`](Self::rotation_hooks) with shared hooks.
    pub fn rotation_hooks_arc(mut self, hooks: Arc<dyn RotationHooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// The application's metrics recorder (e.g. `PrometheusRecorder`); the manager always keeps
    /// its own in-memory one for its reports.
    pub fn metrics(self, recorder: impl MetricsRecorder + 'static) -> Self {
        self.metrics_arc(Arc::new(recorder))
    }

    /// [`metrics`](Self::metrics) with a shared recorder.
    pub fn metrics_arc(mut self, recorder: Arc<dyn MetricsRecorder>) -> Self {
        self.metrics = recorder;
        self
    }

    /// The window of the in-memory recorder's recent failure rate (default 5 min).
    pub fn usage_window(mut self, window: Duration) -> Self {
        self.usage_window = Some(window);
        self
    }

    /// Where alerts go instead of the signed webhooks a `webhook_url` configures: the
    /// application's own [`Notifier`]. It is told every monitoring configuration
    /// ([`Notifier::reconfigure`]). Without [`monitoring`](Self::monitoring), plugging one in turns
    /// monitoring on with the default rules.
    pub fn notifier(self, notifier: impl Notifier + 'static) -> Self {
        self.notifier_arc(Arc::new(notifier))
    }

    /// [`notifier`](Self::notifier) with a shared notifier.
    pub fn notifier_arc(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Turns monitoring on: the alert rules, which events are sent, and, with a `webhook_url`,
    /// signed webhooks to it (unless a [`notifier`](Self::notifier) takes them).
    pub fn monitoring(mut self, config: MonitoringConfig) -> Self {
        self.monitoring = Some(config);
        self
    }

    /// The clock (default: [`CoarseClock`](crate::CoarseClock), the system clock read cheaply on
    /// the hot path).
    pub fn clock(self, clock: impl Clock + 'static) -> Self {
        self.clock_arc(Arc::new(clock))
    }

    /// [`clock`](Self::clock) with a shared clock.
    pub fn clock_arc(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Failover settings (default: `min(n, 3)` attempts, no waiting, no deadline).
    pub fn failover(mut self, failover: FailoverSettings) -> Self {
        self.failover = failover;
        self
    }

    /// Bounds the refreshes running at once across credentials.
    pub fn max_concurrent_refreshes(mut self, n: usize) -> Self {
        self.max_concurrent_refreshes = Some(n);
        self
    }

    /// Gives credential `id` a weight (see [`OAuthKeyManager::set_weight`]).
    pub fn weight(mut self, id: impl Into<String>, weight: u32) -> Self {
        self.weights.push((id.into(), weight));
        self
    }

    /// Seeds the backoff jitter (deterministic tests).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates the configuration, loads credentials from the store and provider, and builds the
    /// manager. Spawns nothing.
    ///
    /// # Errors
    /// [`BuildError`]: an empty pool, duplicate ids, nonsense settings, a refresher that cannot
    /// work as configured, or a store/provider failure.
    pub async fn build(self) -> Result<OAuthKeyManager, BuildError> {
        if self.provider.trim().is_empty() {
            return Err(BuildError::EmptyProvider);
        }
        let settings = Settings {
            strategy: self.strategy,
            health: self.health,
            failover: self.failover,
        };
        settings.validate()?;
        self.rotation
            .validate()
            .map_err(SettingsError::RotationPolicy)?;
        if let Some(timeout) = self.refresh_timeout
            && timeout.is_zero()
        {
            return Err(
                SettingsError::Failover("refresh_timeout must be greater than zero").into(),
            );
        }
        let monitor = match self.notifier {
            Some(notifier) => Monitor::with_notifier(self.monitoring, notifier),
            None => default_monitor(self.monitoring),
        }
        .map_err(SettingsError::Monitoring)?;

        let mut seen = HashSet::new();
        for c in &self.credentials {
            if !seen.insert(c.id.clone()) {
                return Err(BuildError::DuplicateId {
                    provider: self.provider,
                    id: c.id.clone(),
                });
            }
        }
        let mut initial: Vec<(Credential, u64)> =
            self.credentials.into_iter().map(|c| (c, 0)).collect();
        for c in self.credential_provider.credentials(&self.provider).await? {
            if seen.insert(c.id.clone()) {
                initial.push((c, 0));
            }
        }
        let store = match self.store {
            Some(store) => {
                initial = merge_with_store(store.as_ref(), &self.provider, initial).await?;
                store
            }
            None => Arc::new(NoStore),
        };
        if initial.is_empty() {
            return Err(BuildError::EmptyPool {
                provider: self.provider,
            });
        }

        let usage = match self.usage_window {
            Some(w) => InMemoryRecorder::new().with_window(w),
            None => InMemoryRecorder::new(),
        };
        let telemetry = Telemetry::new(self.provider.clone(), usage, self.metrics, monitor);
        let mut tracker = RotationTracker::new(self.rotation);
        let mut parts = Vec::with_capacity(initial.len());
        for (cred, version) in initial {
            if tracker.track(cred.id.clone(), cred.created_at).is_err() {
                return Err(BuildError::DuplicateId {
                    provider: self.provider,
                    id: cred.id,
                });
            }
            let (usage, recorder) = telemetry.register(&cred.id);
            parts.push((cred, version, usage, recorder));
        }
        // The slots are allocated together, after every credential's telemetry: the slots a pick
        // walks then sit side by side in the heap, not one every 1.5 KB between series, and a
        // pool of 10,000 spans a few MiB of pages instead of 15 (fewer TLB misses, which huge
        // pages showed to cost about 20 ns a call there). Pinned A/B on an Intel Xeon,
        // `execute_with_failover` with Prometheus over 10,000 credentials: 205-218 -> 191-203 ns
        // (`next_credential` gained 4 ns in one session, nothing measurable in a later one).
        // A vector of its own: collecting from `parts` would reuse its allocation in place, 42
        // times larger than the slots' pointers need (measured: 336 more bytes per credential).
        let mut slots = Vec::with_capacity(parts.len());
        for (cred, version, usage, recorder) in parts {
            let seed = self.seed ^ seed_of(cred.id.as_str());
            slots.push(Arc::new(Slot::new(cred, version, seed, usage, recorder)));
        }
        for (id, weight) in &self.weights {
            check_weight(id, *weight)?;
            let slot = slots.iter().find(|s| s.id == id.as_str()).ok_or_else(|| {
                SettingsError::Weight {
                    id: id.clone(),
                    weight: *weight,
                    max: MAX_WEIGHT,
                }
            })?;
            slot.set_weight(*weight);
        }
        let mut coordinator = match self.max_concurrent_refreshes {
            Some(n) => RefreshCoordinator::with_max_concurrent(n),
            None => RefreshCoordinator::new(),
        };
        if let Some(timeout) = self.refresh_timeout {
            coordinator = coordinator.with_timeout(timeout);
        }
        let outage = self.store_outage.unwrap_or(if store.changes().is_some() {
            StoreOutage::FailClosed
        } else {
            StoreOutage::RefreshInMemory
        });
        let time = self.clock.map_or_else(Timeline::coarse, Timeline::new);
        let selection = Selector::new(Pool::new(slots), time.now_ms());
        selection.set_failover(&settings.failover);
        let inner = Inner {
            refreshing: Refreshing::new(
                self.provider.clone(),
                self.refresher,
                coordinator,
                store,
                self.credential_provider,
                outage,
            ),
            selection,
            provider: self.provider,
            time,
            settings: ArcSwap::from_pointee(settings),
            telemetry,
            rotation: Rotating::new(tracker, self.hooks),
            structure: tokio::sync::Mutex::new(()),
            seed: self.seed,
            gauges: std::sync::OnceLock::new(),
        };
        let manager = OAuthKeyManager {
            inner: Arc::new(inner),
        };
        let gauges = manager.gauge_source();
        manager
            .inner
            .telemetry
            .attach_gauges(Arc::downgrade(&gauges));
        let _ = manager.inner.gauges.set(gauges);
        // A credential another replica disabled (or found dead) before this one started is out
        // of rotation from the first call.
        manager.adopt_shared_states().await;
        Ok(manager)
    }
}

#[cfg(feature = "webhooks")]
fn default_monitor(
    config: Option<MonitoringConfig>,
) -> Result<Monitor, oauth_webhooks::ConfigError> {
    Monitor::new(config)
}

#[cfg(not(feature = "webhooks"))]
fn default_monitor(
    config: Option<MonitoringConfig>,
) -> Result<Monitor, oauth_webhooks::ConfigError> {
    Monitor::with_notifier(config, Arc::new(oauth_webhooks::NoopNotifier))
}

/// Stored credentials win over supplied ones, except a supplied one holding another, newer grant
/// (see [`OAuthKeyManagerBuilder::store`]); supplied ones the store lacks are saved to it.
async fn merge_with_store(
    store: &dyn CredentialStore,
    provider: &str,
    supplied: Vec<(Credential, u64)>,
) -> Result<Vec<(Credential, u64)>, BuildError> {
    let stored = store.load_all(provider).await?;
    let mut out: Vec<(Credential, u64)> =
        stored.into_iter().map(|v| (v.value, v.version)).collect();
    for (cred, _) in supplied {
        match out.iter_mut().find(|(c, _)| c.id == cred.id) {
            Some((kept, version)) => {
                if supersedes(&cred, kept) {
                    *version = store.save(provider, &cred, Some(*version)).await?;
                    *kept = cred;
                }
            }
            None => {
                let version = store.save(provider, &cred, None).await?;
                out.push((cred, version));
            }
        }
    }
    Ok(out)
}

/// True when `supplied` holds another grant than `stored` and is evidently the newer one: it was
/// refreshed later, or its access token expires later (a fresh sign-in). An unknown expiry is never
/// evidence.
fn supersedes(supplied: &Credential, stored: &Credential) -> bool {
    if !supplied.refresh_token_differs(stored) {
        return false; // the same grant: the store's copy has the bookkeeping
    }
    let refreshed_later = match (supplied.last_refresh, stored.last_refresh) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        _ => false,
    };
    let expires_later = matches!(
        (supplied.expires_at, stored.expires_at),
        (Some(a), Some(b)) if a > b
    );
    refreshed_later || expires_later
}

/// The store used when none is configured: it keeps nothing (version 0 means "not stored").
#[derive(Debug, Clone, Copy, Default)]
struct NoStore;

#[async_trait]
impl CredentialStore for NoStore {
    async fn load_all(&self, _provider: &str) -> Result<Vec<Versioned<Credential>>, StoreError> {
        Ok(Vec::new())
    }

    async fn load(
        &self,
        _provider: &str,
        _id: &CredentialId,
    ) -> Result<Option<Versioned<Credential>>, StoreError> {
        Ok(None)
    }

    async fn save(
        &self,
        _provider: &str,
        _credential: &Credential,
        _expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        Ok(0)
    }

    async fn delete(
        &self,
        _provider: &str,
        _id: &CredentialId,
        _expected: Option<Version>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn versions(
        &self,
        _provider: &str,
    ) -> Result<BTreeMap<CredentialId, Version>, StoreError> {
        Ok(BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool's list of slots holds no room beyond its slots: a list collected in place from
    /// the builder's staging vector kept that vector's allocation, 336 bytes a credential
    /// (measured by the `footprint` bench: 1,351 bytes per credential instead of 1,015).
    #[tokio::test]
    async fn the_pool_keeps_no_spare_room_for_its_slots() {
        let now = chrono::Utc::now();
        let pool = OAuthKeyManager::builder("p")
            .credentials((0..100).map(|i| {
                Credential::new(format!("c{i}"), format!("token-{i}"), now).expect("valid")
            }))
            .build()
            .await
            .expect("builds");
        let slots = pool.inner.selection.slots();
        assert_eq!(slots.len(), 100);
        assert_eq!(slots.capacity(), 100);
    }
}
