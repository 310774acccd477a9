//! `OAuthKeyManager`: the pool, its builder, and the operations on single credentials.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use oauth_core::{
    ClassifyFailure, Clock, Credential, CredentialId, Event, EventKind, FailureKind, HealthChange,
    HealthPolicy,
};
use oauth_metrics::{InMemoryRecorder, MetricsRecorder, RequestOutcome};
use oauth_refresh::{NoopRefresher, RefreshCoordinator, RefreshStrategy, Refresher};
use oauth_rotation::{NoopHooks, Rotation, RotationHooks, RotationPolicy, RotationTracker};
use oauth_store::CredentialStore;
use oauth_webhooks::{AlertState, MonitoringConfig, NoopNotifier, Notifier, WebhookEvent};
use tokio::sync::broadcast;

use crate::error::{BuildError, CredentialOpError, NoCredentialAvailable, SettingsError};
use crate::pool::{Pool, Selector, Slot};
use crate::provider::CredentialProvider;
use crate::settings::{FailoverSettings, Settings};

/// A pool of OAuth credentials for one AI provider: round-robin selection over the available ones,
/// classified failover, health tracking, single-flight refresh, rotation, metrics and alerts.
///
/// One concrete, cheaply cloneable, `Send + Sync` type: clones share the pool. Building it spawns
/// nothing; background work is [`spawn_maintenance`](Self::spawn_maintenance), which the application
/// starts and stops.
#[derive(Clone)]
pub struct OAuthKeyManager {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for OAuthKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pool = self.inner.selector.pool();
        f.debug_struct("OAuthKeyManager")
            .field("provider", &self.inner.provider)
            .field(
                "credentials",
                &pool.slots.iter().map(|s| &s.id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) provider: String,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) selector: Selector,
    pub(crate) settings: ArcSwap<Settings>,
    pub(crate) refresher: Arc<dyn Refresher>,
    pub(crate) coordinator: RefreshCoordinator,
    pub(crate) usage: Arc<InMemoryRecorder>,
    pub(crate) extra_metrics: Option<Arc<dyn MetricsRecorder>>,
    pub(crate) notifier: Arc<dyn Notifier>,
    pub(crate) alerts: Mutex<AlertState>,
    pub(crate) rotation: Rotation,
    pub(crate) store: Option<Arc<dyn CredentialStore>>,
    pub(crate) credential_provider: Mutex<Option<Arc<dyn CredentialProvider>>>,
    pub(crate) events: broadcast::Sender<Event>,
    /// Serializes structural changes (adding and removing credentials).
    pub(crate) structure: tokio::sync::Mutex<()>,
    pub(crate) exhausted: AtomicBool,
    pub(crate) seed: u64,
}

impl OAuthKeyManager {
    /// Starts building a manager for `provider` (a name such as `"gemini"`, used in errors, events
    /// and metric labels).
    pub fn builder(provider: impl Into<String>) -> OAuthKeyManagerBuilder {
        OAuthKeyManagerBuilder::new(provider.into())
    }

    /// The provider name.
    pub fn provider(&self) -> &str {
        &self.inner.provider
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    pub(crate) fn settings(&self) -> arc_swap::Guard<Arc<Settings>> {
        self.inner.settings.load()
    }

    pub(crate) fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        self.inner.selector.pool().get(id).cloned()
    }

    fn slot_or_err(&self, id: &str) -> Result<Arc<Slot>, CredentialOpError> {
        self.slot(id)
            .ok_or_else(|| CredentialOpError::UnknownCredential { id: id.to_owned() })
    }

    /// The next available credential, round-robin (Go `GetNextCredential`): a read-only view of the
    /// pool's current copy, which a refresh replaces but never mutates (Go handed out a pointer
    /// into its state).
    ///
    /// # Errors
    /// [`NoCredentialAvailable`], saying when the first credential is available again.
    pub fn next_credential(&self) -> Result<CredentialLease, NoCredentialAvailable> {
        let now = crate::pool::Now::new(self.inner.clock.as_ref());
        self.inner
            .selector
            .select(&now, |slot| CredentialLease(slot.lease()))
            .map_err(|none| self.unavailable(none.next_available_at))
    }

