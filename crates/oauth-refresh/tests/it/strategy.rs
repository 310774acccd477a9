//! The refresh-strategy vectors of the behaviour reference (4.10), and where they differ from Go.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oauth_core::{Credential, UsageSnapshot};
use oauth_refresh::RefreshStrategy;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid date")
}

fn usage(ok: u64, failed: u64, latency_ms: u64, first_used_ago: Duration) -> UsageSnapshot {
    let n = ok + failed;
    UsageSnapshot {
        request_count: n,
        success_count: ok,
        error_count: failed,
        total_latency: Duration::from_millis(latency_ms * n),
        first_used: Some(now() - TimeDelta::from_std(first_used_ago).expect("small")),
        last_used: Some(now()),
        ..UsageSnapshot::default()
    }
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const fn min(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}
const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn go_vectors_for_the_adaptive_strategy() {
    let s = RefreshStrategy::adaptive();
    let cases = [
        ("no requests", UsageSnapshot::default(), min(5)),
        // 0.01 / 0.1 * 30 = 2.999.. truncated to 2 s, as in Go.
        (
            "1 req @10 ms, fresh",
            usage(1, 0, 10, secs(0)),
            min(5) + secs(2),
        ),
        ("1 req @200 ms", usage(1, 0, 200, secs(0)), min(6)),
        (
            "1 req @100 ms, 1 h ago",
            usage(1, 0, 100, HOUR),
            min(5) + secs(30),
        ),
        // rph = 10 is not above 10; 2 s latency + 570 s error term.
        (
            "10 failures @10 ms, fresh",
            usage(0, 10, 10, secs(0)),
            min(14) + secs(32),
        ),
        (
            "9 ok + 1 fail @50 ms over 2 h",
            usage(9, 1, 50, 2 * HOUR),
            min(5) + secs(44),
        ),
        // Go measured 12m1s with rph 149.99 because a little more than an hour had passed.
        (
            "150 ok @10 ms over 1 h 1 s",
            usage(150, 0, 10, HOUR + secs(1)),
            min(12) + secs(1),
        ),
        (
            "1000 ok @10 ms over 1 h (clamped)",
            usage(1000, 0, 10, HOUR),
            min(15),
        ),
    ];
    for (name, u, want) in cases {
        assert_eq!(s.calculate_buffer_time(Some(&u), now()), want, "{name}");
    }
    assert_eq!(s.calculate_buffer_time(None, now()), min(5), "no usage");
}

#[test]
fn exactly_one_hour_gives_the_exact_rate() {
    // 150 requests over exactly one hour is 150 req/h: +420 s (Go's 419 s came from measuring a
    // few milliseconds past the hour).
    let s = RefreshStrategy::adaptive();
    let u = usage(150, 0, 10, HOUR);
    assert_eq!(s.calculate_buffer_time(Some(&u), now()), min(12) + secs(2));
}

#[test]
fn conservative_with_adaptive_forced_on_and_zero_based() {
    let s = RefreshStrategy {
        adaptive_buffer: true,
        ..RefreshStrategy::conservative()
    };
    let busy = usage(150, 0, 10, HOUR + secs(1));
    assert_eq!(
        s.calculate_buffer_time(Some(&busy), now()),
        min(22) + secs(1)
    );
    let very_busy = usage(1000, 0, 10, HOUR);
    assert_eq!(s.calculate_buffer_time(Some(&very_busy), now()), min(30));

    let bare = RefreshStrategy {
        buffer_time: Duration::ZERO,
        adaptive_buffer: true,
        min_buffer: Duration::ZERO,
        max_buffer: Duration::ZERO,
        ..RefreshStrategy::default()
    };
    let u = usage(1, 0, 200, secs(0));
    assert_eq!(bare.calculate_buffer_time(Some(&u), now()), min(1));
}

#[test]
fn requests_per_hour_is_continuous_where_go_jumped() {
    // Go: 100 requests counted 100/h at 35 s and 10,000/h at 36 s, so the buffer jumped from
    // 9m30s to the 15 min clamp. Here the rate is 100/h throughout the first hour.
    let s = RefreshStrategy::adaptive();
    for ago in [35, 36, 37, 600, 3600] {
        let u = usage(100, 0, 0, secs(ago));
        assert_eq!(
            s.calculate_buffer_time(Some(&u), now()),
            min(9) + secs(30),
            "{ago} s after first use"
        );
    }
    // Go (rate from elapsed time) would give 20 / (10 min) = 120/h → +330 s; here 20/h → +30 s.
    let u = usage(20, 0, 0, min(10));
    assert_eq!(s.calculate_buffer_time(Some(&u), now()), min(5) + secs(30));
}

fn expiring_in(d: Duration) -> Credential {
    Credential::new("s", "at", now())
        .expect("valid")
        .with_expires_at(now() + TimeDelta::from_std(d).expect("small"))
}

#[test]
fn preemptive_refresh_doubles_the_buffer_for_busy_credentials() {
    let s = RefreshStrategy {
        preemptive_refresh: true,
        ..RefreshStrategy::default()
    };
    let busy = usage(100, 0, 0, HOUR); // 100 req/h: at the threshold
    assert!(s.should_refresh(&expiring_in(min(10) - secs(1)), Some(&busy), now()));
    assert!(
        !s.should_refresh(&expiring_in(min(10)), Some(&busy), now()),
        "strict boundary"
    );
    assert!(!s.should_refresh(&expiring_in(min(11)), Some(&busy), now()));
    // Without usage only the plain buffer applies.
    assert!(s.should_refresh(&expiring_in(min(5) - secs(1)), None, now()));
    assert!(!s.should_refresh(&expiring_in(min(6)), None, now()));
    // Below the threshold, likewise.
    let quiet = usage(99, 0, 0, HOUR);
    assert!(!s.should_refresh(&expiring_in(min(6)), Some(&quiet), now()));
}

#[test]
fn adaptive_with_fresh_usage_refreshes_at_five_minutes_not_six() {
    let s = RefreshStrategy::adaptive();
    let fresh = UsageSnapshot::default();
    assert!(s.should_refresh(&expiring_in(min(5) - secs(1)), Some(&fresh), now()));
    assert!(!s.should_refresh(&expiring_in(min(6)), Some(&fresh), now()));
    let no_expiry = Credential::new("s", "at", now()).expect("valid");
    assert!(!s.should_refresh(&no_expiry, Some(&fresh), now()));
}

#[test]
fn short_lived_tokens_are_refreshed_once_per_half_life_not_on_every_call() {
    // Issue 14 item 2: with 120-second tokens and the 5-minute buffer, every call refreshed.
    use oauth_core::{Clock, ManualClock, TokenSet};
    for (name, strategy) in [
        ("default", RefreshStrategy::default()),
        ("adaptive", RefreshStrategy::adaptive()),
        ("conservative", RefreshStrategy::conservative()),
    ] {
        let busy = usage(10_000, 0, 300, HOUR);
        for lifetime in [120, 60, 299, 0] {
            let clock = ManualClock::new(now());
            let mut cred = expiring_in(secs(lifetime)).with_refresh_token("rt");
            let mut refreshes = 0;
            // 1,000 calls over one second.
            for _ in 0..1_000 {
                let at = clock.now();
                if strategy.should_refresh(&cred, Some(&busy), at) {
                    refreshes += 1;
                    let expires = at + TimeDelta::seconds(i64::try_from(lifetime).expect("small"));
                    cred.apply_tokens(TokenSet::new("at").with_expires_at(expires), at);
                }
                clock.advance(Duration::from_millis(1));
            }
            assert_eq!(refreshes, 1, "{name}, {lifetime} s tokens");
        }
    }
}

mod extremes {
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use oauth_core::{Credential, UsageSnapshot};
    use oauth_refresh::RefreshStrategy;
    use proptest::prelude::*;

    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            any::<u64>().prop_map(Duration::from_secs),
            (0u64..100_000).prop_map(Duration::from_secs),
        ]
    }

    fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
        prop_oneof![
            Just(DateTime::<Utc>::MIN_UTC),
            Just(DateTime::<Utc>::MAX_UTC),
            (DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp())
                .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        #[test]
        fn no_setting_or_time_panics(
            buffer_time in any_duration(),
            min_buffer in any_duration(),
            max_buffer in any_duration(),
            adaptive_buffer in any::<bool>(),
            preemptive_refresh in any::<bool>(),
            high_traffic_threshold in any::<u64>(),
            expires_at in any_time(),
            last_refresh in proptest::option::of(any_time()),
            now in any_time(),
            requests in any::<u32>(),
            latency_ms in any::<u32>(),
        ) {
            let strategy = RefreshStrategy {
                buffer_time,
                min_buffer,
                max_buffer,
                adaptive_buffer,
                preemptive_refresh,
                high_traffic_threshold,
                ..RefreshStrategy::default()
            };
            let _ = strategy.validate();
            let mut cred = Credential::new("x", "at", now).expect("valid").with_expires_at(expires_at);
            cred.last_refresh = last_refresh;
            let usage = UsageSnapshot {
                request_count: u64::from(requests),
                success_count: u64::from(requests / 2),
                total_latency: Duration::from_millis(u64::from(latency_ms)),
                first_used: Some(now),
                ..UsageSnapshot::default()
            };
            let _ = strategy.calculate_buffer_time(Some(&usage), now);
            let _ = strategy.should_refresh(&cred, Some(&usage), now);
            let _ = strategy.should_refresh(&cred, None, now);
        }
    }
}

