//! A 401 on a request: the credential is refreshed once (a real refresh-token grant), the request
//! is retried once on the same credential with the new token, and succeeds.

use oauth_manager::{EventKind, ExposeSecret};
use oauth_testkit::provider::ProviderFault;
use serde_json::json;

use crate::support::{World, report};

#[tokio::test]
async fn a_401_refreshes_once_and_retries_once_on_the_same_credential() {
    let world = World::start().await;
    let (a, ga) = world.grant("a");
    let (b, gb) = world.grant("b");
    let pool = world
        .builder(vec![a, b])
        .build()
        .await
        .expect("pool builds");
    let mut events = pool.subscribe();
    // Whichever credential goes first is told 401 once.
    for family in [ga.family, gb.family] {
        world
            .provider
            .inject_times(family, ProviderFault::Unauthorized, 1);
    }

    let served = world
        .chat(&pool, "hello")
        .await
        .expect("served after the retry");
    let id = served.credential.clone();
    let (family, first_token) = if id == "a" {
        (ga.family, &ga.access_token)
    } else {
        (gb.family, &gb.access_token)
    };
    assert_eq!(
        served.attempts, 1,
        "the retry is on the same credential, not a failover"
    );

    let stats = world.provider.stats();
    assert_eq!((stats.unauthorized, stats.ok), (1, 1));
    assert_eq!(stats.ok_for(family), 1, "the same credential served it");
    let server = world.tokens.stats();
    assert_eq!(server.refreshes, 1, "exactly one refresh");
    assert_eq!(
        (server.invalid_grants, server.reused_refresh_tokens),
        (0, 0)
    );

    // The pool now holds the new tokens, which the server accepts.
    let now_held = pool.credential(id.as_str()).expect("known");
    let access = now_held.access_token.expose_secret();
    assert_ne!(access, first_token.as_str());
    assert_eq!(world.tokens.access_token_family(access), Some(family));
    let refresh = now_held
        .refresh_token
        .as_ref()
        .expect("rotated refresh token");
    assert!(world.tokens.is_refresh_token_valid(refresh.expose_secret()));

    let mut refreshed = 0;
    while let Ok(event) = events.try_recv() {
        if let EventKind::Refreshed {
            credential,
            refresh_token_rotated,
            ..
        } = &event.kind
        {
            assert_eq!(credential, &id);
            assert!(refresh_token_rotated);
            refreshed += 1;
        }
    }
    assert_eq!(refreshed, 1);
    let health = pool.credential_health(id.as_str()).expect("known");
    assert!(
        health.is_available && health.failure_count == 0,
        "{health:?}"
    );

    report(
        module_path!(),
        json!({
            "provider_401": stats.unauthorized,
            "token_refreshes": server.refreshes,
            "attempts": served.attempts,
            "invalid_grants": server.invalid_grants,
        }),
    );
}
