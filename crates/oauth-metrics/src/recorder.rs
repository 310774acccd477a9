//! The recording seam: [`MetricsRecorder`], its per-credential [`CredentialRecorder`] handles, the
//! classified outcomes they record, a no-op recorder and a fan-out.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, CredentialState, FailureKind, HealthSnapshot, TokenQuirk};

/// Receives the pool's metrics. Sync, infallible and cheap: recording never blocks on I/O and never
/// fails.
///
/// The manager calls [`handle`](Self::handle) **once** per credential, when the credential enters
/// the pool, and caches the returned [`CredentialRecorder`]. The hot path is then a virtual call on
/// a per-credential object: no map lookup, and no lock shared by all credentials.
pub trait MetricsRecorder: Send + Sync + fmt::Debug {
    /// The recorder for one credential. May be called again for the same id (for example after
    /// [`remove`](Self::remove)); implementations return a handle recording into the same series
    /// while the credential is known.
    fn handle(&self, credential: &CredentialId) -> Arc<dyn CredentialRecorder>;

    /// A failover away from `from`, caused by a failure of kind `reason`.
    fn record_failover(&self, from: &CredentialId, reason: FailureKind);

    /// A successful token response for `credential` had an oddity that was tolerated (its
    /// tokens were kept): called once per kind of [`TokenQuirk`] per response, next to the
    /// manager's `TokenResponseQuirk` event. The credential is given so a backend can choose;
    /// the Prometheus recorder counts per provider (`token_response_quirks_total{quirk}`), which
    /// keeps the series count independent of the pool's size. Nothing by default.
    fn record_token_quirk(&self, credential: &CredentialId, quirk: TokenQuirk) {
        let _ = (credential, quirk);
    }

    /// The credential left the pool (a rotation decommissioned it): drop what is kept for it.
    /// Handles already given out may still be called and must not panic.
    fn remove(&self, credential: &CredentialId) {
        let _ = credential;
    }

    /// The pool offers its scrape-time gauges (state, token expiry, cooldown) through `source`.
    /// A recorder that exports gauges keeps it and reads it when it is scraped, so the gauges are
    /// never stale; the others ignore it (the default). The pool calls this once, when it is
    /// built; a later call replaces the source. The reference is weak so that a recorder kept by
    /// the pool does not keep the pool alive: once the pool is gone its gauges are no longer
    /// exported.
    fn attach_gauges(&self, source: Weak<dyn GaugeSource>) {
        let _ = source;
    }
}

/// The pool as read at scrape time: one [`GaugeRow`] per credential. Implemented by the
/// manager; a recorder that exports gauges (the Prometheus recorder) gets one through
/// [`MetricsRecorder::attach_gauges`] and calls [`visit`](Self::visit) on every scrape, so what
/// `/metrics` shows is what the pool's health report would say at that moment.
///
/// `visit` reads the source's own clock (the manager's), computes every row at that one instant,
/// and must be cheap and non-blocking: it runs on the scraping thread, once per scrape.
///
/// ```
/// use std::time::Duration;
/// use oauth_core::{CredentialId, CredentialState};
/// use oauth_metrics::{GaugeRow, GaugeSource};
///
/// #[derive(Debug)]
/// struct Fixed(Vec<(CredentialId, CredentialState)>);
///
/// impl GaugeSource for Fixed {
///     fn visit(&self, f: &mut dyn FnMut(GaugeRow<'_>)) {
///         for (id, state) in &self.0 {
///             f(GaugeRow::new(id, *state).expires_in(Some(Duration::from_secs(60))));
///         }
///     }
/// }
///
/// let source = Fixed(vec![(CredentialId::new("a")?, CredentialState::Active)]);
/// let mut states = Vec::new();
/// source.visit(&mut |row| states.push(row.state));
/// assert_eq!(states, [CredentialState::Active]);
/// # Ok::<(), oauth_core::CredentialError>(())
/// ```
pub trait GaugeSource: Send + Sync + fmt::Debug {
    /// Calls `f` once for each credential in the pool, with its gauges now.
    fn visit(&self, f: &mut dyn FnMut(GaugeRow<'_>));

    /// Whether the pool's store is reachable now (`Some(true)` up, `Some(false)` down), exported
    /// as the per-provider `store_connected` gauge; `None` (the default) when the store cannot
    /// tell, and then no such gauge is exported.
    fn store_connected(&self) -> Option<bool> {
        None
    }
}

/// One credential's gauges at scrape time (see [`GaugeSource`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GaugeRow<'a> {
    /// The credential.
    pub credential: &'a CredentialId,
    /// What it is doing now.
    pub state: CredentialState,
    /// Time until its access token expires: `None` when no expiry is known, `Some(ZERO)` once
    /// expired.
    pub expires_in: Option<Duration>,
    /// Rate-limit cooldown left: `None` when not cooling down.
    pub cooldown_remaining: Option<Duration>,
}

impl<'a> GaugeRow<'a> {
    /// A row with no known expiry and no cooldown.
    pub const fn new(credential: &'a CredentialId, state: CredentialState) -> Self {
        Self {
            credential,
            state,
            expires_in: None,
            cooldown_remaining: None,
        }
    }

