//! Single-flight refresh: at most one refresh per credential in flight, shared by every caller.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use oauth_core::{Credential, CredentialId};
use tokio::sync::{Semaphore, watch};

use crate::error::RefreshError;
use crate::refresher::Refresher;

/// A boxed, `Send` future (the same type as `futures::future::BoxFuture`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
type FlightRx = watch::Receiver<Option<FlightResult>>;

/// A refreshed credential whose commit failed, kept with the credential it was refreshed from.
struct Uncommitted {
    previous: Credential,
    credential: Credential,
}

#[derive(Default)]
struct Inner {
    flights: Mutex<HashMap<CredentialId, FlightRx>>,
    uncommitted: Mutex<HashMap<CredentialId, Uncommitted>>,
    limit: Option<Arc<Semaphore>>,
}

/// Runs refreshes so that each credential has at most one in flight.
///
/// Concurrent callers for the same credential wait for the refresh in flight and all receive its
/// result (token or classified error); no caller fails because a refresh was already running. The
/// refresh runs on its own tokio task, so a caller that is cancelled (its future dropped) neither
/// cancels it for the others nor leaves the credential stuck. An optional bound limits refreshes
/// running at once across all credentials.
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
/// dropped (then the result is [`RefreshError::Interrupted`]).
struct FlightGuard {
    inner: Arc<Inner>,
    id: CredentialId,
    tx: watch::Sender<Option<FlightResult>>,
    done: bool,
}

impl FlightGuard {
    fn finish(&mut self, result: FlightResult) {
        // Remove and publish under the map lock: a caller either joined this flight before (and
        // sees the result) or starts a new one after (and re-reads the committed credential).
        let mut flights = lock(&self.inner.flights);
        flights.remove(&self.id);
        self.tx.send_replace(Some(result));
        self.done = true;
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if !self.done {
            let id = self.id.clone();
            self.finish(Err(RefreshError::Interrupted { id }));
        }
    }
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

    /// Number of credentials with a refresh in flight.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.flights).len()
    }

    /// Runs `work` as *the* refresh of `id` unless one is in flight, in which case it waits for
    /// that one and returns its result.
    ///
    /// `work` runs on a spawned tokio task: dropping any caller (the first included) never cancels
    /// it nor leaves `id` stuck. The concurrency bound, if any, is applied inside that task.
    ///
    /// # Errors
    /// The flight's error, shared by every caller; [`RefreshError::Interrupted`] if the work
    /// panicked.
    pub async fn run<F, Fut>(&self, id: &CredentialId, work: F) -> FlightResult
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = FlightResult> + Send + 'static,
    {
        // Join the flight in progress, or register a new one; the map lock is released before
        // spawning, so a spawn that fails (no runtime, or one shutting down) drops the flight's
        // guard without deadlocking on that lock, and the caller gets `Interrupted`.
        let (mut rx, new_flight) = {
            let mut flights = lock(&self.inner.flights);
            if let Some(rx) = flights.get(id) {
                (rx.clone(), None)
            } else {
                let (tx, rx) = watch::channel(None);
                flights.insert(id.clone(), rx.clone());
                let guard = FlightGuard {
                    inner: Arc::clone(&self.inner),
                    id: id.clone(),
                    tx,
                    done: false,
                };
                (rx, Some(guard))
            }
        };
        if let Some(mut guard) = new_flight {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let limit = self.inner.limit.clone();
                    runtime.spawn(async move {
                        let _permit = match limit {
                            Some(sem) => sem.acquire_owned().await.ok(),
                            None => None,
                        };
                        let result = work().await;
                        guard.finish(result);
                    });
                }
                // No runtime to run the flight on: it ends at once, for every waiter.
                Err(_) => drop(guard),
            }
        }
        let interrupted = || RefreshError::Interrupted { id: id.clone() };
        match rx.wait_for(Option::is_some).await {
            Ok(result) => result.clone().unwrap_or_else(|| Err(interrupted())),
            Err(_) => Err(interrupted()),
        }
    }

    /// The refresh protocol in one call, inside a single flight for `id`:
    ///
    /// 1. re-read the current credential with `current()`;
    /// 2. if `needs_refresh` says it no longer needs a refresh (another refresh already replaced
    ///    it), return it with `refreshed: false`: an exchanged refresh token is never presented
    ///    again;
    /// 3. otherwise call `refresher.refresh`, apply the returned tokens to the credential
    ///    ([`Credential::apply_tokens`]), and `commit` the new credential (the caller persists and publishes it) before returning it to every waiter.
    ///
    /// **A failed commit loses nothing.** The error is [`RefreshError::CommitFailed`], which
    /// carries the refreshed credential (its refresh token is now the only valid one; adopt it with
    /// [`RefreshError::refreshed_credential`]). The coordinator also keeps it: the next
    /// `refresh_if_needed` for `id` whose `current()` still holds the tokens that were refreshed
    /// does not call the refresher again but retries `commit` with the kept credential. The kept
    /// credential is dropped once `current()` shows other tokens (it was adopted, or the
    /// credential was re-authorized).
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
        N: Fn(&Credential) -> bool + Send + 'static,
        M: FnOnce(Credential) -> BoxFuture<'static, Result<(), RefreshError>> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let flight_id = id.clone();
        self.run(id, move || async move {
            let cred = current();
            if let Some(kept) = take_uncommitted(&inner, &flight_id, &cred) {
                return commit_or_keep(&inner, kept.previous, kept.credential, commit).await;
            }
            if !needs_refresh(&cred) {
                return Ok(RefreshOutcome {
                    credential: cred,
                    refreshed: false,
                });
            }
            let tokens = refresher.refresh(&cred).await?;
            // The refresher returns tokens, never a credential: they are applied to this
            // credential (same id; RFC 6749 section 6 bookkeeping in `apply_tokens`).
            let mut refreshed = cred.clone();
            refreshed.apply_tokens(tokens, chrono::Utc::now());
            commit_or_keep(&inner, cred, refreshed, commit).await
        })
        .await
    }
}

/// The kept, uncommitted credential for `id`, if `current` still holds the tokens it was refreshed
/// from. A kept credential that no longer applies (adopted, or superseded) is discarded.
fn take_uncommitted(inner: &Inner, id: &CredentialId, current: &Credential) -> Option<Uncommitted> {
    let kept = lock(&inner.uncommitted).remove(id)?;
    current.same_tokens(&kept.previous).then_some(kept)
}

async fn commit_or_keep<M>(
    inner: &Inner,
    previous: Credential,
    refreshed: Credential,
    commit: M,
) -> FlightResult
where
    M: FnOnce(Credential) -> BoxFuture<'static, Result<(), RefreshError>>,
{
    match commit(refreshed.clone()).await {
        Ok(()) => Ok(RefreshOutcome {
            credential: refreshed,
            refreshed: true,
        }),
        Err(source) => {
            lock(&inner.uncommitted).insert(
                refreshed.id.clone(),
                Uncommitted {
                    previous,
                    credential: refreshed.clone(),
                },
            );
            Err(RefreshError::CommitFailed {
                refreshed: Box::new(refreshed),
                source: Box::new(source),
            })
        }
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
