//! The rotation hooks trait (the Go `OnRotationNeeded` / `OnDecommission` callbacks).

use std::fmt::{self, Debug};

use async_trait::async_trait;
use oauth_core::CredentialId;

/// What an application does when a rotation starts or a credential is about to be removed.
///
/// Both methods default to doing nothing. They are called **with no lock held** (see the crate
/// docs), so a hook may call back into [`Rotation`](crate::Rotation) or the manager.
///
/// ```
/// use async_trait::async_trait;
/// use oauth_core::CredentialId;
/// use oauth_rotation::{HookError, RotationHooks};
///
/// /// Refuses to drop credentials that an external system still uses.
/// #[derive(Debug)]
/// struct Guard;
///
/// #[async_trait]
/// impl RotationHooks for Guard {
///     async fn on_decommission(&self, credential: &CredentialId) -> Result<(), HookError> {
///         if credential.as_str().starts_with("pinned-") {
///             return Err(HookError::new("still referenced by the billing job"));
///         }
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait RotationHooks: Send + Sync + Debug {
    /// A rotation of `credential` has started: its replacement is in the pool and preferred, and
    /// `credential` serves until its grace period ends. Typically: revoke or schedule revocation of
    /// the old grant. An error is reported to the caller; it does not undo the mark.
    async fn on_rotation_needed(&self, credential: &CredentialId) -> Result<(), HookError> {
        let _ = credential;
        Ok(())
    }

    /// `credential` is about to be removed after its grace period. An error vetoes the removal:
    /// the credential stays in the pool, still marked, and the next attempt asks again.
    async fn on_decommission(&self, credential: &CredentialId) -> Result<(), HookError> {
        let _ = credential;
        Ok(())
    }
}

/// Hooks that do nothing and always succeed.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopHooks;

#[async_trait]
impl RotationHooks for NoopHooks {}

/// A hook's refusal or failure, as a message.
///
/// The message is shown in errors and in [`EventKind::DecommissionFailed`]: it must never hold a
/// token, a secret or a raw remote response body.
///
/// [`EventKind::DecommissionFailed`]: oauth_core::EventKind::DecommissionFailed
#[derive(Clone, PartialEq, Eq)]
pub struct HookError {
    message: String,
}

impl HookError {
    /// A hook error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl Debug for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HookError").field(&self.message).finish()
    }
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HookError {}

impl From<String> for HookError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for HookError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// Shared hooks are hooks (so `Arc<MyHooks>` plugs in wherever hooks are taken).
#[async_trait]
impl<H: RotationHooks + ?Sized> RotationHooks for std::sync::Arc<H> {
    async fn on_rotation_needed(&self, credential: &CredentialId) -> Result<(), HookError> {
        (**self).on_rotation_needed(credential).await
    }

    async fn on_decommission(&self, credential: &CredentialId) -> Result<(), HookError> {
        (**self).on_decommission(credential).await
    }
}
