//! The refresh protocol: at most one refresh per credential in flight, shared by every caller, with
//! the source of truth re-read inside the flight and the result committed before anyone sees it.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use oauth_core::{Credential, CredentialId, TokenQuirk, TokensApplied};
use tokio::sync::{Semaphore, watch};

use crate::error::RefreshError;
use crate::refresher::Refresher;

/// A boxed, `Send` future (the same type as `futures::future::BoxFuture`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The default bound on one flight: long enough for a slow token endpoint with retries, short
/// enough that a refresher that never answers does not hold a credential's callers for long.
pub const DEFAULT_FLIGHT_TIMEOUT: Duration = Duration::from_secs(60);

/// The result of a coordinated refresh.
#[derive(Debug, Clone)]
pub struct RefreshOutcome {
    /// The credential to use from now on.
    pub credential: Credential,
    /// `true` when this flight exchanged the refresh token (or committed a refresh a previous
    /// flight could not commit); `false` when, after winning the flight, the credential turned out
    /// not to need a refresh any more (another refresh had already replaced it).
    pub refreshed: bool,
}

type FlightResult = Result<RefreshOutcome, RefreshError>;

/// What the owner of a credential supplies to [`RefreshCoordinator::refresh`]: how to re-read the
/// credential, whether it still needs a refresh, and how to commit the result. Everything here
/// runs inside the credential's flight, once per refresh however many callers wait for it.
#[async_trait]
pub trait RefreshTarget: Send + Sync + 'static {
    /// The credential as its source of truth holds it now (store, credential provider, account
    /// file), so a refresh token another process already exchanged is never presented again.
    /// `Ok(None)` when the credential was removed: the flight ends with
    /// [`RefreshError::Removed`] and nothing is committed.
    async fn read(&self) -> Result<Option<Credential>, RefreshError>;

    /// Whether `current` still needs a refresh: `Ok(true)` to refresh, `Ok(false)` when it no
    /// longer needs one (the flight returns it unrefreshed), an error to refuse (a refresh backoff
    /// in force, a dead grant).
    fn check(&self, current: &Credential) -> Result<bool, RefreshError>;

    /// Wall time, for the refresh's bookkeeping (`last_refresh`).
    fn now(&self) -> DateTime<Utc>;

    /// Persists and publishes `refreshed` (the tokens already applied to the credential that was
    /// refreshed, `previous`) before any caller sees it, and records the success. An error keeps
    /// the refreshed credential in the coordinator (see [`RefreshCoordinator::refresh`]).
    async fn commit(
        &self,
        previous: &Credential,
        refreshed: &Credential,
        change: Committed<'_>,
    ) -> Result<(), RefreshError>;

    /// Records a failed refresh of `current` (once per flight). May return a credential the
    /// source of truth holds instead (another process rotated the grant meanwhile: the failure
    /// was only this copy's): the flight then returns it, unrefreshed, instead of the error.
    async fn failed(
        &self,
        current: &Credential,
        error: &RefreshError,
        took: Duration,
    ) -> Option<Credential>;
}

/// What a commit is told about the refresh it commits.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Committed<'a> {
    /// What applying the tokens changed.
    pub applied: TokensApplied,
    /// Oddities of the token response that were tolerated.
    pub quirks: &'a [TokenQuirk],
    /// How long the refresher took.
    pub took: Duration,
    /// `true` when this commit retries one a previous flight could not complete.
    pub retried: bool,
}

/// A refreshed credential whose commit failed, kept with the credential it was refreshed from.
struct Uncommitted {
    previous: Credential,
    credential: Credential,
    applied: TokensApplied,
}

/// A flight's published result: a refresh's outcome, or an exclusive job's value.
type Published = Arc<dyn Any + Send + Sync>;

#[derive(Clone)]
struct Flight {
    rx: watch::Receiver<Option<Published>>,
    /// `false` for a refresh (later refresh callers join it), `true` for an exclusive job (callers
    /// wait for it to end, then start their own flight).
    exclusive: bool,
}

