use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::ManualClock;
use oauth_manager::{
    Credential, CredentialState, EventKind, ExecuteError, ExposeSecret, FailoverSettings,
    FailureKind, OAuthKeyManager, TokioClock, Usage,
};

use crate::support::{TestError, builder, counting_refresher, cred, pool, t0};

#[tokio::test]
async fn one_failing_attempt_then_a_success_calls_the_operation_exactly_twice() {
    let clock = ManualClock::new(t0());
    let manager = pool(&["c1", "c2", "c3"], &clock).await;
    let calls = AtomicUsize::new(0);
    let served = manager
        .execute_with_failover(|c| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(TestError::new(FailureKind::Transient, "boom"))
                } else {
                    Ok((
                        c.id.to_string(),
                        Some(Usage {
                            total_tokens: 7,
                            ..Usage::default()
                        }),
                    ))
                }
            }
        })
        .await
        .expect("second attempt succeeds");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(served.attempts, 2);
    assert_ne!(
        served.credential, "c1",
        "the failing credential is not retried"
    );
    assert_eq!(served.value, served.credential.as_str());
    let c1 = manager.credential_health("c1").expect("known");
    assert_eq!(c1.failure_count, 1);
    assert!(!c1.is_available);
    let m = manager
        .credential_metrics(served.credential.as_str())
        .expect("recorded");
    assert_eq!((m.request_count, m.tokens_used), (1, 7));
    let m = manager.credential_metrics("c1").expect("recorded");
    assert_eq!((m.request_count, m.error_count), (1, 1));
}

#[tokio::test]
async fn attempts_are_bounded_by_min_n_3_and_the_last_error_is_kept() {
    let clock = ManualClock::new(t0());
    let manager = pool(&["c1", "c2", "c3", "c4", "c5"], &clock).await;
    let tried = std::sync::Mutex::new(Vec::new());
    let err = manager
        .execute_with_failover(|c| {
            tried.lock().expect("not poisoned").push(c.id.to_string());
            async move {
                Err::<(String, Option<Usage>), _>(TestError::new(
                    FailureKind::Transient,
                    format!("boom-{}", c.id),
                ))
            }
        })
        .await
        .expect_err("all fail");
    let tried = tried.into_inner().expect("not poisoned");
    assert_eq!(tried.len(), 3, "min(5, 3) attempts");
    let distinct: std::collections::BTreeSet<_> = tried.iter().collect();
    assert_eq!(distinct.len(), 3, "three different credentials: {tried:?}");
    let last = tried.last().expect("three attempts");
    match &err {
        ExecuteError::AttemptsExhausted {
            attempts,
            credential,
            kind,
            ..
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(credential, last.as_str());
            assert_eq!(*kind, FailureKind::Transient);
        }
        other => panic!("unexpected {other}"),
    }
    // The cause is the error's source, not repeated in its message (issue 12).
    assert_eq!(
        crate::support::chain(&err),
        format!(
            "test: all 3 OAuth credential failover attempts failed, the last on credential {last} (transient): boom-{last}"
        )
    );
    assert_eq!(
        err.operation_error().map(|e| e.message.clone()),
        Some(format!("boom-{last}"))
    );
    // Two credentials are left: the next call tries them, and then (issue 14: a transient
    // backoff alone never empties the pool) the one that recovers first, not an error.
    let err = manager
        .execute_with_failover(|_| async {
            Err::<((), Option<Usage>), _>(TestError::new(FailureKind::Transient, "again"))
        })
        .await
        .expect_err("all fail");
    match &err {
        ExecuteError::AttemptsExhausted {
            attempts,
            credential,
            ..
        } => {
            assert_eq!(*attempts, 3);
            assert_eq!(
                credential, "c1",
                "the first to recover takes the third attempt"
            );
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn the_attempt_bound_is_configurable() {
    let clock = ManualClock::new(t0());
    let manager = builder(&["c1", "c2", "c3", "c4", "c5"], &clock)
        .failover(FailoverSettings::default().with_max_attempts(5))
        .build()
        .await
        .expect("builds");
    let calls = AtomicUsize::new(0);
    let _ = manager
        .execute_with_failover(|_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<((), Option<Usage>), _>(TestError::new(FailureKind::Transient, "x")) }
        })
        .await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_request_scoped_error_returns_at_once_and_penalizes_nothing() {
    let clock = ManualClock::new(t0());
    let manager = pool(&["c1", "c2", "c3"], &clock).await;
    let calls = AtomicUsize::new(0);
    let err = manager
        .execute_with_failover(|_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<((), Option<Usage>), _>(TestError::new(
                    FailureKind::RequestScoped,
                    "prompt too long",
                ))
            }
        })
        .await
        .expect_err("rejected");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(matches!(err, ExecuteError::RequestScoped { .. }), "{err}");
    assert!(!err.is_retryable());
    for id in ["c1", "c2", "c3"] {
        let h = manager.credential_health(id).expect("known");
        assert!(
            h.is_available && h.is_healthy && h.failure_count == 0,
            "{id}: {h:?}"
        );
    }
}

