//! The Prometheus recorder, checked by parsing the encoded registry.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::{Credential, CredentialState, ExposeSecret, FailureKind, TokenQuirk};
use oauth_metrics::prometheus_client::registry::Registry;
use oauth_metrics::{
    Buckets, DURATION_BUCKETS, GaugeSource, Granularity, MetricsRecorder, OPENMETRICS_CONTENT_TYPE,
    PrometheusConfig, PrometheusRecorder, RefreshResult, RequestOutcome, encode_openmetrics,
};

use crate::openmetrics::Exposition;
use crate::pool::Pool;
use crate::{id, t0};

const P: &str = "oauth_pool";

const OUTCOMES: [&str; 7] = [
    "success",
    "rate_limited",
    "unauthorized",
    "permanent_auth",
    "misconfigured",
    "transient",
    "request_scoped",
];

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The scripted workload, on credentials `acct-a` and `acct-b` of provider `anthropic`.
fn workload(rec: &PrometheusRecorder) {
    let a = rec.handle(&id("acct-a"));
    let b = rec.handle(&id("acct-b"));
    a.record_request(100, secs(0.04), RequestOutcome::Success, t0());
    a.record_request(200, secs(1.2), RequestOutcome::Success, t0());
    let limited = FailureKind::rate_limited(Some(Duration::from_secs(30)));
    a.record_request(0, secs(0.3), RequestOutcome::Failure(limited), t0());
    b.record_request(
        50,
        secs(700.0),
        RequestOutcome::Failure(FailureKind::Transient),
        t0(),
    );
    a.record_refresh(RefreshResult::Success, secs(0.2), t0());
    b.record_refresh(
        RefreshResult::Failure(FailureKind::PermanentAuth),
        secs(0.06),
        t0(),
    );
    rec.record_failover(&id("acct-b"), FailureKind::Transient);
    b.record_persistence_failure();
    b.record_persistence_failure();
    rec.record_token_quirk(&id("acct-b"), TokenQuirk::UnusableExpiresIn);
}

/// A pool where `acct-a` is active with an hour of token left and `acct-b` cools down for 30 s.
fn pool() -> Arc<Pool> {
    let pool = Arc::new(Pool::new(t0()));
    pool.add(&id("acct-a"), Some(Duration::from_secs(3600)));
    pool.add(&id("acct-b"), None);
    pool.with_health(&id("acct-b"), |h, policy, now| {
        h.cool_down_until(now + TimeDelta::seconds(30), policy, now);
    });
    pool
}

fn attach(rec: &PrometheusRecorder, pool: &Arc<Pool>) {
    let source: Arc<dyn GaugeSource> = pool.clone();
    rec.attach_gauges(Arc::downgrade(&source));
}

fn scrape(registry: &Registry) -> Exposition {
    Exposition::parse(&encode_openmetrics(registry).expect("encodes"))
}

fn encoded_with(config: PrometheusConfig) -> (Exposition, Arc<Pool>) {
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::with_config(&mut registry, "anthropic", config);
    let pool = pool();
    attach(&rec, &pool);
    workload(&rec);
    (scrape(&registry), pool)
}

fn encoded() -> Exposition {
    encoded_with(PrometheusConfig::new()).0
}

fn labels<'a>(cred: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![("provider", "anthropic"), ("credential", cred)];
    l.extend_from_slice(extra);
    l
}

fn provider_labels<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![("provider", "anthropic")];
    l.extend_from_slice(extra);
    l
}

