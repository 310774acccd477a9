//! Hot-path benchmarks, the cases issue 16 sets goals for (one thread unless the id says `2t`):
//!
//! - `next_credential/{healthy,all_but_one_down}/1t/{3,1000,10000}`: the Prometheus recorder on
//!   (selection does not record), every credential healthy, or all but one cooling down for an
//!   hour;
//! - `execute_with_failover/{prometheus,prometheus_credential_histograms}/1t/{3,1000,10000}`: a
//!   no-op operation that succeeds at once, with the Prometheus recorder at its default
//!   granularity (counters and gauges per credential, histograms per provider) and with
//!   per-credential histograms; `execute_with_failover/no_recorder/1t/10000` without one;
//! - `{next_credential/healthy,execute_with_failover/prometheus}/2t/3`: two threads sharing three
//!   credentials. The time is aggregate (wall time / operations of both threads), and the row's
//!   figures carry `speedup_vs_1t`: one thread's ns per call over this aggregate (2.0 is perfect
//!   scaling, 1.0 none).
//!
//! Memory per credential is measured by the `footprint` bench (it needs a counting global
//! allocator, which would tax every case here).

use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use oauth_manager::metrics::{Granularity, MetricsRecorder, PrometheusConfig, PrometheusRecorder};
use oauth_manager::{Credential, FailureKind, OAuthKeyManager};
use prometheus_client::registry::Registry;

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

/// The recorder a pool is built with.
#[derive(Clone, Copy)]
enum Rec {
    None,
    Prometheus,
    PrometheusCredentialHistograms,
}

impl Rec {
    fn name(self) -> &'static str {
        match self {
            Self::None => "no_recorder",
            Self::Prometheus => "prometheus",
            Self::PrometheusCredentialHistograms => "prometheus_credential_histograms",
        }
    }

    /// The recorder and the registry it registered in (kept alive beside the pool).
    fn make(self) -> Option<(Arc<dyn MetricsRecorder>, Registry)> {
        let mut registry = Registry::with_prefix("bench");
        let recorder: Arc<dyn MetricsRecorder> = match self {
            Self::None => return None,
            Self::Prometheus => Arc::new(PrometheusRecorder::new(&mut registry, "bench")),
            Self::PrometheusCredentialHistograms => Arc::new(PrometheusRecorder::with_config(
                &mut registry,
                "bench",
                PrometheusConfig::new().with_granularity(Granularity::CredentialHistograms),
            )),
        };
        Some((recorder, registry))
    }
}

struct Pool {
    manager: OAuthKeyManager,
    _registry: Option<Registry>,
}

