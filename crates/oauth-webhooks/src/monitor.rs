//! [`Monitor`]: the pool's monitoring as one component. It holds the current
//! [`MonitoringConfig`], routes events, runs the alert rules and delivers what the configuration
//! asks for, to signed webhooks by default or to a custom [`Notifier`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use oauth_core::{Event, EventKind};

use crate::alert::{AlertFacts, AlertState, check_alerts};
use crate::config::{ConfigError, MonitoringConfig};
use crate::event::WebhookEvent;
#[cfg(feature = "http")]
use crate::http::{DeliveryStats, WebhookNotifier};
use crate::notifier::{DeliveryStatus, Notifier, ShutdownReport};
use crate::route::route_event;

/// The pool's monitoring: the current [`MonitoringConfig`] (or none: monitoring off), the alert
/// cooldown history, and where alerts go.
///
/// - [`route`](Self::route) / [`notify_event`](Self::notify_event): what an oauth-core [`Event`]
///   becomes under the current configuration ([`route_event`]), and delivering it.
/// - [`check_alerts`](Self::check_alerts): the alert rules ([`check_alerts`](crate::check_alerts))
///   with the current configuration and this monitor's cooldown history; the alerts the filter
///   wants are delivered, and all are returned.
/// - [`reconfigure`](Self::reconfigure): takes a new configuration at run time. The send path
///   reads it without a lock (arc-swap). URL, secrets, event filter, retries, timeout, queue and
///   concurrency apply from the next delivery; deliveries in progress finish with the
///   configuration they started with.
/// - [`status`](Self::status): where deliveries go now ([`DeliveryStatus`]), so a pool can say
///   when it delivers nothing.
///
/// **Where events go.** [`new`](Self::new) (feature `http`) delivers to the configuration's
/// `webhook_url` with a [`WebhookNotifier`]: signed Standard Webhooks POSTs, queued, retried.
/// Without a `webhook_url` nothing is delivered and the status is
/// [`DeliveryStatus::NoWebhookUrl`]. [`with_notifier`](Self::with_notifier) hands routed events to
/// the application's own [`Notifier`] instead, and tells it each configuration through
/// [`Notifier::reconfigure`] (a `WebhookNotifier` given this way follows the configuration too).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use chrono::Utc;
/// use oauth_core::{CredentialId, Event, EventKind, FailureKind};
/// use oauth_webhooks::{DeliveryStatus, MemoryNotifier, Monitor, MonitoringConfig};
///
/// // Monitoring on, no webhook_url: alerts are evaluated, nothing is delivered, and it says so.
/// let monitor = Monitor::new(Some(MonitoringConfig::default()))?;
/// assert_eq!(monitor.status(), DeliveryStatus::NoWebhookUrl);
///
/// // An application's own notifier gets the routed events.
/// let sink = Arc::new(MemoryNotifier::new());
/// let monitor = Monitor::with_notifier(None, sink.clone())?;
/// let failed = Event::new(Utc::now(), EventKind::RefreshFailed {
///     credential: CredentialId::new("team")?,
///     reason: FailureKind::Transient,
///     consecutive_failures: 1,
/// });
/// assert!(monitor.notify_event(&failed));
/// tokio::task::yield_now().await;
/// assert_eq!(sink.events().len(), 1);
///
/// // Monitoring off: nothing is routed.
/// monitor.reconfigure(None)?;
/// assert!(!monitor.notify_event(&failed));
/// assert_eq!(monitor.status(), DeliveryStatus::MonitoringOff);
/// # Ok(())
/// # }
/// ```
pub struct Monitor {
    config: ArcSwapOption<MonitoringConfig>,
    reconfiguring: Mutex<()>,
    alerts: Mutex<AlertState>,
    sink: Sink,
    unscheduled: AtomicU64,
}

enum Sink {
    #[cfg(feature = "http")]
    Webhook(Arc<WebhookNotifier>),
    Custom(Arc<dyn Notifier>),
}

impl Sink {
    fn notifier(&self) -> Arc<dyn Notifier> {
        match self {
            #[cfg(feature = "http")]
            Self::Webhook(n) => Arc::clone(n) as Arc<dyn Notifier>,
            Self::Custom(n) => Arc::clone(n),
        }
    }
}

