//! Memory per credential: a pool of 100,000 healthy credentials built under a counting global
//! allocator (stats_alloc), without a recorder and with the Prometheus recorder at its default
//! granularity (every series of a credential created at 0 when it registers).
//!
//! The figure is the heap allocated and still live once the pool is built (credentials, ids and
//! tokens included: what the application pays for holding them in the pool; the Tokio runtime
//! excluded), divided by 100,000. It is printed, and written with the live allocations per
//! credential and the share of the credentials themselves (`Credential` values before they enter
//! the pool) into `new/extra.json` of the row `pool_footprint/<recorder>/1t/100000`, whose time
//! is one `execute_with_failover` at that size (with the counting allocator on, so a little
//! above the `pool` bench's figures).
//!
//! A second figure, `after_one_call_each`, is the same live heap once the pool has served
//! 100,000 calls (each credential once, round-robin): what the counters allocated on first use
//! (the in-memory usage counters and recent window) add to a pool that has seen traffic.
//!
//! This is a bench binary of its own because the counting allocator would tax every other case.

use std::alloc::System;
use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use oauth_manager::metrics::{MetricsRecorder, PrometheusRecorder};
use oauth_manager::{Credential, OAuthKeyManager};
use prometheus_client::registry::Registry;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, Stats, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const N: usize = 100_000;

/// Polls a future that never waits (the pool's hot path does not) to completion.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn live_bytes(s: &Stats) -> f64 {
    s.bytes_allocated as f64 - s.bytes_deallocated as f64
}

fn live_allocations(s: &Stats) -> f64 {
    s.allocations as f64 - s.deallocations as f64
}

struct Measured {
    manager: OAuthKeyManager,
    _registry: Option<Registry>,
    bytes_per_credential: f64,
    allocations_per_credential: f64,
    credential_bytes: f64,
    /// After one call per credential.
    served_bytes_per_credential: f64,
}

fn build(prometheus: bool) -> Measured {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let now = chrono::Utc::now();
    let region = Region::new(GLOBAL);
    let creds: Vec<Credential> = (0..N)
        .map(|i| {
            Credential::new(format!("c{i}"), format!("token-{i}"), now)
                .expect("valid credential")
                .with_expires_at(now + chrono::TimeDelta::hours(10))
        })
        .collect();
    // The values and their heap (the Vec's buffer is exactly N values).
    let credential_bytes = live_bytes(&region.change()) / N as f64;
    let mut builder = OAuthKeyManager::builder("bench").credentials(creds);
    let mut registry = None;
    if prometheus {
        let mut reg = Registry::with_prefix("bench");
        let recorder: Arc<dyn MetricsRecorder> =
            Arc::new(PrometheusRecorder::new(&mut reg, "bench"));
        builder = builder.metrics_arc(recorder);
        registry = Some(reg);
    }
    let manager = rt.block_on(builder.build()).expect("builds");
    let stats = region.change();
    for _ in 0..N {
        execute(&manager);
    }
    let served = region.change();
    Measured {
        manager,
        _registry: registry,
        bytes_per_credential: live_bytes(&stats) / N as f64,
        allocations_per_credential: live_allocations(&stats) / N as f64,
        credential_bytes,
        served_bytes_per_credential: live_bytes(&served) / N as f64,
    }
}

fn execute(manager: &OAuthKeyManager) {
    let served = block_on(manager.execute_with_failover(|cred| async move {
        Ok::<_, std::io::Error>((black_box(cred.id.as_str().len()), None))
    }))
    .expect("served");
    black_box(served);
}

#[allow(clippy::print_stdout)] // the figures are the point of this bench
fn footprint(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_footprint");
    for (name, prometheus) in [("no_recorder", false), ("prometheus", true)] {
        let m = build(prometheus);
        println!(
            "pool_footprint/{name}/100000: {:.0} bytes per credential live ({:.1} allocations; \
             the Credential values themselves {:.0} bytes); {:.0} after one call each",
            m.bytes_per_credential,
            m.allocations_per_credential,
            m.credential_bytes,
            m.served_bytes_per_credential
        );
        group.bench_function(BenchmarkId::new(format!("{name}/1t"), N), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    execute(&m.manager);
                }
                start.elapsed()
            });
        });
        if let Some(dir) = new_dir_of(
            &criterion_dir().join("pool_footprint"),
            &format!("pool_footprint/{name}/1t/{N}"),
        ) {
            let json = format!(
                r#"{{"bytes_per_credential": {:.0}, "allocations_per_credential": {:.1}, "credential_values_bytes": {:.0}, "after_one_call_each": {:.0}}}"#,
                m.bytes_per_credential,
                m.allocations_per_credential,
                m.credential_bytes,
                m.served_bytes_per_credential
            );
            let _ = std::fs::write(dir.join("extra.json"), json);
        }
    }
    group.finish();
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

/// The `new/` directory criterion wrote for the benchmark `full_id` (found by its
/// `benchmark.json`, since criterion rewrites unsafe characters in directory names).
fn new_dir_of(root: &Path, full_id: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let text = std::fs::read_to_string(path.join("benchmark.json")).unwrap_or_default();
            let id = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("full_id")?.as_str().map(str::to_owned));
            if id.as_deref() == Some(full_id) {
                return Some(path);
            }
        } else if let Some(found) = new_dir_of(&path, full_id) {
            return Some(found);
        }
    }
    None
}

criterion_group! {
    name = footprint_benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = footprint
}
criterion_main!(footprint_benches);