struct Inner {
    flights: Mutex<HashMap<CredentialId, Flight>>,
    uncommitted: Mutex<HashMap<CredentialId, Uncommitted>>,
    limit: Option<Arc<Semaphore>>,
    timeout: Duration,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            flights: Mutex::default(),
            uncommitted: Mutex::default(),
            limit: None,
            timeout: DEFAULT_FLIGHT_TIMEOUT,
        }
    }
}

/// Runs refreshes so that each credential has at most one in flight.
///
/// Concurrent callers for the same credential wait for the refresh in flight and all receive its
/// result (token or classified error); no caller fails because a refresh was already running. The
/// refresh runs on its own tokio task, so a caller that is cancelled (its future dropped) neither
/// cancels it for the others nor leaves the credential stuck. Every flight is bounded by a timeout
/// ([`DEFAULT_FLIGHT_TIMEOUT`]; [`with_timeout`](Self::with_timeout)). An optional bound limits
/// refreshes running at once across all credentials.
///
/// [`refresh`](Self::refresh) is the protocol (re-read, re-check, refresh, commit before
/// publication, keep what could not be committed); [`exclusive`](Self::exclusive) runs other work
/// that must not interleave with a refresh of the same credential (adopting a copy from the store,
/// installing re-authorized tokens) and returns its value.
///
/// Cloning is cheap and clones share the flights. Must be used inside a tokio runtime.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use chrono::{TimeDelta, Utc};
/// use oauth_core::{Credential, TokenSet};
/// use oauth_refresh::{FnRefresher, RefreshCoordinator, Refresher};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let now = Utc::now();
/// let stored = Arc::new(Mutex::new(
///     Credential::new("team", "old-access", now).unwrap()
///         .with_refresh_token("old-refresh")
///         .with_expires_at(now + TimeDelta::minutes(1)),
/// ));
/// let refresher: Arc<dyn Refresher> = Arc::new(FnRefresher::new(|_c: Credential| async move {
///     Ok(TokenSet::new("new-access").with_expires_at(Utc::now() + TimeDelta::hours(1)))
/// }));
///
/// let coordinator = RefreshCoordinator::new();
/// let id = stored.lock().unwrap().id.clone();
/// let (read, write) = (stored.clone(), stored.clone());
/// let outcome = coordinator
///     .refresh_if_needed(
///         &id,
///         move || read.lock().unwrap().clone(),
///         |c| c.needs_refresh(Utc::now()),
///         refresher,
///         move |new| Box::pin(async move {
///             *write.lock().unwrap() = new;
///             Ok(())
///         }),
///     )
///     .await
///     .unwrap();
/// assert!(outcome.refreshed);
/// assert!(!stored.lock().unwrap().needs_refresh(Utc::now()));
/// # }
/// ```
#[derive(Clone, Default)]
pub struct RefreshCoordinator {
    inner: Arc<Inner>,
}

impl fmt::Debug for RefreshCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshCoordinator")
            .field("in_flight", &self.in_flight())
            .field("timeout", &self.inner.timeout)
            .field(
                "max_concurrent",
                &self.inner.limit.as_ref().map(|_| "bounded"),
            )
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Publishes the flight's result and removes the flight, even if the work panicked or its task was
/// dropped (then nothing is published and waiters see the flight end without a value).
struct FlightGuard {
    inner: Arc<Inner>,
    id: CredentialId,
    tx: watch::Sender<Option<Published>>,
}

impl FlightGuard {
    /// Removes the flight and publishes under the map lock: a caller either joined this flight
    /// before (and sees its result) or starts a new one after (and re-reads the committed
    /// credential).
    fn end(&self, value: Option<Published>) {
        let mut flights = lock(&self.inner.flights);
        if flights
            .get(&self.id)
            .is_some_and(|f| f.rx.same_channel(&self.tx.subscribe()))
        {
            flights.remove(&self.id);
        }
        if let Some(value) = value {
            self.tx.send_replace(Some(value));
        }
    }

    fn finish(self, value: Published) {
        self.end(Some(value));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        // After `finish` this finds the flight gone already; otherwise the work panicked or was
        // never started, and the sender's drop tells the waiters.
        self.end(None);
    }
}