#[test]
fn metadata_lines_follow_prometheus_naming() {
    let e = encoded();
    let expect = [
        (
            "requests",
            "counter",
            None,
            "Requests made with a credential, by outcome.",
        ),
        (
            "tokens",
            "counter",
            None,
            "Tokens consumed by requests made with a credential.",
        ),
        (
            "refreshes",
            "counter",
            None,
            "Token refresh attempts, by result.",
        ),
        (
            "failovers",
            "counter",
            None,
            "Failovers away from a credential, by the failure that caused them.",
        ),
        (
            "persistence_failures",
            "counter",
            None,
            "Refreshed credentials that could not be persisted (each is retried).",
        ),
        (
            "token_response_quirks",
            "counter",
            None,
            "Oddities tolerated in successful token responses (their tokens were kept), by quirk.",
        ),
        (
            "request_duration_seconds",
            "histogram",
            Some("seconds"),
            "Duration of requests made with a credential.",
        ),
        (
            "refresh_duration_seconds",
            "histogram",
            Some("seconds"),
            "Duration of token refresh attempts.",
        ),
        (
            "credential_state",
            "gauge",
            None,
            "Current state of a credential: 1 for the current state, 0 for the others.",
        ),
        (
            "token_expiry_seconds",
            "gauge",
            Some("seconds"),
            "Time until the access token expires (0 once expired; absent while unknown).",
        ),
        (
            "cooldown_remaining_seconds",
            "gauge",
            Some("seconds"),
            "Rate-limit cooldown remaining (0 when not cooling down).",
        ),
        (
            "credentials",
            "gauge",
            None,
            "Credentials of a provider in each state.",
        ),
    ];
    assert_eq!(e.families.len(), expect.len());
    for (name, kind, unit, help) in expect {
        let meta = &e.families[&format!("{P}_{name}")];
        assert_eq!(meta.kind.as_deref(), Some(kind), "{name}");
        assert_eq!(meta.unit.as_deref(), unit, "{name}");
        assert_eq!(meta.help.as_deref(), Some(help), "{name}");
    }
    // Counters are exposed with the _total suffix only.
    assert!(e.samples.iter().all(|s| !s.name.ends_with("_total_total")));
    assert_eq!(e.named(&format!("{P}_requests_total")).count(), 2 * 7);
}

#[test]
fn counters_have_the_exact_values() {
    let e = encoded();
    let req = format!("{P}_requests_total");
    for (cred, outcome, want) in [
        ("acct-a", "success", 2.0),
        ("acct-a", "rate_limited", 1.0),
        ("acct-a", "transient", 0.0),
        ("acct-b", "success", 0.0),
        ("acct-b", "transient", 1.0),
        ("acct-b", "request_scoped", 0.0),
    ] {
        let got = e.value(&req, &labels(cred, &[("outcome", outcome)]));
        assert_eq!(got, want, "{cred} {outcome}");
    }
    let tok = format!("{P}_tokens_total");
    assert_eq!(e.value(&tok, &labels("acct-a", &[])), 300.0);
    assert_eq!(e.value(&tok, &labels("acct-b", &[])), 50.0);
    let rf = format!("{P}_refreshes_total");
    assert_eq!(
        e.value(&rf, &labels("acct-a", &[("result", "success")])),
        1.0
    );
    assert_eq!(
        e.value(&rf, &labels("acct-b", &[("result", "success")])),
        0.0
    );
    assert_eq!(
        e.value(&rf, &labels("acct-b", &[("result", "permanent_auth")])),
        1.0
    );
    assert_eq!(e.named(&rf).count(), 2 * 7);
    // Failovers are per provider by default, every reason at zero but the one seen.
    let fo = format!("{P}_failovers_total");
    assert_eq!(
        e.value(&fo, &provider_labels(&[("reason", "transient")])),
        1.0
    );
    assert_eq!(
        e.value(&fo, &provider_labels(&[("reason", "rate_limited")])),
        0.0
    );
    assert_eq!(e.named(&fo).count(), 6);
    let pf = format!("{P}_persistence_failures_total");
    assert_eq!(e.value(&pf, &labels("acct-b", &[])), 2.0);
    assert_eq!(e.value(&pf, &labels("acct-a", &[])), 0.0);
}

#[test]
fn every_series_of_a_credential_exists_at_zero_from_registration() {
    let mut registry = Registry::with_prefix(P);
    let config = PrometheusConfig::new();
    let per_credential = config.series_per_credential();
    let rec = PrometheusRecorder::with_config(&mut registry, "anthropic", config);
    let pool = Arc::new(Pool::new(t0()));
    pool.add(&id("fresh"), Some(Duration::from_secs(600)));
    attach(&rec, &pool);
    let _handle = rec.handle(&id("fresh"));
    let e = scrape(&registry);
    let mine: Vec<_> = e
        .samples
        .iter()
        .filter(|s| s.labels.get("credential").map(String::as_str) == Some("fresh"))
        .collect();
    assert_eq!(mine.len(), per_credential);
    assert_eq!(per_credential, 24, "the documented count");
    for family in ["requests_total", "refreshes_total"] {
        let label = if family == "requests_total" {
            "outcome"
        } else {
            "result"
        };
        for o in OUTCOMES {
            let v = e.value(&format!("{P}_{family}"), &labels("fresh", &[(label, o)]));
            assert_eq!(v, 0.0, "{family} {o}");
        }
    }
    for reason in &OUTCOMES[1..] {
        let v = e.value(
            &format!("{P}_failovers_total"),
            &provider_labels(&[("reason", reason)]),
        );
        assert_eq!(v, 0.0, "failovers {reason}");
    }
}

