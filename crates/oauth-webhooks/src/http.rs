//! [`WebhookNotifier`]: signed, retried HTTP delivery from a bounded queue, reconfigurable at run
//! time.

use std::collections::{BTreeSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use oauth_core::{Clock, Jitter, SystemClock, parse_retry_after};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{
    ConfigError, MonitoringConfig, RetrySchedule, WebhookEventType, WebhookSecret, redact_url,
};
use crate::event::WebhookEvent;
use crate::notifier::{DeliveryStatus, Notifier, ShutdownReport};
use crate::signing::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign_all};

/// Delivers events to `webhook_url` over HTTP, following Standard Webhooks, with the
/// configuration it was last given.
///
/// - Each delivery carries `webhook-id` (the event id, the same on every retry),
///   `webhook-timestamp` (the attempt's Unix time) and, when secrets are configured,
///   `webhook-signature` (one `v1,<base64 HMAC-SHA256>` per secret).
/// - [`notify`](Notifier::notify) only filters (`webhook_events`) and enqueues: it never waits for
///   the network. The queue holds `queue_capacity` events; when it is full the **oldest** event is
///   dropped and counted in [`DeliveryStats::dropped`].
/// - A background task drains the queue with up to `max_concurrent_deliveries` deliveries in
///   flight. A delivery succeeds on 2xx; a transport error, timeout, 3xx, 4xx or 5xx is retried on
///   the [`RetrySchedule`] (exponential backoff with jitter, at least `Retry-After` when sent, up to
///   `max_delay`). **410 Gone disables the endpoint**: nothing more is sent to that URL, and later
///   events are discarded until `webhook_url` is reconfigured. Redirects are not followed.
/// - [`reconfigure`](Notifier::reconfigure) swaps the configuration atomically (the send path
///   reads it without a lock): URL, secrets, event filter, retries, timeout, queue capacity and
///   concurrency apply from the next delivery on (an event still queued is delivered with the
///   configuration current when its delivery starts). A delivery in progress, retries included,
///   finishes with the configuration it started with.
/// - Without a `webhook_url` ([`for_monitoring`](Self::for_monitoring), or reconfigured to none)
///   nothing is queued or sent: such events are counted in [`DeliveryStats::no_url`] and
///   [`status`](Notifier::status) says [`DeliveryStatus::NoWebhookUrl`].
/// - [`shutdown`](Notifier::shutdown) stops intake and waits, up to its deadline, for the queue to
///   drain; dropping the notifier without it abandons what is queued.
///
/// **Runtime:** constructing spawns nothing. The delivery task is spawned on the current tokio
/// runtime by the first event that is queued (so `notify` must run inside one; outside, events
/// wait in the queue until a later `notify` or `shutdown` runs inside one).
pub struct WebhookNotifier {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
    started: AtomicBool,
}

/// Delivery counters of a [`WebhookNotifier`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryStats {
    /// Events the endpoint accepted (2xx).
    pub delivered: u64,
    /// Events given up on: every attempt failed, or the endpoint answered 410.
    pub failed: u64,
    /// Events dropped because the queue was full (the oldest goes).
    pub dropped: u64,
    /// Retry attempts made (attempts after the first).
    pub retried: u64,
    /// Events discarded unsent: the endpoint was disabled by a 410, or the notifier was shutting
    /// down (including those abandoned at the shutdown deadline).
    pub discarded: u64,
    /// Events skipped because their type is not in `webhook_events`.
    pub filtered: u64,
    /// Events not sent because the configuration had no `webhook_url` (when they arrived, or when
    /// their delivery was due to start).
    pub no_url: u64,
    /// Configurations taken by [`reconfigure`](Notifier::reconfigure).
    pub reconfigured: u64,
    /// Events waiting in the queue now.
    pub queued: u64,
    /// Deliveries in progress now (including those waiting to retry).
    pub in_flight: u64,
    /// The current endpoint answered 410 Gone and is no longer called.
    pub endpoint_disabled: bool,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retried: AtomicU64,
    discarded: AtomicU64,
    filtered: AtomicU64,
    no_url: AtomicU64,
    reconfigured: AtomicU64,
    in_flight: AtomicU64,
}

/// Where deliveries go: one URL, and whether it answered 410 (shared by the configurations that
/// keep this URL).
#[derive(Debug)]
struct Target {
    url: reqwest::Url,
    redacted: String,
    gone: Arc<AtomicBool>,
}

impl Target {
    fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}

