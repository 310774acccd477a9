//! Readers for the waits and reset times providers put in headers and bodies. Every reader is
//! total: a value it cannot read gives `None` (and the caller records an [`Unreadable`]).

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, TimeZone, Utc, Weekday};
use http::HeaderMap;
use oauth_core::parse_retry_after;

use crate::classification::{Classification, Hint, Unreadable};

/// The longest wait any reader accepts (a year); longer values are treated as unreadable rather
/// than overflowing time arithmetic. The pool clamps cooldowns far below this anyway.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// A header as text, if present and visible ASCII.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<Result<&'h str, usize>> {
    let v = headers.get(name)?;
    Some(v.to_str().map(str::trim).map_err(|_| v.len()))
}

/// Sets `c`'s wait to `wait` from now, from `hint`.
pub(crate) fn set_wait(c: &mut Classification, wait: Duration, hint: Hint, now: DateTime<Utc>) {
    c.retry_at = Some(oauth_core::after(now, wait.min(MAX_WAIT)));
    c.hint = hint;
}

/// Sets `c`'s wait to end at `at` (a past instant means no wait).
pub(crate) fn set_until(c: &mut Classification, at: DateTime<Utc>, hint: Hint, now: DateTime<Utc>) {
    c.retry_at = Some(at.max(now));
    c.hint = hint;
}

/// `Retry-After` (RFC 9110 section 10.2.3, both forms) or, failing that, `retry-after-ms`
/// (milliseconds, sent by OpenAI and honoured by its SDKs). Records unreadable values.
pub(crate) fn retry_after(
    headers: &HeaderMap,
    now: DateTime<Utc>,
    unreadable: &mut Vec<Unreadable>,
) -> Option<Duration> {
    if let Some(v) = header(headers, "retry-after") {
        match v.ok().and_then(|s| parse_retry_after(s, now).ok()) {
            Some(d) if d <= MAX_WAIT => return Some(d),
            _ => unreadable.push(Unreadable::Header {
                name: "retry-after",
                len: headers.get("retry-after").map_or(0, |v| v.len()),
            }),
        }
    }
    if let Some(v) = header(headers, "retry-after-ms") {
        match v.ok().and_then(parse_millis) {
            Some(d) => return Some(d),
            None => unreadable.push(Unreadable::Header {
                name: "retry-after-ms",
                len: headers.get("retry-after-ms").map_or(0, |v| v.len()),
            }),
        }
    }
    None
}

fn parse_millis(s: &str) -> Option<Duration> {
    let ms: f64 = s.parse().ok()?;
    (ms.is_finite() && ms >= 0.0)
        .then(|| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .flatten()
        .filter(|d| *d <= MAX_WAIT)
}

/// Reads header `name` with `parse`; records it as unreadable when present but not parseable.
pub(crate) fn header_with<T>(
    headers: &HeaderMap,
    name: &'static str,
    unreadable: &mut Vec<Unreadable>,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Option<T> {
    let v = header(headers, name)?;
    let parsed = v.ok().and_then(parse);
    if parsed.is_none() {
        unreadable.push(Unreadable::Header {
            name,
            len: headers.get(name).map_or(0, |v| v.len()),
        });
    }
    parsed
}

/// A Go `time.Duration` string as OpenAI's `x-ratelimit-reset-*` headers carry it: a sequence
/// of decimal numbers with units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns` ("6m0s", "1s", "20ms",
/// "1h2m3.5s"). A bare number is taken as seconds (Azure OpenAI sends "0" or "12").
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs_f64(secs);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    secs_f64(total)
}

/// A protobuf `google.protobuf.Duration` in its JSON form: seconds with an `s` suffix ("30s",
/// "1.500s"), as in `google.rpc.RetryInfo.retryDelay`. Go-style strings ("2h3m4s") are accepted
/// too, for the Code Assist API's `quotaResetDelay`.
pub fn parse_proto_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    match s.strip_suffix('s') {
        Some(n) if n.parse::<f64>().is_ok() => n.parse::<f64>().ok().and_then(secs_f64),
        _ => parse_go_duration(s),
    }
}

fn secs_f64(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::try_from_secs_f64(secs).ok())
        .flatten()
        .filter(|d| *d <= MAX_WAIT)
}

/// An RFC 3339 timestamp (Anthropic's `anthropic-ratelimit-*-reset`).
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Unix seconds, as a string or number (Codex's `resets_at`).
pub fn parse_epoch_secs(s: &str) -> Option<DateTime<Utc>> {
    s.trim()
        .parse::<i64>()
        .ok()
        .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
}

/// A JSON number of seconds (integer or fraction) as a wait.
pub(crate) fn json_secs(v: &serde_json::Value) -> Option<Duration> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().and_then(secs_f64),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok().and_then(secs_f64),
        _ => None,
    }
}

/// A JSON instant: Unix seconds (number or digits) or an RFC 3339 string.
pub(crate) fn json_instant(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .and_then(|secs| Utc.timestamp_opt(secs, 0).single()),
        serde_json::Value::String(s) => parse_epoch_secs(s).or_else(|| parse_rfc3339(s)),
        _ => None,
    }
}