    pub(crate) fn unavailable(&self, next: Option<DateTime<Utc>>) -> NoCredentialAvailable {
        NoCredentialAvailable {
            provider: self.inner.provider.clone(),
            total: self.inner.selector.len(),
            next_available_at: next,
        }
    }

    /// Copies of all credentials (Go `GetCredentials`).
    pub fn credentials(&self) -> Vec<Credential> {
        self.inner
            .selector
            .pool()
            .slots
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
            .selector
            .pool()
            .slots
            .iter()
            .map(|s| s.id.clone())
            .collect()
    }

    /// Reports a successful call made with credential `id` outside
    /// [`execute_with_failover`](Self::execute_with_failover) (Go `ReportSuccess`). Unknown ids are
    /// ignored, as in Go.
    pub fn report_success(&self, id: &str) {
        if let Some(slot) = self.slot(id) {
            let now = self.now();
            let (change, changed) = slot.record_success(now);
            self.after_health_change(&slot, change, changed, now);
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
            self.record_failure(&slot, kind);
        }
    }

    pub(crate) fn record_failure(&self, slot: &Arc<Slot>, kind: FailureKind) {
        let now = self.now();
        self.record_failure_since(slot, kind, now);
    }

    /// Records the failure of a request that started at `started` (requests in flight when an
    /// earlier failure was recorded fail together with it; see
    /// [`CredentialHealth::record_failure_since`](oauth_core::CredentialHealth::record_failure_since)).
    pub(crate) fn record_failure_since(
        &self,
        slot: &Arc<Slot>,
        kind: FailureKind,
        started: DateTime<Utc>,
    ) {
        let now = self.now().max(started);
        let settings = self.settings();
        let (change, changed) = slot.with_health(now, |h| {
            h.record_failure_since(kind, started, &settings.health, now)
        });
        self.after_health_change(slot, change, changed, now);
    }

    /// Records one request's metrics for credential `id` (Go `RecordRequest`). Unknown ids are
    /// recorded too (Go parity), within the in-memory recorder's bound on distinct ids.
    pub fn record_request(
        &self,
        id: &str,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
    ) {
        let now = self.now();
        match self.slot(id) {
            Some(slot) => slot.record_request(tokens, latency, outcome, now),
            None => {
                if let Ok(id) = CredentialId::new(id) {
                    self.inner
                        .usage
                        .record_request(&id, tokens, latency, outcome, now);
                }
            }
        }
    }

    pub(crate) fn record_failover(&self, from: &CredentialId, reason: FailureKind) {
        self.inner.usage.record_failover(from, reason);
        if let Some(extra) = &self.inner.extra_metrics {
            extra.record_failover(from, reason);
        }
    }

    /// Gives a credential `weight` times the share of traffic of a weight-1 credential (1 to 16;
    /// default 1). Round-robin then interleaves the credentials in proportion (stride
    /// scheduling), and the load-aware selections draw their candidates in proportion too. Useful
    /// when accounts have different plan limits.
    ///
    /// # Errors
    /// [`CredentialOpError::UnknownCredential`], or [`SettingsError::Weight`] out of range.
    pub fn set_weight(&self, id: &str, weight: u32) -> Result<(), CredentialOpError> {
        let slot = self.slot_or_err(id)?;
        check_weight(id, weight)?;
        slot.weight.store(weight, Ordering::Release);
        self.inner.selector.rebuild(self.inner.clock.now_millis());
        Ok(())
    }

    /// Takes a credential out of rotation until [`enable`](Self::enable).
    ///
    /// # Errors
    /// [`CredentialOpError::UnknownCredential`].
    pub fn disable(&self, id: &str) -> Result<(), CredentialOpError> {
        let slot = self.slot_or_err(id)?;
        let now = self.now();
        let ((), changed) = slot.with_health(now, |h| h.disable());
        self.after_health_change(&slot, None, changed, now);
        self.emit(Event::new(
            now,
            EventKind::Disabled {
                credential: slot.id.clone(),
            },
        ));
        Ok(())
    }

