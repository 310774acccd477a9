//! One scrape of the Prometheus recorder: encode time, series and bytes, at 1,000 and 10,000
//! credentials, in each [`Granularity`].
//!
//! Every credential has a handle with a few requests recorded and a row in the gauge source, as
//! in a running pool. Criterion measures the OpenMetrics encoding of the whole registry; the series
//! and bytes of that scrape are printed and written next to criterion's estimates
//! (`new/extra.json`), where `cargo xtask bench` shows them in its table.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use oauth_core::{CredentialId, CredentialState, FailureKind};
use oauth_metrics::prometheus_client::registry::Registry;
use oauth_metrics::{
    GaugeRow, GaugeSource, Granularity, MetricsRecorder, PrometheusConfig, PrometheusRecorder,
    RequestOutcome, encode_openmetrics,
};

/// A pool of `n` credentials in mixed states.
#[derive(Debug)]
struct Pool(Vec<CredentialId>);

impl GaugeSource for Pool {
    fn visit(&self, f: &mut dyn FnMut(GaugeRow<'_>)) {
        for (i, id) in self.0.iter().enumerate() {
            let state = if i % 10 == 0 {
                CredentialState::CoolingDown
            } else {
                CredentialState::Active
            };
            let cooldown = (i % 10 == 0).then(|| Duration::from_secs(30));
            f(GaugeRow::new(id, state)
                .expires_in(Some(Duration::from_secs(3600)))
                .cooldown_remaining(cooldown));
        }
    }
}

struct Setup {
    registry: Registry,
    _pool: Arc<Pool>,
    _recorder: PrometheusRecorder,
}

fn setup(granularity: Granularity, n: usize) -> Setup {
    let mut registry = Registry::with_prefix("oauth_pool");
    let recorder = PrometheusRecorder::with_config(
        &mut registry,
        "anthropic",
        PrometheusConfig::new().with_granularity(granularity),
    );
    let ids: Vec<CredentialId> = (0..n)
        .map(|i| CredentialId::new(format!("account-{i:05}")).expect("valid id"))
        .collect();
    let now = Utc::now();
    for (i, id) in ids.iter().enumerate() {
        let h = recorder.handle(id);
        h.record_request(
            120,
            Duration::from_millis(800),
            RequestOutcome::Success,
            now,
        );
        if i % 7 == 0 {
            let failed = RequestOutcome::Failure(FailureKind::Transient);
            h.record_request(0, Duration::from_millis(30), failed, now);
            recorder.record_failover(id, FailureKind::Transient);
        }
    }
    let pool = Arc::new(Pool(ids));
    let source: Arc<dyn GaugeSource> = pool.clone();
    recorder.attach_gauges(Arc::downgrade(&source));
    Setup {
        registry,
        _pool: pool,
        _recorder: recorder,
    }
}

fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion")
}

/// Writes the scrape's figures where `cargo xtask bench` finds them.
fn write_extra(group: &str, function: &str, parameter: &str, series: usize, bytes: usize) {
    let dir = criterion_dir()
        .join(group)
        .join(function)
        .join(parameter)
        .join("new");
    let json = format!(r#"{{"series": {series}, "bytes": {bytes}}}"#);
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("extra.json"), json);
    }
}

#[allow(clippy::print_stdout)] // the figures are the point of this bench
fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("scrape");
    group.sample_size(10);
    for (name, granularity) in [
        ("per_credential", Granularity::Credential),
        (
            "per_credential_histograms",
            Granularity::CredentialHistograms,
        ),
        ("per_provider", Granularity::Provider),
    ] {
        for n in [1_000usize, 10_000] {
            let s = setup(granularity, n);
            let text = encode_openmetrics(&s.registry).expect("encodes");
            let series = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .count();
            let parameter = format!("{n}cred");
            println!(
                "scrape/{name}/{parameter}: {series} series ({:.1} per credential), {} bytes ({:.2} MiB)",
                series as f64 / n as f64,
                text.len(),
                text.len() as f64 / (1024.0 * 1024.0)
            );
            group.bench_function(BenchmarkId::new(name, &parameter), |b| {
                b.iter(|| encode_openmetrics(&s.registry).expect("encodes").len());
            });
            write_extra("scrape", name, &parameter, series, text.len());
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