/// The next midnight in US Pacific time (America/Los_Angeles) strictly after `now`: when the
/// Gemini API's per-day quotas reset ("Requests per day (RPD) quotas reset at midnight Pacific
/// time", <https://ai.google.dev/gemini-api/docs/rate-limits>).
///
/// US daylight saving time (Energy Policy Act of 2005, in force since 2007) starts on the second
/// Sunday of March at 02:00 local and ends on the first Sunday of November at 02:00 local; Pacific
/// standard time is UTC-8, daylight time UTC-7.
pub fn next_pacific_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let offset_h = pacific_offset_hours(now);
    let local = now + TimeDelta::hours(offset_h);
    let Some(next_day) = local.date_naive().succ_opt() else {
        return now;
    };
    // A local midnight is never inside a transition (they happen at 02:00), so its offset
    // depends on the date alone: daylight time from the day after the March switch through the
    // day of the November switch.
    let dst = is_dst_date(next_day);
    let offset = if dst { -7 } else { -8 };
    let midnight = next_day.and_hms_opt(0, 0, 0).map(|m| m.and_utc());
    midnight.map_or(now, |m| m - TimeDelta::hours(offset))
}

/// UTC offset (hours) of Pacific time at `t`.
fn pacific_offset_hours(t: DateTime<Utc>) -> i64 {
    let y = t.year();
    let (Some(start), Some(end)) = (nth_sunday(y, 3, 2), nth_sunday(y, 11, 1)) else {
        return -8;
    };
    // 02:00 PST = 10:00 UTC; 02:00 PDT = 09:00 UTC.
    let start_utc = start.and_hms_opt(10, 0, 0).map(|d| d.and_utc());
    let end_utc = end.and_hms_opt(9, 0, 0).map(|d| d.and_utc());
    match (start_utc, end_utc) {
        (Some(s), Some(e)) if t >= s && t < e => -7,
        _ => -8,
    }
}

fn is_dst_date(d: NaiveDate) -> bool {
    match (nth_sunday(d.year(), 3, 2), nth_sunday(d.year(), 11, 1)) {
        (Some(start), Some(end)) => d > start && d <= end,
        _ => false,
    }
}

fn nth_sunday(year: i32, month: u32, n: u32) -> Option<NaiveDate> {
    NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Sun, u8::try_from(n).ok()?)
}

/// The first instant of the next calendar month, UTC (Anthropic's monthly spend limits resume
/// "on the first day of the next month at 00:00 UTC").
pub fn next_month_start_utc(now: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if now.month() == 12 {
        (now.year().saturating_add(1), 1)
    } else {
        (now.year(), now.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(now, |d| d.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_rfc3339(s).unwrap_or_default()
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_go_duration("12"), Some(Duration::from_secs(12)));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration("-1s"), None);
        assert_eq!(parse_go_duration("99999999999999999999h"), None);
        assert_eq!(parse_go_duration("1..2s"), None);
    }

    #[test]
    fn proto_durations() {
        assert_eq!(parse_proto_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_proto_duration("58.217843437s"),
            Some(Duration::from_nanos(58_217_843_437))
        );
        assert_eq!(
            parse_proto_duration("2h3m44s"),
            Some(Duration::from_secs(7424))
        );
        assert_eq!(parse_proto_duration("s"), None);
    }

    #[test]
    fn pacific_midnight_in_both_halves_of_the_year() {
        // Winter, PST (UTC-8): 2026-01-15 12:00 UTC is 04:00 PST; next midnight 2026-01-16 08:00 UTC.
        assert_eq!(
            next_pacific_midnight(at("2026-01-15T12:00:00Z")),
            at("2026-01-16T08:00:00Z")
        );
        // Summer, PDT (UTC-7).
        assert_eq!(
            next_pacific_midnight(at("2026-07-01T06:59:59Z")),
            at("2026-07-01T07:00:00Z")
        );
        assert_eq!(
            next_pacific_midnight(at("2026-07-01T07:00:00Z")),
            at("2026-07-02T07:00:00Z")
        );
        // 2026: DST starts Sunday March 8, ends Sunday November 1.
        // Saturday March 7 20:00 PST -> midnight of Sunday March 8 is still PST (08:00 UTC).
        assert_eq!(
            next_pacific_midnight(at("2026-03-08T04:00:00Z")),
            at("2026-03-08T08:00:00Z")
        );
        // Sunday March 8 12:00 PDT -> midnight of Monday March 9 is PDT (07:00 UTC).
        assert_eq!(
            next_pacific_midnight(at("2026-03-08T19:00:00Z")),
            at("2026-03-09T07:00:00Z")
        );
        // Saturday Oct 31 12:00 PDT -> midnight of Sunday Nov 1 is PDT (07:00 UTC).
        assert_eq!(
            next_pacific_midnight(at("2026-10-31T19:00:00Z")),
            at("2026-11-01T07:00:00Z")
        );
        // Sunday Nov 1 12:00 PST -> midnight of Monday Nov 2 is PST (08:00 UTC).
        assert_eq!(
            next_pacific_midnight(at("2026-11-01T20:00:00Z")),
            at("2026-11-02T08:00:00Z")
        );
    }

    #[test]
    fn next_month() {
        assert_eq!(
            next_month_start_utc(at("2026-12-31T23:59:59Z")),
            at("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            next_month_start_utc(at("2026-02-10T10:00:00Z")),
            at("2026-03-01T00:00:00Z")
        );
    }
}