/// The test the monitoring issue asks for: two scrapes around a credential's first failure, the
/// failure counter read 0 then 1 (before, the series only appeared at 1, invisible to `rate()`).
#[test]
fn two_scrapes_around_a_first_failure_show_the_counter_rise_from_zero() {
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::new(&mut registry, "anthropic");
    let h = rec.handle(&id("a"));
    h.record_request(10, secs(0.5), RequestOutcome::Success, t0());
    let refresh = format!("{P}_refreshes_total");
    let req = format!("{P}_requests_total");
    let dead = labels("a", &[("result", "permanent_auth")]);
    let failed = labels("a", &[("outcome", "transient")]);

    let before = scrape(&registry);
    assert_eq!(before.value(&refresh, &dead), 0.0);
    assert_eq!(before.value(&req, &failed), 0.0);

    h.record_refresh(
        RefreshResult::Failure(FailureKind::PermanentAuth),
        secs(0.1),
        t0(),
    );
    h.record_request(
        0,
        secs(0.2),
        RequestOutcome::Failure(FailureKind::Transient),
        t0(),
    );
    let after = scrape(&registry);
    assert_eq!(after.value(&refresh, &dead), 1.0);
    assert_eq!(after.value(&req, &failed), 1.0);
}

/// Checks one histogram's buckets against the observations, computed independently.
fn check_histogram(
    e: &Exposition,
    name: &str,
    labels: &[(&str, &str)],
    bounds: &[f64],
    observations: &[f64],
) {
    let count = e.value(&format!("{name}_count"), labels);
    assert_eq!(count, observations.len() as f64, "{name} {labels:?} count");
    let sum = e.value(&format!("{name}_sum"), labels);
    assert!(
        (sum - observations.iter().sum::<f64>()).abs() < 1e-6,
        "{name} sum {sum}"
    );
    let buckets: Vec<(String, f64)> = e
        .named(&format!("{name}_bucket"))
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                && s.labels.len() == labels.len() + 1
        })
        .map(|s| (s.labels["le"].clone(), s.value))
        .collect();
    assert_eq!(buckets.len(), bounds.len() + 1, "{name} buckets + Inf");
    for (le, got) in &buckets {
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("numeric le")
        };
        let want = observations.iter().filter(|o| **o <= bound).count() as f64;
        assert_eq!(*got, want, "{name} {labels:?} le={le}");
    }
    let les: Vec<f64> = buckets
        .iter()
        .filter(|(le, _)| le != "+Inf")
        .map(|(le, _)| le.parse().expect("numeric le"))
        .collect();
    assert_eq!(les, bounds);
}

#[test]
fn histograms_are_per_provider_by_default_with_exact_bucket_counts() {
    let e = encoded();
    let req = format!("{P}_request_duration_seconds");
    let p = provider_labels(&[]);
    check_histogram(&e, &req, &p, &DURATION_BUCKETS, &[0.04, 1.2, 0.3, 700.0]);
    // Spot checks of the cumulative counts, written out.
    let bucket = |le| e.value(&format!("{req}_bucket"), &provider_labels(&[("le", le)]));
    assert_eq!(bucket("0.01"), 0.0);
    assert_eq!(bucket("0.05"), 1.0);
    assert_eq!(bucket("0.5"), 2.0);
    assert_eq!(bucket("2.5"), 3.0);
    assert_eq!((bucket("600.0"), bucket("+Inf")), (3.0, 4.0));
    let rf = format!("{P}_refresh_duration_seconds");
    check_histogram(&e, &rf, &p, &DURATION_BUCKETS, &[0.2, 0.06]);
    assert!(
        e.samples
            .iter()
            .filter(|s| s.name.contains("_duration_seconds"))
            .all(|s| !s.labels.contains_key("credential"))
    );
}

