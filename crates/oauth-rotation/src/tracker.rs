//! The pure rotation state machine over all credentials of a pool.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, Event, EventKind, RotationFacts, delta};

use crate::error::RotationError;
use crate::policy::RotationPolicy;
use crate::state::RotationState;

/// The rotation state of every credential of a pool, and its transitions.
///
/// Pure and synchronous: every method takes `now`, nothing reads a clock, nothing calls a hook.
/// The owner keeps it behind its own lock. Anything that involves a hook is split in two phases so
/// the hook runs with the lock released:
///
/// 1. under the lock, [`begin_completion`](Self::begin_completion) checks and returns a
///    [`CompletionTicket`], changing nothing;
/// 2. without the lock, the owner calls [`RotationHooks::on_decommission`];
/// 3. under the lock again, [`finish_completion`](Self::finish_completion) re-checks (the state may
///    have changed meanwhile) and removes the state.
///
/// Marking needs no such split: [`mark_for_rotation`](Self::mark_for_rotation) changes the state
/// and the owner calls [`RotationHooks::on_rotation_needed`] after releasing the lock.
/// [`Rotation`](crate::Rotation) does all of this for you.
///
/// Results are sorted by id, so they are deterministic.
///
/// [`RotationHooks::on_decommission`]: crate::RotationHooks::on_decommission
/// [`RotationHooks::on_rotation_needed`]: crate::RotationHooks::on_rotation_needed
#[derive(Debug, Clone, Default)]
pub struct RotationTracker {
    policy: RotationPolicy,
    states: BTreeMap<CredentialId, RotationState>,
}

/// Proof that a completion passed its checks, to hand to
/// [`RotationTracker::finish_completion`] once the decommission hook agreed. It identifies one
/// rotation: if the credential is removed and marked again meanwhile, the ticket no longer matches.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a completion does nothing until the ticket is finished"]
pub struct CompletionTicket {
    id: CredentialId,
    replacement: CredentialId,
    rotation_started_at: DateTime<Utc>,
    decommission_at: DateTime<Utc>,
}

impl CompletionTicket {
    /// The credential to decommission.
    pub const fn id(&self) -> &CredentialId {
        &self.id
    }

    /// Its replacement.
    pub const fn replacement(&self) -> &CredentialId {
        &self.replacement
    }

    /// The end of its grace period.
    pub const fn decommission_at(&self) -> DateTime<Utc> {
        self.decommission_at
    }
}

impl RotationTracker {
    /// An empty tracker with `policy`. The policy is not validated here; see
    /// [`RotationPolicy::validate`].
    pub fn new(policy: RotationPolicy) -> Self {
        Self {
            policy,
            states: BTreeMap::new(),
        }
    }

    /// The current policy.
    pub const fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    /// Replaces the policy. Marked credentials keep the grace period they were given.
    pub fn set_policy(&mut self, policy: RotationPolicy) {
        self.policy = policy;
    }

    /// Starts tracking an active credential created at `created_at` (pass the credential's
    /// persisted [`created_at`](oauth_core::Credential::created_at) so its age survives restarts).
    ///
    /// # Errors
    /// [`RotationError::DuplicateId`] when `id` is already tracked.
    pub fn track(
        &mut self,
        id: CredentialId,
        created_at: DateTime<Utc>,
    ) -> Result<(), RotationError> {
        self.restore(id, RotationState::new(created_at))
    }

    /// Starts tracking `id` with a previously saved state (marked or not).
    ///
    /// # Errors
    /// [`RotationError::DuplicateId`] when `id` is already tracked;
    /// [`RotationError::InconsistentState`] when `state` is neither a valid active nor a valid
    /// marked state.
    pub fn restore(&mut self, id: CredentialId, state: RotationState) -> Result<(), RotationError> {
        if !state.is_consistent() {
            return Err(RotationError::InconsistentState { id });
        }
        if self.states.contains_key(&id) {
            return Err(RotationError::DuplicateId { id });
        }
        self.states.insert(id, state);
        Ok(())
    }