#[tokio::test]
async fn a_rate_limit_cools_exactly_that_credential_for_retry_after_and_traffic_moves_on() {
    let clock = ManualClock::new(t0());
    let manager = pool(&["c1", "c2"], &clock).await;
    let served = manager
        .execute_with_failover(|c| async move {
            if c.id == "c1" {
                Err(TestError::new(
                    FailureKind::rate_limited(Some(Duration::from_secs(30))),
                    "429",
                ))
            } else {
                Ok(((), None))
            }
        })
        .await
        .expect("c2 serves");
    assert_eq!(served.credential, "c2");
    let h = manager.credential_health("c1").expect("known");
    assert_eq!(h.state, CredentialState::CoolingDown);
    assert_eq!(h.cooldown_until, Some(t0() + TimeDelta::seconds(30)));
    assert!(h.is_healthy, "a rate limit is not a health fault");
    for _ in 0..4 {
        assert_eq!(manager.next_credential().expect("c2").id, "c2");
    }
    clock.advance(Duration::from_secs(29));
    assert!(!manager.credential_health("c1").expect("known").is_available);
    clock.advance(Duration::from_secs(1));
    assert!(manager.credential_health("c1").expect("known").is_available);
}

#[tokio::test]
async fn unauthorized_triggers_one_refresh_and_one_retry_on_the_same_credential() {
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let manager = builder(&["c1", "c2"], &clock)
        .refresher(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("builds");
    let calls = AtomicUsize::new(0);
    let served = manager
        .execute_with_failover(|c: Arc<Credential>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if c.access_token.expose_secret() == "access-c1-0" {
                    Err(TestError::new(FailureKind::Unauthorized, "401"))
                } else {
                    Ok((c.access_token.expose_secret().to_owned(), None))
                }
            }
        })
        .await
        .expect("succeeds after the refresh");
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(served.credential, "c1");
    assert_eq!(served.attempts, 1);
    assert_eq!(served.value, "access-c1-1");
    assert!(manager.credential_health("c1").expect("known").is_available);
}

#[tokio::test]
async fn a_permanent_auth_failure_needs_reauthorization_alerts_and_fails_over() {
    let clock = ManualClock::new(t0());
    let manager = pool(&["c1", "c2"], &clock).await;
    let mut events = manager.subscribe();
    let served = manager
        .execute_with_failover(|c| async move {
            if c.id == "c1" {
                Err(TestError::new(
                    FailureKind::PermanentAuth,
                    "account disabled",
                ))
            } else {
                Ok(((), None))
            }
        })
        .await
        .expect("c2 serves");
    assert_eq!(served.credential, "c2");
    let h = manager.credential_health("c1").expect("known");
    assert!(h.needs_reauthorization);
    assert_eq!(h.state, CredentialState::NeedsReauthorization);
    clock.advance(Duration::from_secs(86_400));
    assert!(
        !manager.credential_health("c1").expect("known").is_available,
        "no timer ends it"
    );
    let mut saw = false;
    while let Ok(e) = events.try_recv() {
        saw |= matches!(e.kind, EventKind::NeedsReauthorization { ref credential, .. } if credential == "c1");
    }
    assert!(saw, "a NeedsReauthorization event was emitted");
}

#[tokio::test]
async fn a_refresh_failure_on_one_credential_fails_over_to_the_next() {
    // c1's token has expired and its refresh fails: the call moves on to c2 (Go behaviour).
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, Some(FailureKind::Transient));
    let manager = crate::support::builder_of(
        [
            cred("c1", TimeDelta::minutes(-1)),
            cred("c2", TimeDelta::hours(2)),
        ],
        &clock,
    )
    .refresher(Arc::clone(&refresher.refresher))
    .build()
    .await
    .expect("builds");
    let served = manager
        .execute_with_failover(|c| async move { Ok::<_, TestError>((c.id.to_string(), None)) })
        .await
        .expect("c2 serves");
    assert_eq!(served.credential, "c2");
    assert_eq!(served.attempts, 2);
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
    let h = manager.credential_health("c1").expect("known");
    assert_eq!(h.refresh_fail_count, 1);
    let m = manager.credential_metrics("c1").expect("recorded");
    assert_eq!(m.refresh_failures, 1, "refresh failures reach the metrics");
}

