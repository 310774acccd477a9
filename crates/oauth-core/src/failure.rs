//! What an attempt's failure means for the credential that made it.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::RetryAfterError;

/// The meaning of a failed attempt (a request, or a token refresh).
///
/// This drives everything the pool does after a failure: cool down, refresh and retry, disable for
/// re-authorization, back off and fail over, or return at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The provider rate-limited this credential (HTTP 429, or 503 with Retry-After). Cool it down
    /// for `retry_after` when known, else for the health policy's default cooldown.
    RateLimited {
        /// How long the provider asked us to wait, if it said.
        #[serde(default, with = "opt_secs")]
        retry_after: Option<Duration>,
    },
    /// The provider itself is overloaded (Anthropic's 529 `overloaded_error`, Gemini's
    /// `MODEL_CAPACITY_EXHAUSTED`): fail over, but it is not the account's fault, so its health is
    /// not touched (no backoff, no cooldown, no failure counted against it).
    Overloaded {
        /// How long the provider suggested waiting, if it said.
        #[serde(default, with = "opt_secs")]
        retry_after: Option<Duration>,
    },
    /// The access token was rejected (HTTP 401): refresh once and retry on the same credential.
    Unauthorized,
    /// The grant is dead (`invalid_grant`, revoked or reused refresh token, account disabled): the
    /// credential needs a human to re-authorize it. No timer ends this.
    PermanentAuth,
    /// The OAuth client itself is misconfigured (`invalid_client`, `unauthorized_client`): as
    /// permanent as [`PermanentAuth`](Self::PermanentAuth), but a configuration error.
    Misconfigured,
    /// Anything that may work on retry: network errors, timeouts, 5xx. Back off and fail over.
    /// An error that says nothing about itself means this.
    Transient,
    /// The request itself is bad (HTTP 400 validation errors, content policy): no credential is to
    /// blame. Return at once, penalize nothing.
    RequestScoped,
}

impl FailureKind {
    /// A rate limit with an optional retry-after.
    pub const fn rate_limited(retry_after: Option<Duration>) -> Self {
        Self::RateLimited { retry_after }
    }

    /// Is trying again (possibly on another credential) worthwhile?
    pub const fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Overloaded { .. }
                | Self::Unauthorized
                | Self::Transient
        )
    }

    /// Does this failure need a human (re-authorization or configuration)?
    pub const fn is_permanent(&self) -> bool {
        matches!(self, Self::PermanentAuth | Self::Misconfigured)
    }

    /// A short stable name (`rate_limited`, `unauthorized`, ...), used as a metric label value and in
    /// events.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded { .. } => "overloaded",
            Self::Unauthorized => "unauthorized",
            Self::PermanentAuth => "permanent_auth",
            Self::Misconfigured => "misconfigured",
            Self::Transient => "transient",
            Self::RequestScoped => "request_scoped",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RateLimited {
                retry_after: Some(d),
            } => write!(f, "rate_limited (retry after {}s)", d.as_secs()),
            other => f.write_str(other.as_str()),
        }
    }
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let v = Option::<f64>::deserialize(d)?;
        v.map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Implemented by a caller's error type to say what a failure means.
///
/// The default method answers [`FailureKind::Transient`], the meaning of an error that says
/// nothing (as in the Go original, where every error caused a failover).
///
/// ```
/// use oauth_core::{ClassifyFailure, FailureKind};
///
/// #[derive(Debug)]
/// enum ApiError { Status(u16), Network }
///
/// impl ClassifyFailure for ApiError {
///     fn failure_kind(&self) -> FailureKind {
///         match self {
///             ApiError::Status(429) => FailureKind::rate_limited(None),
///             ApiError::Status(401) => FailureKind::Unauthorized,
///             ApiError::Status(400) => FailureKind::RequestScoped,
///             _ => FailureKind::Transient,
///         }
///     }
/// }
/// assert_eq!(ApiError::Network.failure_kind(), FailureKind::Transient);
/// ```
pub trait ClassifyFailure {
    /// What this failure means; transient unless the type knows better.
    fn failure_kind(&self) -> FailureKind {
        FailureKind::Transient
    }
}

impl<T: ClassifyFailure + ?Sized> ClassifyFailure for Box<T> {
    fn failure_kind(&self) -> FailureKind {
        (**self).failure_kind()
    }
}

impl<T: ClassifyFailure + ?Sized> ClassifyFailure for &T {
    fn failure_kind(&self) -> FailureKind {
        (**self).failure_kind()
    }
}

