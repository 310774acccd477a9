//! What every provider's answer means by its status alone, and the JSON error body helpers the
//! provider modules share.

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use oauth_core::FailureKind;
use serde_json::Value;

use crate::classification::{Cause, Classification, Hint, OVERLOADED, Unreadable};
use crate::hints;

/// The meaning of `status` when nothing else is known (RFC 9110 and the providers' shared
/// conventions):
/// - 401: the access token was rejected: refresh and retry once;
/// - 402: billing; 403: forbidden or disabled account: permanent (a human must act);
/// - 400, 404, 405, 413, 415, 422 and other 4xx: the request itself is bad;
/// - 408, 409: try again (409 is Anthropic's retryable conflict);
/// - 429: rate-limited, for `Retry-After` when given;
/// - 529: the provider is overloaded (Anthropic's status for it);
/// - 5xx: transient;
/// - anything else that is not a success: transient.
pub(crate) fn by_status(status: StatusCode) -> Classification {
    let code = status.as_u16();
    let (kind, cause) = match code {
        401 => (FailureKind::Unauthorized, Cause::Unauthorized),
        402 => (FailureKind::PermanentAuth, Cause::Billing),
        403 => (FailureKind::PermanentAuth, Cause::Forbidden),
        408 | 409 => (FailureKind::Transient, Cause::Unknown),
        413 => (FailureKind::RequestScoped, Cause::ContextTooLong),
        429 => (FailureKind::rate_limited(None), Cause::RateLimit),
        529 => (OVERLOADED, Cause::Overloaded),
        400..=499 => (FailureKind::RequestScoped, Cause::InvalidRequest),
        500..=599 => (FailureKind::Transient, Cause::ServerError),
        _ => (FailureKind::Transient, Cause::Unknown),
    };
    Classification::new(kind, cause, code)
}

/// The JSON body of a failure, if it is JSON; an unreadable non-empty body is recorded.
pub(crate) fn json_body(body: &[u8], unreadable: &mut Vec<Unreadable>) -> Option<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Some(v),
        Err(_) => {
            unreadable.push(Unreadable::Body { len: body.len() });
            None
        }
    }
}

/// A string member.
pub(crate) fn str_at<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Applies `Retry-After` to a rate limit, and makes the kind carry the wait.
pub(crate) fn apply_retry_after(c: &mut Classification, headers: &HeaderMap, now: DateTime<Utc>) {
    if let Some(d) = hints::retry_after(headers, now, &mut c.unreadable) {
        hints::set_wait(c, d, Hint::RetryAfter, now);
    }
}

/// Makes a rate-limited kind carry the classification's wait (an overload keeps its zero
/// cooldown whatever wait it names). A transient 503 with a readable `Retry-After` is a rate
/// limit for that long (RFC 9110 section 15.6.4: the server says when to come back; oauth-core's
/// `FailureKind::RateLimited` covers "503 with Retry-After").
pub(crate) fn finish(
    mut c: Classification,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Classification {
    if c.status == 503 && c.kind == FailureKind::Transient {
        let mut unreadable = Vec::new();
        if let Some(d) = hints::retry_after(headers, now, &mut unreadable) {
            c.kind = FailureKind::rate_limited(None);
            hints::set_wait(&mut c, d, Hint::RetryAfter, now);
        }
        c.unreadable.extend(unreadable);
    }
    if let FailureKind::RateLimited { .. } = c.kind
        && c.cause != Cause::Overloaded
    {
        c.kind = FailureKind::rate_limited(c.retry_after(now));
    }
    c
}

/// Sets a rate limit (or quota) as the meaning.
pub(crate) fn rate_limited(c: &mut Classification, cause: Cause) {
    c.kind = FailureKind::rate_limited(None);
    c.cause = cause;
}

/// Sets `kind` and `cause`.
pub(crate) fn set(c: &mut Classification, kind: FailureKind, cause: Cause) {
    c.kind = kind;
    c.cause = cause;
}

/// True when `haystack` contains `needle`, ignoring ASCII case.
pub(crate) fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}
