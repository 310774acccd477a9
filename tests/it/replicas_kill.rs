//! A replica killed with SIGKILL while it holds a refresh lease, in both orders of the crash
//! window. Three replica processes (this test binary re-executed, see `replicas`) share two
//! accounts through one PostgreSQL store and one strict token server (rotation and reuse
//! detection). Account `acct-a` is seeded with an access token due for refresh soon; `acct-b`
//! lasts the whole run. The victim's refresh lead is longer than the survivors', so it is the
//! first to want `acct-a` refreshed: it takes the lease and sends its refresh request, which goes
//! through a holding relay in front of the token server (only the victim uses it). The relay
//! receiving that request is the deterministic signal that the victim is inside its refresh
//! flight, holding the lease (checked in the lease row: held, owner `victim`, fence 1). The
//! survivors want the refresh while the lease is held; their token still works, so they do not
//! wait for the holder: they serve it and try the lease again as they go (a call never waits for
//! the dead holder's lease). Then the victim is killed with SIGKILL:
//!
//! - **unanswered**: the relay never forwarded the request. The token server never saw it, the
//!   stored refresh token is still live, and a survivor refreshes with it once the dead lease
//!   has expired on the database clock: 0 reused refresh tokens, 0 `invalid_grant`.
//! - **answered**: the relay forwarded it and the token server answered (rotated the refresh
//!   token) before the kill; the rotated tokens existed only in the killed process. This is the
//!   crash window of `docs/guides/persisting-tokens.md`: the survivor that takes the lease after
//!   its expiry presents the stored, consumed refresh token, the server detects the reuse and
//!   revokes the grant, and `acct-a` needs re-authorization. Calls keep being served by `acct-b`.
//!
//! Both orders run at once (two databases in one cluster, two token servers). The figures go
//! into `docs/guides/multi-replica.md`'s failure-mode table and the integration table.

use std::io::Write;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, TimeDelta, Utc};
use oauth_core::RefreshWindow;
use oauth_manager::refresh::RefreshStrategy;
use oauth_manager::store::CredentialStore;
use oauth_manager::{
    CredentialId, ExposeSecret, MaintenanceConfig, OAuthKeyManager, StoreOutage, SystemClock,
};
use oauth_store_postgres::{PostgresConfig, PostgresStore};
use oauth_testkit::provider::ChatClient;
use serde_json::{Value, json};

use crate::pg::Cluster;
use crate::replicas::{LINE_PREFIX, runtime, spawn_child};
use crate::support::{PROVIDER, chat, credential, refresher, report};

const DB_VAR: &str = "OAUTH_KILL_DB_URL";
const TOKEN_URL_VAR: &str = "OAUTH_KILL_TOKEN_URL";
const PROVIDER_URL_VAR: &str = "OAUTH_KILL_PROVIDER_URL";
const NAME_VAR: &str = "OAUTH_KILL_NAME";
const RUN_MS_VAR: &str = "OAUTH_KILL_RUN_MS";
const LEAD_MS_VAR: &str = "OAUTH_KILL_LEAD_MS";
const CHILD: &str = "replicas_kill::kill_replica_process";

/// The account refreshed during the run, and the one that lasts.
const A: &str = "acct-a";
const B: &str = "acct-b";
/// Lifetime of the access tokens the token server issues (`acct-b`'s, and a refreshed
/// `acct-a`'s): longer than the run, so exactly one refresh is due.
const SERVER_TTL: Duration = Duration::from_secs(60);
/// `acct-a`'s seeded access token expires this long after seeding.
const A_EXPIRES: Duration = Duration::from_secs(11);
/// The victim wants `acct-a` refreshed 2 s after seeding, the survivors 4 s after.
const VICTIM_LEAD: Duration = Duration::from_secs(9);
const SURVIVOR_LEAD: Duration = Duration::from_secs(7);
/// The refresh lease (database clock): short, so the test is quick.
const LEASE: Duration = Duration::from_secs(4);
/// How long the survivors run.
const RUN: Duration = Duration::from_secs(9);
const VICTIM: &str = "victim";

