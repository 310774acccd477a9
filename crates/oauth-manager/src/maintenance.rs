//! Background maintenance: a loop the application starts and stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use oauth_core::{CredentialId, Event, EventKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::manager::{OAuthKeyManager, Origin};
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

impl MaintenanceConfig {
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
    /// Starts the maintenance loop on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn spawn_maintenance(&self, config: MaintenanceConfig) -> MaintenanceHandle {
        let (stop, mut stopped) = watch::channel(false);
        let this = self.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(config.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => { this.run_maintenance_once(&config).await; }
                    _ = stopped.changed() => break,
                }
            }
        });
        MaintenanceHandle {
            stop,
            task: Some(task),
        }
    }

    /// One maintenance tick: refresh idle credentials ahead of expiry, retry pending persistence,
    /// adopt credentials changed in the store or by the credential provider, auto-decommission
    /// expired rotations, evaluate and send alerts.
    pub async fn run_maintenance_once(&self, config: &MaintenanceConfig) -> MaintenanceReport {
        let mut report = MaintenanceReport::default();
        self.adopt_store_changes(&mut report).await;
        let _ = self.sync_from_provider().await;
        self.retry_persistence(&mut report).await;
        self.refresh_ahead(config, &mut report).await;
        let decommissioned = self.auto_decommission_expired().await;
        report.decommissioned = decommissioned.decommissioned;
        report.alerts = self.check_alerts().len();
        report
    }

    async fn refresh_ahead(&self, config: &MaintenanceConfig, report: &mut MaintenanceReport) {
        if !self.inner.refresher.is_configured() {
            return;
        }
        let now = self.now();
        let buffer = self.settings().strategy.buffer_time;
        let slots = self.inner.selector.pool_full().slots.clone();
        for slot in slots {
            // Spread each credential's lead over [ahead/2, ahead] with a stable per-id jitter.
            let unit = (crate::manager::fxhash(slot.id.as_str()) % 1000) as f64 / 1000.0;
            let ahead = config.refresh_ahead.mul_f64(0.5 + 0.5 * unit);
            let credential = slot.credential();
            if !credential.expires_within(buffer.saturating_add(ahead), now)
                || slot.needs_reauthorization()
                || !slot.is_available_at(crate::pool::millis(now))
            {
                continue;
            }
            match self.refresh_slot(&slot, RefreshNeed::Ahead(ahead)).await {
                Ok(c) if !c.same_tokens(&credential) => report.refreshed.push(slot.id.clone()),
                Ok(_) => {}
                Err(_) => report.refresh_failed.push(slot.id.clone()),
            }
        }
    }

    async fn retry_persistence(&self, report: &mut MaintenanceReport) {
        let slots = self.inner.selector.pool_full().slots.clone();
        for slot in slots {
            if !slot.persist_pending.load(Ordering::Acquire) {
                continue;
            }
            // Inside the refresh flight: a refresh committing meanwhile would make this copy stale.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let ran = self
                .in_flight(&slot, move |this, slot| async move {
                    if !slot.persist_pending.load(Ordering::Acquire) {
                        return;
                    }
                    let credential = slot.credential();
                    let outcome = this.persist(&slot, &credential).await;
                    if outcome.is_ok() {
                        slot.persisted();
                    }
                    let _ = tx.send(outcome);
                })
                .await;
            match (ran, rx.await) {
                (true, Ok(Ok(()))) => report.persisted.push(slot.id.clone()),
                (true, Ok(Err(reason))) => {
                    let attempts = slot.record_persistence_failure();
                    self.emit(Event::new(
                        self.now(),
                        EventKind::PersistenceFailed {
                            credential: slot.id.clone(),
                            reason,
                            attempts,
                        },
                    ));
                }
                // A refresh was in flight (it persists its own result), or nothing was pending.
                _ => {}
            }
        }
    }

    async fn adopt_store_changes(&self, report: &mut MaintenanceReport) {
        let Some(store) = self.inner.store.clone() else {
            return;
        };
        let Ok(versions) = store.versions(&self.inner.provider).await else {
            return;
        };
        for (id, version) in versions {
            let Some(slot) = self.slot(id.as_str()) else {
                continue;
            };
            if slot.version.load(Ordering::Acquire) == version
                || slot.persist_pending.load(Ordering::Acquire)
            {
                continue;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            let provider = self.inner.provider.clone();
            let store = Arc::clone(&store);
            self.in_flight(&slot, move |this, slot| async move {
                // Re-read inside the flight: a refresh may have written a newer version since.
                let adopted = match store.load(&provider, &slot.id).await {
                    Ok(Some(stored)) if stored.version != slot.version.load(Ordering::Acquire) => {
                        this.adopt_external(
                            &slot,
                            stored.value,
                            Origin::Store {
                                version: stored.version,
                            },
                        )
                    }
                    _ => false,
                };
                let _ = tx.send(adopted);
            })
            .await;
            if rx.await.unwrap_or(false) {
                report.adopted.push(id);
            }
        }
    }
}
