//! The Prometheus recorder, on `prometheus-client`, and OpenMetrics text encoding.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, CredentialState, FailureKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::recorder::{CredentialRecorder, MetricsRecorder, RefreshResult, RequestOutcome};

/// The `Content-Type` to serve [`encode_openmetrics`]' output with. Prometheus 3 fails scrapes
/// without a valid one.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Histogram bucket upper bounds, in seconds, for request and refresh durations: from 50 ms (a
/// cached or tiny completion) to 10 minutes (a long generation).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Encodes `registry` as OpenMetrics 1.0 text (with `# EOF`); serve it with
/// [`OPENMETRICS_CONTENT_TYPE`].
///
/// # Errors
/// Only when a metric's own encoding fails (`prometheus-client` reports [`std::fmt::Error`]).
pub fn encode_openmetrics(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// The failure kinds known when this crate was built, in a fixed order; a handle keeps one lazily
/// created counter per kind.
const FAILURE_KINDS: [FailureKind; 6] = [
    FailureKind::RateLimited { retry_after: None },
    FailureKind::Unauthorized,
    FailureKind::PermanentAuth,
    FailureKind::Misconfigured,
    FailureKind::Transient,
    FailureKind::RequestScoped,
];

fn failure_index(kind: FailureKind) -> Option<usize> {
    FAILURE_KINDS
        .iter()
        .position(|k| k.as_str() == kind.as_str())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    provider: String,
    credential: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    provider: String,
    credential: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    provider: String,
    credential: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    provider: String,
    credential: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    provider: String,
    credential: String,
    state: &'static str,
}

type SecondsGauge = Gauge<f64, AtomicU64>;
type HistogramFamily = Family<CredentialLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The metric families, shared (they are reference-counted) by every recorder made with
/// [`PrometheusRecorder::for_provider`].
#[derive(Debug, Clone)]
struct Families {
    requests: Family<OutcomeLabels, Counter>,
    tokens: Family<CredentialLabels, Counter>,
    refreshes: Family<ResultLabels, Counter>,
    failovers: Family<ReasonLabels, Counter>,
    persistence_failures: Family<CredentialLabels, Counter>,
    request_duration: HistogramFamily,
    refresh_duration: HistogramFamily,
    state: Family<StateLabels, Gauge>,
    token_expiry: Family<CredentialLabels, SecondsGauge>,
    cooldown_remaining: Family<CredentialLabels, SecondsGauge>,
}

/// Records into a `prometheus-client` [`Registry`], following the Prometheus naming conventions.
///
/// Metric names below are relative to the registry's prefix: the application chooses it with
/// [`Registry::with_prefix`] (`Registry::with_prefix("oauth_pool")` gives
/// `oauth_pool_requests_total`) or registers into
/// [`Registry::sub_registry_with_prefix`]. Every series has the labels `provider` and
/// `credential` (the configured [`CredentialId`]; never a token or an e-mail address).
///
/// | name | type | extra labels |
/// |---|---|---|
/// | `requests_total` | counter | `outcome`: `success` or the [`FailureKind::as_str`] name |
/// | `tokens_total` | counter | |
/// | `refreshes_total` | counter | `result`: `success` or the failure kind |
/// | `failovers_total` | counter | `reason`: the failure kind that caused the failover |
/// | `persistence_failures_total` | counter | refreshed credentials the store or provider refused (each is retried) |
/// | `request_duration_seconds` | histogram ([`DURATION_BUCKETS`]) | |
/// | `refresh_duration_seconds` | histogram ([`DURATION_BUCKETS`]) | |
/// | `credential_state` | gauge | `state`: one series per [`CredentialState`], 1 for the current state and 0 for the others |
/// | `token_expiry_seconds` | gauge | seconds until the access token expires; `NaN` while unknown |
/// | `cooldown_remaining_seconds` | gauge | rate-limit cooldown left, 0 when none |
///
/// Series for a credential are created when its [`handle`](MetricsRecorder::handle) is made (the
/// `success` counters, tokens, histograms and gauges, so they start at zero) and on first use
/// (one series per failure kind seen), and are deleted by [`remove`](MetricsRecorder::remove).
/// The handle caches its metrics (cheap clones of shared atomics), so recording does no label
/// lookup. Register one recorder per registry; for several providers use
/// [`for_provider`](Self::for_provider), which shares the metric families.
///
/// ```
/// use std::time::Duration;
/// use oauth_core::CredentialId;
/// use oauth_metrics::{MetricsRecorder, PrometheusRecorder, RequestOutcome, encode_openmetrics};
/// use prometheus_client::registry::Registry;
///
/// let mut registry = Registry::with_prefix("oauth_pool");
/// let recorder = PrometheusRecorder::new(&mut registry, "anthropic");
/// let handle = recorder.handle(&CredentialId::new("team")?);
/// handle.record_request(120, Duration::from_millis(800), RequestOutcome::Success, chrono::Utc::now());
/// let text = encode_openmetrics(&registry)?;
/// assert!(text.contains(r#"oauth_pool_requests_total{provider="anthropic",credential="team",outcome="success"} 1"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct PrometheusRecorder {
    provider: String,
    families: Families,
}