fn store_config(url: &str, replica: &str) -> PostgresConfig {
    PostgresConfig::from_url(url)
        .expect("database url")
        .replica_id(replica)
        .pool_size(4)
        .lease_ttl(LEASE)
        .connect_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(3))
        .health_interval(Duration::from_millis(500))
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(500))
}

fn strategy(lead: Duration) -> RefreshStrategy {
    RefreshStrategy {
        buffer_time: lead,
        adaptive_buffer: false,
        preemptive_refresh: false,
        min_buffer: Duration::ZERO,
        max_buffer: Duration::ZERO,
        window: RefreshWindow::new(
            lead,
            1.0,
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
        .expect("valid window"),
        ..RefreshStrategy::default()
    }
}

fn print_row(row: &Value) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{LINE_PREFIX}{row}").expect("stdout");
    out.flush().expect("flush");
}

/// One replica: a pool over the shared store with maintenance, failing closed on store
/// outages, making sequential chat calls for its run; prints a `ready` row once it serves,
/// and one row with its counts at the end.
#[test]
#[ignore = "a child process of a_replica_killed_while_holding_a_lease"]
fn kill_replica_process() {
    let (Ok(db), Ok(token_url), Ok(provider_url), Ok(name), Ok(run_ms), Ok(lead_ms)) = (
        std::env::var(DB_VAR),
        std::env::var(TOKEN_URL_VAR),
        std::env::var(PROVIDER_URL_VAR),
        std::env::var(NAME_VAR),
        std::env::var(RUN_MS_VAR),
        std::env::var(LEAD_MS_VAR),
    ) else {
        return; // Run by hand with --ignored: nothing to do.
    };
    let ms = |v: &str| Duration::from_millis(v.parse().expect("milliseconds"));
    let (run, lead) = (ms(&run_ms), ms(&lead_ms));
    let rt = runtime();
    let row = rt.block_on(async move {
        let store = PostgresStore::connect(store_config(&db, &name))
            .await
            .expect("replica connects");
        let store: Arc<dyn CredentialStore> = Arc::new(store);
        let pool = OAuthKeyManager::builder(PROVIDER)
            .store_arc(store)
            .store_outage(StoreOutage::FailClosed)
            .refresher_arc(refresher(&token_url, Arc::new(SystemClock)))
            .refresh_strategy(strategy(lead))
            .build()
            .await
            .expect("pool builds from the shared store");
        let maintenance = pool
            .spawn_maintenance(
                MaintenanceConfig::default()
                    .with_interval(Duration::from_millis(250))
                    .with_refresh_ahead(Duration::ZERO),
            )
            .expect("maintenance starts");
        print_row(&json!({ "ready": name }));
        let client = ChatClient::new(provider_url).with_timeout(Duration::from_secs(5));
        let (mut ok, mut failed, mut max_call) = (0_u64, 0_u64, Duration::ZERO);
        let mut errors = Vec::new();
        let until = Instant::now() + run;
        while Instant::now() < until {
            let started = Instant::now();
            match chat(&pool, &client, "hello from a replica").await {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    if errors.len() < 5 {
                        errors.push(e.to_string());
                    }
                }
            }
            max_call = max_call.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        maintenance.stop().await;
        let refreshes: u64 = [A, B]
            .iter()
            .filter_map(|id| pool.credential_metrics(id))
            .map(|m| m.refresh_count)
            .sum();
        let state = pool
            .credential_health(A)
            .map(|h| h.state.as_str().to_owned());
        json!({
            "name": name, "ok": ok, "failed": failed, "errors": errors,
            "refreshes": refreshes, "max_call_ms": max_call.as_millis() as u64,
            "state_a": state,
        })
    });
    print_row(&row);
}

/// A replica process, killed (SIGKILL) if still running when dropped (a failing test).
struct Replica {
    name: String,
    child: Child,
    rows: mpsc::Receiver<String>,
}

impl Replica {
    fn row(&self, timeout: Duration) -> Value {
        let line = self
            .rows
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("{} reports: {e}", self.name));
        serde_json::from_str(&line).expect("json row")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which way the victim's refresh request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// The relay holds it without forwarding: the token server never sees it.
    Unanswered,
    /// The relay forwards it, the token server answers (rotating the refresh token), and the
    /// relay holds the answer: the victim never receives it.
    Answered,
}