    /// The row of a credential with health `health` and access-token expiry `expires_at`, at
    /// `now` (the instant the health snapshot was taken).
    pub fn from_health(
        credential: &'a CredentialId,
        health: &HealthSnapshot,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        let until = |t: DateTime<Utc>| (t - now).to_std().unwrap_or(Duration::ZERO);
        Self {
            credential,
            state: health.state,
            expires_in: expires_at.map(until),
            cooldown_remaining: health.cooldown_until.map(until).filter(|d| !d.is_zero()),
        }
    }

    /// Sets the time until the access token expires.
    #[must_use]
    pub const fn expires_in(mut self, expires_in: Option<Duration>) -> Self {
        self.expires_in = expires_in;
        self
    }

    /// Sets the rate-limit cooldown left.
    #[must_use]
    pub const fn cooldown_remaining(mut self, remaining: Option<Duration>) -> Self {
        self.cooldown_remaining = remaining;
        self
    }
}

/// Records for one credential; obtained from [`MetricsRecorder::handle`] and cached by the caller.
pub trait CredentialRecorder: Send + Sync + fmt::Debug {
    /// One request made with the credential: tokens consumed, the operation's latency, its
    /// classified outcome, and when it finished.
    fn record_request(
        &self,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
        now: DateTime<Utc>,
    );

    /// One token refresh attempt and how long it took.
    fn record_refresh(&self, result: RefreshResult, duration: Duration, now: DateTime<Utc>);

    /// A refreshed credential could not be persisted (store or credential provider); it is kept in
    /// memory and retried. Nothing by default.
    fn record_persistence_failure(&self) {}

    /// Tokens consumed by a request that was already recorded (with
    /// [`record_request`](Self::record_request)) before its usage was known: a streamed answer
    /// is recorded when its headers arrive and its token count arrives at the end of the stream.
    /// Adds to the credential's token count **without** counting a request. Nothing by default.
    fn record_tokens(&self, tokens: u64) {
        let _ = tokens;
    }

    /// A hint that a request on this credential is about to be recorded: a recorder may ask
    /// the CPU for the memory [`record_request`](Self::record_request) will touch (see
    /// `oauth_core::hint`), so that a pool going round-robin over more credentials than the
    /// caches hold does not wait for it. Must not record anything or block. Nothing by default.
    fn prefetch(&self) {}

    /// A second hint, for the credential a call has just picked, before its request runs: the
    /// handle's own memory was asked for by [`prefetch`](Self::prefetch) on an earlier pick, so
    /// it is likely cached now, and a recorder may read it to ask for what lies behind its
    /// pointers (memory that `prefetch` could not name without waiting for a load). Must not
    /// record anything or block. Nothing by default.
    fn prefetch_indirect(&self) {}

    /// Whether [`prefetch_indirect`](Self::prefetch_indirect) does anything for this handle. A
    /// pool asks once, when it takes the handle, and calls the hint only if so: even an empty
    /// call costs a pick over many credentials (measured: about 10% of a call over 10,000).
    /// `false` by default.
    fn prefetches_indirect(&self) -> bool {
        false
    }

    /// **Superseded by [`GaugeSource`]**: gauges are read at scrape time, never pushed. Kept so
    /// existing callers compile; the recorders of this crate ignore it, and the default does
    /// nothing. (It will be deprecated once the manager no longer calls it.)
    fn record_state(
        &self,
        state: CredentialState,
        expires_in: Option<Duration>,
        cooldown_remaining: Option<Duration>,
    ) {
        let _ = (state, expires_in, cooldown_remaining);
    }
}

/// How a request ended. Every failure counts as an error in the counters, whatever its kind; the
/// kind becomes the Prometheus `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// The request succeeded.
    Success,
    /// The request failed, classified.
    Failure(FailureKind),
}

impl RequestOutcome {
    /// The label value: `"success"`, or the failure kind's [`FailureKind::as_str`].
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure(kind) => kind.as_str(),
        }
    }

    /// True for [`RequestOutcome::Success`].
    pub const fn is_success(&self) -> bool {
        matches!(self, Self::Success)
    }
}