fn pool(n: usize, rec: Rec, all_but_one_down: bool) -> Pool {
    let now = chrono::Utc::now();
    let creds = (0..n).map(|i| {
        Credential::new(format!("c{i}"), format!("token-{i}"), now)
            .expect("valid credential")
            .with_expires_at(now + chrono::TimeDelta::hours(10))
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut builder = OAuthKeyManager::builder("bench").credentials(creds);
    let mut registry = None;
    if let Some((recorder, reg)) = rec.make() {
        builder = builder.metrics_arc(recorder);
        registry = Some(reg);
    }
    let manager = rt.block_on(builder.build()).expect("builds");
    if all_but_one_down {
        for i in 1..n {
            manager.report_failure_kind(
                &format!("c{i}"),
                FailureKind::rate_limited(Some(Duration::from_secs(3600))),
            );
        }
    }
    Pool {
        manager,
        _registry: registry,
    }
}

/// Runs `op` `iters` times in all, split over `threads` threads started together; returns the
/// wall time (aggregate: both threads' operations in one elapsed time).
fn run_threads(threads: usize, iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    if threads == 1 {
        let start = Instant::now();
        for _ in 0..iters {
            op();
        }
        return start.elapsed();
    }
    let per_thread = iters / threads as u64 + 1;
    let barrier = std::sync::Barrier::new(threads + 1);
    let start = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..per_thread {
                    op();
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_thread * threads as u64) as f64)
}

fn next(manager: &OAuthKeyManager) {
    black_box(manager.next_credential().expect("one is available"));
}

fn execute(manager: &OAuthKeyManager) {
    let served = block_on(manager.execute_with_failover(|cred| async move {
        Ok::<_, std::io::Error>((black_box(cred.id.as_str().len()), None))
    }))
    .expect("served");
    black_box(served);
}

/// A pool built on first use, so a filtered run builds only the pools it measures.
struct Lazy {
    n: usize,
    rec: Rec,
    down: bool,
    pool: OnceLock<Pool>,
}

impl Lazy {
    const fn new(n: usize, rec: Rec, down: bool) -> Self {
        Self {
            n,
            rec,
            down,
            pool: OnceLock::new(),
        }
    }

    fn get(&self) -> &OAuthKeyManager {
        &self
            .pool
            .get_or_init(|| pool(self.n, self.rec, self.down))
            .manager
    }
}

type Op = fn(&OAuthKeyManager);

fn case(c: &mut Criterion, group: &str, lazy: &Lazy, threads: usize, op: Op) {
    let mut g = c.benchmark_group(group);
    g.bench_function(BenchmarkId::new(format!("{threads}t"), lazy.n), |b| {
        let manager = lazy.get();
        b.iter_custom(|iters| run_threads(threads, iters, &|| op(manager)));
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    // Every pool a case built lives to the end of the run: a pool is built once, at its start,
    // in an application, never into the holes a dropped pool of another shape left in the heap
    // (which scattered a later pool's credentials: no_recorder over 10,000 measured 306 ns after
    // the Prometheus pool of 10,000 was dropped, 198 ns in a process of its own).
    let mut built: Vec<Lazy> = Vec::new();
    for (name, down) in [("healthy", false), ("all_but_one_down", true)] {
        let group = format!("next_credential/{name}");
        for n in [3usize, 1_000, 10_000] {
            let lazy = Lazy::new(n, Rec::Prometheus, down);
            case(c, &group, &lazy, 1, next);
            if n == 3 && !down {
                case(c, &group, &lazy, 2, next);
                write_speedup(&group, n);
            }
            built.push(lazy);
        }
    }
    for rec in [
        Rec::Prometheus,
        Rec::PrometheusCredentialHistograms,
        Rec::None,
    ] {
        let group = format!("execute_with_failover/{}", rec.name());
        let sizes: &[usize] = match rec {
            Rec::None => &[10_000],
            _ => &[3, 1_000, 10_000],
        };
        for &n in sizes {
            let lazy = Lazy::new(n, rec, false);
            case(c, &group, &lazy, 1, execute);
            if n == 3 && matches!(rec, Rec::Prometheus) {
                case(c, &group, &lazy, 2, execute);
                write_speedup(&group, n);
            }
            built.push(lazy);
        }
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

fn mean_ns(new_dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(new_dir.join("estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("mean")?.get("point_estimate")?.as_f64()
}

/// Writes `speedup_vs_1t` (one thread's ns per call over two threads' aggregate) into the 2-thread
/// row's `extra.json`, and prints it.
#[allow(clippy::print_stdout)] // the ratio is one of the figures this bench exists for
fn write_speedup(group: &str, n: usize) {
    let root = criterion_dir();
    let (Some(one), Some(two)) = (
        new_dir_of(
            &root.join(group.replace('/', "_")),
            &format!("{group}/1t/{n}"),
        ),
        new_dir_of(
            &root.join(group.replace('/', "_")),
            &format!("{group}/2t/{n}"),
        ),
    ) else {
        return;
    };
    let (Some(t1), Some(t2)) = (mean_ns(&one), mean_ns(&two)) else {
        return;
    };
    if t2 > 0.0 {
        let speedup = t1 / t2;
        println!("{group}/2t/{n}: speedup_vs_1t {speedup:.2} ({t1:.1} ns / {t2:.1} ns)");
        let json = format!(r#"{{"speedup_vs_1t": {speedup:.2}}}"#);
        let _ = std::fs::write(two.join("extra.json"), json);
    }
}

criterion_group! {
    name = pool_benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = benches
}
criterion_main!(pool_benches);
