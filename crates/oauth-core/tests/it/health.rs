use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oauth_core::{
    Availability, CredentialHealth, CredentialState, FailureKind, HealthChange, HealthPolicy,
    Jitter, PolicyError, UsageSnapshot, delta,
};
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
        .single()
        .expect("valid date")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn request_backoff_schedule_matches_go() {
    let p = HealthPolicy::default();
    let got: Vec<u64> = (1..=8).map(|f| p.request_backoff(f).as_secs()).collect();
    assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(p.request_backoff(0), Duration::ZERO);
    assert_eq!(p.request_backoff(u32::MAX), secs(60));
}

#[test]
fn failures_back_off_on_schedule_and_turn_unhealthy_at_the_third() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    let mut now = t0();
    for (i, want) in [1u64, 2, 4, 8, 16, 32, 60, 60].into_iter().enumerate() {
        let change = h.record_failure(FailureKind::Transient, &p, now);
        let failures = u32::try_from(i + 1).expect("small");
        assert_eq!(h.consecutive_failures(), failures);
        assert_eq!(
            h.availability(now),
            Availability::At(now + delta(secs(want)))
        );
        assert_eq!(h.is_healthy(&p), failures < 3, "after {failures} failures");
        if failures == 3 {
            assert_eq!(change, Some(HealthChange::BecameUnhealthy));
        } else {
            assert!(matches!(change, Some(HealthChange::BackedOff { .. })));
        }
        now += delta(secs(want));
        assert!(h.is_available(now), "available once the backoff ends");
    }
    assert_eq!(h.record_success(now), Some(HealthChange::Recovered));
    assert!(h.is_healthy(&p));
    assert_eq!(h.consecutive_failures(), 0);
    assert!(h.is_available(now));
}

#[test]
fn refresh_failure_schedule_matches_go_from_the_fifth() {
    let p = HealthPolicy::default();
    let got: Vec<u64> = (5..=9).map(|f| p.refresh_backoff(f).as_secs()).collect();
    assert_eq!(got, [60, 120, 240, 480, 480]);
    let mut h = CredentialHealth::default();
    for n in 1..=4 {
        h.record_refresh_failure(FailureKind::Transient, None, &p, t0());
        assert!(h.is_healthy(&p), "healthy after {n} refresh failures");
    }
    let change = h.record_refresh_failure(FailureKind::Transient, None, &p, t0());
    assert_eq!(change, Some(HealthChange::BecameUnhealthy));
    assert!(!h.is_healthy(&p));
    assert_eq!(
        h.availability(t0()),
        Availability::At(t0() + delta(secs(60)))
    );
    assert_eq!(
        h.record_refresh_success(t0()),
        Some(HealthChange::Recovered)
    );
    assert!(h.is_healthy(&p));
    assert!(h.is_available(t0()));
}

#[test]
fn availability_is_the_later_of_the_two_backoffs() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    for _ in 0..5 {
        h.record_refresh_failure(FailureKind::Transient, None, &p, t0());
    }
    // A request failure afterwards (1 s) must not shorten the 60 s refresh backoff, as Go's did.
    h.record_failure(FailureKind::Transient, &p, t0());
    assert_eq!(
        h.availability(t0()),
        Availability::At(t0() + delta(secs(60)))
    );
    // And a long request backoff is not shortened by a short refresh one.
    let mut h = CredentialHealth::default();
    for _ in 0..7 {
        h.record_failure(FailureKind::Transient, &p, t0());
    }
    h.record_refresh_failure(FailureKind::Transient, None, &p, t0());
    assert_eq!(
        h.availability(t0()),
        Availability::At(t0() + delta(secs(60)))
    );
    assert_eq!(h.state(t0()), CredentialState::BackingOff);
}

