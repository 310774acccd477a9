//! Two pools over one store with a change feed (two replica views of one `MemoryStore`): a
//! credential disabled, enabled or found dead (invalid_grant) on one reaches the other.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::ManualClock;
use oauth_manager::{
    CredentialState, ExposeSecret, FailureKind, MaintenanceConfig, MaintenanceHandle,
    OAuthKeyManager,
};
use oauth_store::{CredentialStore, MemoryStore, SharedState};

use crate::support::{CountingRefresher, TestError, counting_refresher, cred, settle, t0};

/// A pool on its own replica view of `shared`, with its maintenance task applying the feed (a
/// day between ticks, no refresh ahead: only the feed moves it).
async fn replica(
    shared: &MemoryStore,
    clock: &ManualClock,
    refresher: &CountingRefresher,
) -> (OAuthKeyManager, MaintenanceHandle) {
    replica_on(shared.replica(), clock, refresher).await
}

async fn seeded(ids: &[(&str, TimeDelta)]) -> MemoryStore {
    let shared = MemoryStore::new();
    for (id, expires_in) in ids {
        shared
            .save("test", &cred(id, *expires_in), None)
            .await
            .expect("seeded");
    }
    shared
}

async fn served_token(pool: &OAuthKeyManager) -> Result<String, String> {
    pool.execute_with_failover(|c| {
        let token = c.access_token.expose_secret().to_owned();
        async move { Ok::<_, TestError>((token, None)) }
    })
    .await
    .map(|served| served.value)
    .map_err(|e| e.to_string())
}

fn state(pool: &OAuthKeyManager, id: &str) -> CredentialState {
    pool.credential_health(id).expect("known credential").state
}

#[tokio::test]
async fn a_credential_disabled_on_one_replica_is_out_of_rotation_on_the_other() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1)), ("y", TimeDelta::hours(1))]).await;
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let (a, _a_task) = replica(&shared, &clock, &refresher).await;
    let (b, _b_task) = replica(&shared, &clock, &refresher).await;

    a.disable("x").expect("known");
    settle().await;

    assert_eq!(state(&b, "x"), CredentialState::Disabled);
    for _ in 0..20 {
        let lease = b.next_credential().expect("y serves");
        assert_eq!(lease.into_arc().id.as_str(), "y");
        assert_eq!(served_token(&b).await.as_deref(), Ok("access-y-0"));
    }
    // Applied, not echoed: A stays as its operator left it.
    assert_eq!(state(&a, "x"), CredentialState::Disabled);

    a.enable("x").expect("known");
    settle().await;
    assert_ne!(state(&b, "x"), CredentialState::Disabled);
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..20 {
        ids.insert(
            b.next_credential()
                .expect("serves")
                .into_arc()
                .id
                .to_string(),
        );
    }
    assert!(ids.contains("x"), "x back in rotation on B: {ids:?}");
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_grant_found_dead_on_one_replica_is_not_presented_again_by_the_other() {
    let clock = ManualClock::new(t0());
    // An hour left: no maintenance tick of either replica wants to refresh it, so the only
    // refresh is the one A is told to make (no race for the lease).
    let shared = seeded(&[("x", TimeDelta::hours(1))]).await;
    let dead = counting_refresher(&clock, Duration::ZERO, Some(FailureKind::PermanentAuth));
    let live = counting_refresher(&clock, Duration::ZERO, None);
    let (a, _a_task) = replica(&shared, &clock, &dead).await;
    let (b, _b_task) = replica(&shared, &clock, &live).await;

    assert!(a.refresh_now("x").await.is_err(), "the grant is dead");
    assert_eq!(dead.calls.load(Ordering::SeqCst), 1, "A tried the refresh");
    assert_eq!(state(&a, "x"), CredentialState::NeedsReauthorization);
    // The report crosses a spawned publish, the feed and B's maintenance task: let them run
    // (bounded: yields only, no clock).
    for _ in 0..64 {
        if b.credential_health("x")
            .is_some_and(|h| h.needs_reauthorization)
        {
            break;
        }
        settle().await;
    }

    let h = b.credential_health("x").expect("known");
    assert!(h.needs_reauthorization, "{h:?}");
    assert_eq!(h.state, CredentialState::NeedsReauthorization);
    // 2 minutes left: under the refresh buffer, so every use on B wants a refresh. B keeps
    // serving the still-valid access token, never presenting the dead refresh token.
    clock.advance(Duration::from_secs(58 * 60));
    for _ in 0..5 {
        assert_eq!(served_token(&b).await.as_deref(), Ok("access-x-0"));
    }
    assert_eq!(
        live.calls.load(Ordering::SeqCst),
        0,
        "B called its refresher"
    );
}