    /// Puts a disabled credential back into rotation.
    ///
    /// # Errors
    /// [`CredentialOpError::UnknownCredential`].
    pub fn enable(&self, id: &str) -> Result<(), CredentialOpError> {
        let slot = self.slot_or_err(id)?;
        let now = self.now();
        let ((), changed) = slot.with_health(now, |h| h.enable());
        self.after_health_change(&slot, None, changed, now);
        self.emit(Event::new(
            now,
            EventKind::Enabled {
                credential: slot.id.clone(),
            },
        ));
        Ok(())
    }

    /// Installs re-authorized tokens for a credential that needed re-authorization (or any new
    /// tokens an operator obtained), persists them, and puts the credential back into rotation.
    ///
    /// # Errors
    /// [`CredentialOpError::UnknownCredential`], or the store's error (the tokens are then not
    /// installed).
    pub async fn reauthorize(&self, credential: Credential) -> Result<(), CredentialOpError> {
        let slot = self.slot_or_err(credential.id.as_str())?;
        // Inside the refresh flight, so a refresh running on the old grant cannot overwrite the
        // new tokens (or mark them dead) after we install them. If a refresh is in flight, wait
        // for it and try again.
        for _ in 0..8 {
            let (result_tx, result_rx) = tokio::sync::oneshot::channel();
            let cred = credential.clone();
            let ran = self
                .in_flight(&slot, move |this, slot| async move {
                    let result = this.persist(&slot, &cred).await;
                    if result.is_ok() {
                        slot.set_credential(cred);
                        let now = this.now();
                        let ((), changed) = slot.with_health(now, |h| h.mark_reauthorized());
                        this.after_health_change(
                            &slot,
                            Some(HealthChange::Recovered),
                            changed,
                            now,
                        );
                    }
                    let _ = result_tx.send(result);
                })
                .await;
            if ran {
                return match result_rx.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(reason)) => Err(CredentialOpError::Persist {
                        id: slot.id.clone(),
                        reason,
                    }),
                    Err(_) => Err(CredentialOpError::Persist {
                        id: slot.id.clone(),
                        reason: "interrupted".to_owned(),
                    }),
                };
            }
        }
        Err(CredentialOpError::Persist {
            id: slot.id.clone(),
            reason: "refreshes kept running; try again".to_owned(),
        })
    }

    /// Adds a credential to the pool (and to the store, if any).
    ///
    /// # Errors
    /// [`CredentialOpError::DuplicateId`], or the store's error.
    pub async fn add_credential(&self, credential: Credential) -> Result<(), CredentialOpError> {
        let _structure = self.inner.structure.lock().await;
        if self.slot(credential.id.as_str()).is_some() {
            return Err(CredentialOpError::DuplicateId { id: credential.id });
        }
        // Track first (it can refuse), then store; undo the tracking if the store refuses.
        self.inner
            .rotation
            .track(credential.id.clone(), credential.created_at)?;
        let version = match &self.inner.store {
            Some(store) => match store.save(&self.inner.provider, &credential, None).await {
                Ok(version) => version,
                Err(e) => {
                    self.inner.rotation.untrack(&credential.id);
                    return Err(e.into());
                }
            },
            None => 0,
        };
        self.insert_slot(credential, version);
        Ok(())
    }

    /// Removes a credential from the pool (and from the store, if any).
    ///
    /// # Errors
    /// [`CredentialOpError::UnknownCredential`], [`CredentialOpError::LastCredential`], or the
    /// store's error (the credential then stays).
    pub async fn remove_credential(&self, id: &str) -> Result<(), CredentialOpError> {
        let _structure = self.inner.structure.lock().await;
        let slot = self.slot_or_err(id)?;
        if self.inner.selector.len() == 1 {
            return Err(CredentialOpError::LastCredential {
                id: slot.id.clone(),
            });
        }
        if let Some(store) = &self.inner.store {
            store
                .delete(&self.inner.provider, &slot.id, None)
                .await
                .or_else(|e| match e {
                    oauth_store::StoreError::NotFound { .. } => Ok(()),
                    e => Err(e),
                })?;
        }
        self.remove_slot(&slot.id);
        Ok(())
    }

    pub(crate) fn insert_slot(&self, credential: Credential, version: u64) -> Arc<Slot> {
        let slot = Arc::new(new_slot(
            credential,
            version,
            self.inner.seed,
            &self.inner.usage,
            self.inner.extra_metrics.as_ref(),
        ));
        let added = Arc::clone(&slot);
        self.inner.selector.modify_pool(self.now(), move |slots| {
            let mut slots = slots.to_vec();
            slots.push(added);
            slots
        });
        slot
    }

    pub(crate) fn remove_slot(&self, id: &CredentialId) {
        self.inner.selector.modify_pool(self.now(), |slots| {
            slots.iter().filter(|s| &s.id != id).cloned().collect()
        });
        self.inner.usage.remove(id);
        if let Some(extra) = &self.inner.extra_metrics {
            extra.remove(id);
        }
        self.inner.rotation.untrack(id);
    }

    /// After a health mutation: refresh the selection snapshot if availability changed, report the
    /// state to metrics, and emit the event.
    pub(crate) fn after_health_change(
        &self,
        slot: &Arc<Slot>,
        change: Option<HealthChange>,
        availability_changed: bool,
        now: DateTime<Utc>,
    ) {
        if availability_changed {
            self.inner.selector.rebuild(crate::pool::millis(now));
        }
        if let Some(change) = change {
            self.report_state(slot, now);
            self.emit(Event::from_health(slot.id.clone(), change, now));
        }
    }

    /// Pushes the credential's state gauges to the metrics recorders.
    pub(crate) fn report_state(&self, slot: &Arc<Slot>, now: DateTime<Utc>) {
        let settings = self.settings();
        let snap = slot.health_snapshot(&settings.health, now);
        let cred = slot.credential();
        let cooldown = snap.cooldown_until.and_then(|t| (t - now).to_std().ok());
        slot.record_state(snap.state, cred.time_to_expiry(now), cooldown);
    }

    /// Subscribes to every [`Event`] the manager emits (a bounded broadcast channel; a slow
    /// receiver loses the oldest events and is told how many).
    pub fn subscribe(&self) -> crate::EventReceiver {
        self.inner.events.subscribe()
    }

    /// Emits an event to subscribers and, through the monitoring configuration, to the notifier.
    pub(crate) fn emit(&self, event: Event) {
        let _ = self.inner.events.send(event.clone());
        let settings = self.settings();
        let Some(config) = settings.monitoring.as_ref() else {
            return;
        };
        // The alert rules need not repeat what this event already says (only these kinds overlap
        // a rule; other events take no lock here).
        if matches!(
            event.kind,
            EventKind::RefreshFailed { .. }
                | EventKind::NeedsReauthorization { .. }
                | EventKind::PoolExhausted { .. }
        ) {
            self.inner
                .alerts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .note_event(&event);
        }
        let gated = match &event.kind {
            EventKind::RefreshFailed { .. } => config.alert_on_refresh_failure,
            EventKind::NeedsReauthorization { .. } => config.alert_on_needs_reauthorization,
            EventKind::PoolExhausted { .. } => config.alert_on_pool_exhausted,
            _ => true,
        };
        if !gated {
            return;
        }
        let Some(webhook) = WebhookEvent::from_event(&event) else {
            return;
        };
        if config.wants(webhook.event_type) {
            self.send_notification(webhook);
        }
    }

    pub(crate) fn send_notification(&self, webhook: WebhookEvent) {
        let notifier = Arc::clone(&self.inner.notifier);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { notifier.notify(webhook).await });
        }
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
        self.settings().monitoring.clone()
    }

    /// Turns monitoring on with `config` (copied in), or off with `None` (Go `SetMonitoringConfig`).
    ///
    /// # Errors
    /// [`SettingsError`] for an invalid configuration; the old one stays.
    pub fn set_monitoring_config(
        &self,
        config: Option<MonitoringConfig>,
    ) -> Result<(), SettingsError> {
        if let Some(c) = &config {
            c.validate()?;
        }
        self.update_settings(|s| s.monitoring = config.clone());
        Ok(())
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
        self.inner.selector.set_selection(failover.selection);
        self.update_settings(|s| s.failover = failover.clone());
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
    /// new ids join the pool, known ids take the provider's tokens when they differ. Refreshed
    /// credentials are written back through [`CredentialProvider::update_credential`].
    ///
    /// # Errors
    /// The provider's error; the provider is installed all the same, and the next maintenance tick
    /// retries the read.
    pub async fn set_credential_provider(
        &self,
        provider: Arc<dyn CredentialProvider>,
    ) -> Result<(), crate::error::ProviderError> {
        *self
            .inner
            .credential_provider
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&provider));
        self.sync_from_provider().await
    }

    /// Reads the credential provider (if one is set) and adopts what changed.
    ///
    /// # Errors
    /// The provider's error.
    pub async fn sync_from_provider(&self) -> Result<(), crate::error::ProviderError> {
        let provider = self
            .inner
            .credential_provider
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(provider) = provider else {
            return Ok(());
        };
        let creds = provider.credentials(&self.inner.provider).await?;
        let _structure = self.inner.structure.lock().await;
        let mut seen = HashSet::new();
        for cred in creds {
            if !seen.insert(cred.id.clone()) {
                continue;
            }
            match self.slot(cred.id.as_str()) {
                Some(slot) => {
                    self.in_flight(&slot, move |this, slot| async move {
                        this.adopt_external(&slot, cred, Origin::Provider);
                    })
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

    /// Adopts a credential changed outside this process, if it is newer than the slot's. Runs
    /// inside the credential's refresh flight (see [`Self::in_flight`]), so no refresh commits
    /// meanwhile. Returns whether it was adopted.
    ///
    /// - From the store, versions order the copies: a different version is a newer one.
    /// - From a credential provider, which has no versions, the provider's copy is newer when it was
    ///   refreshed later (`last_refresh`) or more often (`refresh_count`), or when this one needs
    ///   re-authorization and the provider's holds another grant (someone re-authorized it). It is
    ///   never adopted while this one waits to be persisted: that one holds the newest tokens, and
    ///   the provider's copy may be the one whose refresh token was just exchanged.
    pub(crate) fn adopt_external(
        &self,
        slot: &Arc<Slot>,
        cred: Credential,
        origin: Origin,
    ) -> bool {
        let current = slot.credential();
        let other_grant = !same_refresh_token(&cred, &current);
        match origin {
            Origin::Store { version } => slot.version.store(version, Ordering::Release),
            Origin::Provider => {
                if slot.persist_pending.load(Ordering::Acquire) {
                    return false;
                }
                let refreshed_later = cred.last_refresh > current.last_refresh
                    || cred.refresh_count > current.refresh_count;
                let reauthorized = other_grant && slot.needs_reauthorization();
                if !refreshed_later && !reauthorized {
                    return false;
                }
            }
        }
        if current.same_tokens(&cred) {
            return false;
        }
        slot.set_credential(cred);
        let now = self.now();
        if other_grant {
            let ((), changed) = slot.with_health(now, |h| {
                if h.needs_reauthorization() {
                    h.mark_reauthorized();
                }
            });
            self.after_health_change(slot, None, changed, now);
        }
        self.emit(Event::new(
            now,
            EventKind::ExternallyUpdated {
                credential: slot.id.clone(),
            },
        ));
        true
    }

    /// Runs `work` inside the credential's refresh flight, so it never interleaves with a refresh
    /// (or with another such job). If a refresh is already in flight, `work` does not run (the
    /// refresh's own result supersedes it) and `false` is returned.
    pub(crate) async fn in_flight<F, Fut>(&self, slot: &Arc<Slot>, work: F) -> bool
    where
        F: FnOnce(Self, Arc<Slot>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let ran = Arc::new(AtomicBool::new(false));
        let (this, flight_slot, flag) = (self.clone(), Arc::clone(slot), Arc::clone(&ran));
        let _ = self
            .inner
            .coordinator
            .run(&slot.id, move || async move {
                let credential = {
                    work(this, Arc::clone(&flight_slot)).await;
                    flag.store(true, Ordering::Release);
                    (*flight_slot.credential()).clone()
                };
                Ok(oauth_refresh::RefreshOutcome {
                    credential,
                    refreshed: false,
                })
            })
            .await;
        ran.load(Ordering::Acquire)
    }
}

/// Where an externally changed credential comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin {
    /// The store, at this version.
    Store {
        /// The stored version.
        version: u64,
    },
    /// The credential provider.
    Provider,
}

fn same_refresh_token(a: &Credential, b: &Credential) -> bool {
    match (&a.refresh_token, &b.refresh_token) {
        (Some(x), Some(y)) => oauth_core::secret::same_secret(x, y),
        (None, None) => true,
        _ => false,
    }
}

fn new_slot(
    credential: Credential,
    version: u64,
    seed: u64,
    usage: &InMemoryRecorder,
    extra: Option<&Arc<dyn MetricsRecorder>>,
) -> Slot {
    let mem = usage.register(&credential.id);
    let extra = extra.map(|r| r.handle(&credential.id));
    let seed = seed ^ fxhash(credential.id.as_str());
    Slot::new(credential, version, seed, mem, extra)
}

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

fn check_weight(id: &str, weight: u32) -> Result<(), SettingsError> {
    if (1..=crate::pool::MAX_WEIGHT).contains(&weight) {
        Ok(())
    } else {
        Err(SettingsError::Weight {
            id: id.to_owned(),
            weight,
            max: crate::pool::MAX_WEIGHT,
        })
    }
}

/// A small, stable string hash (FxHash) for per-credential jitter seeds.
pub(crate) fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95)
    })
}