#[test]
fn rate_limits_cool_down_for_retry_after_clamped() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    let change = h.record_failure(FailureKind::rate_limited(Some(secs(30))), &p, t0());
    assert_eq!(
        change,
        Some(HealthChange::CooledDown {
            until: t0() + delta(secs(30))
        })
    );
    assert_eq!(h.state(t0()), CredentialState::CoolingDown);
    assert!(h.is_healthy(&p), "a rate limit is not a health fault");
    assert_eq!(h.consecutive_failures(), 0);
    assert!(h.is_available(t0() + delta(secs(30))));

    // A hint beyond the policy's clamp is cut to it.
    let hour = HealthPolicy {
        max_cooldown: secs(3600),
        ..HealthPolicy::default()
    };
    let mut h = CredentialHealth::default();
    h.record_failure(FailureKind::rate_limited(Some(secs(86_400))), &hour, t0());
    assert_eq!(
        h.availability(t0()),
        Availability::At(t0() + delta(secs(3600)))
    );

    let mut h = CredentialHealth::default();
    h.record_failure(FailureKind::rate_limited(None), &p, t0());
    assert_eq!(
        h.availability(t0()),
        Availability::At(t0() + delta(secs(60)))
    );

    let mut h = CredentialHealth::default();
    h.cool_down_until(t0() + TimeDelta::minutes(10), &p, t0());
    assert_eq!(
        h.availability(t0()),
        Availability::At(t0() + TimeDelta::minutes(10))
    );
}

/// A daily quota's reset hint (up to a day ahead, 25 hours across a daylight-saving change) is
/// honoured whole by the default policy: the account stays out until its quota resets, not for
/// an hour. Beyond 25 hours the default clamp applies.
#[test]
fn the_default_policy_honours_a_daily_quota_reset() {
    let p = HealthPolicy::default();
    assert_eq!(p.max_cooldown, secs(25 * 3600));
    for wait in [secs(20 * 3600), secs(24 * 3600), secs(25 * 3600)] {
        let mut h = CredentialHealth::default();
        h.record_failure(FailureKind::rate_limited(Some(wait)), &p, t0());
        assert_eq!(h.availability(t0()), Availability::At(t0() + delta(wait)));
        assert_eq!(
            h.state(t0() + delta(wait - secs(1))),
            CredentialState::CoolingDown
        );
        assert!(h.is_available(t0() + delta(wait)));
    }
    let mut h = CredentialHealth::default();
    h.record_failure(FailureKind::rate_limited(Some(secs(7 * 86_400))), &p, t0());
    assert_eq!(
        h.availability(t0()),
        Availability::At(t0() + delta(secs(25 * 3600)))
    );
}

#[test]
fn permanent_auth_needs_reauthorization_that_no_timer_ends() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    let valid_until = t0() + TimeDelta::minutes(4);
    let change = h.record_refresh_failure(FailureKind::PermanentAuth, Some(valid_until), &p, t0());
    assert_eq!(
        change,
        Some(HealthChange::NeedsReauthorization {
            access_valid_until: Some(valid_until)
        })
    );
    assert_eq!(h.state(t0()), CredentialState::NeedsReauthorization);
    assert!(
        h.is_available(t0()),
        "the still-valid access token may be used"
    );
    assert_eq!(h.availability(valid_until), Availability::Never);
    assert_eq!(
        h.availability(t0() + TimeDelta::days(365)),
        Availability::Never
    );
    let snap = h.snapshot(&p, t0());
    assert!(snap.needs_reauthorization);
    assert_eq!(snap.access_valid_until, Some(valid_until));
    h.mark_reauthorized();
    assert!(h.is_available(t0() + TimeDelta::days(365)));

    // From a request (the provider says the account is gone): not usable at all.
    let mut h = CredentialHealth::default();
    h.record_failure(FailureKind::PermanentAuth, &p, t0());
    assert_eq!(h.availability(t0()), Availability::Never);
}

#[test]
fn request_scoped_failures_penalize_nothing() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    assert_eq!(h.record_failure(FailureKind::RequestScoped, &p, t0()), None);
    assert!(h.is_available(t0()));
    assert_eq!(h.snapshot(&p, t0()).last_failure, None);
}

#[test]
fn disable_and_enable() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    h.disable();
    assert_eq!(h.availability(t0()), Availability::Never);
    assert_eq!(h.state(t0()), CredentialState::Disabled);
    assert!(!h.is_healthy(&p));
    h.enable();
    assert!(h.is_available(t0()));
    assert!(h.is_healthy(&p));
}