/// One configuration, as the send path reads it. Immutable: a reconfiguration swaps in a new one,
/// and a delivery keeps the `Arc` it started with.
#[derive(Debug)]
struct Endpoint {
    target: Option<Target>,
    filter: BTreeSet<WebhookEventType>,
    secrets: Vec<WebhookSecret>,
    retry: RetrySchedule,
    timeout: Duration,
}

impl Endpoint {
    /// Parses `config` (validated already); keeps `previous`'s 410 state when the URL is the same.
    fn from_config(
        config: &MonitoringConfig,
        previous: Option<&Self>,
    ) -> Result<Self, ConfigError> {
        let target = match config.webhook_url.as_deref() {
            None => None,
            Some(raw) => {
                let url = reqwest::Url::parse(raw).map_err(|_| ConfigError::InvalidUrl {
                    reason: "not a valid absolute URL",
                })?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(ConfigError::InvalidUrl {
                        reason: "the URL must be http(s) with a host",
                    });
                }
                let gone = previous
                    .and_then(|p| p.target.as_ref())
                    .filter(|t| t.url == url)
                    .map_or_else(|| Arc::new(AtomicBool::new(false)), |t| Arc::clone(&t.gone));
                Some(Target {
                    url,
                    redacted: redact_url(raw),
                    gone,
                })
            }
        };
        Ok(Self {
            target,
            filter: config.webhook_events.clone(),
            secrets: config.signing_secrets.clone(),
            retry: config.retry,
            timeout: config.timeout,
        })
    }
}

struct Shared {
    endpoint: ArcSwap<Endpoint>,
    /// Serializes reconfigurations (the read side takes no lock).
    reconfiguring: Mutex<()>,
    queue: Mutex<VecDeque<WebhookEvent>>,
    capacity: AtomicUsize,
    max_in_flight: AtomicUsize,
    wake: Notify,
    closing: AtomicBool,
    counters: Counters,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<WebhookEvent>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one attempt's outcome means.
enum Attempt {
    Delivered,
    Gone,
    Retry { retry_after: Option<Duration> },
}

impl WebhookNotifier {
    /// A notifier for `config`, which must have a `webhook_url`, using the system clock for
    /// signing timestamps.
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration is invalid, `webhook_url` is missing
    /// ([`ConfigError::MissingUrl`]) or unusable, or the HTTP client cannot be built.
    pub fn new(config: &MonitoringConfig) -> Result<Self, ConfigError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// Like [`new`](Self::new), reading the `webhook-timestamp` and `Retry-After` dates from
    /// `clock`. (Waits between retries are real tokio timers.)
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_clock(
        config: &MonitoringConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        if config.webhook_url.is_none() {
            return Err(ConfigError::MissingUrl);
        }
        Self::for_monitoring(config, clock)
    }

