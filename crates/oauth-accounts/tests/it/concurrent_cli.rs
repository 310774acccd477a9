//! A second process acting as the CLI refreshes the same account files against the strict token
//! server (real HTTP on 127.0.0.1; reuse of a consumed refresh token revokes the grant) at random
//! moments while this process refreshes them too. Both follow the protocol: take the refresh
//! lock, re-read the file, adopt a refresh token that changed instead of refreshing, otherwise
//! refresh and write back with compare-and-set.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use oauth_accounts::{AccountDir, CliFile, Format, providers};
use oauth_core::{Credential, CredentialId, ExposeSecret, TokenSet};
use oauth_store::CredentialStore;
use oauth_testkit::token_server::TokenServer;

use crate::support::{Rng, child_lines, spawn_child, tell_parent};

const DIR_VAR: &str = "OAUTH_ACCOUNTS_CLI_DIR";
const URL_VAR: &str = "OAUTH_ACCOUNTS_CLI_TOKEN_URL";
const ROUNDS_VAR: &str = "OAUTH_ACCOUNTS_CLI_ROUNDS";
const SEED_VAR: &str = "OAUTH_ACCOUNTS_CLI_SEED";
const CLIENT: &str = "cli";
const ROUNDS: u64 = 150;

/// The shared files: one per CLI format, named so the directory store files them under the ids
/// the CLI process uses.
const FILES: [(&str, Format, &str); 3] = [
    ("gemini-a.json", Format::GeminiCli, providers::GEMINI),
    ("qwen-b.json", Format::QwenCode, providers::QWEN),
    ("claude-c.json", Format::ClaudeCode, providers::ANTHROPIC),
];

fn stem(name: &str) -> &str {
    name.strip_suffix(".json").unwrap_or(name)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    refreshed: u64,
    adopted: u64,
    conflicts: u64,
    invalid_grants: u64,
    /// Rounds in which the file, read under the lock, did not hold a currently valid refresh
    /// token (only the parent can ask the server).
    stale_files: u64,
}

impl Tally {
    fn line(&self) -> String {
        format!(
            "refreshed={} adopted={} conflicts={} invalid_grants={}",
            self.refreshed, self.adopted, self.conflicts, self.invalid_grants
        )
    }

    fn parse(line: &str) -> Self {
        let mut t = Self::default();
        for part in line.split_whitespace() {
            let (k, v) = part.split_once('=').expect("key=value");
            let v: u64 = v.parse().expect("number");
            match k {
                "refreshed" => t.refreshed = v,
                "adopted" => t.adopted = v,
                "conflicts" => t.conflicts = v,
                "invalid_grants" => t.invalid_grants = v,
                other => panic!("unknown figure {other}"),
            }
        }
        t
    }
}

fn rt(c: &Credential) -> String {
    c.refresh_token
        .as_ref()
        .map(|t| t.expose_secret().to_owned())
        .unwrap_or_default()
}

/// One refresh-token grant over HTTP. `Err` holds the OAuth error code.
async fn refresh(
    http: &reqwest::Client,
    url: &str,
    refresh_token: &str,
) -> Result<TokenSet, String> {
    let resp = http
        .post(url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT),
        ])
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let ok = resp.status().is_success();
    let body: serde_json::Value = resp.json().await.map_err(|_| "body".to_owned())?;
    let text = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    if !ok {
        return Err(text("error").unwrap_or_else(|| "unknown".to_owned()));
    }
    let mut tokens = TokenSet::new(text("access_token").ok_or("no access token")?);
    if let Some(new_rt) = text("refresh_token") {
        tokens = tokens.with_refresh_token(new_rt);
    }
    let secs = body
        .get("expires_in")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(3600);
    tokens.expires_at = Some(Utc::now() + chrono::TimeDelta::seconds(secs));
    Ok(tokens)
}

/// One side of the race: its HTTP client, the token endpoint, and (parent only) the server to
/// check that a file holds the newest grant.
struct Side<'a> {
    http: reqwest::Client,
    url: &'a str,
    server: Option<&'a TokenServer>,
}

