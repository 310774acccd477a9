//! The database going away and coming back: typed, quick failures while it is down, recovery by
//! itself afterwards (pool, LISTEN, `Resync`). Uses a cluster of its own, since it stops it.

use std::time::{Duration, Instant};

use oauth_store::conformance::{assert_no_secret, credential};
use oauth_store::{CredentialStore, StoreChange, StoreError};
use oauth_store_postgres::{PostgresStore, is_unavailable};

use crate::support::{Cluster, P, config, connect, eventually, id};

/// Every call fails as "unavailable" (retryable, not a conflict, no secret in it) within the
/// connect/operation bounds.
async fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) {
    let started = Instant::now();
    let err = call.await.expect_err(what);
    let took = started.elapsed();
    assert!(is_unavailable(&err), "{what}: {err:?}");
    assert!(
        err.is_unavailable() && !err.is_contention(),
        "{what}: {err:?}"
    );
    assert!(err.is_retryable() && !err.is_conflict(), "{what}: {err:?}");
    assert_no_secret(&format!("{err} {err:?}"));
    assert!(took < Duration::from_secs(5), "{what} took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_fails_calls_typed_then_recovers_with_a_resync() {
    let cluster = Cluster::start();
    let url = cluster.fresh_database().await;
    let a = connect(config(&url, "a")).await;
    let b = connect(config(&url, "b")).await;
    let mut feed = b.changes().expect("feed");
    let v1 = a.save(P, &credential("x", 0), None).await.expect("create");
    let mut status = a.connection_status();
    // The same status through the trait, as a pool sees the store.
    let dyn_store: std::sync::Arc<dyn CredentialStore> = std::sync::Arc::new(a.clone());
    let mut via_trait = dyn_store
        .connection_status()
        .expect("the PostgreSQL store reports its connection");
    assert!(a.is_connected() && b.is_connected() && *via_trait.borrow_and_update());
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), feed.recv())
            .await
            .expect("in time")
            .expect("open"),
        StoreChange::Changed {
            provider: P.into(),
            id: id("x")
        }
    );

    let cooling_until = chrono::Utc::now() + chrono::Duration::minutes(10);
    a.publish_cooldown(P, &id("x"), cooling_until)
        .await
        .expect("cooldown");
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), feed.recv()).await,
        Ok(Ok(StoreChange::CooledDown { .. }))
    ));

    cluster.stop();
    let down_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), status.wait_for(|up| !*up))
        .await
        .expect("the outage is noticed")
        .expect("status");
    eprintln!("outage noticed after {:?}", down_at.elapsed());
    assert!(!a.is_connected());
    assert!(via_trait.has_changed().unwrap_or(false) && !*via_trait.borrow_and_update());

    assert_unavailable("load", a.load(P, &id("x"))).await;
    assert_unavailable("load_all", a.load_all(P)).await;
    assert_unavailable("versions", a.versions(P)).await;
    assert_unavailable("save", a.save(P, &credential("x", 1), Some(v1))).await;
    assert_unavailable("create", a.save(P, &credential("y", 0), None)).await;
    assert_unavailable("delete", a.delete(P, &id("x"), Some(v1))).await;
    assert_unavailable(
        "publish_cooldown",
        a.publish_cooldown(P, &id("x"), chrono::Utc::now()),
    )
    .await;
    assert_unavailable("try_acquire", a.leases().try_acquire(P, &id("x"))).await;
    // Waiting for a lease does not wait out its timeout when the database is gone.
    assert_unavailable(
        "acquire_lease",
        a.leases()
            .acquire_lease(P, &id("x"), Duration::from_secs(30)),
    )
    .await;
    let lock = a.refresh_lock().expect("lock");
    assert_unavailable(
        "refresh lock",
        lock.acquire(P, &id("x"), Duration::from_secs(30)),
    )
    .await;

    cluster.start_again();
    let up_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), status.wait_for(|up| *up))
        .await
        .expect("reconnects by itself")
        .expect("status");
    eprintln!(
        "reconnected {:?} after the server was back",
        up_at.elapsed()
    );
    assert!(*via_trait.borrow_and_update());

    // The other replica was told it may have missed changes.
    let resync = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Ok(StoreChange::Resync { provider }) = feed.recv().await {
                return provider;
            }
        }
    })
    .await
    .expect("a resync after the reconnect");
    assert_eq!(resync, P);
    // Followed by the cooldowns still in force, so a resync loses none.
    let replayed = tokio::time::timeout(Duration::from_secs(5), feed.recv())
        .await
        .expect("in time")
        .expect("open");
    let StoreChange::CooledDown {
        id: cooled, until, ..
    } = replayed
    else {
        panic!("expected the cooldown replay, got {replayed:?}");
    };
    assert_eq!(cooled, id("x"));
    assert!((until - cooling_until).num_milliseconds().abs() < 1);
    assert!(
        eventually(Duration::from_secs(15), || async {
            b.reconnects() >= 1 && a.reconnects() >= 1
        })
        .await
    );

    // Calls work again through the pool, and LISTEN delivers again.
    assert!(
        eventually(Duration::from_secs(10), || async {
            a.load(P, &id("x")).await.is_ok()
        })
        .await,
        "the pool reconnects"
    );
    let stored = a.load(P, &id("x")).await.expect("load").expect("kept");
    assert_eq!(stored.version, v1, "nothing was written while down");
    a.save(P, &credential("x", 1), Some(v1))
        .await
        .expect("cas after recovery");
    let change = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match feed.recv().await {
                Ok(StoreChange::Resync { .. } | StoreChange::CooledDown { .. }) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("delivered after recovery")
    .expect("open");
    assert_eq!(
        change,
        StoreChange::Changed {
            provider: P.into(),
            id: id("x")
        }
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_database_that_is_down_fails_fast_and_typed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port(); // nothing listens there once the listener is dropped
    let url = format!("postgres://pool:SECRETVALUE-password@127.0.0.1:{port}/none");
    let started = Instant::now();
    let err = PostgresStore::connect(config(&url, "a"))
        .await
        .expect_err("nothing listens");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_no_secret(&format!("{err} {err:?}"));
}
