//! The Prometheus recorder, checked by parsing the encoded registry.

use std::collections::BTreeSet;
use std::time::Duration;

use oauth_core::{Credential, CredentialState, ExposeSecret, FailureKind};
use oauth_metrics::prometheus_client::registry::Registry;
use oauth_metrics::{
    DURATION_BUCKETS, MetricsRecorder, OPENMETRICS_CONTENT_TYPE, PrometheusRecorder, RefreshResult,
    RequestOutcome, encode_openmetrics,
};

use crate::openmetrics::Exposition;
use crate::{id, t0};

const P: &str = "oauth_pool";

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
    a.record_state(CredentialState::Active, Some(secs(3600.0)), None);
    b.record_state(CredentialState::CoolingDown, None, Some(secs(30.0)));
}

fn encoded() -> Exposition {
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::new(&mut registry, "anthropic");
    workload(&rec);
    Exposition::parse(&encode_openmetrics(&registry).expect("encodes"))
}

fn labels<'a>(cred: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![("provider", "anthropic"), ("credential", cred)];
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
            "Time until the access token expires (NaN when unknown).",
        ),
        (
            "cooldown_remaining_seconds",
            "gauge",
            Some("seconds"),
            "Rate-limit cooldown remaining (0 when not cooling down).",
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
    assert_eq!(e.named(&format!("{P}_requests_total")).count(), 4);
}

#[test]
fn counters_have_the_exact_values() {
    let e = encoded();
    let req = format!("{P}_requests_total");
    assert_eq!(
        e.value(&req, &labels("acct-a", &[("outcome", "success")])),
        2.0
    );
    assert_eq!(
        e.value(&req, &labels("acct-a", &[("outcome", "rate_limited")])),
        1.0
    );
    assert_eq!(
        e.value(&req, &labels("acct-b", &[("outcome", "success")])),
        0.0
    );
    assert_eq!(
        e.value(&req, &labels("acct-b", &[("outcome", "transient")])),
        1.0
    );
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
    assert_eq!(e.named(&rf).count(), 3);
    let fo = format!("{P}_failovers_total");
    assert_eq!(
        e.value(&fo, &labels("acct-b", &[("reason", "transient")])),
        1.0
    );
    assert_eq!(e.named(&fo).count(), 1);
    let pf = format!("{P}_persistence_failures_total");
    assert_eq!(e.value(&pf, &labels("acct-b", &[])), 2.0);
    assert_eq!(e.value(&pf, &labels("acct-a", &[])), 0.0);
}

/// Checks one histogram's buckets against the observations, computed independently.
fn check_histogram(e: &Exposition, name: &str, cred: &str, observations: &[f64]) {
    let count = e.value(&format!("{name}_count"), &labels(cred, &[]));
    assert_eq!(count, observations.len() as f64, "{name} {cred} count");
    let sum = e.value(&format!("{name}_sum"), &labels(cred, &[]));
    assert!(
        (sum - observations.iter().sum::<f64>()).abs() < 1e-9,
        "{name} sum {sum}"
    );
    let buckets: Vec<(String, f64)> = e
        .named(&format!("{name}_bucket"))
        .filter(|s| s.labels["credential"] == cred)
        .map(|s| (s.labels["le"].clone(), s.value))
        .collect();
    assert_eq!(
        buckets.len(),
        DURATION_BUCKETS.len() + 1,
        "{name} buckets + Inf"
    );
    for (le, got) in &buckets {
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("numeric le")
        };
        let want = observations.iter().filter(|o| **o <= bound).count() as f64;
        assert_eq!(*got, want, "{name} {cred} le={le}");
    }
    let les: Vec<f64> = buckets
        .iter()
        .filter(|(le, _)| le != "+Inf")
        .map(|(le, _)| le.parse().expect("numeric le"))
        .collect();
    assert_eq!(les, DURATION_BUCKETS);
}

#[test]
fn histograms_have_the_exact_bucket_counts() {
    let e = encoded();
    let req = format!("{P}_request_duration_seconds");
    check_histogram(&e, &req, "acct-a", &[0.04, 1.2, 0.3]);
    check_histogram(&e, &req, "acct-b", &[700.0]);
    // Spot checks of the cumulative counts, written out.
    let bucket = |le| e.value(&format!("{req}_bucket"), &labels("acct-a", &[("le", le)]));
    assert_eq!(bucket("0.05"), 1.0);
    assert_eq!(bucket("0.5"), 2.0);
    assert_eq!(bucket("1.0"), 2.0);
    assert_eq!(bucket("2.5"), 3.0);
    let b_inf = e.value(
        &format!("{req}_bucket"),
        &labels("acct-b", &[("le", "+Inf")]),
    );
    let b_600 = e.value(
        &format!("{req}_bucket"),
        &labels("acct-b", &[("le", "600.0")]),
    );
    assert_eq!((b_600, b_inf), (0.0, 1.0));
    let rf = format!("{P}_refresh_duration_seconds");
    check_histogram(&e, &rf, "acct-a", &[0.2]);
    check_histogram(&e, &rf, "acct-b", &[0.06]);
}