#[tokio::test]
async fn a_dead_grant_reported_for_an_older_version_is_ignored() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1))]).await;
    let live = counting_refresher(&clock, Duration::ZERO, None);
    let (b, _b_task) = replica(&shared, &clock, &live).await;
    let stored = shared
        .load("test", &oauth_core::CredentialId::new("x").expect("id"))
        .await;
    let version = stored.expect("reads").expect("stored").version;

    // Another process reports a dead grant decided on a version older than the stored one.
    let other = shared.replica();
    other
        .publish_state(
            "test",
            &oauth_core::CredentialId::new("x").expect("id"),
            oauth_store::SharedState::NeedsReauthorization,
            Some(version - 1),
        )
        .await
        .expect("published");
    settle().await;
    assert!(
        !b.credential_health("x")
            .expect("known")
            .needs_reauthorization
    );

    // The same report at the current version applies.
    other
        .publish_state(
            "test",
            &oauth_core::CredentialId::new("x").expect("id"),
            oauth_store::SharedState::NeedsReauthorization,
            Some(version),
        )
        .await
        .expect("published");
    settle().await;
    assert!(
        b.credential_health("x")
            .expect("known")
            .needs_reauthorization
    );
}

/// A replica's view of the store with faults to switch on: its saves fail (the write path is
/// down), its publications fail (the database is unreachable for them), its publications of
/// `Disabled` wait for `gate` permits (a slow statement), or its change feed hears nothing (the
/// LISTEN connection is down). Reads work.
#[derive(Debug)]
struct Faulty {
    view: MemoryStore,
    saves_fail: std::sync::atomic::AtomicBool,
    publishes_fail: std::sync::atomic::AtomicBool,
    gate: Option<tokio::sync::Semaphore>,
    deaf: Option<tokio::sync::broadcast::Sender<oauth_store::StoreChange>>,
    /// Reads of credential `y` wait for its permits.
    load_gate: Option<tokio::sync::Semaphore>,
}

impl Faulty {
    fn new(view: MemoryStore) -> Self {
        Self {
            view,
            saves_fail: std::sync::atomic::AtomicBool::new(false),
            publishes_fail: std::sync::atomic::AtomicBool::new(false),
            gate: None,
            deaf: None,
            load_gate: None,
        }
    }

    fn down() -> oauth_store::StoreError {
        oauth_store::StoreError::Io {
            path: "/var/lib/pool/test.json".into(),
            source: std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem),
        }
    }
}

#[oauth_manager::async_trait]
impl CredentialStore for Faulty {
    async fn load_all(
        &self,
        p: &str,
    ) -> Result<Vec<oauth_store::Versioned<oauth_manager::Credential>>, oauth_store::StoreError>
    {
        self.view.load_all(p).await
    }
    async fn load(
        &self,
        p: &str,
        id: &oauth_manager::CredentialId,
    ) -> Result<Option<oauth_store::Versioned<oauth_manager::Credential>>, oauth_store::StoreError>
    {
        if let Some(gate) = &self.load_gate
            && id.as_str() == "y"
        {
            gate.acquire().await.expect("gate open").forget();
        }
        self.view.load(p, id).await
    }
    async fn save(
        &self,
        p: &str,
        c: &oauth_manager::Credential,
        expected: Option<oauth_store::Version>,
    ) -> Result<oauth_store::Version, oauth_store::StoreError> {
        if self.saves_fail.load(Ordering::SeqCst) {
            return Err(Self::down());
        }
        self.view.save(p, c, expected).await
    }
    async fn delete(
        &self,
        p: &str,
        id: &oauth_manager::CredentialId,
        expected: Option<oauth_store::Version>,
    ) -> Result<(), oauth_store::StoreError> {
        self.view.delete(p, id, expected).await
    }
    async fn versions(
        &self,
        p: &str,
    ) -> Result<
        std::collections::BTreeMap<oauth_manager::CredentialId, oauth_store::Version>,
        oauth_store::StoreError,
    > {
        self.view.versions(p).await
    }
    fn refresh_lock(&self) -> Option<Arc<dyn oauth_store::RefreshLock>> {
        self.view.refresh_lock()
    }
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<oauth_store::StoreChange>> {
        match &self.deaf {
            Some(silent) => Some(silent.subscribe()),
            None => self.view.changes(),
        }
    }
    async fn publish_state(
        &self,
        p: &str,
        id: &oauth_manager::CredentialId,
        state: SharedState,
        version: Option<oauth_store::Version>,
    ) -> Result<(), oauth_store::StoreError> {
        if let Some(gate) = &self.gate
            && state == SharedState::Disabled
        {
            gate.acquire().await.expect("gate open").forget();
        }
        if self.publishes_fail.load(Ordering::SeqCst) {
            return Err(Self::down());
        }
        self.view.publish_state(p, id, state, version).await
    }
    async fn shared_states(
        &self,
        p: &str,
    ) -> Result<Vec<oauth_store::SharedStateRecord>, oauth_store::StoreError> {
        self.view.shared_states(p).await
    }
    async fn active_cooldowns(
        &self,
        p: &str,
    ) -> Result<
        std::collections::BTreeMap<oauth_manager::CredentialId, chrono::DateTime<chrono::Utc>>,
        oauth_store::StoreError,
    > {
        self.view.active_cooldowns(p).await
    }
}