/// Builds an [`OAuthKeyManager`]. Everything but the provider name and the credentials has a
/// default: no refresher (tokens are used until they expire), the default refresh strategy, health
/// policy and rotation policy, in-memory metrics only, monitoring off, the system clock.
#[must_use = "call build() to get a manager"]
pub struct OAuthKeyManagerBuilder {
    provider: String,
    credentials: Vec<Credential>,
    store: Option<Arc<dyn CredentialStore>>,
    credential_provider: Option<Arc<dyn CredentialProvider>>,
    refresher: Arc<dyn Refresher>,
    strategy: RefreshStrategy,
    health: HealthPolicy,
    rotation: RotationPolicy,
    hooks: Arc<dyn RotationHooks>,
    metrics: Option<Arc<dyn MetricsRecorder>>,
    notifier: Option<Arc<dyn Notifier>>,
    monitoring: Option<MonitoringConfig>,
    clock: Arc<dyn Clock>,
    failover: FailoverSettings,
    max_concurrent_refreshes: Option<usize>,
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
    fn new(provider: String) -> Self {
        Self {
            provider,
            credentials: Vec::new(),
            store: None,
            credential_provider: None,
            refresher: Arc::new(NoopRefresher),
            strategy: RefreshStrategy::default(),
            health: HealthPolicy::default(),
            rotation: RotationPolicy::default(),
            hooks: Arc::new(NoopHooks),
            metrics: None,
            notifier: None,
            monitoring: None,
            clock: Arc::new(crate::CoarseClock),
            failover: FailoverSettings::default(),
            max_concurrent_refreshes: None,
            usage_window: None,
            weights: Vec::new(),
            seed: 0x5eed,
        }
    }

