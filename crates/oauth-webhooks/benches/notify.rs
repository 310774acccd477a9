//! The cost of `notify` when the endpoint never answers: a loop of 100,000 notifications against a
//! TCP listener that accepts connections and never responds, compared with a bare `VecDeque` push
//! (the cost of enqueueing) and with `NoopNotifier` (the cost of the async trait call); and
//! `Monitor::notify_event` (routing an oauth-core event under the current configuration, read
//! through arc-swap, then enqueueing).

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use oauth_core::{CredentialId, Event, EventKind, FailureKind};
use oauth_webhooks::{
    Monitor, MonitoringConfig, NoopNotifier, Notifier, WebhookEvent, WebhookEventType,
    WebhookNotifier, WebhookSecret,
};
use serde_json::{Map, json};

const N: u64 = 100_000;

fn event() -> WebhookEvent {
    let mut details = Map::new();
    details.insert("failure_rate".into(), json!(0.75));
    details.insert("total_requests".into(), json!(20));
    WebhookEvent::new(
        WebhookEventType::Failure,
        None,
        Utc::now(),
        "High failure rate detected: 75.0%",
        details,
    )
}

/// Accepts connections and holds them open without ever reading or answering.
async fn black_hole() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    addr
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = rt.block_on(black_hole());
    let config = MonitoringConfig {
        webhook_url: Some(format!("http://{addr}/webhook")),
        signing_secrets: vec![
            WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret"),
        ],
        timeout: Duration::from_secs(3600),
        ..MonitoringConfig::default()
    };
    let notifier = rt
        .block_on(async { WebhookNotifier::new(&config) })
        .expect("notifier");
    let ev = event();

    let mut group = c.benchmark_group("notify_100k");
    group.throughput(Throughput::Elements(N));
    group.sample_size(20);
    group.bench_function("webhook_never_answers", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..N {
                    notifier.notify(black_box(ev.clone())).await;
                }
            });
        });
    });
    let monitor = Monitor::new(Some(config.clone())).expect("monitor");
    let core = Event::new(
        Utc::now(),
        EventKind::RefreshFailed {
            credential: CredentialId::new("team").expect("valid id"),
            reason: FailureKind::Transient,
            consecutive_failures: 1,
        },
    );
    group.bench_function("monitor_route_and_enqueue_never_answers", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..N {
                    black_box(monitor.notify_event(black_box(&core)));
                }
            });
        });
    });
    group.bench_function("noop_notifier", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..N {
                    NoopNotifier.notify(black_box(ev.clone())).await;
                }
            });
        });
    });
    group.bench_function("vecdeque_push_baseline", |b| {
        let mut q = VecDeque::with_capacity(1024);
        b.iter(|| {
            for _ in 0..N {
                if q.len() >= 1024 {
                    q.pop_front();
                }
                q.push_back(black_box(ev.clone()));
            }
        });
    });
    group.finish();

    let stats = notifier.stats();
    eprintln!(
        "webhook notifier after the run: delivered {}, dropped {}, in flight {}, queued {}",
        stats.delivered, stats.dropped, stats.in_flight, stats.queued
    );
    drop(notifier);
    drop(monitor);
    rt.shutdown_timeout(Duration::from_millis(100));
}

criterion_group!(benches, bench);
criterion_main!(benches);
