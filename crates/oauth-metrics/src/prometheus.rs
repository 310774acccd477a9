//! The Prometheus recorder on `prometheus-client`: counters and histograms kept in this crate's
//! own sharded atomics, gauges read from the pool at scrape time, all encoded by one collector.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, CredentialState, FailureKind, TokenQuirk};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::histogram::{self, Buckets, DurationHistogram, HistogramSnapshot};
use crate::recorder::{
    CredentialRecorder, GaugeRow, GaugeSource, MetricsRecorder, RefreshResult, RequestOutcome,
};
use crate::shard::{Sharded, default_shards, shard_count};

/// The `Content-Type` to serve [`encode_openmetrics`]' output with. Prometheus 3 fails scrapes
/// without a valid one.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes `registry` as OpenMetrics 1.0 text (with `# EOF`); serve it with
/// [`OPENMETRICS_CONTENT_TYPE`]. [`encode_scrape`](crate::encode_scrape) picks the format from
/// the request's headers and compresses.
///
/// # Errors
/// Only when a metric's own encoding fails (`prometheus-client` reports [`std::fmt::Error`]).
pub fn encode_openmetrics(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// The failure kinds known when this crate was built, in label order.
const FAILURE_KINDS: [FailureKind; 6] = [
    FailureKind::RateLimited { retry_after: None },
    FailureKind::Unauthorized,
    FailureKind::PermanentAuth,
    FailureKind::Misconfigured,
    FailureKind::Transient,
    FailureKind::RequestScoped,
];

/// The failover counters of a credential's [`Detail`], one per kind in [`FAILURE_KINDS`].
const FAILOVER_REASONS: usize = FAILURE_KINDS.len();

/// Label values of `outcome` / `result`: `success`, then the failure kinds.
const OUTCOMES: [&str; 7] = [
    "success",
    "rate_limited",
    "unauthorized",
    "permanent_auth",
    "misconfigured",
    "transient",
    "request_scoped",
];

/// Where tokens are counted in the hot counters (after the 7 outcomes).
const TOKENS: usize = 7;
/// Where persistence failures are counted in the cold counters (after the 7 refresh results).
const PERSISTENCE: usize = 7;

/// The quirks known to oauth-core, each with a per-provider counter.
const QUIRKS: usize = TokenQuirk::ALL.len();

fn quirk_index(quirk: TokenQuirk) -> Option<usize> {
    TokenQuirk::ALL.iter().position(|q| *q == quirk)
}

fn failure_index(kind: FailureKind) -> Option<usize> {
    match kind {
        FailureKind::RateLimited { .. } => Some(0),
        FailureKind::Unauthorized => Some(1),
        FailureKind::PermanentAuth => Some(2),
        FailureKind::Misconfigured => Some(3),
        FailureKind::Transient => Some(4),
        FailureKind::RequestScoped => Some(5),
        // A kind added to oauth-core after this crate: counted in a slower side table.
        _ => None,
    }
}

/// Which series are per credential, and which per provider.
///
/// Series counts below use the default [`Buckets`] (16 bounds: a histogram is 19 series) and are
/// exact for the failure kinds of this release; [`PrometheusConfig::series_per_credential`] and
/// [`PrometheusConfig::series_per_provider`] compute them for any configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Granularity {
    /// Counters and gauges per credential, histograms and failovers per provider (the default).
    /// **24 series per credential**: `requests_total` × 7 outcomes, `refreshes_total` × 7 results,
    /// `tokens_total`, `persistence_failures_total`, `credential_state` × 6 states,
    /// `token_expiry_seconds` (absent while the expiry is unknown) and
    /// `cooldown_remaining_seconds`. Per provider: `failovers_total` × 6 reasons, two histograms
    /// (38 series), `credentials` × 6 states and `token_response_quirks_total` × 7 quirks: 57
    /// series. A pool of 400 credentials stays under Prometheus's guideline of about 10,000
    /// series per target (it was 222 before).
    #[default]
    Credential,
    /// Everything per credential, the two histograms and the failovers too: 24 + 6 + 38 = **68
    /// series per credential**, plus `credentials` × 6 and `token_response_quirks_total` × 7
    /// per provider. For small pools, or to find the one slow account.
    CredentialHistograms,
    /// For large pools: no `credential` label at all. Per provider: `requests_total` × 7,
    /// `refreshes_total` × 7, `tokens_total`, `persistence_failures_total`, `failovers_total` ×
    /// 6, two histograms (38), `credentials` × 6 (the number of credentials in each state) and
    /// `token_response_quirks_total` × 7: **73 series per provider**, whatever the pool's size.
    Provider,
}

