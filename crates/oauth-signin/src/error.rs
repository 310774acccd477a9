//! What can go wrong in a sign-in. No message carries a code, verifier, token, client secret or
//! remote text: only classifications, statuses and the server's registered OAuth error code.

use std::fmt;
use std::time::Duration;

/// Which endpoint a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// The token endpoint (code exchange, device polling).
    Token,
    /// The device authorization endpoint (RFC 8628 section 3.1).
    DeviceAuthorization,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Token => "the token endpoint",
            Self::DeviceAuthorization => "the device authorization endpoint",
        })
    }
}

/// Why a request did not get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// No connection could be made.
    Connect,
    /// The request or the body read timed out.
    Timeout,
    /// The body was larger than the cap.
    BodyTooLarge,
    /// Anything else (the connection dropped, a protocol error).
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect failed",
            Self::Timeout => "timed out",
            Self::BodyTooLarge => "response too large",
            Self::Other => "connection failed",
        })
    }
}

/// An OAuth error code (RFC 6749 sections 4.1.2.1 and 5.2, RFC 8628 section 3.5). Codes outside
/// the registered set are [`Other`](Self::Other): their text is not kept, since it is remote input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`.
    InvalidRequest,
    /// `invalid_client`.
    InvalidClient,
    /// `invalid_grant`: the code is wrong, expired, reused, or the PKCE verifier does not match.
    InvalidGrant,
    /// `unauthorized_client`.
    UnauthorizedClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `unsupported_response_type`.
    UnsupportedResponseType,
    /// `invalid_scope`.
    InvalidScope,
    /// `access_denied`.
    AccessDenied,
    /// `server_error`.
    ServerError,
    /// `temporarily_unavailable`.
    TemporarilyUnavailable,
    /// `authorization_pending` (device flow: keep polling).
    AuthorizationPending,
    /// `slow_down` (device flow: poll 5 s less often).
    SlowDown,
    /// `expired_token` (device flow: the device code expired).
    ExpiredToken,
    /// Any other code.
    Other,
}

impl OAuthErrorCode {
    /// Reads an `error` value.
    pub fn parse(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "unsupported_response_type" => Self::UnsupportedResponseType,
            "invalid_scope" => Self::InvalidScope,
            "access_denied" => Self::AccessDenied,
            "server_error" => Self::ServerError,
            "temporarily_unavailable" => Self::TemporarilyUnavailable,
            "authorization_pending" => Self::AuthorizationPending,
            "slow_down" => Self::SlowDown,
            "expired_token" => Self::ExpiredToken,
            _ => Self::Other,
        }
    }

    /// The registered text of the code (`"other"` for unregistered ones).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sign-in failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigninError {
    /// The flow's configuration cannot work (a URL that does not parse, an empty client id...).
    #[error("invalid sign-in configuration: {what}")]
    Config {
        /// What is wrong.
        what: &'static str,
    },
    /// The loopback listener could not be bound.
    #[error("could not listen on 127.0.0.1:{port} for the redirect ({kind})")]
    Bind {
        /// The port asked for (0: any).
        port: u16,
        /// The operating system's reason.
        kind: std::io::ErrorKind,
    },
    /// No redirect arrived in time; the listener is closed.
    #[error("no sign-in redirect arrived within {timeout:?}")]
    TimedOut {
        /// The time waited.
        timeout: Duration,
    },
    /// The redirect's `state` was missing or was not this sign-in's (RFC 6749 section 10.12).
    #[error("the redirect's state did not match this sign-in")]
    StateMismatch,
    /// The redirect carried neither a code nor an error.
    #[error("the redirect carried no authorization code")]
    MissingCode,
    /// The authorization server redirected back with an error (the user declined, ...).
    #[error("the authorization server refused the sign-in ({code})")]
    Denied {
        /// The `error` parameter of the redirect.
        code: OAuthErrorCode,
    },
    /// The token endpoint refused the exchange. A wrong PKCE verifier, a reused or an expired
    /// code all read [`OAuthErrorCode::InvalidGrant`] (RFC 7636 section 4.6).
    #[error("the token endpoint refused the request: HTTP {status}, {code}")]
    TokenEndpoint {
        /// HTTP status.
        status: u16,
        /// The `error` member.
        code: OAuthErrorCode,
    },
    /// Device flow: the user denied the request (`access_denied`).
    #[error("the user denied the device authorization")]
    AccessDenied,
    /// Device flow: the device code expired before the user approved it (`expired_token`, or the
    /// advertised `expires_in` passed).
    #[error("the device code expired before the user approved it")]
    ExpiredToken,
    /// An HTTP error status without an OAuth error body.
    #[error("HTTP {status} from {endpoint}")]
    Http {
        /// Which endpoint.
        endpoint: Endpoint,
        /// HTTP status.
        status: u16,
    },
    /// The request got no answer.
    #[error("request to {endpoint} failed: {kind}")]
    Transport {
        /// Which endpoint.
        endpoint: Endpoint,
        /// Why.
        kind: TransportKind,
    },
    /// A success answer that cannot be used.
    #[error("unusable answer from {endpoint}: {what}")]
    Malformed {
        /// Which endpoint.
        endpoint: Endpoint,
        /// What was wrong.
        what: &'static str,
    },
    /// The credential could not be built (an invalid credential id).
    #[error("the credential could not be built: {0}")]
    Credential(#[from] oauth_core::CredentialError),
    /// The system random source failed.
    #[error("the system random source failed")]
    Random,
    /// The loopback listener stopped before a redirect arrived.
    #[error("the redirect listener stopped unexpectedly")]
    ListenerStopped,
}

impl SigninError {
    /// The OAuth error code the server sent, if this is a refusal.
    pub const fn oauth_code(&self) -> Option<OAuthErrorCode> {
        match self {
            Self::Denied { code } | Self::TokenEndpoint { code, .. } => Some(*code),
            Self::AccessDenied => Some(OAuthErrorCode::AccessDenied),
            Self::ExpiredToken => Some(OAuthErrorCode::ExpiredToken),
            _ => None,
        }
    }

    /// True for `invalid_grant` from the token endpoint (wrong verifier, reused or expired code).
    pub const fn is_invalid_grant(&self) -> bool {
        matches!(
            self,
            Self::TokenEndpoint {
                code: OAuthErrorCode::InvalidGrant,
                ..
            }
        )
    }

    /// True when starting the sign-in again may succeed without changing anything: the network,
    /// a timeout, a 5xx or 429, or the user taking too long. Refusals are not retryable.
    pub const fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::TimedOut { .. } | Self::ExpiredToken => true,
            Self::Http { status, .. } | Self::TokenEndpoint { status, .. } => {
                *status >= 500 || *status == 429
            }
            _ => false,
        }
    }
}
