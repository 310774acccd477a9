//! Several replicas, one set of accounts: four processes (this test binary re-executed), each
//! with its own `OAuthKeyManager` over a `PostgresStore` on the same real PostgreSQL database
//! and the same strict token server (rotation and reuse detection), share three accounts whose
//! access tokens live a few seconds, under traffic for a bounded time. The store's refresh lease
//! (taken by the manager inside every refresh flight, followed by a re-read) is what keeps two
//! replicas from exchanging the same refresh token; LISTEN/NOTIFY spreads refreshed tokens and
//! cooldowns.
//!
//! The replicas use `StoreOutage::FailClosed`: with a shared store, refreshing without the lease
//! and the re-read could present a refresh token another replica already exchanged (and the
//! provider would revoke the grant for everyone), so a replica that cannot reach the database
//! keeps serving the tokens that still work and refreshes nothing.
//!
//! Midway, the fake provider answers one 429 for one account: the replica that sees it cools the
//! account and publishes the cooldown; the others emit `CooledDown` for it from the change feed.
//! Every replica stamps its `CooledDown` events with the system clock (one machine, so one
//! clock), and the propagation time is the spread between the first event (the replica that saw
//! the 429) and the last.
//!
//! `replicas_restart` runs the same replicas across a PostgreSQL restart.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeDelta, Utc};
use oauth_core::{EventKind, RefreshWindow};
use oauth_manager::MaintenanceConfig;
use oauth_manager::refresh::RefreshStrategy;
use oauth_manager::store::{CredentialStore, SharedState};
use oauth_manager::{OAuthKeyManager, StoreOutage, SystemClock};
use oauth_store_postgres::{PostgresConfig, PostgresStore};
use oauth_testkit::provider::{ChatClient, FakeProvider, ProviderFault};
use oauth_testkit::token_server::{Outcome, TokenServer, TokenServerConfig};
use serde_json::{Value, json};

use crate::pg::Cluster;
use crate::support::{PROVIDER, chat, credential, refresher, report};

const DB_VAR: &str = "OAUTH_REPLICA_DB_URL";
const TOKEN_URL_VAR: &str = "OAUTH_REPLICA_TOKEN_URL";
const PROVIDER_URL_VAR: &str = "OAUTH_REPLICA_PROVIDER_URL";
const NAME_VAR: &str = "OAUTH_REPLICA_NAME";
const RUN_MS_VAR: &str = "OAUTH_REPLICA_RUN_MS";
pub(crate) const LINE_PREFIX: &str = "REPLICA:";
const CHILD: &str = "replicas::replica_process";

/// Access-token lifetime at the token server.
const TTL: Duration = Duration::from_secs(6);
/// How long before expiry a replica refreshes (the refresh window's buffer).
const LEAD: Duration = Duration::from_millis(700);
const REPLICAS: usize = 4;
const ACCOUNTS: [&str; 3] = ["acct-a", "acct-b", "acct-c"];
const RUN: Duration = Duration::from_secs(18);

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn store_config(url: &str, replica: &str) -> PostgresConfig {
    PostgresConfig::from_url(url)
        .expect("database url")
        .replica_id(replica)
        .pool_size(4)
        .lease_ttl(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(3))
        .health_interval(Duration::from_millis(500))
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(500))
}

