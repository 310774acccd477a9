//! invalid_grant on refresh (the grant was revoked): the credential needs re-authorization, a
//! signed `failure` webhook arrives and verifies, and the other credentials carry the load.

use std::sync::Arc;
use std::time::Duration;

use oauth_manager::webhooks::{Notifier, WebhookNotifier};
use oauth_manager::{ExecuteError, ExposeSecret};
use oauth_testkit::token_server::Outcome;
use serde_json::json;

use crate::support::{World, monitoring, report, signed_receiver};

#[tokio::test]
async fn a_revoked_grant_needs_reauthorization_alerts_and_the_others_carry_the_load() {
    let world = World::start().await;
    let receiver = signed_receiver().await;
    let config = monitoring(receiver.url());
    let notifier = Arc::new(WebhookNotifier::new(&config).expect("notifier"));
    let (a, ga) = world.grant("a");
    let (b, gb) = world.grant("b");
    let (c, gc) = world.grant("c");
    let pool = world
        .builder(vec![a, b, c])
        .monitoring(config)
        .notifier(Arc::clone(&notifier) as Arc<dyn Notifier>)
        .build()
        .await
        .expect("pool builds");

    // The user revoked `a` at the provider: its access token is refused (401), and so is its
    // refresh token (invalid_grant).
    world.tokens.revoke_family(ga.family);
    let mut served_by = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..40 {
        let served = world
            .chat(&pool, &format!("request {i}"))
            .await
            .expect("the other credentials carry the load");
        *served_by.entry(served.credential.to_string()).or_default() += 1;
    }
    assert!(!served_by.contains_key("a"));
    assert_eq!(served_by.values().sum::<u32>(), 40);

    let health = pool.credential_health("a").expect("known");
    assert!(
        health.needs_reauthorization && !health.is_available,
        "{health:?}"
    );
    let server = world.tokens.stats();
    assert_eq!(
        server.invalid_grants, 1,
        "a dead grant is presented once, not retried"
    );
    assert_eq!(server.reused_refresh_tokens, 0);
    assert_eq!(server.refreshes, 0);
    assert!(
        world
            .tokens
            .log()
            .iter()
            .all(|r| r.client_id.as_deref() == Some("client-a")
                && r.outcome == Outcome::InvalidGrant { reused: false })
    );
    let stats = world.provider.stats();
    // The provider refused `a`'s revoked access token once: the refresh that followed found the
    // grant dead, so the pool neither retried the rejected token nor selected `a` again.
    assert_eq!(stats.unauthorized, 1);
    assert_eq!(stats.ok_for(gb.family) + stats.ok_for(gc.family), 40);

    // A signed `failure` webhook (and a `needs_reauthorization` one) arrived and verified.
    let arrived = |kind: &str| {
        receiver
            .accepted_events()
            .iter()
            .any(|e| e["type"] == kind && e["credential_id"] == "a")
    };
    assert!(
        crate::support::eventually(Duration::from_secs(10), || arrived("failure")
            && arrived("needs_reauthorization"))
        .await,
        "webhooks: {:?}",
        receiver.accepted_events()
    );
    let failure = receiver
        .accepted()
        .into_iter()
        .find(|r| r.json().is_some_and(|e| e["type"] == "failure"))
        .expect("failure webhook");
    assert!(failure.is_accepted() && failure.header("webhook-signature").is_some());
    let event = failure.json().expect("json body");
    assert_eq!(event["details"]["error"], "permanent_auth");
    assert!(receiver.rejections().is_empty(), "every delivery verified");

    // No secret in any delivery.
    for r in receiver.requests() {
        let body = String::from_utf8_lossy(&r.body);
        for secret in [&ga.access_token, &ga.refresh_token, &gb.access_token] {
            assert!(!body.contains(secret.as_str()));
        }
    }

    // Re-authorization brings it back.
    let fresh = world.tokens.issue_grant("client-a");
    pool.reauthorize(crate::support::credential("a", &fresh, world.now()))
        .await
        .expect("re-authorized");
    assert!(
        !pool
            .credential_health("a")
            .expect("known")
            .needs_reauthorization
    );
    // At once: the backoffs the old token caused end with it.
    let h = pool.credential_health("a").expect("known");
    assert!(h.is_available, "{h:?}");
    let held = pool.credential("a").expect("known");
    assert!(
        world
            .tokens
            .is_access_token_valid(held.access_token.expose_secret())
    );

    // With every credential revoked, the error is permanent and typed.
    for family in [gb.family, gc.family, fresh.family] {
        world.tokens.revoke_family(family);
    }
    let err = world.chat(&pool, "x").await.expect_err("nothing can serve");
    assert!(matches!(
        err,
        ExecuteError::AttemptsExhausted { .. } | ExecuteError::Unavailable { .. }
    ));

    let delivered = notifier.stats().delivered;
    report(
        module_path!(),
        json!({
            "requests_served": 40,
            "served_by": served_by,
            "invalid_grants": server.invalid_grants,
            "webhooks_verified": receiver.accepted().len(),
            "webhooks_delivered": delivered,
        }),
    );
}
