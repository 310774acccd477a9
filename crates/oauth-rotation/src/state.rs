//! The rotation state of one credential.

use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, RotationFacts};
use serde::{Deserialize, Serialize};

/// Where one credential is in its rotation lifecycle (the Go `credentialRotationState`).
///
/// Two states: *active* (`marked_for_rotation == false`, the three rotation fields `None`) and
/// *marked* (all three set). It serializes, so a store can keep it across restarts and
/// [`RotationTracker::restore`](crate::RotationTracker::restore) can bring it back; `created_at`
/// normally comes from the persisted [`Credential::created_at`](oauth_core::Credential), so rotation
/// age survives a restart even when this state is not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationState {
    /// When the credential was first added to the pool; rotation age is measured from it.
    pub created_at: DateTime<Utc>,
    /// Whether a replacement was added and this credential is being phased out.
    #[serde(default)]
    pub marked_for_rotation: bool,
    /// When the rotation started.
    #[serde(default)]
    pub rotation_started_at: Option<DateTime<Utc>>,
    /// The credential replacing this one.
    #[serde(default)]
    pub replacement_id: Option<CredentialId>,
    /// End of the grace period: from then on the credential may be decommissioned.
    #[serde(default)]
    pub decommission_at: Option<DateTime<Utc>>,
}

impl RotationState {
    /// An active (unmarked) credential created at `created_at`.
    pub const fn new(created_at: DateTime<Utc>) -> Self {
        Self {
            created_at,
            marked_for_rotation: false,
            rotation_started_at: None,
            replacement_id: None,
            decommission_at: None,
        }
    }

    /// Age at `now` (zero when `created_at` lies in the future).
    pub fn age(&self, now: DateTime<Utc>) -> Duration {
        now.signed_duration_since(self.created_at)
            .to_std()
            .unwrap_or(Duration::ZERO)
    }

    /// The facts [`CredentialHealthInfo`](oauth_core::CredentialHealthInfo) reports.
    pub const fn facts(&self) -> RotationFacts {
        RotationFacts {
            marked_for_rotation: self.marked_for_rotation,
            decommission_at: self.decommission_at,
        }
    }

    /// True when the fields describe one of the two valid states.
    pub const fn is_consistent(&self) -> bool {
        let set = [
            self.rotation_started_at.is_some(),
            self.replacement_id.is_some(),
            self.decommission_at.is_some(),
        ];
        if self.marked_for_rotation {
            set[0] && set[1] && set[2]
        } else {
            !set[0] && !set[1] && !set[2]
        }
    }
}
