//! `execute_with_failover`: one call, classified failover.

use std::future::Future;
use std::sync::Arc;

use tracing::Instrument as _;

use oauth_core::{ClassifyFailure, Credential, CredentialId, FailureKind, Usage};
use oauth_metrics::RequestOutcome;

use crate::clock::{clamp_ms, from_ms};
use crate::error::{AttemptError, ExecuteError};
use crate::manager::OAuthKeyManager;
use crate::refreshing::RefreshNeed;
use crate::selection::{Ahead, Held, InFlight, Now, Slot};
use crate::settings::{FailoverSettings, Settings};

/// What a successful [`execute_with_failover`](OAuthKeyManager::execute_with_failover) returns.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Served<T> {
    /// The operation's value.
    pub value: T,
    /// The usage the operation reported.
    pub usage: Option<Usage>,
    /// The credential that served it.
    pub credential: CredentialId,
    /// Attempts made (1 when the first credential served it).
    pub attempts: u32,
}

/// The settings one call reads, copied once at its start (a few words: the paths that need the
/// refresh strategy or the health policy read the settings in force when they run).
struct CallSettings {
    failover: FailoverSettings,
}

impl From<&Settings> for CallSettings {
    fn from(s: &Settings) -> Self {
        Self {
            failover: s.failover.clone(),
        }
    }
}

/// After a refresh deferred to another process's lease, how long calls use the current token
/// without asking again (the refresher re-tries a held lease no sooner either).
const DEFERRED_RECHECK_MS: i64 = 250;

/// How one attempt failed.
struct Failed<E> {
    kind: FailureKind,
    error: AttemptError<E>,
}

