//! `OAuthKeyManager`: one cheaply cloneable handle over the pool's components. Every method here
//! delegates to one of them:
//!
//! - [`Selector`] (`selection.rs`): slots, the available snapshot, cursors, weights;
//! - [`Refreshing`] (`refreshing.rs`): the refresher, refresh flights, the store and credential
//!   provider, pending saves;
//! - [`Telemetry`] (`telemetry.rs`): events, metrics recorders, monitoring;
//! - [`Rotating`] (`rotating.rs`): the rotation state machine and its hooks.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use oauth_core::{
    ClassifyFailure, Credential, CredentialId, Event, EventKind, FailureKind, HealthChange,
    HealthPolicy,
};
use oauth_metrics::RequestOutcome;
use oauth_refresh::{RefreshStrategy, Refresher};
use oauth_rotation::RotationPolicy;
use oauth_webhooks::MonitoringConfig;

use crate::clock::Timeline;
use crate::error::{
    AddCredentialError, NoCredentialAvailable, ReauthorizeError, RemoveError, SetWeightError,
    SettingsError, UnknownCredential,
};
use crate::provider::CredentialProvider;
use crate::refreshing::Refreshing;
use crate::rotating::Rotating;
use crate::selection::{Ahead, Now, Republished, Selector, Slot};
use crate::settings::{FailoverSettings, Settings};
use crate::telemetry::Telemetry;

/// A pool of OAuth credentials for one AI provider: round-robin selection over the available ones,
/// classified failover, health tracking, single-flight refresh, rotation, metrics and alerts.
///
/// One concrete, cheaply cloneable, `Send + Sync` type: clones share the pool. Building it spawns
/// nothing; background work is [`spawn_maintenance`](Self::spawn_maintenance), which the application
/// starts and stops.
///
/// Method names follow the Go `oauthmanager` package where it has the operation (see
/// `docs/parity.md`); a few keep Go's shape on purpose and say so in their docs.
#[derive(Clone)]
pub struct OAuthKeyManager {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for OAuthKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthKeyManager")
            .field("provider", &self.inner.provider)
            .field("credentials", &self.credential_ids())
            .finish_non_exhaustive()
    }
}

/// The components. Each owns its state behind its own interface; `Inner` only holds them.
pub(crate) struct Inner {
    pub(crate) provider: String,
    pub(crate) time: Timeline,
    pub(crate) settings: ArcSwap<Settings>,
    pub(crate) selection: Selector,
    pub(crate) refreshing: Refreshing,
    pub(crate) telemetry: Telemetry,
    pub(crate) rotation: Rotating,
    /// Serializes structural changes (adding, removing and marking credentials), held across the
    /// store write they make.
    pub(crate) structure: tokio::sync::Mutex<()>,
    pub(crate) seed: u64,
    /// The scrape-time gauges handed (weakly) to the recorder; kept alive here.
    pub(crate) gauges: std::sync::OnceLock<Arc<dyn oauth_metrics::GaugeSource>>,
}

impl OAuthKeyManager {
    /// Starts building a manager for `provider` (a name such as `"gemini"`, used in errors, events
    /// and metric labels).
    pub fn builder(provider: impl Into<String>) -> crate::OAuthKeyManagerBuilder {
        crate::OAuthKeyManagerBuilder::new(provider.into())
    }

    /// The provider name.
    pub fn provider(&self) -> &str {
        &self.inner.provider
    }

