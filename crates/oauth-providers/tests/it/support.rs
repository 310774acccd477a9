//! Shared helpers: a fixed `now`, header maps, and classification shortcuts.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use oauth_providers::{Classification, ClassifyResponse, Provider};

/// 2026-01-15 12:00:00 UTC (04:00 Pacific standard time).
pub(crate) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

pub(crate) fn at(rfc3339: &str) -> DateTime<Utc> {
    oauth_providers::parse_rfc3339(rfc3339).unwrap_or_default()
}

pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.append(HeaderName::from_static(k), v);
        }
    }
    h
}

/// Classifies a failure; panics (the test fails) when the answer is taken for a success.
pub(crate) fn classify(
    provider: Provider,
    status: u16,
    headers: &HeaderMap,
    body: &str,
) -> Classification {
    let status = StatusCode::from_u16(status).expect("valid status");
    provider
        .classify(status, headers, body.as_bytes(), now())
        .expect("a failure is classified")
}

pub(crate) fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}
