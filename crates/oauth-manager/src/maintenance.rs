//! Background maintenance: a loop the application starts and stops.

use std::time::Duration;

use oauth_core::{CredentialId, CredentialState, EventKind, FailureKind};
use oauth_store::{SharedState, StoreChange};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::manager::OAuthKeyManager;
use crate::refreshing::RefreshNeed;

/// What the maintenance loop does and how often.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MaintenanceConfig {
    /// Time between ticks (default 15 s).
    pub interval: Duration,
    /// Idle credentials are refreshed up to this long before the strategy's buffer would trigger a
    /// refresh on use (default 10 min), spread by a per-credential jitter so the pool does not
    /// refresh in a burst and nothing expires unused.
    pub refresh_ahead: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            refresh_ahead: Duration::from_secs(600),
        }
    }
}

/// The shortest maintenance interval accepted (a zero interval would spin).
pub const MIN_MAINTENANCE_INTERVAL: Duration = Duration::from_millis(10);

impl MaintenanceConfig {
    /// Checks the configuration: an interval of at least [`MIN_MAINTENANCE_INTERVAL`] and at most
    /// a day, and a refresh lead of at most a day.
    ///
    /// # Errors
    /// [`SettingsError::Maintenance`](crate::SettingsError::Maintenance) naming the field.
    pub fn validate(&self) -> Result<(), crate::SettingsError> {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        if self.interval < MIN_MAINTENANCE_INTERVAL || self.interval > DAY {
            return Err(crate::SettingsError::Maintenance(
                "interval must be between 10 ms and a day",
            ));
        }
        if self.refresh_ahead > DAY {
            return Err(crate::SettingsError::Maintenance(
                "refresh_ahead must be at most a day",
            ));
        }
        Ok(())
    }

    /// Sets [`interval`](Self::interval).
    #[must_use]
    pub const fn with_interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// Sets [`refresh_ahead`](Self::refresh_ahead).
    #[must_use]
    pub const fn with_refresh_ahead(mut self, d: Duration) -> Self {
        self.refresh_ahead = d;
        self
    }
}

/// What one maintenance tick did.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MaintenanceReport {
    /// Credentials refreshed ahead of expiry.
    pub refreshed: Vec<CredentialId>,
    /// Credentials whose ahead-of-time refresh failed.
    pub refresh_failed: Vec<CredentialId>,
    /// Alerts raised.
    pub alerts: usize,
    /// Credentials decommissioned after their grace period.
    pub decommissioned: Vec<CredentialId>,
    /// Credentials adopted from the store (changed by another process).
    pub adopted: Vec<CredentialId>,
    /// Credentials whose pending persistence succeeded on retry.
    pub persisted: Vec<CredentialId>,
}

