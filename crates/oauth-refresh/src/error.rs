//! Errors of a refresh, and of validating a strategy.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use oauth_core::{ClassifyFailure, Credential, CredentialId, FailureKind};
use thiserror::Error;

/// An RFC 6749 section 5.2 `error` code (plus the extensions providers use), reduced to a closed
/// set so that no text chosen by the remote server ever reaches an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`: the request is malformed (a configuration error on our side).
    InvalidRequest,
    /// `invalid_client`: client authentication failed.
    InvalidClient,
    /// `invalid_grant`: the refresh token is invalid, expired, revoked or was issued to another
    /// client.
    InvalidGrant,
    /// `unauthorized_client`: the client may not use this grant type.
    UnauthorizedClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `invalid_scope`.
    InvalidScope,
    /// `access_denied` (the account was disabled or consent withdrawn).
    AccessDenied,
    /// `refresh_token_reused` (OpenAI): an already exchanged refresh token was presented.
    RefreshTokenReused,
    /// `refresh_token_expired` (OpenAI).
    RefreshTokenExpired,
    /// `refresh_token_invalidated` (OpenAI): revoked.
    RefreshTokenInvalidated,
    /// `temporarily_unavailable`.
    TemporarilyUnavailable,
    /// `server_error`.
    ServerError,
    /// `slow_down` (RFC 8628): poll less often.
    SlowDown,
    /// Any other code; the text is deliberately not kept.
    Unrecognized,
}

impl OAuthErrorCode {
    /// Maps a wire code (case-insensitive) to the closed set.
    pub fn from_wire(code: &str) -> Self {
        match code.trim().to_ascii_lowercase().as_str() {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "access_denied" => Self::AccessDenied,
            "refresh_token_reused" => Self::RefreshTokenReused,
            "refresh_token_expired" => Self::RefreshTokenExpired,
            "refresh_token_invalidated" | "token_revoked" | "revoked_token" => {
                Self::RefreshTokenInvalidated
            }
            "temporarily_unavailable" => Self::TemporarilyUnavailable,
            "server_error" => Self::ServerError,
            "slow_down" => Self::SlowDown,
            _ => Self::Unrecognized,
        }
    }

    /// The wire spelling (`"unrecognized"` for codes outside the set).
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::RefreshTokenExpired => "refresh_token_expired",
            Self::RefreshTokenInvalidated => "refresh_token_invalidated",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::ServerError => "server_error",
            Self::SlowDown => "slow_down",
            Self::Unrecognized => "unrecognized",
        }
    }

    /// What an error response with this code means for the credential.
    ///
    /// Grant errors (`invalid_grant`, reused/expired/revoked refresh tokens, `access_denied`) are
    /// permanent: the account must be re-authorized. Client errors (`invalid_client`,
    /// `unauthorized_client`, `unsupported_grant_type`, `invalid_request`, `invalid_scope`) are
    /// configuration errors. The rest may pass on retry.
    pub const fn failure_kind(&self, retry_after: Option<Duration>) -> FailureKind {
        match self {
            Self::InvalidGrant
            | Self::AccessDenied
            | Self::RefreshTokenReused
            | Self::RefreshTokenExpired
            | Self::RefreshTokenInvalidated => FailureKind::PermanentAuth,
            Self::InvalidClient
            | Self::UnauthorizedClient
            | Self::UnsupportedGrantType
            | Self::InvalidRequest
            | Self::InvalidScope => FailureKind::Misconfigured,
            Self::SlowDown => FailureKind::RateLimited { retry_after },
            Self::TemporarilyUnavailable | Self::ServerError | Self::Unrecognized => {
                FailureKind::Transient
            }
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a token response could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MalformedReason {
    /// The body is empty.
    Empty,
    /// The body is an HTML page (a proxy, captive portal or WAF answered).
    Html,
    /// The body is not JSON.
    NotJson,
    /// The body is JSON but not an object.
    NotAnObject,
    /// The object has no usable `access_token`.
    MissingAccessToken,
    /// A field without which the response is useless (`access_token`) has the wrong type (the
    /// field name is ours, not remote). Other odd fields are tolerated as
    /// [`TokenQuirk`](oauth_core::TokenQuirk)s.
    InvalidField(&'static str),
}

impl fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty body"),
            Self::Html => f.write_str("an HTML page instead of JSON"),
            Self::NotJson => f.write_str("not JSON"),
            Self::NotAnObject => f.write_str("JSON that is not an object"),
            Self::MissingAccessToken => f.write_str("no access_token"),
            Self::InvalidField(name) => write!(f, "invalid field `{name}`"),
        }
    }
}

