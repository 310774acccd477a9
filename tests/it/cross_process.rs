//! Two processes, each with its own pool (and its own in-process single flight), share one
//! `FileStore` directory and one strict token server (rotation and reuse detection), and hit an
//! expired credential at the same moment: exactly one token-endpoint refresh, zero invalid_grant,
//! and both end up using the same new token. The store's cross-process refresh lock
//! (`FileRefreshLock`, used by the pool through `CredentialStore::refresh_lock`) is what makes the
//! second process wait, re-read the store, and skip its own refresh. (The token has expired: a
//! process whose token still works does not wait for another's refresh, it serves its token.)
//!
//! The test binary re-executes itself (`--exact cross_process::child_pool --ignored`) for the
//! children, which talk to the parent through stdin and prefixed stdout lines.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use oauth_manager::store::{CredentialStore, FileStore};
use oauth_manager::{ExposeSecret, OAuthKeyManager, SystemClock};
use oauth_testkit::provider::{ChatClient, ChatError, FakeProvider};
use oauth_testkit::token_server::{Fault, FaultTarget, TokenServer};
use serde_json::json;

use crate::support::{PROVIDER, credential, refresher, report};

const DIR_VAR: &str = "OAUTH_XPROC_STORE_DIR";
const TOKEN_URL_VAR: &str = "OAUTH_XPROC_TOKEN_URL";
const PROVIDER_URL_VAR: &str = "OAUTH_XPROC_PROVIDER_URL";
const LINE_PREFIX: &str = "XPROC:";
const CHILD: &str = "cross_process::child_pool";
const ID: &str = "shared";

/// A stable fingerprint of a token, so processes can compare tokens without printing them.
fn fingerprint(token: &str) -> String {
    let mut h = DefaultHasher::new();
    token.hash(&mut h);
    format!("{:016x}", h.finish())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn tell_parent(msg: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{LINE_PREFIX}{msg}").expect("stdout");
    out.flush().expect("flush");
}

/// The child: builds its own pool over the shared store, says `ready`, waits for `go`, makes one
/// request through the pool, and reports the fingerprint of the token that served it.
#[test]
#[ignore = "a child process of two_processes_refresh_an_expiring_credential_exactly_once"]
fn child_pool() {
    let (Some(dir), Ok(token_url), Ok(provider_url)) = (
        std::env::var_os(DIR_VAR),
        std::env::var(TOKEN_URL_VAR),
        std::env::var(PROVIDER_URL_VAR),
    ) else {
        return; // Run by hand with --ignored: nothing to do.
    };
    let rt = runtime();
    let pool = rt.block_on(async {
        let store: Arc<dyn CredentialStore> = Arc::new(FileStore::open(&dir).expect("store"));
        OAuthKeyManager::builder(PROVIDER)
            .store(store)
            .refresher(refresher(&token_url, Arc::new(SystemClock)))
            .build()
            .await
            .expect("pool builds from the shared store")
    });
    tell_parent("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("go");
    let client = ChatClient::new(provider_url);
    let served = rt
        .block_on(pool.execute_with_failover(|cred| {
            let client = client.clone();
            async move {
                let token = cred.access_token.expose_secret().to_owned();
                client.chat(&token, "hello from a child").await?;
                Ok::<_, ChatError>((fingerprint(&token), None))
            }
        }))
        .expect("served");
    let refreshed = pool.credential_metrics(ID).map_or(0, |m| m.refresh_count);
    tell_parent(&format!("token {} refreshed {refreshed}", served.value));
}

fn spawn_child(envs: &[(&str, String)]) -> (Child, mpsc::Receiver<String>) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        CHILD,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn child test process");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may have printed `test name ... ` on the same line first.
            if let Some(at) = line.find(LINE_PREFIX)
                && tx.send(line[at + LINE_PREFIX.len()..].to_owned()).is_err()
            {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn two_processes_refresh_an_expiring_credential_exactly_once() {
    let rt = runtime();
    let (tokens, provider) = rt.block_on(async {
        let tokens = Arc::new(TokenServer::start().await.expect("token server"));
        let provider = FakeProvider::start(Arc::clone(&tokens))
            .await
            .expect("provider");
        (tokens, provider)
    });
    // A slow token endpoint, so the second process surely arrives while the first refreshes.
    tokens.inject(FaultTarget::Any, Fault::Latency(Duration::from_millis(300)));
    let grant = tokens.issue_grant("client-shared");
    let now = Utc::now();
    let expiring = credential(ID, &grant, now).with_expires_at(now - TimeDelta::seconds(1));
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FileStore::open(dir.path()).expect("store");
    rt.block_on(store.save(PROVIDER, &expiring, None))
        .expect("seeded");

    let envs = [
        (DIR_VAR, dir.path().display().to_string()),
        (TOKEN_URL_VAR, tokens.url()),
        (PROVIDER_URL_VAR, provider.url()),
    ];
    let mut children: Vec<_> = (0..2).map(|_| spawn_child(&envs)).collect();
    let wait = Duration::from_secs(60);
    for (_, lines) in &children {
        assert_eq!(lines.recv_timeout(wait).expect("child ready"), "ready");
    }
    // Both at once.
    for (child, _) in &mut children {
        let stdin = child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("go");
        stdin.flush().expect("flush");
    }
    let mut used = Vec::new();
    let mut refreshed_by = Vec::new();
    for (mut child, lines) in children {
        let line = lines.recv_timeout(wait).expect("child result");
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("token"), "{line}");
        used.push(words.next().expect("fingerprint").to_owned());
        assert_eq!(words.next(), Some("refreshed"), "{line}");
        refreshed_by.push(words.next().expect("count").parse::<u64>().expect("number"));
        assert!(child.wait().expect("child exits").success());
    }

    let server = tokens.stats();
    assert_eq!(server.refreshes, 1, "exactly one token-endpoint refresh");
    assert_eq!(
        server.requests, 1,
        "the second process did not call the endpoint at all"
    );
    assert_eq!(
        (server.invalid_grants, server.reused_refresh_tokens),
        (0, 0)
    );
    refreshed_by.sort_unstable();
    assert_eq!(
        refreshed_by,
        [0, 1],
        "one process refreshed, the other adopted its result"
    );

    let stored = rt
        .block_on(store.load_all(PROVIDER))
        .expect("loads")
        .pop()
        .expect("stored");
    let new_access = stored.value.access_token.expose_secret();
    assert_ne!(
        new_access, grant.access_token,
        "the credential was refreshed"
    );
    assert!(tokens.is_access_token_valid(new_access));
    let new_refresh = stored.value.refresh_token.as_ref().expect("refresh token");
    assert!(tokens.is_refresh_token_valid(new_refresh.expose_secret()));
    assert!(
        !tokens.is_refresh_token_valid(&grant.refresh_token),
        "rotated"
    );
    let new_fp = fingerprint(new_access);
    assert_eq!(
        used,
        [new_fp.clone(), new_fp],
        "both use the same new token"
    );
    assert_eq!(provider.stats().ok, 2);

    report(
        module_path!(),
        json!({
            "processes": 2,
            "token_endpoint_calls": server.requests,
            "refreshes": server.refreshes,
            "invalid_grants": server.invalid_grants,
            "same_new_token": true,
        }),
    );
    drop(provider);
    drop(tokens);
    drop(rt);
}