/// How a caller relates to a credential's flight.
enum Entry {
    /// It started a new flight and must run it.
    Lead(FlightGuard, watch::Receiver<Option<Published>>),
    /// It joins the refresh in flight.
    Join(watch::Receiver<Option<Published>>),
    /// An exclusive job is in flight: wait for it to end, then try again.
    Wait(watch::Receiver<Option<Published>>),
}

impl RefreshCoordinator {
    /// A coordinator without a bound on concurrent refreshes.
    pub fn new() -> Self {
        Self::default()
    }

    /// A coordinator running at most `n` refreshes at once across all credentials (`n` is raised
    /// to 1 if zero). Callers of other credentials queue; callers of the same credential still join
    /// its flight.
    pub fn with_max_concurrent(n: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit: Some(Arc::new(Semaphore::new(n.max(1)))),
                ..Inner::default()
            }),
        }
    }

    /// Bounds every flight by `timeout` (default [`DEFAULT_FLIGHT_TIMEOUT`]; zero is raised to
    /// one millisecond). Its waiters then get [`RefreshError::FlightTimeout`]. Uses tokio's timer:
    /// the runtime needs its time driver.
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        let limit = self.inner.limit.clone();
        Self {
            inner: Arc::new(Inner {
                limit,
                timeout: timeout.max(Duration::from_millis(1)),
                ..Inner::default()
            }),
        }
    }

    /// The timeout bounding each flight.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Number of credentials with a flight (refresh or exclusive job) in progress.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.flights).len()
    }

    fn enter(&self, id: &CredentialId, exclusive: bool) -> Entry {
        let mut flights = lock(&self.inner.flights);
        if let Some(flight) = flights.get(id) {
            let rx = flight.rx.clone();
            return if flight.exclusive || exclusive {
                Entry::Wait(rx)
            } else {
                Entry::Join(rx)
            };
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(
            id.clone(),
            Flight {
                rx: rx.clone(),
                exclusive,
            },
        );
        let guard = FlightGuard {
            inner: Arc::clone(&self.inner),
            id: id.clone(),
            tx,
        };
        Entry::Lead(guard, rx)
    }

    /// Runs `work` as a flight of `id` on its own task (bounded by the timeout and, for refreshes,
    /// by the concurrency limit), returning the receiver of its published value.
    fn launch<T, F, Fut>(
        &self,
        guard: FlightGuard,
        id: &CredentialId,
        limited: bool,
        bounded: bool,
        work: F,
        on_timeout: fn(CredentialId, Duration) -> T,
    ) where
        T: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        // The map lock was released in `enter`, so a spawn that fails (no runtime, or one shutting
        // down) drops the flight's guard without deadlocking, and waiters see it end.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            drop(guard);
            return;
        };
        let limit = if limited {
            self.inner.limit.clone()
        } else {
            None
        };
        let timeout = self.inner.timeout;
        let id = id.clone();
        runtime.spawn(async move {
            let _permit = match limit {
                Some(sem) => sem.acquire_owned().await.ok(),
                None => None,
            };
            let value = if bounded {
                match tokio::time::timeout(timeout, work()).await {
                    Ok(value) => value,
                    Err(_) => on_timeout(id, timeout),
                }
            } else {
                work().await
            };
            guard.finish(Arc::new(value));
        });
    }

    /// Runs `work` as *the* refresh of `id` unless one is in flight, in which case it waits for
    /// that one and returns its result. If an [`exclusive`](Self::exclusive) job is in flight, it
    /// waits for the job to end first.
    ///
    /// `work` runs on a spawned tokio task: dropping any caller (the first included) never cancels
    /// it nor leaves `id` stuck. The concurrency bound and the timeout apply inside that task.
    ///
    /// # Errors
    /// The flight's error, shared by every caller; [`RefreshError::Interrupted`] if the work
    /// panicked; [`RefreshError::FlightTimeout`] if it did not finish in time.
    pub async fn run<F, Fut>(&self, id: &CredentialId, work: F) -> FlightResult
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = FlightResult> + Send + 'static,
    {
        self.run_flight(id, true, work).await
    }

    async fn run_flight<F, Fut>(&self, id: &CredentialId, bounded: bool, work: F) -> FlightResult
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = FlightResult> + Send + 'static,
    {
        let mut work = Some(work);
        loop {
            let rx = match self.enter(id, false) {
                Entry::Lead(guard, rx) => {
                    if let Some(work) = work.take() {
                        self.launch(guard, id, true, bounded, work, |id, after| {
                            Err(RefreshError::FlightTimeout { id, after })
                        });
                    }
                    rx
                }
                Entry::Join(rx) => rx,
                Entry::Wait(rx) => {
                    wait_end(rx).await;
                    continue;
                }
            };
            return match wait_end(rx).await {
                Some(value) => value
                    .downcast_ref::<FlightResult>()
                    .cloned()
                    .unwrap_or_else(|| Err(RefreshError::Interrupted { id: id.clone() })),
                None => Err(RefreshError::Interrupted { id: id.clone() }),
            };
        }
    }

    /// Runs `work` for `id` with no refresh (and no other job) of `id` in flight: it waits for
    /// the flight in progress to end, then runs `work` as the credential's flight, so refreshes
    /// arriving meanwhile wait for it and re-read what it left. Returns `work`'s value.
    ///
    /// `work` runs on its own task (dropping the caller does not cancel it) and is bounded by the
    /// timeout; it is not counted against the concurrency bound.
    ///
    /// # Errors
    /// [`RefreshError::Interrupted`] if the work panicked or could not be started;
    /// [`RefreshError::FlightTimeout`] if it did not finish in time.
    pub async fn exclusive<T, F, Fut>(&self, id: &CredentialId, work: F) -> Result<T, RefreshError>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut work = Some(work);
        loop {
            match self.enter(id, true) {
                Entry::Lead(guard, rx) => {
                    if let Some(work) = work.take() {
                        self.launch(
                            guard,
                            id,
                            false,
                            true,
                            move || async move { Ok::<T, RefreshError>(work().await) },
                            |id, after| Err(RefreshError::FlightTimeout { id, after }),
                        );
                    }
                    return match wait_end(rx).await {
                        Some(value) => value
                            .downcast_ref::<Result<T, RefreshError>>()
                            .cloned()
                            .unwrap_or_else(|| Err(RefreshError::Interrupted { id: id.clone() })),
                        None => Err(RefreshError::Interrupted { id: id.clone() }),
                    };
                }
                Entry::Join(rx) | Entry::Wait(rx) => wait_end(rx).await.map_or((), |_| ()),
            }
        }
    }

    /// The refresh protocol, inside the single flight of `id`:
    ///
    /// 1. re-read the credential from its source of truth ([`RefreshTarget::read`]); a removed
    ///    credential ends the flight with [`RefreshError::Removed`];
    /// 2. if a previous flight refreshed it but could not commit, and the source still holds the
    ///    tokens that were refreshed, retry that commit instead of refreshing again (the refresh
    ///    token those tokens carry has been exchanged already);
    /// 3. re-check the need ([`RefreshTarget::check`]): a credential another refresh already
    ///    replaced is returned with `refreshed: false`;
    /// 4. call the refresher, apply its [`TokenSet`](oauth_core::TokenSet) with
    ///    [`Credential::apply_tokens`] (RFC 6749 section 6), and [commit](RefreshTarget::commit)
    ///    the result before any waiter sees it. A failed refresh is recorded once
    ///    ([`RefreshTarget::failed`]).
    ///
    /// **A failed commit loses nothing.** The error is [`RefreshError::CommitFailed`], which
    /// carries the refreshed credential (its refresh token is now the only valid one), and the
    /// coordinator keeps it for step 2 of the next flight. The kept credential is dropped once the
    /// source shows other tokens (it was adopted, or the credential was re-authorized).
    ///
    /// # Errors
    /// The refresher's or the target's error, [`RefreshError::CommitFailed`],
    /// [`RefreshError::Removed`], [`RefreshError::FlightTimeout`].
    pub async fn refresh<T: RefreshTarget>(
        &self,
        id: &CredentialId,
        target: Arc<T>,
        refresher: Arc<dyn Refresher>,
    ) -> FlightResult {
        let inner = Arc::clone(&self.inner);
        let flight_id = id.clone();
        // The protocol bounds its own read and exchange; its commit is never cut off.
        self.run_flight(id, false, move || async move {
            protocol(&inner, &flight_id, target.as_ref(), refresher.as_ref()).await
        })
        .await
    }

    /// The protocol of [`refresh`](Self::refresh) with closures instead of a [`RefreshTarget`]:
    /// `current()` re-reads the credential, `needs_refresh` re-checks it, `commit` persists and
    /// publishes the result.
    ///
    /// # Errors
    /// The refresher's error, or [`RefreshError::CommitFailed`].
    pub async fn refresh_if_needed<C, N, M>(
        &self,
        id: &CredentialId,
        current: C,
        needs_refresh: N,
        refresher: Arc<dyn Refresher>,
        commit: M,
    ) -> FlightResult
    where
        C: Fn() -> Credential + Send + Sync + 'static,
        N: Fn(&Credential) -> bool + Send + Sync + 'static,
        M: FnOnce(Credential) -> BoxFuture<'static, Result<(), RefreshError>>
            + Send
            + Sync
            + 'static,
    {
        let target = ClosureTarget {
            current,
            needs_refresh,
            commit: Mutex::new(Some(commit)),
        };
        self.refresh(id, Arc::new(target), refresher).await
    }
}