#[test]
fn gauges_show_state_expiry_and_cooldown() {
    let e = encoded();
    let st = format!("{P}_credential_state");
    for (cred, current) in [("acct-a", "active"), ("acct-b", "cooling_down")] {
        for s in CredentialState::ALL {
            let want = if s.as_str() == current { 1.0 } else { 0.0 };
            assert_eq!(e.value(&st, &labels(cred, &[("state", s.as_str())])), want);
        }
    }
    let exp = format!("{P}_token_expiry_seconds");
    assert_eq!(e.value(&exp, &labels("acct-a", &[])), 3600.0);
    assert!(
        e.value(&exp, &labels("acct-b", &[])).is_nan(),
        "unknown expiry"
    );
    let cd = format!("{P}_cooldown_remaining_seconds");
    assert_eq!(e.value(&cd, &labels("acct-a", &[])), 0.0);
    assert_eq!(e.value(&cd, &labels("acct-b", &[])), 30.0);
}

#[test]
fn labels_are_ids_and_fixed_names_only_and_no_secret_appears() {
    let now = t0();
    let cred = Credential::new("acct-a", "sk-ant-oat-SECRET-ACCESS", now)
        .expect("credential")
        .with_refresh_token("sk-ant-ort-SECRET-REFRESH")
        .with_client("client-x", Some("CLIENT-SECRET-VALUE".into()));
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::new(&mut registry, "anthropic");
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
    let mut allowed: BTreeSet<String> = ["anthropic", "acct-a", "acct-b", "success", "+Inf"]
        .map(String::from)
        .into();
    allowed.extend(CredentialState::ALL.iter().map(|s| s.as_str().to_owned()));
    allowed.extend(
        [
            FailureKind::rate_limited(None),
            FailureKind::Unauthorized,
            FailureKind::PermanentAuth,
            FailureKind::Misconfigured,
            FailureKind::Transient,
            FailureKind::RequestScoped,
        ]
        .iter()
        .map(|k| k.as_str().to_owned()),
    );
    let label_names: BTreeSet<&str> = [
        "provider",
        "credential",
        "outcome",
        "result",
        "reason",
        "state",
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
        assert!(s.labels.contains_key("credential"));
    }
}

#[test]
fn remove_deletes_every_series_of_the_credential() {
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::new(&mut registry, "anthropic");
    workload(&rec);
    rec.remove(&id("acct-b"));
    let e = Exposition::parse(&encode_openmetrics(&registry).expect("encodes"));
    assert!(e.samples.iter().all(|s| s.labels["credential"] == "acct-a"));
    assert!(
        e.samples
            .iter()
            .any(|s| s.name.ends_with("_requests_total"))
    );
    // A handle made again starts from zero, without panicking on the old one.
    let b = rec.handle(&id("acct-b"));
    b.record_request(1, secs(0.1), RequestOutcome::Success, t0());
    let e = Exposition::parse(&encode_openmetrics(&registry).expect("encodes"));
    let req = format!("{P}_requests_total");
    assert_eq!(
        e.value(&req, &labels("acct-b", &[("outcome", "success")])),
        1.0
    );
    assert_eq!(
        e.value(&req, &labels("acct-a", &[("outcome", "success")])),
        2.0
    );
}

#[test]
fn handles_for_the_same_id_share_series_and_keep_the_expiry() {
    let mut registry = Registry::with_prefix(P);
    let rec = PrometheusRecorder::new(&mut registry, "anthropic");
    let h1 = rec.handle(&id("a"));
    h1.record_state(CredentialState::Active, Some(Duration::ZERO), None);
    let h2 = rec.handle(&id("a"));
    h1.record_request(1, secs(0.1), RequestOutcome::Success, t0());
    h2.record_request(1, secs(0.1), RequestOutcome::Success, t0());
    let e = Exposition::parse(&encode_openmetrics(&registry).expect("encodes"));
    let lab = [("provider", "anthropic"), ("credential", "a")];
    assert_eq!(e.value(&format!("{P}_tokens_total"), &lab), 2.0);
    // An expired token (zero) is not reset to "unknown" by a second handle.
    assert_eq!(e.value(&format!("{P}_token_expiry_seconds"), &lab), 0.0);
}

#[test]
fn providers_share_families_and_sub_registry_prefixes_work() {
    let mut registry = Registry::default();
    let rec = PrometheusRecorder::new(registry.sub_registry_with_prefix("llm_pool"), "anthropic");
    let openai = rec.for_provider("openai");
    assert_eq!(openai.provider(), "openai");
    rec.handle(&id("a"))
        .record_request(1, secs(0.1), RequestOutcome::Success, t0());
    openai
        .handle(&id("a"))
        .record_request(2, secs(0.1), RequestOutcome::Success, t0());
    let e = Exposition::parse(&encode_openmetrics(&registry).expect("encodes"));
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
        2.0
    );
    assert!(OPENMETRICS_CONTENT_TYPE.starts_with("application/openmetrics-text; version=1.0.0"));
}
