//! `record_request` through a cached per-credential handle, for the in-memory and the Prometheus
//! recorders, with 3 and 10,000 credentials, on 1 and 2 threads.
//!
//! Each thread records into its own credentials (thread `t` of `n` takes every `n`-th handle,
//! cycling through them), as the pool's round-robin spreads requests. The reported time is wall
//! time divided by the records of all threads: aggregate nanoseconds per record, so a 2-thread
//! figure below the 1-thread one means recording scales. `shared` runs 2 threads on one
//! credential, the worst case. `in_memory` is the default (a credential's counters get one shard
//! per core the first time two threads record on it at once), `in_memory_1shard` never shards
//! them; `3cred_rr` runs 2 threads that both cycle through the same three credentials (what two
//! tasks calling a pool of three do); `prometheus_1shard` is the Prometheus recorder with its
//! counters unsharded, for comparison.
//!
//! The `footprint` group registers 100,000 credentials in each recorder under a counting
//! allocator and reports the live heap bytes per credential (handles kept, as the pool keeps them;
//! ids excluded) next to the time of one record at that pool size, in `new/extra.json` for
//! `cargo xtask bench`.

use std::alloc::System;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use oauth_core::CredentialId;
use oauth_metrics::prometheus_client::registry::Registry;
use oauth_metrics::{
    CredentialRecorder, Fanout, Granularity, InMemoryRecorder, MetricsRecorder, PrometheusConfig,
    PrometheusRecorder, RequestOutcome,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

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
        let memory_1shard = InMemoryRecorder::new().with_shards(1);
        let recorders: [(&str, &dyn MetricsRecorder); 4] = [
            ("in_memory", &memory),
            ("in_memory_1shard", &memory_1shard),
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

fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion")
}

/// Live heap bytes per credential of `recorder` once `ids` are registered, with their handles.
fn bytes_per_credential(
    recorder: &dyn MetricsRecorder,
    ids: &[CredentialId],
) -> (f64, Vec<Arc<dyn CredentialRecorder>>) {
    let region = Region::new(GLOBAL);
    let mut hs = Vec::with_capacity(ids.len());
    let vec_bytes = region.change();
    for id in ids {
        hs.push(recorder.handle(id));
    }
    let stats = region.change();
    let live = (stats.bytes_allocated - vec_bytes.bytes_allocated) as f64
        - (stats.bytes_deallocated - vec_bytes.bytes_deallocated) as f64;
    (live / ids.len() as f64, hs)
}

#[allow(clippy::print_stdout)] // the figures are the point of this group
fn footprint(c: &mut Criterion) {
    const N: usize = 100_000;
    let ids: Vec<CredentialId> = (0..N)
        .map(|i| CredentialId::new(format!("account-{i:06}")).expect("valid id"))
        .collect();
    let mut group = c.benchmark_group("footprint");
    type Make = Box<dyn Fn(&mut Registry) -> Box<dyn MetricsRecorder>>;
    let makers: [(&str, Make); 5] = [
        ("in_memory", Box::new(|_| Box::new(InMemoryRecorder::new()))),
        (
            "in_memory_1shard",
            Box::new(|_| Box::new(InMemoryRecorder::new().with_shards(1))),
        ),
        (
            "prometheus",
            Box::new(|r| Box::new(PrometheusRecorder::new(r, "provider"))),
        ),
        (
            "prometheus_credential_histograms",
            Box::new(|r| {
                let config =
                    PrometheusConfig::new().with_granularity(Granularity::CredentialHistograms);
                Box::new(PrometheusRecorder::with_config(r, "provider", config))
            }),
        ),
        (
            "prometheus_per_provider",
            Box::new(|r| {
                let config = PrometheusConfig::new().with_granularity(Granularity::Provider);
                Box::new(PrometheusRecorder::with_config(r, "provider", config))
            }),
        ),
    ];
    for (name, make) in makers {
        let mut registry = Registry::with_prefix("bench");
        let recorder = make(&mut registry);
        let (bytes, hs) = bytes_per_credential(recorder.as_ref(), &ids);
        println!("footprint/{name}/100000cred: {bytes:.0} bytes per credential");
        let parameter = "100000cred/1thr";
        group.bench_function(BenchmarkId::new(name, parameter), |b| {
            b.iter_custom(|iters| run(&hs, 1, Split::Disjoint, iters));
        });
        let dir = criterion_dir()
            .join("footprint")
            .join(name)
            .join(parameter.replace('/', "_")) // as criterion names the directory
            .join("new");
        if std::fs::create_dir_all(&dir).is_ok() {
            let json = format!(r#"{{"bytes_per_credential": {bytes:.0}}}"#);
            let _ = std::fs::write(dir.join("extra.json"), json);
        }
    }
    group.finish();
}

criterion_group!(benches, bench, footprint);
criterion_main!(benches);
