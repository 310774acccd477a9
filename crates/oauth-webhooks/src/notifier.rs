//! The [`Notifier`] trait and its in-process implementations.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::config::{ConfigError, MonitoringConfig};
use crate::event::WebhookEvent;

/// Where the pool sends [`WebhookEvent`]s (alerts and state changes).
///
/// `notify` must return quickly and never fail: an implementation that does I/O queues the event
/// and delivers it in the background, counting what it loses. The trait is dyn-compatible
/// (`Arc<dyn Notifier>`) through `#[async_trait]`, because native `async fn` in traits is not yet.
///
/// Methods after `notify` have default bodies, so the trait can grow without breaking
/// implementations.
#[async_trait]
pub trait Notifier: Send + Sync + Debug {
    /// Accepts one event for delivery. Never blocks on the network.
    async fn notify(&self, event: WebhookEvent);

    /// Stops accepting events and delivers what is queued, giving up at `deadline`.
    async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let _ = deadline;
        ShutdownReport::default()
    }

    /// Takes a new monitoring configuration for the next deliveries (called by
    /// [`Monitor`](crate::Monitor) when it starts and on every reconfiguration). Must be cheap and
    /// must not wait for deliveries in progress: those finish as they started.
    ///
    /// The default ignores it (events reach this notifier already filtered by the configuration).
    ///
    /// # Errors
    /// [`ConfigError`] when this notifier cannot use `config`; it then keeps its previous one.
    fn reconfigure(&self, config: &MonitoringConfig) -> Result<(), ConfigError> {
        let _ = config;
        Ok(())
    }

    /// Where deliveries go now, for the pool to report. The default is
    /// [`DeliveryStatus::Custom`].
    fn status(&self) -> DeliveryStatus {
        DeliveryStatus::Custom
    }
}

/// Where a [`Notifier`]'s (or a [`Monitor`](crate::Monitor)'s) events go now.
///
/// The endpoint is shown without path, query or user info (webhook URLs of chat services embed a
/// token in the path).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryStatus {
    /// Signed POSTs go to this endpoint (`scheme://host[:port]/…`).
    Webhook {
        /// The endpoint, redacted.
        endpoint: String,
    },
    /// Monitoring is on but its configuration has no `webhook_url`: alert rules run and
    /// `check_alerts` returns alerts, but **nothing is delivered**.
    NoWebhookUrl,
    /// The endpoint answered 410 Gone: nothing is sent until `webhook_url` is reconfigured.
    EndpointGone {
        /// The endpoint, redacted.
        endpoint: String,
    },
    /// Monitoring is off (no configuration): events are not routed and nothing is delivered.
    MonitoringOff,
    /// Events are discarded ([`NoopNotifier`]).
    Discarding,
    /// Events go to an application's own notifier, which delivers them its own way.
    Custom,
    /// Shut down: nothing more is accepted.
    ShutDown,
}

impl DeliveryStatus {
    /// Can an event routed now reach anyone (a webhook endpoint or a custom notifier)?
    pub const fn is_delivering(&self) -> bool {
        matches!(self, Self::Webhook { .. } | Self::Custom)
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Webhook { endpoint } => write!(f, "delivering signed webhooks to {endpoint}"),
            Self::NoWebhookUrl => f.write_str(
                "not delivering: the monitoring configuration has no webhook_url (alerts are \
                 evaluated, nothing is sent)",
            ),
            Self::EndpointGone { endpoint } => write!(
                f,
                "not delivering: {endpoint} answered 410 Gone; set a new webhook_url"
            ),
            Self::MonitoringOff => f.write_str("not delivering: monitoring is off"),
            Self::Discarding => f.write_str("not delivering: the notifier discards events"),
            Self::Custom => f.write_str("delivering to the application's notifier"),
            Self::ShutDown => f.write_str("not delivering: shut down"),
        }
    }
}

#[async_trait]
impl<T: Notifier + ?Sized> Notifier for Arc<T> {
    async fn notify(&self, event: WebhookEvent) {
        (**self).notify(event).await;
    }

