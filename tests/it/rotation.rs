//! Rotation with a grace period (manual clock): the replacement takes the traffic at once, the old
//! credential is only a fallback, and maintenance decommissions it when the grace ends.

use std::time::Duration;

use oauth_manager::rotation::RotationPolicy;
use oauth_manager::{CredentialId, EventKind};
use serde_json::json;

use crate::support::{World, report};

const GRACE: Duration = Duration::from_secs(2 * 3600);

#[tokio::test]
async fn the_replacement_takes_traffic_and_the_old_one_goes_after_the_grace() {
    let world = World::start().await;
    let (old, g_old) = world.grant("old");
    let (other, g_other) = world.grant("other");
    let pool = world
        .builder(vec![old, other])
        .rotation_policy(RotationPolicy {
            enabled: true,
            rotation_interval: Duration::from_secs(30 * 86_400),
            grace_period: GRACE,
            auto_decommission: true,
        })
        .build()
        .await
        .expect("pool builds");
    let mut events = pool.subscribe();

    for i in 0..10 {
        world
            .chat(&pool, &format!("before {i}"))
            .await
            .expect("served");
    }
    let before = world.provider.stats();
    assert!(
        before.ok_for(g_old.family) > 0,
        "the old one served before the rotation"
    );

    // An operator re-authorizes the account; the new grant replaces `old`.
    let (new, g_new) = world.grant("new");
    pool.mark_for_rotation("old", new).await.expect("marked");
    let state = pool.rotation_state("old").expect("tracked");
    assert!(state.marked_for_rotation);
    for i in 0..20 {
        world
            .chat(&pool, &format!("during {i}"))
            .await
            .expect("served");
    }
    let during = world.provider.stats();
    assert_eq!(
        during.ok_for(g_old.family),
        before.ok_for(g_old.family),
        "the old credential takes no traffic while others can serve"
    );
    let new_served = during.ok_for(g_new.family);
    assert!(
        new_served >= 10,
        "the replacement takes its share: {new_served}"
    );
    assert!(
        pool.complete_rotation("old").await.is_err(),
        "grace not over"
    );

    // A second before the end of the grace: still there. Just after: maintenance decommissions
    // it.
    let maintenance = oauth_manager::MaintenanceConfig::default();
    world.clock.advance(GRACE - Duration::from_secs(1));
    let report1 = pool.run_maintenance_once(&maintenance).await;
    assert!(report1.decommissioned.is_empty());
    assert!(pool.credential("old").is_some());
    world.clock.advance(Duration::from_secs(2));
    let report2 = pool.run_maintenance_once(&maintenance).await;
    assert_eq!(
        report2.decommissioned,
        vec![CredentialId::new("old").expect("valid")]
    );
    let ids: Vec<String> = pool
        .credential_ids()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ids, ["other", "new"]);
    let mut decommissioned = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e.kind, EventKind::Decommissioned { .. }) {
            decommissioned += 1;
        }
    }
    assert_eq!(decommissioned, 1);

    // Two hours on, the tokens have expired: the survivors refresh (rotating refresh tokens) and
    // keep serving.
    for i in 0..10 {
        world
            .chat(&pool, &format!("after {i}"))
            .await
            .expect("served");
    }
    let after = world.provider.stats();
    assert_eq!(after.ok_for(g_old.family), before.ok_for(g_old.family));
    assert!(after.ok_for(g_other.family) > during.ok_for(g_other.family));
    let server = world.tokens.stats();
    assert_eq!(
        (server.invalid_grants, server.reused_refresh_tokens),
        (0, 0)
    );

    report(
        module_path!(),
        json!({
            "grace_s": GRACE.as_secs(),
            "old_served_during_grace": during.ok_for(g_old.family) - before.ok_for(g_old.family),
            "new_served_during_grace": new_served,
            "decommissioned": decommissioned,
            "refreshes": server.refreshes,
        }),
    );
}