    /// Stops tracking `id` (a credential removed by other means) and returns its last state.
    pub fn untrack(&mut self, id: &CredentialId) -> Option<RotationState> {
        self.states.remove(id)
    }

    /// The state of `id`, if tracked.
    pub fn state(&self, id: &CredentialId) -> Option<&RotationState> {
        self.states.get(id)
    }

    /// Every tracked credential and its state, sorted by id.
    pub fn states(&self) -> impl ExactSizeIterator<Item = (&CredentialId, &RotationState)> {
        self.states.iter()
    }

    /// Number of tracked credentials.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// True when no credential is tracked.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Credentials due for rotation at `now`, sorted: only while the policy is enabled, not
    /// already marked, and at least `rotation_interval` old (measured from `created_at`).
    pub fn check_rotation_needed(&self, now: DateTime<Utc>) -> Vec<CredentialId> {
        self.due(now).map(|(id, _)| id.clone()).collect()
    }

    /// The same credentials as [`check_rotation_needed`](Self::check_rotation_needed), as
    /// [`EventKind::RotationDue`] events carrying each one's age.
    pub fn due_events(&self, now: DateTime<Utc>) -> Vec<Event> {
        self.due(now)
            .map(|(id, state)| {
                Event::new(
                    now,
                    EventKind::RotationDue {
                        credential: id.clone(),
                        age: state.age(now),
                    },
                )
            })
            .collect()
    }

    fn due(&self, now: DateTime<Utc>) -> impl Iterator<Item = (&CredentialId, &RotationState)> {
        let interval = delta(self.policy.rotation_interval);
        let enabled = self.policy.enabled;
        self.states.iter().filter(move |(_, s)| {
            enabled && !s.marked_for_rotation && now.signed_duration_since(s.created_at) >= interval
        })
    }