/// A pool over `store` without a maintenance task (its ticks run when a test says).
async fn pool_on(
    store: impl CredentialStore + 'static,
    clock: &ManualClock,
    refresher: &CountingRefresher,
) -> OAuthKeyManager {
    OAuthKeyManager::builder("test")
        .store(store)
        .clock(Arc::new(clock.clone()))
        .refresher_arc(Arc::clone(&refresher.refresher))
        .build()
        .await
        .expect("pool builds from the store")
}

/// A replica view of `shared` whose change feed hears nothing (its LISTEN connection is down).
fn deaf_view(shared: &MemoryStore) -> Faulty {
    let mut view = Faulty::new(shared.replica());
    view.deaf = Some(tokio::sync::broadcast::channel(1).0);
    view
}

/// A pool over `store` with its maintenance task (as in [`replica`]).
async fn replica_on(
    store: impl CredentialStore + 'static,
    clock: &ManualClock,
    refresher: &CountingRefresher,
) -> (OAuthKeyManager, MaintenanceHandle) {
    let pool = pool_on(store, clock, refresher).await;
    let handle = pool
        .spawn_maintenance(quiet_maintenance())
        .expect("maintenance starts");
    settle().await;
    (pool, handle)
}

fn quiet_maintenance() -> MaintenanceConfig {
    MaintenanceConfig::default()
        .with_interval(Duration::from_secs(24 * 3600))
        .with_refresh_ahead(Duration::ZERO)
}

/// Issue 19: a disable decided while the store could not take it was logged and lost; the other
/// replicas kept using the account. It stays queued and goes out once the store is back.
#[tokio::test]
async fn a_disable_decided_while_the_store_is_down_reaches_the_other_replica_once_it_is_back() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1)), ("y", TimeDelta::hours(1))]).await;
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let faulty = Arc::new(Faulty::new(shared.replica()));
    faulty.publishes_fail.store(true, Ordering::SeqCst);
    let (a, _a_task) = replica_on(Arc::clone(&faulty), &clock, &refresher).await;
    let (b, _b_task) = replica(&shared, &clock, &refresher).await;

    a.disable("x").expect("known");
    settle().await;
    assert_eq!(state(&a, "x"), CredentialState::Disabled);
    assert_ne!(
        state(&b, "x"),
        CredentialState::Disabled,
        "not delivered yet"
    );

    faulty.publishes_fail.store(false, Ordering::SeqCst);
    a.run_maintenance_once(&quiet_maintenance()).await;
    settle().await;
    assert_eq!(state(&b, "x"), CredentialState::Disabled);
    assert_eq!(
        shared.shared_states("test").await.expect("read").len(),
        1,
        "kept in the store"
    );
}

