//! A network partition between a replica and the database, made with a TCP relay that can stop
//! forwarding without closing anything (what a dropped route looks like: no reset, no answer).

use std::time::{Duration, Instant};

use oauth_store::conformance::credential;
use oauth_store::{CredentialStore, SharedState, StoreChange};
use oauth_store_postgres::is_unavailable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::{P, config, connect, eventually, id, shared};

/// Relays 127.0.0.1:<port> to `upstream`; while `cut` is true nothing is forwarded (and new
/// connections are not connected upstream), but no socket is closed.
async fn relay(upstream: String) -> (u16, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (cut, cut_rx) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let mut cut = cut_rx.clone();
            tokio::spawn(async move {
                let _ = cut.wait_for(|c| !*c).await;
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, cut.clone()));
                tokio::spawn(pump(sr, cw, cut));
            });
        }
    });
    (port, cut)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        // Held back while cut; delivered (late) once healed.
        if cut.wait_for(|c| !*c).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_fails_typed_within_its_bounds_and_recovers_when_healed() {
    let url = shared().fresh_database().await;
    let db = url.rsplit('/').next().expect("db name").to_owned();
    let upstream = url
        .trim_start_matches("postgres://pool@")
        .split('/')
        .next()
        .expect("host:port")
        .to_owned();
    let (port, cut) = relay(upstream).await;
    let cut_off = connect(config(
        &format!("postgres://pool@127.0.0.1:{port}/{db}"),
        "far",
    ))
    .await;
    let peer = connect(config(&url, "near")).await;
    let mut feed = cut_off.changes().expect("feed");
    let mut status = cut_off.connection_status();
    let v1 = peer
        .save(P, &credential("x", 0), None)
        .await
        .expect("create");
    let first = tokio::time::timeout(Duration::from_secs(5), feed.recv()).await;
    assert!(
        matches!(first, Ok(Ok(StoreChange::Changed { .. }))),
        "delivered through the relay: {first:?}"
    );

    cut.send_replace(true);
    let started = Instant::now();
    let err = cut_off.load(P, &id("x")).await.expect_err("partitioned");
    let took = started.elapsed();
    assert!(is_unavailable(&err) && !err.is_conflict(), "{err:?}");
    // Bounded by the operation timeout (3 s in these tests), not by TCP's minutes.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    tokio::time::timeout(Duration::from_secs(8), status.wait_for(|up| !*up))
        .await
        .expect("the health ping notices the partition")
        .expect("status");
    eprintln!(
        "partition: a call failed after {took:?}; health down after {:?}",
        started.elapsed()
    );

    // Meanwhile the peer rotates the token and an operator disables the account there; the
    // partitioned replica cannot see either yet.
    peer.save(P, &credential("x", 1), Some(v1))
        .await
        .expect("peer writes");
    peer.publish_state(P, &id("x"), SharedState::Disabled, None)
        .await
        .expect("peer disables");

    cut.send_replace(false);
    let healed = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), status.wait_for(|up| *up))
        .await
        .expect("reconnects after the partition heals")
        .expect("status");
    let resync = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(StoreChange::Resync { provider }) = feed.recv().await {
                return provider;
            }
        }
    })
    .await
    .expect("a resync after healing");
    assert_eq!(resync, P);
    // The disable published while it was cut off is replayed after the resync.
    let replayed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match feed.recv().await {
                Ok(StoreChange::StateChanged {
                    provider,
                    id,
                    state,
                    version,
                }) => return (provider, id, state, version),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => panic!("feed closed"),
            }
        }
    })
    .await
    .expect("the missed state is replayed");
    assert_eq!(
        replayed,
        (P.to_owned(), id("x"), SharedState::Disabled, None)
    );
    eprintln!(
        "partition healed: connected and resync after {:?}",
        healed.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            cut_off
                .load(P, &id("x"))
                .await
                .is_ok_and(|c| c.is_some_and(|c| c.version == v1 + 1))
        })
        .await,
        "re-reads the peer's rotation"
    );
}
