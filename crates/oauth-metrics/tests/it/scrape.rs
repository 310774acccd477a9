//! What a `/metrics` endpoint serves: the negotiated format and gzip, and `promtool check
//! metrics` on the classic text of a scrape with every family.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use flate2::read::GzDecoder;
use oauth_core::FailureKind;
use oauth_metrics::prometheus_client::registry::Registry;
use oauth_metrics::{
    Format, GaugeSource, Granularity, MetricsRecorder, OPENMETRICS_CONTENT_TYPE,
    PROMETHEUS_TEXT_CONTENT_TYPE, PrometheusConfig, PrometheusRecorder, RefreshResult,
    RequestOutcome, encode_openmetrics, encode_scrape,
};

use crate::openmetrics::Exposition;
use crate::pool::Pool;
use crate::{id, t0};

/// A registry with every family of every granularity, each with series, and the pool feeding
/// its gauges (returned so it stays alive).
fn registry(granularity: Granularity) -> (Registry, Arc<Pool>) {
    let mut registry = Registry::with_prefix("oauth_pool");
    let rec = PrometheusRecorder::with_config(
        &mut registry,
        "anthropic",
        PrometheusConfig::new().with_granularity(granularity),
    );
    let pool = Arc::new(Pool::new(t0()));
    for (name, expiry) in [("a", Some(600)), ("b", None), ("c", Some(0))] {
        pool.add(&id(name), expiry.map(Duration::from_secs));
        let h = rec.handle(&id(name));
        h.record_request(
            12,
            Duration::from_millis(340),
            RequestOutcome::Success,
            t0(),
        );
        h.record_request(
            0,
            Duration::from_millis(20),
            RequestOutcome::Failure(FailureKind::rate_limited(None)),
            t0(),
        );
        h.record_refresh(RefreshResult::Success, Duration::from_millis(80), t0());
        h.record_persistence_failure();
    }
    rec.record_failover(&id("a"), FailureKind::Transient);
    rec.record_token_quirk(&id("a"), oauth_core::TokenQuirk::UnusableExpiresIn);
    pool.with_health(&id("b"), |h, policy, now| {
        h.cool_down_until(now + TimeDelta::seconds(30), policy, now);
    });
    pool.with_health(&id("c"), |h, _, _| h.disable());
    let source: Arc<dyn GaugeSource> = pool.clone();
    rec.attach_gauges(Arc::downgrade(&source));
    (registry, pool)
}

/// The samples of an exposition in either format, sorted, with `le` values as numbers.
fn samples(text: &str) -> Vec<String> {
    let mut out: Vec<_> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let s = crate::openmetrics::parse_sample(l);
            let labels = s
                .labels
                .into_iter()
                .map(|(k, v)| {
                    let v = match v.parse::<f64>() {
                        Ok(n) if k == "le" => format!("{n}"),
                        _ => v,
                    };
                    (k, v)
                })
                .collect::<Vec<_>>();
            format!("{} {labels:?} {}", s.name, s.value)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn prometheus_gets_openmetrics_and_curl_gets_classic_text() {
    let (registry, _pool) = registry(Granularity::Credential);
    let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
        application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let om = encode_scrape(&registry, Some(prometheus), None).expect("encodes");
    assert_eq!(om.format, Format::OpenMetrics);
    assert_eq!(om.content_type, OPENMETRICS_CONTENT_TYPE);
    assert_eq!(om.content_encoding, None);
    let text = String::from_utf8(om.body).expect("utf-8");
    assert_eq!(text, encode_openmetrics(&registry).expect("encodes"));
    let parsed = Exposition::parse(&text);
    assert!(parsed.samples.len() > 50);

    let curl = encode_scrape(&registry, Some("*/*"), None).expect("encodes");
    assert_eq!(curl.format, Format::PrometheusText);
    assert_eq!(curl.content_type, PROMETHEUS_TEXT_CONTENT_TYPE);
    assert!(curl.content_type.starts_with("text/plain; version=0.0.4"));
    let classic = String::from_utf8(curl.body).expect("utf-8");
    assert!(!classic.contains("# EOF"));
    assert!(!classic.contains("# UNIT"));
    assert!(classic.contains("# TYPE oauth_pool_requests_total counter"));
    // Both formats carry the same samples (in another order, with `le="1"` for `le="1.0"`).
    assert_eq!(samples(&text), samples(&classic));
}

#[test]
fn gzip_when_asked_decodes_to_the_same_body() {
    let (registry, _pool) = registry(Granularity::Credential);
    let plain =
        encode_scrape(&registry, Some("application/openmetrics-text"), None).expect("encodes");
    let gz = encode_scrape(
        &registry,
        Some("application/openmetrics-text"),
        Some("gzip, deflate"),
    )
    .expect("encodes");
    assert_eq!(gz.content_encoding, Some("gzip"));
    assert!(gz.body.len() * 3 < plain.body.len(), "compresses");
    let mut decoded = Vec::new();
    GzDecoder::new(&gz.body[..])
        .read_to_end(&mut decoded)
        .expect("valid gzip");
    assert_eq!(decoded, plain.body);
    let refused = encode_scrape(&registry, None, Some("gzip;q=0")).expect("encodes");
    assert_eq!(refused.content_encoding, None);
}

/// Runs `promtool check metrics` on `text`; `None` when promtool is not installed.
fn promtool_check(text: &str) -> Option<(bool, String)> {
    let promtool = ["/usr/bin/promtool", "promtool"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())?;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success() && said.trim().is_empty(), said))
}

/// `promtool check metrics` (Debian's `prometheus` package) finds nothing to say about a scrape
/// of every granularity. It reads the classic text format (on OpenMetrics it misreports HELP
/// lines), which is what the negotiation serves to anything not asking for OpenMetrics. Fails when
/// `CI` is set and promtool is missing; skips loudly otherwise.
#[test]
fn promtool_check_metrics_is_clean() {
    for granularity in [
        Granularity::Credential,
        Granularity::CredentialHistograms,
        Granularity::Provider,
    ] {
        let (registry, _pool) = registry(granularity);
        let scrape = encode_scrape(&registry, None, None).expect("encodes");
        let text = String::from_utf8(scrape.body).expect("utf-8");
        match promtool_check(&text) {
            Some((ok, said)) => assert!(
                ok,
                "promtool check metrics ({granularity:?}):\n{said}\n--- exposition ---\n{text}"
            ),
            None if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
                panic!("promtool is not installed (Debian package `prometheus`); CI must have it")
            }
            None => {
                eprintln!(
                    "\n!!!!! SKIPPED `promtool check metrics`: promtool is not installed \
                     (apt-get install prometheus) !!!!!\n"
                );
                return;
            }
        }
    }
}
