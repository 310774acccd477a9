//! Google Gemini: the Generative Language API (`generativelanguage.googleapis.com`) and the Code
//! Assist API that Gemini CLI's Google-account sign-in uses (`cloudcode-pa.googleapis.com`).
//!
//! Sources:
//! - Errors are `google.rpc.Status` in JSON: `{"error": {"code", "message", "status",
//!   "details": [...]}}` (<https://cloud.google.com/apis/design/errors>); the details carry
//!   `type.googleapis.com/google.rpc.RetryInfo` (`retryDelay`, a protobuf Duration such as
//!   "30s"), `google.rpc.QuotaFailure` (`violations[].quotaId` / `quotaMetric`) and
//!   `google.rpc.ErrorInfo` (`reason`, `domain`, `metadata`)
//!   (<https://github.com/googleapis/googleapis/blob/master/google/rpc/error_details.proto>).
//! - Troubleshooting: <https://ai.google.dev/gemini-api/docs/troubleshooting>: 400
//!   `INVALID_ARGUMENT`, 400 `FAILED_PRECONDITION` (free tier not available in the region, billing
//!   needed), 403 `PERMISSION_DENIED`, 404 `NOT_FOUND`, 429 `RESOURCE_EXHAUSTED`, 500 `INTERNAL`,
//!   503 `UNAVAILABLE` ("The model is overloaded"), 504 `DEADLINE_EXCEEDED`.
//! - Rate limits: <https://ai.google.dev/gemini-api/docs/rate-limits>: limits per minute and per
//!   day; "Requests per day (RPD) quotas reset at midnight Pacific time". A per-day violation
//!   names a quota id such as `GenerateRequestsPerDayPerProjectPerModel-FreeTier`; a per-minute
//!   one `GenerateRequestsPerMinutePerProjectPerModel-FreeTier` with a `retryDelay`.
//! - Code Assist: Gemini CLI (`packages/core/src/utils/googleQuotaErrors.ts`) treats an
//!   `ErrorInfo` reason `QUOTA_EXHAUSTED` as a terminal quota (with `metadata.quotaResetDelay`
//!   or `quotaResetTimeStamp` when given), `RATE_LIMIT_EXCEEDED` as retryable after the
//!   `RetryInfo` delay, and `MODEL_CAPACITY_EXHAUSTED` as the service lacking capacity. Its
//!   streaming endpoint may answer an error as a one-element JSON array.

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use oauth_core::FailureKind;
use serde_json::Value;

use crate::classification::{Cause, Classification, Hint, OVERLOADED, QuotaPeriod, Unreadable};
use crate::common::{self, contains_ci, str_at};
use crate::hints;

const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";
const QUOTA_FAILURE: &str = "type.googleapis.com/google.rpc.QuotaFailure";
const ERROR_INFO: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// Classifies a Gemini or Code Assist failure.
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
        .map(|v| match v {
            Value::Array(items) => items.first().unwrap_or(&Value::Null),
            other => other,
        })
        .and_then(|v| v.get("error"))
        .unwrap_or(&Value::Null);
    apply_status(&mut c, err);
    if matches!(c.kind, FailureKind::RateLimited { .. }) && c.cause != Cause::Overloaded {
        quota(&mut c, err, now);
        if c.hint == Hint::None {
            common::apply_retry_after(&mut c, headers, now);
        }
    }
    common::finish(c, headers, now)
}

fn details(err: &Value) -> impl Iterator<Item = &Value> {
    err.get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn detail<'v>(err: &'v Value, ty: &str) -> Option<&'v Value> {
    details(err).find(|d| str_at(d, "/@type") == Some(ty))
}

