//! A PostgreSQL outage as an operator sees it: a replica's pool over a `PostgresStore`, under
//! traffic, with the Prometheus recorder and signed webhooks to a receiver. PostgreSQL is stopped
//! (fast shutdown) and started again 2 s later. The pool reports the outage while it lasts and its
//! end: a `StoreDisconnected` then a `StoreReconnected` event (once each), the `store_connected`
//! gauge 0 then 1, `health_summary().store_connected` false then true, and two `store_outage`
//! webhooks (`details.phase` disconnected, reconnected); every call is served throughout with
//! the tokens the pool holds.
//!
//! The tokens live 10 minutes, inside the maintenance loop's default buffer + lead (5 min +
//! 5-10 min), ticking every 250 ms: each supplied token (lifetime unknown) is refreshed once at
//! the first tick, and the 10-minute tokens the pool then holds are not refreshed again (half
//! their lifetime is minutes away), before, during or after the outage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use oauth_core::{Event, EventKind};
use oauth_manager::metrics::PrometheusRecorder;
use oauth_manager::store::CredentialStore;
use oauth_manager::{MaintenanceConfig, OAuthKeyManager, SystemClock};
use oauth_store_postgres::{PostgresConfig, PostgresStore};
use oauth_testkit::provider::ChatClient;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::pg::Cluster;
use crate::replicas::runtime;
use crate::support::{PROVIDER, chat, credential, monitoring, refresher, report, signed_receiver};

/// How long PostgreSQL stays down.
const DOWN: Duration = Duration::from_secs(2);
/// The accounts, and the access tokens' lifetime.
const ACCOUNTS: [&str; 2] = ["acct-a", "acct-b"];
const TOKEN_TTL: Duration = Duration::from_secs(600);

fn store_config(url: &str) -> PostgresConfig {
    PostgresConfig::from_url(url)
        .expect("database url")
        .replica_id("replica-0")
        .pool_size(4)
        .connect_timeout(Duration::from_secs(1))
        .operation_timeout(Duration::from_secs(2))
        .health_interval(Duration::from_millis(500))
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(500))
}

/// The `store_connected` gauge in a scrape of `registry`, if exported.
fn gauge(registry: &Registry) -> Option<f64> {
    let mut text = String::new();
    prometheus_text::encode(&mut text, registry).expect("encodes");
    text.lines()
        .find(|l| l.starts_with("oauth_pool_store_connected{"))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(series, v)| {
            assert!(
                series.contains(&format!("provider=\"{PROVIDER}\"")),
                "{series}"
            );
            v.parse().ok()
        })
}

/// What the pool says about its store: the manager's answer, the health report's, the gauge's.
fn says(pool: &OAuthKeyManager, registry: &Registry) -> (Option<bool>, Option<bool>, Option<f64>) {
    (
        pool.store_connected(),
        pool.health_summary().store_connected,
        gauge(registry),
    )
}

