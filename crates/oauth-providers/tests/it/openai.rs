//! OpenAI and Codex.

use std::time::Duration;

use oauth_core::FailureKind;
use oauth_providers::{Cause, Hint, Provider, QuotaPeriod, Unreadable};

use crate::support::{at, classify, headers, now, secs};

const RATE_LIMIT: &str = include_str!("fixtures/openai/rate_limit_requests.json");

#[test]
fn retry_after_both_forms() {
    let h = headers(&[("retry-after", "20")]);
    let c = classify(Provider::OpenAi, 429, &h, RATE_LIMIT);
    assert_eq!(c.kind, FailureKind::rate_limited(secs(20)));
    assert_eq!((c.cause, c.hint), (Cause::RateLimit, Hint::RetryAfter));
    assert_eq!(c.retry_at, Some(at("2026-01-15T12:00:20Z")));

    let h = headers(&[("retry-after", "Thu, 15 Jan 2026 12:01:30 GMT")]);
    let c = classify(Provider::OpenAi, 429, &h, RATE_LIMIT);
    assert_eq!(c.kind, FailureKind::rate_limited(secs(90)));

    let h = headers(&[("retry-after-ms", "1500")]);
    let c = classify(Provider::OpenAi, 429, &h, RATE_LIMIT);
    assert_eq!(
        c.kind,
        FailureKind::rate_limited(Some(Duration::from_millis(1500)))
    );
}