/// How a [`PrometheusRecorder`] exports: its [`Granularity`], the histogram buckets and the
/// shard count of its counters.
///
/// ```
/// use oauth_metrics::{Buckets, Granularity, PrometheusConfig};
///
/// let config = PrometheusConfig::new()
///     .with_granularity(Granularity::Provider)
///     .with_request_buckets(Buckets::exponential(0.01, 2.0, 16)?);
/// assert_eq!(config.series_per_credential(), 0);
/// assert_eq!(PrometheusConfig::new().series_per_credential(), 24);
/// # Ok::<(), oauth_metrics::BucketsError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusConfig {
    granularity: Granularity,
    request_buckets: Buckets,
    refresh_buckets: Buckets,
    shards: usize,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl PrometheusConfig {
    /// Per-credential counters and gauges, per-provider histograms with [`DURATION_BUCKETS`]
    /// (10 ms to 10 min), and as many counter shards as the machine has cores (at most 16).
    ///
    /// [`DURATION_BUCKETS`]: crate::DURATION_BUCKETS
    pub fn new() -> Self {
        Self {
            granularity: Granularity::default(),
            request_buckets: Buckets::default(),
            refresh_buckets: Buckets::default(),
            shards: default_shards(),
        }
    }

    /// Sets which series are per credential.
    #[must_use]
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// Sets the buckets of `request_duration_seconds`.
    #[must_use]
    pub fn with_request_buckets(mut self, buckets: Buckets) -> Self {
        self.request_buckets = buckets;
        self
    }

    /// Sets the buckets of `refresh_duration_seconds`.
    #[must_use]
    pub fn with_refresh_buckets(mut self, buckets: Buckets) -> Self {
        self.refresh_buckets = buckets;
        self
    }

    /// Sets how many shards the counters written on every request have (rounded up to a power
    /// of two, 1 to 16). Each shard of a credential's counters is one 64-byte line; 1 saves
    /// memory when a single thread records.
    #[must_use]
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shard_count(shards);
        self
    }

    /// Which series are per credential.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The buckets of `request_duration_seconds`.
    pub fn request_buckets(&self) -> &Buckets {
        &self.request_buckets
    }

    /// The buckets of `refresh_duration_seconds`.
    pub fn refresh_buckets(&self) -> &Buckets {
        &self.refresh_buckets
    }

    /// The shard count.
    pub fn shards(&self) -> usize {
        self.shards
    }

    fn histogram_series(&self) -> usize {
        self.request_buckets.bounds().len() + 3 + self.refresh_buckets.bounds().len() + 3
    }

    /// The series one credential with a known token expiry adds to a scrape.
    pub fn series_per_credential(&self) -> usize {
        let base = 2 * OUTCOMES.len() + 2 + CredentialState::ALL.len() + 2;
        match self.granularity {
            Granularity::Credential => base,
            Granularity::CredentialHistograms => {
                base + FAILURE_KINDS.len() + self.histogram_series()
            }
            Granularity::Provider => 0,
        }
    }

    /// The series one provider adds to a scrape besides its credentials' (with a
    /// [`GaugeSource`] attached), not counting the one `store_connected` gauge of a pool whose
    /// store reports its connection ([`GaugeSource::store_connected`]).
    pub fn series_per_provider(&self) -> usize {
        // The per-state counts and the quirk counters, whatever the granularity.
        let always = CredentialState::ALL.len() + QUIRKS;
        match self.granularity {
            Granularity::Credential => FAILURE_KINDS.len() + self.histogram_series() + always,
            Granularity::CredentialHistograms => always,
            Granularity::Provider => {
                2 * OUTCOMES.len() + 2 + FAILURE_KINDS.len() + self.histogram_series() + always
            }
        }
    }

    fn per_credential(&self) -> bool {
        self.granularity != Granularity::Provider
    }

    fn credential_histograms(&self) -> bool {
        self.granularity == Granularity::CredentialHistograms
    }
}

/// Counters of one credential (or, in [`Granularity::Provider`], of one provider).
#[derive(Debug)]
struct Counters {
    /// Written on every request, so sharded: requests by outcome, then tokens.
    hot: Sharded<8>,
    /// Refreshes by result, then persistence failures.
    cold: [AtomicU64; 8],
}