/// A refresh failed. Cloneable, because one refresh's result is shared by every caller waiting for
/// it.
///
/// Neither `Display` nor `Debug` ever contains a token, a client secret, or text from the remote
/// response body: remote error codes are reduced to [`OAuthErrorCode`], and
/// `error_description` is dropped. Ask [`kind`](Self::kind) what the failure means.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// No refresher is configured (the Go `NoOpRefreshFunc`).
    #[error("token refresh not configured for credential {id}")]
    NotConfigured {
        /// The credential concerned.
        id: CredentialId,
    },
    /// The credential has no refresh token, so it cannot be refreshed; it must be re-authorized.
    #[error("credential {id} has no refresh token")]
    NoRefreshToken {
        /// The credential concerned.
        id: CredentialId,
    },
    /// The OAuth client is missing something its client authentication needs (a client id, or
    /// the secret HTTP Basic authentication requires).
    #[error("credential {id}: client authentication needs {missing}")]
    ClientConfig {
        /// The credential concerned.
        id: CredentialId,
        /// What is missing (our wording).
        missing: &'static str,
    },
    /// The token endpoint answered with an RFC 6749 section 5.2 error response.
    #[error("token endpoint rejected the refresh: {code} (HTTP {status})")]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The error code, reduced to a closed set.
        code: OAuthErrorCode,
        /// `Retry-After`, when the server sent one.
        retry_after: Option<Duration>,
    },
    /// HTTP 429, or 503 with `Retry-After`: the endpoint is rate limiting us.
    #[error("token endpoint rate limited the refresh (HTTP {status}{})", fmt_retry_after(*retry_after))]
    RateLimited {
        /// HTTP status.
        status: u16,
        /// How long the server asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Another 5xx.
    #[error("token endpoint failed (HTTP {status})")]
    Server {
        /// HTTP status.
        status: u16,
    },
    /// A status the grant does not expect (3xx, or a 4xx without a usable OAuth error body).
    #[error("token endpoint answered HTTP {status} without a usable OAuth error")]
    UnexpectedStatus {
        /// HTTP status.
        status: u16,
    },
    /// The connection could not be established.
    #[error("could not connect to the token endpoint")]
    Connect,
    /// The connect or request timeout elapsed.
    #[error("token endpoint request timed out")]
    Timeout,
    /// The connection failed while sending the request or reading the response.
    #[error("network error talking to the token endpoint")]
    Network,
    /// The response body exceeded the configured cap (reading stopped there).
    #[error("token response larger than {limit} bytes")]
    ResponseTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The response was unusable.
    #[error("malformed token response: {reason}")]
    Malformed {
        /// Why.
        reason: MalformedReason,
    },
    /// The refresh succeeded but the caller's commit (persist/publish) failed.
    ///
    /// The refreshed credential is carried here (its `Debug` is redacted) because its refresh token
    /// is now the only valid one: adopt it with [`refreshed_credential`](RefreshError::refreshed_credential)
    /// and retry persisting it. The coordinator also keeps it, so the next refresh of this
    /// credential retries the commit instead of presenting the consumed refresh token again.
    #[error("credential {} was refreshed but committing it failed", refreshed.id)]
    CommitFailed {
        /// The refreshed credential, not yet committed.
        refreshed: Box<Credential>,
        /// The commit's error.
        source: Box<RefreshError>,
    },
    /// The refresh task ended without a result (it panicked, or its runtime shut down).
    #[error("the refresh of credential {id} ended without a result")]
    Interrupted {
        /// The credential concerned.
        id: CredentialId,
    },
    /// The refresh flight did not finish within the coordinator's timeout (a refresher or store
    /// that never answers cannot block a credential's callers forever). If the server answered
    /// after that, its rotation is lost: the crash-window case of the persistence guide.
    #[error("the refresh of credential {id} did not finish within {after:?}")]
    FlightTimeout {
        /// The credential concerned.
        id: CredentialId,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The credential was removed while its refresh was in flight; the flight's result was
    /// dropped, so a removed credential stays removed.
    #[error("credential {id} was removed")]
    Removed {
        /// The credential concerned.
        id: CredentialId,
    },
    /// A refresh backoff is in force: no attempt is made before `until` (at most one attempt per
    /// backoff step, whatever the call rate).
    #[error("credential {id}: refresh backing off until {until}")]
    BackingOff {
        /// The credential concerned.
        id: CredentialId,
        /// When the next attempt may be made.
        until: chrono::DateTime<chrono::Utc>,
    },
    /// The refresh was left to another process: it holds the credential's cross-process
    /// refresh lock (or the store that arbitrates the lock cannot be reached), and the caller's
    /// access token still works, so it did not wait. The holder's result reaches this process
    /// through the store (its change feed, or the next re-read). Not a failure of the
    /// credential: nothing is recorded against it.
    #[error("the refresh of credential {id} is left to the holder of its refresh lock")]
    Deferred {
        /// The credential concerned.
        id: CredentialId,
    },
    /// A failure reported by a custom refresher or commit (the message is the implementer's and
    /// must not contain secrets).
    #[error("{message}")]
    Other {
        /// What the failure means.
        kind: FailureKind,
        /// A description without secrets.
        message: String,
    },
    /// A custom refresher's (or commit's) own error, kept as this error's
    /// [`source`](std::error::Error::source) with what it means. Built with
    /// [`RefreshError::custom`]; the source's own `Display` must not contain secrets.
    #[error("the refresher failed ({kind})")]
    Custom {
        /// What the failure means.
        kind: FailureKind,
        /// The implementer's error (shared, because a refresh's result is cloned to every caller
        /// waiting for it).
        #[source]
        source: Arc<dyn StdError + Send + Sync + 'static>,
    },
}

fn fmt_retry_after(d: Option<Duration>) -> String {
    d.map_or_else(String::new, |d| format!(", retry after {}s", d.as_secs()))
}

impl RefreshError {
    /// A failure of a custom refresher or commit; `message` must not contain secrets.
    pub fn other(kind: FailureKind, message: impl Into<String>) -> Self {
        Self::Other {
            kind,
            message: message.into(),
        }
    }

    /// A custom refresher's own error, with what it means for the credential; it becomes this
    /// error's [`source`](std::error::Error::source).
    ///
    /// ```
    /// use std::error::Error as _;
    /// use oauth_core::FailureKind;
    /// use oauth_refresh::RefreshError;
    ///
    /// let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "peer went away");
    /// let err = RefreshError::custom(FailureKind::Transient, io);
    /// assert_eq!(err.kind(), FailureKind::Transient);
    /// assert_eq!(err.source().map(|s| s.to_string()).as_deref(), Some("peer went away"));
    /// assert!(!err.to_string().contains("peer went away")); // printed once, by the source
    /// ```
    pub fn custom(
        kind: FailureKind,
        error: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        Self::Custom {
            kind,
            source: Arc::from(error.into()),
        }
    }

    /// What the failure means for the credential.
    ///
    /// | error | kind |
    /// |---|---|
    /// | `invalid_grant`, revoked/reused/expired refresh token, `access_denied`, no refresh token | `PermanentAuth` |
    /// | `invalid_client`, `unauthorized_client`, other client/request errors, not configured | `Misconfigured` |
    /// | 429, 503 with `Retry-After`, `slow_down` | `RateLimited` |
    /// | other 5xx, timeouts, connection errors, malformed/oversized bodies, odd statuses | `Transient` |
    /// | commit failed | `Transient` (the refresh itself succeeded) |
    /// | deferred to another process's refresh, backing off | `Transient` |
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::NotConfigured { .. } | Self::ClientConfig { .. } => FailureKind::Misconfigured,
            Self::NoRefreshToken { .. } => FailureKind::PermanentAuth,
            Self::OAuth {
                code, retry_after, ..
            } => code.failure_kind(*retry_after),
            Self::RateLimited { retry_after, .. } => FailureKind::RateLimited {
                retry_after: *retry_after,
            },
            Self::Server { .. }
            | Self::UnexpectedStatus { .. }
            | Self::Connect
            | Self::Timeout
            | Self::Network
            | Self::ResponseTooLarge { .. }
            | Self::Malformed { .. }
            | Self::CommitFailed { .. }
            | Self::Interrupted { .. }
            | Self::FlightTimeout { .. }
            | Self::Removed { .. }
            | Self::BackingOff { .. }
            | Self::Deferred { .. } => FailureKind::Transient,
            Self::Other { kind, .. } | Self::Custom { kind, .. } => *kind,
        }
    }

    /// Is trying the refresh again later worthwhile? (False for permanent and configuration
    /// failures, and for [`CommitFailed`](Self::CommitFailed), where the refresh must not be
    /// repeated: the commit must.)
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::CommitFailed { .. }) && self.kind().is_retryable()
    }

    /// A configuration mistake (`invalid_client`, `unauthorized_client`,
    /// `unsupported_grant_type`, `invalid_request`, `invalid_scope`, a client id or secret the
    /// client authentication needs and nobody configured, no refresher): fixing the configuration
    /// clears it, no sign-in is needed. Never true for a dead grant.
    pub fn is_misconfiguration(&self) -> bool {
        self.kind() == FailureKind::Misconfigured
    }

    /// The grant is dead (`invalid_grant`, a reused, expired or revoked refresh token,
    /// `access_denied`, no refresh token at all): the account must be signed in again. Never
    /// true for a configuration mistake.
    pub fn is_dead_grant(&self) -> bool {
        self.kind() == FailureKind::PermanentAuth
    }

    /// The refreshed credential a failed commit left behind, if that is what happened.
    pub fn refreshed_credential(&self) -> Option<&Credential> {
        match self {
            Self::CommitFailed { refreshed, .. } => Some(refreshed),
            _ => None,
        }
    }
}

impl ClassifyFailure for RefreshError {
    fn failure_kind(&self) -> FailureKind {
        self.kind()
    }
}

/// A [`RefreshStrategy`](crate::RefreshStrategy) holds values that make no sense.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// `max_buffer` is set (non-zero) and below `min_buffer`.
    #[error("max_buffer ({max:?}) must not be below min_buffer ({min:?})")]
    MaxBelowMin {
        /// `min_buffer`.
        min: Duration,
        /// `max_buffer`.
        max: Duration,
    },
    /// Preemptive refresh is on with a high-traffic threshold of zero (every credential would
    /// count as high traffic).
    #[error("high_traffic_threshold must be at least 1 when preemptive_refresh is on")]
    ZeroHighTrafficThreshold,
}
