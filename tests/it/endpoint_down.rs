//! The token endpoint down for a while (503s, then dropped connections): refreshes fail as
//! transient and back off, nobody is marked for re-authorization, and once the endpoint is back
//! the pool recovers by itself: no re-enable, no restart.

use std::time::Duration;

use chrono::TimeDelta;
use oauth_manager::{EventKind, ExposeSecret, FailureKind};
use oauth_testkit::token_server::{Fault, FaultTarget, TokenServerConfig};
use serde_json::json;

use crate::support::{World, report};

#[tokio::test]
async fn a_token_endpoint_outage_backs_off_and_recovers_without_intervention() {
    // Access tokens live 10 minutes: within the 5-minute refresh buffer after 5.
    let world = World::start_with(TokenServerConfig {
        access_token_ttl: Duration::from_secs(600),
        ..TokenServerConfig::default()
    })
    .await;
    let (a, _) = world.grant("a");
    let (b, _) = world.grant("b");
    let pool = world
        .builder(vec![a, b])
        .build()
        .await
        .expect("pool builds");
    let mut events = pool.subscribe();
    world.clock.advance(Duration::from_secs(6 * 60));

    // The endpoint goes down while the tokens still have 4 minutes: calls keep being served
    // with them; the refreshes fail as transient and back off.
    world.tokens.inject(FaultTarget::Any, Fault::Status(503));
    let mut served_during_outage = 0;
    let mut backoffs = Vec::new();
    let advance_to_next_backoff_end = |world: &World| {
        let next = ["a", "b"]
            .iter()
            .filter_map(|id| {
                pool.credential_health(id)
                    .and_then(|h| h.refresh_backoff_until)
            })
            .min()
            .expect("backing off");
        world
            .clock
            .advance((next - world.now()).to_std().unwrap_or_default());
    };
    for round in 0..4 {
        if round == 2 {
            world.tokens.clear_faults();
            world.tokens.inject(FaultTarget::Any, Fault::DropConnection);
        }
        world
            .chat(&pool, "during the outage")
            .await
            .expect("served with a token that still works");
        served_during_outage += 1;
        for id in ["a", "b"] {
            let h = pool.credential_health(id).expect("known");
            assert!(!h.needs_reauthorization, "an outage is not a dead grant");
            if let Some(until) = h.refresh_backoff_until {
                backoffs.push((until - world.now()).num_milliseconds());
            }
        }
        // Time passes until the earliest backoff ends (no wall-clock sleeping).
        advance_to_next_backoff_end(&world);
    }
    // Still down when the tokens run out: now calls fail, retryably, and nobody is written off.
    world.clock.advance(Duration::from_secs(5 * 60));
    let mut failed_calls = 0;
    for _ in 0..2 {
        let err = world
            .chat(&pool, "after the tokens expired")
            .await
            .expect_err("no token works and none can be refreshed");
        assert!(err.is_retryable(), "{err}");
        failed_calls += 1;
        advance_to_next_backoff_end(&world);
    }
    for id in ["a", "b"] {
        assert!(
            !pool
                .credential_health(id)
                .expect("known")
                .needs_reauthorization
        );
    }
    let h = pool.credential_health("a").expect("known");
    assert!(h.refresh_fail_count >= 2, "{h:?}");
    let mut transient_failures = 0;
    while let Ok(e) = events.try_recv() {
        if let EventKind::RefreshFailed { reason, .. } = e.kind {
            assert_eq!(reason, FailureKind::Transient);
            transient_failures += 1;
        }
    }
    assert!(transient_failures >= 4);
    // Backoff grows while the outage lasts (1 s, 2 s, ... per credential).
    assert!(
        backoffs.iter().max() > backoffs.iter().min(),
        "{backoffs:?}"
    );
    let outage = world.tokens.stats();
    assert_eq!(outage.refreshes, 0);
    assert!(outage.faults_injected >= 4);

    // The endpoint comes back; the next calls refresh and succeed.
    world.tokens.clear_faults();
    world.clock.advance(Duration::from_secs(10));
    for i in 0..10 {
        world
            .chat(&pool, &format!("after {i}"))
            .await
            .expect("recovered by itself");
    }
    let server = world.tokens.stats();
    assert_eq!(server.refreshes, 2, "each credential refreshed once");
    assert_eq!(
        (server.invalid_grants, server.reused_refresh_tokens),
        (0, 0)
    );
    for id in ["a", "b"] {
        let h = pool.credential_health(id).expect("known");
        assert!(
            h.is_available && h.is_healthy && h.refresh_fail_count == 0,
            "{h:?}"
        );
        let c = pool.credential(id).expect("known");
        assert!(
            world
                .tokens
                .is_access_token_valid(c.access_token.expose_secret())
        );
        assert!(c.expires_at > Some(world.now() + TimeDelta::minutes(9)));
    }

    report(
        module_path!(),
        json!({
            "served_during_outage_with_valid_tokens": served_during_outage,
            "failed_calls_after_tokens_expired": failed_calls,
            "refresh_failures": transient_failures,
            "max_backoff_ms": backoffs.iter().max(),
            "refreshes_after_recovery": server.refreshes,
            "invalid_grants": server.invalid_grants,
        }),
    );
}
