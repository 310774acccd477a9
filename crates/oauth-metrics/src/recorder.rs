//! The recording seam: [`MetricsRecorder`], its per-credential [`CredentialRecorder`] handles, the
//! classified outcomes they record, a no-op recorder and a fan-out.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, CredentialState, FailureKind};

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

    /// The credential left the pool (a rotation decommissioned it): drop what is kept for it.
    /// Handles already given out may still be called and must not panic.
    fn remove(&self, credential: &CredentialId) {
        let _ = credential;
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

    /// Gauges: the current state, the time until the access token expires (`None`: no known
    /// expiry; an expired token is `Some(ZERO)`), and the rate-limit cooldown remaining (`None`: not
    /// cooling down).
    fn record_state(
        &self,
        state: CredentialState,
        expires_in: Option<Duration>,
        cooldown_remaining: Option<Duration>,
    );
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

    fn record_state(&self, _: CredentialState, _: Option<Duration>, _: Option<Duration>) {}
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

    fn remove(&self, credential: &CredentialId) {
        for r in &self.recorders {
            r.remove(credential);
        }
    }
}

/// The per-credential handle of a [`Fanout`].
#[derive(Debug)]
struct FanoutHandle(Box<[Arc<dyn CredentialRecorder>]>);

impl CredentialRecorder for FanoutHandle {
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
        NoopRecorder.record_failover(&id, FailureKind::Transient);
        NoopRecorder.remove(&id);
        assert!(format!("{h:?}").contains("Noop"));
    }
}