impl Monitor {
    /// Monitoring with `config` (`None`: off until [reconfigured](Self::reconfigure)), delivering
    /// to its `webhook_url` with a [`WebhookNotifier`] that signs with the system clock.
    ///
    /// Spawns nothing: the delivery task starts with the first delivery, on the runtime it runs
    /// in.
    ///
    /// # Errors
    /// [`ConfigError`] when `config` is invalid or the HTTP client cannot be built.
    #[cfg(feature = "http")]
    pub fn new(config: Option<MonitoringConfig>) -> Result<Self, ConfigError> {
        Self::with_clock(config, Arc::new(oauth_core::SystemClock))
    }

    /// Like [`new`](Self::new), with `clock` for the `webhook-timestamp` header and `Retry-After`
    /// dates.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    #[cfg(feature = "http")]
    pub fn with_clock(
        config: Option<MonitoringConfig>,
        clock: Arc<dyn oauth_core::Clock>,
    ) -> Result<Self, ConfigError> {
        let notifier = match &config {
            Some(c) => WebhookNotifier::for_monitoring(c, clock)?,
            None => WebhookNotifier::for_monitoring(&MonitoringConfig::default(), clock)?,
        };
        Ok(Self::assemble(config, Sink::Webhook(Arc::new(notifier))))
    }

    /// Monitoring that hands routed events and alerts to `notifier`.
    ///
    /// With `Some(config)`, the notifier is [told](Notifier::reconfigure) the configuration now
    /// and on every reconfiguration. With `None`, plugging in a notifier turns monitoring on with
    /// the [`MonitoringConfig::default`] rules and filter, and the notifier keeps its own settings
    /// (a `WebhookNotifier` built for a URL keeps posting there) until a configuration is given.
    ///
    /// # Errors
    /// [`ConfigError`] when `config` is invalid or the notifier refuses it.
    pub fn with_notifier(
        config: Option<MonitoringConfig>,
        notifier: Arc<dyn Notifier>,
    ) -> Result<Self, ConfigError> {
        let config = match config {
            Some(c) => {
                c.validate()?;
                notifier.reconfigure(&c)?;
                c
            }
            None => MonitoringConfig::default(),
        };
        Ok(Self::assemble(Some(config), Sink::Custom(notifier)))
    }

    fn assemble(config: Option<MonitoringConfig>, sink: Sink) -> Self {
        Self {
            config: ArcSwapOption::new(config.map(Arc::new)),
            reconfiguring: Mutex::new(()),
            alerts: Mutex::new(AlertState::new()),
            sink,
            unscheduled: AtomicU64::new(0),
        }
    }

    /// The current configuration, or `None` when monitoring is off.
    pub fn config(&self) -> Option<Arc<MonitoringConfig>> {
        self.config.load_full()
    }

    /// Replaces the configuration (Go `SetMonitoringConfig`); `None` turns monitoring off (events
    /// already accepted for delivery are still delivered).
    ///
    /// The new configuration is validated and handed to the notifier before it is used for
    /// routing; on error nothing changes.
    ///
    /// # Errors
    /// [`ConfigError`] when `config` is invalid or the notifier refuses it.
    pub fn reconfigure(&self, config: Option<MonitoringConfig>) -> Result<(), ConfigError> {
        let _serial = self
            .reconfiguring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = &config {
            c.validate()?;
            match &self.sink {
                #[cfg(feature = "http")]
                Sink::Webhook(n) => n.reconfigure(c)?,
                Sink::Custom(n) => n.reconfigure(c)?,
            }
        }
        self.config.store(config.map(Arc::new));
        Ok(())
    }

    /// What `event` becomes under the current configuration ([`route_event`]), or `None` (monitoring
    /// off, not worth a webhook, its `alert_on_*` switch off, or filtered out). Also remembers
    /// events that an alert rule would repeat (refresh failures, re-authorization,
    /// misconfiguration, pool exhausted), so [`check_alerts`](Self::check_alerts) does not send them again within the
    /// cooldown. Delivers nothing.
    pub fn route(&self, event: &Event) -> Option<WebhookEvent> {
        let config = self.config.load();
        let config = config.as_ref()?;
        if matches!(
            event.kind,
            EventKind::RefreshFailed { .. }
                | EventKind::NeedsReauthorization { .. }
                | EventKind::Misconfigured { .. }
                | EventKind::PoolExhausted { .. }
        ) {
            self.alert_state().note_event(event);
        }
        route_event(config, event)
    }

