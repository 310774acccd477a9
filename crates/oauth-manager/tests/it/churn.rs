//! Issue 13 ("what it must show"): a churn test. On a two-thread runtime, tasks concurrently add
//! and remove credentials, mark them for rotation and decommission them, force refreshes, and
//! make calls that fail over (overloaded, 401) or succeed — against a `MemoryStore`, with a
//! Prometheus recorder attached and the reuse-detecting refresher. Afterwards: no removed or
//! decommissioned id is back in the store, the pool and the store agree, and no removed id has a
//! series in `all_metrics()` or in the Prometheus exposition; no refresh token was used twice.
//!
//! The work is a bounded number of operations (not a wall-clock duration); time is a
//! `ManualClock`, advanced by the rotating task. The only real waits are the refresher's 1 ms
//! latency, which keeps refreshes in flight while credentials leave.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use oauth_core::ManualClock;
use oauth_manager::metrics::prometheus_client::registry::Registry;
use oauth_manager::metrics::{PrometheusRecorder, RequestOutcome, encode_openmetrics};
use oauth_manager::rotation::RotationPolicy;
use oauth_manager::store::{CredentialStore, MemoryStore};
use oauth_manager::{Clock, FailureKind, OAuthKeyManager, Usage};

use crate::support::{TestError, builder_of, counting_refresher, cred};

/// Rounds of the add/remove task.
const ADDS: usize = 400;
/// Rotations (mark, then decommission) along one chain of credentials.
const ROTATIONS: usize = 200;
/// Forced refreshes of whatever is in the pool.
const REFRESHES: usize = 500;
/// Calls per calling task (two of them).
const CALLS: usize = 2_000;

/// A small deterministic generator (xorshift), so runs differ only by scheduling.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn index(state: &mut u64, len: usize) -> usize {
    usize::try_from(next(state) % u64::try_from(len.max(1)).unwrap_or(1)).unwrap_or(0)
}

async fn stored_ids(store: &MemoryStore) -> BTreeSet<String> {
    store
        .load_all("test")
        .await
        .expect("readable")
        .into_iter()
        .map(|v| v.value.id.to_string())
        .collect()
}