    /// Adds credentials to the pool. With a store, stored credentials win over these (the store
    /// may hold a rotated refresh token); these seed the store when it lacks them.
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
    pub fn store(mut self, store: Arc<dyn CredentialStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Reads credentials from `provider` and writes refreshed ones back to it.
    pub fn credential_provider(mut self, provider: Arc<dyn CredentialProvider>) -> Self {
        self.credential_provider = Some(provider);
        self
    }

    /// The token refresher (default: none, the Go `NoOpRefreshFunc`).
    pub fn refresher(mut self, refresher: Arc<dyn Refresher>) -> Self {
        self.refresher = refresher;
        self
    }

    /// When to refresh (default: [`RefreshStrategy::default`]).
    pub fn refresh_strategy(mut self, strategy: RefreshStrategy) -> Self {
        self.strategy = strategy;
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
    pub fn rotation_hooks(mut self, hooks: Arc<dyn RotationHooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// An extra metrics recorder (e.g. `PrometheusRecorder`); the manager always keeps its own
    /// in-memory one for its reports.
    pub fn metrics(mut self, recorder: Arc<dyn MetricsRecorder>) -> Self {
        self.metrics = Some(recorder);
        self
    }

    /// The window of the in-memory recorder's recent failure rate (default 5 min).
    pub fn usage_window(mut self, window: Duration) -> Self {
        self.usage_window = Some(window);
        self
    }

    /// Where alerts and events go (default: nowhere).
    pub fn notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Turns monitoring on: which events are sent, and the alert rules.
    pub fn monitoring(mut self, config: MonitoringConfig) -> Self {
        self.monitoring = Some(config);
        self
    }

    /// The clock (default: [`CoarseClock`](crate::CoarseClock), the system clock read cheaply on
    /// the hot path).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
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
    /// [`BuildError`]: an empty pool, duplicate ids, nonsense settings, or a store/provider failure.
    pub async fn build(self) -> Result<OAuthKeyManager, BuildError> {
        if self.provider.trim().is_empty() {
            return Err(BuildError::EmptyProvider);
        }
        let settings = Settings {
            strategy: self.strategy,
            health: self.health,
            monitoring: self.monitoring,
            failover: self.failover,
        };
        settings.validate()?;
        self.rotation
            .validate()
            .map_err(SettingsError::RotationPolicy)?;

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
        if let Some(provider) = &self.credential_provider {
            for c in provider.credentials(&self.provider).await? {
                if seen.insert(c.id.clone()) {
                    initial.push((c, 0));
                }
            }
        }
        if let Some(store) = &self.store {
            initial = merge_with_store(store.as_ref(), &self.provider, initial).await?;
        }
        if initial.is_empty() {
            return Err(BuildError::EmptyPool {
                provider: self.provider,
            });
        }

        let usage = Arc::new(match self.usage_window {
            Some(w) => InMemoryRecorder::new().with_window(w),
            None => InMemoryRecorder::new(),
        });
        let mut tracker = RotationTracker::new(self.rotation);
        let mut slots = Vec::with_capacity(initial.len());
        for (cred, version) in initial {
            if tracker.track(cred.id.clone(), cred.created_at).is_err() {
                return Err(BuildError::DuplicateId {
                    provider: self.provider,
                    id: cred.id,
                });
            }
            slots.push(Arc::new(new_slot(
                cred,
                version,
                self.seed,
                &usage,
                self.metrics.as_ref(),
            )));
        }
        let now = self.clock.now();
        let coordinator = match self.max_concurrent_refreshes {
            Some(n) => RefreshCoordinator::with_max_concurrent(n),
            None => RefreshCoordinator::new(),
        };
        let (events, _) = broadcast::channel(1024);
        for (id, weight) in &self.weights {
            check_weight(id, *weight)?;
            let slot = slots.iter().find(|s| s.id == id.as_str()).ok_or_else(|| {
                SettingsError::Weight {
                    id: id.clone(),
                    weight: *weight,
                    max: crate::pool::MAX_WEIGHT,
                }
            })?;
            slot.weight.store(*weight, Ordering::Release);
        }
        let selector = Selector::new(Pool::new(slots), now);
        selector.set_selection(settings.failover.selection);
        let inner = Inner {
            selector,
            provider: self.provider,
            clock: self.clock,
            settings: ArcSwap::from_pointee(settings),
            refresher: self.refresher,
            coordinator,
            usage,
            extra_metrics: self.metrics,
            notifier: self.notifier.unwrap_or_else(|| Arc::new(NoopNotifier)),
            alerts: Mutex::new(AlertState::default()),
            rotation: Rotation::from_tracker(tracker, self.hooks),
            store: self.store,
            credential_provider: Mutex::new(self.credential_provider),
            events,
            structure: tokio::sync::Mutex::new(()),
            exhausted: AtomicBool::new(false),
            seed: self.seed,
        };
        Ok(OAuthKeyManager {
            inner: Arc::new(inner),
        })
    }
}

/// Stored credentials win over configured ones; configured ones the store lacks are saved to it.
async fn merge_with_store(
    store: &dyn CredentialStore,
    provider: &str,
    configured: Vec<(Credential, u64)>,
) -> Result<Vec<(Credential, u64)>, BuildError> {
    let stored = store.load_all(provider).await?;
    let mut out: Vec<(Credential, u64)> =
        stored.into_iter().map(|v| (v.value, v.version)).collect();
    for (cred, _) in configured {
        if out.iter().any(|(c, _)| c.id == cred.id) {
            continue;
        }
        let version = store.save(provider, &cred, None).await?;
        out.push((cred, version));
    }
    Ok(out)
}