    /// Routes `event` and delivers the webhook it becomes, if any. Returns whether one was handed
    /// to the notifier. Never waits for the network.
    pub fn notify_event(&self, event: &Event) -> bool {
        match self.route(event) {
            Some(webhook) => {
                self.dispatch(webhook);
                true
            }
            None => false,
        }
    }

    /// Hands `webhook` to the notifier without routing (the caller decided). The built-in
    /// notifier enqueues at once; a custom notifier's `notify` runs on a task spawned on the
    /// current tokio runtime (outside one, the event is counted in
    /// [`unscheduled`](Self::unscheduled) and dropped).
    pub fn dispatch(&self, webhook: WebhookEvent) {
        match &self.sink {
            #[cfg(feature = "http")]
            Sink::Webhook(n) => n.enqueue(webhook),
            Sink::Custom(n) => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let n = Arc::clone(n);
                    rt.spawn(async move { n.notify(webhook).await });
                }
                Err(_) => {
                    self.unscheduled.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        event_type = %webhook.event_type,
                        "alert dropped: a custom notifier needs a tokio runtime to be called"
                    );
                }
            },
        }
    }

    /// Evaluates the alert rules at `now` with the current configuration (Go `CheckAlerts`),
    /// delivers the alerts its `webhook_events` filter wants, and returns all of them in
    /// [`check_alerts`](crate::check_alerts)'s order. Empty while monitoring is off.
    pub fn check_alerts<'a, I>(&self, inputs: &[I], now: DateTime<Utc>) -> Vec<WebhookEvent>
    where
        I: Copy + Into<AlertFacts<'a>>,
    {
        let Some(config) = self.config.load_full() else {
            return Vec::new();
        };
        let alerts = check_alerts(&config, inputs, &mut self.alert_state(), now);
        for alert in &alerts {
            if config.wants(alert.event_type) {
                self.dispatch(alert.clone());
            }
        }
        alerts
    }

    /// Forgets the alert cooldown history (e.g. after an operator acknowledged the alerts).
    pub fn clear_alert_history(&self) {
        self.alert_state().clear();
    }

    /// Where deliveries go now: [`DeliveryStatus::MonitoringOff`] without a configuration, else
    /// the notifier's status ([`DeliveryStatus::NoWebhookUrl`] for the built-in one without a
    /// URL).
    pub fn status(&self) -> DeliveryStatus {
        if self.config.load().is_none() {
            return DeliveryStatus::MonitoringOff;
        }
        match &self.sink {
            #[cfg(feature = "http")]
            Sink::Webhook(n) => n.status(),
            Sink::Custom(n) => n.status(),
        }
    }

    /// The built-in webhook notifier's counters, or `None` with a custom notifier.
    #[cfg(feature = "http")]
    pub fn delivery_stats(&self) -> Option<DeliveryStats> {
        match &self.sink {
            Sink::Webhook(n) => Some(n.stats()),
            Sink::Custom(_) => None,
        }
    }

    /// Alerts for a custom notifier dropped because no tokio runtime was there to call it.
    pub fn unscheduled(&self) -> u64 {
        self.unscheduled.load(Ordering::Relaxed)
    }

    /// The notifier events are handed to.
    pub fn notifier(&self) -> Arc<dyn Notifier> {
        self.sink.notifier()
    }

    /// Stops intake and delivers what is queued, giving up at `deadline`.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.sink.notifier().shutdown(deadline).await
    }

    fn alert_state(&self) -> MutexGuard<'_, AlertState> {
        self.alerts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("config", &self.config.load().as_deref())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}

    /// The pool holds a `Monitor` in a cheaply cloned, `Send + Sync` manager and awaits its
    /// shutdown on any task.
    #[tokio::test]
    async fn monitor_is_send_sync_and_its_shutdown_is_send() {
        let monitor = Monitor::with_notifier(None, Arc::new(crate::NoopNotifier)).expect("valid");
        send_sync(&monitor);
        send(monitor.shutdown(Duration::ZERO));
        assert_eq!(monitor.status(), DeliveryStatus::Discarding);
    }
}