impl OAuthKeyManager {
    /// Runs `operation` with an available credential, failing over to others as its failures
    /// dictate (Go `ExecuteWithFailover` and `ExecuteWithFailoverMessage`, for any result type).
    ///
    /// The operation gets a copy of the credential and returns its value and optional [`Usage`], or
    /// an error whose [`ClassifyFailure`] says what it means:
    /// - rate-limited: the credential cools down for Retry-After (or the reset hint) and the next
    ///   credential is tried;
    /// - unauthorized: the credential is refreshed (once, shared with concurrent callers) and the
    ///   operation retried on it once;
    /// - permanent auth failure: the credential needs re-authorization, an alert goes out, the next
    ///   is tried;
    /// - transient (also any error that says nothing): backoff, next credential;
    /// - request-scoped: returned at once; no credential is penalized.
    ///
    /// Tokens are refreshed before use when the refresh strategy says so, through the single-flight
    /// coordinator. Attempts are bounded by [`FailoverSettings`](crate::FailoverSettings) (default
    /// `min(n, 3)`), its deadline, and the caller (dropping the future cancels the call, never a
    /// refresh other callers wait for).
    ///
    /// # Errors
    /// [`ExecuteError`]: request-scoped rejection, attempts exhausted (with the last error), no
    /// credential available (saying when one will be), or the deadline.
    pub async fn execute_with_failover<T, E, F, Fut>(
        &self,
        operation: F,
    ) -> Result<Served<T>, ExecuteError<E>>
    where
        F: FnMut(Arc<Credential>) -> Fut,
        Fut: Future<Output = Result<(T, Option<Usage>), E>>,
        E: ClassifyFailure,
    {
        // An owned copy of what a call needs (no heap: durations and flags), so no guard on the
        // shared settings is held while the operation runs. Without a deadline or a wait, the
        // selector's packed copy serves (one atomic load instead of the settings' `ArcSwap`).
        let settings = match self.inner.selection.quick_failover() {
            Some(failover) => CallSettings { failover },
            None => CallSettings::from(&**self.settings()),
        };
        // One span per call (and one per attempt inside it): provider, credentials, attempts and
        // outcome classes, never a token.
        let span = tracing::info_span!(
            "oauth.execute",
            provider = %self.inner.provider,
            credential = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        // The common case awaited directly: no wrapper future to build and move.
        if settings.failover.deadline.is_none() && span.is_disabled() {
            return self.execute_inner(operation, &settings).await;
        }
        let call = async {
            match settings.failover.deadline {
                None => self.execute_inner(operation, &settings).await,
                Some(deadline) => {
                    tokio::time::timeout(deadline, self.execute_inner(operation, &settings))
                        .await
                        .unwrap_or_else(|_| {
                            Err(ExecuteError::DeadlineExceeded {
                                provider: self.inner.provider.clone(),
                            })
                        })
                }
            }
        };
        // With no subscriber interested, no instrumentation wrapper at all on the hot path.
        if span.is_disabled() {
            call.await
        } else {
            call.instrument(span).await
        }
    }

    async fn execute_inner<T, E, F, Fut>(
        &self,
        mut operation: F,
        settings: &CallSettings,
    ) -> Result<Served<T>, ExecuteError<E>>
    where
        F: FnMut(Arc<Credential>) -> Fut,
        Fut: Future<Output = Result<(T, Option<Usage>), E>>,
        E: ClassifyFailure,
    {
        let failover = &settings.failover;
        let n = u32::try_from(self.inner.selection.len()).unwrap_or(u32::MAX);
        let max_attempts = failover.max_attempts.unwrap_or_else(|| n.min(3)).max(1);
        let wait_until = failover
            .wait_for_available
            .and_then(|d| tokio::time::Instant::now().checked_add(d));
        let mut attempts = 0;
        let mut last: Option<(CredentialId, Failed<E>)> = None;
        // Credentials this call failed on (allocated only after a failure): when every credential
        // is in backoff, the one recovering first takes the call, but not one this call just saw
        // failing.
        let mut failed_on: Vec<Arc<Slot>> = Vec::new();
        while attempts < max_attempts {
            let clock = Now::new(&self.inner.time);
            let picked = self
                .inner
                .selection
                .select_held(&clock, true, Ahead::Targets)
                .and_then(|held| {
                    let slot = held.slot();
                    if failed_on.iter().any(|f| Arc::ptr_eq(f, slot))
                        && !slot.is_available_at(clock.get())
                    {
                        self.inner
                            .selection
                            .soonest_except(clock.get(), &failed_on)
                            .map(Held::Shared)
                            .ok_or_else(|| self.inner.selection.none_available(clock.get()))
                    } else {
                        Ok(held)
                    }
                });
            let held = match picked {
                Ok(held) => {
                    self.inner.telemetry.served();
                    held
                }
                Err(none) => {
                    let now = self.inner.time.health();
                    if let (Some(until), Some(next)) = (wait_until, none.next_available_at) {
                        let wait = (next - now).to_std().unwrap_or_default();
                        if let Some(wake) = tokio::time::Instant::now().checked_add(wait)
                            && wake <= until
                        {
                            // Boxed: a timer is large, and only this rare path needs one.
                            Box::pin(tokio::time::sleep_until(wake)).await;
                            tokio::task::yield_now().await;
                            continue;
                        }
                    }
                    let unavailable = self.unavailable(none.next_available_at);
                    self.inner
                        .telemetry
                        .exhausted(unavailable.next_available_at, self.now());
                    return Err(ExecuteError::Unavailable {
                        unavailable,
                        last: last.map(|(id, f)| (id, f.error)),
                    });
                }
            };
            attempts += 1;
            let slot = held.slot();
            let now_ms = clock.get();
            let attempt_span = tracing::info_span!(
                "oauth.attempt",
                credential = %slot.id,
                attempt = attempts,
                outcome = tracing::field::Empty,
            );
            let traced = !attempt_span.is_disabled();
            let result = if traced {
                self.attempt(&held, &mut operation, now_ms)
                    .instrument(attempt_span.clone())
                    .await
            } else {
                self.attempt(&held, &mut operation, now_ms).await
            };
            if traced {
                attempt_span.record(
                    "outcome",
                    match &result {
                        Ok(_) => "success",
                        Err(failed) => failed.kind.as_str(),
                    },
                );
            }
            match result {
                Ok((value, usage)) => {
                    if traced {
                        let span = tracing::Span::current();
                        span.record("credential", tracing::field::display(&slot.id));
                        span.record("attempts", attempts);
                    }
                    return Ok(Served {
                        value,
                        usage,
                        credential: slot.id.clone(),
                        attempts,
                    });
                }
                Err(Failed {
                    kind: FailureKind::RequestScoped,
                    error: AttemptError::Operation(error),
                }) => {
                    return Err(ExecuteError::RequestScoped {
                        provider: self.inner.provider.clone(),
                        credential: slot.id.clone(),
                        error,
                    });
                }
                Err(failed) => {
                    if attempts < max_attempts {
                        tracing::warn!(
                            credential = %slot.id,
                            reason = failed.kind.as_str(),
                            attempt = attempts,
                            "failing over to another credential"
                        );
                        self.inner.telemetry.record_failover(&slot.id, failed.kind);
                    }
                    last = Some((slot.id.clone(), failed));
                    failed_on.push(Arc::clone(slot));
                }
            }
        }
        match last {
            Some((credential, failed)) => Err(ExecuteError::AttemptsExhausted {
                provider: self.inner.provider.clone(),
                attempts,
                credential,
                kind: failed.kind,
                last: failed.error,
            }),
            None => Err(ExecuteError::Unavailable {
                unavailable: self.unavailable(None),
                last: None,
            }),
        }
    }

    /// One attempt on one credential: refresh if due, run, classify, record; retries once on the
    /// same credential after an unauthorized answer and a refresh.
    async fn attempt<T, E, F, Fut>(
        &self,
        held: &Held,
        operation: &mut F,
        now_ms: i64,
    ) -> Result<(T, Option<Usage>), Failed<E>>
    where
        F: FnMut(Arc<Credential>) -> Fut,
        Fut: Future<Output = Result<(T, Option<Usage>), E>>,
        E: ClassifyFailure,
    {
        let slot = held.slot();
        // The selection's clock read (the health timeline, in milliseconds) serves the whole
        // attempt; calendar time is made once, for the recorders, when the call ends.
        let mut at_ms = now_ms;
        // The hot path: one wall-clock reading compared with what the slot remembers. Otherwise
        // (a refresh may be due, the token may have expired, nothing is remembered yet) the slow
        // path decides, boxed so that its futures do not weigh on every call.
        let usable = slot.usable_until_ms();
        let (mut credential, mut generation) =
            if usable != i64::MIN && self.inner.time.wall_ms() < usable {
                held.credential_and_generation()
            } else {
                let (credential, refreshed) = Box::pin(self.credential_for_use(slot))
                    .await
                    .map_err(|e| Failed {
                        kind: e.kind(),
                        error: AttemptError::Refresh(e),
                    })?;
                if refreshed {
                    at_ms = self.inner.time.now_ms();
                }
                (credential, slot.generation())
            };
        let mut retried_unauthorized = false;
        loop {
            // Requests in flight matter only to the load-aware selections.
            let _in_flight = (self.inner.selection.selection() != crate::Selection::RoundRobin)
                .then(|| InFlight::enter(slot));
            let started = self.inner.time.ticks();
            // The only reference this call takes: the operation's. (The unauthorized path below
            // tells whether it is still current by the slot's generation.)
            let result = operation(credential).await;
            let latency = self.inner.time.elapsed(started, self.inner.time.ticks());
            // One clock read per attempt: the end of the call is its start plus its latency.
            let latency_ms = i64::try_from(latency.as_millis()).unwrap_or(i64::MAX);
            // Within what a `DateTime` holds, so that the milliseconds are `now`'s.
            let end_ms = clamp_ms(at_ms.saturating_add(latency_ms));
            let now = from_ms(end_ms);
            match result {
                Ok((value, usage)) => {
                    let tokens = usage.as_ref().map_or(0, Usage::tokens);
                    slot.record_request(tokens, latency, RequestOutcome::Success, now, end_ms);
                    let (change, changed) = slot.record_success(now, end_ms);
                    if change.is_some() || changed != Default::default() {
                        self.after_health_change(slot, change, changed);
                    }
                    return Ok((value, usage));
                }
                Err(error) => {
                    let mut kind = error.failure_kind();
                    slot.record_request(0, latency, RequestOutcome::Failure(kind), now, end_ms);
                    if kind == FailureKind::Unauthorized
                        && !retried_unauthorized
                        && self.inner.refreshing.is_configured()
                    {
                        retried_unauthorized = true;
                        let (current, now_generation) = slot.credential_and_generation();
                        if now_generation != generation {
                            // Replaced since this call took it (a refresh by another caller, the
                            // store): retry with the new one, as a refresh would have returned.
                            (credential, generation) = (current, now_generation);
                            at_ms = self.inner.time.now_ms();
                            continue;
                        }
                        let rejected = RefreshNeed::Rejected(Arc::clone(&current));
                        match Box::pin(self.inner.refreshing.refresh(self, slot, rejected)).await {
                            // A refresh that did not change the token (the grant is dead, or
                            // refresh is impossible) makes a retry pointless.
                            Ok(fresh) if !fresh.same_tokens(&current) => {
                                credential = fresh;
                                generation = slot.generation();
                                at_ms = self.inner.time.now_ms();
                                continue;
                            }
                            // The provider rejects a token whose grant is dead: unusable now.
                            Ok(_) if slot.read_health(|h| h.needs_reauthorization()) => {
                                kind = FailureKind::PermanentAuth;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                // The rejected token is unusable; a refresh backoff now keeps
                                // the credential out until the next attempt is due.
                                let now = self.inner.time.health();
                                let ((), published) =
                                    slot.with_health(now, |h| h.note_token_unusable(now));
                                self.after_health_change(slot, None, published);
                                return Err(Failed {
                                    kind: e.kind(),
                                    error: AttemptError::Refresh(e),
                                });
                            }
                        }
                    }
                    if kind != FailureKind::RequestScoped {
                        self.record_failure_since(slot, kind, from_ms(at_ms));
                    }
                    return Err(Failed {
                        kind,
                        error: AttemptError::Operation(error),
                    });
                }
            }
        }
    }

    /// The credential to use now, decided (the slow path of an attempt): refreshed first when
    /// the strategy says so and no refresh backoff is in force; if that refresh fails, or is
    /// backing off, while the current token still works, the current token. Without a refresher,
    /// a credential stays usable until its token really expires (Go made it unusable 5 minutes
    /// early). When the credential is usable as it is, the slot remembers until when, so the
    /// next calls skip this.
    async fn credential_for_use(
        &self,
        slot: &Arc<Slot>,
    ) -> Result<(Arc<Credential>, bool), oauth_refresh::RefreshError> {
        // The epoch first: what is remembered below is forgotten if the strategy or the
        // refresher changes after this read.
        let epoch = self.inner.selection.usable_epoch();
        let settings = self.settings();
        let credential = slot.credential();
        // Token expiry is wall time. One cheap wall reading (milliseconds), not a conversion
        // through the skew.
        let wall_ms = self.inner.time.wall_ms();
        let wall = from_ms(wall_ms);
        if !self.inner.refreshing.is_configured() {
            if credential.access_token_valid(wall) {
                let until = credential
                    .expires_at
                    .map_or(i64::MAX, |t| t.timestamp_millis());
                slot.remember_usable_until(&credential, until, epoch, &self.inner.selection);
                return Ok((credential, false));
            }
            let at = self.inner.time.health();
            let expired_at = credential
                .expires_at
                .map(|t| self.inner.time.on_timeline(t));
            let (change, published) = slot.with_health(at, |h| {
                h.record_refresh_failure(
                    FailureKind::PermanentAuth,
                    Some(expired_at.unwrap_or(at)),
                    &settings.health,
                    at,
                )
            });
            self.after_health_change(slot, change, published);
            return Err(oauth_refresh::RefreshError::NotConfigured {
                id: slot.id.clone(),
            });
        }
        if !self.needs_refresh_before_use(slot, &credential, &settings.strategy, wall) {
            if let Some(quiet) = settings.strategy.quiet_until(&credential) {
                let until = quiet.timestamp_millis();
                slot.remember_usable_until(&credential, until, epoch, &self.inner.selection);
            }
            return Ok((credential, false));
        }
        drop(settings);
        let result = self
            .inner
            .refreshing
            .refresh(self, slot, RefreshNeed::Strategy)
            .await;
        match result {
            Ok(fresh) => Ok((fresh, true)),
            // The refresh failed (recorded, backed off, alerted) or waits out its backoff, but the
            // token it was to replace still works: use it rather than fail the call.
            Err(e) if credential.access_token_valid(self.now()) => {
                // Another process holds the refresh: its result arrives through the store. Until
                // the lease is worth asking about again, calls take this token without deciding.
                if matches!(e, oauth_refresh::RefreshError::Deferred { .. }) {
                    let expiry = credential
                        .expires_at
                        .map_or(i64::MAX, |t| t.timestamp_millis());
                    let until = wall_ms.saturating_add(DEFERRED_RECHECK_MS).min(expiry);
                    slot.remember_usable_until(&credential, until, epoch, &self.inner.selection);
                }
                Ok((credential, true))
            }
            Err(e) => {
                let now = self.inner.time.health();
                let ((), published) = slot.with_health(now, |h| h.note_token_unusable(now));
                self.after_health_change(slot, None, published);
                Err(e)
            }
        }
    }
}
