//! The error of the rotation transitions.

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, Event, EventKind};
use thiserror::Error;

/// A rotation transition was refused. Every variant names the credential concerned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RotationError {
    /// The credential has no rotation state (never tracked, or already removed).
    #[error("credential {id} is not tracked for rotation")]
    UnknownCredential {
        /// The credential.
        id: CredentialId,
    },
    /// The credential is already marked for rotation.
    #[error("credential {id} is already marked for rotation")]
    AlreadyMarked {
        /// The credential.
        id: CredentialId,
    },
    /// A credential with this id is already tracked (also when a replacement has the old id).
    #[error("credential {id} is already tracked")]
    DuplicateId {
        /// The credential.
        id: CredentialId,
    },
    /// The credential is not marked for rotation, so it cannot be decommissioned.
    #[error("credential {id} is not marked for rotation")]
    NotMarked {
        /// The credential.
        id: CredentialId,
    },
    /// The grace period has not ended yet.
    #[error("grace period for credential {id} has not yet elapsed (decommission at {})", decommission_at.to_rfc3339())]
    GraceNotElapsed {
        /// The credential.
        id: CredentialId,
        /// When it may be decommissioned.
        decommission_at: DateTime<Utc>,
    },
    /// The decommission hook refused; the credential stays.
    #[error("decommission of credential {id} was refused by the hook: {message}")]
    HookRejected {
        /// The credential.
        id: CredentialId,
        /// The hook's message (hooks must not put secrets in it).
        message: String,
    },
    /// The credential's rotation state changed between the two phases of a completion (it was
    /// removed and re-marked, for example); the hook's approval was for another rotation.
    #[error("rotation state of credential {id} changed during its decommission")]
    StateChanged {
        /// The credential.
        id: CredentialId,
    },
    /// Another task is decommissioning the credential right now.
    #[error("credential {id} is already being decommissioned")]
    CompletionInProgress {
        /// The credential.
        id: CredentialId,
    },
    /// A restored rotation state is inconsistent (marked without a replacement or an end of
    /// grace, or unmarked with one).
    #[error("rotation state of credential {id} is inconsistent")]
    InconsistentState {
        /// The credential.
        id: CredentialId,
    },
}

impl RotationError {
    /// The credential concerned.
    pub fn credential(&self) -> &CredentialId {
        match self {
            Self::UnknownCredential { id }
            | Self::AlreadyMarked { id }
            | Self::DuplicateId { id }
            | Self::NotMarked { id }
            | Self::GraceNotElapsed { id, .. }
            | Self::HookRejected { id, .. }
            | Self::StateChanged { id }
            | Self::CompletionInProgress { id }
            | Self::InconsistentState { id } => id,
        }
    }

    /// True when the same call may succeed later without any change by the caller: the grace
    /// period ends, the hook stops refusing, a concurrent completion ends.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::GraceNotElapsed { .. }
                | Self::HookRejected { .. }
                | Self::StateChanged { .. }
                | Self::CompletionInProgress { .. }
        )
    }

    /// When a retry can succeed, for [`GraceNotElapsed`](Self::GraceNotElapsed).
    pub fn retry_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::GraceNotElapsed {
                decommission_at, ..
            } => Some(*decommission_at),
            _ => None,
        }
    }

    /// For [`HookRejected`](Self::HookRejected), the
    /// [`DecommissionFailed`](EventKind::DecommissionFailed) event to report at `at`.
    pub fn decommission_failed_event(&self, at: DateTime<Utc>) -> Option<Event> {
        match self {
            Self::HookRejected { id, message } => Some(Event::new(
                at,
                EventKind::DecommissionFailed {
                    credential: id.clone(),
                    reason: message.clone(),
                },
            )),
            _ => None,
        }
    }
}