fn strategy() -> RefreshStrategy {
    RefreshStrategy {
        buffer_time: LEAD,
        adaptive_buffer: false,
        preemptive_refresh: false,
        min_buffer: Duration::ZERO,
        max_buffer: Duration::ZERO,
        window: RefreshWindow::new(
            LEAD,
            1.0,
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
        .expect("valid window"),
        ..RefreshStrategy::default()
    }
}

/// One replica: a pool over the shared PostgreSQL store, maintenance consuming its change feed,
/// sequential chat calls for the run's length; prints one JSON line with its counts.
#[test]
#[ignore = "a child process of four_replicas_share_three_accounts"]
fn replica_process() {
    let (Ok(db), Ok(token_url), Ok(provider_url), Ok(name), Ok(run_ms)) = (
        std::env::var(DB_VAR),
        std::env::var(TOKEN_URL_VAR),
        std::env::var(PROVIDER_URL_VAR),
        std::env::var(NAME_VAR),
        std::env::var(RUN_MS_VAR),
    ) else {
        return; // Run by hand with --ignored: nothing to do.
    };
    let run = Duration::from_millis(run_ms.parse().expect("run ms"));
    let rt = runtime();
    let line = rt.block_on(async move {
        let store = PostgresStore::connect(store_config(&db, &name))
            .await
            .expect("replica connects");
        let store: Arc<dyn CredentialStore> = Arc::new(store);
        let pool = OAuthKeyManager::builder(PROVIDER)
            .store_arc(store)
            .store_outage(StoreOutage::FailClosed)
            .refresher_arc(refresher(&token_url, Arc::new(SystemClock)))
            .refresh_strategy(strategy())
            .build()
            .await
            .expect("pool builds from the shared store");
        let mut events = pool.subscribe();
        let cooled = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
        let sink = Arc::clone(&cooled);
        let watcher = tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                let (kind, credential) = match &event.kind {
                    EventKind::CooledDown { credential, .. } => ("cooled", credential),
                    EventKind::Disabled { credential } => ("disabled", credential),
                    _ => continue,
                };
                let at = epoch_ms();
                sink.lock()
                    .expect("lock")
                    .push(json!({ "kind": kind, "id": credential.as_str(), "at_ms": at }));
            }
        });
        let maintenance = pool
            .spawn_maintenance(
                MaintenanceConfig::default()
                    .with_interval(Duration::from_millis(250))
                    .with_refresh_ahead(Duration::ZERO),
            )
            .expect("maintenance starts");
        let client = ChatClient::new(provider_url).with_timeout(Duration::from_secs(5));
        let (mut ok, mut failed) = (0_u64, 0_u64);
        let mut errors = Vec::new();
        let until = Instant::now() + run;
        while Instant::now() < until {
            match chat(&pool, &client, "hello from a replica").await {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    if errors.len() < 5 {
                        errors.push(e.to_string());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        maintenance.stop().await;
        watcher.abort();
        let refreshes: u64 = ACCOUNTS
            .iter()
            .filter_map(|id| pool.credential_metrics(id))
            .map(|m| m.refresh_count)
            .sum();
        let cooled = cooled.lock().expect("lock").clone();
        json!({
            "name": name, "ok": ok, "failed": failed, "errors": errors,
            "refreshes": refreshes, "cooled": cooled,
        })
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{LINE_PREFIX}{line}").expect("stdout");
    out.flush().expect("flush");
}

fn spawn_replica(envs: &[(&str, String)]) -> (Child, mpsc::Receiver<String>) {
    spawn_child(CHILD, envs)
}

/// Runs the ignored test `child` of this binary in a process of its own with `envs`; its
/// stdout lines that carry a row (`REPLICA:` + JSON) arrive on the receiver, in order.
pub(crate) fn spawn_child(child: &str, envs: &[(&str, String)]) -> (Child, mpsc::Receiver<String>) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        child,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn replica process");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find(LINE_PREFIX)
                && tx.send(line[at + LINE_PREFIX.len()..].to_owned()).is_err()
            {
                break;
            }
        }
    });
    (child, rx)
}

/// The number of access tokens of `client` that expired, or came within the refresh lead of
/// expiring, before `end`: each needs exactly one refresh, so a perfect pool makes this many.
fn expiries(
    tokens: &TokenServer,
    client: &str,
    first_expiry: DateTime<Utc>,
    end: DateTime<Utc>,
) -> u64 {
    let ttl = TimeDelta::from_std(TTL).expect("small");
    let lead = TimeDelta::from_std(LEAD).expect("small");
    let mut expiries: Vec<DateTime<Utc>> = vec![first_expiry];
    expiries.extend(
        tokens
            .log()
            .into_iter()
            .filter(|r| {
                r.client_id.as_deref() == Some(client)
                    && r.grant_type.as_deref() == Some("refresh_token")
                    && matches!(r.outcome, Outcome::Issued)
            })
            .map(|r| r.at + ttl),
    );
    expiries.iter().filter(|e| **e - lead <= end).count() as u64
}

#[test]
fn four_replicas_share_three_accounts() {
    run_scenario(module_path!(), REPLICAS, RUN, Midway::RateLimit);
}

/// What the parent does during the run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Midway {
    /// One 429 for the first account halfway through.
    RateLimit,
    /// Stop PostgreSQL a third into the run, start it again 2 s later.
    RestartPostgres,
}

