//! `RefreshWindow` through the public API: never a panic, whatever the times and settings.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use oauth_core::{Credential, RefreshWindow, TokenSet};
use proptest::prelude::*;

fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    let (min, max) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    prop_oneof![
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
        Just(Utc.timestamp_opt(0, 0).single().unwrap_or_default()),
        (min..=max).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
        // Near now, where real tokens live.
        (-100_000i64..100_000)
            .prop_map(|s| { DateTime::from_timestamp(1_767_225_600 + s, 0).unwrap_or_default() }),
    ]
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX)),
        any::<u64>().prop_map(Duration::from_secs),
        (0u64..1_000_000_000).prop_map(Duration::from_millis),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// The hot path's one comparison (`now < quiet_until`) never skips a refresh that
    /// `needs_refresh` would do, at any time near the token's life (clock stepped back included),
    /// and in the usual case (received before its window opens) it is exactly the due instant.
    #[test]
    fn the_quiet_bound_never_skips_a_due_refresh(
        lifetime_s in 0i64..20_000,
        issued_s in -20_000i64..20_000,
        received in any::<bool>(),
        now_ms in -40_000_000i64..40_000_000,
        buffer_s in 0u64..10_000,
        floor_s in 0u64..10_000,
        min_interval_s in 0u64..10_000,
        fraction in 0.0..=1.0f64,
    ) {
        let t = |ms: i64| DateTime::from_timestamp_millis(1_767_225_600_000 + ms).unwrap_or_default();
        let issued = t(issued_s * 1000);
        let mut cred = Credential::new("q", "at", issued).expect("valid");
        cred.expires_at = Some(t((issued_s + lifetime_s) * 1000));
        cred.last_refresh = received.then_some(issued);
        let secs = Duration::from_secs;
        let custom = RefreshWindow::new(secs(buffer_s), fraction, secs(floor_s), secs(min_interval_s));
        for w in [RefreshWindow::default()].iter().chain(custom.as_ref().ok()) {
            let quiet = w.quiet_until(&cred);
            let now = t(now_ms);
            if now < quiet {
                prop_assert!(!w.needs_refresh(&cred, now), "due at {now} before {quiet}");
            }
            // Unless the window opened before the token arrived, it is exactly the due instant.
            if !received || quiet >= issued {
                prop_assert_eq!(Some(quiet), w.refresh_at(&cred));
            }
        }
    }

    #[test]
    fn no_time_or_setting_panics(
        expires_at in proptest::option::of(any_time()),
        last_refresh in proptest::option::of(any_time()),
        created_at in any_time(),
        now in any_time(),
        buffer in any_duration(),
        floor in any_duration(),
        min_interval in any_duration(),
        fraction in prop_oneof![Just(1.0), Just(1e-9), 0.0..=1.0f64, any::<f64>()],
    ) {
        let mut cred = Credential::new("p", "at", created_at).expect("valid");
        cred.expires_at = expires_at;
        cred.last_refresh = last_refresh;
        let windows = [
            RefreshWindow::default(),
            RefreshWindow::default().with_buffer(buffer),
        ];
        let custom = RefreshWindow::new(buffer, fraction, floor, min_interval);
        for w in windows.iter().chain(custom.as_ref().ok()) {
            let due = w.needs_refresh(&cred, now);
            let _ = w.should_refresh(&cred, now, true);
            let at = w.refresh_at(&cred);
            // The two answers agree: due exactly when now is past the due instant (unless the
            // clock is before the last refresh, which lifts the minimum interval).
            if last_refresh.is_none_or(|t| now >= t) {
                prop_assert_eq!(due, at.is_some_and(|at| now > at));
            }
            let _ = w.window_for(RefreshWindow::lifetime(&cred));
            // Before the quiet bound nothing is due, whatever the clock says.
            if now < w.quiet_until(&cred) {
                prop_assert!(!due);
            }
        }
        let _ = cred.expires_within(buffer, now);
        let _ = cred.is_expired(now);
        let _ = cred.needs_refresh(now);
        let _ = cred.time_to_expiry(now);
        let _ = cred.access_token_valid(now);
    }

    #[test]
    fn a_refreshed_token_is_never_due_within_the_minimum_interval(
        lifetime in 0i64..100_000,
        age_ms in 0i64..100_000_000,
    ) {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default();
        let mut cred = Credential::new("m", "at", t0).expect("valid").with_refresh_token("rt");
        cred.apply_tokens(
            TokenSet::new("at-1").with_expires_at(t0 + chrono::TimeDelta::seconds(lifetime)),
            t0,
        );
        let w = RefreshWindow::default();
        let now = t0 + chrono::TimeDelta::milliseconds(age_ms);
        let lifetime_d = Duration::from_secs(lifetime.unsigned_abs());
        let min = chrono::TimeDelta::from_std(w.min_interval_for(lifetime_d)).unwrap_or_default();
        if now <= t0 + min {
            prop_assert!(!w.needs_refresh(&cred, now));
        }
        // And always due once the token has expired and the interval has passed.
        if now > t0 + min && now >= t0 + chrono::TimeDelta::seconds(lifetime) {
            prop_assert!(w.needs_refresh(&cred, now));
        }
    }
}
