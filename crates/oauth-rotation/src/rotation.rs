//! [`Rotation`]: the tracker behind a lock plus the hooks, with hooks always called unlocked.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, Event};

use crate::error::RotationError;
use crate::hooks::{HookError, NoopHooks, RotationHooks};
use crate::policy::RotationPolicy;
use crate::state::RotationState;
use crate::tracker::RotationTracker;

/// A [`RotationTracker`] behind a `std` mutex together with the [`RotationHooks`], running the
/// whole protocol: the lock is never held across an `.await`, and hooks always run with it
/// released, so a hook may call any method of this `Rotation` (or of a manager using it).
///
/// It also makes sure only one decommission of a credential is in flight: a second
/// [`complete_rotation`](Self::complete_rotation) of the same credential while the first one's
/// hook runs fails with [`RotationError::CompletionInProgress`] instead of asking the hook twice.
#[derive(Debug)]
pub struct Rotation {
    inner: Mutex<Inner>,
    hooks: Arc<dyn RotationHooks>,
}

#[derive(Debug)]
struct Inner {
    tracker: RotationTracker,
    /// Credentials whose decommission hook is running.
    completing: BTreeSet<CredentialId>,
}

/// What [`Rotation::mark_for_rotation`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MarkOutcome {
    /// The [`RotationStarted`](oauth_core::EventKind::RotationStarted) event.
    pub event: Event,
    /// What [`RotationHooks::on_rotation_needed`] returned. An error does not undo the mark: the
    /// replacement is already in the pool, and un-marking would leave the old credential to be
    /// rotated again. Report it and fix the cause; the hook is not called again.
    pub hook_result: Result<(), HookError>,
}

/// What [`Rotation::auto_decommission_expired`] did: every success and every failure.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct AutoDecommissionReport {
    /// Credentials decommissioned (and passed to `remove`), sorted.
    pub decommissioned: Vec<CredentialId>,
    /// Credentials that stay, each with its reason (a hook veto, or a concurrent change).
    pub failures: Vec<(CredentialId, RotationError)>,
    /// [`Decommissioned`](oauth_core::EventKind::Decommissioned) and
    /// [`DecommissionFailed`](oauth_core::EventKind::DecommissionFailed) events, in order.
    pub events: Vec<Event>,
}

impl AutoDecommissionReport {
    /// True when nothing was due.
    pub fn is_empty(&self) -> bool {
        self.decommissioned.is_empty() && self.failures.is_empty()
    }
}

/// Removes a credential from the in-flight set however the completion ends (success, error,
/// panic in the hook, or the future being dropped).
struct Claim<'a> {
    rotation: &'a Rotation,
    id: &'a CredentialId,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.rotation.lock().completing.remove(self.id);
    }
}

impl Rotation {
    /// Rotation with `policy` and `hooks`, tracking nothing yet.
    pub fn new(policy: RotationPolicy, hooks: Arc<dyn RotationHooks>) -> Self {
        Self::from_tracker(RotationTracker::new(policy), hooks)
    }

    /// Rotation with `policy` and [`NoopHooks`].
    pub fn without_hooks(policy: RotationPolicy) -> Self {
        Self::new(policy, Arc::new(NoopHooks))
    }