/// A strict token server issuing `ttl`-long access tokens and a fake provider checking them.
pub(crate) async fn servers(ttl: Duration) -> (Arc<TokenServer>, FakeProvider) {
    let tokens = Arc::new(
        TokenServer::start_with(TokenServerConfig {
            access_token_ttl: ttl,
            ..TokenServerConfig::default()
        })
        .await
        .expect("token server"),
    );
    let provider = FakeProvider::start(Arc::clone(&tokens))
        .await
        .expect("provider");
    (tokens, provider)
}

#[allow(clippy::too_many_lines)]
pub(crate) fn run_scenario(scenario: &str, replicas_n: usize, run: Duration, midway: Midway) {
    let cluster = Cluster::start();
    let rt = runtime();
    let db = cluster.url("postgres");
    let (tokens, provider) = rt.block_on(async {
        let (tokens, provider) = servers(TTL).await;
        (tokens, provider)
    });
    // Seed the three accounts, their first expiries staggered over the token lifetime.
    let seed = rt.block_on(async {
        PostgresStore::connect(store_config(&db, "seed"))
            .await
            .expect("seed connects")
    });
    let mut grants = Vec::new();
    let mut first_expiry = Vec::new();
    let now = Utc::now();
    for (i, id) in ACCOUNTS.iter().enumerate() {
        let grant = tokens.issue_grant(&format!("client-{id}"));
        let expires = now
            + TimeDelta::seconds(3)
            + TimeDelta::milliseconds(i64::try_from(i).expect("small") * 1500);
        let cred = credential(id, &grant, now).with_expires_at(expires);
        rt.block_on(seed.save(PROVIDER, &cred, None))
            .expect("seeded");
        first_expiry.push(expires);
        grants.push(grant);
    }

    let envs = [
        (DB_VAR, db.clone()),
        (TOKEN_URL_VAR, tokens.url()),
        (PROVIDER_URL_VAR, provider.url()),
        (
            RUN_MS_VAR,
            u64::try_from(run.as_millis()).expect("small").to_string(),
        ),
    ];
    let started = Utc::now();
    let replicas: Vec<_> = (0..replicas_n)
        .map(|i| {
            let mut envs = envs.to_vec();
            envs.push((NAME_VAR, format!("replica-{i}")));
            spawn_replica(&envs)
        })
        .collect();
    let mut restarted_at = None;
    let mut disabled_at = None;
    match midway {
        Midway::RateLimit => {
            // One 429 for the first account, seen by whichever replica asks first.
            std::thread::sleep(run / 2);
            provider.inject_times(
                grants[0].family,
                ProviderFault::RateLimited {
                    retry_after: Some(Duration::from_secs(3)),
                    reset_hint_in_body: false,
                },
                1,
            );
            // Then an operator disables the last account from another process (the seeding
            // one) for a second: every replica takes it out of rotation.
            std::thread::sleep(run / 6);
            let id = oauth_core::CredentialId::new(ACCOUNTS[2]).expect("valid id");
            disabled_at = Some(epoch_ms());
            rt.block_on(seed.publish_state(PROVIDER, &id, SharedState::Disabled, None))
                .expect("disable shared");
            std::thread::sleep(Duration::from_secs(1));
            rt.block_on(seed.publish_state(PROVIDER, &id, SharedState::Enabled, None))
                .expect("enable shared");
        }
        Midway::RestartPostgres => {
            std::thread::sleep(run / 3);
            cluster.stop();
            std::thread::sleep(Duration::from_secs(2));
            cluster.start_again();
            restarted_at = Some(Utc::now());
        }
    }
    let mut rows = Vec::new();
    for (mut child, lines) in replicas {
        let line = lines
            .recv_timeout(run + Duration::from_secs(60))
            .expect("replica reports");
        rows.push(serde_json::from_str::<Value>(&line).expect("json row"));
        assert!(child.wait().expect("replica exits").success());
    }
    let ended = Utc::now();

    let server = tokens.stats();
    let expected: u64 = ACCOUNTS
        .iter()
        .zip(&first_expiry)
        .map(|(id, first)| expiries(&tokens, &format!("client-{id}"), *first, ended))
        .sum();
    let count = |key: &str| {
        rows.iter()
            .map(|r| r[key].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let (ok, failed, replica_refreshes) = (count("ok"), count("failed"), count("refreshes"));
    // Per replica, when it first reported `kind` for account `id` (epoch ms).
    let first_seen = |kind: &str, id: &str| -> Vec<u64> {
        let mut seen: Vec<u64> = rows
            .iter()
            .filter_map(|r| {
                r["cooled"]
                    .as_array()?
                    .iter()
                    .filter(|c| c["kind"] == kind && c["id"] == id)
                    .filter_map(|c| c["at_ms"].as_u64())
                    .min()
            })
            .collect();
        seen.sort_unstable();
        seen
    };
    let cooled = first_seen("cooled", ACCOUNTS[0]);
    let propagation_ms = match (cooled.first(), cooled.last()) {
        (Some(first), Some(last)) => last - first,
        _ => u64::MAX,
    };
    let disabled = first_seen("disabled", ACCOUNTS[2]);
    let disable_ms = match (disabled_at, disabled.last()) {
        (Some(at), Some(last)) => last.saturating_sub(at),
        _ => u64::MAX,
    };
    let ratio = server.refreshes as f64 / expected.max(1) as f64;
    let refreshed_after_restart = restarted_at.map(|at| {
        tokens
            .log()
            .iter()
            .filter(|r| r.at > at && matches!(r.outcome, Outcome::Issued))
            .count()
    });
    let mut figures = json!({
        "replicas": replicas_n,
        "accounts": ACCOUNTS.len(),
        "run_s": (ended - started).num_milliseconds() as f64 / 1000.0,
        "ttl_s": TTL.as_secs(),
        "calls_ok": ok,
        "calls_failed": failed,
        "expiries": expected,
        "refreshes": server.refreshes,
        "refreshes_per_expiry": (ratio * 100.0).round() / 100.0,
        "invalid_grants": server.invalid_grants,
        "reused_refresh_tokens": server.reused_refresh_tokens,
        "replicas_cooled": cooled.len(),
        "cooldown_propagation_ms": propagation_ms,
        "provider_429": provider.stats().rate_limited,
        "replicas_disabled": disabled.len(),
        "disable_propagation_ms": disable_ms,
    });
    if midway == Midway::RestartPostgres {
        figures["postgres_down_s"] = json!(2);
        figures["refreshes_after_restart"] = json!(refreshed_after_restart);
        for key in [
            "replicas_cooled",
            "cooldown_propagation_ms",
            "provider_429",
            "replicas_disabled",
            "disable_propagation_ms",
        ] {
            if let Some(map) = figures.as_object_mut() {
                map.remove(key);
            }
        }
    }
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&rows).unwrap_or_default()
    );
    report(scenario, figures.clone());

    assert_eq!(
        (
            server.invalid_grants,
            server.reused_refresh_tokens,
            server.families_revoked
        ),
        (0, 0, 0),
        "{figures}"
    );
    assert_eq!(failed, 0, "every call served: {figures} {rows:?}");
    assert!(ok > 100, "traffic ran: {figures}");
    assert_eq!(
        replica_refreshes, server.refreshes,
        "every token-endpoint refresh was a replica's: {figures}"
    );
    assert!(
        server.refreshes as f64 <= 1.1 * expected as f64,
        "at most 1.1 refreshes per expiry: {figures}"
    );
    assert!(expected >= 6, "tokens expired during the run: {figures}");
    match midway {
        Midway::RateLimit => {
            assert_eq!(provider.stats().rate_limited, 1, "{figures}");
            assert_eq!(
                cooled.len(),
                replicas_n,
                "the 429 cooled the account everywhere: {figures}"
            );
            assert!(propagation_ms < 1000, "{figures}");
            assert_eq!(
                disabled.len(),
                replicas_n,
                "the disable reached every replica: {figures}"
            );
            assert!(disable_ms < 1000, "{figures}");
        }
        Midway::RestartPostgres => assert!(
            refreshed_after_restart.unwrap_or(0) >= 2,
            "refreshing resumed after the restart: {figures}"
        ),
    }
    for grant in &grants {
        assert!(
            !tokens.is_refresh_token_valid(&grant.refresh_token),
            "rotated"
        );
    }
    drop(seed);
    drop(provider);
    drop(tokens);
    drop(rt);
    drop(cluster);
}