impl Counters {
    fn new(shards: usize) -> Self {
        Self {
            hot: Sharded::new(shards),
            cold: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn cold(&self, i: usize) -> u64 {
        self.cold.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn add_cold(&self, i: usize) {
        if let Some(c) = self.cold.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One credential's series, and its recorder: the handle [`PrometheusRecorder::handle`] gives
/// out is this series itself, so a request is recorded with one pointer less to follow (the
/// handle used to point at the series, one more cache miss per call over 10,000 credentials).
#[derive(Debug)]
struct CredentialSeries {
    id: CredentialId,
    counters: Counters,
    /// [`Granularity::CredentialHistograms`] only.
    detail: Option<Detail>,
    /// What a record needs of its provider (not the provider itself, which holds this series:
    /// no reference cycle).
    hot: Arc<ProviderHot>,
}

/// The part of a provider's series its credentials' handles record into.
#[derive(Debug)]
struct ProviderHot {
    /// When histograms are per provider.
    request_duration: Option<DurationHistogram>,
    refresh_duration: Option<DurationHistogram>,
    /// Counts for failure kinds this crate does not know (none today).
    other: Mutex<BTreeMap<OtherKey, u64>>,
    /// The shard mask of the credentials' counters (see [`Sharded::mine_masked`]).
    mask: usize,
    /// The bounds of the histograms (and so the length of their rows in a credential's
    /// [`Detail`]).
    request_buckets: Buckets,
    refresh_buckets: Buckets,
}

impl ProviderHot {
    fn request_row(&self) -> usize {
        histogram::row_len(&self.request_buckets)
    }

    fn refresh_row(&self) -> usize {
        histogram::row_len(&self.refresh_buckets)
    }

    fn count_other(&self, family: Family, credential: Option<&CredentialId>, kind: FailureKind) {
        let mut other = self.other.lock().unwrap_or_else(PoisonError::into_inner);
        *other
            .entry((family, credential.cloned(), kind.as_str()))
            .or_insert(0) += 1;
    }
}

/// [`Granularity::CredentialHistograms`]: a credential's two histograms and its failovers by
/// reason, in one allocation: the request histogram's row (see [`histogram::row_len`]), the
/// refresh histogram's, then the six failover counters. (They were three allocations behind two
/// pointers: over 10,000 credentials a record waited for memory at each.)
#[derive(Debug)]
struct Detail(Box<[AtomicU64]>);

impl Detail {
    fn new(hot: &ProviderHot) -> Self {
        let len = hot.request_row() + hot.refresh_row() + FAILOVER_REASONS;
        Self((0..len).map(|_| AtomicU64::new(0)).collect())
    }

    fn request(&self, hot: &ProviderHot) -> &[AtomicU64] {
        self.0.get(..hot.request_row()).unwrap_or_default()
    }

    fn refresh(&self, hot: &ProviderHot) -> &[AtomicU64] {
        let start = hot.request_row();
        self.0
            .get(start..start + hot.refresh_row())
            .unwrap_or_default()
    }

    fn failover(&self, hot: &ProviderHot, i: usize) -> Option<&AtomicU64> {
        self.0.get(hot.request_row() + hot.refresh_row() + i)
    }
}

/// A side-table entry: family, credential (when per credential) and failure-kind label.
type OtherKey = (Family, Option<CredentialId>, &'static str);

/// Which counter family a side-table entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Requests,
    Refreshes,
    Failovers,
}

/// One provider's series and credentials.
struct ProviderSeries {
    name: String,
    config: PrometheusConfig,
    credentials: RwLock<BTreeMap<CredentialId, Arc<CredentialSeries>>>,
    /// [`Granularity::Provider`]: the provider's counters.
    totals: Counters,
    /// Failovers by reason, when they are per provider.
    failovers: [AtomicU64; 6],
    /// Tolerated token-response quirks, in [`TokenQuirk::ALL`] order (always per provider).
    quirks: [AtomicU64; QUIRKS],
    /// The histograms (when per provider) and the side table, shared with the handles.
    hot: Arc<ProviderHot>,
    gauges: RwLock<Option<Weak<dyn GaugeSource>>>,
}

impl fmt::Debug for ProviderSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSeries")
            .field("name", &self.name)
            .field("granularity", &self.config.granularity)
            .field("credentials", &read(&self.credentials).len())
            .finish_non_exhaustive()
    }
}

fn read<T: ?Sized>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T: ?Sized>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl ProviderSeries {
    fn new(name: &str, config: PrometheusConfig) -> Self {
        let per_provider_histograms = !config.credential_histograms();
        let hist =
            |b: &Buckets| per_provider_histograms.then(|| DurationHistogram::new(b, config.shards));
        Self {
            name: name.to_owned(),
            credentials: RwLock::default(),
            totals: Counters::new(if config.per_credential() {
                1
            } else {
                config.shards
            }),
            failovers: std::array::from_fn(|_| AtomicU64::new(0)),
            quirks: std::array::from_fn(|_| AtomicU64::new(0)),
            hot: Arc::new(ProviderHot {
                request_duration: hist(&config.request_buckets),
                refresh_duration: hist(&config.refresh_buckets),
                other: Mutex::default(),
                mask: shard_count(config.shards) - 1,
                request_buckets: config.request_buckets.clone(),
                refresh_buckets: config.refresh_buckets.clone(),
            }),
            gauges: RwLock::new(None),
            config,
        }
    }

    fn count_other(&self, family: Family, credential: Option<&CredentialId>, kind: FailureKind) {
        self.hot.count_other(family, credential, kind);
    }

    fn series(&self, id: &CredentialId) -> Arc<CredentialSeries> {
        if let Some(s) = read(&self.credentials).get(id) {
            return Arc::clone(s);
        }
        let mut map = write(&self.credentials);
        let config = &self.config;
        Arc::clone(map.entry(id.clone()).or_insert_with(|| {
            Arc::new(CredentialSeries {
                id: id.clone(),
                counters: Counters::new(config.shards),
                detail: config
                    .credential_histograms()
                    .then(|| Detail::new(&self.hot)),
                hot: Arc::clone(&self.hot),
            })
        }))
    }
}

/// What the collector and every recorder sharing its families hold.
#[derive(Debug)]
struct Shared {
    config: PrometheusConfig,
    providers: RwLock<Vec<Arc<ProviderSeries>>>,
}

impl Shared {
    fn provider(&self, name: &str) -> Arc<ProviderSeries> {
        if let Some(p) = read(&self.providers).iter().find(|p| p.name == name) {
            return Arc::clone(p);
        }
        let mut providers = write(&self.providers);
        if let Some(p) = providers.iter().find(|p| p.name == name) {
            return Arc::clone(p);
        }
        let p = Arc::new(ProviderSeries::new(name, self.config.clone()));
        providers.push(Arc::clone(&p));
        p
    }
}

/// Records into a `prometheus-client` [`Registry`], following the Prometheus naming conventions.
///
/// Metric names below are relative to the registry's prefix: the application chooses it with
/// [`Registry::with_prefix`] (`Registry::with_prefix("oauth_pool")` gives
/// `oauth_pool_requests_total`) or registers into [`Registry::sub_registry_with_prefix`]. Every
/// series has the label `provider`; per-credential series also have `credential` (the configured
/// [`CredentialId`]; never a token or an e-mail address). Which series are per credential is the
/// [`Granularity`] of the [`PrometheusConfig`] (default: counters and gauges per credential,
/// histograms and failovers per provider, 24 series per credential).
///
/// | name | type | labels besides `provider` (and `credential`) |
/// |---|---|---|
/// | `requests_total` | counter | `outcome`: `success` or the [`FailureKind::as_str`] name |
/// | `tokens_total` | counter | |
/// | `refreshes_total` | counter | `result`: `success` or the failure kind |
/// | `failovers_total` | counter | `reason`: the failure kind that caused the failover |
/// | `persistence_failures_total` | counter | refreshed credentials the store or provider refused (each is retried) |
/// | `token_response_quirks_total` | counter | `quirk`: the [`TokenQuirk::as_str`] name; per provider only, whatever the granularity |
/// | `request_duration_seconds` | histogram ([`Buckets`]) | |
/// | `refresh_duration_seconds` | histogram ([`Buckets`]) | |
/// | `credential_state` | gauge | `state`: one series per [`CredentialState`], 1 for the current state and 0 for the others |
/// | `token_expiry_seconds` | gauge | seconds until the access token expires (0 once expired; absent while unknown) |
/// | `cooldown_remaining_seconds` | gauge | rate-limit cooldown left, 0 when none |
/// | `credentials` | gauge | `state`: how many of the provider's credentials are in it (no `credential` label) |
///
/// **Counters** of a credential all exist at 0 from its first [`handle`](MetricsRecorder::handle)
/// (every outcome, result and reason), so `rate()` and `increase()` see the first failure; all of
/// them go with [`remove`](MetricsRecorder::remove). The provider's counters (failovers by
/// default, and `token_response_quirks_total` for every [`TokenQuirk`]) exist at 0 from the
/// recorder's creation. A handle holds its credential's counters
/// directly: recording is a few additions on the calling thread's shard (plain ones on the line of
/// a shard the thread owns, relaxed atomic ones otherwise), with no lock and no label lookup.
///
/// **Gauges** are not recorded: they are read when scraped, from the [`GaugeSource`] the pool
/// attached with [`attach_gauges`](MetricsRecorder::attach_gauges), so `/metrics` agrees with
/// the pool's health at every scrape. Without a source there are no gauge series.
///
/// Register one recorder per registry; for several providers use
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
/// let text = encode_openmetrics(&registry)?;
/// assert!(text.contains(r#"oauth_pool_requests_total{provider="anthropic",credential="team",outcome="transient"} 0"#));
/// handle.record_request(120, Duration::from_millis(800), RequestOutcome::Success, chrono::Utc::now());
/// let text = encode_openmetrics(&registry)?;
/// assert!(text.contains(r#"oauth_pool_requests_total{provider="anthropic",credential="team",outcome="success"} 1"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct PrometheusRecorder {
    provider: Arc<ProviderSeries>,
    shared: Arc<Shared>,
}

impl PrometheusRecorder {
    /// Registers the metric families into `registry` with the default [`PrometheusConfig`] and
    /// records with `provider` as the `provider` label.
    pub fn new(registry: &mut Registry, provider: &str) -> Self {
        Self::with_config(registry, provider, PrometheusConfig::new())
    }

    /// Registers the metric families into `registry`, exporting as `config` says.
    pub fn with_config(registry: &mut Registry, provider: &str, config: PrometheusConfig) -> Self {
        let shared = Arc::new(Shared {
            config,
            providers: RwLock::default(),
        });
        registry.register_collector(Box::new(PoolCollector(Arc::clone(&shared))));
        Self {
            provider: shared.provider(provider),
            shared,
        }
    }

    /// A recorder writing the same metric families with another `provider` label (for an
    /// application with a pool per provider and one registry). Asking twice for one provider
    /// gives recorders sharing its series.
    pub fn for_provider(&self, provider: &str) -> Self {
        Self {
            provider: self.shared.provider(provider),
            shared: Arc::clone(&self.shared),
        }
    }

    /// The `provider` label value.
    pub fn provider(&self) -> &str {
        &self.provider.name
    }

    /// How this recorder exports.
    pub fn config(&self) -> &PrometheusConfig {
        &self.shared.config
    }
}

impl MetricsRecorder for PrometheusRecorder {
    fn handle(&self, credential: &CredentialId) -> Arc<dyn CredentialRecorder> {
        let provider = Arc::clone(&self.provider);
        if !provider.config.per_credential() {
            return Arc::new(ProviderHandle { provider });
        }
        provider.series(credential)
    }

    fn record_failover(&self, from: &CredentialId, reason: FailureKind) {
        let p = &self.provider;
        let Some(i) = failure_index(reason) else {
            let who = p.config.credential_histograms().then_some(from);
            p.count_other(Family::Failovers, who, reason);
            return;
        };
        if p.config.credential_histograms() {
            let series = read(&p.credentials).get(from).map(Arc::clone);
            match series
                .as_ref()
                .and_then(|s| s.detail.as_ref()?.failover(&s.hot, i))
            {
                Some(c) => {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                // Not registered: counted in the side table, a series from its first failover.
                None => p.count_other(Family::Failovers, Some(from), reason),
            }
        } else {
            p.failovers[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record_token_quirk(&self, _credential: &CredentialId, quirk: TokenQuirk) {
        // Per provider: a quirk is the token endpoint's habit, not an account's.
        if let Some(c) = quirk_index(quirk).and_then(|i| self.provider.quirks.get(i)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&self, credential: &CredentialId) {
        let p = &self.provider;
        write(&p.credentials).remove(credential);
        p.hot
            .other
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(_, c, _), _| c.as_ref() != Some(credential));
    }

    fn attach_gauges(&self, source: Weak<dyn GaugeSource>) {
        *write(&self.provider.gauges) = Some(source);
    }
}

/// A credential's handle when its counters are per credential: the series itself.
impl CredentialRecorder for CredentialSeries {
    /// The line of the series' pointers to its provider's part and to its detail (a record reads
    /// both) and the counters' line the calling thread adds to (see `Sharded::prefetch`). (Per-credential histograms, behind the detail, are
    /// asked for by [`prefetch_indirect`](CredentialRecorder::prefetch_indirect): their address
    /// is not known without a load.)
    #[inline]
    fn prefetch(&self) {
        oauth_core::hint::prefetch(&self.hot);
        oauth_core::hint::prefetch(&self.detail);
        self.counters.hot.prefetch();
    }

    /// The request histogram's row in the detail (per-credential histograms only): every line
    /// of it, since which bucket a record adds to depends on a latency not known yet.
    #[inline]
    fn prefetch_indirect(&self) {
        if let Some(d) = &self.detail {
            let row = d.request(&self.hot);
            // Elements 64 bytes apart, then the last: one hint per line the row spans.
            for cell in row.iter().step_by(8).chain(row.last()) {
                oauth_core::hint::prefetch_write(cell);
            }
        }
    }

    fn prefetches_indirect(&self) -> bool {
        self.detail.is_some()
    }

    #[inline]
    fn record_request(
        &self,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
        _: DateTime<Utc>,
    ) {
        let i = match outcome {
            RequestOutcome::Success => Some(0),
            RequestOutcome::Failure(kind) => failure_index(kind).map(|i| i + 1),
        };
        let line = self.counters.hot.mine_masked(self.hot.mask);
        match i {
            Some(i) => line.add(i, 1),
            None => {
                if let RequestOutcome::Failure(kind) = outcome {
                    self.hot.count_other(Family::Requests, Some(&self.id), kind);
                }
            }
        }
        if tokens > 0 {
            line.add(TOKENS, tokens);
        }
        match &self.detail {
            Some(d) => {
                // One row per credential, shared by the threads recording on it.
                let row = d.request(&self.hot);
                histogram::observe_row(&self.hot.request_buckets, row, latency, false);
            }
            None => {
                if let Some(h) = &self.hot.request_duration {
                    h.observe(latency);
                }
            }
        }
    }

    fn record_refresh(&self, result: RefreshResult, duration: Duration, _: DateTime<Utc>) {
        match result {
            RefreshResult::Success => self.counters.add_cold(0),
            RefreshResult::Failure(kind) => match failure_index(kind) {
                Some(i) => self.counters.add_cold(i + 1),
                None => self
                    .hot
                    .count_other(Family::Refreshes, Some(&self.id), kind),
            },
        }
        match &self.detail {
            Some(d) => {
                histogram::observe_row(
                    &self.hot.refresh_buckets,
                    d.refresh(&self.hot),
                    duration,
                    false,
                );
            }
            None => {
                if let Some(h) = &self.hot.refresh_duration {
                    h.observe(duration);
                }
            }
        }
    }

    fn record_persistence_failure(&self) {
        self.counters.add_cold(PERSISTENCE);
    }

    #[inline]
    fn record_tokens(&self, tokens: u64) {
        if tokens > 0 {
            self.counters
                .hot
                .mine_masked(self.hot.mask)
                .add(TOKENS, tokens);
        }
    }
}

/// A credential's handle when counters are per provider ([`Granularity::Provider`]).
#[derive(Debug)]
struct ProviderHandle {
    provider: Arc<ProviderSeries>,
}

impl CredentialRecorder for ProviderHandle {
    #[inline]
    fn record_request(
        &self,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
        _: DateTime<Utc>,
    ) {
        let p = &self.provider;
        let i = match outcome {
            RequestOutcome::Success => Some(0),
            RequestOutcome::Failure(kind) => failure_index(kind).map(|i| i + 1),
        };
        let line = p.totals.hot.mine();
        match i {
            Some(i) => line.add(i, 1),
            None => {
                if let RequestOutcome::Failure(kind) = outcome {
                    p.count_other(Family::Requests, None, kind);
                }
            }
        }
        if tokens > 0 {
            line.add(TOKENS, tokens);
        }
        if let Some(h) = &p.hot.request_duration {
            h.observe(latency);
        }
    }

    fn record_refresh(&self, result: RefreshResult, duration: Duration, _: DateTime<Utc>) {
        let p = &self.provider;
        match result {
            RefreshResult::Success => p.totals.add_cold(0),
            RefreshResult::Failure(kind) => match failure_index(kind) {
                Some(i) => p.totals.add_cold(i + 1),
                None => p.count_other(Family::Refreshes, None, kind),
            },
        }
        if let Some(h) = &p.hot.refresh_duration {
            h.observe(duration);
        }
    }

    fn record_persistence_failure(&self) {
        self.provider.totals.add_cold(PERSISTENCE);
    }

    #[inline]
    fn record_tokens(&self, tokens: u64) {
        if tokens > 0 {
            self.provider.totals.hot.mine().add(TOKENS, tokens);
        }
    }
}

/// The collector registered into the application's registry: encodes every family on each
/// scrape.
#[derive(Debug)]
struct PoolCollector(Arc<Shared>);

/// A scrape's view of one provider: its credentials (taken from the map, so the map's lock is
/// not held while encoding) and the gauges read from its source.
struct View {
    provider: Arc<ProviderSeries>,
    credentials: Vec<Arc<CredentialSeries>>,
    gauges: Option<Vec<Gauges>>,
    /// [`GaugeSource::store_connected`], read in the same scrape.
    store_connected: Option<bool>,
    other: Vec<(OtherKey, u64)>,
}

struct Gauges {
    credential: CredentialId,
    state: CredentialState,
    expires_in: Option<Duration>,
    cooldown_remaining: Option<Duration>,
}

impl View {
    fn of(provider: &Arc<ProviderSeries>) -> Self {
        let credentials = read(&provider.credentials).values().cloned().collect();
        let source = read(&provider.gauges).as_ref().and_then(Weak::upgrade);
        let store_connected = source.as_ref().and_then(|s| s.store_connected());
        let gauges = source.map(|s| {
            let mut rows = Vec::new();
            s.visit(&mut |row: GaugeRow<'_>| {
                rows.push(Gauges {
                    credential: row.credential.clone(),
                    state: row.state,
                    expires_in: row.expires_in,
                    cooldown_remaining: row.cooldown_remaining,
                });
            });
            rows
        });
        let other = provider
            .hot
            .other
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        Self {
            provider: Arc::clone(provider),
            credentials,
            gauges,
            store_connected,
            other,
        }
    }

    fn name(&self) -> &str {
        &self.provider.name
    }

    fn others(&self, family: Family) -> impl Iterator<Item = (Option<&str>, &'static str, u64)> {
        self.other
            .iter()
            .filter(move |((f, _, _), _)| *f == family)
            .map(|((_, c, k), v)| (c.as_ref().map(CredentialId::as_str), *k, *v))
    }
}

fn counter(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, v: u64) -> fmt::Result {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn gauge_i(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, v: i64) -> fmt::Result {
    m.encode_family(labels)?.encode_gauge(&v)
}

fn gauge_f(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, v: f64) -> fmt::Result {
    m.encode_family(labels)?.encode_gauge(&v)
}

fn histogram(
    m: &mut MetricEncoder<'_>,
    labels: &impl EncodeLabelSet,
    s: &HistogramSnapshot,
) -> fmt::Result {
    m.encode_family(labels)?
        .encode_histogram::<NoLabelSet>(s.sum, s.count, &s.buckets, None)
}

/// Encodes a counter family labelled by outcome (requests, refreshes) or reason (failovers).
fn kinds_family(
    enc: &mut DescriptorEncoder<'_>,
    views: &[View],
    name: &str,
    help: &str,
    label: &str,
    family: Family,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    let first = usize::from(family == Family::Failovers); // failovers have no `success`
    for v in views {
        let p = v.name();
        let per_credential = match family {
            Family::Failovers => v.provider.config.credential_histograms(),
            _ => v.provider.config.per_credential(),
        };
        if per_credential {
            for c in &v.credentials {
                let values: [u64; 7] = match family {
                    Family::Requests => {
                        let t = c.counters.hot.totals();
                        std::array::from_fn(|i| t[i])
                    }
                    Family::Refreshes => std::array::from_fn(|i| c.counters.cold(i)),
                    Family::Failovers => std::array::from_fn(|i| {
                        i.checked_sub(1)
                            .and_then(|i| c.detail.as_ref()?.failover(&c.hot, i))
                            .map_or(0, |a| a.load(Ordering::Relaxed))
                    }),
                };
                for (o, value) in OUTCOMES.iter().zip(values).skip(first) {
                    let l = [("provider", p), ("credential", c.id.as_str()), (label, o)];
                    counter(&mut m, &l, value)?;
                }
            }
        } else {
            let values: [u64; 7] = match family {
                Family::Requests => {
                    let t = v.provider.totals.hot.totals();
                    std::array::from_fn(|i| t[i])
                }
                Family::Refreshes => std::array::from_fn(|i| v.provider.totals.cold(i)),
                Family::Failovers => std::array::from_fn(|i| {
                    i.checked_sub(1)
                        .map_or(0, |i| v.provider.failovers[i].load(Ordering::Relaxed))
                }),
            };
            for (o, value) in OUTCOMES.iter().zip(values).skip(first) {
                counter(&mut m, &[("provider", p), (label, o)], value)?;
            }
        }
        for (c, kind, value) in v.others(family) {
            match c {
                Some(c) => counter(
                    &mut m,
                    &[("provider", p), ("credential", c), (label, kind)],
                    value,
                )?,
                None => counter(&mut m, &[("provider", p), (label, kind)], value)?,
            }
        }
    }
    Ok(())
}

/// Encodes a counter family with one value per credential (or per provider).
fn single_family(
    enc: &mut DescriptorEncoder<'_>,
    views: &[View],
    name: &str,
    help: &str,
    value: fn(&Counters) -> u64,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for v in views {
        let p = v.name();
        if v.provider.config.per_credential() {
            for c in &v.credentials {
                let l = [("provider", p), ("credential", c.id.as_str())];
                counter(&mut m, &l, value(&c.counters))?;
            }
        } else {
            counter(&mut m, &[("provider", p)], value(&v.provider.totals))?;
        }
    }
    Ok(())
}

/// Encodes `token_response_quirks_total`: one series per provider and quirk, 0 until seen.
fn quirks_family(enc: &mut DescriptorEncoder<'_>, views: &[View]) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "token_response_quirks",
        "Oddities tolerated in successful token responses (their tokens were kept), by quirk.",
        None,
        MetricType::Counter,
    )?;
    for v in views {
        for (q, c) in TokenQuirk::ALL.iter().zip(&v.provider.quirks) {
            let l = [("provider", v.name()), ("quirk", q.as_str())];
            counter(&mut m, &l, c.load(Ordering::Relaxed))?;
        }
    }
    Ok(())
}

fn histogram_family(
    enc: &mut DescriptorEncoder<'_>,
    views: &[View],
    name: &str,
    help: &str,
    pick: fn(&ProviderSeries) -> Option<&DurationHistogram>,
    pick_detail: fn(&CredentialSeries, &Detail) -> HistogramSnapshot,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for v in views {
        let p = v.name();
        if let Some(h) = pick(&v.provider) {
            histogram(&mut m, &[("provider", p)], &h.snapshot())?;
        }
        for c in &v.credentials {
            if let Some(d) = &c.detail {
                histogram(
                    &mut m,
                    &[("provider", p), ("credential", c.id.as_str())],
                    &pick_detail(c, d),
                )?;
            }
        }
    }
    Ok(())
}

impl Collector for PoolCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let providers: Vec<Arc<ProviderSeries>> = read(&self.0.providers).clone();
        let views: Vec<View> = providers.iter().map(View::of).collect();
        kinds_family(
            &mut enc,
            &views,
            "requests",
            "Requests made with a credential, by outcome.",
            "outcome",
            Family::Requests,
        )?;
        single_family(
            &mut enc,
            &views,
            "tokens",
            "Tokens consumed by requests made with a credential.",
            |c| c.hot.get(TOKENS),
        )?;
        kinds_family(
            &mut enc,
            &views,
            "refreshes",
            "Token refresh attempts, by result.",
            "result",
            Family::Refreshes,
        )?;
        kinds_family(
            &mut enc,
            &views,
            "failovers",
            "Failovers away from a credential, by the failure that caused them.",
            "reason",
            Family::Failovers,
        )?;
        single_family(
            &mut enc,
            &views,
            "persistence_failures",
            "Refreshed credentials that could not be persisted (each is retried).",
            |c| c.cold(PERSISTENCE),
        )?;
        quirks_family(&mut enc, &views)?;
        histogram_family(
            &mut enc,
            &views,
            "request_duration",
            "Duration of requests made with a credential.",
            |p| p.hot.request_duration.as_ref(),
            |c, d| histogram::snapshot_rows(&c.hot.request_buckets, [d.request(&c.hot)]),
        )?;
        histogram_family(
            &mut enc,
            &views,
            "refresh_duration",
            "Duration of token refresh attempts.",
            |p| p.hot.refresh_duration.as_ref(),
            |c, d| histogram::snapshot_rows(&c.hot.refresh_buckets, [d.refresh(&c.hot)]),
        )?;
        encode_gauges(&mut enc, &views)
    }
}

fn encode_gauges(enc: &mut DescriptorEncoder<'_>, views: &[View]) -> fmt::Result {
    let per_credential = |v: &View| v.provider.config.per_credential();
    if views
        .iter()
        .any(|v| per_credential(v) && v.gauges.is_some())
    {
        let mut m = enc.encode_descriptor(
            "credential_state",
            "Current state of a credential: 1 for the current state, 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for v in views.iter().filter(|v| per_credential(v)) {
            for g in v.gauges.iter().flatten() {
                for s in CredentialState::ALL {
                    let l = [
                        ("provider", v.name()),
                        ("credential", g.credential.as_str()),
                        ("state", s.as_str()),
                    ];
                    gauge_i(&mut m, &l, i64::from(s == g.state))?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "token_expiry",
            "Time until the access token expires (0 once expired; absent while unknown).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for v in views.iter().filter(|v| per_credential(v)) {
            for g in v.gauges.iter().flatten() {
                if let Some(d) = g.expires_in {
                    let l = [
                        ("provider", v.name()),
                        ("credential", g.credential.as_str()),
                    ];
                    gauge_f(&mut m, &l, d.as_secs_f64())?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "cooldown_remaining",
            "Rate-limit cooldown remaining (0 when not cooling down).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for v in views.iter().filter(|v| per_credential(v)) {
            for g in v.gauges.iter().flatten() {
                let l = [
                    ("provider", v.name()),
                    ("credential", g.credential.as_str()),
                ];
                gauge_f(
                    &mut m,
                    &l,
                    g.cooldown_remaining.map_or(0.0, |d| d.as_secs_f64()),
                )?;
            }
        }
    }
    if views.iter().any(|v| v.gauges.is_some()) {
        let mut m = enc.encode_descriptor(
            "credentials",
            "Credentials of a provider in each state.",
            None,
            MetricType::Gauge,
        )?;
        for v in views {
            let Some(gauges) = &v.gauges else { continue };
            for s in CredentialState::ALL {
                let n = gauges.iter().filter(|g| g.state == s).count();
                let l = [("provider", v.name()), ("state", s.as_str())];
                gauge_i(&mut m, &l, i64::try_from(n).unwrap_or(i64::MAX))?;
            }
        }
    }
    if views.iter().any(|v| v.store_connected.is_some()) {
        let mut m = enc.encode_descriptor(
            "store_connected",
            "Whether the pool's credential store is reachable (1) or not (0); only for stores that can tell.",
            None,
            MetricType::Gauge,
        )?;
        for v in views {
            if let Some(up) = v.store_connected {
                gauge_i(&mut m, &[("provider", v.name())], i64::from(up))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_cover_every_label_once() {
        for (i, kind) in FAILURE_KINDS.iter().enumerate() {
            assert_eq!(failure_index(*kind), Some(i));
            assert_eq!(OUTCOMES[i + 1], kind.as_str());
        }
        assert_eq!(
            failure_index(FailureKind::rate_limited(Some(Duration::from_secs(9)))),
            Some(0)
        );
    }

    #[test]
    fn series_counts_are_the_documented_ones() {
        let c = PrometheusConfig::new();
        assert_eq!(c.series_per_credential(), 24);
        assert_eq!(c.series_per_provider(), 57);
        let d = c
            .clone()
            .with_granularity(Granularity::CredentialHistograms);
        assert_eq!(d.series_per_credential(), 68);
        assert_eq!(d.series_per_provider(), 13);
        let p = c.with_granularity(Granularity::Provider);
        assert_eq!(p.series_per_credential(), 0);
        assert_eq!(p.series_per_provider(), 73);
    }

    /// Only a handle with a detail behind a pointer asks for the second hint (the pool skips
    /// the call for the others), and the hint records nothing.
    #[test]
    fn only_per_credential_histograms_take_the_second_hint() {
        let id = CredentialId::new("acct").expect("valid");
        for (granularity, wants) in [
            (Granularity::Provider, false),
            (Granularity::Credential, false),
            (Granularity::CredentialHistograms, true),
        ] {
            let mut registry = Registry::default();
            let config = PrometheusConfig::new().with_granularity(granularity);
            let recorder = PrometheusRecorder::with_config(&mut registry, "p", config);
            let handle = recorder.handle(&id);
            assert_eq!(handle.prefetches_indirect(), wants, "{granularity:?}");
            let fanout = crate::Fanout::new(vec![
                Arc::new(crate::NoopRecorder) as Arc<dyn MetricsRecorder>,
                Arc::new(recorder.clone()),
            ]);
            assert_eq!(
                fanout.handle(&id).prefetches_indirect(),
                wants,
                "{granularity:?}"
            );
            handle.prefetch();
            handle.prefetch_indirect();
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
            assert!(
                text.lines()
                    .filter(|l| !l.starts_with('#') && l.contains("acct"))
                    .all(|l| l.ends_with(" 0") || l.ends_with(" 0.0")),
                "{granularity:?}: the hints recorded something:\n{text}"
            );
        }
    }
}
