//! A replica does not wait for another replica's refresh while its own token still works: two
//! pools ("replicas" A and B, one process) over one real PostgreSQL database and one strict
//! token server share an account whose token is due for a proactive refresh (60 s left, 5 min
//! buffer) but valid. A's refresh takes the lease and its refresher is held by the test; B's
//! calls meanwhile are served at once with the current token (before, each waited for the lease:
//! 2.05-2.14 s in tests, up to `lease_ttl`). A call of B whose token the provider rejects (401)
//! does wait for the holder, and gets A's token when A commits; B adopts it without a refresh of
//! its own: one exchange at the token server, no reuse.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use oauth_core::{EventKind, ManualClock};
use oauth_manager::refresh::{RefreshError, Refresher, TokenSet};
use oauth_manager::store::CredentialStore;
use oauth_manager::{
    ClassifyFailure, Clock as _, Credential, CredentialId, ExposeSecret, FailureKind,
    MaintenanceConfig, OAuthKeyManager,
};
use oauth_store_postgres::{PostgresConfig, PostgresStore};
use oauth_testkit::token_server::{TokenServer, TokenServerConfig};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};

use crate::pg::Cluster;
use crate::replicas::runtime;
use crate::support::{PROVIDER, credential, refresher, report};

const ACCOUNT: &str = "acct-a";
/// Far below the lease's time to live and the lock wait: a call that waited for the lease
/// cannot finish within it.
const AT_ONCE: Duration = Duration::from_secs(2);

/// The HTTP refresher behind a gate the test opens; counts its calls and says when one began.
#[derive(Debug)]
struct Gated {
    inner: Arc<dyn Refresher>,
    calls: AtomicUsize,
    entered: Notify,
    gate: Semaphore,
}

impl Gated {
    fn new(inner: Arc<dyn Refresher>, open: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: AtomicUsize::new(0),
            entered: Notify::new(),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
        })
    }
}

#[oauth_manager::async_trait]
impl Refresher for Gated {
    async fn refresh(&self, credential: &Credential) -> Result<TokenSet, RefreshError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.entered.notify_one();
        let _pass = self
            .gate
            .acquire()
            .await
            .map_err(|_| RefreshError::other(FailureKind::Transient, "gate closed"))?;
        self.inner.refresh(credential).await
    }
}

/// The provider's answer: 401 for a token it no longer accepts.
#[derive(Debug)]
struct Unauthorized;

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("401")
    }
}

impl std::error::Error for Unauthorized {}

impl ClassifyFailure for Unauthorized {
    fn failure_kind(&self) -> FailureKind {
        FailureKind::Unauthorized
    }
}

fn store_config(url: &str, replica: &str) -> PostgresConfig {
    PostgresConfig::from_url(url)
        .expect("database url")
        .replica_id(replica)
        .pool_size(4)
        .connect_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(3))
}

/// The provider no longer accepts this token; `seen` is told when it answered 401.
#[derive(Clone)]
struct Reject {
    token: String,
    seen: Arc<Notify>,
}

/// One call whose operation returns the access token it was given (or 401 for a rejected one).
async fn call(pool: &OAuthKeyManager, reject: Option<Reject>) -> Result<String, String> {
    pool.execute_with_failover(|c| {
        let reject = reject.clone();
        async move {
            let token = c.access_token.expose_secret().to_owned();
            if let Some(reject) = reject.filter(|r| r.token == token) {
                reject.seen.notify_one();
                return Err(Unauthorized);
            }
            Ok((token, None))
        }
    })
    .await
    .map(|served| served.value)
    .map_err(|e| e.to_string())
}

async fn pool(
    url: &str,
    replica: &str,
    clock: &ManualClock,
    refresher: Arc<Gated>,
) -> (OAuthKeyManager, PostgresStore) {
    let store = PostgresStore::connect(store_config(url, replica))
        .await
        .expect("connects");
    let pool = OAuthKeyManager::builder(PROVIDER)
        .store_arc(Arc::new(store.clone()) as Arc<dyn CredentialStore>)
        .clock(Arc::new(clock.clone()))
        .refresher_arc(refresher)
        .build()
        .await
        .expect("pool builds from the shared store");
    (pool, store)
}

