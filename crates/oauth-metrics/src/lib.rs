//! Per-credential metrics for an OAuth credential pool: the [`MetricsRecorder`] trait the pool
//! records into, an [`InMemoryRecorder`] with everything the Go `CredentialMetrics` kept (plus a
//! recent failure window), a [`PrometheusRecorder`] on `prometheus-client` (feature `prometheus`,
//! on by default) with bounded cardinality ([`Granularity`]), gauges read at scrape time through a
//! [`GaugeSource`], and a `/metrics` helper that negotiates the format and gzip
//! ([`encode_scrape`]); and the Go export shapes ([`HealthSummary`], [`PrometheusMetrics`],
//! [`export_json`]) as typed serde structs.
//!
//! Recording is split in two so the hot path shares nothing between credentials: the pool asks
//! the recorder for a [`CredentialRecorder`] handle once per credential and caches it; every
//! request is then one call on that handle. [`Fanout`] sends everything to several recorders (the
//! manager keeps its `InMemoryRecorder` next to yours). Gauges (state, token expiry, cooldown) are
//! never recorded: the pool hands each recorder a [`GaugeSource`] once
//! ([`MetricsRecorder::attach_gauges`]) and a recorder that exports gauges reads it when scraped.
//!
//! ```
//! use std::time::Duration;
//! use chrono::{TimeZone, Utc};
//! use oauth_core::{CredentialId, FailureKind};
//! use oauth_metrics::{InMemoryRecorder, MetricsRecorder, RequestOutcome};
//!
//! let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
//! let recorder = InMemoryRecorder::new();
//! let id = CredentialId::new("team")?;
//! let handle = recorder.handle(&id); // once, when the credential joins the pool
//!
//! handle.record_request(100, Duration::from_millis(50), RequestOutcome::Success, now);
//! handle.record_request(200, Duration::from_millis(100), RequestOutcome::Success, now);
//! let failed = RequestOutcome::Failure(FailureKind::Transient);
//! handle.record_request(150, Duration::from_millis(75), failed, now);
//!
//! let usage = recorder.snapshot(&id, now).expect("registered");
//! assert_eq!((usage.request_count, usage.success_count, usage.error_count), (3, 2, 1));
//! assert_eq!(usage.tokens_used, 450);
//! assert_eq!(usage.average_latency(), Duration::from_millis(75));
//! assert_eq!(usage.recent_failures, 1); // in the last 5 minutes
//! # Ok::<(), oauth_core::CredentialError>(())
//! ```
//!
//! # Implementing [`MetricsRecorder`]
//! Bring your own backend (StatsD, OpenTelemetry, a log line) by implementing both traits:
//! [`MetricsRecorder::handle`] resolves everything per-credential up front (label sets, series,
//! buffers) and returns an `Arc<dyn CredentialRecorder>` that holds it; the handle's methods then
//! only update it. All methods are synchronous and infallible and must not block: if your backend
//! does I/O, hand the data to a background task. Never put a token or e-mail address into a
//! metric; the [`CredentialId`](oauth_core::CredentialId) is the only per-credential label. If
//! your backend exports gauges, keep the source given to
//! [`attach_gauges`](MetricsRecorder::attach_gauges) and call [`GaugeSource::visit`] when you
//! export.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::time::Duration;
//! use chrono::{DateTime, Utc};
//! use oauth_core::{CredentialId, FailureKind};
//! use oauth_metrics::{CredentialRecorder, MetricsRecorder, RefreshResult, RequestOutcome};
//!
//! /// Counts failed requests across the pool.
//! #[derive(Debug, Default)]
//! struct Failures(Arc<AtomicU64>);
//!
//! #[derive(Debug)]
//! struct FailuresHandle(Arc<AtomicU64>);
//!
//! impl MetricsRecorder for Failures {
//!     fn handle(&self, _: &CredentialId) -> Arc<dyn CredentialRecorder> {
//!         Arc::new(FailuresHandle(self.0.clone()))
//!     }
//!     fn record_failover(&self, _: &CredentialId, _: FailureKind) {}
//! }
//!
//! impl CredentialRecorder for FailuresHandle {
//!     fn record_request(&self, _: u64, _: Duration, outcome: RequestOutcome, _: DateTime<Utc>) {
//!         if !outcome.is_success() {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//!     fn record_refresh(&self, _: RefreshResult, _: Duration, _: DateTime<Utc>) {}
//! }
//!
//! let recorder = Failures::default();
//! let h = recorder.handle(&CredentialId::new("a")?);
//! h.record_request(0, Duration::ZERO, RequestOutcome::Failure(FailureKind::Transient), Utc::now());
//! assert_eq!(recorder.0.load(Ordering::Relaxed), 1);
//! # Ok::<(), oauth_core::CredentialError>(())
//! ```

mod export;
mod histogram;
mod memory;
#[cfg(feature = "prometheus")]
mod negotiate;
#[cfg(feature = "prometheus")]
mod prometheus;
mod recorder;
mod shard;

pub use export::{HealthSummary, PrometheusMetrics, export_json};
pub use histogram::{Buckets, BucketsError, DURATION_BUCKETS, MAX_BUCKETS};
pub use memory::{CredentialMetrics, DEFAULT_MAX_CREDENTIALS, DEFAULT_WINDOW, InMemoryRecorder};
#[cfg(feature = "prometheus")]
pub use negotiate::{
    EncodeError, Format, PROMETHEUS_TEXT_CONTENT_TYPE, Scrape, accepts_gzip, encode_scrape,
    negotiate_format,
};
#[cfg(feature = "prometheus")]
pub use prometheus::{
    Granularity, OPENMETRICS_CONTENT_TYPE, PrometheusConfig, PrometheusRecorder, encode_openmetrics,
};
/// The `prometheus-client` crate this recorder is built on, for its `Registry`.
#[cfg(feature = "prometheus")]
pub use prometheus_client;
pub use recorder::{
    CredentialRecorder, Fanout, GaugeRow, GaugeSource, MetricsRecorder, NoopRecorder,
    RefreshResult, RequestOutcome,
};
