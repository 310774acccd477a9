//! Anthropic.

use oauth_core::FailureKind;
use oauth_providers::{Cause, Hint, OVERLOADED, Provider, QuotaPeriod, Unreadable};

use crate::support::{at, classify, headers, secs};

const RATE_LIMIT: &str = include_str!("fixtures/anthropic/rate_limit_error.json");

#[test]
fn retry_after_governs_a_rate_limit() {
    let h = headers(&[
        ("retry-after", "17"),
        ("anthropic-ratelimit-tokens-reset", "2026-01-15T12:05:00Z"),
    ]);
    let c = classify(Provider::Anthropic, 429, &h, RATE_LIMIT);
    assert_eq!(c.kind, FailureKind::rate_limited(secs(17)));
    assert_eq!((c.cause, c.hint), (Cause::RateLimit, Hint::RetryAfter));
    let h = headers(&[("retry-after", "Thu, 15 Jan 2026 12:00:45 GMT")]);
    assert_eq!(
        classify(Provider::Anthropic, 429, &h, RATE_LIMIT).kind,
        FailureKind::rate_limited(secs(45))
    );
}

#[test]
fn reset_headers_in_rfc3339_pick_the_exhausted_limit() {
    let h = headers(&[
        ("anthropic-ratelimit-requests-remaining", "12"),
        ("anthropic-ratelimit-requests-reset", "2026-01-15T12:00:05Z"),
        ("anthropic-ratelimit-input-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2026-01-15T12:00:40Z",
        ),
        ("anthropic-ratelimit-output-tokens-remaining", "8000"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2026-01-15T12:00:59Z",
        ),
    ]);
    let c = classify(Provider::Anthropic, 429, &h, RATE_LIMIT);
    assert_eq!(c.kind, FailureKind::rate_limited(secs(40)));
    assert_eq!(
        c.hint,
        Hint::ResetHeader("anthropic-ratelimit-input-tokens-reset")
    );
    // Offsets other than Z, and no `remaining` headers: the latest reset.
    let h = headers(&[
        (
            "anthropic-ratelimit-requests-reset",
            "2026-01-15T13:00:10+01:00",
        ),
        ("anthropic-ratelimit-tokens-reset", "2026-01-15T12:00:30Z"),
    ]);
    let c = classify(Provider::Anthropic, 429, &h, RATE_LIMIT);
    assert_eq!(c.kind, FailureKind::rate_limited(secs(30)));
    // A reset in the past: no wait.
    let h = headers(&[("anthropic-ratelimit-tokens-reset", "2026-01-15T11:00:00Z")]);
    let c = classify(Provider::Anthropic, 429, &h, RATE_LIMIT);
    assert_eq!(c.kind, FailureKind::rate_limited(secs(0)));
}

#[test]
fn plan_window_reset_in_unix_seconds() {
    let reset = at("2026-01-15T15:00:00Z").timestamp().to_string();
    let h = headers(&[("anthropic-ratelimit-unified-reset", reset.as_str())]);
    let c = classify(Provider::Anthropic, 429, &h, RATE_LIMIT);
    assert_eq!(c.kind, FailureKind::rate_limited(secs(3 * 3600)));
    assert_eq!(c.cause, Cause::QuotaExhausted(QuotaPeriod::Plan));
}

#[test]
fn malformed_reset_headers_fall_back() {
    let h = headers(&[
        ("retry-after", "1e3"),
        ("anthropic-ratelimit-tokens-reset", "tomorrow"),
        ("anthropic-ratelimit-requests-reset", "2026-01-15T12:00:09Z"),
    ]);
    let c = classify(Provider::Anthropic, 429, &h, RATE_LIMIT);
    assert_eq!(c.kind, FailureKind::rate_limited(secs(9)));
    assert!(c.unreadable.contains(&Unreadable::Header {
        name: "anthropic-ratelimit-tokens-reset",
        len: 8
    }));
    let c = classify(Provider::Anthropic, 429, &headers(&[]), "{}");
    assert_eq!(c.kind, FailureKind::rate_limited(None));
}

#[test]
fn overloaded_fails_over_without_a_penalty() {
    let body = include_str!("fixtures/anthropic/overloaded_error.json");
    let c = classify(
        Provider::Anthropic,
        529,
        &headers(&[("retry-after", "30")]),
        body,
    );
    assert_eq!((c.kind, c.cause), (OVERLOADED, Cause::Overloaded));
    assert_eq!(c.kind, FailureKind::Overloaded { retry_after: None });
    assert!(c.is_retryable());
    // Even without the body, 529 means overloaded.
    let c = classify(Provider::Anthropic, 529, &headers(&[]), "");
    assert_eq!(c.kind, OVERLOADED);
    // And the body means it whatever the status.
    assert_eq!(
        classify(Provider::Anthropic, 500, &headers(&[]), body).kind,
        OVERLOADED
    );
}

#[test]
fn spend_limit_cools_until_next_month() {
    let c = classify(
        Provider::Anthropic,
        429,
        &headers(&[]),
        include_str!("fixtures/anthropic/spend_limit.json"),
    );
    assert_eq!(c.cause, Cause::QuotaExhausted(QuotaPeriod::Month));
    assert_eq!(c.retry_at, Some(at("2026-02-01T00:00:00Z")));
    assert!(matches!(c.hint, Hint::Documented(_)));
}

#[test]
fn documented_errors() {
    let none = headers(&[]);
    let cases = [
        (
            400,
            "prompt_too_long",
            FailureKind::RequestScoped,
            Cause::ContextTooLong,
        ),
        (
            401,
            "authentication_error",
            FailureKind::Unauthorized,
            Cause::Unauthorized,
        ),
        (
            402,
            "billing_error",
            FailureKind::PermanentAuth,
            Cause::Billing,
        ),
        (
            403,
            "permission_error",
            FailureKind::PermanentAuth,
            Cause::Forbidden,
        ),
        (
            413,
            "request_too_large",
            FailureKind::RequestScoped,
            Cause::ContextTooLong,
        ),
        (500, "api_error", FailureKind::Transient, Cause::ServerError),
    ];
    for (status, name, kind, cause) in cases {
        let body = match name {
            "prompt_too_long" => include_str!("fixtures/anthropic/prompt_too_long.json"),
            "authentication_error" => include_str!("fixtures/anthropic/authentication_error.json"),
            "billing_error" => include_str!("fixtures/anthropic/billing_error.json"),
            "permission_error" => include_str!("fixtures/anthropic/permission_error.json"),
            "request_too_large" => include_str!("fixtures/anthropic/request_too_large.json"),
            _ => include_str!("fixtures/anthropic/api_error.json"),
        };
        let c = classify(Provider::Anthropic, status, &none, body);
        assert_eq!((c.kind, c.cause), (kind, cause), "{name}");
    }
    // A 404 without a body is request-scoped; a 409 is transient.
    assert_eq!(
        classify(Provider::Anthropic, 404, &none, "").kind,
        FailureKind::RequestScoped
    );
    assert_eq!(
        classify(Provider::Anthropic, 409, &none, "").kind,
        FailureKind::Transient
    );
}
