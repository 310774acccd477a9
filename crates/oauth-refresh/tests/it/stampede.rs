//! The stampede: 1,000 concurrent callers, one expiring credential, exactly one token call.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use oauth_core::{Credential, ExposeSecret};
use oauth_refresh::{RefreshCoordinator, Refresher};
use oauth_testkit::token_server::{Fault, FaultTarget, TokenServer};
use tokio::sync::Barrier;

use crate::support::{refresher, seeded};

const CALLERS: usize = 1_000;
const ROUNDS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thousand_callers_one_refresh_no_reuse() {
    let server = TokenServer::start().await.expect("server starts");
    let refresher: Arc<dyn Refresher> = Arc::new(refresher(&server));
    let coordinator = RefreshCoordinator::new();

    let mut rounds = 0_u64;
    for latency in [
        Duration::ZERO,
        Duration::from_micros(100),
        Duration::from_millis(1),
    ] {
        server.clear_faults();
        if !latency.is_zero() {
            server.inject(FaultTarget::Any, Fault::Latency(latency));
        }
        for round in 0..ROUNDS {
            let grant = server.issue_grant("stampede");
            let stale = seeded(&format!("cred-{}-{round}", latency.as_micros()), &grant);
            let store = Arc::new(RwLock::new(stale.clone()));
            let calls_before = server.stats().requests;
            let barrier = Arc::new(Barrier::new(CALLERS));

            let mut tasks = Vec::with_capacity(CALLERS);
            for _ in 0..CALLERS {
                let (coordinator, refresher, barrier) = (
                    coordinator.clone(),
                    Arc::clone(&refresher),
                    Arc::clone(&barrier),
                );
                let (read, write) = (Arc::clone(&store), Arc::clone(&store));
                let id = stale.id.clone();
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let outcome = coordinator
                        .refresh_if_needed(
                            &id,
                            move || read.read().expect("store lock").clone(),
                            |c: &Credential| c.needs_refresh(Utc::now()),
                            refresher,
                            move |new| {
                                Box::pin(async move {
                                    *write.write().expect("store lock") = new;
                                    Ok(())
                                })
                            },
                        )
                        .await
                        .expect("every caller gets the refreshed credential");
                    outcome.credential.access_token.expose_secret().to_owned()
                }));
            }
            let mut tokens = HashSet::new();
            for t in tasks {
                tokens.insert(t.await.expect("caller task"));
            }
            assert_eq!(
                server.stats().requests - calls_before,
                1,
                "exactly one token-endpoint call (latency {latency:?}, round {round})"
            );
            assert_eq!(tokens.len(), 1, "all callers got the same access token");
            let token = tokens.into_iter().next().expect("one token");
            assert_ne!(token, grant.access_token);
            assert!(server.is_access_token_valid(&token));
            assert_eq!(
                store
                    .read()
                    .expect("store lock")
                    .access_token
                    .expose_secret(),
                token,
                "the refreshed credential was committed"
            );
            assert_eq!(coordinator.in_flight(), 0);
            rounds += 1;
        }
    }

    let stats = server.stats();
    assert_eq!(stats.refreshes, rounds);
    assert_eq!(stats.invalid_grants, 0);
    assert_eq!(stats.reused_refresh_tokens, 0);
    let serials: Vec<_> = server
        .log()
        .iter()
        .filter_map(|r| r.refresh_token_serial)
        .collect();
    let distinct: HashSet<_> = serials.iter().collect();
    assert_eq!(
        serials.len(),
        distinct.len(),
        "no refresh token presented twice"
    );
}
