//! Anthropic (the Messages API, API keys and Claude-plan OAuth accounts).
//!
//! Sources:
//! - Errors: <https://docs.anthropic.com/en/api/errors>: body
//!   `{"type": "error", "error": {"type", "message"}, "request_id"}`; 400
//!   `invalid_request_error`, 401 `authentication_error`, 402 `billing_error`, 403
//!   `permission_error`, 404 `not_found_error`, 413 `request_too_large`, 429
//!   `rate_limit_error`, 500 `api_error`, 529 `overloaded_error` ("the API is temporarily
//!   overloaded", across all users: not a limit of the account). Streams report errors as an
//!   `error` event after a 200.
//! - Rate limits: <https://docs.anthropic.com/en/api/rate-limits>: a 429 carries `retry-after`
//!   (seconds); every answer carries `anthropic-ratelimit-{requests,tokens,input-tokens,
//!   output-tokens}-{limit,remaining,reset}`, the resets in RFC 3339.
//! - Spend limits: a 429 `rate_limit_error` whose `error.details.error_code` is
//!   `enforced_spend_limit_reached` means the monthly spend limit is reached; usage resumes on the
//!   first day of the next month at 00:00 UTC, so retrying earlier is pointless.
//! - Claude-plan (OAuth) traffic also carries `anthropic-ratelimit-unified-reset` (Unix seconds)
//!   for the plan's usage window (observed on Claude Code's traffic; not in the public API docs).

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use oauth_core::FailureKind;
use serde_json::Value;

use crate::classification::{Cause, Classification, Hint, OVERLOADED, QuotaPeriod};
use crate::common::{self, contains_ci, str_at};
use crate::hints;

/// The reset headers, each with the `remaining` header of the same limit.
const LIMITS: [(&str, &str); 4] = [
    (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ),
];

/// Classifies an Anthropic failure.
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Classification {
    let mut c = common::by_status(status);
    let json = common::json_body(body, &mut c.unreadable);
    let err = json
        .as_ref()
        .and_then(|v| v.get("error"))
        .unwrap_or(&Value::Null);
    apply_error_type(&mut c, err);
    if c.kind == (FailureKind::RateLimited { retry_after: None }) {
        if str_at(err, "/details/error_code") == Some("enforced_spend_limit_reached") {
            c.cause = Cause::QuotaExhausted(QuotaPeriod::Month);
            hints::set_until(
                &mut c,
                hints::next_month_start_utc(now),
                Hint::Documented("spend limits resume on the 1st, 00:00 UTC"),
                now,
            );
        } else {
            common::apply_retry_after(&mut c, headers, now);
            if c.hint == Hint::None {
                reset_headers(&mut c, headers, now);
            }
        }
    }
    common::finish(c, headers, now)
}

/// Refines `c` by the body's `error.type` (also used for a stream's `error` event).
pub(crate) fn apply_error_type(c: &mut Classification, err: &Value) {
    let message = str_at(err, "/message").unwrap_or_default();
    match str_at(err, "/type").unwrap_or_default() {
        "overloaded_error" => {
            common::set(c, OVERLOADED, Cause::Overloaded);
            c.status = 529;
        }
        "rate_limit_error" => common::rate_limited(c, Cause::RateLimit),
        "authentication_error" => common::set(c, FailureKind::Unauthorized, Cause::Unauthorized),
        "billing_error" => common::set(c, FailureKind::PermanentAuth, Cause::Billing),
        "permission_error" => common::set(c, FailureKind::PermanentAuth, Cause::Forbidden),
        "request_too_large" => common::set(c, FailureKind::RequestScoped, Cause::ContextTooLong),
        "invalid_request_error" | "not_found_error" => {
            let cause = if contains_ci(message, "prompt is too long")
                || contains_ci(message, "context window")
                || contains_ci(message, "context length")
            {
                Cause::ContextTooLong
            } else {
                Cause::InvalidRequest
            };
            common::set(c, FailureKind::RequestScoped, cause);
        }
        "api_error" | "timeout_error" => common::set(c, FailureKind::Transient, Cause::ServerError),
        _ => {}
    }
}

/// The reset of the exhausted limit (`remaining` 0), else the latest reset given; then the plan
/// window's Unix-seconds reset.
fn reset_headers(c: &mut Classification, headers: &HeaderMap, now: DateTime<Utc>) {
    let mut resets = Vec::new();
    for (remaining, reset) in LIMITS {
        let exhausted = headers
            .get(remaining)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0");
        if let Some(at) =
            hints::header_with(headers, reset, &mut c.unreadable, hints::parse_rfc3339)
        {
            resets.push((exhausted, at, reset));
        }
    }
    let chosen = if resets.iter().any(|r| r.0) {
        resets.iter().filter(|r| r.0).max_by_key(|r| r.1)
    } else {
        resets.iter().max_by_key(|r| r.1)
    };
    if let Some(&(_, at, name)) = chosen {
        return hints::set_until(c, at, Hint::ResetHeader(name), now);
    }
    const UNIFIED: &str = "anthropic-ratelimit-unified-reset";
    if let Some(at) =
        hints::header_with(headers, UNIFIED, &mut c.unreadable, hints::parse_epoch_secs)
    {
        c.cause = Cause::QuotaExhausted(QuotaPeriod::Plan);
        hints::set_until(c, at, Hint::ResetHeader(UNIFIED), now);
    }
}
