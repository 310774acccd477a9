//! Qwen: Alibaba Cloud Model Studio / DashScope, natively and in its OpenAI-compatible mode, and
//! the Qwen OAuth (qwen.ai account) endpoint Qwen Code uses, which is OpenAI-compatible at the
//! account's `resource_url`.
//!
//! Sources:
//! - Error messages: <https://www.alibabacloud.com/help/en/model-studio/error-code> and the
//!   DashScope status codes (<https://help.aliyun.com/zh/dashscope/return-status-code-description>):
//!   400 `InvalidParameter`, 400 `DataInspectionFailed` / `data_inspection_failed`
//!   (content inspection), 400 `Arrearage` ("make sure your account is in good standing"), 401
//!   `InvalidApiKey`, 403 `AccessDenied` (and `AccessDenied.Unpurchased`), 429 `Throttling`,
//!   `Throttling.RateQuota` (requests per minute), `Throttling.AllocationQuota` (tokens over a
//!   period), `Throttling.AllocationQuota.FreeTierOnly`, 500 `InternalError`, 503
//!   `ServiceUnavailable`; input over the context window is a 400 `InvalidParameter` with "Range of
//!   input length should be ...".
//! - Shapes: native `{"code", "message", "request_id"}`; OpenAI-compatible
//!   `{"error": {"code", "message", "type", "param"}}`.
//! - Qwen OAuth's free tier answers a used-up daily allowance with 429 `insufficient_quota`
//!   ("Free allocated quota exceeded"), which Qwen Code treats as a quota error, not a transient
//!   one (QwenLM/qwen-code, `packages/core/src/utils/quotaErrorDetection.ts`). No reset time is
//!   given, so the pool's default cooldown applies.

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use oauth_core::FailureKind;
use serde_json::Value;

use crate::classification::{Cause, Classification, QuotaPeriod};
use crate::common::{self, contains_ci, str_at};

/// Classifies a Qwen failure.
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Classification {
    let mut c = common::by_status(status);
    let json = common::json_body(body, &mut c.unreadable).unwrap_or(Value::Null);
    let (code, message) = match json.get("error") {
        Some(err) => (
            str_at(err, "/code").or_else(|| str_at(err, "/type")),
            str_at(err, "/message"),
        ),
        None => (str_at(&json, "/code"), str_at(&json, "/message")),
    };
    let code = code.unwrap_or_default();
    let message = message.unwrap_or_default();
    match code {
        "Arrearage" => common::set(&mut c, FailureKind::PermanentAuth, Cause::Billing),
        "DataInspectionFailed" | "data_inspection_failed" | "InvalidParameter.DataInspection" => {
            common::set(&mut c, FailureKind::RequestScoped, Cause::ContentPolicy);
        }
        "InvalidApiKey" | "invalid_api_key" => {
            common::set(&mut c, FailureKind::Unauthorized, Cause::Unauthorized);
        }
        "insufficient_quota" | "Throttling.AllocationQuota.FreeTierOnly" => {
            common::rate_limited(&mut c, Cause::QuotaExhausted(QuotaPeriod::Day));
        }
        "Throttling.AllocationQuota" => {
            common::rate_limited(&mut c, Cause::QuotaExhausted(QuotaPeriod::Unknown));
        }
        "Throttling" | "Throttling.RateQuota" | "Throttling.BurstRate" | "rate_limit_exceeded" => {
            common::rate_limited(&mut c, Cause::RateLimit);
        }
        c2 if c2.starts_with("AccessDenied") => {
            common::set(&mut c, FailureKind::PermanentAuth, Cause::Forbidden);
        }
        "InternalError" | "InternalError.Algo" | "ServiceUnavailable" | "SystemError" => {
            common::set(&mut c, FailureKind::Transient, Cause::ServerError);
        }
        "InvalidParameter" | "invalid_parameter_error" | "invalid_request_error"
            if contains_ci(message, "input length") || contains_ci(message, "context length") =>
        {
            common::set(&mut c, FailureKind::RequestScoped, Cause::ContextTooLong);
        }
        _ if status.as_u16() == 429 && contains_ci(message, "quota exceeded") => {
            common::rate_limited(&mut c, Cause::QuotaExhausted(QuotaPeriod::Day));
        }
        _ => {}
    }
    if matches!(c.kind, FailureKind::RateLimited { .. }) {
        common::apply_retry_after(&mut c, headers, now);
    }
    common::finish(c, headers, now)
}