#[test]
fn per_credential_histograms_are_an_option() {
    let config = PrometheusConfig::new().with_granularity(Granularity::CredentialHistograms);
    let (e, _pool) = encoded_with(config.clone());
    let req = format!("{P}_request_duration_seconds");
    let b = DURATION_BUCKETS;
    check_histogram(&e, &req, &labels("acct-a", &[]), &b, &[0.04, 1.2, 0.3]);
    check_histogram(&e, &req, &labels("acct-b", &[]), &b, &[700.0]);
    let rf = format!("{P}_refresh_duration_seconds");
    check_histogram(&e, &rf, &labels("acct-a", &[]), &b, &[0.2]);
    check_histogram(&e, &rf, &labels("acct-b", &[]), &b, &[0.06]);
    // No provider-wide histogram besides them, and failovers per credential.
    assert_eq!(e.named(&format!("{req}_count")).count(), 2);
    let fo = format!("{P}_failovers_total");
    assert_eq!(
        e.value(&fo, &labels("acct-b", &[("reason", "transient")])),
        1.0
    );
    assert_eq!(
        e.value(&fo, &labels("acct-a", &[("reason", "transient")])),
        0.0
    );
    for cred in ["acct-a", "acct-b"] {
        let n = e
            .samples
            .iter()
            .filter(|s| s.labels.get("credential").map(String::as_str) == Some(cred))
            .count();
        let want = config.series_per_credential() - usize::from(cred == "acct-b");
        assert_eq!(n, want, "{cred}: acct-b has no known expiry");
    }
}

/// A credential's two histograms and its failovers share one block of cells: with bounds of
/// different lengths, each still lands in its own row.
#[test]
fn per_credential_histograms_with_custom_buckets_keep_their_rows_apart() {
    let request = [0.001, 0.1, 10.0];
    let refresh = Buckets::exponential(0.05, 4.0, 5).expect("valid");
    let config = PrometheusConfig::new()
        .with_granularity(Granularity::CredentialHistograms)
        .with_request_buckets(Buckets::new(request).expect("valid"))
        .with_refresh_buckets(refresh.clone());
    let (e, _pool) = encoded_with(config);
    let req = format!("{P}_request_duration_seconds");
    check_histogram(
        &e,
        &req,
        &labels("acct-a", &[]),
        &request,
        &[0.04, 1.2, 0.3],
    );
    check_histogram(&e, &req, &labels("acct-b", &[]), &request, &[700.0]);
    let rf = format!("{P}_refresh_duration_seconds");
    check_histogram(&e, &rf, &labels("acct-a", &[]), refresh.bounds(), &[0.2]);
    check_histogram(&e, &rf, &labels("acct-b", &[]), refresh.bounds(), &[0.06]);
    let fo = format!("{P}_failovers_total");
    for (cred, transient) in [("acct-a", 0.0), ("acct-b", 1.0)] {
        assert_eq!(
            e.value(&fo, &labels(cred, &[("reason", "transient")])),
            transient
        );
        assert_eq!(
            e.value(&fo, &labels(cred, &[("reason", "rate_limited")])),
            0.0
        );
    }
}

#[test]
fn custom_buckets_are_used() {
    let bounds = [0.001, 0.1, 10.0];
    let config = PrometheusConfig::new()
        .with_request_buckets(Buckets::new(bounds).expect("valid"))
        .with_refresh_buckets(Buckets::exponential(0.05, 4.0, 3).expect("valid"));
    let (e, _pool) = encoded_with(config);
    let p = provider_labels(&[]);
    check_histogram(
        &e,
        &format!("{P}_request_duration_seconds"),
        &p,
        &bounds,
        &[0.04, 1.2, 0.3, 700.0],
    );
    check_histogram(
        &e,
        &format!("{P}_refresh_duration_seconds"),
        &p,
        &[0.05, 0.2, 0.8],
        &[0.2, 0.06],
    );
}

#[test]
fn provider_granularity_has_no_credential_label_and_counts_states() {
    let config = PrometheusConfig::new().with_granularity(Granularity::Provider);
    let per_provider = config.series_per_provider();
    let (e, pool) = encoded_with(config);
    assert!(
        e.samples
            .iter()
            .all(|s| !s.labels.contains_key("credential"))
    );
    assert_eq!(e.samples.len(), per_provider);
    let req = format!("{P}_requests_total");
    assert_eq!(
        e.value(&req, &provider_labels(&[("outcome", "success")])),
        2.0
    );
    assert_eq!(
        e.value(&req, &provider_labels(&[("outcome", "transient")])),
        1.0
    );
    assert_eq!(
        e.value(&req, &provider_labels(&[("outcome", "unauthorized")])),
        0.0
    );
    assert_eq!(
        e.value(&format!("{P}_tokens_total"), &provider_labels(&[])),
        350.0
    );
    assert_eq!(
        e.value(
            &format!("{P}_persistence_failures_total"),
            &provider_labels(&[])
        ),
        2.0
    );
    let states = format!("{P}_credentials");
    for (state, want) in [("active", 1.0), ("cooling_down", 1.0), ("disabled", 0.0)] {
        assert_eq!(
            e.value(&states, &provider_labels(&[("state", state)])),
            want
        );
    }
    // The series count does not grow with the pool.
    for i in 0..50 {
        pool.add(&id(&format!("more-{i}")), None);
    }
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::with_config(
        &mut registry,
        "anthropic",
        PrometheusConfig::new().with_granularity(Granularity::Provider),
    );
    attach(&rec, &pool);
    for i in 0..50 {
        rec.handle(&id(&format!("more-{i}")));
    }
    let e = scrape(&registry);
    assert_eq!(e.samples.len(), per_provider);
    assert_eq!(
        e.value(&states, &provider_labels(&[("state", "active")])),
        51.0
    );
}