    /// Wall time.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.inner.time.wall()
    }

    pub(crate) fn settings(&self) -> arc_swap::Guard<Arc<Settings>> {
        self.inner.settings.load()
    }

    pub(crate) fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        self.inner.selection.get(id)
    }

    pub(crate) fn slot_or_err(&self, id: &str) -> Result<Arc<Slot>, UnknownCredential> {
        self.slot(id).ok_or_else(|| UnknownCredential::new(id))
    }

    /// The next available credential, round-robin (Go `GetNextCredential`): a read-only view of the
    /// pool's current copy, which a refresh replaces but never mutates (Go handed out a pointer
    /// into its state). As in Go, one transient failure is enough to skip a credential here;
    /// [`execute_with_failover`](Self::execute_with_failover) does better (see its docs).
    ///
    /// # Errors
    /// [`NoCredentialAvailable`], saying when the first credential is available again.
    pub fn next_credential(&self) -> Result<CredentialLease, NoCredentialAvailable> {
        let now = Now::new(&self.inner.time);
        self.inner
            .selection
            .select(&now, false, Ahead::Slots, |slot| {
                CredentialLease(slot.lease())
            })
            .map_err(|none| self.unavailable(none.next_available_at))
    }

    pub(crate) fn unavailable(&self, next: Option<DateTime<Utc>>) -> NoCredentialAvailable {
        NoCredentialAvailable {
            provider: self.inner.provider.clone(),
            total: self.inner.selection.len(),
            next_available_at: next.map(|t| self.inner.time.to_wall(t)),
        }
    }

    /// Copies of all credentials (Go `GetCredentials`).
    pub fn credentials(&self) -> Vec<Credential> {
        self.inner
            .selection
            .slots()
            .iter()
            .map(|s| (*s.credential()).clone())
            .collect()
    }

    /// A copy of one credential.
    pub fn credential(&self, id: &str) -> Option<Credential> {
        self.slot(id).map(|s| (*s.credential()).clone())
    }

    /// The ids of all credentials, in pool order.
    pub fn credential_ids(&self) -> Vec<CredentialId> {
        self.inner
            .selection
            .slots()
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }

    /// Reports a successful call made with credential `id` outside
    /// [`execute_with_failover`](Self::execute_with_failover) (Go `ReportSuccess`). Unknown ids are
    /// ignored, as in Go.
    pub fn report_success(&self, id: &str) {
        if let Some(slot) = self.slot(id) {
            let now = self.inner.time.health();
            let (change, published) = slot.record_success(now, now.timestamp_millis());
            self.after_health_change(&slot, change, published);
        }
    }

    /// Reports a failed call made with credential `id` (Go `ReportFailure`), classified by the
    /// error's [`ClassifyFailure`] implementation (an error that says nothing is transient).
    pub fn report_failure(&self, id: &str, error: &(impl ClassifyFailure + ?Sized)) {
        self.report_failure_kind(id, error.failure_kind());
    }

    /// Reports a failed call with an explicit classification.
    pub fn report_failure_kind(&self, id: &str, kind: FailureKind) {
        if let Some(slot) = self.slot(id) {
            let now = self.inner.time.health();
            self.record_failure_since(&slot, kind, now);
        }
    }

    /// Records the failure of a request that started at `started` (on the health timeline;
    /// requests in flight when an earlier failure was recorded fail together with it, see
    /// [`CredentialHealth::record_failure_since`](oauth_core::CredentialHealth::record_failure_since)).
    pub(crate) fn record_failure_since(
        &self,
        slot: &Arc<Slot>,
        kind: FailureKind,
        started: DateTime<Utc>,
    ) {
        let now = self.inner.time.health().max(started);
        let settings = self.settings();
        let (change, published) = slot.with_health(now, |h| {
            h.record_failure_since(kind, started, &settings.health, now)
        });
        self.after_health_change(slot, change, published);
    }

    /// Records one request's metrics for credential `id` (Go `RecordRequest`). Unknown ids are
    /// recorded in the in-memory counters too (Go parity), within their bound on distinct ids; no
    /// Prometheus series is created for them.
    pub fn record_request(
        &self,
        id: &str,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
    ) {
        let now = self.now();
        match self.slot(id) {
            Some(slot) => {
                slot.record_request(tokens, latency, outcome, now, now.timestamp_millis());
            }
            None => {
                if let Ok(id) = CredentialId::new(id) {
                    self.inner
                        .telemetry
                        .record_unknown_request(&id, tokens, latency, outcome, now);
                }
            }
        }
    }

    /// Gives a credential `weight` times the share of traffic of a weight-1 credential (1 to 16;
    /// default 1). Round-robin then interleaves the credentials in proportion (stride
    /// scheduling), and the load-aware selections draw their candidates in proportion too. Useful
    /// when accounts have different plan limits.
    ///
    /// # Errors
    /// [`SetWeightError`]: an unknown id, or a weight out of range.
    pub fn set_weight(&self, id: &str, weight: u32) -> Result<(), SetWeightError> {
        let slot = self.slot_or_err(id)?;
        crate::selection::check_weight(id, weight)?;
        slot.set_weight(weight);
        self.inner.selection.rebuild(self.inner.time.now_ms());
        Ok(())
    }

    /// Takes a credential out of rotation until [`enable`](Self::enable). With a store shared by
    /// several processes (one with a change feed), the others take it out of rotation too.
    ///
    /// # Errors
    /// [`UnknownCredential`].
    pub fn disable(&self, id: &str) -> Result<(), UnknownCredential> {
        let slot = self.slot_or_err(id)?;
        let ((), published) = slot.with_health(self.inner.time.health(), |h| h.disable());
        self.after_health_change(&slot, None, published);
        self.inner.refreshing.publish_state(
            &slot.id,
            oauth_store::SharedState::Disabled,
            None,
            self.now(),
        );
        self.emit(EventKind::Disabled {
            credential: slot.id.clone(),
        });
        Ok(())
    }

    /// Ends a credential's rate-limit cooldown, request backoff and refresh backoff now (an
    /// operator's "clear cooldown": the account's limit was lifted, or the outage is over).
    /// Returns whether anything was cleared. A dead grant, a misconfiguration or disabling stays.
    ///
    /// # Errors
    /// [`UnknownCredential`].
    pub fn clear_cooldown(&self, id: &str) -> Result<bool, UnknownCredential> {
        let slot = self.slot_or_err(id)?;
        let now = self.inner.time.health();
        let (cleared, published) = slot.with_health(now, |h| h.clear_cooldown(now));
        self.after_health_change(&slot, cleared.then_some(HealthChange::Recovered), published);
        Ok(cleared)
    }

    /// Puts a disabled credential back into rotation (in the other processes sharing the store
    /// too).
    ///
    /// # Errors
    /// [`UnknownCredential`].
    pub fn enable(&self, id: &str) -> Result<(), UnknownCredential> {
        let slot = self.slot_or_err(id)?;
        let ((), published) = slot.with_health(self.inner.time.health(), |h| h.enable());
        self.after_health_change(&slot, None, published);
        self.inner.refreshing.publish_state(
            &slot.id,
            oauth_store::SharedState::Enabled,
            None,
            self.now(),
        );
        self.emit(EventKind::Enabled {
            credential: slot.id.clone(),
        });
        Ok(())
    }

    /// Installs re-authorized tokens for a credential that needed re-authorization (or any new
    /// tokens an operator obtained), persists them, and puts the credential back into rotation.
    /// Runs inside the credential's refresh flight, so a refresh on the old grant cannot overwrite
    /// the new tokens.
    ///
    /// # Errors
    /// [`ReauthorizeError`]: unknown id, or persisting failed (the tokens are then not installed).
    pub async fn reauthorize(&self, credential: Credential) -> Result<(), ReauthorizeError> {
        let slot = self.slot(credential.id.as_str()).ok_or_else(|| {
            ReauthorizeError::UnknownCredential {
                id: credential.id.to_string(),
            }
        })?;
        self.inner
            .refreshing
            .reauthorize(self.clone(), slot, credential)
            .await
    }

    /// Replaces the refresher (a configuration fix): credentials the old one marked
    /// misconfigured are cleared and refreshed again on their next use; no sign-in is needed.
    pub fn set_refresher(&self, refresher: impl Refresher + 'static) {
        self.set_refresher_arc(Arc::new(refresher));
    }

    /// [`set_refresher`](Self::set_refresher) with a shared refresher.
    pub fn set_refresher_arc(&self, refresher: Arc<dyn Refresher>) {
        self.inner.refreshing.set_refresher(refresher);
        self.inner.selection.forget_usable_until();
        let now = self.inner.time.health();
        for slot in self.inner.selection.slots().iter() {
            let (cleared, published) = slot.with_health(now, |h| h.clear_misconfigured());
            if cleared {
                self.after_health_change(slot, Some(HealthChange::Recovered), published);
            }
        }
    }

    /// Adds a credential to the pool (and to the store, if any).
    ///
    /// # Errors
    /// [`AddCredentialError`]: the id is taken, the rotation tracker refused, or the store
    /// failed.
    pub async fn add_credential(&self, credential: Credential) -> Result<(), AddCredentialError> {
        let _structure = self.inner.structure.lock().await;
        if self.slot(credential.id.as_str()).is_some() {
            return Err(AddCredentialError::DuplicateId { id: credential.id });
        }
        // Track first (it can refuse), then store; undo the tracking if the store refuses.
        self.inner
            .rotation
            .track(credential.id.clone(), credential.created_at)?;
        let version = match self.inner.refreshing.create(&credential).await {
            Ok(version) => version,
            Err(e) => {
                self.inner.rotation.untrack(&credential.id);
                return Err(e.into());
            }
        };
        self.insert_slot(credential, version);
        Ok(())
    }

    /// Removes a credential from the pool (and from the store, if any). A refresh in flight for
    /// it finishes without saving: a removed credential stays removed.
    ///
    /// # Errors
    /// [`RemoveError`]: unknown id, the last credential, or the store's error (the credential then
    /// stays).
    pub async fn remove_credential(&self, id: &str) -> Result<(), RemoveError> {
        let _structure = self.inner.structure.lock().await;
        let slot = self
            .slot(id)
            .ok_or_else(|| RemoveError::UnknownCredential { id: id.to_owned() })?;
        if self.inner.selection.len() == 1 {
            return Err(RemoveError::LastCredential {
                id: slot.id.clone(),
            });
        }
        self.inner.refreshing.delete(&slot.id).await?;
        self.remove_slot(&slot.id);
        Ok(())
    }

    pub(crate) fn insert_slot(&self, credential: Credential, version: u64) -> Arc<Slot> {
        let (usage, recorder) = self.inner.telemetry.register(&credential.id);
        let seed = self.inner.seed ^ crate::selection::seed_of(credential.id.as_str());
        let slot = Arc::new(Slot::new(credential, version, seed, usage, recorder));
        self.inner
            .selection
            .insert(Arc::clone(&slot), self.inner.time.now_ms());
        slot
    }

    pub(crate) fn remove_slot(&self, id: &CredentialId) {
        if let Some(slot) = self.inner.selection.remove(id, self.inner.time.now_ms()) {
            slot.mark_removed();
        }
        self.inner.telemetry.forget(id);
        self.inner.rotation.untrack(id);
        self.inner.refreshing.sharing().forget(id);
    }

    /// After a health mutation: refresh the selection snapshot if availability changed, and
    /// report the change as an event.
    pub(crate) fn after_health_change(
        &self,
        slot: &Arc<Slot>,
        change: Option<HealthChange>,
        published: Republished,
    ) {
        self.inner
            .selection
            .republished(published, self.inner.time.now_ms());
        if let Some(change) = change {
            let time = &self.inner.time;
            if let HealthChange::CooledDown { until } = change {
                self.inner
                    .refreshing
                    .publish_cooldown(&slot.id, time.to_wall(until), time.wall());
            }
            let change = crate::reporting::change_to_wall(change, time);
            self.inner
                .telemetry
                .emit(Event::from_health(slot.id.clone(), change, time.wall()));
        }
    }

    /// Emits an event of `kind` now.
    pub(crate) fn emit(&self, kind: EventKind) {
        self.inner.telemetry.emit(Event::new(self.now(), kind));
    }

    /// Subscribes to every [`Event`] the manager emits (a bounded broadcast channel; a slow
    /// receiver loses the oldest events and is told how many).
    pub fn subscribe(&self) -> crate::EventReceiver {
        self.inner.telemetry.subscribe()
    }

    /// The refresh strategy (a copy; Go `GetRefreshStrategy`).
    pub fn refresh_strategy(&self) -> RefreshStrategy {
        self.settings().strategy.clone()
    }

    /// Replaces the refresh strategy (copied in; Go `SetRefreshStrategy`).
    ///
    /// # Errors
    /// [`SettingsError`] for an invalid strategy; the old one stays.
    pub fn set_refresh_strategy(&self, strategy: RefreshStrategy) -> Result<(), SettingsError> {
        strategy.validate()?;
        self.update_settings(|s| s.strategy = strategy.clone());
        self.inner.selection.forget_usable_until();
        Ok(())
    }

    /// The health policy (a copy).
    pub fn health_policy(&self) -> HealthPolicy {
        self.settings().health.clone()
    }

    /// Replaces the health policy.
    ///
    /// # Errors
    /// [`SettingsError`] for an invalid policy; the old one stays.
    pub fn set_health_policy(&self, policy: HealthPolicy) -> Result<(), SettingsError> {
        policy.validate()?;
        self.update_settings(|s| s.health = policy.clone());
        Ok(())
    }

    /// The monitoring configuration, or `None` when monitoring is off (Go returned the defaults
    /// then, which showed alerts as enabled).
    pub fn monitoring_config(&self) -> Option<MonitoringConfig> {
        self.inner
            .telemetry
            .monitor()
            .config()
            .map(|c| MonitoringConfig::clone(&c))
    }

    /// Turns monitoring on with `config` (copied in), or off with `None` (Go
    /// `SetMonitoringConfig`). With a `webhook_url`, signed webhooks go there from the next
    /// delivery on (deliveries in progress finish with the configuration they started with).
    ///
    /// # Errors
    /// [`SettingsError`] for an invalid configuration; the old one stays.
    pub fn set_monitoring_config(
        &self,
        config: Option<MonitoringConfig>,
    ) -> Result<(), SettingsError> {
        self.inner.telemetry.monitor().reconfigure(config)?;
        Ok(())
    }

    /// Where alerts are delivered now (signed webhooks to an endpoint, nowhere because the
    /// configuration has no `webhook_url`, a custom notifier...).
    pub fn delivery_status(&self) -> oauth_webhooks::DeliveryStatus {
        self.inner.telemetry.monitor().status()
    }

    /// The failover settings (a copy).
    pub fn failover_settings(&self) -> FailoverSettings {
        self.settings().failover.clone()
    }

    /// Replaces the failover settings.
    ///
    /// # Errors
    /// [`SettingsError`] for invalid settings; the old ones stay.
    pub fn set_failover_settings(&self, failover: FailoverSettings) -> Result<(), SettingsError> {
        failover.validate()?;
        self.inner.selection.replace_failover(&failover, || {
            self.update_settings(|s| s.failover = failover.clone());
        });
        Ok(())
    }

    /// The rotation policy (a copy; Go `GetRotationPolicy`).
    pub fn rotation_policy(&self) -> RotationPolicy {
        self.inner.rotation.policy()
    }

    /// Replaces the rotation policy (copied in; Go `SetRotationPolicy`).
    ///
    /// # Errors
    /// [`SettingsError`] for an invalid policy; the old one stays.
    pub fn set_rotation_policy(&self, policy: RotationPolicy) -> Result<(), SettingsError> {
        policy.validate().map_err(SettingsError::RotationPolicy)?;
        self.inner.rotation.set_policy(policy);
        Ok(())
    }

    fn update_settings(&self, f: impl Fn(&mut Settings)) {
        self.inner.settings.rcu(|old| {
            let mut new = Settings::clone(old);
            f(&mut new);
            new
        });
    }

    /// Sets the credential provider (Go `SetCredentialProvider`) and adopts its credentials now:
    /// new ids join the pool, known ids take the provider's tokens when they are newer. Refreshed
    /// credentials are written back through [`CredentialProvider::update_credential`].
    ///
    /// # Errors
    /// The provider's error; the provider is installed all the same, and the next maintenance tick
    /// retries the read.
    pub async fn set_credential_provider(
        &self,
        provider: Arc<dyn CredentialProvider>,
    ) -> Result<(), crate::error::ProviderError> {
        self.inner.refreshing.set_credential_provider(provider);
        self.sync_from_provider().await
    }

    /// Reads the credential provider (if one is set) and adopts what changed.
    ///
    /// # Errors
    /// The provider's error.
    pub async fn sync_from_provider(&self) -> Result<(), crate::error::ProviderError> {
        let creds = self.inner.refreshing.provider_credentials().await?;
        let _structure = self.inner.structure.lock().await;
        let mut seen = HashSet::new();
        for cred in creds {
            if !seen.insert(cred.id.clone()) {
                continue;
            }
            match self.slot(cred.id.as_str()) {
                Some(slot) => {
                    self.inner
                        .refreshing
                        .adopt_in_flight(self, &slot, cred, crate::refreshing::Origin::Provider)
                        .await;
                }
                None => {
                    let _ = self.inner.rotation.track(cred.id.clone(), cred.created_at);
                    self.insert_slot(cred, 0);
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Usage that arrives after its request was recorded (issue 18): a streamed answer's final token
// count. Kept apart from the rest of the facade.
impl OAuthKeyManager {
    /// Adds `tokens` to credential `id`'s token usage **without** counting a request: for usage
    /// known only after the request was recorded, such as a streamed answer's final usage event
    /// (`execute_with_failover` records a stream's request when its headers arrive, before its
    /// usage is known). The tokens reach the in-memory counters
    /// ([`credential_metrics`](Self::credential_metrics), [`all_metrics`](Self::all_metrics),
    /// [`health_summary`](Self::health_summary)) and the application's recorder
    /// (`tokens_total` in Prometheus). oauth-http's adapters call it when a watched stream ends.
    ///
    /// # Errors
    /// [`UnknownCredential`] for an id not in the pool; nothing is recorded
    /// (unlike [`record_request`](Self::record_request), which keeps bounded counters for
    /// unknown ids as Go did).
    pub fn record_tokens(&self, id: &str, tokens: u64) -> Result<(), UnknownCredential> {
        self.slot_or_err(id)?.record_tokens(tokens);
        Ok(())
    }
}
// ---------------------------------------------------------------------------------------------

/// A credential handed out by [`OAuthKeyManager::next_credential`]: a read-only view of the pool's
/// current copy. Taking one writes no shared memory (no reference count), so threads picking the
/// same credential do not contend; hold it for the length of a call, or turn it into an `Arc` with
/// [`into_arc`](Self::into_arc) to keep it longer.
pub struct CredentialLease(arc_swap::Guard<Arc<Credential>>);

impl CredentialLease {
    /// The credential as a shared pointer.
    pub fn into_arc(self) -> Arc<Credential> {
        arc_swap::Guard::into_inner(self.0)
    }
}

impl std::ops::Deref for CredentialLease {
    type Target = Credential;

    fn deref(&self) -> &Credential {
        &self.0
    }
}

impl fmt::Debug for CredentialLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self.0, f)
    }
}
