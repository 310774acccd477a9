//! [`WebhookNotifier`]: signed, retried HTTP delivery from a bounded queue.

use std::collections::{BTreeSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use oauth_core::{Clock, Jitter, SystemClock, parse_retry_after};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{
    ConfigError, MonitoringConfig, RetrySchedule, WebhookEventType, WebhookSecret,
};
use crate::event::WebhookEvent;
use crate::notifier::{Notifier, ShutdownReport};
use crate::signing::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign_all};

/// Delivers events to `webhook_url` over HTTP, following Standard Webhooks.
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
///   `max_delay`). **410 Gone disables the endpoint**: nothing more is sent, and later events are
///   discarded. Redirects are not followed.
/// - [`shutdown`](Notifier::shutdown) stops intake and waits, up to its deadline, for the queue to
///   drain; dropping the notifier without it abandons what is queued.
///
/// **Runtime:** [`new`](Self::new) spawns the delivery task on the current tokio runtime, so it
/// must be called from within one (it returns [`ConfigError::NoRuntime`] otherwise).
pub struct WebhookNotifier {
    shared: Arc<Shared>,
    filter: BTreeSet<WebhookEventType>,
    task: Mutex<Option<JoinHandle<()>>>,
    endpoint: String,
}

/// Delivery counters of a [`WebhookNotifier`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    /// Events waiting in the queue now.
    pub queued: u64,
    /// Deliveries in progress now (including those waiting to retry).
    pub in_flight: u64,
    /// The endpoint answered 410 Gone and is no longer called.
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
    in_flight: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<WebhookEvent>>,
    capacity: usize,
    wake: Notify,
    closing: AtomicBool,
    disabled: AtomicBool,
    counters: Counters,
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

#[derive(Debug)]
struct Deliverer {
    client: reqwest::Client,
    url: reqwest::Url,
    secrets: Vec<WebhookSecret>,
    retry: RetrySchedule,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
}

impl WebhookNotifier {
    /// A notifier for `config` using the system clock for signing timestamps.
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration is invalid, `webhook_url` is missing or unusable, the
    /// HTTP client cannot be built, or there is no tokio runtime.
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
        config.validate()?;
        let raw = config
            .webhook_url
            .as_deref()
            .ok_or(ConfigError::MissingUrl)?;
        let url = reqwest::Url::parse(raw).map_err(|_| ConfigError::InvalidUrl {
            reason: "not a valid absolute URL",
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ConfigError::InvalidUrl {
                reason: "the URL must be http(s) with a host",
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("oauth-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::HttpClient(Box::new(e.without_url())))?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::with_capacity(config.queue_capacity.min(4096))),
            capacity: config.queue_capacity,
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            disabled: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let deliverer = Arc::new(Deliverer {
            client,
            url,
            secrets: config.signing_secrets.clone(),
            retry: config.retry,
            clock,
            shared: Arc::clone(&shared),
        });
        let task = runtime.spawn(run(deliverer, config.max_concurrent_deliveries));
        Ok(Self {
            shared,
            filter: config.webhook_events.clone(),
            task: Mutex::new(Some(task)),
            endpoint: crate::config::redact_url(raw),
        })
    }

    /// The delivery counters now.
    pub fn stats(&self) -> DeliveryStats {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DeliveryStats {
            delivered: load(&c.delivered),
            failed: load(&c.failed),
            dropped: load(&c.dropped),
            retried: load(&c.retried),
            discarded: load(&c.discarded),
            filtered: load(&c.filtered),
            queued: self.shared.queue().len() as u64,
            in_flight: load(&c.in_flight),
            endpoint_disabled: self.shared.disabled.load(Ordering::Relaxed),
        }
    }

    /// The endpoint, without path or query (safe to log).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn notify(&self, event: WebhookEvent) {
        let s = &*self.shared;
        if !self.filter.contains(&event.event_type) {
            Shared::bump(&s.counters.filtered);
            return;
        }
        if s.disabled.load(Ordering::Relaxed) {
            Shared::bump(&s.counters.discarded);
            return;
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
            let oldest = if q.len() >= s.capacity {
                q.pop_front()
            } else {
                None
            };
            q.push_back(event);
            oldest
        };
        if oldest.is_some() {
            Shared::bump(&s.counters.dropped);
        }
        s.wake.notify_one();
    }

    async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let s = &*self.shared;
        {
            let _queue = s.queue();
            s.closing.store(true, Ordering::Relaxed);
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
            endpoint = %self.endpoint,
            abandoned,
            "webhook notifier shutdown deadline passed; undelivered events abandoned"
        );
        ShutdownReport {
            abandoned,
            timed_out: true,
        }
    }
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("endpoint", &self.endpoint)
            .field("events", &self.filter)
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

/// The delivery task: keeps up to `max_in_flight` deliveries going until shut down.
async fn run(deliverer: Arc<Deliverer>, max_in_flight: usize) {
    let shared = Arc::clone(&deliverer.shared);
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.len() < max_in_flight {
            let Some(event) = shared.queue().pop_front() else {
                break;
            };
            if shared.disabled.load(Ordering::Relaxed) {
                Shared::bump(&shared.counters.discarded);
                continue;
            }
            Shared::bump(&shared.counters.in_flight);
            let d = Arc::clone(&deliverer);
            in_flight.spawn(async move {
                d.deliver(event).await;
                // Saturating: a shutdown past its deadline has already written these off.
                let _ = d.shared.counters.in_flight.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |n| n.checked_sub(1),
                );
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

impl Deliverer {
    async fn deliver(&self, event: WebhookEvent) {
        let counters = &self.shared.counters;
        let Ok(body) = serde_json::to_vec(&event) else {
            Shared::bump(&counters.failed);
            return;
        };
        let mut jitter = Jitter::new(RandomState::new().hash_one(&event.id));
        let mut attempt = 1;
        loop {
            if self.shared.disabled.load(Ordering::Relaxed) {
                Shared::bump(&counters.discarded);
                return;
            }
            match self.attempt(&event.id, &body).await {
                Attempt::Delivered => {
                    Shared::bump(&counters.delivered);
                    return;
                }
                Attempt::Gone => {
                    self.shared.disabled.store(true, Ordering::Relaxed);
                    Shared::bump(&counters.failed);
                    tracing::warn!(
                        event_id = %event.id,
                        "webhook endpoint answered 410 Gone; it is disabled and no further events are sent"
                    );
                    return;
                }
                Attempt::Retry { .. } if attempt >= self.retry.max_attempts => {
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
                    let wait = self.retry.wait_before(attempt, retry_after, &mut jitter);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    Shared::bump(&counters.retried);
                }
            }
        }
    }

    async fn attempt(&self, id: &str, body: &[u8]) -> Attempt {
        let now = self.clock.now();
        let timestamp = now.timestamp();
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(HEADER_ID, id)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .body(body.to_vec());
        if !self.secrets.is_empty() {
            request = request.header(
                HEADER_SIGNATURE,
                sign_all(&self.secrets, id, timestamp, body),
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
}