#[test]
fn labels_are_ids_and_fixed_names_only_and_no_secret_appears() {
    let now = t0();
    let cred = Credential::new("acct-a", "sk-ant-oat-SECRET-ACCESS", now)
        .expect("credential")
        .with_refresh_token("sk-ant-ort-SECRET-REFRESH")
        .with_client("client-x", Some("CLIENT-SECRET-VALUE".into()));
    for granularity in [
        Granularity::Credential,
        Granularity::CredentialHistograms,
        Granularity::Provider,
    ] {
        let mut registry = Registry::with_prefix(P);
        let rec = PrometheusRecorder::with_config(
            &mut registry,
            "anthropic",
            PrometheusConfig::new().with_granularity(granularity),
        );
        let pool = pool();
        attach(&rec, &pool);
        let h = rec.handle(&cred.id);
        h.record_request(5, secs(0.1), RequestOutcome::Success, now);
        workload(&rec);
        let text = encode_openmetrics(&registry).expect("encodes");
        for secret in [
            cred.access_token.expose_secret(),
            "sk-ant-ort-SECRET-REFRESH",
            "CLIENT-SECRET-VALUE",
            "client-x",
        ] {
            assert!(!text.contains(secret), "{secret} leaked");
        }
        let e = Exposition::parse(&text);
        let mut allowed: BTreeSet<String> = ["anthropic", "acct-a", "acct-b", "+Inf"]
            .map(String::from)
            .into();
        allowed.extend(OUTCOMES.iter().map(|s| (*s).to_owned()));
        allowed.extend(CredentialState::ALL.iter().map(|s| s.as_str().to_owned()));
        allowed.extend(TokenQuirk::ALL.iter().map(|q| q.as_str().to_owned()));
        let label_names: BTreeSet<&str> = [
            "provider",
            "credential",
            "outcome",
            "result",
            "reason",
            "state",
            "quirk",
            "le",
        ]
        .into();
        for s in &e.samples {
            for (k, v) in &s.labels {
                assert!(label_names.contains(k.as_str()), "label {k}");
                if k == "le" && v != "+Inf" {
                    assert!(v.parse::<f64>().is_ok(), "le {v}");
                } else {
                    assert!(allowed.contains(v), "label value {v:?} on {}", s.name);
                }
            }
            assert_eq!(
                s.labels.get("provider").map(String::as_str),
                Some("anthropic")
            );
        }
    }
}

#[test]
fn remove_deletes_every_series_of_the_credential() {
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::new(&mut registry, "anthropic");
    let pool = pool();
    attach(&rec, &pool);
    workload(&rec);
    let before = scrape(&registry);
    let of_b = |e: &Exposition| {
        e.samples
            .iter()
            .filter(|s| s.labels.get("credential").map(String::as_str) == Some("acct-b"))
            .count()
    };
    assert_eq!(of_b(&before), 23, "24 less the unknown expiry");
    rec.remove(&id("acct-b"));
    pool.remove(&id("acct-b"));
    let e = scrape(&registry);
    assert_eq!(of_b(&e), 0);
    assert!(
        e.samples
            .iter()
            .any(|s| s.labels.get("credential").map(String::as_str) == Some("acct-a"))
    );
    // A handle made again starts from zero, without panicking on the old one.
    let b = rec.handle(&id("acct-b"));
    b.record_request(1, secs(0.1), RequestOutcome::Success, t0());
    let e = scrape(&registry);
    let req = format!("{P}_requests_total");
    assert_eq!(
        e.value(&req, &labels("acct-b", &[("outcome", "success")])),
        1.0
    );
    assert_eq!(
        e.value(&req, &labels("acct-b", &[("outcome", "transient")])),
        0.0
    );
    assert_eq!(
        e.value(&req, &labels("acct-a", &[("outcome", "success")])),
        2.0
    );
}