#[test]
#[allow(clippy::too_many_lines)]
fn a_replica_serves_a_valid_token_while_another_holds_the_refresh_lease() {
    let cluster = Cluster::start();
    let rt = runtime();
    let db = rt.block_on(cluster.fresh_database());
    rt.block_on(async {
        let tokens = Arc::new(
            TokenServer::start_with(TokenServerConfig {
                access_token_ttl: Duration::from_secs(60),
                ..TokenServerConfig::default()
            })
            .await
            .expect("token server"),
        );
        // Wall time stands still: the token stays valid (60 s left) and due (5 min buffer)
        // throughout; nothing here waits for time to pass.
        let clock = ManualClock::new(Utc::now());
        let http = refresher(&tokens.url(), Arc::new(clock.clone()));
        let (gate_a, gate_b) = (Gated::new(Arc::clone(&http), false), Gated::new(http, true));
        let grant = tokens.issue_grant(&format!("client-{ACCOUNT}"));
        let old = grant.access_token.clone();
        {
            let seed = PostgresStore::connect(store_config(&db, "seed"))
                .await
                .expect("connects");
            seed.save(PROVIDER, &credential(ACCOUNT, &grant, clock.now()), None)
                .await
                .expect("seeded");
        }
        let (a, _store_a) = pool(&db, "replica-a", &clock, Arc::clone(&gate_a)).await;
        let (b, store_b) = pool(&db, "replica-b", &clock, Arc::clone(&gate_b)).await;
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut b_events = b.subscribe();
        let sink = Arc::clone(&failures);
        tokio::spawn(async move {
            while let Ok(event) = b_events.recv().await {
                if matches!(event.kind, EventKind::RefreshFailed { .. }) {
                    sink.lock().expect("lock").push(format!("{:?}", event.kind));
                }
            }
        });

        // A's call refreshes first: it takes the lease, then its refresher waits at the gate.
        let entered = gate_a.entered.notified();
        let a_call = tokio::spawn({
            let a = a.clone();
            async move { call(&a, None).await }
        });
        tokio::time::timeout(Duration::from_secs(10), entered)
            .await
            .expect("A's refresh began");
        let lease = store_b
            .lease_state(PROVIDER, &CredentialId::new(ACCOUNT).expect("id"))
            .await
            .expect("reads")
            .expect("a lease row");
        assert!(
            lease.held && lease.owner.as_deref() == Some("replica-a"),
            "{lease:?}"
        );
        // B follows the store's change feed (its first tick would refresh ahead: left to A).
        let maintenance = b
            .spawn_maintenance(
                MaintenanceConfig::default().with_interval(Duration::from_secs(3600)),
            )
            .expect("maintenance starts");

        // B's calls, one after another and then eight at once, while A's refresher is held.
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            let one = Instant::now();
            let token = tokio::time::timeout(AT_ONCE, call(&b, None))
                .await
                .expect("B's call waited for A's lease")
                .expect("served");
            slowest = slowest.max(one.elapsed());
            assert_eq!(token, old, "the current token, still valid");
        }
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { call(&b, None).await })
            })
            .collect();
        let together = tokio::time::timeout(AT_ONCE, join_all(tasks))
            .await
            .expect("concurrent calls of B waited for A's lease");
        for token in together {
            assert_eq!(token.expect("task").expect("served"), old);
        }
        let b_phase = started.elapsed();
        assert!(!a_call.is_finished(), "A's refresher is still held");
        assert_eq!(gate_a.calls.load(Ordering::SeqCst), 1);

        // A call whose token the provider rejects waits for the holder and gets its token.
        let reject = Reject {
            token: old.clone(),
            seen: Arc::new(Notify::new()),
        };
        let seen = Arc::clone(&reject.seen);
        let answered_401 = seen.notified();
        let rejected = tokio::spawn({
            let b = b.clone();
            async move { call(&b, Some(reject)).await }
        });
        tokio::time::timeout(AT_ONCE, answered_401)
            .await
            .expect("the call was made with the old token and answered 401");
        // Calls whose token works do not wait for the 401 call's refresh either.
        let token = tokio::time::timeout(AT_ONCE, call(&b, None))
            .await
            .expect("a call was held up by the waiting 401 call")
            .expect("served");
        assert_eq!(token, old);
        assert!(!rejected.is_finished(), "the 401 call waits for A's result");

        gate_a.gate.add_permits(1);
        let fresh = a_call.await.expect("task").expect("A's call served");
        assert_ne!(fresh, old, "A refreshed");
        let retried = tokio::time::timeout(Duration::from_secs(10), rejected)
            .await
            .expect("the 401 call ends once A committed")
            .expect("task")
            .expect("served after the 401, with A's token");
        assert_eq!(retried, fresh, "B adopted A's token instead of refreshing");
        // The change feed brings A's token to B, and B's calls use it.
        assert!(
            crate::support::eventually(Duration::from_secs(5), || {
                b.credential(ACCOUNT)
                    .is_some_and(|c| c.access_token.expose_secret() == fresh)
            })
            .await,
            "B holds A's token"
        );
        assert_eq!(call(&b, None).await.expect("served"), fresh);
        maintenance.stop().await;

        let server = tokens.stats();
        let figures = json!({
            "b_calls_while_a_held_the_lease": 18,
            "b_phase_ms": b_phase.as_millis() as u64,
            "b_slowest_sequential_call_ms": slowest.as_millis() as u64,
            "refresher_calls_a": gate_a.calls.load(Ordering::SeqCst),
            "refresher_calls_b": gate_b.calls.load(Ordering::SeqCst),
            "token_refreshes": server.refreshes,
            "reused_refresh_tokens": server.reused_refresh_tokens,
            "invalid_grants": server.invalid_grants,
        });
        report(module_path!(), figures.clone());
        assert_eq!(
            gate_b.calls.load(Ordering::SeqCst),
            0,
            "B never refreshed: {figures}"
        );
        assert_eq!(server.refreshes, 1, "one exchange: {figures}");
        assert_eq!(server.reused_refresh_tokens, 0, "{figures}");
        assert_eq!(server.invalid_grants, 0, "{figures}");
        assert!(
            failures.lock().expect("lock").is_empty(),
            "a deferred refresh is no failure: {:?}",
            failures.lock().expect("lock")
        );
        drop((a, b));
    });
    drop(rt);
    drop(cluster);
}

/// Waits for every task (in order).
async fn join_all<T>(
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await);
    }
    out
}
