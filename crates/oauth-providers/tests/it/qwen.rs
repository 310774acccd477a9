//! Qwen (DashScope native and OpenAI-compatible shapes, Qwen OAuth).

use oauth_core::FailureKind;
use oauth_providers::{Cause, Provider, QuotaPeriod};

use crate::support::{classify, headers, secs};

#[test]
fn throttling_is_a_rate_limit_honouring_retry_after() {
    for body in [
        include_str!("fixtures/qwen/throttling_rate_quota.json"),
        include_str!("fixtures/qwen/compat_rate_limit.json"),
    ] {
        let c = classify(Provider::Qwen, 429, &headers(&[]), body);
        assert_eq!(
            (c.kind, c.cause),
            (FailureKind::rate_limited(None), Cause::RateLimit)
        );
        let c = classify(
            Provider::Qwen,
            429,
            &headers(&[("retry-after", "12")]),
            body,
        );
        assert_eq!(c.kind, FailureKind::rate_limited(secs(12)));
    }
    let c = classify(
        Provider::Qwen,
        429,
        &headers(&[("retry-after", "garbage")]),
        include_str!("fixtures/qwen/throttling_allocation_quota.json"),
    );
    assert_eq!(c.kind, FailureKind::rate_limited(None));
    assert_eq!(c.cause, Cause::QuotaExhausted(QuotaPeriod::Unknown));
    assert_eq!(c.unreadable.len(), 1);
}

#[test]
fn free_tier_quota_is_a_daily_quota() {
    let c = classify(
        Provider::Qwen,
        429,
        &headers(&[]),
        include_str!("fixtures/qwen/insufficient_quota.json"),
    );
    assert_eq!(c.cause, Cause::QuotaExhausted(QuotaPeriod::Day));
    assert!(matches!(c.kind, FailureKind::RateLimited { .. }));
}

#[test]
fn documented_errors() {
    let none = headers(&[]);
    let cases = [
        (
            400,
            include_str!("fixtures/qwen/arrearage.json"),
            FailureKind::PermanentAuth,
            Cause::Billing,
        ),
        (
            400,
            include_str!("fixtures/qwen/data_inspection_failed.json"),
            FailureKind::RequestScoped,
            Cause::ContentPolicy,
        ),
        (
            400,
            include_str!("fixtures/qwen/input_length.json"),
            FailureKind::RequestScoped,
            Cause::ContextTooLong,
        ),
        (
            401,
            include_str!("fixtures/qwen/invalid_api_key.json"),
            FailureKind::Unauthorized,
            Cause::Unauthorized,
        ),
        (
            403,
            include_str!("fixtures/qwen/access_denied.json"),
            FailureKind::PermanentAuth,
            Cause::Forbidden,
        ),
        (
            500,
            include_str!("fixtures/qwen/internal_error.json"),
            FailureKind::Transient,
            Cause::ServerError,
        ),
        (
            400,
            r#"{"code":"InvalidParameter","message":"Required parameter(s) missing or invalid"}"#,
            FailureKind::RequestScoped,
            Cause::InvalidRequest,
        ),
    ];
    for (status, body, kind, cause) in cases {
        let c = classify(Provider::Qwen, status, &none, body);
        assert_eq!((c.kind, c.cause), (kind, cause), "{status} {body}");
    }
}