#[test]
fn handles_for_the_same_id_share_series() {
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::new(&mut registry, "anthropic");
    let h1 = rec.handle(&id("a"));
    let h2 = rec.handle(&id("a"));
    h1.record_request(1, secs(0.1), RequestOutcome::Success, t0());
    h2.record_request(1, secs(0.1), RequestOutcome::Success, t0());
    let e = scrape(&registry);
    let lab = [("provider", "anthropic"), ("credential", "a")];
    assert_eq!(e.value(&format!("{P}_tokens_total"), &lab), 2.0);
}

#[test]
fn providers_share_families_and_sub_registry_prefixes_work() {
    let mut registry = Registry::default();
    let rec = PrometheusRecorder::new(registry.sub_registry_with_prefix("llm_pool"), "anthropic");
    let openai = rec.for_provider("openai");
    assert_eq!(openai.provider(), "openai");
    assert_eq!(rec.for_provider("openai").provider(), "openai");
    rec.handle(&id("a"))
        .record_request(1, secs(0.1), RequestOutcome::Success, t0());
    openai
        .handle(&id("a"))
        .record_request(2, secs(0.1), RequestOutcome::Success, t0());
    // A second recorder for the same provider shares its series.
    rec.for_provider("openai").handle(&id("a")).record_request(
        3,
        secs(0.1),
        RequestOutcome::Success,
        t0(),
    );
    let e = scrape(&registry);
    assert_eq!(
        e.families["llm_pool_tokens"].kind.as_deref(),
        Some("counter")
    );
    let tok = "llm_pool_tokens_total";
    assert_eq!(
        e.value(tok, &[("provider", "anthropic"), ("credential", "a")]),
        1.0
    );
    assert_eq!(
        e.value(tok, &[("provider", "openai"), ("credential", "a")]),
        5.0
    );
    assert!(OPENMETRICS_CONTENT_TYPE.starts_with("application/openmetrics-text; version=1.0.0"));
}

/// The stale-gauge bug of the monitoring issue: a cooldown ends, nothing is recorded, and the
/// next scrape says active with no cooldown left, as the health snapshot does.
#[test]
fn gauges_are_read_at_scrape_time_and_agree_with_health() {
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::new(&mut registry, "anthropic");
    let pool = Arc::new(Pool::new(t0()));
    pool.add(&id("a"), Some(Duration::from_secs(100)));
    pool.add(&id("quiet"), Some(Duration::from_secs(50)));
    attach(&rec, &pool);
    let _a = rec.handle(&id("a"));
    pool.with_health(&id("a"), |h, policy, now| {
        h.cool_down_until(now + TimeDelta::seconds(3), policy, now);
    });
    let st = format!("{P}_credential_state");
    let exp = format!("{P}_token_expiry_seconds");
    let cd = format!("{P}_cooldown_remaining_seconds");
    let count = format!("{P}_credentials");
    let state_of = |e: &Exposition, cred: &str| -> Vec<&'static str> {
        CredentialState::ALL
            .iter()
            .filter(|s| e.value(&st, &labels(cred, &[("state", s.as_str())])) == 1.0)
            .map(CredentialState::as_str)
            .collect()
    };

    let first = scrape(&registry);
    assert_eq!(state_of(&first, "a"), ["cooling_down"]);
    assert_eq!(first.value(&cd, &labels("a", &[])), 3.0);
    assert_eq!(first.value(&exp, &labels("a", &[])), 100.0);
    // A credential that never changed has its state and expiry too (the issue saw none).
    assert_eq!(state_of(&first, "quiet"), ["active"]);
    assert_eq!(first.value(&exp, &labels("quiet", &[])), 50.0);
    assert_eq!(
        first.value(&count, &provider_labels(&[("state", "cooling_down")])),
        1.0
    );

    pool.clock.advance(Duration::from_secs(1));
    let second = scrape(&registry);
    assert_eq!(second.value(&cd, &labels("a", &[])), 2.0);
    assert_eq!(second.value(&exp, &labels("a", &[])), 99.0);

    pool.clock.advance(Duration::from_secs(2)); // the cooldown ends; nothing is recorded
    let third = scrape(&registry);
    let health = {
        let mut snap = None;
        pool.with_health(&id("a"), |h, policy, now| {
            snap = Some(h.snapshot(policy, now))
        });
        snap.expect("snapshot")
    };
    assert_eq!(health.state, CredentialState::Active);
    assert_eq!(state_of(&third, "a"), [health.state.as_str()]);
    assert_eq!(third.value(&cd, &labels("a", &[])), 0.0);
    assert_eq!(third.value(&exp, &labels("a", &[])), 97.0);
    assert_eq!(
        third.value(&count, &provider_labels(&[("state", "active")])),
        2.0
    );

    // Expired tokens read 0, not negative.
    pool.clock.advance(Duration::from_secs(1000));
    assert_eq!(scrape(&registry).value(&exp, &labels("a", &[])), 0.0);
}