/// How a token refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefreshResult {
    /// New tokens were obtained.
    Success,
    /// The refresh failed, classified.
    Failure(FailureKind),
}

impl RefreshResult {
    /// The label value: `"success"`, or the failure kind's [`FailureKind::as_str`].
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure(kind) => kind.as_str(),
        }
    }

    /// True for [`RefreshResult::Success`].
    pub const fn is_success(&self) -> bool {
        matches!(self, Self::Success)
    }
}

/// Records nothing, for callers who want no metrics. Its handles are also no-ops.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopRecorder;

impl MetricsRecorder for NoopRecorder {
    fn handle(&self, _credential: &CredentialId) -> Arc<dyn CredentialRecorder> {
        Arc::new(Self)
    }

    fn record_failover(&self, _from: &CredentialId, _reason: FailureKind) {}
}

impl CredentialRecorder for NoopRecorder {
    fn record_request(&self, _: u64, _: Duration, _: RequestOutcome, _: DateTime<Utc>) {}

    fn record_refresh(&self, _: RefreshResult, _: Duration, _: DateTime<Utc>) {}
}

/// Sends everything to several recorders, in order. The manager uses it to keep its own
/// [`InMemoryRecorder`](crate::InMemoryRecorder) (which feeds the health reports) next to the
/// application's recorder.
///
/// [`handle`](MetricsRecorder::handle) asks every inner recorder for its handle once and returns
/// one handle holding them all, so a recorded request costs one virtual call per inner recorder.
///
/// ```
/// use std::sync::Arc;
/// use oauth_metrics::{Fanout, InMemoryRecorder, MetricsRecorder, NoopRecorder};
///
/// let memory = Arc::new(InMemoryRecorder::new());
/// let fanout = Fanout::new(vec![memory.clone(), Arc::new(NoopRecorder)]);
/// assert_eq!(fanout.len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Fanout {
    recorders: Vec<Arc<dyn MetricsRecorder>>,
}

impl Fanout {
    /// A fan-out to `recorders`, called in this order.
    pub fn new(recorders: Vec<Arc<dyn MetricsRecorder>>) -> Self {
        Self { recorders }
    }

    /// Adds a recorder at the end. Only handles created afterwards include it.
    #[must_use]
    pub fn with(mut self, recorder: Arc<dyn MetricsRecorder>) -> Self {
        self.recorders.push(recorder);
        self
    }

    /// The number of inner recorders.
    pub fn len(&self) -> usize {
        self.recorders.len()
    }

    /// True with no inner recorder.
    pub fn is_empty(&self) -> bool {
        self.recorders.is_empty()
    }
}

impl MetricsRecorder for Fanout {
    fn handle(&self, credential: &CredentialId) -> Arc<dyn CredentialRecorder> {
        Arc::new(FanoutHandle(
            self.recorders
                .iter()
                .map(|r| r.handle(credential))
                .collect(),
        ))
    }

    fn record_failover(&self, from: &CredentialId, reason: FailureKind) {
        for r in &self.recorders {
            r.record_failover(from, reason);
        }
    }

    fn record_token_quirk(&self, credential: &CredentialId, quirk: TokenQuirk) {
        for r in &self.recorders {
            r.record_token_quirk(credential, quirk);
        }
    }

    fn remove(&self, credential: &CredentialId) {
        for r in &self.recorders {
            r.remove(credential);
        }
    }

    fn attach_gauges(&self, source: Weak<dyn GaugeSource>) {
        for r in &self.recorders {
            r.attach_gauges(source.clone());
        }
    }
}

/// The per-credential handle of a [`Fanout`].
#[derive(Debug)]
struct FanoutHandle(Box<[Arc<dyn CredentialRecorder>]>);

impl CredentialRecorder for FanoutHandle {
    fn prefetch(&self) {
        for h in &self.0 {
            h.prefetch();
        }
    }

    fn prefetch_indirect(&self) {
        for h in &self.0 {
            h.prefetch_indirect();
        }
    }

    fn prefetches_indirect(&self) -> bool {
        self.0.iter().any(|h| h.prefetches_indirect())
    }

    fn record_request(
        &self,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
        now: DateTime<Utc>,
    ) {
        for h in &self.0 {
            h.record_request(tokens, latency, outcome, now);
        }
    }

    fn record_refresh(&self, result: RefreshResult, duration: Duration, now: DateTime<Utc>) {
        for h in &self.0 {
            h.record_refresh(result, duration, now);
        }
    }

