//! Refresh through the single-flight coordinator, with persistence before use.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use oauth_core::{Credential, Event, EventKind, FailureKind, TokenSet};
use oauth_metrics::RefreshResult;
use oauth_refresh::{RefreshError, RefreshOutcome};
use oauth_store::StoreError;

use crate::manager::OAuthKeyManager;
use crate::pool::Slot;

/// How long a process waits for another process's refresh of the same credential.
const CROSS_PROCESS_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a refresh is wanted; re-checked inside the flight against the current credential, so a
/// refresh token that another caller (or process) already exchanged is never presented again.
#[derive(Debug, Clone)]
pub(crate) enum RefreshNeed {
    /// The refresh strategy says the token expires soon.
    Strategy,
    /// The provider rejected this credential's access token (401): refresh unless it has changed
    /// since.
    Rejected(Arc<Credential>),
    /// Maintenance refreshes idle credentials this long before the strategy would.
    Ahead(Duration),
    /// An explicit request.
    Forced,
}

impl OAuthKeyManager {
    /// Whether the credential must be refreshed before this use.
    pub(crate) fn needs_refresh_before_use(
        &self,
        slot: &Slot,
        credential: &Credential,
        strategy: &oauth_refresh::RefreshStrategy,
        now: DateTime<Utc>,
    ) -> bool {
        let usage = if strategy.adaptive_buffer || strategy.preemptive_refresh {
            Some(slot.usage.snapshot(now))
        } else {
            None
        };
        strategy.should_refresh(credential, usage.as_ref(), now) && !slot.needs_reauthorization()
    }

    fn still_needed(
        &self,
        slot: &Slot,
        need: &RefreshNeed,
        current: &Credential,
        now: DateTime<Utc>,
    ) -> bool {
        if slot.needs_reauthorization() && !matches!(need, RefreshNeed::Forced) {
            return false;
        }
        match need {
            RefreshNeed::Strategy => {
                self.needs_refresh_before_use(slot, current, &self.settings().strategy, now)
            }
            RefreshNeed::Rejected(old) => current.same_tokens(old),
            RefreshNeed::Ahead(ahead) => {
                let buffer = self.settings().strategy.buffer_time;
                current.expires_within(buffer.saturating_add(*ahead), now)
            }
            RefreshNeed::Forced => true,
        }
    }

    /// Refreshes the credential now, whatever its expiry (an operator's "refresh now").
    ///
    /// # Errors
    /// [`CredentialOpError`](crate::CredentialOpError): unknown id or the refresh's error.
    pub async fn refresh_now(&self, id: &str) -> Result<Credential, crate::CredentialOpError> {
        let slot = self
            .slot(id)
            .ok_or_else(|| crate::CredentialOpError::UnknownCredential { id: id.to_owned() })?;
        let c = self.refresh_slot(&slot, RefreshNeed::Forced).await?;
        Ok((*c).clone())
    }

    /// THE refresh of `slot`, shared with every concurrent caller: at most one in flight per
    /// credential (and, with a store that has a refresh lock, per machine).
    pub(crate) async fn refresh_slot(
        &self,
        slot: &Arc<Slot>,
        need: RefreshNeed,
    ) -> Result<Arc<Credential>, RefreshError> {
        let this = self.clone();
        let flight_slot = Arc::clone(slot);
        let outcome = self
            .inner
            .coordinator
            .run(&slot.id, move || async move {
                this.refresh_flight(&flight_slot, need).await
            })
            .await?;
        let _ = outcome;
        Ok(slot.credential())
    }