#[tokio::test]
async fn a_failed_refresh_of_a_token_that_still_works_does_not_fail_the_call() {
    // The token endpoint is down; c1's token has 2 minutes left (inside the refresh buffer).
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, Some(FailureKind::Transient));
    let manager = crate::support::builder_of([cred("c1", TimeDelta::minutes(2))], &clock)
        .refresher(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("builds");
    let served = crate::support::call_token(&manager)
        .await
        .expect("served with the current token");
    assert_eq!(served.value, "access-c1-0");
    let h = manager.credential_health("c1").expect("known");
    assert_eq!(h.refresh_fail_count, 1);
    // The refresh is retried once its backoff ends, not on every call.
    clock.advance(Duration::from_secs(1));
    let _ = crate::support::call_ok(&manager).await;
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_dead_grant_serves_until_its_access_token_expires_then_leaves_the_pool() {
    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, Some(FailureKind::PermanentAuth));
    let manager = crate::support::builder_of(
        [
            cred("c1", TimeDelta::minutes(4)),
            cred("c2", TimeDelta::hours(2)),
        ],
        &clock,
    )
    .refresher(Arc::clone(&refresher.refresher))
    .build()
    .await
    .expect("builds");
    let op = |c: Arc<Credential>| async move { Ok::<_, TestError>((c.id.to_string(), None)) };
    assert_eq!(
        manager
            .execute_with_failover(op)
            .await
            .expect("served")
            .credential,
        "c1"
    );
    let h = manager.credential_health("c1").expect("known");
    assert!(h.needs_reauthorization && h.is_available, "{h:?}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(
            manager
                .execute_with_failover(op)
                .await
                .expect("served")
                .credential
                .to_string(),
        );
    }
    assert!(
        seen.contains("c1"),
        "still used while its token works: {seen:?}"
    );
    assert_eq!(
        refresher.calls.load(Ordering::SeqCst),
        1,
        "a dead grant is not refreshed again"
    );
    clock.advance(Duration::from_secs(240));
    for _ in 0..4 {
        assert_eq!(
            manager
                .execute_with_failover(op)
                .await
                .expect("served")
                .credential,
            "c2"
        );
    }
    assert!(!manager.credential_health("c1").expect("known").is_available);
}