#[test]
fn gauges_go_when_the_pool_is_dropped_and_a_new_source_replaces_the_old() {
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::new(&mut registry, "anthropic");
    let pool = pool();
    attach(&rec, &pool);
    assert!(
        scrape(&registry)
            .families
            .contains_key(&format!("{P}_credential_state"))
    );
    drop(pool);
    let e = scrape(&registry);
    assert!(!e.families.contains_key(&format!("{P}_credential_state")));
    assert!(!e.families.contains_key(&format!("{P}_credentials")));
    // A new source is read from its attachment on.
    let other = Arc::new(Pool::new(t0()));
    other.add(&id("z"), None);
    attach(&rec, &other);
    let e = scrape(&registry);
    assert_eq!(
        e.value(
            &format!("{P}_credential_state"),
            &labels("z", &[("state", "active")])
        ),
        1.0
    );
    // The weak reference does not keep the pool alive.
    let weak: Weak<Pool> = Arc::downgrade(&other);
    drop(other);
    assert!(weak.upgrade().is_none());
}

/// The recorder no longer takes pushed gauges: `record_state` changes nothing.
#[test]
fn pushed_state_is_ignored() {
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::new(&mut registry, "anthropic");
    let h = rec.handle(&id("a"));
    h.record_state(CredentialState::Disabled, Some(secs(5.0)), Some(secs(3.0)));
    let e = scrape(&registry);
    assert!(!e.families.contains_key(&format!("{P}_credential_state")));
    assert!(e.samples.iter().all(|s| !s.name.contains("expiry")));
}

#[test]
fn failures_of_every_kind_count_under_their_label() {
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::new(&mut registry, "anthropic");
    let h = rec.handle(&id("a"));
    let kinds = [
        FailureKind::rate_limited(None),
        FailureKind::Unauthorized,
        FailureKind::PermanentAuth,
        FailureKind::Misconfigured,
        FailureKind::Transient,
        FailureKind::RequestScoped,
    ];
    for (n, kind) in kinds.iter().enumerate() {
        for _ in 0..=n {
            h.record_request(0, secs(0.01), RequestOutcome::Failure(*kind), t0());
            h.record_refresh(RefreshResult::Failure(*kind), secs(0.01), t0());
            rec.record_failover(&id("a"), *kind);
        }
    }
    let e = scrape(&registry);
    for (n, kind) in kinds.iter().enumerate() {
        let want = (n + 1) as f64;
        let k = kind.as_str();
        assert_eq!(
            e.value(
                &format!("{P}_requests_total"),
                &labels("a", &[("outcome", k)])
            ),
            want
        );
        assert_eq!(
            e.value(
                &format!("{P}_refreshes_total"),
                &labels("a", &[("result", k)])
            ),
            want
        );
        assert_eq!(
            e.value(
                &format!("{P}_failovers_total"),
                &provider_labels(&[("reason", k)])
            ),
            want
        );
    }
}

/// Recording from several threads at once into shared handles loses nothing (the counters are
/// sharded per thread; the scrape sums the shards).
#[test]
fn concurrent_recording_sums_exactly() {
    for shards in [1, 2, 8] {
        let mut registry = Registry::with_prefix(P);
        let rec = PrometheusRecorder::with_config(
            &mut registry,
            "anthropic",
            PrometheusConfig::new().with_shards(shards),
        );
        let handles: Vec<_> = ["a", "b", "c"].iter().map(|c| rec.handle(&id(c))).collect();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let handles = &handles;
                s.spawn(move || {
                    for i in 0..3000u64 {
                        let h = &handles[usize::try_from(i % 3).expect("small")];
                        let outcome = if (i + t) % 5 == 0 {
                            RequestOutcome::Failure(FailureKind::Transient)
                        } else {
                            RequestOutcome::Success
                        };
                        h.record_request(2, secs(0.02), outcome, t0());
                    }
                });
            }
        });
        let e = scrape(&registry);
        let mut requests = 0.0;
        let mut failures = 0.0;
        for c in ["a", "b", "c"] {
            requests += e.value(
                &format!("{P}_requests_total"),
                &labels(c, &[("outcome", "success")]),
            );
            failures += e.value(
                &format!("{P}_requests_total"),
                &labels(c, &[("outcome", "transient")]),
            );
            assert_eq!(
                e.value(&format!("{P}_tokens_total"), &labels(c, &[])),
                2.0 * 4000.0
            );
        }
        assert_eq!(requests + failures, 12_000.0);
        assert_eq!(failures, 4.0 * 600.0);
        assert_eq!(
            e.value(
                &format!("{P}_request_duration_seconds_count"),
                &provider_labels(&[])
            ),
            12_000.0
        );
    }
}

