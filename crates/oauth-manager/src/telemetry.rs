//! Telemetry: events, metrics recorders and alert delivery. The manager reports what happened
//! here; oauth-webhooks decides what becomes a webhook.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, Event, EventKind, FailureKind};
use oauth_metrics::{
    CredentialMetrics, CredentialRecorder, InMemoryRecorder, MetricsRecorder, RequestOutcome,
};
use oauth_webhooks::Monitor;
use tokio::sync::broadcast;

/// Capacity of the event channel; a slower subscriber loses the oldest events and is told.
const EVENT_CAPACITY: usize = 1024;

/// Where the pool's reports go: subscribers, the in-memory recorder the manager's own reports read,
/// the application's recorder, and monitoring (oauth-webhooks' [`Monitor`]: the monitoring
/// configuration, alert rules and delivery).
pub(crate) struct Telemetry {
    provider: String,
    events: broadcast::Sender<Event>,
    monitor: Monitor,
    usage: Arc<InMemoryRecorder>,
    recorder: Arc<dyn MetricsRecorder>,
    /// Set when a call found no credential, so `PoolExhausted` is reported once per episode.
    exhausted: AtomicBool,
    /// When the store's current outage was reported (`StoreDisconnected`); `None` while the
    /// store is reachable (or cannot tell).
    store_down_since: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// Ids that left the pool recently: a late `record_request` for one of them (a call that was
    /// in flight when it was removed) must not bring its series back.
    departed: std::sync::Mutex<std::collections::VecDeque<CredentialId>>,
}

/// How many departed ids are remembered.
const DEPARTED: usize = 1024;

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("monitoring", &self.monitor.status())
            .field("recorder", &self.recorder)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    pub(crate) fn new(
        provider: String,
        usage: InMemoryRecorder,
        recorder: Arc<dyn MetricsRecorder>,
        monitor: Monitor,
    ) -> Self {
        Self {
            provider,
            events: broadcast::channel(EVENT_CAPACITY).0,
            monitor,
            usage: Arc::new(usage),
            recorder,
            exhausted: AtomicBool::new(false),
            store_down_since: std::sync::Mutex::new(None),
            departed: std::sync::Mutex::default(),
        }
    }

    /// The per-credential handles of a credential joining the pool: its series exist (at zero)
    /// from now on.
    pub(crate) fn register(
        &self,
        id: &CredentialId,
    ) -> (Arc<CredentialMetrics>, Arc<dyn CredentialRecorder>) {
        self.departed().retain(|d| d != id);
        (self.usage.register(id), self.recorder.handle(id))
    }

    /// A credential left the pool: all of its series go, and stay gone.
    pub(crate) fn forget(&self, id: &CredentialId) {
        {
            let mut departed = self.departed();
            if departed.len() == DEPARTED {
                departed.pop_front();
            }
            departed.push_back(id.clone());
        }
        self.usage.remove(id);
        self.recorder.remove(id);
    }

    fn departed(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<CredentialId>> {
        self.departed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands the pool's scrape-time gauges to the application's recorder.
    pub(crate) fn attach_gauges(&self, source: std::sync::Weak<dyn oauth_metrics::GaugeSource>) {
        self.recorder.attach_gauges(source);
    }

    /// The in-memory recorder behind the manager's own reports.
    pub(crate) fn usage(&self) -> &InMemoryRecorder {
        &self.usage
    }

    /// A request made with an id that is not in the pool (Go `RecordRequest` parity: counted in
    /// the in-memory recorder, within its bound on unknown ids; the application's recorder gets
    /// no series for it). An id that just left the pool is not recorded: its series stay gone.
    pub(crate) fn record_unknown_request(
        &self,
        id: &CredentialId,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
        now: DateTime<Utc>,
    ) {
        if self.departed().contains(id) {
            return;
        }
        self.usage.record_request(id, tokens, latency, outcome, now);
        // The id may have departed between the check and the record (`forget` ran in between
        // and removed nothing yet or already): look again, so its counters never outlive it.
        // The list stays locked while they go, so a `register` of the id coming back waits and
        // its fresh series are not the ones removed.
        let departed = self.departed();
        if departed.contains(id) {
            self.usage.remove(id);
        }
    }

    pub(crate) fn record_failover(&self, from: &CredentialId, reason: FailureKind) {
        if self.departed().contains(from) {
            return; // a call in flight on a removed credential brings no series back
        }
        self.usage.record_failover(from, reason);
        self.recorder.record_failover(from, reason);
        // As in `record_unknown_request`: departed meanwhile, its series go (under the lock).
        let departed = self.departed();
        if departed.contains(from) {
            self.usage.remove(from);
            self.recorder.remove(from);
        }
    }

    /// A tolerated token-response quirk of `id` (issue 13), for the application's recorder;
    /// the `TokenResponseQuirk` event is emitted separately. Not recorded for a credential that
    /// just left the pool.
    pub(crate) fn record_token_quirk(&self, id: &CredentialId, quirk: oauth_core::TokenQuirk) {
        if self.departed().contains(id) {
            return;
        }
        self.recorder.record_token_quirk(id, quirk);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Reports `event` to subscribers and to monitoring (which routes it, and delivers the
    /// webhook it becomes, if any).
    pub(crate) fn emit(&self, event: Event) {
        let _ = self.events.send(event.clone());
        self.monitor.notify_event(&event);
    }

    /// Monitoring: its configuration, alert rules and delivery.
    pub(crate) fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// A call was served: the pool is not exhausted (any more).
    pub(crate) fn served(&self) {
        // Read before writing: the flag's cache line is shared by every caller.
        if self.exhausted.load(Ordering::Relaxed) {
            self.exhausted.store(false, Ordering::Relaxed);
        }
    }

    /// The store says it is reachable (`up`) or not, at `now`: `StoreDisconnected` once per
    /// outage, `StoreReconnected` when it ends. Returns whether an event went out.
    pub(crate) fn store_status(&self, up: bool, now: DateTime<Utc>) -> bool {
        let kind = {
            let mut since = self
                .store_down_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match (up, *since) {
                (false, None) => {
                    *since = Some(now);
                    EventKind::StoreDisconnected {
                        provider: self.provider.clone(),
                    }
                }
                (true, Some(disconnected_at)) => {
                    *since = None;
                    EventKind::StoreReconnected {
                        provider: self.provider.clone(),
                        disconnected_at,
                    }
                }
                _ => return false,
            }
        };
        if up {
            tracing::info!(provider = %self.provider, "credential store reachable again");
        } else {
            tracing::warn!(
                provider = %self.provider,
                "credential store unreachable; serving the tokens held"
            );
        }
        self.emit(Event::new(now, kind));
        true
    }

    /// A call found no credential: `PoolExhausted` once per episode.
    pub(crate) fn exhausted(&self, next_available_at: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        if !self.exhausted.swap(true, Ordering::Relaxed) {
            self.emit(Event::new(
                now,
                EventKind::PoolExhausted {
                    provider: self.provider.clone(),
                    next_available_at,
                },
            ));
        }
    }
}