/// Issue 19: each publication was a task of its own, so a disable whose statement was slow
/// could land after the enable that followed it, leaving the other replicas disabled. They go
/// out in the order decided.
#[tokio::test]
async fn a_disable_then_an_enable_reach_the_other_replica_in_that_order() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1)), ("y", TimeDelta::hours(1))]).await;
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let mut slow = Faulty::new(shared.replica());
    slow.gate = Some(tokio::sync::Semaphore::new(0));
    let slow = Arc::new(slow);
    let (a, _a_task) = replica_on(Arc::clone(&slow), &clock, &refresher).await;
    let (b, _b_task) = replica(&shared, &clock, &refresher).await;

    a.disable("x").expect("known");
    settle().await; // the disable's statement is under way (held at the gate)
    a.enable("x").expect("known");
    settle().await;
    slow.gate.as_ref().expect("gated").add_permits(8);
    for _ in 0..8 {
        settle().await;
    }
    assert_ne!(state(&a, "x"), CredentialState::Disabled);
    assert_ne!(
        state(&b, "x"),
        CredentialState::Disabled,
        "B follows the operator's last word"
    );
    let kept = shared.shared_states("test").await.expect("read");
    assert_eq!(
        kept.iter().map(|r| r.state).collect::<Vec<_>>(),
        [SharedState::Enabled]
    );
}

/// Issue 19: a disable decided outside a tokio runtime (an operator's admin thread) was dropped
/// without a word. It is queued and sent by the next maintenance tick.
#[tokio::test]
async fn a_disable_decided_outside_a_runtime_is_sent_by_the_next_tick() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1)), ("y", TimeDelta::hours(1))]).await;
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let (a, _a_task) = replica(&shared, &clock, &refresher).await;
    let (b, _b_task) = replica(&shared, &clock, &refresher).await;

    let admin = a.clone();
    std::thread::spawn(move || admin.disable("x").expect("known"))
        .join()
        .expect("admin thread");
    settle().await;
    assert_eq!(state(&a, "x"), CredentialState::Disabled);
    a.run_maintenance_once(&quiet_maintenance()).await;
    settle().await;
    assert_eq!(state(&b, "x"), CredentialState::Disabled);
}

/// Issue 19: a replica whose feed missed a disable (its LISTEN connection was down) kept the
/// account in rotation for good. Its maintenance tick reads the states the store keeps.
#[tokio::test]
async fn a_replica_that_missed_a_disable_catches_up_at_its_maintenance_tick() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1)), ("y", TimeDelta::hours(1))]).await;
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let (a, _a_task) = replica(&shared, &clock, &refresher).await;
    let deaf = deaf_view(&shared);
    // Its ticks run when the test says (a spawned first tick could run after the disable).
    let b = pool_on(deaf, &clock, &refresher).await;
    b.run_maintenance_once(&quiet_maintenance()).await;

    a.disable("x").expect("known");
    settle().await;
    assert_ne!(state(&b, "x"), CredentialState::Disabled, "B heard nothing");
    b.run_maintenance_once(&quiet_maintenance()).await;
    assert_eq!(state(&b, "x"), CredentialState::Disabled);
    // Applied once: a second tick changes nothing and reports nothing again.
    let mut events = b.subscribe();
    b.run_maintenance_once(&quiet_maintenance()).await;
    let again: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| matches!(e.kind, oauth_manager::EventKind::Disabled { .. }))
        .collect();
    assert!(again.is_empty(), "{again:?}");

    a.enable("x").expect("known");
    settle().await;
    b.run_maintenance_once(&quiet_maintenance()).await;
    assert_ne!(state(&b, "x"), CredentialState::Disabled);
}

