//! Errors of the operations in this crate, one enum per operation.

use thiserror::Error;

/// Building or validating a [`Credential`](crate::Credential) failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The id is empty, longer than the limit, or holds control characters.
    #[error(
        "invalid credential id ({len} bytes): ids must be 1..={max} bytes without control characters"
    )]
    InvalidId {
        /// Length of the rejected id in bytes.
        len: usize,
        /// The maximum length accepted.
        max: usize,
    },
    /// The access token is empty.
    #[error("credential {id}: the access token is empty")]
    EmptyAccessToken {
        /// The credential concerned.
        id: String,
    },
}

/// A health or backoff policy holds values that make no sense.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A duration that must be positive is zero.
    #[error("{field} must be greater than zero")]
    ZeroDuration {
        /// The offending field.
        field: &'static str,
    },
    /// A bound is below the value it bounds.
    #[error("{field} ({value:?}) must not be below {lower_field} ({lower:?})")]
    BoundBelowBase {
        /// The upper bound's field.
        field: &'static str,
        /// Its value.
        value: std::time::Duration,
        /// The field it must not be below.
        lower_field: &'static str,
        /// That field's value.
        lower: std::time::Duration,
    },
    /// A threshold count is zero.
    #[error("{field} must be at least 1")]
    ZeroThreshold {
        /// The offending field.
        field: &'static str,
    },
    /// A fraction is outside `0.0..=1.0` or not a number.
    #[error("{field} must be within 0.0..=1.0 (got {value})")]
    FractionOutOfRange {
        /// The offending field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
}

/// A `Retry-After` header value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RetryAfterError {
    /// The value is empty.
    #[error("Retry-After is empty")]
    Empty,
    /// The value is a negative number of seconds.
    #[error("Retry-After is negative")]
    Negative,
    /// The number of seconds does not fit the supported range.
    #[error("Retry-After is out of range")]
    OutOfRange,
    /// Neither delta-seconds nor an HTTP-date (the value is not echoed: it is remote input).
    #[error("Retry-After is neither delta-seconds nor an HTTP-date ({len} bytes)")]
    Malformed {
        /// Length of the rejected value.
        len: usize,
    },
}