    /// A notifier that follows a monitoring configuration which may have no `webhook_url` yet:
    /// until it is [reconfigured](Notifier::reconfigure) with one it delivers nothing, counts what
    /// it did not send in [`DeliveryStats::no_url`], and its [`status`](Notifier::status) is
    /// [`DeliveryStatus::NoWebhookUrl`]. This is the notifier [`Monitor`](crate::Monitor) uses by
    /// default.
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration is invalid or the HTTP client cannot be built.
    pub fn for_monitoring(
        config: &MonitoringConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let endpoint = Endpoint::from_config(config, None)?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("oauth-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::HttpClient(Box::new(e.without_url())))?;
        let shared = Arc::new(Shared {
            endpoint: ArcSwap::from_pointee(endpoint),
            reconfiguring: Mutex::new(()),
            queue: Mutex::new(VecDeque::with_capacity(config.queue_capacity.min(4096))),
            capacity: AtomicUsize::new(config.queue_capacity),
            max_in_flight: AtomicUsize::new(config.max_concurrent_deliveries),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            counters: Counters::default(),
            client,
            clock,
        });
        Ok(Self {
            shared,
            task: Mutex::new(None),
            started: AtomicBool::new(false),
        })
    }

    /// The delivery counters now.
    pub fn stats(&self) -> DeliveryStats {
        let s = &*self.shared;
        let c = &s.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DeliveryStats {
            delivered: load(&c.delivered),
            failed: load(&c.failed),
            dropped: load(&c.dropped),
            retried: load(&c.retried),
            discarded: load(&c.discarded),
            filtered: load(&c.filtered),
            no_url: load(&c.no_url),
            reconfigured: load(&c.reconfigured),
            queued: s.queue().len() as u64,
            in_flight: load(&c.in_flight),
            endpoint_disabled: s
                .endpoint
                .load()
                .target
                .as_ref()
                .is_some_and(Target::is_gone),
        }
    }

    /// The current endpoint, without path or query (safe to log), or `None` without a
    /// `webhook_url`.
    pub fn endpoint(&self) -> Option<String> {
        self.shared
            .endpoint
            .load()
            .target
            .as_ref()
            .map(|t| t.redacted.clone())
    }

    /// Filters and enqueues `event` (what [`notify`](Notifier::notify) does, without the async
    /// call): never waits for the network or for a delivery.
    pub fn enqueue(&self, event: WebhookEvent) {
        let s = &*self.shared;
        {
            let endpoint = s.endpoint.load();
            let Some(target) = &endpoint.target else {
                Shared::bump(&s.counters.no_url);
                return;
            };
            if !endpoint.filter.contains(&event.event_type) {
                Shared::bump(&s.counters.filtered);
                return;
            }
            if target.is_gone() {
                Shared::bump(&s.counters.discarded);
                return;
            }
        }
        let oldest = {
            let mut q = s.queue();
            // Checked under the queue lock, which `shutdown` holds while setting it: an event is
            // either queued before the drain decides it is done, or discarded and counted.
            if s.closing.load(Ordering::Relaxed) {
                drop(q);
                Shared::bump(&s.counters.discarded);
                return;
            }
            let capacity = s.capacity.load(Ordering::Relaxed).max(1);
            let mut dropped = 0;
            while q.len() >= capacity {
                q.pop_front();
                dropped += 1;
            }
            q.push_back(event);
            dropped
        };
        if oldest > 0 {
            s.counters.dropped.fetch_add(oldest, Ordering::Relaxed);
        }
        self.ensure_running();
        s.wake.notify_one();
    }

    /// Spawns the delivery task on the current runtime if it is not running yet.
    fn ensure_running(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.is_some() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                *task = Some(rt.spawn(run(Arc::clone(&self.shared))));
                self.started.store(true, Ordering::Release);
            }
            Err(_) => tracing::warn!(
                "webhook event queued outside a tokio runtime: it is delivered once the notifier is \
                 used inside one"
            ),
        }
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn notify(&self, event: WebhookEvent) {
        self.enqueue(event);
    }