/// Issue 19: a cooldown published while a replica's feed was down (a 429 another replica saw)
/// reached it only if its LISTEN connection came back with a resync. Its maintenance tick reads
/// the store's kept cooldowns, and applies each once.
#[tokio::test]
async fn a_replica_that_missed_a_cooldown_catches_up_at_its_maintenance_tick() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1)), ("y", TimeDelta::hours(1))]).await;
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let deaf = deaf_view(&shared);
    let b = pool_on(deaf, &clock, &refresher).await;
    let x = oauth_manager::CredentialId::new("x").expect("valid id");
    // One that ended already (for y), and one in force (for x), published by another replica.
    shared
        .replica()
        .publish_cooldown(
            "test",
            &oauth_manager::CredentialId::new("y").expect("valid id"),
            t0() - TimeDelta::minutes(1),
        )
        .await
        .expect("published");
    shared
        .replica()
        .publish_cooldown("test", &x, t0() + TimeDelta::minutes(10))
        .await
        .expect("published");
    assert_eq!(state(&b, "x"), CredentialState::Active, "B heard nothing");

    let mut events = b.subscribe();
    b.run_maintenance_once(&quiet_maintenance()).await;
    assert_eq!(state(&b, "x"), CredentialState::CoolingDown);
    assert_eq!(
        state(&b, "y"),
        CredentialState::Active,
        "an ended one is ignored"
    );
    for _ in 0..10 {
        assert_eq!(served_token(&b).await.as_deref(), Ok("access-y-0"));
    }
    b.run_maintenance_once(&quiet_maintenance()).await;
    let cooled = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| matches!(e.kind, oauth_manager::EventKind::CooledDown { .. }))
        .count();
    assert_eq!(cooled, 1, "applied and reported once");

    clock.advance(Duration::from_secs(11 * 60));
    b.run_maintenance_once(&quiet_maintenance()).await;
    assert_eq!(state(&b, "x"), CredentialState::Active, "and it ends");
}

/// Issue 19: a replica started after another disabled an account used it until an event reached
/// it (none would). It is out of rotation from the first call.
#[tokio::test]
async fn a_replica_started_after_a_disable_never_serves_the_account() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1)), ("y", TimeDelta::hours(1))]).await;
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let (a, _a_task) = replica(&shared, &clock, &refresher).await;
    a.disable("x").expect("known");
    settle().await;

    let late = pool_on(shared.replica(), &clock, &refresher).await;
    assert_eq!(state(&late, "x"), CredentialState::Disabled);
    for _ in 0..10 {
        assert_eq!(served_token(&late).await.as_deref(), Ok("access-y-0"));
    }
}

/// Issue 19: before declaring a grant dead on invalid_grant, a replica re-reads the store: a CLI
/// (or a replica not taking the lease) rotated the grant between this replica's read and its
/// refresh, so the refresh token it presented was consumed, and the store holds the live one.
/// It adopts that and serves on; nothing is marked or shared as dead.
#[tokio::test]
async fn invalid_grant_after_a_rotation_elsewhere_adopts_the_rotated_tokens() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1))]).await;
    let cli = shared.clone();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let refresher =
        oauth_manager::refresh::FnRefresher::new(move |presented: oauth_manager::Credential| {
            let (cli, calls) = (cli.clone(), Arc::clone(&counted));
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                // Meanwhile the CLI exchanged the same refresh token and wrote the result.
                let stored = cli
                    .load("test", &presented.id)
                    .await
                    .expect("loads")
                    .expect("stored");
                let rotated = oauth_manager::Credential::new("x", "access-x-cli", t0())
                    .expect("valid")
                    .with_refresh_token("refresh-x-cli")
                    .with_expires_at(t0() + TimeDelta::hours(2));
                cli.save("test", &rotated, Some(stored.version))
                    .await
                    .expect("the CLI's write");
                Err(oauth_manager::refresh::RefreshError::other(
                    FailureKind::PermanentAuth,
                    "invalid_grant",
                ))
            }
        });
    let b = OAuthKeyManager::builder("test")
        .store(shared.replica())
        .clock(Arc::new(clock.clone()))
        .refresher(refresher)
        .build()
        .await
        .expect("builds");
    let watcher = shared.replica();
    let before = watcher.shared_states("test").await.expect("read").len();

    let refreshed = b.refresh_now("x").await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let h = b.credential_health("x").expect("known");
    assert!(!h.needs_reauthorization, "{h:?} after {refreshed:?}");
    assert_eq!(served_token(&b).await.as_deref(), Ok("access-x-cli"));
    settle().await;
    assert_eq!(
        watcher.shared_states("test").await.expect("read").len(),
        before,
        "no dead grant shared"
    );
}

