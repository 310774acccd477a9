//! Random statuses, headers and bodies: every classifier answers, none panics, waits stay bounded.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use oauth_providers::{ClassifyResponse, Provider};
use proptest::prelude::*;

use crate::support::now;

const HEADERS: [&str; 12] = [
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-remaining-tokens",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
    "anthropic-ratelimit-unified-reset",
    "x-unrelated",
];

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        // JSON-ish bodies with the fields the classifiers read, holding random values.
        (
            "[a-z_A-Z.]{0,30}",
            "[ -~]{0,20}",
            any::<i64>(),
            any::<f64>()
        )
            .prop_map(|(ty, s, n, f)| {
                format!(
                    r#"[{{"error":{{"type":"{ty}","code":"{ty}","status":"RESOURCE_EXHAUSTED","message":"{s}","resets_in_seconds":{f},"resets_at":{n},"details":[{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{s}"}},{{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"QUOTA_EXHAUSTED","metadata":{{"quotaResetDelay":"{s}","quotaResetTimeStamp":"{s}"}}}},{{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{{"quotaId":"{ty}PerDay"}}]}}]}}}}]"#
                )
                .replace("NaN", "0")
                .replace("inf", "1")
                .into_bytes()
            }),
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        "[0-9]{1,30}",
        "[0-9]{1,12}(h|m|s|ms|us|ns)[0-9]{0,5}(s|ms)?",
        "-?[0-9]{1,25}(\\.[0-9]{0,9})?",
        "[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2})",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn classifiers_never_panic(
        status in 100u16..1000,
        pairs in proptest::collection::vec((0usize..HEADERS.len(), header_value()), 0..6),
        body in body(),
        provider in 0usize..Provider::ALL.len(),
    ) {
        let provider = Provider::ALL[provider];
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = HeaderMap::new();
        for (i, v) in &pairs {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.append(HeaderName::from_static(HEADERS[*i]), v);
            }
        }
        let got = provider.classify(status, &headers, &body, now());
        prop_assert_eq!(got.is_none(), status.is_success());
        if let Some(c) = got {
            // Waits are bounded (the pool clamps them further).
            if let Some(d) = c.retry_after(now()) {
                prop_assert!(d <= Duration::from_secs(366 * 24 * 3600));
            }
            let _ = c.to_string();
        }
        let _ = provider.usage(&body);
        let mut s = provider.stream_usage();
        s.feed(&body, now());
        s.finish(now());
    }
}
