//! The [`CredentialStore`] contract as a suite any store can run (feature `conformance`).
//!
//! Each case is a `pub async fn` taking a fresh, empty store; [`run_all`] runs every case against
//! stores made by a factory, and [`conformance_tests!`](crate::conformance_tests) expands to one
//! `#[tokio::test]` per case (the caller needs tokio's `macros` and `rt-multi-thread` features as
//! dev-dependencies). The credentials the cases write carry [`SECRET_MARKER`] in every secret, so
//! outputs can be searched for leaks.
//!
//! ```
//! use std::sync::Arc;
//! use oauth_store::{CredentialStore, MemoryStore, conformance};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! conformance::run_all(|| async {
//!     conformance::Fixture::new(Arc::new(MemoryStore::new()) as Arc<dyn CredentialStore>)
//! })
//! .await;
//! # }
//! ```
//!
//! The cases panic (as tests do) when the store breaks the contract.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oauth_core::{Credential, CredentialId};

use crate::{CredentialStore, StoreError};

/// The store handle every case takes.
pub type Store = Arc<dyn CredentialStore>;

/// The provider most cases write to.
pub const PROVIDER: &str = "anthropic";
const P: &str = PROVIDER;

/// Every secret the suite writes contains this marker, so outputs can be searched for any of them.
pub const SECRET_MARKER: &str = "SECRETVALUE";

/// The names of every case, in the order [`run_all`] runs them.
pub const CASES: [&str; 14] = [
    "create_load_and_list",
    "create_of_existing_is_a_conflict",
    "compare_and_set_bumps_the_version",
    "stale_version_is_refused_and_newer_token_stays",
    "save_with_version_of_missing_credential_is_a_conflict",
    "delete_is_compare_and_set_too",
    "recreated_credential_continues_its_versions",
    "versions_are_monotonic_and_match_load_all",
    "concurrent_increments_lose_nothing",
    "providers_are_isolated_and_odd_names_work",
    "empty_provider_is_rejected",
    "refresh_lock_excludes_and_releases_on_drop",
    "refresh_lock_try_acquire_does_not_wait",
    "debug_and_errors_hold_no_secret",
];

/// A fresh store for one case, with whatever must outlive it (a temporary directory, a database
/// that is dropped afterwards).
pub struct Fixture {
    /// The store under test; empty.
    pub store: Store,
    _keep: Option<Box<dyn Any + Send>>,
}

impl Fixture {
    /// A fixture holding only the store.
    pub fn new(store: Store) -> Self {
        Self { store, _keep: None }
    }

    /// Keeps `guard` alive as long as the fixture (dropped after the case).
    #[must_use]
    pub fn keeping(mut self, guard: impl Any + Send) -> Self {
        self._keep = Some(Box::new(guard));
        self
    }
}

impl fmt::Debug for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Runs every case, each against a fresh fixture from `make`, and panics at the first broken one
/// (naming it). Needs a multi-threaded tokio runtime (a case spawns tasks).
pub async fn run_all<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Fixture>,
{
    for name in CASES {
        let fixture = make().await;
        run(name, Arc::clone(&fixture.store)).await;
        drop(fixture);
    }
}

