//! Credential rotation on the pool: the state machine lives in `oauth-rotation`; the manager adds
//! and removes credentials and calls the hooks with no lock held.

use std::sync::Arc;

use oauth_core::{Credential, CredentialId, Event};
use oauth_rotation::{
    AutoDecommissionReport, Rotation, RotationHooks, RotationState, RotationTracker,
};

use crate::error::{RotationOpError, UnknownCredential};
use crate::manager::OAuthKeyManager;

/// The rotation component: oauth-rotation's state machine behind its own lock, with the hooks it
/// calls with no lock held.
pub(crate) struct Rotating(Rotation);

impl Rotating {
    pub(crate) fn new(tracker: RotationTracker, hooks: Arc<dyn RotationHooks>) -> Self {
        Self(Rotation::from_tracker(tracker, hooks))
    }
}

impl std::ops::Deref for Rotating {
    type Target = Rotation;

    fn deref(&self) -> &Rotation {
        &self.0
    }
}

impl OAuthKeyManager {
    /// Credentials older than the rotation interval (measured from their persisted creation time)
    /// and not yet marked, sorted (Go `CheckRotationNeeded`). Empty while the policy is disabled.
    pub fn check_rotation_needed(&self) -> Vec<CredentialId> {
        self.inner.rotation.check_rotation_needed(self.now())
    }

    /// Starts rotating `old` out in favour of `replacement` (Go `MarkForRotation`): the replacement
    /// joins the pool (and the store) and is preferred; `old` keeps serving, as a fallback, until
    /// the grace period ends. The `on_rotation_needed` hook runs afterwards with no lock held; if it
    /// fails, the mark stands and a `RotationHookFailed` event reports it.
    ///
    /// # Errors
    /// Unknown `old`, `old` already marked, or `replacement`'s id already in use (including `old`'s
    /// own); the store's error when saving the replacement. Nothing changes on error.
    pub async fn mark_for_rotation(
        &self,
        old: &str,
        replacement: Credential,
    ) -> Result<Event, RotationOpError> {
        let structure = self.inner.structure.lock().await;
        let old_slot = self.slot(old).ok_or_else(|| UnknownCredential::new(old))?;
        if self.slot(replacement.id.as_str()).is_some() {
            return Err(RotationOpError::DuplicateId { id: replacement.id });
        }
        let version = self.inner.refreshing.create(&replacement).await?;
        let now = self.now();
        // The state machine has the last word (already marked, id in use); on a refusal the
        // replacement leaves the store again, so nothing changes.
        let event = match self.inner.rotation.mark(
            &old_slot.id,
            replacement.id.clone(),
            replacement.created_at,
            now,
        ) {
            Ok(event) => event,
            Err(refused) => {
                let _ = self.inner.refreshing.delete(&replacement.id).await;
                return Err(refused.into());
            }
        };
        self.insert_slot(replacement, version);
        old_slot.mark();
        self.inner.selection.rebuild(self.inner.time.now_ms());
        drop(structure);
        self.inner.telemetry.emit(event.clone());
        if let Err(hook) = self.inner.rotation.rotation_needed(&old_slot.id).await {
            self.emit(oauth_core::EventKind::RotationHookFailed {
                credential: old_slot.id.clone(),
                hook: "on_rotation_needed".to_owned(),
                reason: hook.message().to_owned(),
            });
        }
        Ok(event)
    }

    /// Removes a credential whose rotation grace period has ended (Go `CompleteRotation`). The
    /// `on_decommission` hook runs with no lock held (it may call the manager) and may veto.
    ///
    /// # Errors
    /// Unknown, not marked, grace not elapsed (saying when), the hook's veto (the credential
    /// stays), or the store's error when deleting it (it is then already out of the pool).
    pub async fn complete_rotation(&self, id: &str) -> Result<Event, RotationOpError> {
        let id = CredentialId::new(id).map_err(|_| UnknownCredential::new(id))?;
        let now = self.now();
        let result = self
            .inner
            .rotation
            .complete_rotation(&id, now, |id| self.remove_slot(id))
            .await;
        match result {
            Ok(event) => {
                self.inner.telemetry.emit(event.clone());
                self.inner.refreshing.delete(&id).await?;
                Ok(event)
            }
            Err(e) => {
                if let Some(event) = e.decommission_failed_event(now) {
                    self.inner.telemetry.emit(event);
                }
                Err(e.into())
            }
        }
    }

    /// Completes every rotation whose grace period has ended, when the policy's auto-decommission
    /// is on (Go `AutoDecommissionExpired`); reports every failure, not only the last.
    pub async fn auto_decommission_expired(&self) -> AutoDecommissionReport {
        let now = self.now();
        let report = self
            .inner
            .rotation
            .auto_decommission_expired(now, |id| self.remove_slot(id))
            .await;
        for event in &report.events {
            self.inner.telemetry.emit(event.clone());
        }
        for id in &report.decommissioned {
            if let Err(e) = self.inner.refreshing.delete(id).await {
                self.inner.telemetry.emit(Event::new(
                    now,
                    oauth_core::EventKind::PersistenceFailed {
                        credential: id.clone(),
                        reason: format!("deleting the decommissioned credential: {e}"),
                        attempts: 1,
                    },
                ));
            }
        }
        report
    }

    /// The rotation state of a credential (Go `GetRotationState`).
    pub fn rotation_state(&self, id: &str) -> Option<RotationState> {
        let id = CredentialId::new(id).ok()?;
        self.inner.rotation.state(&id)
    }
}
