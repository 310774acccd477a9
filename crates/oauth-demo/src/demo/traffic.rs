//! Concurrent callers, what they saw, and the live views: progress line, pool events, webhooks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use oauth_manager::{
    ClassifyFailure, Event, EventKind, ExecuteError, ExposeSecret, FailureKind, OAuthKeyManager,
    Served, Usage,
};
use oauth_testkit::provider::{ChatClient, ChatError};
use oauth_testkit::token_server::TokenServer;
use oauth_testkit::webhook_receiver::WebhookReceiver;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::console::{Console, Source};
use super::report::{group, secs};

/// What the callers ask the fake model.
const PROMPTS: [&str; 4] = [
    "Summarize the plot of Hamlet in one sentence.",
    "Write a haiku about token refresh.",
    "Explain OAuth refresh-token rotation to a new engineer.",
    "List three reasons to pool API credentials.",
];

/// One attempt made with a credential: when it started (ms since the start) and how long it took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) start_ms: u32,
    pub(crate) latency_us: u32,
}

/// What the callers saw of one credential.
#[derive(Debug, Clone, Default)]
pub(crate) struct CredentialTally {
    pub(crate) attempts: u64,
    pub(crate) ok: u64,
    /// Failed attempts by classification.
    pub(crate) failures: BTreeMap<&'static str, u64>,
    pub(crate) samples: Vec<Sample>,
}