#[tokio::test]
async fn without_a_refresher_a_credential_is_used_until_its_token_really_expires() {
    // Go made it unusable 5 minutes early (NoOpRefreshFunc inside the buffer).
    let clock = ManualClock::new(t0());
    let manager = crate::support::builder_of(
        [
            cred("c1", TimeDelta::minutes(3)),
            cred("c2", TimeDelta::hours(3)),
        ],
        &clock,
    )
    .build()
    .await
    .expect("builds");
    let op = |c: Arc<Credential>| async move { Ok::<_, TestError>((c.id.to_string(), None)) };
    assert_eq!(
        manager
            .execute_with_failover(op)
            .await
            .expect("served")
            .credential,
        "c1"
    );
    clock.advance(Duration::from_secs(180));
    let served = manager.execute_with_failover(op).await.expect("served");
    let served2 = manager.execute_with_failover(op).await.expect("served");
    assert_eq!(
        (served.credential.as_str(), served2.credential.as_str()),
        ("c2", "c2")
    );
    assert!(
        manager
            .credential_health("c1")
            .expect("known")
            .needs_reauthorization
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_for_the_first_available_credential_is_bounded() {
    let clock = TokioClock::new(t0());
    let manager = OAuthKeyManager::builder("test")
        .credentials(crate::support::creds(&["c1"]))
        .clock(Arc::new(clock))
        .failover(FailoverSettings::default().with_wait_for_available(Duration::from_secs(5)))
        .build()
        .await
        .expect("builds");
    manager.report_failure_kind(
        "c1",
        FailureKind::rate_limited(Some(Duration::from_secs(2))),
    );
    let started = tokio::time::Instant::now();
    let served = crate::support::call_ok(&manager)
        .await
        .expect("served once the cooldown ends");
    assert_eq!(served.credential, "c1");
    assert_eq!(
        started.elapsed().as_secs(),
        2,
        "waited (virtual time) for the cooldown"
    );

    manager.report_failure_kind(
        "c1",
        FailureKind::rate_limited(Some(Duration::from_secs(60))),
    );
    let err = crate::support::call_ok(&manager)
        .await
        .expect_err("60 s is beyond the 5 s wait");
    assert_eq!(err.next_available_at().map(|t| t > t0()), Some(true));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_a_call() {
    let manager = OAuthKeyManager::builder("test")
        .credentials(crate::support::creds(&["c1"]))
        .clock(Arc::new(TokioClock::new(t0())))
        .failover(FailoverSettings::default().with_deadline(Duration::from_secs(1)))
        .build()
        .await
        .expect("builds");
    let err = manager
        .execute_with_failover(|_| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, TestError>(((), None))
        })
        .await
        .expect_err("deadline");
    assert!(
        matches!(err, ExecuteError::DeadlineExceeded { .. }),
        "{err}"
    );
    // Cancellation penalized nothing.
    assert!(manager.credential_health("c1").expect("known").is_available);
}

#[tokio::test]
async fn an_error_that_says_nothing_counts_as_transient() {
    let clock = ManualClock::new(t0());
    let manager = pool(&["c1", "c2"], &clock).await;
    let err = manager
        .execute_with_failover(|_| async {
            Err::<((), Option<Usage>), _>(oauth_manager::Classified::new(
                FailureKind::Transient,
                std::io::Error::other("x"),
            ))
        })
        .await
        .expect_err("fails");
    assert!(matches!(
        err,
        ExecuteError::AttemptsExhausted {
            kind: FailureKind::Transient,
            ..
        }
    ));
    clock.advance(Duration::from_secs(1));
    #[derive(Debug)]
    struct Opaque;
    impl oauth_manager::ClassifyFailure for Opaque {}
    let _ = manager
        .execute_with_failover(|_| async { Err::<((), Option<Usage>), _>(Opaque) })
        .await;
    assert_eq!(
        manager
            .credential_health("c1")
            .expect("known")
            .failure_count,
        2
    );
}

#[tokio::test]
async fn a_401_whose_refresh_finds_the_grant_dead_takes_the_credential_out_at_once() {
    use oauth_manager::webhooks::{MemoryNotifier, MonitoringConfig, Notifier, WebhookEventType};

    let clock = ManualClock::new(t0());
    let refresher = counting_refresher(&clock, Duration::ZERO, Some(FailureKind::PermanentAuth));
    let notifier = Arc::new(MemoryNotifier::new());
    let manager = builder(&["c1", "c2"], &clock)
        .refresher(Arc::clone(&refresher.refresher))
        .notifier(Arc::clone(&notifier) as Arc<dyn Notifier>)
        .monitoring(MonitoringConfig::default())
        .build()
        .await
        .expect("builds");
    let tried = std::sync::Mutex::new(Vec::new());
    let op = |c: Arc<Credential>| {
        tried.lock().expect("not poisoned").push(c.id.to_string());
        async move {
            if c.id == "c1" {
                Err(TestError::new(FailureKind::Unauthorized, "401"))
            } else {
                Ok(((), None))
            }
        }
    };
    let served = manager.execute_with_failover(op).await.expect("c2 serves");
    assert_eq!(served.credential, "c2");
    assert_eq!(
        *tried.lock().expect("not poisoned"),
        ["c1", "c2"],
        "no second 401 on c1"
    );
    let h = manager.credential_health("c1").expect("known");
    assert!(h.needs_reauthorization && !h.is_available, "{h:?}");
    assert_eq!(
        h.access_valid_until, None,
        "the provider already rejected its token"
    );
    for _ in 0..5 {
        assert_eq!(
            manager
                .execute_with_failover(op)
                .await
                .expect("served")
                .credential,
            "c2"
        );
    }
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
    // The event already alerted: the alert rules do not repeat it.
    let _ = manager.check_alerts();
    crate::support::settle().await;
    let reauth = notifier
        .events()
        .iter()
        .filter(|e| e.event_type == WebhookEventType::NeedsReauthorization)
        .count();
    assert_eq!(reauth, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_failing_together_count_as_one_failure() {
    // Go: four requests in flight when a credential broke put it straight into an 8 s backoff.
    let clock = ManualClock::new(t0());
    let manager = pool(&["c1", "c2"], &clock).await;
    manager.disable("c2").expect("known");
    let gate = Arc::new(tokio::sync::Barrier::new(4));
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (manager, gate, clock) = (manager.clone(), Arc::clone(&gate), clock.clone());
            tokio::spawn(async move {
                manager
                    .execute_with_failover(|_| {
                        let (gate, clock) = (Arc::clone(&gate), clock.clone());
                        async move {
                            gate.wait().await; // all four are in flight
                            clock.advance(Duration::from_millis(1));
                            Err::<((), Option<Usage>), _>(TestError::new(
                                FailureKind::Transient,
                                "503",
                            ))
                        }
                    })
                    .await
            })
        })
        .collect();
    for c in calls {
        assert!(c.await.expect("ran").is_err());
    }
    let h = manager.credential_health("c1").expect("known");
    assert_eq!(h.failure_count, 1, "{h:?}");
    let until = h.request_backoff_until.expect("backing off");
    let failed_at = h.last_failure.expect("failed");
    assert!(
        until - failed_at <= TimeDelta::seconds(1),
        "a 1 s backoff, not 8 s: {h:?}"
    );
    let m = manager.credential_metrics("c1").expect("recorded");
    assert_eq!(
        m.error_count, 4,
        "every failed request is still counted in the metrics"
    );
}