    fn record_persistence_failure(&self) {
        for h in &self.0 {
            h.record_persistence_failure();
        }
    }

    fn record_tokens(&self, tokens: u64) {
        for h in &self.0 {
            h.record_tokens(tokens);
        }
    }

    fn record_state(
        &self,
        state: CredentialState,
        expires_in: Option<Duration>,
        cooldown_remaining: Option<Duration>,
    ) {
        for h in &self.0 {
            h.record_state(state, expires_in, cooldown_remaining);
        }
    }
}

/// A shared recorder is a recorder (so `Arc<PrometheusRecorder>` plugs in wherever one is taken).
impl<R: MetricsRecorder + ?Sized> MetricsRecorder for Arc<R> {
    fn handle(&self, credential: &CredentialId) -> Arc<dyn CredentialRecorder> {
        (**self).handle(credential)
    }

    fn record_failover(&self, from: &CredentialId, reason: FailureKind) {
        (**self).record_failover(from, reason);
    }

    fn record_token_quirk(&self, credential: &CredentialId, quirk: TokenQuirk) {
        (**self).record_token_quirk(credential, quirk);
    }

    fn remove(&self, credential: &CredentialId) {
        (**self).remove(credential);
    }

    fn attach_gauges(&self, source: Weak<dyn GaugeSource>) {
        (**self).attach_gauges(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_label_values() {
        assert_eq!(RequestOutcome::Success.as_str(), "success");
        assert_eq!(
            RequestOutcome::Failure(FailureKind::rate_limited(Some(Duration::from_secs(3))))
                .as_str(),
            "rate_limited"
        );
        assert_eq!(
            RefreshResult::Failure(FailureKind::PermanentAuth).as_str(),
            "permanent_auth"
        );
        assert!(RefreshResult::Success.is_success());
        assert!(!RequestOutcome::Failure(FailureKind::Transient).is_success());
    }

    #[derive(Debug, Default)]
    struct Counting {
        quirks: std::sync::atomic::AtomicU64,
        tokens: Arc<std::sync::atomic::AtomicU64>,
    }

    #[derive(Debug)]
    struct CountingHandle(Arc<std::sync::atomic::AtomicU64>);

    impl MetricsRecorder for Counting {
        fn handle(&self, _: &CredentialId) -> Arc<dyn CredentialRecorder> {
            Arc::new(CountingHandle(Arc::clone(&self.tokens)))
        }

        fn record_failover(&self, _: &CredentialId, _: FailureKind) {}

        fn record_token_quirk(&self, _: &CredentialId, _: TokenQuirk) {
            self.quirks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl CredentialRecorder for CountingHandle {
        fn record_request(&self, _: u64, _: Duration, _: RequestOutcome, _: DateTime<Utc>) {}

        fn record_refresh(&self, _: RefreshResult, _: Duration, _: DateTime<Utc>) {}

        fn record_tokens(&self, tokens: u64) {
            self.0
                .fetch_add(tokens, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn fanout_and_shared_recorders_forward_quirks_and_late_tokens() {
        use std::sync::atomic::Ordering::Relaxed;
        let id = CredentialId::new("a").expect("valid id");
        let (one, two) = (Arc::new(Counting::default()), Arc::new(Counting::default()));
        let fanout = Arc::new(Fanout::new(vec![one.clone(), two.clone()]));
        fanout.handle(&id).record_tokens(7);
        Fanout::record_token_quirk(&fanout, &id, TokenQuirk::UnusableExpiresIn);
        // Through the blanket `Arc<R>` impl.
        <Arc<Fanout> as MetricsRecorder>::record_token_quirk(&fanout, &id, TokenQuirk::OddScope);
        for c in [&one, &two] {
            assert_eq!(c.tokens.load(Relaxed), 7);
            assert_eq!(c.quirks.load(Relaxed), 2);
        }
    }

    #[test]
    fn noop_accepts_everything() {
        let id = CredentialId::new("a").expect("valid id");
        let h = NoopRecorder.handle(&id);
        h.record_request(
            1,
            Duration::from_millis(1),
            RequestOutcome::Success,
            Utc::now(),
        );
        h.record_refresh(RefreshResult::Success, Duration::ZERO, Utc::now());
        h.record_state(CredentialState::Active, None, None);
        h.record_tokens(5);
        NoopRecorder.record_failover(&id, FailureKind::Transient);
        NoopRecorder.record_token_quirk(&id, TokenQuirk::OddScope);
        NoopRecorder.remove(&id);
        assert!(format!("{h:?}").contains("Noop"));
    }
}
