use std::collections::BTreeMap;
use std::time::Duration;

use oauth_core::ManualClock;
use oauth_manager::FailureKind;

use crate::support::{pool, t0};

fn counts(manager: &oauth_manager::OAuthKeyManager, calls: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..calls {
        let c = manager
            .next_credential()
            .expect("a credential is available");
        *seen.entry(c.id.to_string()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn three_credentials_nine_calls_give_each_exactly_three() {
    let clock = ManualClock::new(t0());
    let manager = pool(&["c1", "c2", "c3"], &clock).await;
    let seen = counts(&manager, 9);
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        [3, 3, 3],
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_skipped_credentials_share_is_spread_evenly() {
    // Go: with c1 in backoff, c2 got 2/3 of the traffic and c3 1/3.
    let clock = ManualClock::new(t0());
    let manager = pool(&["c1", "c2", "c3"], &clock).await;
    manager.report_failure_kind("c1", FailureKind::Transient);
    let seen = counts(&manager, 300);
    assert_eq!(seen.get("c1"), None);
    assert_eq!(seen.get("c2"), Some(&150), "{seen:?}");
    assert_eq!(seen.get("c3"), Some(&150), "{seen:?}");
}

#[tokio::test]
async fn a_credential_is_selectable_again_when_its_backoff_ends() {
    let clock = ManualClock::new(t0());
    let manager = pool(&["c1", "c2"], &clock).await;
    for _ in 0..3 {
        manager.report_failure_kind("c1", FailureKind::Transient);
    }
    // Third consecutive failure: 4 s backoff.
    assert!(!counts(&manager, 10).contains_key("c1"));
    clock.advance(Duration::from_millis(3_999));
    assert!(!counts(&manager, 10).contains_key("c1"));
    clock.advance(Duration::from_millis(1));
    assert_eq!(counts(&manager, 10).get("c1"), Some(&5));
}

#[tokio::test]
async fn when_nothing_is_available_the_error_says_when_the_first_will_be() {
    let clock = ManualClock::new(t0());
    let manager = pool(&["c1", "c2"], &clock).await;
    manager.report_failure_kind(
        "c1",
        FailureKind::rate_limited(Some(Duration::from_secs(30))),
    );
    manager.report_failure_kind(
        "c2",
        FailureKind::rate_limited(Some(Duration::from_secs(90))),
    );
    let err = manager.next_credential().expect_err("all cooling down");
    assert_eq!(
        err.next_available_at,
        Some(t0() + chrono::TimeDelta::seconds(30))
    );
    assert_eq!(err.total, 2);
    assert!(err.to_string().contains("2026-11-30T12:00:30"), "{err}");

    manager.report_failure_kind("c1", FailureKind::PermanentAuth);
    manager.report_failure_kind("c2", FailureKind::PermanentAuth);
    let err = manager
        .next_credential()
        .expect_err("all need re-authorization");
    assert_eq!(err.next_available_at, None);
    assert!(
        err.to_string().contains("none will recover by itself"),
        "{err}"
    );
}

#[tokio::test]
async fn disabled_credentials_are_not_selected_until_enabled() {
    let clock = ManualClock::new(t0());
    let manager = pool(&["c1", "c2"], &clock).await;
    manager.disable("c1").expect("known id");
    assert_eq!(counts(&manager, 4).get("c2"), Some(&4));
    manager.enable("c1").expect("known id");
    assert_eq!(counts(&manager, 4).get("c1"), Some(&2));
    assert!(manager.disable("nope").is_err());
}

#[tokio::test]
async fn least_in_flight_avoids_a_credential_busy_with_a_slow_call() {
    use std::sync::Arc;

    use oauth_manager::{FailoverSettings, Selection};

    let clock = ManualClock::new(t0());
    let manager = crate::support::builder(&["c1", "c2"], &clock)
        .failover(FailoverSettings::default().with_selection(Selection::LeastInFlight))
        .build()
        .await
        .expect("builds");
    // Park one slow call, then watch where the next picks go.
    let release = Arc::new(tokio::sync::Notify::new());
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let hold = {
        let (manager, release) = (manager.clone(), Arc::clone(&release));
        tokio::spawn(async move {
            manager
                .execute_with_failover(|c| {
                    let (release, started) = (Arc::clone(&release), started_tx.clone());
                    async move {
                        let _ = started.send(c.id.to_string());
                        release.notified().await;
                        Ok::<_, crate::support::TestError>(((), None))
                    }
                })
                .await
        })
    };
    let loaded = started_rx.recv().await.expect("the slow call started");
    let other = if loaded == "c1" { "c2" } else { "c1" };
    let seen = counts(&manager, 20);
    assert_eq!(
        seen.get(other),
        Some(&20),
        "{seen:?}: every pick avoids the busy {loaded}"
    );
    // notify_one keeps a permit if the call has not reached its wait yet.
    release.notify_one();
    hold.await.expect("ran").expect("served");
    // Idle again: plain alternation.
    let seen = counts(&manager, 20);
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        [10, 10],
        "{seen:?}"
    );
}

#[tokio::test]
async fn weights_share_the_traffic_in_proportion_and_interleave() {
    let clock = ManualClock::new(t0());
    let manager = crate::support::builder(&["big", "small"], &clock)
        .weight("big", 3)
        .build()
        .await
        .expect("builds");
    let picks: Vec<String> = (0..40)
        .map(|_| manager.next_credential().expect("available").id.to_string())
        .collect();
    let big = picks.iter().filter(|p| *p == "big").count();
    assert_eq!((big, picks.len() - big), (30, 10), "{picks:?}");
    let longest_run = picks
        .chunk_by(|a, b| a == b)
        .map(<[String]>::len)
        .max()
        .unwrap_or(0);
    assert!(longest_run <= 3, "spread, not bunched: {picks:?}");

    // Weights change at run time; a backoff still takes the credential out whatever its weight.
    manager.set_weight("small", 3).expect("valid");
    assert_eq!(
        counts(&manager, 30).values().copied().collect::<Vec<_>>(),
        [15, 15]
    );
    manager.report_failure_kind("big", FailureKind::Transient);
    assert_eq!(counts(&manager, 6).get("small"), Some(&6));

    assert!(manager.set_weight("small", 0).is_err());
    assert!(manager.set_weight("small", 17).is_err());
    assert!(manager.set_weight("nobody", 2).is_err());
    let err = crate::support::builder(&["a"], &clock)
        .weight("ghost", 2)
        .build()
        .await
        .expect_err("unknown id");
    assert!(crate::support::chain(&err).contains("ghost"), "{err}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Over N picks with k available credentials, each gets ⌊N/k⌋ or ⌈N/k⌉, whatever the pool
    /// size, which credentials are in backoff, and N.
    #[test]
    fn round_robin_is_fair_over_the_available(
        n in 1usize..24,
        down_mask in proptest::prelude::any::<u32>(),
        picks in 1usize..200,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let clock = ManualClock::new(t0());
        let ids: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let manager = rt.block_on(pool(&refs, &clock));
        let down: Vec<&str> = refs.iter().enumerate()
            .filter(|(i, _)| down_mask & (1 << i) != 0 && *i + 1 < n) // keep at least one up
            .map(|(_, id)| *id)
            .collect();
        for id in &down {
            manager.report_failure_kind(id, FailureKind::rate_limited(Some(Duration::from_secs(60))));
        }
        let seen = counts(&manager, picks);
        let k = n - down.len();
        for id in &down {
            proptest::prop_assert!(!seen.contains_key(*id));
        }
        proptest::prop_assert_eq!(seen.values().sum::<usize>(), picks);
        for count in seen.values() {
            proptest::prop_assert!(*count == picks / k || *count == picks.div_ceil(k), "{seen:?}");
        }
    }
}
