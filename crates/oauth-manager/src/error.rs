//! Errors of the manager's operations, one enum per operation.

use std::fmt;

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, FailureKind, PolicyError};
use thiserror::Error;

/// [`OAuthKeyManagerBuilder::build`](crate::OAuthKeyManagerBuilder::build) refused the configuration.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No credentials were given (and none came from the store or provider).
    #[error("provider {provider}: the credential pool is empty")]
    EmptyPool {
        /// The provider.
        provider: String,
    },
    /// Two credentials share an id.
    #[error("provider {provider}: duplicate credential id {id}")]
    DuplicateId {
        /// The provider.
        provider: String,
        /// The repeated id.
        id: CredentialId,
    },
    /// The provider name is empty.
    #[error("the provider name is empty")]
    EmptyProvider,
    /// A setting makes no sense.
    #[error("invalid setting")]
    InvalidSetting(#[from] SettingsError),
    /// Loading credentials from the store failed.
    #[error("loading credentials from the store failed")]
    Store(#[from] oauth_store::StoreError),
    /// Loading credentials from the credential provider failed.
    #[error("loading credentials from the credential provider failed")]
    Provider(#[from] ProviderError),
}

/// A setter or builder rejected a setting.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The health policy is invalid.
    #[error("invalid health policy")]
    HealthPolicy(#[from] PolicyError),
    /// The refresh strategy is invalid.
    #[error("invalid refresh strategy")]
    RefreshStrategy(#[from] oauth_refresh::StrategyError),
    /// The rotation policy is invalid.
    #[error("invalid rotation policy")]
    RotationPolicy(#[source] PolicyError),
    /// The monitoring configuration is invalid.
    #[error("invalid monitoring configuration")]
    Monitoring(#[from] oauth_webhooks::ConfigError),
    /// The failover settings are invalid.
    #[error("failover: {0}")]
    Failover(&'static str),
    /// The maintenance configuration is invalid.
    #[error("maintenance: {0}")]
    Maintenance(&'static str),
    /// A credential weight is out of range, or names no credential.
    #[error(
        "weight {weight} for credential {id}: weights are 1..={max} and name a credential in the pool"
    )]
    Weight {
        /// The credential.
        id: String,
        /// The rejected weight.
        weight: u32,
        /// The largest weight accepted.
        max: u32,
    },
}

/// A [`CredentialProvider`](crate::CredentialProvider) failed. Its message must not hold secrets.
#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct ProviderError {
    message: String,
}

impl ProviderError {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// No credential can take traffic now.
#[derive(Debug, Clone, Error)]
#[error("{}", describe_unavailable(provider, *total, *next_available_at))]
pub struct NoCredentialAvailable {
    /// The provider.
    pub provider: String,
    /// Credentials in the pool.
    pub total: usize,
    /// When the first one will be available again; `None` if none will by itself (they need
    /// re-authorization or are disabled).
    pub next_available_at: Option<DateTime<Utc>>,
}

fn describe_unavailable(provider: &str, total: usize, next: Option<DateTime<Utc>>) -> String {
    match next {
        Some(t) => format!(
            "all {total} OAuth credentials for {provider} are unavailable; the first is available again at {}",
            t.to_rfc3339()
        ),
        None => format!(
            "all {total} OAuth credentials for {provider} are unavailable and none will recover by itself (re-authorization needed or disabled)"
        ),
    }
}

/// One failed attempt of an [`execute_with_failover`](crate::OAuthKeyManager::execute_with_failover)
/// call.
#[derive(Debug)]
#[non_exhaustive]
pub enum AttemptError<E> {
    /// The operation failed.
    Operation(E),
    /// Refreshing the credential before use failed.
    Refresh(oauth_refresh::RefreshError),
}

impl<E: fmt::Display> fmt::Display for AttemptError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Operation(e) => e.fmt(f),
            Self::Refresh(e) => write!(f, "token refresh failed: {e}"),
        }
    }
}

/// The operation's error is this error's `Display`; a refresh error is its source.
impl<E: std::error::Error + 'static> std::error::Error for AttemptError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Operation(e) => e.source(),
            Self::Refresh(e) => Some(e),
        }
    }
}

/// [`execute_with_failover`](crate::OAuthKeyManager::execute_with_failover) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The operation failed in a way that is the request's own fault; no credential was penalized
    /// and no other was tried.
    #[error("request rejected by {provider} via credential {credential}")]
    RequestScoped {
        /// The provider.
        provider: String,
        /// The credential that carried the request.
        credential: CredentialId,
        /// The operation's error (this error's source).
        #[source]
        error: E,
    },
    /// Every attempt failed; the last error is kept.
    #[error(
        "{provider}: all {attempts} OAuth credential failover attempts failed, the last on credential {credential} ({kind})"
    )]
    AttemptsExhausted {
        /// The provider.
        provider: String,
        /// Attempts made.
        attempts: u32,
        /// The credential of the last attempt.
        credential: CredentialId,
        /// The last failure's classification.
        kind: FailureKind,
        /// The last failure (this error's source).
        #[source]
        last: AttemptError<E>,
    },
    /// No credential was available (before or between attempts), with the last attempt's error if
    /// there was one (its source, when there was).
    #[error("{unavailable}{}", last_suffix(.last.as_ref()))]
    Unavailable {
        /// When the first credential is available again.
        unavailable: NoCredentialAvailable,
        /// The last attempt's failure, if any attempt was made.
        last: Option<(CredentialId, AttemptError<E>)>,
    },
    /// The call's deadline passed.
    #[error("{provider}: the call's deadline passed")]
    DeadlineExceeded {
        /// The provider.
        provider: String,
    },
}