    async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        (**self).shutdown(deadline).await
    }

    fn reconfigure(&self, config: &MonitoringConfig) -> Result<(), ConfigError> {
        (**self).reconfigure(config)
    }

    fn status(&self) -> DeliveryStatus {
        (**self).status()
    }
}

#[async_trait]
impl<T: Notifier + ?Sized> Notifier for Box<T> {
    async fn notify(&self, event: WebhookEvent) {
        (**self).notify(event).await;
    }

    async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        (**self).shutdown(deadline).await
    }

    fn reconfigure(&self, config: &MonitoringConfig) -> Result<(), ConfigError> {
        (**self).reconfigure(config)
    }

    fn status(&self) -> DeliveryStatus {
        (**self).status()
    }
}

/// What a [`Notifier::shutdown`] achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Events still queued or in flight when the deadline passed (lost).
    pub abandoned: u64,
    /// The deadline passed before everything was delivered or given up.
    pub timed_out: bool,
}

/// Discards every event (the default when no monitoring is configured).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopNotifier;

#[async_trait]
impl Notifier for NoopNotifier {
    async fn notify(&self, _event: WebhookEvent) {}

    fn status(&self) -> DeliveryStatus {
        DeliveryStatus::Discarding
    }
}

/// Sends events into a bounded tokio channel, for applications that consume events themselves
/// (forward them to a message bus, a log, a chat bot).
///
/// When the receiver lags and the channel is full, the new event is dropped and counted
/// ([`dropped`](Self::dropped)); `notify` never waits.
#[derive(Debug, Clone)]
pub struct ChannelNotifier {
    tx: mpsc::Sender<WebhookEvent>,
    dropped: Arc<AtomicU64>,
}

impl ChannelNotifier {
    /// A notifier and the receiving end of its channel of `capacity` events (at least 1).
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<WebhookEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let n = Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (n, rx)
    }

    /// Events dropped because the channel was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Notifier for ChannelNotifier {
    async fn notify(&self, event: WebhookEvent) {
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Keeps every event in memory, for tests and for inspection (`events()`). Clones share the list.
#[derive(Debug, Clone, Default)]
pub struct MemoryNotifier {
    events: Arc<Mutex<Vec<WebhookEvent>>>,
}

impl MemoryNotifier {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events received so far, in order.
    pub fn events(&self) -> Vec<WebhookEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Removes and returns the events received so far.
    pub fn take(&self) -> Vec<WebhookEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[async_trait]
impl Notifier for MemoryNotifier {
    async fn notify(&self, event: WebhookEvent) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::Map;

    use super::*;
    use crate::WebhookEventType;

    fn event(n: usize) -> WebhookEvent {
        WebhookEvent::new(
            WebhookEventType::Refresh,
            None,
            Utc::now(),
            format!("event {n}"),
            Map::new(),
        )
    }

    #[tokio::test]
    async fn channel_notifier_drops_when_full_without_waiting() {
        let (n, mut rx) = ChannelNotifier::new(2);
        let dynamic: Arc<dyn Notifier> = Arc::new(n.clone());
        for i in 0..5 {
            dynamic.notify(event(i)).await;
        }
        assert_eq!(n.dropped(), 3);
        assert_eq!(rx.recv().await.map(|e| e.message), Some("event 0".into()));
        assert_eq!(rx.recv().await.map(|e| e.message), Some("event 1".into()));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn memory_notifier_records_in_order_and_noop_discards() {
        let m = MemoryNotifier::new();
        m.notify(event(1)).await;
        m.notify(event(2)).await;
        let msgs: Vec<String> = m.take().into_iter().map(|e| e.message).collect();
        assert_eq!(msgs, ["event 1", "event 2"]);
        assert!(m.events().is_empty());
        NoopNotifier.notify(event(3)).await;
        assert_eq!(
            NoopNotifier.shutdown(Duration::ZERO).await,
            ShutdownReport::default()
        );
    }
}
