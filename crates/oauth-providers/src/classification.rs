//! The result of classifying one HTTP answer.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::FailureKind;

/// What the provider's answer means: the [`FailureKind`] the pool acts on, and why.
///
/// `kind` is what `execute_with_failover` needs; the rest explains it (for logs, events and
/// tests) and never holds response text, so a classification can be logged as is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Classification {
    /// What the pool should do with the credential that made the request.
    pub kind: FailureKind,
    /// Why, in provider-neutral terms.
    pub cause: Cause,
    /// The HTTP status of the answer (for a failure read from a stream event: the status the
    /// event implies, such as 529 for Anthropic's `overloaded_error`).
    pub status: u16,
    /// When the credential may be used again on the wall clock, when the answer said
    /// (`now` + the wait). `None` when it named no time.
    pub retry_at: Option<DateTime<Utc>>,
    /// Where the wait came from.
    pub hint: Hint,
    /// Hints that were present but could not be read (a malformed `Retry-After`, an unreadable
    /// reset header): the classification fell back to the next source, or to none.
    pub unreadable: Vec<Unreadable>,
}

impl Classification {
    pub(crate) fn new(kind: FailureKind, cause: Cause, status: u16) -> Self {
        Self {
            kind,
            cause,
            status,
            retry_at: None,
            hint: Hint::None,
            unreadable: Vec::new(),
        }
    }

    /// The wait the answer asked for, if any (the `retry_after` of a rate limit, or the wait an
    /// overloaded provider suggested).
    pub fn retry_after(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.retry_at
            .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO))
    }

    /// True when the pool may retry on another credential.
    pub const fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: {} ({})", self.status, self.cause, self.kind)?;
        if self.hint != Hint::None {
            write!(f, ", wait from {}", self.hint)?;
        }
        Ok(())
    }
}

/// Why an answer failed, in provider-neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// A short-window rate limit (requests or tokens per minute).
    RateLimit,
    /// A quota over a longer period (per day, a plan's usage window, a monthly spend limit) is
    /// used up; it resets at a known or unknown time.
    QuotaExhausted(QuotaPeriod),
    /// The provider is overloaded for everyone (Anthropic 529 `overloaded_error`, Gemini
    /// `MODEL_CAPACITY_EXHAUSTED` or 503 `UNAVAILABLE`): not the account's fault.
    Overloaded,
    /// The access token was rejected (401).
    Unauthorized,
    /// The account may not do this: disabled, forbidden, region not supported (403).
    Forbidden,
    /// The account has a billing problem (no credit, arrears, plan does not include the API).
    Billing,
    /// The API or service is not enabled for the account's project: a configuration fix.
    NotEnabled,
    /// The request is invalid (400, 404, 413, 422).
    InvalidRequest,
    /// The request is too long for the model's context window.
    ContextTooLong,
    /// The input or output was refused by a content filter.
    ContentPolicy,
    /// A server error (500, 502, 503, 504).
    ServerError,
    /// An answer whose status says nothing more (an unexpected 3xx or 4xx, or a 200 stream that
    /// carried an error of unknown type).
    Unknown,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RateLimit => f.write_str("rate limit"),
            Self::QuotaExhausted(p) => write!(f, "{p} quota exhausted"),
            Self::Overloaded => f.write_str("provider overloaded"),
            Self::Unauthorized => f.write_str("access token rejected"),
            Self::Forbidden => f.write_str("account forbidden"),
            Self::Billing => f.write_str("billing"),
            Self::NotEnabled => f.write_str("API not enabled"),
            Self::InvalidRequest => f.write_str("invalid request"),
            Self::ContextTooLong => f.write_str("context too long"),
            Self::ContentPolicy => f.write_str("content policy"),
            Self::ServerError => f.write_str("server error"),
            Self::Unknown => f.write_str("unclassified answer"),
        }
    }
}

/// The period of an exhausted quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuotaPeriod {
    /// A daily quota (Gemini's requests per day: resets at midnight Pacific time).
    Day,
    /// A subscription's usage window (Codex and Claude plans: five hours, a week).
    Plan,
    /// A monthly spend limit (Anthropic: resets on the first of the month, 00:00 UTC).
    Month,
    /// The answer did not say.
    Unknown,
}

impl fmt::Display for QuotaPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Day => "daily",
            Self::Plan => "plan usage",
            Self::Month => "monthly",
            Self::Unknown => "long-period",
        })
    }
}

/// Where a wait came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Hint {
    /// No wait was given.
    None,
    /// `Retry-After` (delta-seconds or HTTP-date) or `retry-after-ms`.
    RetryAfter,
    /// A provider's reset header, by name.
    ResetHeader(&'static str),
    /// A field of the error body (`retryDelay`, `resets_in_seconds`, `resets_at`, ...), by name.
    Body(&'static str),
    /// A rule of the provider's documentation (Gemini's daily quotas reset at midnight Pacific
    /// time; Anthropic's spend limits on the first of the month).
    Documented(&'static str),
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("nothing"),
            Self::RetryAfter => f.write_str("Retry-After"),
            Self::ResetHeader(h) => write!(f, "header {h}"),
            Self::Body(field) => write!(f, "body field {field}"),
            Self::Documented(rule) => write!(f, "documented rule ({rule})"),
        }
    }
}

/// A hint that was present but unreadable. Holds the hint's name and the value's length, never
/// the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unreadable {
    /// A header whose value is not a valid wait or time.
    Header {
        /// The header.
        name: &'static str,
        /// The length of its value.
        len: usize,
    },
    /// A body field that is not a valid wait or time.
    BodyField {
        /// The field.
        name: &'static str,
    },
    /// A failure body that is not the provider's JSON error shape.
    Body {
        /// The body's length.
        len: usize,
    },
}

/// The [`FailureKind`] this crate gives a provider overload (Anthropic 529, Gemini
/// `MODEL_CAPACITY_EXHAUSTED`): [`FailureKind::Overloaded`], the provider's trouble, not the
/// account's: fail over to another credential without penalizing this one (no backoff, no
/// cooldown, no consecutive-failure count), counted as `overloaded` in metrics.
pub const OVERLOADED: FailureKind = FailureKind::Overloaded { retry_after: None };