/// Runs the case called `name` (one of [`CASES`]) against `store`.
///
/// # Panics
/// When the store breaks the contract, or `name` is not a case.
pub async fn run(name: &str, store: Store) {
    match name {
        "create_load_and_list" => create_load_and_list(store).await,
        "create_of_existing_is_a_conflict" => create_of_existing_is_a_conflict(store).await,
        "compare_and_set_bumps_the_version" => compare_and_set_bumps_the_version(store).await,
        "stale_version_is_refused_and_newer_token_stays" => {
            stale_version_is_refused_and_newer_token_stays(store).await
        }
        "save_with_version_of_missing_credential_is_a_conflict" => {
            save_with_version_of_missing_credential_is_a_conflict(store).await
        }
        "delete_is_compare_and_set_too" => delete_is_compare_and_set_too(store).await,
        "recreated_credential_continues_its_versions" => {
            recreated_credential_continues_its_versions(store).await
        }
        "versions_are_monotonic_and_match_load_all" => {
            versions_are_monotonic_and_match_load_all(store).await
        }
        "concurrent_increments_lose_nothing" => concurrent_increments_lose_nothing(store).await,
        "providers_are_isolated_and_odd_names_work" => {
            providers_are_isolated_and_odd_names_work(store).await
        }
        "empty_provider_is_rejected" => empty_provider_is_rejected(store).await,
        "refresh_lock_excludes_and_releases_on_drop" => {
            refresh_lock_excludes_and_releases_on_drop(store).await
        }
        "refresh_lock_try_acquire_does_not_wait" => {
            refresh_lock_try_acquire_does_not_wait(store).await
        }
        "debug_and_errors_hold_no_secret" => debug_and_errors_hold_no_secret(store).await,
        other => panic!("no conformance case named {other:?}"),
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each running against the
/// [`Fixture`](crate::conformance::Fixture) that `$make` (an expression evaluating to a future)
/// produces. Use it inside a module of an integration-test binary:
///
/// ```ignore
/// mod postgres_store {
///     oauth_store::conformance_tests!(crate::support::fixture());
/// }
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            create_load_and_list,
            create_of_existing_is_a_conflict,
            compare_and_set_bumps_the_version,
            stale_version_is_refused_and_newer_token_stays,
            save_with_version_of_missing_credential_is_a_conflict,
            delete_is_compare_and_set_too,
            recreated_credential_continues_its_versions,
            versions_are_monotonic_and_match_load_all,
            concurrent_increments_lose_nothing,
            providers_are_isolated_and_odd_names_work,
            empty_provider_is_rejected,
            refresh_lock_excludes_and_releases_on_drop,
            refresh_lock_try_acquire_does_not_wait,
            debug_and_errors_hold_no_secret,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture: $crate::conformance::Fixture = $make.await;
                $crate::conformance::$case(::std::sync::Arc::clone(&fixture.store)).await;
                drop(fixture);
            }
        )*
    };
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

fn id(s: &str) -> CredentialId {
    CredentialId::new(s).expect("valid id")
}

/// A credential whose tokens encode `id` and `generation`, every secret marked with
/// [`SECRET_MARKER`]; `refresh_count` is `generation`.
///
/// # Panics
/// When `id` is not a valid credential id.
pub fn credential(id: &str, generation: u64) -> Credential {
    let mut c = Credential::new(id, format!("at-{id}-{generation}-{SECRET_MARKER}"), t0())
        .expect("valid credential")
        .with_refresh_token(format!("rt-{id}-{generation}-{SECRET_MARKER}"))
        .with_client("client-1", Some(format!("cs-{SECRET_MARKER}")))
        .with_expires_at(t0() + TimeDelta::hours(1))
        .with_scopes(["a", "b"]);
    c.refresh_count = generation;
    c
}

/// All fields of `c`, secrets included, as JSON: equal iff the credentials are equal.
///
/// # Panics
/// Never for a valid credential.
pub fn full(c: &Credential) -> serde_json::Value {
    serde_json::to_value(c.persisted()).expect("serializable")
}

/// Panics when `text` contains a secret written by this suite.
pub fn assert_no_secret(text: &str) {
    assert!(
        !text.contains(SECRET_MARKER),
        "output leaks a secret: {text}"
    );
}