/// Issue 13: a tolerated token-response quirk reaches Prometheus. One counter per provider and
/// quirk, every quirk's series at 0 from the recorder's creation (before any credential), in
/// every granularity; counted per provider whichever credential it came from; never a
/// `credential` label; providers sharing the families count apart.
#[test]
fn token_response_quirks_exist_at_zero_per_provider_and_count() {
    let name = format!("{P}_token_response_quirks_total");
    for granularity in [
        Granularity::Credential,
        Granularity::CredentialHistograms,
        Granularity::Provider,
    ] {
        let mut registry = Registry::with_prefix(P);
        let rec = PrometheusRecorder::with_config(
            &mut registry,
            "anthropic",
            PrometheusConfig::new().with_granularity(granularity),
        );
        let openai = rec.for_provider("openai");
        let e = scrape(&registry);
        assert_eq!(
            e.families[&format!("{P}_token_response_quirks")]
                .kind
                .as_deref(),
            Some("counter")
        );
        assert_eq!(
            e.named(&name).count(),
            2 * TokenQuirk::ALL.len(),
            "{granularity:?}"
        );
        for q in TokenQuirk::ALL {
            for p in ["anthropic", "openai"] {
                let v = e.value(&name, &[("provider", p), ("quirk", q.as_str())]);
                assert_eq!(v, 0.0, "{granularity:?} {p} {q:?}");
            }
        }

        let (a, b) = (rec.handle(&id("a")), rec.handle(&id("b")));
        rec.record_token_quirk(&id("a"), TokenQuirk::UnusableExpiresIn);
        rec.record_token_quirk(&id("b"), TokenQuirk::UnusableExpiresIn);
        rec.record_token_quirk(&id("b"), TokenQuirk::OddScope);
        openai.record_token_quirk(&id("a"), TokenQuirk::ExpiryClamped);
        // A credential that left the pool does not take the provider's counts with it.
        rec.remove(&id("b"));
        let e = scrape(&registry);
        for (p, q, want) in [
            ("anthropic", TokenQuirk::UnusableExpiresIn, 2.0),
            ("anthropic", TokenQuirk::OddScope, 1.0),
            ("anthropic", TokenQuirk::ExpiryClamped, 0.0),
            ("anthropic", TokenQuirk::NotJsonContentType, 0.0),
            ("openai", TokenQuirk::ExpiryClamped, 1.0),
            ("openai", TokenQuirk::UnusableExpiresIn, 0.0),
        ] {
            let v = e.value(&name, &[("provider", p), ("quirk", q.as_str())]);
            assert_eq!(v, want, "{granularity:?} {p} {q:?}");
        }
        assert!(e.named(&name).all(|s| !s.labels.contains_key("credential")));
        drop((a, b));
    }
}

/// Issue 18: tokens a streamed answer reports after its request was recorded are added to
/// `tokens_total` without counting a request, in every granularity.
#[test]
fn late_tokens_count_without_a_request() {
    for granularity in [
        Granularity::Credential,
        Granularity::CredentialHistograms,
        Granularity::Provider,
    ] {
        let mut registry = Registry::with_prefix(P);
        let rec = PrometheusRecorder::with_config(
            &mut registry,
            "anthropic",
            PrometheusConfig::new().with_granularity(granularity),
        );
        let h = rec.handle(&id("a"));
        h.record_request(0, secs(0.2), RequestOutcome::Success, t0());
        h.record_tokens(1234);
        h.record_tokens(0);
        let e = scrape(&registry);
        let per_credential = granularity != Granularity::Provider;
        let who = if per_credential {
            labels("a", &[])
        } else {
            provider_labels(&[])
        };
        assert_eq!(
            e.value(&format!("{P}_tokens_total"), &who),
            1234.0,
            "{granularity:?}"
        );
        let mut ok = who.clone();
        ok.push(("outcome", "success"));
        assert_eq!(
            e.value(&format!("{P}_requests_total"), &ok),
            1.0,
            "{granularity:?}"
        );
        let requests: f64 = e
            .named(&format!("{P}_requests_total"))
            .map(|s| s.value)
            .sum();
        assert_eq!(
            requests, 1.0,
            "{granularity:?}: one request, however many token reports"
        );
    }
}