fn last_suffix<E>(last: Option<&(CredentialId, AttemptError<E>)>) -> String {
    last.map(|(id, _)| format!("; the last attempt failed on credential {id}"))
        .unwrap_or_default()
}

impl<E> ExecuteError<E> {
    /// The last attempt's error, if the call made one.
    pub fn last_attempt(&self) -> Option<&AttemptError<E>> {
        match self {
            Self::AttemptsExhausted { last, .. } => Some(last),
            Self::Unavailable {
                last: Some((_, e)), ..
            } => Some(e),
            _ => None,
        }
    }

    /// The operation's own error, when the call ended with one.
    pub fn operation_error(&self) -> Option<&E> {
        match self {
            Self::RequestScoped { error, .. } => Some(error),
            Self::AttemptsExhausted {
                last: AttemptError::Operation(e),
                ..
            } => Some(e),
            Self::Unavailable {
                last: Some((_, AttemptError::Operation(e))),
                ..
            } => Some(e),
            _ => None,
        }
    }

    /// True when retrying later may succeed (not a request-scoped rejection).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::RequestScoped { .. })
    }

    /// When the first credential is available again, if the error says.
    pub fn next_available_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::Unavailable { unavailable, .. } => unavailable.next_available_at,
            _ => None,
        }
    }
}

/// No credential in the pool has this id: the error of the operations on one credential that
/// can fail in no other way ([`disable`](crate::OAuthKeyManager::disable),
/// [`enable`](crate::OAuthKeyManager::enable),
/// [`clear_cooldown`](crate::OAuthKeyManager::clear_cooldown),
/// [`record_tokens`](crate::OAuthKeyManager::record_tokens)).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("credential {id} not found")]
#[non_exhaustive]
pub struct UnknownCredential {
    /// The id asked for.
    pub id: String,
}

impl UnknownCredential {
    pub(crate) fn new(id: &str) -> Self {
        Self { id: id.to_owned() }
    }
}

/// [`set_weight`](crate::OAuthKeyManager::set_weight) failed; the weight is unchanged.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SetWeightError {
    /// No credential has that id.
    #[error(transparent)]
    UnknownCredential(#[from] UnknownCredential),
    /// The weight is out of range.
    #[error(transparent)]
    Weight(#[from] SettingsError),
}

/// [`add_credential`](crate::OAuthKeyManager::add_credential) failed; the pool and the store are
/// unchanged.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AddCredentialError {
    /// A credential with that id already exists.
    #[error("credential {id} already exists")]
    DuplicateId {
        /// The id.
        id: CredentialId,
    },
    /// The rotation tracker refused it.
    #[error(transparent)]
    Rotation(#[from] oauth_rotation::RotationError),
    /// The store failed.
    #[error("the credential store failed")]
    Store(#[from] oauth_store::StoreError),
}

/// A rotation step ([`mark_for_rotation`](crate::OAuthKeyManager::mark_for_rotation),
/// [`complete_rotation`](crate::OAuthKeyManager::complete_rotation)) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RotationOpError {
    /// No credential has that id.
    #[error(transparent)]
    UnknownCredential(#[from] UnknownCredential),
    /// The replacement's id is already in the pool.
    #[error("credential {id} already exists")]
    DuplicateId {
        /// The id.
        id: CredentialId,
    },
    /// The rotation state machine (or a hook) refused.
    #[error(transparent)]
    Rotation(#[from] oauth_rotation::RotationError),
    /// The store failed.
    #[error("the credential store failed")]
    Store(#[from] oauth_store::StoreError),
}

/// [`remove_credential`](crate::OAuthKeyManager::remove_credential) failed; the credential stays.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RemoveError {
    /// No credential has that id.
    #[error("credential {id} not found")]
    UnknownCredential {
        /// The id.
        id: String,
    },
    /// Removing it would leave the pool empty.
    #[error("credential {id} is the last one in the pool")]
    LastCredential {
        /// The id.
        id: CredentialId,
    },
    /// The store could not delete it.
    #[error("the credential store could not delete it")]
    Store(#[from] oauth_store::StoreError),
}

/// [`reauthorize`](crate::OAuthKeyManager::reauthorize) failed; the new tokens are not installed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReauthorizeError {
    /// No credential has that id.
    #[error("credential {id} not found")]
    UnknownCredential {
        /// The id.
        id: String,
    },
    /// Persisting the tokens (store or credential provider) failed.
    #[error("persisting credential {id} failed: {reason}")]
    Persist {
        /// The credential.
        id: CredentialId,
        /// Why (no secrets).
        reason: String,
    },
    /// The credential's flight did not complete (timeout, runtime shutting down).
    #[error("installing the tokens of credential {id} did not complete")]
    Interrupted {
        /// The credential.
        id: CredentialId,
        /// Why.
        #[source]
        source: oauth_refresh::RefreshError,
    },
}

/// [`refresh_now`](crate::OAuthKeyManager::refresh_now) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RefreshNowError {
    /// No credential has that id.
    #[error("credential {id} not found")]
    UnknownCredential {
        /// The id.
        id: String,
    },
    /// The refresh failed.
    #[error("the refresh failed")]
    Refresh(#[from] oauth_refresh::RefreshError),
}