    async fn refresh_flight(
        &self,
        slot: &Arc<Slot>,
        need: RefreshNeed,
    ) -> Result<RefreshOutcome, RefreshError> {
        // Another process on this machine may be refreshing the same credential: take the store's
        // refresh lock, then re-read what the store holds.
        let _guard = match self.inner.store.as_ref().and_then(|s| s.refresh_lock()) {
            Some(lock) => Some(
                lock.acquire(&self.inner.provider, &slot.id, CROSS_PROCESS_LOCK_TIMEOUT)
                    .await
                    .map_err(store_to_refresh_error)?,
            ),
            None => None,
        };
        if let Some(store) = &self.inner.store
            && let Some(stored) = store
                .load(&self.inner.provider, &slot.id)
                .await
                .map_err(store_to_refresh_error)?
            && stored.version != slot.version.load(Ordering::Acquire)
        {
            self.adopt_external(
                slot,
                stored.value,
                crate::manager::Origin::Store {
                    version: stored.version,
                },
            );
        }
        let current = slot.credential();
        let now = self.now();
        if !self.still_needed(slot, &need, &current, now) {
            return Ok(RefreshOutcome {
                credential: (*current).clone(),
                refreshed: false,
            });
        }
        let started = Instant::now();
        let result = self.inner.refresher.refresh(&current).await;
        let elapsed = started.elapsed();
        let now = self.now();
        match result.map(|tokens| apply_tokens(&current, tokens, now)) {
            Ok(new) => {
                let rotated = match (&new.refresh_token, &current.refresh_token) {
                    (Some(a), Some(b)) => !oauth_core::secret::same_secret(a, b),
                    (Some(_), None) => true,
                    _ => false,
                };
                self.commit_refreshed(slot, new.clone()).await;
                slot.record_refresh(RefreshResult::Success, elapsed, now);
                let (change, changed) = slot.with_health(now, |h| h.record_refresh_success(now));
                self.after_health_change(slot, change, changed, now);
                self.report_state(slot, now);
                self.emit(Event::new(
                    now,
                    EventKind::Refreshed {
                        credential: slot.id.clone(),
                        expires_at: new.expires_at,
                        refresh_token_rotated: rotated,
                    },
                ));
                Ok(RefreshOutcome {
                    credential: new,
                    refreshed: true,
                })
            }
            Err(error) => {
                let kind = error.kind();
                slot.record_refresh(RefreshResult::Failure(kind), elapsed, now);
                let policy = self.settings().health.clone();
                // After a 401 the provider has already rejected the access token: it is not
                // usable until it expires, whatever its expiry says.
                let expires_at = match need {
                    RefreshNeed::Rejected(_) => None,
                    _ => current.expires_at,
                };
                let (change, changed) = slot.with_health(now, |h| {
                    let change = h.record_refresh_failure(kind, expires_at, &policy, now);
                    (change, h.refresh_failures())
                });
                let (change, failures) = change;
                self.emit(Event::new(
                    now,
                    EventKind::RefreshFailed {
                        credential: slot.id.clone(),
                        reason: kind,
                        consecutive_failures: failures,
                    },
                ));
                self.after_health_change(slot, change, changed, now);
                Err(error)
            }
        }
    }

    /// Hands a refreshed credential to the store and the credential provider, then publishes it.
    /// A failed persist is surfaced (event) and retried by maintenance; the credential is published
    /// anyway, because the refresh token it replaces may already be consumed.
    async fn commit_refreshed(&self, slot: &Arc<Slot>, new: Credential) {
        let persisted = self.persist(slot, &new).await;
        slot.set_credential(new);
        match persisted {
            Ok(()) => slot.persisted(),
            Err(reason) => {
                slot.persist_pending.store(true, Ordering::Release);
                let attempts = slot.record_persistence_failure();
                self.emit(Event::new(
                    self.now(),
                    EventKind::PersistenceFailed {
                        credential: slot.id.clone(),
                        reason,
                        attempts,
                    },
                ));
            }
        }
    }

    /// Writes `credential` to the store (compare-and-set on the slot's version; on a conflict the
    /// freshly refreshed credential wins, since it holds the newest tokens the server issued) and to
    /// the credential provider. Returns a secret-free reason on failure.
    pub(crate) async fn persist(&self, slot: &Slot, credential: &Credential) -> Result<(), String> {
        if let Some(store) = &self.inner.store {
            let provider = &self.inner.provider;
            let expected = Some(slot.version.load(Ordering::Acquire)).filter(|v| *v != 0);
            let saved = match store.save(provider, credential, expected).await {
                Err(e) if e.is_conflict() => {
                    let actual = store
                        .load(provider, &credential.id)
                        .await
                        .map_err(|e| e.to_string())?
                        .map(|v| v.version);
                    store.save(provider, credential, actual).await
                }
                other => other,
            };
            let version = saved.map_err(|e| e.to_string())?;
            slot.version.store(version, Ordering::Release);
        }
        let provider = self
            .inner
            .credential_provider
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(p) = provider {
            p.update_credential(&self.inner.provider, credential)
                .await
                // The provider's message is its implementer's text: not passed on to events.
                .map_err(|_| "the credential provider refused the update".to_owned())?;
        }
        Ok(())
    }
}

/// A refresher must return the same credential, refreshed. One that changes the id still holds
/// the tokens the server just issued (the refresh token it exchanged is gone), so the tokens are
/// kept under the pool's id rather than dropped; the id the refresher made up is discarded.
/// The credential with a refresh's tokens applied (RFC 6749 section 6 and the refresh
/// bookkeeping happen in `Credential::apply_tokens`).
fn apply_tokens(current: &Credential, tokens: TokenSet, now: DateTime<Utc>) -> Credential {
    let mut new = current.clone();
    new.apply_tokens(tokens, now);
    new
}

fn store_to_refresh_error(e: StoreError) -> RefreshError {
    let kind = if e.is_retryable() {
        FailureKind::Transient
    } else {
        FailureKind::Misconfigured
    };
    RefreshError::other(kind, format!("store: {e}"))
}