#[test]
fn reset_headers_pick_the_exhausted_limit() {
    // Tokens are exhausted: their reset (6m0s) governs, not the requests' (1s).
    let h = headers(&[
        ("x-ratelimit-remaining-requests", "499"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-requests", "1s"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ]);
    let c = classify(Provider::OpenAi, 429, &h, RATE_LIMIT);
    assert_eq!(c.kind, FailureKind::rate_limited(secs(360)));
    assert_eq!(c.hint, Hint::ResetHeader("x-ratelimit-reset-tokens"));

    let h = headers(&[
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-remaining-tokens", "1000"),
        ("x-ratelimit-reset-requests", "20ms"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ]);
    let c = classify(Provider::OpenAi, 429, &h, RATE_LIMIT);
    assert_eq!(
        c.kind,
        FailureKind::rate_limited(Some(Duration::from_millis(20)))
    );

    // Neither says it is exhausted: the later reset, to be safe.
    let h = headers(&[
        ("x-ratelimit-reset-requests", "1s"),
        ("x-ratelimit-reset-tokens", "1m30s"),
    ]);
    let c = classify(Provider::OpenAi, 429, &h, RATE_LIMIT);
    assert_eq!(c.kind, FailureKind::rate_limited(secs(90)));
    // Retry-After wins over the reset headers.
    let h = headers(&[("retry-after", "3"), ("x-ratelimit-reset-tokens", "6m0s")]);
    assert_eq!(
        classify(Provider::OpenAi, 429, &h, RATE_LIMIT).kind,
        FailureKind::rate_limited(secs(3))
    );
}

#[test]
fn malformed_and_missing_headers_fall_back() {
    let h = headers(&[
        ("retry-after", "soon"),
        ("x-ratelimit-reset-tokens", "6 minutes"),
        ("x-ratelimit-reset-requests", "2s"),
    ]);
    let c = classify(Provider::OpenAi, 429, &h, RATE_LIMIT);
    // Retry-After unreadable -> the readable reset header.
    assert_eq!(c.kind, FailureKind::rate_limited(secs(2)));
    assert_eq!(
        c.unreadable,
        vec![
            Unreadable::Header {
                name: "retry-after",
                len: 4
            },
            Unreadable::Header {
                name: "x-ratelimit-reset-tokens",
                len: 9
            },
        ]
    );
    // Nothing readable at all: a rate limit without a wait (the pool's default cooldown).
    let h = headers(&[("retry-after", "-5"), ("x-ratelimit-reset-tokens", "")]);
    let c = classify(Provider::OpenAi, 429, &h, "not json");
    assert_eq!(c.kind, FailureKind::rate_limited(None));
    assert_eq!(c.retry_at, None);
    assert!(c.unreadable.contains(&Unreadable::Body { len: 8 }));
    let c = classify(Provider::OpenAi, 429, &headers(&[]), "");
    assert_eq!(
        (c.kind, c.hint),
        (FailureKind::rate_limited(None), Hint::None)
    );
}

#[test]
fn documented_errors() {
    let none = headers(&[]);
    let cases = [
        (
            429,
            include_str!("fixtures/openai/insufficient_quota.json"),
            FailureKind::PermanentAuth,
            Cause::Billing,
        ),
        (
            400,
            include_str!("fixtures/openai/context_length_exceeded.json"),
            FailureKind::RequestScoped,
            Cause::ContextTooLong,
        ),
        (
            401,
            include_str!("fixtures/openai/invalid_api_key.json"),
            FailureKind::Unauthorized,
            Cause::Unauthorized,
        ),
        (
            403,
            include_str!("fixtures/openai/unsupported_region.json"),
            FailureKind::PermanentAuth,
            Cause::Forbidden,
        ),
        (
            503,
            include_str!("fixtures/openai/engine_overloaded.json"),
            oauth_providers::OVERLOADED,
            Cause::Overloaded,
        ),
        (
            500,
            include_str!("fixtures/openai/server_error.json"),
            FailureKind::Transient,
            Cause::ServerError,
        ),
        (
            502,
            "<html>Bad gateway</html>",
            FailureKind::Transient,
            Cause::ServerError,
        ),
    ];
    for (status, body, kind, cause) in cases {
        let c = classify(Provider::OpenAi, status, &none, body);
        assert_eq!((c.kind, c.cause), (kind, cause), "{status} {body}");
        assert_eq!(c.status, status);
        // Nothing of the body reaches the classification's text.
        assert!(!c.to_string().contains("quota, please"), "{c}");
    }
}

#[test]
fn codex_usage_limit_cools_until_the_reset() {
    let c = classify(
        Provider::Codex,
        429,
        &headers(&[]),
        include_str!("fixtures/codex/usage_limit_reached.json"),
    );
    assert_eq!(c.kind, FailureKind::rate_limited(secs(7260)));
    assert_eq!(c.cause, Cause::QuotaExhausted(QuotaPeriod::Plan));
    assert_eq!(c.hint, Hint::Body("resets_in_seconds"));

    let c = classify(
        Provider::Codex,
        429,
        &headers(&[]),
        include_str!("fixtures/codex/usage_limit_reached_at_only.json"),
    );
    assert_eq!(c.kind, FailureKind::rate_limited(secs(7260)));
    assert_eq!(c.retry_at, Some(at("2026-01-15T14:01:00Z")));
    assert_eq!(c.hint, Hint::Body("resets_at"));

    // A Retry-After overrides the body (the explicit wait).
    let c = classify(
        Provider::Codex,
        429,
        &headers(&[("retry-after", "60")]),
        include_str!("fixtures/codex/usage_limit_reached.json"),
    );
    assert_eq!(c.kind, FailureKind::rate_limited(secs(60)));

    // A malformed reset is a typed fallback.
    let body =
        r#"{"error":{"type":"usage_limit_reached","resets_in_seconds":"never","resets_at":[1]}}"#;
    let c = classify(Provider::Codex, 429, &headers(&[]), body);
    assert_eq!(c.kind, FailureKind::rate_limited(None));
    assert_eq!(c.unreadable.len(), 2);

    let c = classify(
        Provider::Codex,
        403,
        &headers(&[]),
        include_str!("fixtures/codex/usage_not_included.json"),
    );
    assert_eq!(
        (c.kind, c.cause),
        (FailureKind::PermanentAuth, Cause::Billing)
    );
    // OpenAI proper does not read Codex's body fields.
    let c = classify(
        Provider::OpenAi,
        429,
        &headers(&[]),
        include_str!("fixtures/codex/usage_limit_reached.json"),
    );
    assert_eq!(c.kind, FailureKind::rate_limited(None));
    assert!(c.retry_at.is_none() || c.retry_at == Some(now()));
}

#[test]
fn a_503_with_retry_after_is_a_rate_limit_for_that_long() {
    for provider in Provider::ALL {
        let c = classify(provider, 503, &headers(&[("retry-after", "8")]), "");
        assert_eq!(c.kind, FailureKind::rate_limited(secs(8)), "{provider}");
        assert_eq!(c.cause, Cause::ServerError);
        let c = classify(provider, 503, &headers(&[]), "");
        assert_eq!(c.kind, FailureKind::Transient, "{provider}");
    }
    // An overloaded 503 stays an overload: no cooldown whatever it asks.
    let c = classify(
        Provider::Gemini,
        503,
        &headers(&[("retry-after", "8")]),
        include_str!("fixtures/gemini/unavailable_overloaded.json"),
    );
    assert_eq!(c.kind, oauth_providers::OVERLOADED);
}

#[test]
fn names_and_the_generic_classifier() {
    for p in Provider::ALL {
        assert_eq!(Provider::from_name(p.as_str()), Some(p));
    }
    assert_eq!(Provider::from_name("Claude"), Some(Provider::Anthropic));
    assert_eq!(
        Provider::from_name("gemini-cli"),
        Some(Provider::CodeAssist)
    );
    assert_eq!(Provider::from_name("nope"), None);
    let h = headers(&[("retry-after", "5")]);
    let status = |s| http::StatusCode::from_u16(s).expect("status");
    assert!(oauth_providers::classify_status(status(204), &h, now()).is_none());
    let c = oauth_providers::classify_status(status(429), &h, now()).expect("failure");
    assert_eq!(c.kind, FailureKind::rate_limited(secs(5)));
    let kinds = [
        (401, FailureKind::Unauthorized),
        (403, FailureKind::PermanentAuth),
        (404, FailureKind::RequestScoped),
        (409, FailureKind::Transient),
        (529, oauth_providers::OVERLOADED),
        (302, FailureKind::Transient),
    ];
    for (s, want) in kinds {
        let got = oauth_providers::classify_status(status(s), &headers(&[]), now()).map(|c| c.kind);
        assert_eq!(got, Some(want), "{s}");
    }
}
