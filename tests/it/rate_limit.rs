//! A provider answering 429 on one credential: that credential cools down exactly as long as the
//! provider said (the `Retry-After` header, or the reset hint in the body), and traffic moves on.

use std::time::Duration;

use chrono::TimeDelta;
use oauth_testkit::provider::ProviderFault;
use serde_json::json;

use crate::support::{World, report};

#[tokio::test]
async fn a_rate_limited_credential_cools_exactly_that_long_and_traffic_moves_on() {
    let world = World::start().await;
    let (a, ga) = world.grant("a");
    let (b, gb) = world.grant("b");
    let (c, gc) = world.grant("c");
    let pool = world
        .builder(vec![a, b, c])
        .build()
        .await
        .expect("pool builds");
    world.provider.inject(
        ga.family,
        ProviderFault::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            reset_hint_in_body: false,
        },
    );
    world.provider.inject(
        gb.family,
        ProviderFault::RateLimited {
            retry_after: Some(Duration::from_secs(45)),
            reset_hint_in_body: true,
        },
    );
    let start = world.now();

    // Every call is served, by `c` once `a` and `b` have said 429 once each.
    let mut failovers = 0;
    for i in 0..30 {
        let served = world
            .chat(&pool, &format!("request {i}"))
            .await
            .expect("traffic moves on to the healthy credential");
        assert_eq!(served.credential, "c");
        failovers += served.attempts - 1;
    }
    let stats = world.provider.stats();
    assert_eq!(
        stats.rate_limited, 2,
        "each limited credential was asked once"
    );
    assert_eq!(failovers, 2);
    assert_eq!(stats.ok_for(gc.family), 30);
    assert_eq!((stats.ok_for(ga.family), stats.ok_for(gb.family)), (0, 0));

    // The cooldowns are exactly what the provider asked for: header 30 s, body hint 45 s.
    let ha = pool.credential_health("a").expect("known");
    let hb = pool.credential_health("b").expect("known");
    assert_eq!(ha.cooldown_until, Some(start + TimeDelta::seconds(30)));
    assert_eq!(hb.cooldown_until, Some(start + TimeDelta::seconds(45)));
    assert!(!ha.needs_reauthorization && !hb.needs_reauthorization);

    // One second before the end, still cooling; at the end, available again.
    world.provider.clear_faults();
    world.clock.advance(Duration::from_secs(29));
    assert!(!pool.credential_health("a").expect("known").is_available);
    world.clock.advance(Duration::from_secs(1));
    assert!(pool.credential_health("a").expect("known").is_available);
    assert!(!pool.credential_health("b").expect("known").is_available);
    world.clock.advance(Duration::from_secs(15));
    assert!(pool.credential_health("b").expect("known").is_available);

    // Back in rotation: all three take traffic again.
    for i in 0..30 {
        world
            .chat(&pool, &format!("after {i}"))
            .await
            .expect("served");
    }
    let after = world.provider.stats();
    assert!(after.ok_for(ga.family) > 0 && after.ok_for(gb.family) > 0);
    assert_eq!(after.rate_limited, 2, "no further 429");
    assert_eq!(
        world.tokens.stats().refreshes,
        0,
        "a 429 is not a reason to refresh"
    );

    report(
        module_path!(),
        json!({
            "requests": after.requests,
            "rate_limited": after.rate_limited,
            "failovers": failovers,
            "cooldown_header_s": 30,
            "cooldown_body_hint_s": 45,
            "served_after_cooldown_a_b": [after.ok_for(ga.family), after.ok_for(gb.family)],
        }),
    );
}