    /// Marks `old` for rotation: `new_id` (created at `new_created_at`) starts being tracked and is
    /// preferred; `old` keeps serving until `now + grace_period`. Works whether or not the policy
    /// is enabled. The caller adds the new credential to its pool and then calls
    /// [`RotationHooks::on_rotation_needed`](crate::RotationHooks::on_rotation_needed) with no lock
    /// held.
    ///
    /// # Errors
    /// In this order: [`RotationError::UnknownCredential`] for an untracked `old`,
    /// [`RotationError::AlreadyMarked`], [`RotationError::DuplicateId`] when `new_id` is already
    /// tracked (including `new_id == old`). Nothing changes on error.
    pub fn mark_for_rotation(
        &mut self,
        old: &CredentialId,
        new_id: CredentialId,
        new_created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Event, RotationError> {
        let state = self
            .states
            .get(old)
            .ok_or_else(|| RotationError::UnknownCredential { id: old.clone() })?;
        if state.marked_for_rotation {
            return Err(RotationError::AlreadyMarked { id: old.clone() });
        }
        if self.states.contains_key(&new_id) {
            return Err(RotationError::DuplicateId { id: new_id });
        }
        let decommission_at = now
            .checked_add_signed(delta(self.policy.grace_period))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.states
            .insert(new_id.clone(), RotationState::new(new_created_at));
        if let Some(state) = self.states.get_mut(old) {
            state.marked_for_rotation = true;
            state.rotation_started_at = Some(now);
            state.replacement_id = Some(new_id.clone());
            state.decommission_at = Some(decommission_at);
        }
        Ok(Event::new(
            now,
            EventKind::RotationStarted {
                credential: old.clone(),
                replacement: new_id,
                decommission_at,
            },
        ))
    }

    /// True when `id` is marked for rotation (an old credential in its grace period).
    pub fn is_marked(&self, id: &CredentialId) -> bool {
        self.states.get(id).is_some_and(|s| s.marked_for_rotation)
    }

    /// True unless `id` is marked for rotation: selection should pick preferred credentials first
    /// and fall back to marked ones only when no preferred one is available. Untracked ids are
    /// preferred.
    pub fn is_preferred(&self, id: &CredentialId) -> bool {
        !self.is_marked(id)
    }

    /// The replacement of `old`, if `old` is marked.
    pub fn replacement_of(&self, old: &CredentialId) -> Option<&CredentialId> {
        self.states.get(old).and_then(|s| s.replacement_id.as_ref())
    }

    /// The credential `new` replaces, if it is the replacement of a marked one.
    pub fn replaced_by(&self, new: &CredentialId) -> Option<&CredentialId> {
        self.states
            .iter()
            .find(|(_, s)| s.replacement_id.as_ref() == Some(new))
            .map(|(id, _)| id)
    }

    /// Every marked credential, sorted: the set selection should avoid while others are available.
    pub fn marked(&self) -> impl Iterator<Item = &CredentialId> {
        self.states
            .iter()
            .filter(|(_, s)| s.marked_for_rotation)
            .map(|(id, _)| id)
    }

    /// The rotation facts of `id` for its health report (default when untracked).
    pub fn facts(&self, id: &CredentialId) -> RotationFacts {
        self.states
            .get(id)
            .map(RotationState::facts)
            .unwrap_or_default()
    }

    /// Phase 1 of a completion: checks that `id` may be decommissioned at `now` and returns a
    /// ticket. Changes nothing.
    ///
    /// # Errors
    /// [`RotationError::UnknownCredential`], [`RotationError::NotMarked`], or
    /// [`RotationError::GraceNotElapsed`] (saying when it will have) when `now < decommission_at`.
    pub fn begin_completion(
        &self,
        id: &CredentialId,
        now: DateTime<Utc>,
    ) -> Result<CompletionTicket, RotationError> {
        let state = self
            .states
            .get(id)
            .ok_or_else(|| RotationError::UnknownCredential { id: id.clone() })?;
        let (Some(rotation_started_at), Some(replacement), Some(decommission_at)) = (
            state.rotation_started_at,
            state.replacement_id.clone(),
            state.decommission_at,
        ) else {
            return Err(RotationError::NotMarked { id: id.clone() });
        };
        if !state.marked_for_rotation {
            return Err(RotationError::NotMarked { id: id.clone() });
        }
        if now < decommission_at {
            return Err(RotationError::GraceNotElapsed {
                id: id.clone(),
                decommission_at,
            });
        }
        Ok(CompletionTicket {
            id: id.clone(),
            replacement,
            rotation_started_at,
            decommission_at,
        })
    }

    /// Phase 2 of a completion, after the decommission hook agreed: checks again, removes the
    /// state and returns [`EventKind::Decommissioned`]. The caller then removes the credential
    /// from its pool.
    ///
    /// # Errors
    /// Those of [`begin_completion`](Self::begin_completion), and
    /// [`RotationError::StateChanged`] when the credential is marked in another rotation than the
    /// ticket's. Nothing changes on error.
    pub fn finish_completion(
        &mut self,
        ticket: CompletionTicket,
        now: DateTime<Utc>,
    ) -> Result<Event, RotationError> {
        let current = self.begin_completion(&ticket.id, now)?;
        if current != ticket {
            return Err(RotationError::StateChanged { id: ticket.id });
        }
        self.states.remove(&ticket.id);
        Ok(Event::new(
            now,
            EventKind::Decommissioned {
                credential: ticket.id,
            },
        ))
    }

    /// Marked credentials whose grace period ended strictly before `now`, sorted; empty when the
    /// policy's `auto_decommission` is off. (Independent of `enabled`, as in Go.)
    pub fn expired_for_decommission(&self, now: DateTime<Utc>) -> Vec<CredentialId> {
        if !self.policy.auto_decommission {
            return Vec::new();
        }
        self.states
            .iter()
            .filter(|(_, s)| s.marked_for_rotation && s.decommission_at.is_some_and(|at| now > at))
            .map(|(id, _)| id.clone())
            .collect()
    }
}