/// Calls that land on whatever credential is next, yield mid-operation (so a credential may leave
/// while the call is on it), and end in one of: overloaded (fail over), 401 (refresh and retry),
/// or success with usage.
async fn caller(manager: OAuthKeyManager, seed: u64, ops: Arc<AtomicUsize>) -> (usize, usize) {
    let (mut state, mut ok, mut failed) = (seed, 0, 0);
    for _ in 0..CALLS {
        let roll = next(&mut state) % 10;
        let result = manager
            .execute_with_failover(|_credential| async move {
                tokio::task::yield_now().await;
                match roll {
                    0..=2 => Err(TestError::new(
                        FailureKind::Overloaded { retry_after: None },
                        "overloaded",
                    )),
                    3 => Err(TestError::new(FailureKind::Unauthorized, "401")),
                    _ => Ok((
                        (),
                        Some(Usage {
                            prompt_tokens: 3,
                            completion_tokens: 4,
                            total_tokens: 7,
                        }),
                    )),
                }
            })
            .await;
        ops.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_no_resurrected_ids_and_no_zombie_series() {
    let started = Instant::now();
    let clock = ManualClock::new(crate::support::t0());
    let store = Arc::new(MemoryStore::new());
    let refresher = counting_refresher(&clock, Duration::from_millis(1), None);
    let mut registry = Registry::with_prefix("oauth_pool");
    let recorder = PrometheusRecorder::new(&mut registry, "test");
    let keep = ["keep-0", "keep-1", "keep-2"];
    let mut initial: Vec<_> = keep
        .iter()
        .map(|id| cred(id, TimeDelta::hours(1)))
        .collect();
    initial.push(cred("rot-0", TimeDelta::hours(1)));
    let manager = builder_of(initial, &clock)
        .store_arc(Arc::clone(&store) as Arc<dyn CredentialStore>)
        .refresher_arc(Arc::clone(&refresher.refresher))
        .rotation_policy(RotationPolicy {
            enabled: true,
            rotation_interval: Duration::from_secs(30 * 86_400),
            grace_period: Duration::ZERO,
            auto_decommission: true,
        })
        .metrics(recorder)
        .build()
        .await
        .expect("builds");
    let ops = Arc::new(AtomicUsize::new(0));

    // Adds a credential, refreshes it while removing it, then reports a late request on it by id.
    let adder = {
        let (manager, ops) = (manager.clone(), Arc::clone(&ops));
        tokio::spawn(async move {
            let mut removed = Vec::new();
            for round in 0..ADDS {
                let id = format!("churn-{round}");
                manager
                    .add_credential(cred(&id, TimeDelta::minutes(2)))
                    .await
                    .expect("added");
                let refresh = manager.refresh_now(&id);
                let remove = async {
                    for _ in 0..(round % 4) {
                        tokio::task::yield_now().await;
                    }
                    manager.remove_credential(&id).await
                };
                let (_, removal) = tokio::join!(refresh, remove);
                removal.expect("removed");
                manager.record_request(&id, 10, Duration::from_millis(5), RequestOutcome::Success);
                let _ = manager.record_tokens(&id, 5);
                ops.fetch_add(4, Ordering::Relaxed);
                removed.push(id);
            }
            removed
        })
    };

    // A chain of rotations: `rot-n` is marked in favour of `rot-(n+1)` while being refreshed, and
    // decommissioned once its (zero) grace has passed.
    let rotator = {
        let (manager, ops, clock) = (manager.clone(), Arc::clone(&ops), clock.clone());
        tokio::spawn(async move {
            let mut decommissioned = Vec::new();
            for n in 0..ROTATIONS {
                let (old, new) = (format!("rot-{n}"), format!("rot-{}", n + 1));
                let mut replacement = cred(&new, TimeDelta::hours(1));
                replacement.created_at = clock.now();
                let (_, marked) = tokio::join!(
                    manager.refresh_now(&old),
                    manager.mark_for_rotation(&old, replacement)
                );
                marked.expect("marked");
                clock.advance(Duration::from_secs(1));
                let (_, completed) =
                    tokio::join!(manager.refresh_now(&old), manager.complete_rotation(&old));
                completed.expect("decommissioned");
                ops.fetch_add(4, Ordering::Relaxed);
                decommissioned.push(old);
            }
            decommissioned
        })
    };

    // Forced refreshes of whatever the pool holds at the moment (some leave meanwhile).
    let forcer = {
        let (manager, ops) = (manager.clone(), Arc::clone(&ops));
        tokio::spawn(async move {
            let mut state = 0x9e37_79b9_7f4a_7c15_u64;
            for _ in 0..REFRESHES {
                let ids = manager.credential_ids();
                let id = ids[index(&mut state, ids.len())].clone();
                let _ = manager.refresh_now(id.as_str()).await;
                ops.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let callers = [
        tokio::spawn(caller(
            manager.clone(),
            0x1234_5678_9abc_def1,
            Arc::clone(&ops),
        )),
        tokio::spawn(caller(
            manager.clone(),
            0x0fed_cba9_8765_4321,
            Arc::clone(&ops),
        )),
    ];

    let removed = adder.await.expect("adder joined");
    let decommissioned = rotator.await.expect("rotator joined");
    forcer.await.expect("forcer joined");
    let (mut served, mut failed) = (0, 0);
    for c in callers {
        let (ok, err) = c.await.expect("caller joined");
        served += ok;
        failed += err;
    }
    // Every task is joined and each awaited its own work: nothing is still in flight.

    let gone: BTreeSet<String> = removed.iter().chain(&decommissioned).cloned().collect();
    let stored = stored_ids(&store).await;
    let resurrected: Vec<&String> = gone.iter().filter(|id| stored.contains(*id)).collect();
    let in_pool: BTreeSet<String> = manager
        .credential_ids()
        .iter()
        .map(|id| id.to_string())
        .collect();
    let metric_zombies: Vec<String> = manager
        .all_metrics()
        .into_keys()
        .map(|id| id.to_string())
        .filter(|id| gone.contains(id))
        .collect();
    let text = encode_openmetrics(&registry).expect("encodes");
    let series_zombies: Vec<&String> = gone
        .iter()
        .filter(|id| text.contains(&format!("credential=\"{id}\"")))
        .collect();
    let series_lines = text.lines().filter(|l| l.contains("credential=\"")).count();
    let live_series: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split("credential=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let reused = refresher.reused.load(Ordering::SeqCst);
    eprintln!(
        "churn: {} operations ({served} calls served, {failed} failed; {} refreshes), \
         {} ids removed ({} removed, {} decommissioned), {} ids checked against {series_lines} \
         credential series (credentials with series: {}), pool {}, store {}, {reused} reused \
         refresh tokens, in {:?}",
        ops.load(Ordering::Relaxed),
        refresher.calls.load(Ordering::SeqCst),
        gone.len(),
        removed.len(),
        decommissioned.len(),
        gone.len(),
        live_series.len(),
        in_pool.len(),
        stored.len(),
        started.elapsed(),
    );

    assert_eq!(gone.len(), ADDS + ROTATIONS, "every removal happened");
    assert!(
        resurrected.is_empty(),
        "resurrected in the store: {resurrected:?}"
    );
    assert_eq!(in_pool, stored, "the pool and the store agree");
    let mut want: BTreeSet<String> = keep.iter().map(|id| (*id).to_owned()).collect();
    want.insert(format!("rot-{ROTATIONS}"));
    assert_eq!(in_pool, want, "only the survivors are left");
    assert!(
        metric_zombies.is_empty(),
        "zombies in all_metrics(): {metric_zombies:?}"
    );
    assert!(
        series_zombies.is_empty(),
        "zombie Prometheus series: {series_zombies:?}"
    );
    assert!(series_lines > 0, "the survivors have series: {text}");
    assert_eq!(reused, 0, "a refresh token was exchanged twice");
    assert!(served > 0, "calls were served");
}
