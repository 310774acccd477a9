//! Hot-path benchmarks: `next_credential` and `execute_with_failover` (no-op operation, Prometheus
//! recorder on), over 3, 1,000 and 10,000 credentials, all healthy or all but one cooling down, on
//! 1 and 2 threads. Two-thread figures are aggregate: total time / total operations.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use oauth_manager::metrics::PrometheusRecorder;
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

fn pool(n: usize, all_but_one_down: bool) -> OAuthKeyManager {
    let now = chrono::Utc::now();
    let creds = (0..n).map(|i| {
        Credential::new(format!("c{i}"), format!("token-{i}"), now)
            .expect("valid credential")
            .with_expires_at(now + chrono::TimeDelta::hours(10))
    });
    let mut registry = Registry::with_prefix("bench");
    let recorder = Arc::new(PrometheusRecorder::new(&mut registry, "bench"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let manager = rt
        .block_on(
            OAuthKeyManager::builder("bench")
                .credentials(creds)
                .metrics(recorder)
                .build(),
        )
        .expect("builds");
    if all_but_one_down {
        for i in 1..n {
            manager.report_failure_kind(
                &format!("c{i}"),
                FailureKind::rate_limited(Some(Duration::from_secs(3600))),
            );
        }
    }
    manager
}

fn run_threads(threads: usize, iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let per_thread = iters / threads as u64 + 1;
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per_thread {
                    op();
                }
            });
        }
    });
    // Aggregate: total elapsed over the operations actually run, scaled to `iters`.
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_thread * threads as u64) as f64)
}

/// A pool built on first use, so a filtered run builds only the pools it measures.
struct Lazy {
    n: usize,
    down: bool,
    pool: std::sync::OnceLock<OAuthKeyManager>,
}

impl Lazy {
    const fn new(n: usize, down: bool) -> Self {
        Self {
            n,
            down,
            pool: std::sync::OnceLock::new(),
        }
    }

    fn get(&self) -> &OAuthKeyManager {
        self.pool.get_or_init(|| pool(self.n, self.down))
    }
}

fn benches(c: &mut Criterion) {
    for (name, down) in [("healthy", false), ("all_but_one_down", true)] {
        let pools: Vec<Lazy> = [3usize, 1_000, 10_000]
            .into_iter()
            .map(|n| Lazy::new(n, down))
            .collect();
        let mut group = c.benchmark_group(format!("next_credential/{name}"));
        for lazy in &pools {
            for threads in [1usize, 2] {
                group.bench_with_input(
                    BenchmarkId::new(format!("{threads}t"), lazy.n),
                    &lazy.n,
                    |b, _| {
                        let manager = lazy.get();
                        b.iter_custom(|iters| {
                            run_threads(threads, iters, &|| {
                                black_box(manager.next_credential().expect("one is available"));
                            })
                        });
                    },
                );
            }
        }
        group.finish();

        let mut group = c.benchmark_group(format!("execute_with_failover/{name}"));
        for lazy in &pools {
            for threads in [1usize, 2] {
                group.bench_with_input(
                    BenchmarkId::new(format!("{threads}t"), lazy.n),
                    &lazy.n,
                    |b, _| {
                        let manager = lazy.get();
                        b.iter_custom(|iters| {
                            run_threads(threads, iters, &|| {
                                let served =
                                    block_on(manager.execute_with_failover(|cred| async move {
                                        Ok::<_, std::io::Error>((
                                            black_box(cred.id.as_str().len()),
                                            None,
                                        ))
                                    }))
                                    .expect("served");
                                black_box(served);
                            })
                        });
                    },
                );
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = pool_benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = benches
}
criterion_main!(pool_benches);