/// Waits until the flight behind `rx` ends; its value, if it published one.
async fn wait_end(mut rx: watch::Receiver<Option<Published>>) -> Option<Published> {
    match rx.wait_for(Option::is_some).await {
        Ok(value) => value.clone(),
        // The sender is gone without a value: the work panicked or was never started.
        Err(_) => None,
    }
}

async fn protocol<T: RefreshTarget + ?Sized>(
    inner: &Inner,
    id: &CredentialId,
    target: &T,
    refresher: &dyn Refresher,
) -> FlightResult {
    // The timeout bounds what may hang without having consumed anything: the read and the
    // refresher's exchange. The commit is never cut off: once the server answered, its tokens are
    // the only valid ones and must reach the store and the waiters.
    let bounded = async {
        let Some(current) = target.read().await? else {
            return Ok(None);
        };
        if let Some(kept) = take_uncommitted(inner, id, &current) {
            return Ok(Some((current, Step::Kept(Box::new(kept)))));
        }
        if !target.check(&current)? {
            return Ok(Some((current, Step::Current)));
        }
        let started = Instant::now();
        let result = refresher.refresh(&current).await;
        Ok(Some((current, Step::Refreshed(result, started.elapsed()))))
    };
    let step = match tokio::time::timeout(inner.timeout, bounded).await {
        Ok(step) => step?,
        Err(_) => {
            return Err(RefreshError::FlightTimeout {
                id: id.clone(),
                after: inner.timeout,
            });
        }
    };
    let Some((current, step)) = step else {
        lock(&inner.uncommitted).remove(id);
        return Err(RefreshError::Removed { id: id.clone() });
    };
    match step {
        Step::Kept(kept) => {
            let change = Committed {
                applied: kept.applied,
                quirks: &[],
                took: Duration::ZERO,
                retried: true,
            };
            commit_or_keep(inner, target, kept.previous, kept.credential, change).await
        }
        Step::Current => Ok(RefreshOutcome {
            credential: current,
            refreshed: false,
        }),
        Step::Refreshed(Ok(mut tokens), took) => {
            let quirks = std::mem::take(&mut tokens.quirks);
            let mut refreshed = current.clone();
            let applied = refreshed.apply_tokens(tokens, target.now());
            let change = Committed {
                applied,
                quirks: &quirks,
                took,
                retried: false,
            };
            commit_or_keep(inner, target, current, refreshed, change).await
        }
        Step::Refreshed(Err(error), took) => match target.failed(&current, &error, took).await {
            Some(adopted) => Ok(RefreshOutcome {
                credential: adopted,
                refreshed: false,
            }),
            None => Err(error),
        },
    }
}