impl Order {
    const fn name(self) -> &'static str {
        match self {
            Self::Unanswered => "unanswered",
            Self::Answered => "answered",
        }
    }
}

/// What the relay saw of the held request.
#[derive(Debug)]
struct Held {
    /// When it arrived (unanswered) or when the token server's answer arrived (answered).
    at: DateTime<Utc>,
    /// The refresh token the token server issued in its answer (answered only).
    rotated_refresh_token: Option<String>,
}

/// The relay in front of the token server: the first request is held (forwarded first, in the
/// answered order), later ones are passed through.
struct Relay {
    order: Order,
    upstream: String,
    http: reqwest::Client,
    armed: AtomicBool,
    held: mpsc::Sender<Held>,
}

async fn forward(relay: &Relay, headers: &HeaderMap, body: Bytes) -> Result<(u16, Bytes), String> {
    let mut request = relay.http.post(&relay.upstream).body(body);
    for name in [CONTENT_TYPE, AUTHORIZATION] {
        if let Some(v) = headers.get(&name) {
            request = request.header(name.as_str(), v.as_bytes());
        }
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

async fn relay_token(State(relay): State<Arc<Relay>>, headers: HeaderMap, body: Bytes) -> Response {
    if relay.armed.swap(false, Ordering::SeqCst) {
        let held = match relay.order {
            Order::Unanswered => Held {
                at: Utc::now(),
                rotated_refresh_token: None,
            },
            Order::Answered => {
                let answer = forward(&relay, &headers, body).await;
                let rotated = answer.ok().and_then(|(_, body)| {
                    let v: Value = serde_json::from_slice(&body).ok()?;
                    v["refresh_token"].as_str().map(str::to_owned)
                });
                Held {
                    at: Utc::now(),
                    rotated_refresh_token: rotated,
                }
            }
        };
        let _ = relay.held.send(held);
        // Never answered: the victim dies waiting.
        return std::future::pending().await;
    }
    match forward(&relay, &headers, body).await {
        Ok((status, body)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

fn spawn_replica(
    name: &str,
    db: &str,
    token_url: &str,
    provider_url: &str,
    lead: Duration,
    run: Duration,
) -> Replica {
    let ms = |d: Duration| d.as_millis().to_string();
    let envs = [
        (DB_VAR, db.to_owned()),
        (TOKEN_URL_VAR, token_url.to_owned()),
        (PROVIDER_URL_VAR, provider_url.to_owned()),
        (NAME_VAR, name.to_owned()),
        (RUN_MS_VAR, ms(run)),
        (LEAD_MS_VAR, ms(lead)),
    ];
    let (child, rows) = spawn_child(CHILD, &envs);
    Replica {
        name: name.to_owned(),
        child,
        rows,
    }
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

/// One order of the crash window, on its own database and token server; returns its figures
/// after checking what it must show.
#[allow(clippy::too_many_lines)]
fn run_order(cluster: &Cluster, order: Order) -> Value {
    let rt = runtime();
    let db = rt.block_on(cluster.fresh_database());
    let (held_tx, held_rx) = mpsc::channel();
    let (tokens, provider, relay_url) = rt.block_on(async {
        let (tokens, provider) = crate::replicas::servers(SERVER_TTL).await;
        let relay = Arc::new(Relay {
            order,
            upstream: tokens.url(),
            http: reqwest::Client::new(),
            armed: AtomicBool::new(true),
            held: held_tx,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let app = Router::new()
            .route("/token", post(relay_token))
            .with_state(relay);
        tokio::spawn(async move { axum::serve(listener, app).await });
        (tokens, provider, format!("http://{addr}/token"))
    });

    let seed = rt.block_on(async {
        PostgresStore::connect(store_config(&db, "seed"))
            .await
            .expect("seed connects")
    });
    let now = Utc::now();
    let grant_a = tokens.issue_grant(&format!("client-{A}"));
    let grant_b = tokens.issue_grant(&format!("client-{B}"));
    let a_expires = now + TimeDelta::from_std(A_EXPIRES).expect("small");
    let seeds = [
        credential(A, &grant_a, now).with_expires_at(a_expires),
        credential(B, &grant_b, now),
    ];
    for cred in &seeds {
        rt.block_on(seed.save(PROVIDER, cred, None))
            .expect("seeded");
    }
    let survivors_want_at = a_expires - TimeDelta::from_std(SURVIVOR_LEAD).expect("small");

    let provider_url = provider.url();
    let mut victim = spawn_replica(
        VICTIM,
        &db,
        &relay_url,
        &provider_url,
        VICTIM_LEAD,
        Duration::from_secs(60),
    );
    let survivors: Vec<Replica> = ["survivor-1", "survivor-2"]
        .iter()
        .map(|name| spawn_replica(name, &db, &tokens.url(), &provider_url, SURVIVOR_LEAD, RUN))
        .collect();
    let mut ready_at = Vec::new();
    for r in std::iter::once(&victim).chain(&survivors) {
        let row = r.row(Duration::from_secs(20));
        assert_eq!(row["ready"], r.name.as_str(), "{row}");
        ready_at.push(Utc::now());
    }

    // The victim's refresh request reached the relay: it is inside its flight, holding the lease.
    let held: Held = held_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the victim's refresh reached the relay");
    let id_a = CredentialId::new(A).expect("id");
    let lease = rt
        .block_on(seed.lease_state(PROVIDER, &id_a))
        .expect("lease readable")
        .expect("a lease row");
    assert!(lease.held, "{lease:?}");
    assert_eq!(
        (lease.owner.as_deref(), lease.fence),
        (Some(VICTIM), 1),
        "{lease:?}"
    );
    let lease_expires = lease.expires_at.expect("held lease has an expiry");
    let server_before_kill = tokens.stats();
    match order {
        Order::Unanswered => assert_eq!(server_before_kill.requests, 0, "never forwarded"),
        Order::Answered => assert_eq!(
            (server_before_kill.requests, server_before_kill.refreshes),
            (1, 1),
            "the token server answered the victim"
        ),
    }

    // SIGKILL (std's `Child::kill` on Unix).
    victim.child.kill().expect("SIGKILL the victim");
    let status = victim.child.wait().expect("reaped");
    let killed_at = Utc::now();
    assert!(!status.success(), "killed: {status:?}");
    let lost_token_live_at_kill = held
        .rotated_refresh_token
        .as_deref()
        .map(|t| tokens.is_refresh_token_valid(t));
    let after_kill = rt
        .block_on(seed.lease_state(PROVIDER, &id_a))
        .expect("lease readable")
        .expect("a lease row");
    assert!(
        after_kill.held && after_kill.owner.as_deref() == Some(VICTIM),
        "the dead replica's lease stays until its expiry: {after_kill:?}"
    );

    let rows: Vec<Value> = survivors
        .iter()
        .map(|r| r.row(RUN + Duration::from_secs(30)))
        .collect();
    drop(survivors);
    let server = tokens.stats();
    let log = tokens.log();
    let after: Vec<_> = log
        .iter()
        .filter(|r| r.at > killed_at && r.grant_type.as_deref() == Some("refresh_token"))
        .collect();
    let first_after = after.first().map(|r| r.at);
    let stored_a = rt
        .block_on(seed.load(PROVIDER, &id_a))
        .expect("readable")
        .expect("stored");
    let stored_live = stored_a
        .value
        .refresh_token
        .as_ref()
        .is_some_and(|t| tokens.is_refresh_token_valid(t.expose_secret()));
    let count = |key: &str| {
        rows.iter()
            .map(|r| r[key].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let (ok, failed) = (count("ok"), count("failed"));
    let max_call_ms = rows
        .iter()
        .filter_map(|r| r["max_call_ms"].as_u64())
        .max()
        .unwrap_or(0);
    let states: Vec<String> = rows
        .iter()
        .map(|r| r["state_a"].as_str().unwrap_or("?").to_owned())
        .collect();
    let figures = json!({
        "victim_held_fence": lease.fence,
        "kill_after_held_ms": ms_between(held.at, killed_at),
        "kill_before_lease_expiry_ms": ms_between(killed_at, lease_expires),
        "survivor_refresh_after_lease_expiry_ms": first_after.map(|t| ms_between(lease_expires, t)),
        "survivor_refresh_after_wanted_ms": first_after.map(|t| ms_between(survivors_want_at, t)),
        "token_requests_after_kill": after.len(),
        "refreshes_issued": server.refreshes,
        "invalid_grants": server.invalid_grants,
        "reused_refresh_tokens": server.reused_refresh_tokens,
        "families_revoked": server.families_revoked,
        "lost_token_live_at_kill": lost_token_live_at_kill,
        "stored_refresh_token_live": stored_live,
        "calls_ok": ok,
        "calls_failed": failed,
        "max_call_ms": max_call_ms,
        "acct_a_state": states,
    });
    eprintln!(
        "[replicas_kill/{}] {figures}\n{}",
        order.name(),
        serde_json::to_string_pretty(&rows).unwrap_or_default()
    );

    // What both orders show: the victim's lease blocked nobody past its expiry, and the
    // survivors served every call.
    assert!(
        ready_at.iter().all(|t| *t < lease_expires),
        "every replica ran while the victim held the lease: {figures}"
    );
    assert!(
        survivors_want_at < lease_expires,
        "the survivors wanted the refresh while the lease was held: {figures}"
    );
    let first_after = first_after.expect("a survivor went to the token endpoint");
    assert!(
        first_after >= lease_expires,
        "no survivor refreshed before the dead lease expired: {figures}"
    );
    assert_eq!(failed, 0, "every call served: {figures} {rows:?}");
    assert!(ok > 50, "traffic ran: {figures}");
    assert!(
        max_call_ms < 1_000,
        "calls with a working token did not wait for the held lease ({LEASE:?}): {figures}"
    );
    match order {
        Order::Unanswered => {
            assert_eq!(
                (
                    server.refreshes,
                    server.invalid_grants,
                    server.reused_refresh_tokens,
                    server.families_revoked
                ),
                (1, 0, 0, 0),
                "one refresh, by a survivor, with the live token: {figures}"
            );
            assert_eq!(count("refreshes"), 1, "a survivor's: {figures}");
            assert!(stored_live, "the store holds the live grant: {figures}");
            assert!(
                !tokens.is_refresh_token_valid(&grant_a.refresh_token),
                "rotated once"
            );
            assert!(states.iter().all(|s| s == "active"), "{figures}");
        }
        Order::Answered => {
            assert_eq!(
                lost_token_live_at_kill,
                Some(true),
                "the victim took a live, rotated refresh token to its grave: {figures}"
            );
            assert_eq!(server.refreshes, 1, "only the victim's: {figures}");
            assert!(
                server.reused_refresh_tokens >= 1 && server.invalid_grants >= 1,
                "the survivor presented the consumed token: {figures}"
            );
            assert_eq!(server.families_revoked, 1, "reuse detection: {figures}");
            assert!(!stored_live, "the grant is dead: {figures}");
            assert!(
                states.iter().any(|s| s == "needs_reauthorization"),
                "the account needs re-authorization: {figures}"
            );
        }
    }
    drop(seed);
    drop(provider);
    drop(tokens);
    drop(rt);
    figures
}

#[test]
fn a_replica_killed_while_holding_a_lease() {
    let cluster = Cluster::start();
    let started = Instant::now();
    let (unanswered, answered) = std::thread::scope(|s| {
        let u = s.spawn(|| run_order(&cluster, Order::Unanswered));
        let a = s.spawn(|| run_order(&cluster, Order::Answered));
        (u.join(), a.join())
    });
    let (unanswered, answered) = match (unanswered, answered) {
        (Ok(u), Ok(a)) => (u, a),
        (Err(e), _) | (_, Err(e)) => std::panic::resume_unwind(e),
    };
    let mut figures = json!({
        "replicas": 3,
        "lease_ttl_s": LEASE.as_secs(),
        "run_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    });
    let pick = [
        "survivor_refresh_after_lease_expiry_ms",
        "reused_refresh_tokens",
        "invalid_grants",
        "calls_failed",
        "max_call_ms",
    ];
    for (order, f) in [("unanswered", &unanswered), ("answered", &answered)] {
        for key in pick {
            figures[format!("{order}_{key}")] = f[key].clone();
        }
    }
    figures["answered_acct_a_state"] = answered["acct_a_state"].clone();
    report(module_path!(), figures);
    drop(cluster);
}