#[test]
fn snapshot_has_the_go_json_names() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    h.record_failure(FailureKind::Transient, &p, t0());
    let json = serde_json::to_value(h.snapshot(&p, t0())).expect("serializes");
    for key in [
        "is_healthy",
        "is_available",
        "failure_count",
        "last_success",
        "last_failure",
        "backoff_until",
        "last_refresh",
        "refresh_fail_count",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    let mut healthy = CredentialHealth::default();
    healthy.record_success(t0());
    let json = serde_json::to_value(healthy.snapshot(&p, t0())).expect("serializes");
    assert!(
        json.get("backoff_until").is_none(),
        "omitted when not backing off"
    );
}

#[test]
fn policy_validation_rejects_nonsense() {
    let bad = HealthPolicy {
        backoff_base: Duration::ZERO,
        ..HealthPolicy::default()
    };
    assert_eq!(
        bad.validate(),
        Err(PolicyError::ZeroDuration {
            field: "backoff_base"
        })
    );
    let bad = HealthPolicy {
        backoff_cap: secs(1),
        backoff_base: secs(2),
        ..HealthPolicy::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(PolicyError::BoundBelowBase { .. })
    ));
    let bad = HealthPolicy {
        jitter: f64::NAN,
        ..HealthPolicy::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(PolicyError::FractionOutOfRange { .. })
    ));
    let bad = HealthPolicy {
        unhealthy_after: 0,
        ..HealthPolicy::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(PolicyError::ZeroThreshold { .. })
    ));
    assert_eq!(HealthPolicy::default().validate(), Ok(()));
}