    async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let s = &*self.shared;
        let queued_before = {
            let queue = s.queue();
            s.closing.store(true, Ordering::Relaxed);
            queue.len()
        };
        if queued_before > 0 {
            // Events queued outside a runtime still get their chance.
            self.ensure_running();
        }
        s.wake.notify_one();
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut task) = task else {
            return ShutdownReport::default();
        };
        if tokio::time::timeout(deadline, &mut task).await.is_ok() {
            return ShutdownReport::default();
        }
        task.abort();
        let queued = std::mem::take(&mut *s.queue()).len() as u64;
        let abandoned = queued + s.counters.in_flight.swap(0, Ordering::Relaxed);
        s.counters.discarded.fetch_add(abandoned, Ordering::Relaxed);
        tracing::warn!(
            endpoint = self.endpoint().as_deref().unwrap_or("none"),
            abandoned,
            "webhook notifier shutdown deadline passed; undelivered events abandoned"
        );
        ShutdownReport {
            abandoned,
            timed_out: true,
        }
    }

    /// Validates `config` and swaps it in: the next delivery uses it, deliveries in progress finish
    /// with theirs. A URL that answered 410 stays disabled only while it is the same URL.
    fn reconfigure(&self, config: &MonitoringConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let s = &*self.shared;
        let _serial = s
            .reconfiguring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = s.endpoint.load_full();
        let next = Endpoint::from_config(config, Some(current.as_ref()))?;
        s.endpoint.store(Arc::new(next));
        s.capacity.store(config.queue_capacity, Ordering::Relaxed);
        s.max_in_flight
            .store(config.max_concurrent_deliveries, Ordering::Relaxed);
        Shared::bump(&s.counters.reconfigured);
        // The delivery task may have room for more deliveries now.
        s.wake.notify_one();
        Ok(())
    }

    fn status(&self) -> DeliveryStatus {
        let s = &*self.shared;
        if s.closing.load(Ordering::Relaxed) {
            return DeliveryStatus::ShutDown;
        }
        match &s.endpoint.load().target {
            None => DeliveryStatus::NoWebhookUrl,
            Some(t) if t.is_gone() => DeliveryStatus::EndpointGone {
                endpoint: t.redacted.clone(),
            },
            Some(t) => DeliveryStatus::Webhook {
                endpoint: t.redacted.clone(),
            },
        }
    }
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoint = self.shared.endpoint.load();
        f.debug_struct("WebhookNotifier")
            .field("status", &self.status())
            .field("events", &endpoint.filter)
            .field("signing_secrets", &endpoint.secrets.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for WebhookNotifier {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

/// The delivery task: keeps up to `max_concurrent_deliveries` deliveries going until shut down.
async fn run(shared: Arc<Shared>) {
    let mut in_flight = JoinSet::new();
    loop {
        let max_in_flight = shared.max_in_flight.load(Ordering::Relaxed).max(1);
        while in_flight.len() < max_in_flight {
            let Some(event) = shared.queue().pop_front() else {
                break;
            };
            // The configuration this delivery keeps to the end, retries included.
            let endpoint = shared.endpoint.load_full();
            match &endpoint.target {
                None => {
                    Shared::bump(&shared.counters.no_url);
                    continue;
                }
                Some(t) if t.is_gone() => {
                    Shared::bump(&shared.counters.discarded);
                    continue;
                }
                Some(_) => {}
            }
            Shared::bump(&shared.counters.in_flight);
            let s = Arc::clone(&shared);
            in_flight.spawn(async move {
                deliver(&s, &endpoint, event).await;
                // Saturating: a shutdown past its deadline has already written these off.
                let _ =
                    s.counters
                        .in_flight
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            });
        }
        if in_flight.is_empty()
            && shared.closing.load(Ordering::Relaxed)
            && shared.queue().is_empty()
        {
            return;
        }
        tokio::select! {
            () = shared.wake.notified(), if in_flight.len() < max_in_flight => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
}

async fn deliver(shared: &Shared, endpoint: &Endpoint, event: WebhookEvent) {
    let counters = &shared.counters;
    let Some(target) = &endpoint.target else {
        Shared::bump(&counters.no_url);
        return;
    };
    let Ok(body) = serde_json::to_vec(&event) else {
        Shared::bump(&counters.failed);
        return;
    };
    let mut jitter = Jitter::new(RandomState::new().hash_one(&event.id));
    let mut attempt = 1;
    loop {
        if target.is_gone() {
            Shared::bump(&counters.discarded);
            return;
        }
        match attempt_once(shared, endpoint, target, &event.id, &body).await {
            Attempt::Delivered => {
                Shared::bump(&counters.delivered);
                return;
            }
            Attempt::Gone => {
                target.gone.store(true, Ordering::Relaxed);
                Shared::bump(&counters.failed);
                tracing::warn!(
                    event_id = %event.id,
                    endpoint = %target.redacted,
                    "webhook endpoint answered 410 Gone; it is disabled until webhook_url is reconfigured"
                );
                return;
            }
            Attempt::Retry { .. } if attempt >= endpoint.retry.max_attempts => {
                Shared::bump(&counters.failed);
                tracing::warn!(
                    event_id = %event.id,
                    event_type = %event.event_type,
                    attempts = attempt,
                    "webhook delivery failed; giving up"
                );
                return;
            }
            Attempt::Retry { retry_after } => {
                let wait = endpoint
                    .retry
                    .wait_before(attempt, retry_after, &mut jitter);
                tokio::time::sleep(wait).await;
                attempt += 1;
                Shared::bump(&counters.retried);
            }
        }
    }
}

async fn attempt_once(
    shared: &Shared,
    endpoint: &Endpoint,
    target: &Target,
    id: &str,
    body: &[u8],
) -> Attempt {
    let now = shared.clock.now();
    let timestamp = now.timestamp();
    let mut request = shared
        .client
        .post(target.url.clone())
        .timeout(endpoint.timeout)
        .header(CONTENT_TYPE, "application/json")
        .header(HEADER_ID, id)
        .header(HEADER_TIMESTAMP, timestamp.to_string())
        .body(body.to_vec());
    if !endpoint.secrets.is_empty() {
        request = request.header(
            HEADER_SIGNATURE,
            sign_all(&endpoint.secrets, id, timestamp, body),
        );
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(event_id = id, error = %e.without_url(), "webhook attempt failed");
            return Attempt::Retry { retry_after: None };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered;
    }
    if status == StatusCode::GONE {
        return Attempt::Gone;
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now).ok());
    tracing::debug!(
        event_id = id,
        status = status.as_u16(),
        "webhook attempt rejected"
    );
    Attempt::Retry { retry_after }
}
