//! Gemini (Generative Language) and Code Assist.

use std::time::Duration;

use oauth_core::FailureKind;
use oauth_providers::{Cause, Hint, OVERLOADED, Provider, QuotaPeriod, Unreadable};

use crate::support::{at, classify, headers, secs};

#[test]
fn per_minute_quota_waits_for_retry_delay() {
    for provider in [Provider::Gemini, Provider::CodeAssist] {
        let c = classify(
            provider,
            429,
            &headers(&[]),
            include_str!("fixtures/gemini/per_minute.json"),
        );
        assert_eq!(c.kind, FailureKind::rate_limited(secs(30)));
        assert_eq!(
            (c.cause, c.hint),
            (Cause::RateLimit, Hint::Body("retryDelay"))
        );
    }
}

#[test]
fn per_day_quota_cools_until_midnight_pacific() {
    // now is 04:00 PST on Jan 15; the quota resets at 00:00 PST on Jan 16 = 08:00 UTC.
    let c = classify(
        Provider::Gemini,
        429,
        &headers(&[]),
        include_str!("fixtures/gemini/per_day.json"),
    );
    assert_eq!(c.cause, Cause::QuotaExhausted(QuotaPeriod::Day));
    assert_eq!(c.retry_at, Some(at("2026-01-16T08:00:00Z")));
    assert_eq!(c.kind, FailureKind::rate_limited(secs(20 * 3600)));
    assert!(matches!(c.hint, Hint::Documented(_)));
}

#[test]
fn bare_resource_exhausted_uses_retry_after_or_nothing() {
    let body = include_str!("fixtures/gemini/resource_exhausted_bare.json");
    let c = classify(Provider::Gemini, 429, &headers(&[]), body);
    assert_eq!(
        (c.kind, c.cause),
        (FailureKind::rate_limited(None), Cause::RateLimit)
    );
    let c = classify(
        Provider::Gemini,
        429,
        &headers(&[("retry-after", "7")]),
        body,
    );
    assert_eq!(c.kind, FailureKind::rate_limited(secs(7)));
}

#[test]
fn malformed_retry_delay_is_a_typed_fallback() {
    let body = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"soon"},{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":"not a list"}]}}"#;
    let c = classify(
        Provider::Gemini,
        429,
        &headers(&[("retry-after", "4")]),
        body,
    );
    assert_eq!(c.kind, FailureKind::rate_limited(secs(4)));
    assert_eq!(
        c.unreadable,
        vec![Unreadable::BodyField { name: "retryDelay" }]
    );
    let c = classify(Provider::Gemini, 429, &headers(&[]), r#"{"error":[]}"#);
    assert_eq!(c.kind, FailureKind::rate_limited(None));
}

#[test]
fn code_assist_quota_reset_from_error_info() {
    let c = classify(
        Provider::CodeAssist,
        429,
        &headers(&[]),
        include_str!("fixtures/code_assist/quota_exhausted.json"),
    );
    assert_eq!(c.retry_at, Some(at("2026-01-15T14:03:44Z")));
    assert_eq!(c.hint, Hint::Body("quotaResetTimeStamp"));
    assert_eq!(c.kind, FailureKind::rate_limited(secs(7424)));

    // A quota without a reset time: the daily reset.
    let c = classify(
        Provider::CodeAssist,
        429,
        &headers(&[]),
        include_str!("fixtures/code_assist/quota_exhausted_no_reset.json"),
    );
    assert_eq!(c.cause, Cause::QuotaExhausted(QuotaPeriod::Day));
    assert_eq!(c.retry_at, Some(at("2026-01-16T08:00:00Z")));

    let c = classify(
        Provider::CodeAssist,
        429,
        &headers(&[]),
        include_str!("fixtures/code_assist/rate_limit_exceeded.json"),
    );
    assert_eq!(
        c.kind,
        FailureKind::rate_limited(Some(Duration::from_millis(4500)))
    );
}

#[test]
fn capacity_and_overload_fail_over_without_a_penalty() {
    let c = classify(
        Provider::CodeAssist,
        429,
        &headers(&[]),
        include_str!("fixtures/code_assist/model_capacity_exhausted.json"),
    );
    assert_eq!((c.kind, c.cause), (OVERLOADED, Cause::Overloaded));
    let c = classify(
        Provider::Gemini,
        503,
        &headers(&[]),
        include_str!("fixtures/gemini/unavailable_overloaded.json"),
    );
    assert_eq!((c.kind, c.cause), (OVERLOADED, Cause::Overloaded));
}

#[test]
fn documented_errors() {
    let none = headers(&[]);
    let cases = [
        (
            400,
            include_str!("fixtures/gemini/invalid_argument.json"),
            FailureKind::RequestScoped,
            Cause::ContextTooLong,
        ),
        (
            400,
            include_str!("fixtures/gemini/api_key_invalid.json"),
            FailureKind::RequestScoped,
            Cause::InvalidRequest,
        ),
        (
            400,
            include_str!("fixtures/gemini/failed_precondition.json"),
            FailureKind::PermanentAuth,
            Cause::Billing,
        ),
        (
            401,
            include_str!("fixtures/gemini/unauthenticated.json"),
            FailureKind::Unauthorized,
            Cause::Unauthorized,
        ),
        (
            403,
            include_str!("fixtures/gemini/permission_denied.json"),
            FailureKind::PermanentAuth,
            Cause::Forbidden,
        ),
        (
            403,
            include_str!("fixtures/gemini/service_disabled.json"),
            FailureKind::Misconfigured,
            Cause::NotEnabled,
        ),
        (
            500,
            include_str!("fixtures/gemini/internal.json"),
            FailureKind::Transient,
            Cause::ServerError,
        ),
        (504, "", FailureKind::Transient, Cause::ServerError),
    ];
    for (status, body, kind, cause) in cases {
        let c = classify(Provider::Gemini, status, &none, body);
        assert_eq!((c.kind, c.cause), (kind, cause), "{status} {body}");
    }
}