#[test]
fn jitter_is_deterministic_per_seed_and_only_shortens() {
    let p = HealthPolicy {
        jitter: 0.5,
        ..HealthPolicy::default()
    };
    let run = |seed| {
        let mut h = CredentialHealth::new(seed);
        (0..6)
            .map(|_| {
                h.record_failure(FailureKind::Transient, &p, t0());
                h.blocked_until()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    let mut j = Jitter::new(1);
    for _ in 0..1000 {
        let d = j.apply(secs(10), 0.5);
        assert!(d <= secs(10) && d >= secs(5), "{d:?}");
    }
}

#[test]
fn usage_go_vectors() {
    let rate = |ok: u64, failed: u64| {
        let u = UsageSnapshot {
            request_count: ok + failed,
            success_count: ok,
            error_count: failed,
            ..UsageSnapshot::default()
        };
        u.success_rate()
    };
    assert!((rate(10, 0) - 1.0).abs() < f64::EPSILON);
    assert!((rate(5, 5) - 0.5).abs() < f64::EPSILON);
    assert!((rate(0, 0) - 1.0).abs() < f64::EPSILON);
    assert!((rate(1, 3) - 0.25).abs() < f64::EPSILON);
}

#[test]
fn requests_per_hour_is_continuous() {
    let u = UsageSnapshot {
        request_count: 100,
        success_count: 100,
        first_used: Some(t0()),
        ..UsageSnapshot::default()
    };
    let at = |s: i64| u.requests_per_hour(t0() + TimeDelta::seconds(s));
    assert!((at(35) - 100.0).abs() < 1e-9);
    assert!((at(36) - 100.0).abs() < 1e-9, "Go jumped to 10,000 here");
    assert!((at(3600) - 100.0).abs() < 1e-9);
    assert!((at(7200) - 50.0).abs() < 1e-9);
    let mut prev = at(0);
    for s in (0..20_000).step_by(7) {
        let v = at(s);
        assert!(
            v <= prev + 1e-9,
            "never rises as time passes with no requests"
        );
        prev = v;
    }
}

proptest! {
    #[test]
    fn backoff_never_decreases_and_never_exceeds_its_cap(
        base_ms in 1u64..10_000,
        cap_factor in 1u64..1_000,
        a in 0u32..200,
        b in 0u32..200,
    ) {
        let p = HealthPolicy {
            backoff_base: Duration::from_millis(base_ms),
            backoff_cap: Duration::from_millis(base_ms * cap_factor),
            refresh_backoff_base: Duration::from_millis(base_ms),
            refresh_backoff_cap: Duration::from_millis(base_ms * cap_factor),
            ..HealthPolicy::default()
        };
        let (lo, hi) = (a.min(b), a.max(b));
        prop_assert!(p.request_backoff(lo) <= p.request_backoff(hi));
        prop_assert!(p.request_backoff(hi) <= p.backoff_cap);
        prop_assert!(p.refresh_backoff(hi) <= p.refresh_backoff_cap.max(p.backoff_cap));
        prop_assert!(p.refresh_backoff(lo) <= p.refresh_backoff(hi) || lo < p.refresh_unhealthy_after);
    }

    #[test]
    fn jittered_backoff_stays_within_bounds(seed in any::<u64>(), failures in 1u32..40, jitter in 0.0f64..=1.0) {
        let p = HealthPolicy { jitter, ..HealthPolicy::default() };
        let mut h = CredentialHealth::new(seed);
        for _ in 0..failures {
            h.record_failure(FailureKind::Transient, &p, t0());
        }
        let until = h.blocked_until().expect("a backoff is set");
        let d = (until - t0()).to_std().expect("in the future or now");
        prop_assert!(d <= p.request_backoff(failures));
        prop_assert!(d <= p.backoff_cap);
    }
}

#[test]
fn requests_in_flight_during_a_failure_fail_together_once() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    let started = t0();
    let failed_at = t0() + TimeDelta::milliseconds(500);
    h.record_failure_since(FailureKind::Transient, started, &p, failed_at);
    // Three more requests that were already in flight fail a moment later: same outage.
    for i in 1..=3 {
        let later = failed_at + TimeDelta::milliseconds(i);
        assert_eq!(
            h.record_failure_since(FailureKind::Transient, started, &p, later),
            None
        );
    }
    assert_eq!(h.consecutive_failures(), 1);
    assert_eq!(
        h.availability(failed_at),
        Availability::At(failed_at + delta(secs(1)))
    );
    // A request started after the failure counts.
    let next = failed_at + TimeDelta::seconds(2);
    h.record_failure_since(FailureKind::Transient, next, &p, next);
    assert_eq!(h.consecutive_failures(), 2);
    // A rate limit applies whenever the request started.
    let change =
        h.record_failure_since(FailureKind::rate_limited(Some(secs(9))), started, &p, next);
    assert!(matches!(change, Some(HealthChange::CooledDown { .. })));
}

#[test]
fn needs_reauthorization_is_reported_once_and_only_tightens() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    let valid = t0() + TimeDelta::minutes(30);
    assert!(
        h.record_refresh_failure(FailureKind::PermanentAuth, Some(valid), &p, t0())
            .is_some()
    );
    assert_eq!(
        h.record_refresh_failure(FailureKind::PermanentAuth, Some(valid), &p, t0()),
        None
    );
    let later = valid + TimeDelta::hours(1);
    assert_eq!(
        h.record_refresh_failure(FailureKind::PermanentAuth, Some(later), &p, t0()),
        None,
        "a later failure does not extend the validity"
    );
    // The provider rejected the token: it is dead now, reported once more.
    assert_eq!(
        h.record_failure(FailureKind::PermanentAuth, &p, t0()),
        Some(HealthChange::NeedsReauthorization {
            access_valid_until: None
        })
    );
    assert_eq!(h.record_failure(FailureKind::PermanentAuth, &p, t0()), None);
    assert_eq!(h.availability(t0()), Availability::Never);
}

#[test]
fn enormous_durations_saturate_instead_of_panicking() {
    let p = HealthPolicy {
        default_cooldown: Duration::MAX,
        max_cooldown: Duration::MAX,
        ..HealthPolicy::default()
    };
    assert_eq!(p.validate(), Ok(()));
    let mut h = CredentialHealth::default();
    h.record_failure(FailureKind::rate_limited(Some(Duration::MAX)), &p, t0());
    assert!(!h.is_available(t0() + TimeDelta::days(365 * 1000)));
}

#[test]
fn a_refresh_backoff_gates_attempts_not_the_use_of_a_working_token() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    let expires = t0() + TimeDelta::seconds(110);
    h.record_refresh_failure(FailureKind::Transient, Some(expires), &p, t0());
    // The token still works: the credential serves, but no refresh is attempted until 1 s later.
    assert!(h.is_available(t0()));
    assert_eq!(h.state(t0()), CredentialState::Active);
    assert!(!h.refresh_allowed(t0()));
    assert!(h.refresh_allowed(t0() + TimeDelta::seconds(1)));
    // Once the token stops working during a backoff, the backoff keeps the credential out.
    for _ in 0..5 {
        h.record_refresh_failure(FailureKind::Transient, Some(expires), &p, t0());
    }
    let until = h.refresh_backoff_until(t0()).expect("backing off");
    assert!(
        until > expires,
        "the long refresh backoff outlasts the token"
    );
    assert_eq!(
        h.available_until(),
        Some(expires),
        "recheck when the token expires"
    );
    assert!(h.is_available(expires - TimeDelta::seconds(1)));
    assert_eq!(h.availability(expires), Availability::At(until));
    // A token the provider rejected is unusable at once.
    let mut h = CredentialHealth::default();
    h.record_refresh_failure(FailureKind::Transient, Some(expires), &p, t0());
    h.note_token_unusable(t0());
    assert_eq!(
        h.availability(t0()),
        Availability::At(t0() + TimeDelta::seconds(1))
    );
}

