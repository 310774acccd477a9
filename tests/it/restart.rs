//! Restart: a pool rebuilt from the `FileStore` after many refreshes keeps working against the
//! strict token server. Every refresh rotates the refresh token and the server revokes the whole
//! grant when a consumed one is presented again, so a rotated refresh token that was not persisted
//! (or a stale copy loaded on restart) would show as invalid_grant.

use std::sync::Arc;
use std::time::Duration;

use oauth_manager::store::{CredentialStore, FileStore};
use oauth_manager::{ExposeSecret, MaintenanceConfig};
use oauth_testkit::token_server::TokenServerConfig;
use serde_json::json;

use crate::support::{PROVIDER, World, report};

const IDS: [&str; 3] = ["a", "b", "c"];
const RESTARTS: usize = 6;
const ROUNDS_PER_LIFE: usize = 5;

#[tokio::test]
async fn a_pool_rebuilt_from_the_file_store_keeps_working_after_many_refreshes() {
    let world = World::start_with(TokenServerConfig {
        access_token_ttl: Duration::from_secs(600),
        ..TokenServerConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let grants: Vec<_> = IDS.iter().map(|id| world.grant(id)).collect();
    let maintenance = MaintenanceConfig::default().with_refresh_ahead(Duration::ZERO);
    let mut served = 0u64;

    for life in 0..RESTARTS {
        let store: Arc<dyn CredentialStore> =
            Arc::new(FileStore::open(dir.path()).expect("store opens"));
        // The first life seeds the store from configuration; later lives load only the store.
        let configured = if life == 0 {
            grants.iter().map(|(c, _)| c.clone()).collect()
        } else {
            Vec::new()
        };
        let pool = world
            .builder(configured)
            .store(store)
            .build()
            .await
            .expect("pool builds from the store");
        assert_eq!(pool.credentials().len(), IDS.len());
        for round in 0..ROUNDS_PER_LIFE {
            // Past the refresh buffer: every credential refreshes on use or in maintenance.
            world.clock.advance(Duration::from_secs(6 * 60));
            for i in 0..6 {
                world
                    .chat(&pool, &format!("life {life} round {round} call {i}"))
                    .await
                    .unwrap_or_else(|e| panic!("life {life} round {round}: {e}"));
                served += 1;
            }
            pool.run_maintenance_once(&maintenance).await;
        }
        // What the pool holds is what the server will accept next.
        for id in IDS {
            let c = pool.credential(id).expect("known");
            let rt = c.refresh_token.as_ref().expect("refresh token");
            assert!(
                world.tokens.is_refresh_token_valid(rt.expose_secret()),
                "life {life}: {id} holds a live refresh token"
            );
        }
        drop(pool);
    }

    // The file itself holds the live tokens.
    let store = FileStore::open(dir.path()).expect("store opens");
    for v in store.load_all(PROVIDER).await.expect("loads") {
        let rt = v.value.refresh_token.as_ref().expect("refresh token");
        assert!(world.tokens.is_refresh_token_valid(rt.expose_secret()));
        assert!(
            world
                .tokens
                .is_access_token_valid(v.value.access_token.expose_secret())
        );
    }
    let server = world.tokens.stats();
    let expected = u64::try_from(RESTARTS * ROUNDS_PER_LIFE * IDS.len()).expect("small");
    assert_eq!(
        server.refreshes, expected,
        "every credential refreshed every round"
    );
    assert_eq!(
        server.invalid_grants, 0,
        "no refresh token was lost or reused"
    );
    assert_eq!(server.reused_refresh_tokens, 0);
    assert_eq!(server.families_revoked, 0);

    report(
        module_path!(),
        json!({
            "restarts": RESTARTS,
            "refreshes": server.refreshes,
            "requests": served,
            "invalid_grants": server.invalid_grants,
            "reused_refresh_tokens": server.reused_refresh_tokens,
        }),
    );
}