impl Side<'_> {
    /// One round of the protocol on one account. `last_seen` is the refresh token this side last
    /// saw for the account.
    async fn round(
        &self,
        store: &dyn CredentialStore,
        provider: &str,
        id: &CredentialId,
        last_seen: &mut Option<String>,
        tally: &mut Tally,
    ) {
        let lock = store.refresh_lock().expect("the store has a refresh lock");
        let _guard = lock
            .acquire(provider, id, Duration::from_secs(30))
            .await
            .expect("refresh lock");
        let current = store
            .load(provider, id)
            .await
            .expect("re-read")
            .expect("account present");
        let file_rt = rt(&current.value);
        if let Some(server) = self.server
            && !server.is_refresh_token_valid(&file_rt)
        {
            tally.stale_files += 1;
        }
        if last_seen.as_deref().is_some_and(|seen| seen != file_rt) {
            // The other side refreshed: adopt, do not refresh.
            tally.adopted += 1;
            *last_seen = Some(file_rt);
            return;
        }
        match refresh(&self.http, self.url, &file_rt).await {
            Ok(tokens) => {
                let mut next = current.value.clone();
                next.apply_tokens(tokens, Utc::now());
                match store.save(provider, &next, Some(current.version)).await {
                    Ok(_) => {
                        tally.refreshed += 1;
                        *last_seen = Some(rt(&next));
                    }
                    Err(e) if e.is_conflict() => tally.conflicts += 1,
                    Err(e) => panic!("write-back failed: {e}"),
                }
            }
            Err(code) if code == "invalid_grant" => tally.invalid_grants += 1,
            Err(other) => panic!("refresh failed: {other}"),
        }
    }

    /// `rounds` rounds on randomly chosen accounts, with random pauses between them.
    async fn run(
        &self,
        stores: &[(Box<dyn CredentialStore>, &str, CredentialId)],
        rounds: u64,
        rng: &mut Rng,
    ) -> Tally {
        let mut last_seen = vec![None; stores.len()];
        let mut tally = Tally::default();
        for _ in 0..rounds {
            let which = usize::try_from(rng.below(stores.len() as u64)).unwrap_or(0);
            let (store, provider, id) = &stores[which];
            self.round(
                store.as_ref(),
                provider,
                id,
                &mut last_seen[which],
                &mut tally,
            )
            .await;
            // A random moment before the next round (interleaving, not waiting for anything).
            tokio::time::sleep(Duration::from_micros(rng.below(3_000))).await;
        }
        tally
    }
}

fn seed_files(dir: &Path, server: &TokenServer) -> Vec<PathBuf> {
    FILES
        .iter()
        .map(|(name, format, provider)| {
            let grant = server.issue_grant(CLIENT);
            let path = dir.join(name);
            let mut cred = Credential::new(stem(name), grant.access_token.clone(), Utc::now())
                .expect("cred")
                .with_refresh_token(grant.refresh_token.clone())
                .with_expires_at(Utc::now() + chrono::TimeDelta::hours(1));
            cred.metadata.resource_url = Some("portal.qwen.ai".into());
            cred.scopes = vec!["https://www.googleapis.com/auth/cloud-platform".into()];
            let bytes = format.write(&path, None, provider, &cred).expect("seed");
            std::fs::write(&path, bytes).expect("write seed");
            path
        })
        .collect()
}