/// I/O errors (connection resets, timeouts) say nothing about the credential: transient.
impl ClassifyFailure for std::io::Error {}

/// Cannot happen; the impl lets infallible operations use the pool.
impl ClassifyFailure for std::convert::Infallible {}

/// An error with its classification attached, for callers whose own error type does not implement
/// [`ClassifyFailure`].
#[derive(Debug)]
pub struct Classified<E> {
    kind: FailureKind,
    error: E,
}

impl<E> Classified<E> {
    /// Attaches `kind` to `error`.
    pub const fn new(kind: FailureKind, error: E) -> Self {
        Self { kind, error }
    }

    /// The wrapped error.
    pub fn into_inner(self) -> E {
        self.error
    }

    /// The wrapped error, by reference.
    pub const fn get_ref(&self) -> &E {
        &self.error
    }
}

impl<E> ClassifyFailure for Classified<E> {
    fn failure_kind(&self) -> FailureKind {
        self.kind
    }
}

impl<E: fmt::Display> fmt::Display for Classified<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.error, self.kind)
    }
}

impl<E: Error + 'static> Error for Classified<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.error)
    }
}

/// Parses an HTTP `Retry-After` value (RFC 9110 section 10.2.3): delta-seconds, or an HTTP-date
/// (IMF-fixdate, or the obsolete RFC 850 and asctime forms). A date in the past gives zero.
///
/// # Errors
/// [`RetryAfterError`] for empty, negative, out-of-range or malformed values.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Result<Duration, RetryAfterError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(RetryAfterError::Empty);
    }
    if v.starts_with('-') && v[1..].chars().all(|c| c.is_ascii_digit()) && v.len() > 1 {
        return Err(RetryAfterError::Negative);
    }
    if v.chars().all(|c| c.is_ascii_digit()) {
        return v
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| RetryAfterError::OutOfRange);
    }
    const FORMATS: [&str; 3] = [
        "%a, %d %b %Y %H:%M:%S GMT", // IMF-fixdate
        "%A, %d-%b-%y %H:%M:%S GMT", // RFC 850
        "%a %b %e %H:%M:%S %Y",      // asctime
    ];
    let at = FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
        .ok_or(RetryAfterError::Malformed { len: v.len() })?
        .and_utc();
    Ok((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(1994, 11, 6, 8, 49, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn retry_after_delta_seconds() {
        assert_eq!(
            parse_retry_after("120", now()),
            Ok(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Ok(Duration::ZERO));
    }

    #[test]
    fn retry_after_http_dates_all_three_forms() {
        let want = Ok(Duration::from_secs(37));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now()),
            want
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now()),
            want
        );
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now()), want);
    }

    #[test]
    fn retry_after_past_date_is_zero() {
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now()),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_rejects_garbage_and_negative() {
        assert_eq!(parse_retry_after("", now()), Err(RetryAfterError::Empty));
        assert_eq!(
            parse_retry_after("-5", now()),
            Err(RetryAfterError::Negative)
        );
        assert_eq!(
            parse_retry_after("soon", now()),
            Err(RetryAfterError::Malformed { len: 4 })
        );
        assert_eq!(
            parse_retry_after("1.5", now()),
            Err(RetryAfterError::Malformed { len: 3 })
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now()),
            Err(RetryAfterError::OutOfRange)
        );
        assert!(parse_retry_after("Sun, 32 Nov 1994 08:49:37 GMT", now()).is_err());
    }

    #[test]
    fn default_classification_is_transient() {
        #[derive(Debug)]
        struct Opaque;
        impl ClassifyFailure for Opaque {}
        assert_eq!(Opaque.failure_kind(), FailureKind::Transient);
        let c = Classified::new(FailureKind::RequestScoped, "bad request");
        assert_eq!(c.failure_kind(), FailureKind::RequestScoped);
        assert!(!FailureKind::RequestScoped.is_retryable());
        assert!(FailureKind::PermanentAuth.is_permanent());
    }

    #[test]
    fn failure_kind_serde_round_trip() {
        let k = FailureKind::rate_limited(Some(Duration::from_secs(30)));
        let json = serde_json::to_string(&k).unwrap_or_default();
        assert_eq!(json, r#"{"kind":"rate_limited","retry_after":30.0}"#);
        assert_eq!(serde_json::from_str::<FailureKind>(&json).ok(), Some(k));
    }
}
