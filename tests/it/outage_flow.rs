//! The token endpoint goes down while access tokens still work, and calls keep flowing (1 ms and
//! 60 ms apart, the clock moving with them, never jumping past a backoff): every call is served
//! while a token works, refresh attempts stay at one per backoff step, and once the token really
//! expires the error says when a credential is expected back (issue 14, item 1).

use std::time::Duration;

use oauth_testkit::token_server::{Fault, FaultTarget, TokenServerConfig};
use serde_json::json;

use crate::support::{World, report};

/// Tokens of 10 minutes; the outage starts with 110 s left, inside the refresh window.
async fn world_with_one_expiring_credential() -> (World, oauth_manager::OAuthKeyManager) {
    let world = World::start_with(TokenServerConfig {
        access_token_ttl: Duration::from_secs(600),
        ..TokenServerConfig::default()
    })
    .await;
    let (a, _) = world.grant("a");
    let pool = world.builder(vec![a]).build().await.expect("pool builds");
    world.clock.advance(Duration::from_secs(490));
    world.tokens.inject(FaultTarget::Any, Fault::Status(503));
    (world, pool)
}

#[tokio::test]
async fn an_outage_serves_every_call_while_the_token_works_and_refreshes_once_per_backoff_step() {
    // 1,000 calls 1 ms apart with one credential (the reported case: 2-5 of 1,000 were served).
    let (world, pool) = world_with_one_expiring_credential().await;
    let mut served = 0;
    for i in 0..1_000 {
        world
            .chat(&pool, &format!("call {i}"))
            .await
            .expect("served with the token that still works");
        served += 1;
        world.clock.advance(Duration::from_millis(1));
    }
    let first_second = world.tokens.stats().requests;
    // Backoffs of 1 s then 2 s within one second: at most two attempts (one per step).
    assert!(
        (1..=2).contains(&first_second),
        "refresh attempts in the first second: {first_second}"
    );

    // A 60-second outage with calls every 60 ms: still every call served, and the attempts follow
    // the backoff schedule (1, 2, 4, 8, 16, 32 s), not the call rate.
    let mut served_60s = 0;
    for i in 0..1_000 {
        world
            .chat(&pool, &format!("later {i}"))
            .await
            .expect("served with the token that still works");
        served_60s += 1;
        world.clock.advance(Duration::from_millis(60));
    }
    let attempts_60s = world.tokens.stats().requests;
    assert!(
        attempts_60s <= 8,
        "refresh attempts over 61 s of outage: {attempts_60s}"
    );
    let h = pool.credential_health("a").expect("known");
    assert!(h.is_available && !h.needs_reauthorization, "{h:?}");

    // The token runs out (110 s after the outage began) while the endpoint is still down: the
    // call fails retryably and the error says when the credential is expected back.
    world.clock.advance(Duration::from_secs(50));
    let err = world
        .chat(&pool, "after expiry")
        .await
        .expect_err("no working token, none can be refreshed");
    assert!(err.is_retryable(), "{err}");
    let err = world
        .chat(&pool, "after expiry, again")
        .await
        .expect_err("still down");
    let back = err
        .next_available_at()
        .expect("the error says when the credential is expected back");
    assert!(back > world.now(), "{err}");

    // The endpoint recovers: the next call after the backoff refreshes and is served.
    world.tokens.clear_faults();
    world
        .clock
        .advance((back - world.now()).to_std().unwrap_or_default());
    world
        .chat(&pool, "recovered")
        .await
        .expect("refreshed and served");
    let stats = world.tokens.stats();
    assert_eq!(stats.refreshes, 1);
    assert_eq!((stats.invalid_grants, stats.reused_refresh_tokens), (0, 0));

    report(
        module_path!(),
        json!({
            "served_1000_calls_1ms_apart": served,
            "refresh_attempts_first_second": first_second,
            "served_1000_calls_over_60s": served_60s,
            "refresh_attempts_over_61s": attempts_60s,
            "refreshes_after_recovery": stats.refreshes,
            "invalid_grants": stats.invalid_grants,
        }),
    );
}