#[test]
fn a_cli_process_and_the_pool_refresh_the_same_files_without_reusing_a_token() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = TokenServer::start().await.expect("token server");
        let dir = tempfile::tempdir().expect("dir");
        let paths = seed_files(dir.path(), &server);
        let pool = AccountDir::open(dir.path()).expect("open");
        let stores: Vec<(Box<dyn CredentialStore>, &str, CredentialId)> = FILES
            .iter()
            .map(|(name, _, provider)| {
                let s: Box<dyn CredentialStore> = Box::new(pool.clone());
                (s, *provider, CredentialId::new(stem(name)).expect("id"))
            })
            .collect();
        let mut rng = Rng::from_time();
        let seed = rng.seed();

        let started = Instant::now();
        let mut child = spawn_child(
            "concurrent_cli::cli_process",
            &[
                (DIR_VAR, dir.path().display().to_string()),
                (URL_VAR, server.url()),
                (ROUNDS_VAR, ROUNDS.to_string()),
                (SEED_VAR, (seed ^ 0x9e37_79b9).to_string()),
            ],
        );
        let lines = child_lines(child.stdout.take().expect("stdout"));
        let url = server.url();
        let side = Side {
            http: reqwest::Client::new(),
            url: &url,
            server: Some(&server),
        };
        let ours = side.run(&stores, ROUNDS, &mut rng).await;
        let report = tokio::task::spawn_blocking(move || {
            let line = lines.recv_timeout(Duration::from_secs(120));
            let status = child.wait().expect("wait");
            (line, status)
        })
        .await
        .expect("join");
        let (line, status) = report;
        assert!(status.success(), "the CLI process failed: {status}");
        let theirs = Tally::parse(&line.expect("the CLI process reports"));
        let elapsed = started.elapsed();

        let stats = server.stats();
        eprintln!(
            "concurrent CLI (seed {seed}): {} files, {ROUNDS} rounds per process in {:.2} s; \
             pool {}; cli {}; server: {} refreshes, {} invalid_grant, {} reused refresh tokens, \
             {} families revoked",
            FILES.len(),
            elapsed.as_secs_f64(),
            ours.line(),
            theirs.line(),
            stats.refreshes,
            stats.invalid_grants,
            stats.reused_refresh_tokens,
            stats.families_revoked,
        );
        assert_eq!(stats.invalid_grants, 0);
        assert_eq!(stats.reused_refresh_tokens, 0);
        assert_eq!(stats.families_revoked, 0);
        assert_eq!(ours.invalid_grants + theirs.invalid_grants, 0);
        assert_eq!(
            ours.conflicts + theirs.conflicts,
            0,
            "the lock serialises the writers"
        );
        assert_eq!(
            ours.stale_files, 0,
            "every file held the newest grant when read"
        );
        assert_eq!(stats.refreshes, ours.refreshed + theirs.refreshed);
        assert!(
            ours.refreshed > 0 && theirs.refreshed > 0,
            "both sides refreshed"
        );
        assert!(
            ours.adopted > 0 && theirs.adopted > 0,
            "both sides adopted the other's tokens"
        );

        // Each file holds the newest grant: its tokens are the valid ones.
        for (path, (name, format, provider)) in paths.iter().zip(FILES) {
            let bytes = std::fs::read(path).expect("read");
            let account = format
                .read(
                    path,
                    &bytes,
                    CredentialId::new(stem(name)).expect("id"),
                    Utc::now(),
                )
                .expect("the file is still in its CLI's format");
            assert_eq!(account.provider, provider);
            let c = account.credential;
            assert!(
                server.is_refresh_token_valid(&rt(&c)),
                "{name}: newest refresh token"
            );
            assert!(
                server.is_access_token_valid(c.access_token.expose_secret()),
                "{name}: newest access token"
            );
        }
    });
}

/// The CLI process: opens each file as that CLI's own file and runs the protocol.
#[test]
#[ignore = "child process of the concurrent-CLI test"]
fn cli_process() {
    let (Ok(dir), Ok(url), Ok(rounds), Ok(seed)) = (
        std::env::var(DIR_VAR),
        std::env::var(URL_VAR),
        std::env::var(ROUNDS_VAR),
        std::env::var(SEED_VAR),
    ) else {
        return;
    };
    let rounds: u64 = rounds.parse().expect("rounds");
    let mut rng = Rng::new(seed.parse().expect("seed"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let stores: Vec<(Box<dyn CredentialStore>, &str, CredentialId)> = FILES
            .iter()
            .map(|(name, format, provider)| {
                let file = CliFile::open(*format, Path::new(&dir).join(name), stem(name))
                    .expect("open the CLI's file");
                let s: Box<dyn CredentialStore> = Box::new(file);
                (s, *provider, CredentialId::new(stem(name)).expect("id"))
            })
            .collect();
        let side = Side {
            http: reqwest::Client::new(),
            url: &url,
            server: None,
        };
        let tally = side.run(&stores, rounds, &mut rng).await;
        tell_parent(&tally.line());
    });
}