mod quiet_bound {
    use super::*;
    use proptest::prelude::*;

    fn strategy() -> impl Strategy<Value = RefreshStrategy> {
        (
            0u64..3_600,
            any::<bool>(),
            0u64..1_800,
            0u64..3_600,
            any::<bool>(),
            0u64..500,
        )
            .prop_map(|(buffer, adaptive, min_b, max_b, preemptive, threshold)| {
                RefreshStrategy {
                    buffer_time: secs(buffer),
                    adaptive_buffer: adaptive,
                    min_buffer: secs(min_b),
                    max_buffer: secs(max_b),
                    preemptive_refresh: preemptive,
                    high_traffic_threshold: threshold,
                    ..RefreshStrategy::default()
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The pool's hot path skips the strategy while `now < quiet_until`: no usage (latency,
        /// traffic, failures) may make a refresh due there.
        #[test]
        fn no_usage_makes_a_refresh_due_before_the_quiet_bound(
            s in strategy(),
            lifetime_s in 0i64..10_000,
            received in any::<bool>(),
            now_s in -12_000i64..12_000,
            ok in 0u64..5_000,
            failed in 0u64..5_000,
            latency_ms in 0u64..60_000,
            first_used_ago_s in 1u64..7_200,
        ) {
            let mut cred = Credential::new("q", "at", now()).expect("valid");
            cred.expires_at = Some(now() + TimeDelta::seconds(lifetime_s));
            cred.last_refresh = received.then(now);
            let at = now() + TimeDelta::seconds(now_s);
            let Some(quiet) = s.quiet_until(&cred) else {
                prop_assert!(s.adaptive_buffer && s.max_buffer.is_zero());
                return Ok(());
            };
            if at < quiet {
                let busy = usage(ok, failed, latency_ms, secs(first_used_ago_s));
                for u in [None, Some(&busy), Some(&UsageSnapshot::default())] {
                    prop_assert!(!s.should_refresh(&cred, u, at), "due at {at} before {quiet}");
                }
            }
        }
    }
}