#[test]
#[allow(clippy::too_many_lines)]
fn a_database_outage_is_reported_while_calls_are_served() {
    let cluster = Cluster::start();
    let rt = runtime();
    let db = rt.block_on(cluster.fresh_database());
    let (tokens, provider, receiver) = rt.block_on(async {
        let (tokens, provider) = crate::replicas::servers(TOKEN_TTL).await;
        (tokens, provider, signed_receiver().await)
    });
    let mut registry = Registry::with_prefix("oauth_pool");
    let recorder = PrometheusRecorder::new(&mut registry, PROVIDER);
    let pool = rt.block_on(async {
        let store = PostgresStore::connect(store_config(&db))
            .await
            .expect("connects");
        let now = Utc::now();
        for id in ACCOUNTS {
            let grant = tokens.issue_grant(&format!("client-{id}"));
            store
                .save(PROVIDER, &credential(id, &grant, now), None)
                .await
                .expect("seeded");
        }
        OAuthKeyManager::builder(PROVIDER)
            .store(store)
            .refresher_arc(refresher(&tokens.url(), Arc::new(SystemClock)))
            .metrics(Arc::new(recorder))
            .monitoring(monitoring(receiver.url()))
            .build()
            .await
            .expect("pool builds")
    });

    // The outage events, with when they arrived.
    let seen: Arc<Mutex<Vec<(Event, Instant)>>> = Arc::default();
    let mut events = pool.subscribe();
    let sink = Arc::clone(&seen);
    rt.spawn(async move {
        while let Ok(event) = events.recv().await {
            if matches!(
                event.kind,
                EventKind::StoreDisconnected { .. } | EventKind::StoreReconnected { .. }
            ) {
                sink.lock().expect("lock").push((event, Instant::now()));
            }
        }
    });
    let maintenance = rt.block_on(async {
        pool.spawn_maintenance(
            MaintenanceConfig::default().with_interval(Duration::from_millis(250)),
        )
        .expect("maintenance starts")
    });

    // Traffic, one call at a time, for the whole test.
    let (ok, failed, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let traffic = {
        let (pool, ok, failed, stop, errors) = (
            pool.clone(),
            Arc::clone(&ok),
            Arc::clone(&failed),
            Arc::clone(&stop),
            Arc::clone(&errors),
        );
        let client = ChatClient::new(provider.url()).with_timeout(Duration::from_secs(5));
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match chat(&pool, &client, "hello during an outage").await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.lock().expect("lock").push(e.to_string());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let wait_for = |n: usize, limit: Duration| -> Option<Instant> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some((_, at)) = seen.lock().expect("lock").get(n - 1) {
                return Some(*at);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    };

    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(says(&pool, &registry), (Some(true), Some(true), Some(1.0)));
    let ok_before = ok.load(Ordering::Relaxed);
    let requests_before = tokens.stats().requests;

    let stopping = Instant::now();
    cluster.stop();
    let stop_took = stopping.elapsed();
    let down_at = wait_for(1, Duration::from_secs(10)).expect("StoreDisconnected");
    // A fast shutdown closes the LISTEN connection at once: the event may come before
    // `pg_ctl stop` returns.
    let down_after = down_at.saturating_duration_since(stopping);
    assert_eq!(
        says(&pool, &registry),
        (Some(false), Some(false), Some(0.0))
    );
    let json = pool.export_json().expect("json");
    assert!(json.contains("\"store_connected\": false"), "{json}");
    std::thread::sleep(DOWN);
    let ok_during = ok.load(Ordering::Relaxed) - ok_before;
    let requests_during = tokens.stats().requests - requests_before;

    cluster.start_again();
    let started = Instant::now();
    let up_at = wait_for(2, Duration::from_secs(20)).expect("StoreReconnected");
    let up_after = up_at.saturating_duration_since(started);
    assert_eq!(says(&pool, &registry), (Some(true), Some(true), Some(1.0)));

    let webhooks = rt.block_on(async {
        crate::support::eventually(Duration::from_secs(10), || {
            receiver
                .accepted_events()
                .iter()
                .filter(|e| e["type"] == "store_outage")
                .count()
                >= 2
        })
        .await;
        receiver
            .accepted_events()
            .into_iter()
            .filter(|e| e["type"] == "store_outage")
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        let _ = traffic.await;
        maintenance.stop().await;
    });

    let seen = seen.lock().expect("lock").clone();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let server = tokens.stats();
    let phases: Vec<&str> = webhooks
        .iter()
        .filter_map(|w| w["details"]["phase"].as_str())
        .collect();
    let figures = json!({
        "postgres_down_s": DOWN.as_secs(),
        "pg_ctl_stop_ms": stop_took.as_millis() as u64,
        "disconnected_event_after_stop_began_ms": down_after.as_millis() as u64,
        "reconnected_event_after_start_ms": up_after.as_millis() as u64,
        "outage_events": seen.len(),
        "store_outage_webhooks": webhooks.len(),
        "calls_ok": ok,
        "calls_ok_while_down": ok_during,
        "calls_failed": failed,
        "token_ttl_s": TOKEN_TTL.as_secs(),
        "token_requests": server.requests,
        "token_requests_before_outage": requests_before,
        "token_requests_while_down": requests_during,
    });
    report(module_path!(), figures.clone());

    assert_eq!(seen.len(), 2, "one event each way: {figures} {seen:?}");
    let (down, up) = (&seen[0].0, &seen[1].0);
    assert_eq!(
        down.kind,
        EventKind::StoreDisconnected {
            provider: PROVIDER.into()
        }
    );
    assert_eq!(
        up.kind,
        EventKind::StoreReconnected {
            provider: PROVIDER.into(),
            disconnected_at: down.at,
        }
    );
    assert_eq!(phases, ["disconnected", "reconnected"], "{webhooks:?}");
    assert!(
        webhooks
            .iter()
            .all(|w| w["details"]["provider"] == PROVIDER),
        "{webhooks:?}"
    );
    assert_eq!(
        failed,
        0,
        "every call served: {figures} {:?}",
        errors.lock().expect("lock")
    );
    assert!(ok_during > 20, "calls served while it was down: {figures}");
    assert_eq!(
        (requests_before, requests_during, server.requests),
        (2, 0, 2),
        "one refresh per supplied token at the first tick, none after (not one per tick): {figures}"
    );
    assert_eq!(server.refreshes, 2, "{figures}");
    drop(pool);
    drop(provider);
    drop(tokens);
    drop(receiver);
    drop(rt);
    drop(cluster);
}