/// Where the bounded part of the protocol left the flight.
enum Step {
    Kept(Box<Uncommitted>),
    Current,
    Refreshed(Result<oauth_core::TokenSet, RefreshError>, Duration),
}

/// The kept, uncommitted credential for `id`, if `current` still holds the tokens it was refreshed
/// from. A kept credential that no longer applies (adopted, or superseded) is discarded.
fn take_uncommitted(inner: &Inner, id: &CredentialId, current: &Credential) -> Option<Uncommitted> {
    let kept = lock(&inner.uncommitted).remove(id)?;
    current.same_tokens(&kept.previous).then_some(kept)
}

async fn commit_or_keep<T: RefreshTarget + ?Sized>(
    inner: &Inner,
    target: &T,
    previous: Credential,
    refreshed: Credential,
    change: Committed<'_>,
) -> FlightResult {
    match target.commit(&previous, &refreshed, change).await {
        Ok(()) => Ok(RefreshOutcome {
            credential: refreshed,
            refreshed: true,
        }),
        // A credential removed meanwhile has nothing to keep: its result is dropped.
        Err(removed @ RefreshError::Removed { .. }) => Err(removed),
        Err(source) => {
            lock(&inner.uncommitted).insert(
                refreshed.id.clone(),
                Uncommitted {
                    previous,
                    credential: refreshed.clone(),
                    applied: change.applied,
                },
            );
            Err(RefreshError::CommitFailed {
                refreshed: Box::new(refreshed),
                source: Box::new(source),
            })
        }
    }
}