impl PrometheusRecorder {
    /// Registers the metric families into `registry` and records with `provider` as the
    /// `provider` label.
    pub fn new(registry: &mut Registry, provider: &str) -> Self {
        let families = Families {
            requests: Family::default(),
            tokens: Family::default(),
            refreshes: Family::default(),
            failovers: Family::default(),
            persistence_failures: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram),
            refresh_duration: Family::new_with_constructor(duration_histogram),
            state: Family::default(),
            token_expiry: Family::default(),
            cooldown_remaining: Family::default(),
        };
        registry.register(
            "requests",
            "Requests made with a credential, by outcome",
            families.requests.clone(),
        );
        registry.register(
            "tokens",
            "Tokens consumed by requests made with a credential",
            families.tokens.clone(),
        );
        registry.register(
            "refreshes",
            "Token refresh attempts, by result",
            families.refreshes.clone(),
        );
        registry.register(
            "failovers",
            "Failovers away from a credential, by the failure that caused them",
            families.failovers.clone(),
        );
        registry.register(
            "persistence_failures",
            "Refreshed credentials that could not be persisted (each is retried)",
            families.persistence_failures.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Duration of requests made with a credential",
            Unit::Seconds,
            families.request_duration.clone(),
        );
        registry.register_with_unit(
            "refresh_duration",
            "Duration of token refresh attempts",
            Unit::Seconds,
            families.refresh_duration.clone(),
        );
        registry.register(
            "credential_state",
            "Current state of a credential: 1 for the current state, 0 for the others",
            families.state.clone(),
        );
        registry.register_with_unit(
            "token_expiry",
            "Time until the access token expires (NaN when unknown)",
            Unit::Seconds,
            families.token_expiry.clone(),
        );
        registry.register_with_unit(
            "cooldown_remaining",
            "Rate-limit cooldown remaining (0 when not cooling down)",
            Unit::Seconds,
            families.cooldown_remaining.clone(),
        );
        Self {
            provider: provider.to_owned(),
            families,
        }
    }

    /// A recorder writing the same metric families with another `provider` label (for an
    /// application with a pool per provider and one registry).
    pub fn for_provider(&self, provider: &str) -> Self {
        Self {
            provider: provider.to_owned(),
            families: self.families.clone(),
        }
    }

    /// The `provider` label value.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    fn labels(&self, credential: &CredentialId) -> CredentialLabels {
        CredentialLabels {
            provider: self.provider.clone(),
            credential: credential.as_str().to_owned(),
        }
    }
}

impl MetricsRecorder for PrometheusRecorder {
    fn handle(&self, credential: &CredentialId) -> Arc<dyn CredentialRecorder> {
        let f = &self.families;
        let labels = self.labels(credential);
        let states = CredentialState::ALL.map(|s| {
            f.state.get_or_create_owned(&StateLabels {
                provider: labels.provider.clone(),
                credential: labels.credential.clone(),
                state: s.as_str(),
            })
        });
        let known = f.token_expiry.get(&labels).is_some(); // guard dropped here
        let token_expiry = f.token_expiry.get_or_create_owned(&labels);
        if !known {
            token_expiry.set(f64::NAN); // unknown until the first `record_state`
        }
        Arc::new(PrometheusCredential {
            requests_success: f
                .requests
                .get_or_create_owned(&outcome_labels(&labels, "success")),
            requests_failed: Default::default(),
            tokens: f.tokens.get_or_create_owned(&labels),
            persistence_failures: f.persistence_failures.get_or_create_owned(&labels),
            request_duration: f.request_duration.get_or_create_owned(&labels),
            refreshes_success: f
                .refreshes
                .get_or_create_owned(&result_labels(&labels, "success")),
            refreshes_failed: Default::default(),
            refresh_duration: f.refresh_duration.get_or_create_owned(&labels),
            states,
            token_expiry,
            cooldown_remaining: f.cooldown_remaining.get_or_create_owned(&labels),
            requests: f.requests.clone(),
            refreshes: f.refreshes.clone(),
            labels,
        })
    }

    fn record_failover(&self, from: &CredentialId, reason: FailureKind) {
        let labels = self.labels(from);
        self.families
            .failovers
            .get_or_create_owned(&ReasonLabels {
                provider: labels.provider,
                credential: labels.credential,
                reason: reason.as_str(),
            })
            .inc();
    }