/// A running maintenance loop. [`stop`](Self::stop) ends it after the current tick; dropping the
/// handle stops it too.
#[derive(Debug)]
pub struct MaintenanceHandle {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MaintenanceHandle {
    /// Stops the loop and waits for it to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MaintenanceHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl OAuthKeyManager {
    /// Starts the maintenance loop on the current tokio runtime: a
    /// [`run_maintenance_once`](Self::run_maintenance_once) every interval and, between ticks,
    /// the store's change feed and connection status as they move (a store outage is reported
    /// as `StoreDisconnected` / `StoreReconnected` when it begins and ends).
    ///
    /// # Errors
    /// [`SettingsError::Maintenance`](crate::SettingsError::Maintenance) for a nonsense
    /// configuration (a zero interval would kill the loop).
    ///
    /// # Panics
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn spawn_maintenance(
        &self,
        config: MaintenanceConfig,
    ) -> Result<MaintenanceHandle, crate::SettingsError> {
        config.validate()?;
        let (stop, mut stopped) = watch::channel(false);
        let this = self.clone();
        let mut changes = self.inner.refreshing.changes();
        let mut status = self.inner.refreshing.connection_status();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(config.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => { this.run_maintenance_once(&config).await; }
                    change = next_change(&mut changes) => { this.apply_store_change(change).await; }
                    () = next_status(&mut status) => { this.note_store_status(); }
                    _ = stopped.changed() => break,
                }
            }
        });
        Ok(MaintenanceHandle {
            stop,
            task: Some(task),
        })
    }

    /// One maintenance tick: report a store outage that began or ended (for stores that report
    /// their connection), send the cooldowns and states still to be shared with other processes,
    /// adopt credentials changed in the store or by the credential provider and the states other
    /// processes shared, retry pending persistence, refresh idle credentials ahead of expiry,
    /// auto-decommission expired rotations, evaluate and send alerts.
    pub async fn run_maintenance_once(&self, config: &MaintenanceConfig) -> MaintenanceReport {
        let mut report = MaintenanceReport::default();
        self.note_store_status();
        self.inner.refreshing.flush_shared(self.now()).await;
        self.adopt_store_changes(&mut report).await;
        self.adopt_shared_states().await;
        let _ = self.sync_from_provider().await;
        self.retry_persistence(&mut report).await;
        self.refresh_ahead(config, &mut report).await;
        let decommissioned = self.auto_decommission_expired().await;
        report.decommissioned = decommissioned.decommissioned;
        report.alerts = self.check_alerts().len();
        // The store may have gone or come back during the tick.
        self.note_store_status();
        report
    }

    /// Reports the store's connection status if it changed since last reported:
    /// `StoreDisconnected` once per outage, `StoreReconnected` when it ends (nothing for stores
    /// that cannot tell). Gauges and the health report read the status directly.
    fn note_store_status(&self) {
        if let Some(up) = self.inner.refreshing.store_connected() {
            self.inner.telemetry.store_status(up, self.now());
        }
    }

    /// Adopts one change the store's feed reported (another process refreshed, a file was dropped
    /// into an account directory, a replica saw a rate limit...). A gap in the feed reloads all.
    pub(crate) async fn apply_store_change(&self, change: Option<StoreChange>) {
        let change = change.unwrap_or(StoreChange::Resync {
            provider: self.provider().to_owned(),
        });
        match change {
            StoreChange::Changed { provider, id } if provider == self.provider() => {
                match self.slot(id.as_str()) {
                    Some(slot) => {
                        self.inner.refreshing.adopt_from_store(self, &slot).await;
                    }
                    None => self.join_from_store(&id).await,
                }
            }
            StoreChange::Removed { provider, id } if provider == self.provider() => {
                let _structure = self.inner.structure.lock().await;
                if self.slot(id.as_str()).is_some() && self.inner.selection.len() > 1 {
                    self.remove_slot(&id);
                }
            }
            StoreChange::CooledDown {
                provider,
                id,
                until,
            } if provider == self.provider() => self.apply_shared_cooldown(&id, until),
            StoreChange::StateChanged {
                provider,
                id,
                state,
                version,
            } if provider == self.provider() => {
                // A decision of this process about the same thing, not sent yet, is newer.
                if self.inner.refreshing.sharing().pending(&id, state.aspect()) {
                    return;
                }
                if let Some(slot) = self.slot(id.as_str()) {
                    self.apply_shared_state(&slot, state, version).await;
                }
            }
            StoreChange::Resync { provider } if provider == self.provider() => {
                let mut report = MaintenanceReport::default();
                self.adopt_store_changes(&mut report).await;
                self.adopt_shared_states().await;
            }
            _ => {}
        }
    }

    /// Adopts a cooldown another process published (from the feed or the store's kept ones),
    /// unless one ending as late is known here already: reported once, not published again.
    fn apply_shared_cooldown(
        &self,
        id: &oauth_core::CredentialId,
        until: chrono::DateTime<chrono::Utc>,
    ) {
        let time = &self.inner.time;
        let wall = time.wall();
        // Looked up first: a cooldown of a credential that joins later is applied then.
        let Some(slot) = self.slot(id.as_str()) else {
            return;
        };
        let sharing = self.inner.refreshing.sharing();
        if until <= wall || !sharing.note_cooldown(id, until, wall) {
            return;
        }
        let (now, until) = (time.health(), time.on_timeline(until));
        let policy = self.settings().health.clone();
        let (change, published) = slot.with_health(now, |h| h.cool_down_until(until, &policy, now));
        // Reported, but not published again: it came from the store.
        self.inner.selection.republished(published, time.now_ms());
        let change = crate::reporting::change_to_wall(change, time);
        self.inner.telemetry.emit(oauth_core::Event::from_health(
            slot.id.clone(),
            change,
            time.wall(),
        ));
    }

    /// Adopts the states and cooldowns other processes published that the store keeps (the
    /// latest of each aspect per credential, the latest end of each cooldown), for those this
    /// process missed: published while its feed was down or before it started. Applying one it
    /// already follows changes nothing. A state this process decided otherwise and has not sent
    /// yet is skipped, as is the rest of the states read once it decided anything since the read
    /// (they may predate that; the next tick reads again).
    pub(crate) async fn adopt_shared_states(&self) {
        let sharing = self.inner.refreshing.sharing();
        let before = sharing.decisions();
        let states = match self.inner.refreshing.shared_states().await {
            Ok(states) => states,
            Err(e) => {
                tracing::debug!(provider = %self.provider(), error = %e, "reading shared states failed");
                return;
            }
        };
        for record in states {
            // Checked before each one (applying one may wait for the store): once this process
            // decided anything since the read, the rest of what it read may be older than that.
            if sharing.decisions() != before {
                break;
            }
            if sharing.pending(&record.id, record.state.aspect()) {
                continue;
            }
            if let Some(slot) = self.slot(record.id.as_str()) {
                self.apply_shared_state(&slot, record.state, record.version)
                    .await;
            }
        }
        // Cooldowns merge (the later end wins): applying one undoes no decision made meanwhile.
        match self.inner.refreshing.active_cooldowns().await {
            Ok(cooldowns) => {
                for (id, until) in cooldowns {
                    self.apply_shared_cooldown(&id, until);
                }
            }
            Err(e) => {
                tracing::debug!(provider = %self.provider(), error = %e, "reading shared cooldowns failed");
            }
        }
    }

    /// Adopts a state another process published for `slot`, without publishing it again, and
    /// reports it only when it changed something here (so a replica emits one event at most).
    async fn apply_shared_state(
        &self,
        slot: &std::sync::Arc<crate::selection::Slot>,
        state: SharedState,
        version: Option<u64>,
    ) {
        let time = &self.inner.time;
        let now = time.health();
        match state {
            SharedState::Disabled | SharedState::Enabled => {
                let disable = state == SharedState::Disabled;
                let was = slot.read_health(|h| h.state(now) == CredentialState::Disabled);
                if was == disable {
                    return;
                }
                let ((), published) = slot.with_health(now, |h| {
                    if disable {
                        h.disable();
                    } else {
                        h.enable();
                    }
                });
                self.after_health_change(slot, None, published);
                let credential = slot.id.clone();
                self.emit(if disable {
                    EventKind::Disabled { credential }
                } else {
                    EventKind::Enabled { credential }
                });
            }
            SharedState::NeedsReauthorization => {
                if slot.read_health(oauth_core::CredentialHealth::needs_reauthorization) {
                    return;
                }
                // A token this replica refreshed but could not save yet is newer than anything
                // in the store: the grant found dead elsewhere is not the one it holds.
                if slot.persist_pending() {
                    return;
                }
                // Decided on an older refresh token than this replica holds: not ours to mark
                // (checked before reading the store: a replayed old state costs no query).
                if version.is_some_and(|dead| slot.version() > dead) {
                    return;
                }
                let stored = self.inner.refreshing.load(&slot.id).await.ok().flatten();
                if let Some(dead) = version {
                    // Or than the store holds now (a re-authorization since).
                    if stored.as_ref().is_some_and(|s| s.version > dead) {
                        self.inner.refreshing.adopt_from_store(self, slot).await;
                        return;
                    }
                }
                // The refresh token found dead is the store's; a replica holding another one
                // (refreshed here meanwhile) keeps it.
                if stored
                    .as_ref()
                    .is_some_and(|s| s.value.refresh_token_differs(&slot.credential()))
                {
                    return;
                }
                let policy = self.settings().health.clone();
                let usable_until = slot
                    .credential()
                    .expires_at
                    .map_or(chrono::DateTime::<chrono::Utc>::MAX_UTC, |t| {
                        time.on_timeline(t)
                    });
                let (change, published) = slot.with_health(now, |h| {
                    h.record_refresh_failure(
                        FailureKind::PermanentAuth,
                        Some(usable_until),
                        &policy,
                        now,
                    )
                });
                // Reported here, not published again: it came from the store.
                self.after_health_change(slot, change, published);
            }
            _ => {}
        }
    }

    /// A credential that appeared in the store (not added through this pool) joins it.
    async fn join_from_store(&self, id: &CredentialId) {
        let _structure = self.inner.structure.lock().await;
        if self.slot(id.as_str()).is_some() {
            return;
        }
        if let Ok(Some(stored)) = self.inner.refreshing.load(id).await {
            let cred = stored.value;
            if self
                .inner
                .rotation
                .track(cred.id.clone(), cred.created_at)
                .is_ok()
            {
                self.insert_slot(cred, stored.version);
            }
        }
    }

    async fn refresh_ahead(&self, config: &MaintenanceConfig, report: &mut MaintenanceReport) {
        if !self.inner.refreshing.is_configured() {
            return;
        }
        let now = self.now();
        let strategy = self.settings().strategy.clone();
        for slot in self.inner.selection.slots().iter() {
            // Spread each credential's lead over [ahead/2, ahead] with a stable per-id jitter.
            #[allow(clippy::cast_precision_loss)]
            let unit = (crate::selection::seed_of(slot.id.as_str()) % 1000) as f64 / 1000.0;
            let ahead = config.refresh_ahead.mul_f64(0.5 + 0.5 * unit);
            let credential = slot.credential();
            let health_now = self.inner.time.now_ms();
            if !due_ahead(&strategy, &credential, ahead, now)
                || slot.read_health(|h| h.needs_reauthorization() || h.is_misconfigured())
                || !slot.is_available_at(health_now)
            {
                continue;
            }
            match self
                .inner
                .refreshing
                .refresh(self, slot, RefreshNeed::Ahead(ahead))
                .await
            {
                Ok(c) if !c.same_tokens(&credential) => report.refreshed.push(slot.id.clone()),
                // Backing off, or left to another process holding the refresh lock: no failure.
                Ok(_)
                | Err(
                    oauth_refresh::RefreshError::BackingOff { .. }
                    | oauth_refresh::RefreshError::Deferred { .. },
                ) => {}
                Err(_) => report.refresh_failed.push(slot.id.clone()),
            }
        }
    }

    async fn retry_persistence(&self, report: &mut MaintenanceReport) {
        for slot in self.inner.selection.slots().iter() {
            if let Some(Ok(())) = self.inner.refreshing.retry_persistence(self, slot).await {
                report.persisted.push(slot.id.clone());
            }
        }
    }

    async fn adopt_store_changes(&self, report: &mut MaintenanceReport) {
        let Ok(versions) = self.inner.refreshing.stored_versions().await else {
            return;
        };
        for (id, version) in versions {
            let Some(slot) = self.slot(id.as_str()) else {
                // Stored by another process or dropped into the store's directory.
                self.join_from_store(&id).await;
                if self.slot(id.as_str()).is_some() {
                    report.adopted.push(id);
                }
                continue;
            };
            if slot.version() == version || slot.persist_pending() {
                continue;
            }
            if self.inner.refreshing.adopt_from_store(self, &slot).await {
                report.adopted.push(id);
            }
        }
    }
}

