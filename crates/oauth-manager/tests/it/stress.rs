use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use oauth_core::ManualClock;
use oauth_manager::{FailureKind, OAuthKeyManager};

use crate::support::{TestError, creds, t0};

/// A tiny deterministic generator per task (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    ok: u64,
    failed: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_of_ten_thousand_calls_with_random_failures() {
    let clock = ManualClock::new(t0());
    let ids = ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"];
    let manager = OAuthKeyManager::builder("stress")
        .credentials(creds(&ids))
        .clock(Arc::new(clock.clone()))
        .build()
        .await
        .expect("builds");
    let seen: Arc<Mutex<BTreeMap<String, Seen>>> = Arc::default();
    let tasks: Vec<_> = (0..64u64)
        .map(|task| {
            let (manager, clock, seen) = (manager.clone(), clock.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                let mut rng = Rng(task);
                let mut local: BTreeMap<String, Seen> = BTreeMap::new();
                let (mut served, mut unavailable) = (0u64, 0u64);
                for call in 0..10_000u64 {
                    if call % 500 == 0 {
                        // Time moves: backoffs end while traffic continues.
                        clock.advance(Duration::from_millis(700));
                    }
                    let roll = rng.next() % 100;
                    let outcome = if roll < 10 {
                        Some(FailureKind::Transient)
                    } else if roll < 12 {
                        Some(FailureKind::rate_limited(Some(Duration::from_secs(2))))
                    } else if roll < 13 {
                        Some(FailureKind::RequestScoped)
                    } else {
                        None
                    };
                    let tally = Mutex::new(Vec::new());
                    let result = manager
                        .execute_with_failover(|c| {
                            tally.lock().expect("not poisoned").push(c.id.to_string());
                            async move {
                                match outcome {
                                    Some(kind) => Err(TestError::new(kind, "scripted")),
                                    None => Ok(((), None)),
                                }
                            }
                        })
                        .await;
                    for (i, id) in tally
                        .into_inner()
                        .expect("not poisoned")
                        .into_iter()
                        .enumerate()
                    {
                        let e = local.entry(id).or_default();
                        if outcome.is_none() && i == 0 {
                            e.ok += 1;
                        } else {
                            e.failed += 1;
                        }
                    }
                    match result {
                        Ok(_) => served += 1,
                        Err(_) => unavailable += 1,
                    }
                    if call % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                let mut all = seen.lock().expect("not poisoned");
                for (id, s) in local {
                    let e = all.entry(id).or_default();
                    e.ok += s.ok;
                    e.failed += s.failed;
                }
                (served, unavailable)
            })
        })
        .collect();
    let mut total_calls = 0;
    for t in tasks {
        let (served, unavailable) = t.await.expect("no panic");
        total_calls += served + unavailable;
    }
    assert_eq!(total_calls, 64 * 10_000);

    // Per-credential counters agree with what the operations saw, and sum to the totals.
    let seen = seen.lock().expect("not poisoned").clone();
    let metrics = manager.all_metrics();
    let (mut sum_requests, mut sum_seen) = (0, 0);
    for id in ids {
        let s = seen.get(id).copied().unwrap_or_default();
        let m = metrics.get(id).expect("every credential was used");
        assert_eq!(m.success_count, s.ok, "{id} successes");
        assert_eq!(m.error_count, s.failed, "{id} failures");
        assert_eq!(m.request_count, m.success_count + m.error_count, "{id}");
        sum_requests += m.request_count;
        sum_seen += s.ok + s.failed;
    }
    assert_eq!(sum_requests, sum_seen);
    let summary = manager.health_summary();
    assert_eq!(summary.total_requests, sum_requests);

    // Every credential is selectable again once its backoff ends.
    clock.advance(Duration::from_secs(3_600));
    let mut selected = std::collections::BTreeSet::new();
    for _ in 0..ids.len() * 2 {
        selected.insert(manager.next_credential().expect("available").id.to_string());
    }
    assert_eq!(selected.len(), ids.len(), "{selected:?}");
}
