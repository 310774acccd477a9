//! The adapters' own errors: when the pool could not give the caller a provider's answer.

use chrono::{DateTime, Utc};
use oauth_core::FailureKind;
use thiserror::Error;

/// Why an adapter returned no provider answer. Holds ids and classifications, never a token or
/// a response body.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OAuthHttpError {
    /// No credential could take the request (all cooling down, backing off, disabled or needing
    /// re-authorization).
    #[error("{provider}: no OAuth credential is available{}", .next_available_at.map(|t| format!("; the first is available again at {}", t.to_rfc3339())).unwrap_or_default())]
    NoCredential {
        /// The pool's provider.
        provider: String,
        /// When the first credential is available again, if one will be by itself.
        next_available_at: Option<DateTime<Utc>>,
    },
    /// The pool's deadline for the call passed.
    #[error("{provider}: the call's deadline passed")]
    DeadlineExceeded {
        /// The pool's provider.
        provider: String,
    },
    /// Refreshing the credential's token failed, and no answer was obtained.
    #[error("credential {credential}: token refresh failed ({kind}): {reason}")]
    Refresh {
        /// The credential.
        credential: String,
        /// The refresh failure's classification.
        kind: FailureKind,
        /// The refresh error's message (never a token).
        reason: String,
    },
    /// A credential's data cannot be put on a request.
    #[error("credential {credential}: {what}")]
    InvalidCredential {
        /// The credential.
        credential: String,
        /// What is wrong.
        what: &'static str,
    },
    /// The request could not be built for the inner service.
    #[error("the request cannot be sent: {0}")]
    InvalidRequest(&'static str),
    /// The pool ended the call without an answer for another reason.
    #[error("the pool ended the call without an answer: {0}")]
    Pool(String),
}