/// Whether maintenance refreshes `credential` now, `ahead` before the strategy's buffer would:
/// the buffer plus the lead goes through the strategy's refresh window like the request path's
/// buffer, so it is clamped to the token's lifetime (a 600-second token is refreshed at half its
/// life, not on every tick because buffer + lead exceeds its lifetime) and a token the pool
/// received is not refreshed again within the window's minimum interval. For tokens of an hour
/// the window is the plain buffer + lead.
pub(crate) fn due_ahead(
    strategy: &oauth_refresh::RefreshStrategy,
    credential: &oauth_core::Credential,
    ahead: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    strategy
        .window
        .with_buffer(strategy.buffer_time.saturating_add(ahead))
        .needs_refresh(credential, now)
}

/// The next transition of an optional connection status; pending forever without one (or once
/// its store is gone).
async fn next_status(status: &mut Option<watch::Receiver<bool>>) {
    let Some(rx) = status.as_mut() else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        *status = None;
        return;
    }
    rx.borrow_and_update();
}

/// The next change of an optional feed: pending forever without one; `None` when the feed lagged
/// or closed (then everything is reloaded, and a closed feed is dropped).
async fn next_change(feed: &mut Option<broadcast::Receiver<StoreChange>>) -> Option<StoreChange> {
    let Some(rx) = feed.as_mut() else {
        return std::future::pending().await;
    };
    match rx.recv().await {
        Ok(change) => Some(change),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        Err(broadcast::error::RecvError::Closed) => {
            *feed = None;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use oauth_core::{Credential, Event, EventKind};
    use oauth_store::{CredentialStore, MemoryStore};

    use super::MaintenanceConfig;
    use crate::OAuthKeyManager;

    /// The in-memory store behind a connection that the test takes down and brings back.
    use oauth_store::conformance::WithConnectionStatus as Connected;
    fn credential() -> Credential {
        Credential::new("a", "access", chrono::Utc::now()).expect("valid")
    }

    async fn outage_event(events: &mut crate::EventReceiver) -> Event {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .expect("an event in time")
                .expect("open");
            if matches!(
                event.kind,
                EventKind::StoreDisconnected { .. } | EventKind::StoreReconnected { .. }
            ) {
                return event;
            }
        }
    }

    fn status(pool: &OAuthKeyManager) -> (Option<bool>, Option<bool>, Option<bool>) {
        (
            pool.store_connected(),
            pool.health_summary().store_connected,
            pool.gauge_source().store_connected(),
        )
    }

    #[tokio::test]
    async fn the_loop_reports_a_store_outage_once_and_its_end_in_events_gauge_and_health() {
        let store = Arc::new(Connected::new(true));
        let pool = OAuthKeyManager::builder("p")
            .credential(credential())
            .store_arc(Arc::clone(&store) as Arc<dyn CredentialStore>)
            .build()
            .await
            .expect("builds");
        let mut events = pool.subscribe();
        let handle = pool
            .spawn_maintenance(
                MaintenanceConfig::default().with_interval(Duration::from_secs(3600)),
            )
            .expect("starts");
        assert_eq!(status(&pool), (Some(true), Some(true), Some(true)));

        store.set_connected(false);
        let down = outage_event(&mut events).await;
        assert_eq!(
            down.kind,
            EventKind::StoreDisconnected {
                provider: "p".into()
            }
        );
        assert_eq!(status(&pool), (Some(false), Some(false), Some(false)));
        let json = pool.export_json().expect("json");
        assert!(json.contains("\"store_connected\": false"), "{json}");
        // Still down: nothing new, however often the status is written.
        store.set_connected(false);
        store.set_connected(true);
        let up = outage_event(&mut events).await;
        assert_eq!(
            up.kind,
            EventKind::StoreReconnected {
                provider: "p".into(),
                disconnected_at: down.at,
            }
        );
        assert_eq!(status(&pool), (Some(true), Some(true), Some(true)));
        handle.stop().await;
        assert!(
            events.try_recv().is_err(),
            "one event per transition, nothing more"
        );
    }

    #[tokio::test]
    async fn a_tick_reports_an_outage_in_progress_and_stores_that_cannot_tell_report_nothing() {
        let pool = OAuthKeyManager::builder("p")
            .credential(credential())
            .store(Connected::new(false))
            .build()
            .await
            .expect("builds");
        let mut events = pool.subscribe();
        let config = MaintenanceConfig::default();
        pool.run_maintenance_once(&config).await;
        pool.run_maintenance_once(&config).await;
        let down = outage_event(&mut events).await;
        assert!(matches!(down.kind, EventKind::StoreDisconnected { .. }));
        assert!(events.try_recv().is_err(), "once per outage");
        assert_eq!(status(&pool), (Some(false), Some(false), Some(false)));

        let plain = OAuthKeyManager::builder("p")
            .credential(credential())
            .store(MemoryStore::new())
            .build()
            .await
            .expect("builds");
        let mut events = plain.subscribe();
        plain.run_maintenance_once(&config).await;
        assert_eq!(status(&plain), (None, None, None));
        assert!(events.try_recv().is_err());
        let json = plain.export_json().expect("json");
        assert!(!json.contains("store_connected"), "the Go shape: {json}");
    }
}