/// An empty provider lists nothing; created credentials load back field for field, at version 1, sorted by id.
pub async fn create_load_and_list(store: Store) {
    let s = &store;
    assert!(s.load_all(P).await.expect("load_all").is_empty());
    assert!(s.versions(P).await.expect("versions").is_empty());
    assert!(s.load(P, &id("a")).await.expect("load").is_none());

    for name in ["b", "a", "c"] {
        assert_eq!(
            s.save(P, &credential(name, 0), None).await.expect("create"),
            1
        );
    }
    let all = s.load_all(P).await.expect("load_all");
    let ids: Vec<&str> = all.iter().map(|v| v.value.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"], "sorted by id");
    for v in &all {
        assert_eq!(v.version, 1);
        assert_eq!(
            full(&v.value),
            full(&credential(v.value.id.as_str(), 0)),
            "round trip"
        );
    }
    let a = s.load(P, &id("a")).await.expect("load").expect("stored");
    assert_eq!(a.version, 1);
    assert_eq!(full(&a.value), full(&credential("a", 0)));
}

/// Creating (`expected = None`) a credential that exists is a typed conflict and changes nothing.
pub async fn create_of_existing_is_a_conflict(store: Store) {
    let s = &store;
    s.save(P, &credential("a", 0), None).await.expect("create");
    let err = s
        .save(P, &credential("a", 1), None)
        .await
        .expect_err("exists");
    assert!(err.is_conflict());
    assert!(
        matches!(&err, StoreError::Conflict { id, expected: None, actual: Some(1), .. } if id == "a"),
        "{err:?}"
    );
    let stored = s.load(P, &id("a")).await.expect("load").expect("stored");
    assert_eq!(full(&stored.value), full(&credential("a", 0)), "unchanged");
}

/// Every successful compare-and-set grows the version by one and stores the new value.
pub async fn compare_and_set_bumps_the_version(store: Store) {
    let s = &store;
    assert_eq!(
        s.save(P, &credential("a", 0), None).await.expect("create"),
        1
    );
    assert_eq!(
        s.save(P, &credential("a", 1), Some(1)).await.expect("cas"),
        2
    );
    assert_eq!(
        s.save(P, &credential("a", 2), Some(2)).await.expect("cas"),
        3
    );
    let stored = s.load(P, &id("a")).await.expect("load").expect("stored");
    assert_eq!(stored.version, 3);
    assert_eq!(full(&stored.value), full(&credential("a", 2)));
}

/// Two writers read the same version; the second one's write is refused and the first one's rotated token stays.
pub async fn stale_version_is_refused_and_newer_token_stays(store: Store) {
    let s = &store;
    s.save(P, &credential("a", 0), None).await.expect("create");
    // Two writers read version 1; the first rotates the refresh token.
    let first = s.load(P, &id("a")).await.expect("load").expect("stored");
    let second = s.load(P, &id("a")).await.expect("load").expect("stored");
    assert_eq!(
        s.save(P, &credential("a", 1), Some(first.version))
            .await
            .expect("winner"),
        2
    );
    // The second writes from its stale snapshot: refused, typed, not retryable as is.
    let err = s
        .save(P, &credential("a", 99), Some(second.version))
        .await
        .expect_err("stale write");
    assert!(err.is_conflict() && !err.is_retryable());
    assert!(
        matches!(
            &err,
            StoreError::Conflict {
                expected: Some(1),
                actual: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "version conflict on credential a of provider \"anthropic\": expected version 1, found version 2"
    );
    assert_no_secret(&format!("{err} {err:?}"));
    let stored = s.load(P, &id("a")).await.expect("load").expect("stored");
    assert_eq!(stored.version, 2);
    assert_eq!(
        full(&stored.value),
        full(&credential("a", 1)),
        "the newer token stays"
    );
}

/// Replacing a credential that is not stored is a conflict with `actual: None`, and creates nothing.
pub async fn save_with_version_of_missing_credential_is_a_conflict(store: Store) {
    let s = &store;
    let err = s
        .save(P, &credential("a", 0), Some(1))
        .await
        .expect_err("missing");
    assert!(
        matches!(
            &err,
            StoreError::Conflict {
                expected: Some(1),
                actual: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(s.load(P, &id("a")).await.expect("load").is_none());
}

/// Deleting checks the version like a write; deleting nothing is `NotFound`, an unconditional delete removes any version.
pub async fn delete_is_compare_and_set_too(store: Store) {
    let s = &store;
    s.save(P, &credential("a", 0), None).await.expect("create");
    s.save(P, &credential("a", 1), Some(1)).await.expect("cas");
    s.save(P, &credential("b", 0), None).await.expect("create");

    let err = s
        .delete(P, &id("a"), Some(1))
        .await
        .expect_err("stale delete");
    assert!(
        matches!(
            &err,
            StoreError::Conflict {
                expected: Some(1),
                actual: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(s.load(P, &id("a")).await.expect("load").is_some(), "kept");

    s.delete(P, &id("a"), Some(2)).await.expect("delete");
    assert!(s.load(P, &id("a")).await.expect("load").is_none());
    let err = s.delete(P, &id("a"), None).await.expect_err("gone");
    assert!(
        matches!(&err, StoreError::NotFound { id, .. } if id == "a"),
        "{err:?}"
    );
    assert!(!err.is_conflict() && !err.is_retryable());

    s.delete(P, &id("b"), None)
        .await
        .expect("unconditional delete");
    assert!(s.load_all(P).await.expect("load_all").is_empty());
    assert!(s.versions(P).await.expect("versions").is_empty());
}

/// A credential deleted and created again continues from the deleted one's version.
pub async fn recreated_credential_continues_its_versions(store: Store) {
    let s = &store;
    s.save(P, &credential("a", 0), None).await.expect("create");
    s.save(P, &credential("a", 1), Some(1)).await.expect("cas");
    s.delete(P, &id("a"), Some(2)).await.expect("delete");
    let v = s
        .save(P, &credential("a", 5), None)
        .await
        .expect("re-create");
    assert_eq!(
        v, 3,
        "a writer holding version 1 or 2 of the old one cannot match"
    );
    assert!(
        s.save(P, &credential("a", 6), Some(1))
            .await
            .is_err_and(|e| e.is_conflict())
    );
}

/// `versions` only grows and always agrees with `load_all`.
pub async fn versions_are_monotonic_and_match_load_all(store: Store) {
    let s = &store;
    let mut last: BTreeMap<CredentialId, u64> = BTreeMap::new();
    for round in 0..6u64 {
        for name in ["x", "y"] {
            let expected = last.get(name).copied();
            s.save(P, &credential(name, round), expected)
                .await
                .expect("write");
        }
        let versions = s.versions(P).await.expect("versions");
        for (cid, v) in &versions {
            if let Some(prev) = last.get(cid) {
                assert!(v > prev, "version of {cid} went from {prev} to {v}");
            }
        }
        let listed: BTreeMap<CredentialId, u64> = s
            .load_all(P)
            .await
            .expect("load_all")
            .into_iter()
            .map(|v| (v.value.id, v.version))
            .collect();
        assert_eq!(versions, listed);
        last = versions;
    }
    assert_eq!(last.values().copied().collect::<Vec<_>>(), [6, 6]);
}

/// Concurrent read-modify-write loops through compare-and-set lose no increment.
pub async fn concurrent_increments_lose_nothing(store: Store) {
    const TASKS: u64 = 8;
    const EACH: u64 = 25;
    let s = Arc::clone(&store);
    s.save(P, &credential("shared", 0), None)
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..EACH {
                loop {
                    let cur = s
                        .load(P, &id("shared"))
                        .await
                        .expect("load")
                        .expect("stored");
                    let next = credential("shared", cur.value.refresh_count + 1);
                    match s.save(P, &next, Some(cur.version)).await {
                        Ok(_) => break,
                        Err(e) if e.is_conflict() => conflicts += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let end = s
        .load(P, &id("shared"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(end.value.refresh_count, TASKS * EACH, "no increment lost");
    assert_eq!(end.version, TASKS * EACH + 1);
}

/// Providers do not see each other's credentials; names with slashes, dots, spaces, `%`, non-ASCII and long names work.
pub async fn providers_are_isolated_and_odd_names_work(store: Store) {
    let s = &store;
    let odd_provider = "Open AI/../codex .json%";
    let odd_id = "team/a b.c%2E..é";
    s.save(odd_provider, &credential(odd_id, 1), None)
        .await
        .expect("create");
    s.save(P, &credential(odd_id, 2), None)
        .await
        .expect("create");
    s.save(P, &credential("other", 2), None)
        .await
        .expect("create");

    let odd = s.load_all(odd_provider).await.expect("load_all");
    assert_eq!(odd.len(), 1);
    assert_eq!(full(&odd[0].value), full(&credential(odd_id, 1)));
    assert_eq!(s.load_all(P).await.expect("load_all").len(), 2);
    let long = "p".repeat(300);
    s.save(&long, &credential(&"i".repeat(128), 0), None)
        .await
        .expect("long names");
    assert_eq!(s.versions(&long).await.expect("versions").len(), 1);
    assert!(s.load_all("anthropic2").await.expect("load_all").is_empty());
}

/// The empty provider name is refused with `InvalidProvider`.
pub async fn empty_provider_is_rejected(store: Store) {
    let err = store
        .save("", &credential("a", 0), None)
        .await
        .expect_err("empty");
    assert!(matches!(err, StoreError::InvalidProvider { .. }), "{err:?}");
    assert!(matches!(
        store.load_all("").await,
        Err(StoreError::InvalidProvider { .. })
    ));
}

/// For stores that keep published states (a store shared by several processes; not in
/// [`CASES`], which every store passes): [`shared_states`](CredentialStore::shared_states) returns
/// the latest state of each aspect of each credential, in publication order, per provider; an
/// enable replaces a disable but not a dead grant; a state of a credential the store does not
/// hold is not kept; deleting a credential forgets its states and cooldowns, and so does
/// creating it again; [`active_cooldowns`](CredentialStore::active_cooldowns) keeps the latest end
/// of each cooldown.
pub async fn shared_states_keep_the_latest_of_each_aspect(store: Store) {
    use crate::{SharedState, SharedStateRecord};
    let s = &store;
    for c in ["a", "b"] {
        s.save(P, &credential(c, 0), None).await.expect("create");
    }
    assert!(s.shared_states(P).await.expect("read").is_empty());
    let publish = |c: &'static str, state, version| async move {
        s.publish_state(P, &id(c), state, version)
            .await
            .expect("published");
    };
    publish("a", SharedState::Disabled, None).await;
    publish("b", SharedState::NeedsReauthorization, Some(1)).await;
    publish("a", SharedState::NeedsReauthorization, Some(1)).await;
    publish("a", SharedState::Enabled, None).await;
    s.publish_state("other", &id("a"), SharedState::Disabled, None)
        .await
        .expect("published");
    assert!(
        s.shared_states("other").await.expect("read").is_empty(),
        "not kept for a credential the store does not hold"
    );
    s.save("other", &credential("a", 0), None)
        .await
        .expect("create");
    s.publish_state("other", &id("a"), SharedState::Disabled, None)
        .await
        .expect("published");
    let record = |c, state, version| SharedStateRecord::new(id(c), state, version);
    assert_eq!(
        s.shared_states(P).await.expect("read"),
        [
            record("b", SharedState::NeedsReauthorization, Some(1)),
            record("a", SharedState::NeedsReauthorization, Some(1)),
            record("a", SharedState::Enabled, None),
        ]
    );
    assert_eq!(
        s.shared_states("other").await.expect("read"),
        [record("a", SharedState::Disabled, None)]
    );
    s.delete(P, &id("a"), None).await.expect("delete");
    assert_eq!(
        s.shared_states(P).await.expect("read"),
        [record("b", SharedState::NeedsReauthorization, Some(1))],
        "a deleted credential's states are forgotten"
    );
    // Sent after the delete (a queued decision): not kept; nor after the re-creation.
    publish("a", SharedState::Disabled, None).await;
    s.save(P, &credential("a", 7), None)
        .await
        .expect("re-create");
    assert_eq!(
        s.shared_states(P).await.expect("read"),
        [record("b", SharedState::NeedsReauthorization, Some(1))],
        "a re-created credential starts without its predecessor's states"
    );
    assert!(matches!(
        s.shared_states("").await,
        Err(StoreError::InvalidProvider { .. })
    ));

    // Cooldowns: the latest end of each, per provider (a shorter one does not cut it short).
    let (sooner, later) = (
        Utc::now() + TimeDelta::hours(1),
        Utc::now() + TimeDelta::hours(2),
    );
    s.publish_cooldown(P, &id("b"), later)
        .await
        .expect("cooldown");
    s.publish_cooldown(P, &id("b"), sooner)
        .await
        .expect("cooldown");
    let kept = s.active_cooldowns(P).await.expect("read");
    assert_eq!(kept.len(), 1, "{kept:?}");
    let until = kept.get(&id("b")).expect("b cools");
    assert!((*until - later).num_milliseconds().abs() < 1, "{until}");
    assert!(s.active_cooldowns("other").await.expect("read").is_empty());
    s.delete(P, &id("b"), None).await.expect("delete");
    assert!(
        s.active_cooldowns(P).await.expect("read").is_empty(),
        "a deleted credential's cooldown is forgotten"
    );
}

/// The refresh lock excludes a second holder of the same credential (typed `LockTimeout`), not of other credentials or providers, and a waiter gets it once the guard drops.
pub async fn refresh_lock_excludes_and_releases_on_drop(store: Store) {
    let lock = store.refresh_lock().expect("this store has a refresh lock");
    let held = lock
        .acquire(P, &id("a"), Duration::from_secs(5))
        .await
        .expect("free lock");
    assert_eq!(held.id(), "a");

    let err = lock
        .acquire(P, &id("a"), Duration::from_millis(50))
        .await
        .expect_err("held");
    assert!(
        matches!(&err, StoreError::LockTimeout { what: "refresh", id: Some(i), .. } if i == "a"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    // Other credentials and providers are not blocked.
    let other = lock
        .acquire(P, &id("b"), Duration::from_millis(50))
        .await
        .expect("other id");
    let other_provider = lock
        .acquire("openai", &id("a"), Duration::from_millis(50))
        .await
        .expect("other provider");

    // A waiter gets the lock as soon as the guard drops.
    let waiter = {
        let lock = Arc::clone(&lock);
        tokio::spawn(async move { lock.acquire(P, &id("a"), Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter must wait while the lock is held"
    );
    drop(held);
    let again = waiter.await.expect("task").expect("released on drop");
    drop((again, other, other_provider));
    let _free = lock
        .acquire(P, &id("a"), Duration::from_millis(50))
        .await
        .expect("free again");
}

/// `try_acquire` takes a free lock, answers `None` at once for a held one (whoever holds it:
/// another handle, or an `acquire` of the same store), never blocks other credentials, and takes
/// the lock again once the holder's guard has dropped (and, for a store that releases in the
/// background, the release has gone through).
pub async fn refresh_lock_try_acquire_does_not_wait(store: Store) {
    let lock = store.refresh_lock().expect("this store has a refresh lock");
    // Bounded far below any lock timeout a waiting acquisition would use.
    let at_once = Duration::from_secs(2);
    let once = |name: &'static str| {
        let lock = Arc::clone(&lock);
        async move {
            tokio::time::timeout(at_once, lock.try_acquire(P, &id(name)))
                .await
                .expect("try_acquire does not wait")
                .expect("the store answers")
        }
    };
    let held = once("a").await.expect("a free lock is taken");
    assert_eq!(held.id(), "a");
    assert!(once("a").await.is_none(), "held by the first guard");
    let err = lock
        .acquire(P, &id("a"), Duration::from_millis(50))
        .await
        .expect_err("held");
    assert!(matches!(err, StoreError::LockTimeout { .. }), "{err:?}");
    let other = once("b").await.expect("another credential is free");
    drop(held);
    // A store may release in the background (a database round trip): free again soon after.
    let mut again = None;
    for _ in 0..500 {
        again = once("a").await;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let again = again.expect("free again after the guard dropped");
    drop((again, other));
    let by_acquire = lock
        .acquire(P, &id("a"), Duration::from_secs(5))
        .await
        .expect("free");
    assert!(once("a").await.is_none(), "held by an acquire");
    drop(by_acquire);
}

/// The store's `Debug`, loaded credentials' `Debug` and error messages hold no secret.
pub async fn debug_and_errors_hold_no_secret(store: Store) {
    let s = &store;
    s.save(P, &credential("a", 0), None).await.expect("create");
    let loaded = s.load_all(P).await.expect("load_all");
    assert_no_secret(&format!("{s:?} {loaded:?}"));
    let errors = [
        s.save(P, &credential("a", 1), None)
            .await
            .expect_err("conflict"),
        s.save(P, &credential("a", 1), Some(7))
            .await
            .expect_err("conflict"),
        s.delete(P, &id("zz"), None).await.expect_err("missing"),
    ];
    for e in errors {
        assert_no_secret(&format!("{e} {e:?}"));
    }
}

/// A [`MemoryStore`](crate::MemoryStore) that says whether its (pretend) backend is reachable,
/// for tests of what a pool does when its store's connection drops and comes back
/// ([`CredentialStore::connection_status`]).
#[derive(Debug)]
pub struct WithConnectionStatus {
    store: crate::MemoryStore,
    status: tokio::sync::watch::Sender<bool>,
}

impl WithConnectionStatus {
    /// An empty store, reachable or not.
    pub fn new(connected: bool) -> Self {
        Self {
            store: crate::MemoryStore::new(),
            status: tokio::sync::watch::channel(connected).0,
        }
    }

    /// Says the backend is (or is no longer) reachable; receivers see every change.
    pub fn set_connected(&self, connected: bool) {
        self.status.send_replace(connected);
    }
}

#[async_trait::async_trait]
impl CredentialStore for WithConnectionStatus {
    async fn load_all(
        &self,
        provider: &str,
    ) -> Result<Vec<crate::Versioned<Credential>>, StoreError> {
        self.store.load_all(provider).await
    }
    async fn load(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<crate::Versioned<Credential>>, StoreError> {
        self.store.load(provider, id).await
    }
    async fn save(
        &self,
        provider: &str,
        credential: &Credential,
        expected: Option<crate::Version>,
    ) -> Result<crate::Version, StoreError> {
        self.store.save(provider, credential, expected).await
    }
    async fn delete(
        &self,
        provider: &str,
        id: &CredentialId,
        expected: Option<crate::Version>,
    ) -> Result<(), StoreError> {
        self.store.delete(provider, id, expected).await
    }
    async fn versions(
        &self,
        provider: &str,
    ) -> Result<BTreeMap<CredentialId, crate::Version>, StoreError> {
        self.store.versions(provider).await
    }
    fn connection_status(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.status.subscribe())
    }
}
