//! The `CredentialStore` contract, run against every store of this crate. A new backend adds one
//! line to `conformance!` below.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use oauth_core::CredentialId;
use oauth_store::StoreError;

use crate::support::{Fixture, assert_no_secret, cred, full};

const P: &str = "anthropic";

fn id(s: &str) -> CredentialId {
    CredentialId::new(s).expect("valid id")
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory_store {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $case() { super::$case(crate::support::memory()).await } )*
        }
        mod file_store {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $case() { super::$case(crate::support::file()).await } )*
        }
    };
}

conformance!(
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
    debug_and_errors_hold_no_secret,
);

async fn create_load_and_list(f: Fixture) {
    let s = &f.store;
    assert!(s.load_all(P).await.expect("load_all").is_empty());
    assert!(s.versions(P).await.expect("versions").is_empty());
    assert!(s.load(P, &id("a")).await.expect("load").is_none());

    for name in ["b", "a", "c"] {
        assert_eq!(s.save(P, &cred(name, 0), None).await.expect("create"), 1);
    }
    let all = s.load_all(P).await.expect("load_all");
    let ids: Vec<&str> = all.iter().map(|v| v.value.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"], "sorted by id");
    for v in &all {
        assert_eq!(v.version, 1);
        assert_eq!(
            full(&v.value),
            full(&cred(v.value.id.as_str(), 0)),
            "round trip"
        );
    }
    let a = s.load(P, &id("a")).await.expect("load").expect("stored");
    assert_eq!(a.version, 1);
    assert_eq!(full(&a.value), full(&cred("a", 0)));
}

async fn create_of_existing_is_a_conflict(f: Fixture) {
    let s = &f.store;
    s.save(P, &cred("a", 0), None).await.expect("create");
    let err = s.save(P, &cred("a", 1), None).await.expect_err("exists");
    assert!(err.is_conflict());
    assert!(
        matches!(&err, StoreError::Conflict { id, expected: None, actual: Some(1), .. } if id == "a"),
        "{err:?}"
    );
    let stored = s.load(P, &id("a")).await.expect("load").expect("stored");
    assert_eq!(full(&stored.value), full(&cred("a", 0)), "unchanged");
}

async fn compare_and_set_bumps_the_version(f: Fixture) {
    let s = &f.store;
    assert_eq!(s.save(P, &cred("a", 0), None).await.expect("create"), 1);
    assert_eq!(s.save(P, &cred("a", 1), Some(1)).await.expect("cas"), 2);
    assert_eq!(s.save(P, &cred("a", 2), Some(2)).await.expect("cas"), 3);
    let stored = s.load(P, &id("a")).await.expect("load").expect("stored");
    assert_eq!(stored.version, 3);
    assert_eq!(full(&stored.value), full(&cred("a", 2)));
}

async fn stale_version_is_refused_and_newer_token_stays(f: Fixture) {
    let s = &f.store;
    s.save(P, &cred("a", 0), None).await.expect("create");
    // Two writers read version 1; the first rotates the refresh token.
    let first = s.load(P, &id("a")).await.expect("load").expect("stored");
    let second = s.load(P, &id("a")).await.expect("load").expect("stored");
    assert_eq!(
        s.save(P, &cred("a", 1), Some(first.version))
            .await
            .expect("winner"),
        2
    );
    // The second writes from its stale snapshot: refused, typed, not retryable as is.
    let err = s
        .save(P, &cred("a", 99), Some(second.version))
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
        full(&cred("a", 1)),
        "the newer token stays"
    );
}

async fn save_with_version_of_missing_credential_is_a_conflict(f: Fixture) {
    let s = &f.store;
    let err = s
        .save(P, &cred("a", 0), Some(1))
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

async fn delete_is_compare_and_set_too(f: Fixture) {
    let s = &f.store;
    s.save(P, &cred("a", 0), None).await.expect("create");
    s.save(P, &cred("a", 1), Some(1)).await.expect("cas");
    s.save(P, &cred("b", 0), None).await.expect("create");

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

async fn recreated_credential_continues_its_versions(f: Fixture) {
    let s = &f.store;
    s.save(P, &cred("a", 0), None).await.expect("create");
    s.save(P, &cred("a", 1), Some(1)).await.expect("cas");
    s.delete(P, &id("a"), Some(2)).await.expect("delete");
    let v = s.save(P, &cred("a", 5), None).await.expect("re-create");
    assert_eq!(
        v, 3,
        "a writer holding version 1 or 2 of the old one cannot match"
    );
    assert!(
        s.save(P, &cred("a", 6), Some(1))
            .await
            .is_err_and(|e| e.is_conflict())
    );
}

async fn versions_are_monotonic_and_match_load_all(f: Fixture) {
    let s = &f.store;
    let mut last: BTreeMap<CredentialId, u64> = BTreeMap::new();
    for round in 0..6u64 {
        for name in ["x", "y"] {
            let expected = last.get(name).copied();
            s.save(P, &cred(name, round), expected)
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

async fn concurrent_increments_lose_nothing(f: Fixture) {
    const TASKS: u64 = 8;
    const EACH: u64 = 25;
    let s = Arc::clone(&f.store);
    s.save(P, &cred("shared", 0), None).await.expect("create");
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
                    let next = cred("shared", cur.value.refresh_count + 1);
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

async fn providers_are_isolated_and_odd_names_work(f: Fixture) {
    let s = &f.store;
    let odd_provider = "Open AI/../codex .json%";
    let odd_id = "team/a b.c%2E..é";
    s.save(odd_provider, &cred(odd_id, 1), None)
        .await
        .expect("create");
    s.save(P, &cred(odd_id, 2), None).await.expect("create");
    s.save(P, &cred("other", 2), None).await.expect("create");

    let odd = s.load_all(odd_provider).await.expect("load_all");
    assert_eq!(odd.len(), 1);
    assert_eq!(full(&odd[0].value), full(&cred(odd_id, 1)));
    assert_eq!(s.load_all(P).await.expect("load_all").len(), 2);
    let long = "p".repeat(300);
    s.save(&long, &cred(&"i".repeat(128), 0), None)
        .await
        .expect("long names");
    assert_eq!(s.versions(&long).await.expect("versions").len(), 1);
    assert!(s.load_all("anthropic2").await.expect("load_all").is_empty());
}

async fn empty_provider_is_rejected(f: Fixture) {
    let err = f
        .store
        .save("", &cred("a", 0), None)
        .await
        .expect_err("empty");
    assert!(matches!(err, StoreError::InvalidProvider { .. }), "{err:?}");
    assert!(matches!(
        f.store.load_all("").await,
        Err(StoreError::InvalidProvider { .. })
    ));
}

async fn refresh_lock_excludes_and_releases_on_drop(f: Fixture) {
    let lock = f
        .store
        .refresh_lock()
        .expect("this store has a refresh lock");
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

async fn debug_and_errors_hold_no_secret(f: Fixture) {
    let s = &f.store;
    s.save(P, &cred("a", 0), None).await.expect("create");
    let loaded = s.load_all(P).await.expect("load_all");
    assert_no_secret(&format!("{s:?} {loaded:?}"));
    let errors = [
        s.save(P, &cred("a", 1), None).await.expect_err("conflict"),
        s.save(P, &cred("a", 1), Some(7))
            .await
            .expect_err("conflict"),
        s.delete(P, &id("zz"), None).await.expect_err("missing"),
    ];
    for e in errors {
        assert_no_secret(&format!("{e} {e:?}"));
    }
}