    /// Rotation over an existing tracker (restored states, for example).
    pub fn from_tracker(tracker: RotationTracker, hooks: Arc<dyn RotationHooks>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                tracker,
                completing: BTreeSet::new(),
            }),
            hooks,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every tracker transition checks before it mutates, so a poisoned state is consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hooks.
    pub fn hooks(&self) -> &Arc<dyn RotationHooks> {
        &self.hooks
    }

    /// A copy of the policy.
    pub fn policy(&self) -> RotationPolicy {
        self.lock().tracker.policy().clone()
    }

    /// Replaces the policy (see [`RotationTracker::set_policy`]).
    pub fn set_policy(&self, policy: RotationPolicy) {
        self.lock().tracker.set_policy(policy);
    }

    /// See [`RotationTracker::track`].
    ///
    /// # Errors
    /// [`RotationError::DuplicateId`].
    pub fn track(&self, id: CredentialId, created_at: DateTime<Utc>) -> Result<(), RotationError> {
        self.lock().tracker.track(id, created_at)
    }

    /// See [`RotationTracker::untrack`].
    pub fn untrack(&self, id: &CredentialId) -> Option<RotationState> {
        self.lock().tracker.untrack(id)
    }

    /// A copy of the state of `id`.
    pub fn state(&self, id: &CredentialId) -> Option<RotationState> {
        self.lock().tracker.state(id).cloned()
    }

    /// See [`RotationTracker::check_rotation_needed`].
    pub fn check_rotation_needed(&self, now: DateTime<Utc>) -> Vec<CredentialId> {
        self.lock().tracker.check_rotation_needed(now)
    }

    /// See [`RotationTracker::is_marked`].
    pub fn is_marked(&self, id: &CredentialId) -> bool {
        self.lock().tracker.is_marked(id)
    }

    /// See [`RotationTracker::is_preferred`].
    pub fn is_preferred(&self, id: &CredentialId) -> bool {
        self.lock().tracker.is_preferred(id)
    }

    /// Runs `f` on the tracker under the lock, for reads this type does not wrap. `f` must not
    /// call back into this `Rotation` (the `std` mutex is not reentrant).
    pub fn with_tracker<R>(&self, f: impl FnOnce(&RotationTracker) -> R) -> R {
        f(&self.lock().tracker)
    }

    /// Marks `old` for rotation (see [`RotationTracker::mark_for_rotation`]), then, with the lock
    /// released, calls [`RotationHooks::on_rotation_needed`] for `old`.
    ///
    /// # Errors
    /// Those of [`RotationTracker::mark_for_rotation`]; the hook is not called then. A hook error
    /// is returned in [`MarkOutcome::hook_result`], not here.
    pub async fn mark_for_rotation(
        &self,
        old: &CredentialId,
        new_id: CredentialId,
        new_created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<MarkOutcome, RotationError> {
        let event = self.mark(old, new_id, new_created_at, now)?;
        let hook_result = self.rotation_needed(old).await;
        Ok(MarkOutcome { event, hook_result })
    }

    /// The first half of [`mark_for_rotation`](Self::mark_for_rotation): the mark alone, with no
    /// hook, for a caller that must change its own state under its own lock between the mark and
    /// the hook. Call [`rotation_needed`](Self::rotation_needed) afterwards, with that lock
    /// released.
    ///
    /// # Errors
    /// Those of [`RotationTracker::mark_for_rotation`].
    pub fn mark(
        &self,
        old: &CredentialId,
        new_id: CredentialId,
        new_created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Event, RotationError> {
        self.lock()
            .tracker
            .mark_for_rotation(old, new_id, new_created_at, now)
    }

    /// The second half of [`mark_for_rotation`](Self::mark_for_rotation): calls
    /// [`RotationHooks::on_rotation_needed`] for `old` (this lock is not held).
    pub async fn rotation_needed(&self, old: &CredentialId) -> Result<(), HookError> {
        self.hooks.on_rotation_needed(old).await
    }

    /// Decommissions `id` once its grace period has ended: checks, asks
    /// [`RotationHooks::on_decommission`] with the lock released, re-checks and removes the state,
    /// then calls `remove(id)` (with the lock released) so the caller drops the credential from its
    /// pool. Returns the [`Decommissioned`](oauth_core::EventKind::Decommissioned) event.
    ///
    /// # Errors
    /// [`RotationError::CompletionInProgress`] while another completion of `id` runs; those of
    /// [`RotationTracker::begin_completion`] and [`RotationTracker::finish_completion`];
    /// [`RotationError::HookRejected`] when the hook refuses, and then the credential stays,
    /// still marked ([`RotationError::decommission_failed_event`] gives the event to report).
    /// `remove` is called only on success.
    pub async fn complete_rotation(
        &self,
        id: &CredentialId,
        now: DateTime<Utc>,
        remove: impl FnOnce(&CredentialId),
    ) -> Result<Event, RotationError> {
        let (ticket, claim) = {
            let mut inner = self.lock();
            if inner.completing.contains(id) {
                return Err(RotationError::CompletionInProgress { id: id.clone() });
            }
            let ticket = inner.tracker.begin_completion(id, now)?;
            inner.completing.insert(id.clone());
            (ticket, Claim { rotation: self, id })
        };
        if let Err(e) = self.hooks.on_decommission(id).await {
            return Err(RotationError::HookRejected {
                id: id.clone(),
                message: e.message().to_owned(),
            });
        }
        let event = self.lock().tracker.finish_completion(ticket, now)?;
        drop(claim);
        remove(id);
        Ok(event)
    }

    /// Completes every credential whose grace period ended strictly before `now`, when the
    /// policy's `auto_decommission` is on (nothing otherwise), one after the other, each as
    /// [`complete_rotation`](Self::complete_rotation). Every failure is reported, not only the last.
    pub async fn auto_decommission_expired(
        &self,
        now: DateTime<Utc>,
        mut remove: impl FnMut(&CredentialId),
    ) -> AutoDecommissionReport {
        let expired = self.lock().tracker.expired_for_decommission(now);
        let mut report = AutoDecommissionReport::default();
        for id in expired {
            match self.complete_rotation(&id, now, &mut remove).await {
                Ok(event) => {
                    report.events.push(event);
                    report.decommissioned.push(id);
                }
                Err(err) => {
                    report.events.extend(err.decommission_failed_event(now));
                    report.failures.push((id, err));
                }
            }
        }
        report
    }
}