/// [`RefreshTarget`] over the closures of [`RefreshCoordinator::refresh_if_needed`].
struct ClosureTarget<C, N, M> {
    current: C,
    needs_refresh: N,
    commit: Mutex<Option<M>>,
}

#[async_trait]
impl<C, N, M> RefreshTarget for ClosureTarget<C, N, M>
where
    C: Fn() -> Credential + Send + Sync + 'static,
    N: Fn(&Credential) -> bool + Send + Sync + 'static,
    M: FnOnce(Credential) -> BoxFuture<'static, Result<(), RefreshError>> + Send + Sync + 'static,
{
    async fn read(&self) -> Result<Option<Credential>, RefreshError> {
        Ok(Some((self.current)()))
    }

    fn check(&self, current: &Credential) -> Result<bool, RefreshError> {
        Ok((self.needs_refresh)(current))
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn commit(
        &self,
        _previous: &Credential,
        refreshed: &Credential,
        _change: Committed<'_>,
    ) -> Result<(), RefreshError> {
        let commit = lock(&self.commit).take();
        match commit {
            Some(commit) => commit(refreshed.clone()).await,
            None => Ok(()),
        }
    }

    async fn failed(
        &self,
        _current: &Credential,
        _error: &RefreshError,
        _took: Duration,
    ) -> Option<Credential> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    #[test]
    fn outside_a_runtime_run_reports_interrupted_instead_of_hanging() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let coordinator = RefreshCoordinator::new();
            let id = CredentialId::new("a").expect("valid id");
            let work = || async {
                Err(RefreshError::other(
                    oauth_core::FailureKind::Transient,
                    "never runs",
                ))
            };
            let mut flight = pin!(coordinator.run(&id, work));
            let mut cx = Context::from_waker(Waker::noop());
            let outcome = (0..100).find_map(|_| match flight.as_mut().poll(&mut cx) {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            });
            let interrupted = outcome.map(|r| matches!(r, Err(RefreshError::Interrupted { .. })));
            let _ = tx.send((interrupted, coordinator.in_flight()));
        });
        let (interrupted, in_flight) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("run returned instead of deadlocking");
        assert_eq!(interrupted, Some(true));
        assert_eq!(in_flight, 0, "the id is not left stuck");
    }
}
