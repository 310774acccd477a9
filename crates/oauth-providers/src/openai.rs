//! OpenAI (the platform API) and Codex (ChatGPT-plan OAuth accounts on the Responses API).
//!
//! Sources:
//! - Error codes: <https://platform.openai.com/docs/guides/error-codes> (401 invalid
//!   authentication; 403 country, region or territory not supported; 429 "Rate limit reached"
//!   and 429 "You exceeded your current quota" (`insufficient_quota`); 500; 503 "The engine is
//!   currently overloaded" / "Slow Down").
//! - Error body: `{"error": {"message", "type", "param", "code"}}` (API reference, "Errors").
//! - Rate-limit headers: <https://platform.openai.com/docs/guides/rate-limits>, "Rate limits in
//!   headers": `x-ratelimit-remaining-requests`, `x-ratelimit-remaining-tokens`,
//!   `x-ratelimit-reset-requests` ("1s"), `x-ratelimit-reset-tokens` ("6m0s"): Go duration
//!   strings until the limit resets to its initial state.
//! - `retry-after-ms`: sent by OpenAI and honoured before `retry-after` by the official SDKs
//!   (openai-python `_base_client.py`, `_parse_retry_after_header`).
//! - Codex: the ChatGPT backend answers a used-up plan window with 429 and
//!   `{"error": {"type": "usage_limit_reached", "plan_type", "resets_in_seconds", "resets_at"}}`
//!   (`resets_at` in Unix seconds), and a plan without Codex with `usage_not_included`
//!   (openai/codex, `codex-rs/core/src/client.rs`, `ErrorResponse` / `UsageLimitReachedError`).

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use oauth_core::FailureKind;
use serde_json::Value;

use crate::classification::{Cause, Classification, Hint, OVERLOADED, QuotaPeriod};
use crate::common::{self, contains_ci, str_at};
use crate::hints;

/// Classifies an OpenAI (or Codex, with `codex`) failure.
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    codex: bool,
) -> Classification {
    let mut c = common::by_status(status);
    let json = common::json_body(body, &mut c.unreadable);
    let err = json
        .as_ref()
        .and_then(|v| v.get("error"))
        .unwrap_or(&Value::Null);
    let code = str_at(err, "/code").unwrap_or_default();
    let ty = str_at(err, "/type").unwrap_or_default();
    let message = str_at(err, "/message").unwrap_or_default();

    match (status.as_u16(), code, ty) {
        (_, "context_length_exceeded" | "string_above_max_length", _) => {
            common::set(&mut c, FailureKind::RequestScoped, Cause::ContextTooLong);
        }
        (_, "content_filter" | "content_policy_violation", _) => {
            common::set(&mut c, FailureKind::RequestScoped, Cause::ContentPolicy);
        }
        (_, _, "usage_limit_reached") if codex => {
            common::rate_limited(&mut c, Cause::QuotaExhausted(QuotaPeriod::Plan));
            codex_reset(&mut c, err, now);
        }
        (_, _, "usage_not_included") if codex => {
            common::set(&mut c, FailureKind::PermanentAuth, Cause::Billing);
        }
        (429, "insufficient_quota", _) | (429, _, "insufficient_quota") => {
            // "You exceeded your current quota, please check your plan and billing details":
            // no timer ends this; a human must add credit.
            common::set(&mut c, FailureKind::PermanentAuth, Cause::Billing);
        }
        (403, "unsupported_country_region_territory", _) => {
            common::set(&mut c, FailureKind::PermanentAuth, Cause::Forbidden);
        }
        (503, _, _) if contains_ci(message, "overloaded") => {
            common::set(&mut c, OVERLOADED, Cause::Overloaded);
        }
        _ => {}
    }

    if matches!(c.kind, FailureKind::RateLimited { .. }) && c.cause != Cause::Overloaded {
        common::apply_retry_after(&mut c, headers, now);
        if c.hint == Hint::None {
            reset_headers(&mut c, headers, now);
        }
    }
    common::finish(c, headers, now)
}

/// Codex's `resets_in_seconds` (preferred: immune to clock skew) or `resets_at`.
fn codex_reset(c: &mut Classification, err: &Value, now: DateTime<Utc>) {
    if let Some(v) = err.get("resets_in_seconds") {
        match hints::json_secs(v) {
            Some(d) => return hints::set_wait(c, d, Hint::Body("resets_in_seconds"), now),
            None => c.unreadable.push(crate::Unreadable::BodyField {
                name: "resets_in_seconds",
            }),
        }
    }
    if let Some(v) = err.get("resets_at") {
        match hints::json_instant(v) {
            Some(at) => hints::set_until(c, at, Hint::Body("resets_at"), now),
            None => c
                .unreadable
                .push(crate::Unreadable::BodyField { name: "resets_at" }),
        }
    }
}

/// The reset of the exhausted limit: the one whose `remaining` is 0, else the later of the two.
fn reset_headers(c: &mut Classification, headers: &HeaderMap, now: DateTime<Utc>) {
    const LIMITS: [(&str, &str); 2] = [
        (
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ),
        ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    ];
    let mut resets = Vec::new();
    for (remaining, reset) in LIMITS {
        let exhausted = headers
            .get(remaining)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0");
        if let Some(d) =
            hints::header_with(headers, reset, &mut c.unreadable, hints::parse_go_duration)
        {
            resets.push((exhausted, d, reset));
        }
    }
    let chosen = if resets.iter().any(|r| r.0) {
        resets.iter().filter(|r| r.0).max_by_key(|r| r.1)
    } else {
        resets.iter().max_by_key(|r| r.1)
    };
    if let Some(&(_, d, name)) = chosen {
        hints::set_wait(c, d, Hint::ResetHeader(name), now);
    }
}