/// Review finding on the shared states: a replica that refreshed a credential but could not save
/// the new tokens yet holds a live grant; a needs-re-authorization that another replica decided
/// on the store's older refresh token, at the same version, must not mark it dead.
#[tokio::test]
async fn a_dead_grant_reported_for_the_stores_token_spares_a_replica_holding_a_newer_one() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1))]).await;
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let store = Faulty::new(shared.replica());
    store.saves_fail.store(true, Ordering::SeqCst);
    let b = pool_on(store, &clock, &refresher).await;
    let _b_task = b
        .spawn_maintenance(
            MaintenanceConfig::default()
                .with_interval(Duration::from_secs(24 * 3600))
                .with_refresh_ahead(Duration::ZERO),
        )
        .expect("maintenance starts");
    settle().await;
    // B refreshes; its save fails, so it holds refresh-x-1 while the store still has refresh-x-0.
    let _ = b.refresh_now("x").await.expect("refreshed in memory");
    assert_eq!(refresher.calls.load(Ordering::SeqCst), 1);
    let id = oauth_manager::CredentialId::new("x").expect("valid id");
    let stored = shared
        .load("test", &id)
        .await
        .expect("loads")
        .expect("stored");
    // Another replica presents the store's (now consumed) refresh token, is told invalid_grant,
    // and shares that at the stored version.
    shared
        .replica()
        .publish_state(
            "test",
            &id,
            oauth_store::SharedState::NeedsReauthorization,
            Some(stored.version),
        )
        .await
        .expect("published");
    settle().await;
    assert_ne!(state(&b, "x"), CredentialState::NeedsReauthorization);
    assert_eq!(served_token(&b).await.as_deref(), Ok("access-x-1"));
}

/// Review finding on 176262a: a disable still queued when the credential was removed went out
/// after the delete, and the state outlived the credential: re-created later, it started
/// disabled on every replica built afterwards.
#[tokio::test]
async fn a_removed_credential_recreated_later_starts_without_its_old_state() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1)), ("y", TimeDelta::hours(1))]).await;
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let (a, _a_task) = replica(&shared, &clock, &refresher).await;
    a.disable("x").expect("known");
    a.remove_credential("x").await.expect("removed");
    settle().await;
    assert!(
        shared.shared_states("test").await.expect("read").is_empty(),
        "nothing kept for the removed credential"
    );
    shared
        .save("test", &cred("x", TimeDelta::hours(1)), None)
        .await
        .expect("re-created");
    let late = pool_on(shared.replica(), &clock, &refresher).await;
    assert_ne!(state(&late, "x"), CredentialState::Disabled);
}

/// Review finding on 176262a: the maintenance catch-up checked for decisions made meanwhile
/// only right after its read; a decision made (and sent) while it waited on the store for
/// another record was then undone by the older record it had read.
#[tokio::test]
async fn the_catch_up_never_undoes_a_decision_made_while_it_ran() {
    let clock = ManualClock::new(t0());
    let shared = seeded(&[("x", TimeDelta::hours(1)), ("y", TimeDelta::hours(1))]).await;
    let refresher = counting_refresher(&clock, Duration::ZERO, None);
    let mut view = deaf_view(&shared);
    view.load_gate = Some(tokio::sync::Semaphore::new(0));
    let view = Arc::new(view);
    let b = pool_on(Arc::clone(&view), &clock, &refresher).await;
    // Another replica found y's grant dead (B re-reads y before applying it), then disabled x.
    let other = shared.replica();
    let y = oauth_manager::CredentialId::new("y").expect("valid id");
    let version = shared
        .load("test", &y)
        .await
        .expect("loads")
        .expect("stored")
        .version;
    other
        .publish_state("test", &y, SharedState::NeedsReauthorization, Some(version))
        .await
        .expect("published");
    other
        .publish_state(
            "test",
            &oauth_manager::CredentialId::new("x").expect("valid id"),
            SharedState::Disabled,
            None,
        )
        .await
        .expect("published");
    let ticking = b.clone();
    let tick = tokio::spawn(async move {
        ticking.run_maintenance_once(&quiet_maintenance()).await;
    });
    settle().await; // the tick waits on y's read
    // B's operator disables and re-enables x meanwhile; the enable is sent.
    b.disable("x").expect("known");
    b.enable("x").expect("known");
    settle().await;
    let kept = shared.shared_states("test").await.expect("read");
    assert_eq!(
        kept.iter().find(|r| r.id.as_str() == "x").map(|r| r.state),
        Some(SharedState::Enabled)
    );
    view.load_gate.as_ref().expect("gated").add_permits(100);
    tick.await.expect("tick");
    assert_ne!(
        state(&b, "x"),
        CredentialState::Disabled,
        "B's later enable stands"
    );
    // The next tick reads again and agrees.
    b.run_maintenance_once(&quiet_maintenance()).await;
    assert_ne!(state(&b, "x"), CredentialState::Disabled);
}