#[test]
fn transient_request_backoff_is_soft_rate_limits_and_dead_grants_are_hard() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    h.record_failure(FailureKind::Transient, &p, t0());
    assert!(!h.is_available(t0()));
    assert_eq!(h.hard_availability(t0()), Availability::Now);
    h.record_failure(FailureKind::rate_limited(Some(secs(30))), &p, t0());
    assert_eq!(
        h.hard_availability(t0()),
        Availability::At(t0() + TimeDelta::seconds(30))
    );
    let mut h = CredentialHealth::default();
    h.record_failure(FailureKind::PermanentAuth, &p, t0());
    assert_eq!(h.hard_availability(t0()), Availability::Never);
    let mut h = CredentialHealth::default();
    h.disable();
    assert_eq!(h.hard_availability(t0()), Availability::Never);
}

#[test]
fn misconfiguration_is_its_own_state_that_a_configuration_fix_clears() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    let valid = t0() + TimeDelta::minutes(10);
    let change = h.record_refresh_failure(FailureKind::Misconfigured, Some(valid), &p, t0());
    assert_eq!(
        change,
        Some(HealthChange::Misconfigured {
            access_valid_until: Some(valid)
        })
    );
    assert_eq!(h.state(t0()), CredentialState::Misconfigured);
    assert!(!h.needs_reauthorization(), "no sign-in is asked for");
    assert!(h.is_available(t0()), "its working token still serves");
    assert_eq!(h.availability(valid), Availability::Never);
    let snap = h.snapshot(&p, t0());
    assert!(snap.misconfigured && !snap.needs_reauthorization);
    assert!(h.clear_misconfigured());
    assert_eq!(h.state(valid), CredentialState::Active);
    assert!(h.is_available(valid));
    assert_eq!(h.refresh_failures(), 0);
}

#[test]
fn a_permanent_refresh_failure_counts_as_a_consecutive_failure() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    h.record_refresh_failure(FailureKind::PermanentAuth, None, &p, t0());
    assert_eq!(
        h.refresh_failures(),
        1,
        "the event reports 1, as its doc says"
    );
    assert_eq!(h.snapshot(&p, t0()).refresh_fail_count, 1);
}

#[test]
fn an_overloaded_provider_is_not_held_against_the_account() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    for _ in 0..10 {
        assert_eq!(
            h.record_failure(
                FailureKind::Overloaded {
                    retry_after: Some(secs(30))
                },
                &p,
                t0()
            ),
            None
        );
    }
    assert!(h.is_available(t0()) && h.is_healthy(&p));
    assert_eq!(h.consecutive_failures(), 0);
    assert!(FailureKind::Overloaded { retry_after: None }.is_retryable());
}

#[test]
fn an_operator_clears_cooldowns_and_backoffs_but_not_a_dead_grant() {
    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    h.record_failure(FailureKind::rate_limited(Some(secs(600))), &p, t0());
    h.record_failure(FailureKind::Transient, &p, t0());
    h.record_refresh_failure(FailureKind::Transient, None, &p, t0());
    assert!(!h.is_available(t0()));
    assert!(h.clear_cooldown(t0()));
    assert!(h.is_available(t0()) && h.refresh_allowed(t0()));
    assert!(!h.clear_cooldown(t0()), "nothing left to clear");
    h.record_failure(FailureKind::PermanentAuth, &p, t0());
    h.clear_cooldown(t0());
    assert_eq!(
        h.availability(t0()),
        Availability::Never,
        "a dead grant is no timer"
    );
}