    fn remove(&self, credential: &CredentialId) {
        let f = &self.families;
        let labels = self.labels(credential);
        let names = std::iter::once("success").chain(FAILURE_KINDS.iter().map(FailureKind::as_str));
        for name in names {
            f.requests.remove(&outcome_labels(&labels, name));
            f.refreshes.remove(&result_labels(&labels, name));
            f.failovers.remove(&ReasonLabels {
                provider: labels.provider.clone(),
                credential: labels.credential.clone(),
                reason: name,
            });
        }
        for s in CredentialState::ALL {
            f.state.remove(&StateLabels {
                provider: labels.provider.clone(),
                credential: labels.credential.clone(),
                state: s.as_str(),
            });
        }
        f.tokens.remove(&labels);
        f.persistence_failures.remove(&labels);
        f.request_duration.remove(&labels);
        f.refresh_duration.remove(&labels);
        f.token_expiry.remove(&labels);
        f.cooldown_remaining.remove(&labels);
    }
}

fn outcome_labels(labels: &CredentialLabels, outcome: &'static str) -> OutcomeLabels {
    OutcomeLabels {
        provider: labels.provider.clone(),
        credential: labels.credential.clone(),
        outcome,
    }
}

fn result_labels(labels: &CredentialLabels, result: &'static str) -> ResultLabels {
    ResultLabels {
        provider: labels.provider.clone(),
        credential: labels.credential.clone(),
        result,
    }
}

/// One credential's cached Prometheus metrics.
#[derive(Debug)]
struct PrometheusCredential {
    requests_success: Counter,
    requests_failed: [OnceLock<Counter>; FAILURE_KINDS.len()],
    tokens: Counter,
    persistence_failures: Counter,
    request_duration: Histogram,
    refreshes_success: Counter,
    refreshes_failed: [OnceLock<Counter>; FAILURE_KINDS.len()],
    refresh_duration: Histogram,
    states: [Gauge; CredentialState::ALL.len()],
    token_expiry: SecondsGauge,
    cooldown_remaining: SecondsGauge,
    /// For creating the failure series on first use.
    requests: Family<OutcomeLabels, Counter>,
    refreshes: Family<ResultLabels, Counter>,
    labels: CredentialLabels,
}

impl PrometheusCredential {
    fn request_failure(&self, kind: FailureKind) {
        let create = || {
            self.requests
                .get_or_create_owned(&outcome_labels(&self.labels, kind.as_str()))
        };
        match failure_index(kind) {
            Some(i) => self.requests_failed[i].get_or_init(create).inc(),
            // A kind added to oauth-core after this crate: slower, still correct.
            None => create().inc(),
        };
    }

    fn refresh_failure(&self, kind: FailureKind) {
        let create = || {
            self.refreshes
                .get_or_create_owned(&result_labels(&self.labels, kind.as_str()))
        };
        match failure_index(kind) {
            Some(i) => self.refreshes_failed[i].get_or_init(create).inc(),
            None => create().inc(),
        };
    }
}

impl CredentialRecorder for PrometheusCredential {
    fn record_request(
        &self,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
        _now: DateTime<Utc>,
    ) {
        match outcome {
            RequestOutcome::Success => {
                self.requests_success.inc();
            }
            RequestOutcome::Failure(kind) => self.request_failure(kind),
        }
        if tokens > 0 {
            self.tokens.inc_by(tokens);
        }
        self.request_duration.observe(latency.as_secs_f64());
    }

    fn record_persistence_failure(&self) {
        self.persistence_failures.inc();
    }

    fn record_refresh(&self, result: RefreshResult, duration: Duration, _now: DateTime<Utc>) {
        match result {
            RefreshResult::Success => {
                self.refreshes_success.inc();
            }
            RefreshResult::Failure(kind) => self.refresh_failure(kind),
        }
        self.refresh_duration.observe(duration.as_secs_f64());
    }

    fn record_state(
        &self,
        state: CredentialState,
        expires_in: Option<Duration>,
        cooldown_remaining: Option<Duration>,
    ) {
        for (s, gauge) in CredentialState::ALL.iter().zip(&self.states) {
            gauge.set(i64::from(*s == state));
        }
        self.token_expiry
            .set(expires_in.map_or(f64::NAN, |d| d.as_secs_f64()));
        self.cooldown_remaining
            .set(cooldown_remaining.map_or(0.0, |d| d.as_secs_f64()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_cover_every_label_once() {
        let names: std::collections::BTreeSet<_> =
            FAILURE_KINDS.iter().map(FailureKind::as_str).collect();
        assert_eq!(names.len(), FAILURE_KINDS.len());
        assert_eq!(
            failure_index(FailureKind::rate_limited(Some(Duration::from_secs(9)))),
            Some(0)
        );
        assert_eq!(failure_index(FailureKind::RequestScoped), Some(5));
    }

    #[test]
    fn buckets_are_increasing_from_50ms_to_10min() {
        assert!(DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(DURATION_BUCKETS.first(), Some(&0.05));
        assert_eq!(DURATION_BUCKETS.last(), Some(&600.0));
    }
}
