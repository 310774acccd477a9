//! `record_request` through a cached per-credential handle, for the in-memory and the Prometheus
//! recorders, with 3 and 10,000 credentials, on 1 and 2 threads.
//!
//! Each thread records into its own credentials (thread `t` of `n` takes every `n`-th handle,
//! cycling through them), as the pool's round-robin spreads requests. The reported time is wall
//! time divided by the records of all threads: aggregate nanoseconds per record, so a 2-thread
//! figure below the 1-thread one means recording scales. `shared` runs 2 threads on one
//! credential, the worst case; `in_memory_sharded` has one shard per core; `3cred_rr` runs 2 threads that both cycle through the same three
//! credentials (what two tasks calling a pool of three do); `prometheus_1shard` is the
//! Prometheus recorder with its counters unsharded, for comparison.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use oauth_core::CredentialId;
use oauth_metrics::prometheus_client::registry::Registry;
use oauth_metrics::{
    CredentialRecorder, Fanout, InMemoryRecorder, MetricsRecorder, PrometheusConfig,
    PrometheusRecorder, RequestOutcome,
};

fn handles(recorder: &dyn MetricsRecorder, n: usize) -> Vec<Arc<dyn CredentialRecorder>> {
    (0..n)
        .map(|i| {
            let id = CredentialId::new(format!("account-{i}")).expect("valid id");
            recorder.handle(&id)
        })
        .collect()
}

/// How the threads share the handles.
#[derive(Clone, Copy, PartialEq)]
enum Split {
    /// Thread `t` of `n` takes every `n`-th handle.
    Disjoint,
    /// Every thread cycles through every handle.
    All,
    /// Every thread uses the first handle only.
    First,
}

/// Runs `iters` records on each of `threads` threads; returns wall time per record.
fn run(
    handles: &[Arc<dyn CredentialRecorder>],
    threads: usize,
    split: Split,
    iters: u64,
) -> Duration {
    let now = Utc::now();
    let barrier = Barrier::new(threads);
    let elapsed = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mine: Vec<&Arc<dyn CredentialRecorder>> = match split {
                        Split::First => handles.iter().take(1).collect(),
                        Split::All => handles
                            .iter()
                            .skip(t)
                            .chain(handles.iter().take(t))
                            .collect(),
                        Split::Disjoint => handles.iter().skip(t).step_by(threads).collect(),
                    };
                    barrier.wait();
                    let start = Instant::now();
                    let mut i = 0;
                    for _ in 0..iters {
                        mine[i].record_request(
                            black_box(120),
                            black_box(Duration::from_millis(800)),
                            black_box(RequestOutcome::Success),
                            black_box(now),
                        );
                        i += 1;
                        if i == mine.len() {
                            i = 0;
                        }
                    }
                    start.elapsed()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .max()
            .unwrap_or_default()
    });
    elapsed / u32::try_from(threads).expect("few threads")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("record_request");
    for credentials in [3usize, 10_000] {
        let memory = InMemoryRecorder::new();
        let mut registry = Registry::with_prefix("bench");
        let prometheus = PrometheusRecorder::new(&mut registry, "provider");
        let mut registry1 = Registry::with_prefix("bench");
        let unsharded = PrometheusRecorder::with_config(
            &mut registry1,
            "provider",
            PrometheusConfig::new().with_shards(1),
        );
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let memory_sharded = InMemoryRecorder::new().with_shards(cores);
        let recorders: [(&str, &dyn MetricsRecorder); 4] = [
            ("in_memory", &memory),
            ("in_memory_sharded", &memory_sharded),
            ("prometheus", &prometheus),
            ("prometheus_1shard", &unsharded),
        ];
        for (name, recorder) in recorders {
            let hs = handles(recorder, credentials);
            for threads in [1usize, 2] {
                let id = BenchmarkId::new(name, format!("{credentials}cred/{threads}thr"));
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| run(&hs, threads, Split::Disjoint, iters));
                });
            }
            if credentials == 3 {
                let id = BenchmarkId::new(name, "3cred_rr/2thr");
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| run(&hs, 2, Split::All, iters));
                });
            }
        }
    }
    // Worst case: two threads on one credential.
    let memory = InMemoryRecorder::new();
    let mut registry = Registry::with_prefix("bench");
    let prometheus = PrometheusRecorder::new(&mut registry, "provider");
    let recorders: [(&str, &dyn MetricsRecorder); 2] =
        [("in_memory", &memory), ("prometheus", &prometheus)];
    for (name, recorder) in recorders {
        let hs = handles(recorder, 1);
        group.bench_function(BenchmarkId::new(name, "shared/2thr"), |b| {
            b.iter_custom(|iters| run(&hs, 2, Split::First, iters));
        });
    }
    // What the manager records into: its in-memory recorder plus the application's Prometheus one.
    let memory = Arc::new(InMemoryRecorder::new());
    let mut registry = Registry::with_prefix("bench");
    let fanout = Fanout::new(vec![
        memory,
        Arc::new(PrometheusRecorder::new(&mut registry, "provider")),
    ]);
    let hs = handles(&fanout, 3);
    group.bench_function(
        BenchmarkId::new("fanout_memory_prometheus", "3cred/1thr"),
        |b| {
            b.iter_custom(|iters| run(&hs, 1, Split::Disjoint, iters));
        },
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
