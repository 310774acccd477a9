//! Maintenance's refresh ahead of expiry goes through the refresh window like the request path:
//! the lead is clamped to the token's lifetime and a token the pool received is not refreshed
//! again within the minimum interval. (Before, a 600-second token was inside buffer + lead, 5 min
//! + 5-10 min, from the moment it was issued, and was refreshed on every tick.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use oauth_core::ManualClock;
use oauth_manager::refresh::{FnRefresher, Refresher, TokenSet};
use oauth_manager::{Clock as _, Credential, MaintenanceConfig};

use crate::support::{builder_of, cred, t0};

const TICK: Duration = Duration::from_millis(250);

/// When the refresher ran.
type Times = Arc<Mutex<Vec<DateTime<Utc>>>>;

/// A refresher issuing tokens that live `lifetime` from the clock's now; records when it ran.
fn refresher(clock: &ManualClock, lifetime: Duration) -> (Arc<dyn Refresher>, Times) {
    let at: Times = Arc::default();
    let (seen, clock) = (Arc::clone(&at), clock.clone());
    let refresher = FnRefresher::new(move |c: Credential| {
        let (seen, clock) = (Arc::clone(&seen), clock.clone());
        async move {
            let now = clock.now();
            let n = {
                let mut seen = seen.lock().expect("lock");
                seen.push(now);
                seen.len()
            };
            Ok(TokenSet::new(format!("access-{}-{n}", c.id))
                .with_refresh_token(format!("refresh-{}-{n}", c.id))
                .with_expires_at(oauth_core::after(now, lifetime)))
        }
    });
    (Arc::new(refresher), at)
}

/// Runs maintenance every [`TICK`] (simulated) for `run`; the refresh times.
async fn tick_for(
    token_lifetime: Duration,
    supplied_for: TimeDelta,
    run: Duration,
) -> Vec<DateTime<Utc>> {
    let clock = ManualClock::new(t0());
    let (refresher, at) = refresher(&clock, token_lifetime);
    let manager = builder_of([cred("a", supplied_for)], &clock)
        .refresher_arc(refresher)
        .build()
        .await
        .expect("builds");
    let config = MaintenanceConfig::default().with_interval(TICK);
    let ticks = run.as_millis() / TICK.as_millis();
    for _ in 0..ticks {
        manager.run_maintenance_once(&config).await;
        clock.advance(TICK);
    }
    at.lock().expect("lock").clone()
}

#[tokio::test]
async fn a_600_second_token_is_refreshed_about_once_per_half_life_not_on_every_tick() {
    let lifetime = Duration::from_secs(600);
    // Supplied with 600 s left: its lifetime is unknown, so the first tick refreshes it (inside
    // buffer + lead); from then on the pool knows it received 600-second tokens.
    let run = Duration::from_secs(20 * 60);
    let at = tick_for(lifetime, TimeDelta::seconds(600), run).await;
    // 4,800 ticks. Half-life 300 s: at 0, 300, 600, 900 s (1,200 s is the end of the run).
    assert!(
        (4..=5).contains(&at.len()),
        "{} refreshes in 20 simulated minutes of 250 ms ticks: {:?}…",
        at.len(),
        &at[..at.len().min(6)]
    );
    assert_eq!(
        at[0],
        t0(),
        "the supplied token (lifetime unknown) at the first tick"
    );
    for pair in at.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        // Due strictly after half its lifetime: the first tick after 300 s.
        assert!(
            (300_000..=300_000 + 250).contains(&gap),
            "refreshed {gap} ms after the previous refresh: {at:?}"
        );
    }
}

#[tokio::test]
async fn one_hour_tokens_keep_the_maintenance_lead() {
    let lifetime = Duration::from_secs(3600);
    let run = Duration::from_secs(3 * 3600);
    let at = tick_for(lifetime, TimeDelta::hours(1), run).await;
    // The lead (5-10 min, per credential) on top of the 5-minute buffer is below half an hour,
    // so one-hour tokens are refreshed 10-15 minutes before expiry, as before: 3 in 3 hours.
    assert_eq!(at.len(), 3, "{at:?}");
    let first_age = (at[0] - t0()).num_seconds();
    assert!(
        (45 * 60..=50 * 60).contains(&first_age),
        "first refreshed at {first_age} s, 10-15 min before its expiry"
    );
    for pair in at.windows(2) {
        let gap = (pair[1] - pair[0]).num_seconds();
        assert!((45 * 60..=50 * 60).contains(&gap), "{gap} s apart: {at:?}");
    }
}

#[tokio::test]
async fn a_token_shorter_than_the_floor_is_not_refreshed_more_than_once_per_minimum_interval() {
    // A server issuing 5-second tokens: the window's floor (10 s) and minimum interval
    // (max(lifetime, floor) = 10 s) bound the rate at one refresh per 10 s, not one per tick.
    let lifetime = Duration::from_secs(5);
    let run = Duration::from_secs(120);
    let at = tick_for(lifetime, TimeDelta::seconds(5), run).await;
    assert!(
        (11..=13).contains(&at.len()),
        "{} refreshes in 120 s of 250 ms ticks: {:?}…",
        at.len(),
        &at[..at.len().min(6)]
    );
    for pair in at.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(
            gap > 10_000,
            "refreshed {gap} ms after the previous refresh"
        );
    }
}