/// What the callers saw overall.
#[derive(Debug)]
pub(crate) struct Traffic {
    start: Instant,
    pub(crate) ok: AtomicU64,
    /// Request-scoped rejections (400), returned without failover.
    pub(crate) rejected: AtomicU64,
    /// Calls that failed for any other reason.
    pub(crate) failed: AtomicU64,
    /// Calls served by another credential after a failed attempt.
    pub(crate) failed_over: AtomicU64,
    pub(crate) tokens: AtomicU64,
    per_credential: Mutex<BTreeMap<String, CredentialTally>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

fn saturating_u32(n: u128) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Traffic {
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            ok: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failed_over: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            per_credential: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Calls completed so far.
    pub(crate) fn completed(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
            + self.rejected.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
    }

    pub(crate) fn per_credential(&self) -> BTreeMap<String, CredentialTally> {
        self.per_credential
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Failed calls by what ended them.
    pub(crate) fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record_attempt(&self, id: &str, started: Instant, failure: Option<FailureKind>) {
        let sample = Sample {
            start_ms: saturating_u32(started.duration_since(self.start).as_millis()),
            latency_us: saturating_u32(started.elapsed().as_micros()),
        };
        let mut map = self
            .per_credential
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tally = map.entry(id.to_owned()).or_default();
        tally.attempts += 1;
        match failure {
            None => tally.ok += 1,
            Some(kind) => *tally.failures.entry(kind.as_str()).or_default() += 1,
        }
        tally.samples.push(sample);
    }

    fn record_call(&self, result: &Result<Served<Usage>, ExecuteError<ChatError>>) {
        match result {
            Ok(served) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.tokens
                    .fetch_add(served.value.total_tokens, Ordering::Relaxed);
                if served.attempts > 1 {
                    self.failed_over.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(ExecuteError::RequestScoped { .. }) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let what = match e {
                    ExecuteError::AttemptsExhausted { attempts, kind, .. } => {
                        format!("all {attempts} attempts failed, the last {}", kind.as_str())
                    }
                    ExecuteError::Unavailable { .. } => "no credential available".to_owned(),
                    ExecuteError::DeadlineExceeded { .. } => "deadline passed".to_owned(),
                    _ => "other".to_owned(),
                };
                *self
                    .errors
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(what)
                    .or_default() += 1;
            }
        }
    }
}

/// One caller: sends chat requests through the pool until `until`.
pub(crate) async fn caller(
    pool: OAuthKeyManager,
    client: Arc<ChatClient>,
    traffic: Arc<Traffic>,
    first_prompt: usize,
    until: Instant,
) {
    let mut n = first_prompt;
    while Instant::now() < until {
        let prompt = PROMPTS[n % PROMPTS.len()];
        n += 1;
        let result = pool
            .execute_with_failover(|credential| {
                let client = Arc::clone(&client);
                let traffic = Arc::clone(&traffic);
                async move {
                    let started = Instant::now();
                    let result = client
                        .chat(credential.access_token.expose_secret(), prompt)
                        .await;
                    traffic.record_attempt(
                        credential.id.as_str(),
                        started,
                        result.as_ref().err().map(ClassifyFailure::failure_kind),
                    );
                    result.map(|reply| (reply.usage, Some(reply.usage)))
                }
            })
            .await;
        traffic.record_call(&result);
    }
}

/// The pool's events as received by a subscriber.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    pub(crate) events: Vec<Event>,
    /// Events the subscriber missed (it lagged behind the bounded channel).
    pub(crate) lost: u64,
}

/// Backoffs of one credential that came together (requests in flight when it started failing
/// each report their failure): printed as one line.
struct Burst {
    event: Event,
    first: chrono::DateTime<chrono::Utc>,
    count: u32,
}

/// Receives the pool's events, prints the noteworthy ones, and keeps them all.
pub(crate) async fn record_events(
    mut events: broadcast::Receiver<Event>,
    console: Arc<Console>,
    log: Arc<Mutex<EventLog>>,
) {
    let print = |event: &Event, together: u32| {
        if let Some(mut text) = describe(event) {
            if together > 1 {
                text.push_str(&format!(" ({together} requests in flight failed together)"));
            }
            let id = event.credential().map_or("-", |c| c.as_str());
            console.event_at(console.offset(event.at), Source::Pool, id, &text);
        }
    };
    let mut burst: Option<Burst> = None;
    loop {
        let received = if burst.is_some() {
            match tokio::time::timeout(Duration::from_millis(150), events.recv()).await {
                Ok(received) => received,
                Err(_) => {
                    if let Some(b) = burst.take() {
                        print(&b.event, b.count);
                    }
                    continue;
                }
            }
        } else {
            events.recv().await
        };
        match received {
            Ok(event) => {
                log.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .events
                    .push(event.clone());
                if matches!(event.kind, EventKind::BackedOff { .. }) {
                    if let Some(b) = burst.as_mut().filter(|b| {
                        b.event.credential() == event.credential()
                            && event.at - b.first < chrono::TimeDelta::milliseconds(100)
                    }) {
                        b.event = event;
                        b.count += 1;
                        continue;
                    }
                    if let Some(b) = burst.take() {
                        print(&b.event, b.count);
                    }
                    burst = Some(Burst {
                        first: event.at,
                        event,
                        count: 1,
                    });
                    continue;
                }
                if let Some(b) = burst.take() {
                    print(&b.event, b.count);
                }
                print(&event, 1);
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                log.lock().unwrap_or_else(PoisonError::into_inner).lost += n;
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

fn describe(event: &Event) -> Option<String> {
    let at = event.at;
    let until = |t: chrono::DateTime<chrono::Utc>| secs((t - at).to_std().unwrap_or_default());
    Some(match &event.kind {
        EventKind::Refreshed {
            refresh_token_rotated,
            expires_at,
            ..
        } => format!(
            "token refreshed{}{}",
            expires_at.map_or_else(String::new, |t| format!(
                ", valid for {} min",
                ((t - at).num_seconds() + 30) / 60
            )),
            if *refresh_token_rotated {
                "; the token endpoint rotated the refresh token"
            } else {
                ""
            }
        ),
        EventKind::RefreshFailed { reason, .. } => {
            format!("refresh failed: {}", reason.as_str())
        }
        EventKind::CooledDown { until: t, .. } => {
            format!("rate-limited: cooling down for {}", until(*t))
        }
        EventKind::BackedOff {
            until: t,
            consecutive_failures,
            ..
        } => format!(
            "backing off for {} after {consecutive_failures} failure{}",
            until(*t),
            if *consecutive_failures == 1 { "" } else { "s" }
        ),
        EventKind::BecameUnhealthy { .. } => "unhealthy (too many consecutive failures)".into(),
        EventKind::Recovered { .. } => "recovered".into(),
        EventKind::NeedsReauthorization { .. } => {
            "needs re-authorization: its grant is dead, a human must sign in again".into()
        }
        EventKind::RotationStarted {
            replacement,
            decommission_at,
            ..
        } => format!(
            "rotation started: {replacement} preferred, decommission in {}",
            until(*decommission_at)
        ),
        EventKind::Decommissioned { .. } => "decommissioned: removed from the pool".into(),
        EventKind::DecommissionFailed { reason, .. } => format!("decommission failed: {reason}"),
        EventKind::PoolExhausted { .. } => "pool exhausted: no credential available".into(),
        EventKind::PersistenceFailed { reason, .. } => format!("persisting failed: {reason}"),
        _ => return None,
    })
}

/// Keeps the progress line fresh and prints webhook deliveries as they arrive, until `stop`.
pub(crate) async fn watch(
    console: Arc<Console>,
    pool: OAuthKeyManager,
    tokens: Arc<TokenServer>,
    receiver: Arc<WebhookReceiver>,
    traffic: Arc<Traffic>,
    duration: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut shown = 0;
    let mut ticks: u64 = 0;
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    loop {
        let stopping = tokio::select! {
            _ = interval.tick() => false,
            _ = stop.changed() => true,
        };
        shown = print_webhooks(&console, &receiver, shown);
        if stopping {
            break;
        }
        ticks += 1;
        if (console.is_live() && ticks.is_multiple_of(2)) || ticks.is_multiple_of(50) {
            console.progress(progress_line(&console, &pool, &tokens, &traffic, duration));
        }
    }
    console.end_progress();
}

fn progress_line(
    console: &Console,
    pool: &OAuthKeyManager,
    tokens: &TokenServer,
    traffic: &Traffic,
    duration: Duration,
) -> String {
    let elapsed = console.elapsed().min(duration);
    let done = traffic.completed();
    let failed = traffic.rejected.load(Ordering::Relaxed) + traffic.failed.load(Ordering::Relaxed);
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let ids = pool.credential_ids();
    let available = ids
        .iter()
        .filter(|id| {
            pool.credential_health(id.as_str())
                .is_some_and(|h| h.is_available)
        })
        .count();
    format!(
        "  {:>5.1}s of {}s   requests {}   ok {}   failed {}   {} req/s   available {available}/{}   refreshes {}",
        elapsed.as_secs_f64(),
        duration.as_secs(),
        group(done),
        group(traffic.ok.load(Ordering::Relaxed)),
        group(failed),
        group(rate.round() as u64),
        ids.len(),
        tokens.stats().refreshes,
    )
}

/// Prints the deliveries after the first `shown`; returns how many are shown now.
fn print_webhooks(console: &Console, receiver: &WebhookReceiver, shown: usize) -> usize {
    let requests = receiver.requests();
    for request in requests.iter().skip(shown) {
        let json = request.json().unwrap_or_default();
        let kind = json.get("type").and_then(|v| v.as_str()).unwrap_or("?");
        let id = json
            .get("credential_id")
            .and_then(|v| v.as_str())
            .unwrap_or("-");
        let verdict = match &request.verification {
            Ok(()) => "signature verified".to_owned(),
            Err(reason) => format!("signature REJECTED: {reason}"),
        };
        let at = request.at.saturating_duration_since(console.start());
        console.event_at(at, Source::Webhook, id, &format!("{kind} ({verdict})"));
    }
    requests.len().max(shown)
}
