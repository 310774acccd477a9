//! The hot path remembers, per credential, until when its token can be used without deciding
//! again (issue 16). What it remembers must be forgotten whenever the decision could change: a new
//! token, a new refresh strategy, a refresher installed later, and time passing the bound.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::ManualClock;
use oauth_manager::refresh::RefreshStrategy;
use oauth_manager::{ExecuteError, OAuthKeyManager};

use crate::support::{
    CountingRefresher, builder_of, call_ok, call_token, counting_refresher, cred,
};

/// A strategy that refreshes tokens expiring within `buffer`.
fn buffer(buffer: Duration) -> RefreshStrategy {
    let mut s = RefreshStrategy::default();
    s.buffer_time = buffer;
    s.window = s.window.with_buffer(buffer);
    s
}

/// A pool of one credential `a` expiring in `expires_in`, with a counting, rotating refresher.
async fn refreshing_pool(
    expires_in: TimeDelta,
    clock: &ManualClock,
) -> (OAuthKeyManager, CountingRefresher) {
    let refresher = counting_refresher(clock, Duration::ZERO, None);
    let manager = builder_of([cred("a", expires_in)], clock)
        .refresher_arc(refresher.refresher.clone())
        .build()
        .await
        .expect("builds");
    (manager, refresher)
}

#[tokio::test]
async fn a_remembered_fresh_token_is_refreshed_once_its_window_opens() {
    let clock = ManualClock::new(crate::support::t0());
    let (manager, refresher) = refreshing_pool(TimeDelta::minutes(30), &clock).await;
    for _ in 0..100 {
        call_ok(&manager).await.expect("served");
    }
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 0, "30 minutes left");
    // The default window is 5 minutes: 25 minutes on, the next call refreshes, once.
    clock.advance(Duration::from_secs(25 * 60 + 1));
    for _ in 0..100 {
        call_ok(&manager).await.expect("served");
    }
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
    let token = call_token(&manager).await.expect("served").value;
    assert_eq!(token, "access-a-1", "the refreshed token is used");
}

#[tokio::test]
async fn a_new_strategy_applies_to_the_next_call() {
    let clock = ManualClock::new(crate::support::t0());
    let (manager, refresher) = refreshing_pool(TimeDelta::minutes(30), &clock).await;
    call_ok(&manager).await.expect("served");
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 0);
    // An hour's buffer makes the 30-minute token due now.
    manager
        .set_refresh_strategy(buffer(Duration::from_secs(3600)))
        .expect("valid");
    call_ok(&manager).await.expect("served");
    assert_eq!(
        refresher.calls.load(Ordering::SeqCst),
        1,
        "refreshed on the next call"
    );
}

#[tokio::test]
async fn a_refresher_installed_later_applies_to_the_next_call() {
    let clock = ManualClock::new(crate::support::t0());
    // Without a refresher, the token is usable until it expires, in 2 minutes.
    let manager = builder_of([cred("a", TimeDelta::minutes(2))], &clock)
        .build()
        .await
        .expect("builds");
    call_ok(&manager).await.expect("served");
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    manager.set_refresher_arc(refresher.refresher.clone());
    // The default 5-minute window: the 2-minute token is due with a refresher.
    let token = call_token(&manager).await.expect("served").value;
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
    assert_eq!(token, "access-a-1");
}

#[tokio::test]
async fn without_a_refresher_a_remembered_token_stops_at_its_expiry() {
    let clock = ManualClock::new(crate::support::t0());
    let manager = builder_of([cred("a", TimeDelta::minutes(2))], &clock)
        .build()
        .await
        .expect("builds");
    for _ in 0..10 {
        call_ok(&manager).await.expect("served");
    }
    clock.advance(Duration::from_secs(119));
    call_ok(&manager).await.expect("one second left");
    clock.advance(Duration::from_secs(1));
    let err = call_ok(&manager).await.expect_err("expired");
    assert!(
        !matches!(err, ExecuteError::RequestScoped { .. }),
        "an expired token is the pool's failure: {err}"
    );
}

#[tokio::test]
async fn a_token_installed_by_reauthorization_is_decided_again() {
    let clock = ManualClock::new(crate::support::t0());
    let (manager, refresher) = refreshing_pool(TimeDelta::hours(2), &clock).await;
    call_ok(&manager).await.expect("served");
    // An operator re-authorizes with a token that expires in one minute: due at once.
    let short = cred("a", TimeDelta::minutes(1));
    manager.reauthorize(short).await.expect("installed");
    let token = call_token(&manager).await.expect("served").value;
    assert_eq!(
        refresher.calls.load(Ordering::SeqCst),
        1,
        "the short token was refreshed"
    );
    assert_eq!(token, "access-a-1");
}
