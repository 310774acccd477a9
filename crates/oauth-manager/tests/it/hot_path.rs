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

/// `a`'s credential at version `v`: its access token says which.
fn versioned(v: u64) -> oauth_manager::Credential {
    oauth_manager::Credential::new("a", format!("access-a-{v}"), crate::support::t0())
        .expect("valid credential")
        .with_refresh_token(format!("refresh-a-{v}"))
        .with_expires_at(crate::support::t0() + TimeDelta::hours(1))
}

/// In a small pool each thread hands its calls a private copy of the credential (issue 16: two
/// threads on three credentials no longer write the same reference counts). The copies never
/// serve a credential older than one whose replacement had finished when the call began: a
/// writer re-authorizes `a` 2,000 times, publishing each version once it is installed, while
/// two threads call and check every token `a` gives against the version they read first.
#[test]
fn no_call_gets_a_credential_older_than_a_replacement_finished_before_it() {
    use std::sync::atomic::AtomicU64;
    const VERSIONS: u64 = 2_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let clock = ManualClock::new(crate::support::t0());
    let manager = runtime
        .block_on(
            builder_of(
                [
                    versioned(0),
                    cred("b", TimeDelta::hours(1)),
                    cred("c", TimeDelta::hours(1)),
                ],
                &clock,
            )
            .build(),
        )
        .expect("builds");
    let installed = AtomicU64::new(0);
    let served_a = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("runtime");
                while installed.load(Ordering::SeqCst) < VERSIONS {
                    let before = installed.load(Ordering::SeqCst);
                    let served = runtime.block_on(call_token(&manager)).expect("served");
                    if served.credential.as_str() != "a" {
                        continue;
                    }
                    let version: u64 = served
                        .value
                        .strip_prefix("access-a-")
                        .and_then(|v| v.parse().ok())
                        .expect("a versioned token");
                    assert!(
                        version >= before,
                        "a call begun after version {before} was installed got version {version}"
                    );
                    served_a.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Should the writer fail, the callers stop too, and the scope reports the failure.
        struct StopCallers<'a>(&'a AtomicU64);
        impl Drop for StopCallers<'_> {
            fn drop(&mut self) {
                self.0.store(VERSIONS, Ordering::SeqCst);
            }
        }
        let _stop = StopCallers(&installed);
        for v in 1..=VERSIONS {
            runtime
                .block_on(manager.reauthorize(versioned(v)))
                .expect("installed");
            installed.store(v, Ordering::SeqCst);
            // Let the callers see some versions more than once (their copies then serve).
            if v % 4 == 0 {
                std::thread::yield_now();
            }
        }
    });
    assert!(
        served_a.load(Ordering::Relaxed) > VERSIONS / 4,
        "the callers called on `a` while it was replaced: {}",
        served_a.load(Ordering::Relaxed)
    );
}