/// Refines `c` by the `google.rpc.Status` `status` and `ErrorInfo.reason`.
pub(crate) fn apply_status(c: &mut Classification, err: &Value) {
    let message = str_at(err, "/message").unwrap_or_default();
    let reason = detail(err, ERROR_INFO)
        .and_then(|d| str_at(d, "/reason"))
        .unwrap_or_default();
    match (str_at(err, "/status").unwrap_or_default(), reason) {
        (_, "MODEL_CAPACITY_EXHAUSTED") => common::set(c, OVERLOADED, Cause::Overloaded),
        (_, "SERVICE_DISABLED" | "API_KEY_SERVICE_BLOCKED" | "CONSUMER_INVALID") => {
            common::set(c, FailureKind::Misconfigured, Cause::NotEnabled);
        }
        ("RESOURCE_EXHAUSTED", _) => common::rate_limited(c, Cause::RateLimit),
        ("UNAVAILABLE", _) if contains_ci(message, "overloaded") => {
            common::set(c, OVERLOADED, Cause::Overloaded);
        }
        ("UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED", _) => {
            common::set(c, FailureKind::Transient, Cause::ServerError);
        }
        ("UNAUTHENTICATED", _) => common::set(c, FailureKind::Unauthorized, Cause::Unauthorized),
        ("PERMISSION_DENIED", _) => common::set(c, FailureKind::PermanentAuth, Cause::Forbidden),
        ("FAILED_PRECONDITION", _) => common::set(c, FailureKind::PermanentAuth, Cause::Billing),
        ("INVALID_ARGUMENT" | "NOT_FOUND" | "OUT_OF_RANGE", _) => {
            let cause = if contains_ci(message, "token count")
                || contains_ci(message, "maximum number of tokens")
                || contains_ci(message, "context")
            {
                Cause::ContextTooLong
            } else {
                Cause::InvalidRequest
            };
            common::set(c, FailureKind::RequestScoped, cause);
        }
        _ => {}
    }
}

/// The wait of a `RESOURCE_EXHAUSTED`: a per-day quota until the next midnight Pacific time
/// (or the reset the Code Assist API names), a per-minute one for its `retryDelay`.
fn quota(c: &mut Classification, err: &Value, now: DateTime<Utc>) {
    let retry_delay = detail(err, RETRY_INFO).and_then(|d| d.get("retryDelay"));
    let delay = match retry_delay {
        Some(v) => {
            let d = v.as_str().and_then(hints::parse_proto_duration);
            if d.is_none() {
                c.unreadable
                    .push(Unreadable::BodyField { name: "retryDelay" });
            }
            d
        }
        None => None,
    };
    let per_day = detail(err, QUOTA_FAILURE)
        .and_then(|d| d.get("violations"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|v| {
            str_at(v, "/quotaId").is_some_and(|id| id.contains("PerDay"))
                || str_at(v, "/quotaMetric").is_some_and(|m| m.contains("per_day"))
        });
    let info = detail(err, ERROR_INFO);
    let quota_exhausted = info.and_then(|d| str_at(d, "/reason")) == Some("QUOTA_EXHAUSTED");

    if quota_exhausted {
        let meta = info.and_then(|d| d.get("metadata")).unwrap_or(&Value::Null);
        if let Some(at) = str_at(meta, "/quotaResetTimeStamp") {
            match hints::parse_rfc3339(at) {
                Some(at) => {
                    c.cause = Cause::QuotaExhausted(QuotaPeriod::Plan);
                    return hints::set_until(c, at, Hint::Body("quotaResetTimeStamp"), now);
                }
                None => c.unreadable.push(Unreadable::BodyField {
                    name: "quotaResetTimeStamp",
                }),
            }
        }
        if let Some(d) = str_at(meta, "/quotaResetDelay") {
            match hints::parse_proto_duration(d) {
                Some(d) => {
                    c.cause = Cause::QuotaExhausted(QuotaPeriod::Plan);
                    return hints::set_wait(c, d, Hint::Body("quotaResetDelay"), now);
                }
                None => c.unreadable.push(Unreadable::BodyField {
                    name: "quotaResetDelay",
                }),
            }
        }
    }
    if per_day || quota_exhausted {
        c.cause = Cause::QuotaExhausted(QuotaPeriod::Day);
        let midnight = hints::next_pacific_midnight(now);
        let until = delay.map_or(midnight, |d| midnight.max(oauth_core::after(now, d)));
        return hints::set_until(
            c,
            until,
            Hint::Documented("daily quotas reset at midnight Pacific time"),
            now,
        );
    }
    if let Some(d) = delay {
        hints::set_wait(c, d, Hint::Body("retryDelay"), now);
    }
}
