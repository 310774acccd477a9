//! Shared fixtures: a fixed start time, credentials, a classified test error, a counting refresher.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oauth_core::ManualClock;
use oauth_manager::refresh::{FnRefresher, RefreshError, Refresher, TokenSet};
use oauth_manager::{
    ClassifyFailure, Credential, ExecuteError, ExposeSecret, FailureKind, OAuthKeyManager,
    OAuthKeyManagerBuilder, Served,
};

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
        .single()
        .expect("valid date")
}

/// A credential expiring `expires_in` after [`t0`].
pub(crate) fn cred(id: &str, expires_in: TimeDelta) -> Credential {
    Credential::new(id, format!("access-{id}-0"), t0())
        .expect("valid credential")
        .with_refresh_token(format!("refresh-{id}-0"))
        .with_expires_at(t0() + expires_in)
}

pub(crate) fn creds(ids: &[&str]) -> Vec<Credential> {
    ids.iter().map(|id| cred(id, TimeDelta::hours(1))).collect()
}

pub(crate) fn builder(ids: &[&str], clock: &ManualClock) -> OAuthKeyManagerBuilder {
    builder_of(creds(ids), clock)
}

/// A builder for provider `test` over `credentials`, on `clock`.
pub(crate) fn builder_of(
    credentials: impl IntoIterator<Item = Credential>,
    clock: &ManualClock,
) -> OAuthKeyManagerBuilder {
    OAuthKeyManager::builder("test")
        .credentials(credentials)
        .clock(Arc::new(clock.clone()))
}

pub(crate) async fn pool(ids: &[&str], clock: &ManualClock) -> OAuthKeyManager {
    builder(ids, clock).build().await.expect("pool builds")
}

/// Lets every task the pool has spawned (notifications) run to completion. The tests run on
/// tokio's current-thread runtime, where spawned tasks make progress only when the test yields,
/// and a notification to an in-memory notifier needs no I/O: yielding is enough, no sleeping.
pub(crate) async fn settle() {
    for _ in 0..32 {
        tokio::task::yield_now().await;
    }
}

/// One call whose operation succeeds at once.
pub(crate) async fn call_ok(
    manager: &OAuthKeyManager,
) -> Result<Served<()>, ExecuteError<TestError>> {
    manager
        .execute_with_failover(|_| async { Ok::<_, TestError>(((), None)) })
        .await
}

/// One call whose operation returns the access token it was given.
pub(crate) async fn call_token(
    manager: &OAuthKeyManager,
) -> Result<Served<String>, ExecuteError<TestError>> {
    manager
        .execute_with_failover(|c| async move {
            Ok::<_, TestError>((c.access_token.expose_secret().to_owned(), None))
        })
        .await
}

/// An operation error with an explicit classification.
#[derive(Debug, Clone)]
pub(crate) struct TestError {
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
}

impl TestError {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for TestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TestError {}

impl ClassifyFailure for TestError {
    fn failure_kind(&self) -> FailureKind {
        self.kind
    }
}

/// A refresher that counts calls, waits `latency` (real time), issues `access-<id>-<n>` and rotates
/// the refresh token, and rejects a refresh token it already exchanged (reuse detection).
#[derive(Debug, Clone)]
pub(crate) struct CountingRefresher {
    pub(crate) calls: Arc<AtomicUsize>,
    pub(crate) reused: Arc<AtomicUsize>,
    pub(crate) refresher: Arc<dyn Refresher>,
}

pub(crate) fn counting_refresher(
    clock: &ManualClock,
    latency: Duration,
    fail: Option<FailureKind>,
) -> CountingRefresher {
    let calls = Arc::new(AtomicUsize::new(0));
    let reused = Arc::new(AtomicUsize::new(0));
    let exchanged = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<String>::new(),
    ));
    let (c, r, clock) = (Arc::clone(&calls), Arc::clone(&reused), clock.clone());
    let refresher = FnRefresher::new(move |cred: Credential| {
        let (calls, reused, exchanged, clock) = (
            Arc::clone(&c),
            Arc::clone(&r),
            Arc::clone(&exchanged),
            clock.clone(),
        );
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if let Some(kind) = fail {
                return Err(RefreshError::other(kind, "scripted refresh failure"));
            }
            let presented = cred
                .refresh_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned())
                .unwrap_or_default();
            let fresh = exchanged
                .lock()
                .map(|mut set| set.insert(presented))
                .unwrap_or(false);
            if !fresh {
                reused.fetch_add(1, Ordering::SeqCst);
                return Err(RefreshError::other(
                    FailureKind::PermanentAuth,
                    "invalid_grant (reused)",
                ));
            }
            let now = oauth_manager::Clock::now(&clock);
            Ok(TokenSet::new(format!("access-{}-{n}", cred.id))
                .with_refresh_token(format!("refresh-{}-{n}", cred.id))
                .with_expires_at(oauth_core::after(now, Duration::from_secs(3600))))
        }
    });
    CountingRefresher {
        calls,
        reused,
        refresher: Arc::new(refresher),
    }
}

/// Runs `f` on its own thread and fails the test if it has not finished within `limit` (catches a
/// deadlock instead of hanging the suite).
pub(crate) fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}: deadlock?"))
}

/// An error and its whole `source()` chain as one line: what a reporter such as `anyhow` or
/// `tracing` prints. Causes are sources, not repeated in each message.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
