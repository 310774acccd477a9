//! The official CLIs' credential files as the pool's store (issue 17), end to end: an
//! `OAuthKeyManager` per provider over one `oauth_accounts::AccountDir`, refreshing with the
//! CLIs' presets pointed at oauth-testkit's strict token server (real HTTP on 127.0.0.1; a
//! consumed refresh token presented again is `invalid_grant` and revokes the whole grant).
//!
//! - A second process (this test binary re-executed, `--exact cli_accounts::cli_process
//!   --ignored`) plays the CLI: it refreshes the same files at random moments, following the
//!   protocol (refresh lock, re-read, adopt a changed refresh token, otherwise refresh and write
//!   back with compare-and-set), while the pools serve traffic against the fake provider and
//!   refresh (on use, ahead of expiry, and on demand). Real time with 3-second tokens: the pool
//!   and the CLI cannot share a `ManualClock` across processes.
//! - The watch: a file dropped in joins the pool, a changed file is adopted, a removed file
//!   leaves, each within a bounded wait, timed.
//! - No secret from these files, nor any token the server issued, in any `Debug` output, error,
//!   event, or export.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use oauth_accounts::{AccountDir, CliFile, Format, providers};
use oauth_manager::refresh::{HttpRefresher, RefreshStrategy, TokenEndpoint, presets};
use oauth_manager::store::CredentialStore;
use oauth_manager::{
    Credential, CredentialId, Event, ExposeSecret, MaintenanceConfig, OAuthKeyManager, RecvError,
    RefreshWindow, TokenSet,
};
use oauth_testkit::provider::{ChatClient, ChatError, FakeProvider};
use oauth_testkit::token_server::{TokenServer, TokenServerConfig};
use serde_json::json;
use tokio::sync::watch;

use crate::support::report;

const DIR_VAR: &str = "OAUTH_TESTS_CLI_DIR";
const URL_VAR: &str = "OAUTH_TESTS_CLI_TOKEN_URL";
const RUN_MS_VAR: &str = "OAUTH_TESTS_CLI_RUN_MS";
const SEED_VAR: &str = "OAUTH_TESTS_CLI_SEED";
const LINE_PREFIX: &str = "CLIACC:";
const CHILD: &str = "cli_accounts::cli_process";

/// Access-token lifetime at the token server (whole seconds: it sends `expires_in`).
const TTL: Duration = Duration::from_secs(3);
/// The pools' refresh buffer: a token is refreshed on use when it expires within this.
const BUFFER: Duration = Duration::from_millis(1500);
/// How long both sides run.
const RUN: Duration = Duration::from_secs(8);

/// Every secret planted in the files in these tests contains this marker.
const SECRET_MARKER: &str = "SECRETVALUE";

/// One CLI's file in the shared directory: its format, provider, the preset the pool refreshes
/// with, and the public client the CLI (and the preset) refreshes as.
#[derive(Clone, Copy)]
struct Cli {
    file: &'static str,
    format: Format,
    provider: &'static str,
    preset: fn() -> TokenEndpoint,
    client_id: &'static str,
    client_secret: Option<&'static str>,
}

const CLIS: [Cli; 3] = [
    Cli {
        file: "gemini-a.json",
        format: Format::GeminiCli,
        provider: providers::GEMINI,
        preset: presets::google_gemini,
        client_id: presets::GEMINI_CLI_CLIENT_ID,
        client_secret: Some(presets::GEMINI_CLI_CLIENT_SECRET),
    },
    Cli {
        file: "qwen-b.json",
        format: Format::QwenCode,
        provider: providers::QWEN,
        preset: presets::qwen,
        client_id: presets::QWEN_CODE_CLIENT_ID,
        client_secret: None,
    },
    Cli {
        file: "claude-c.json",
        format: Format::ClaudeCode,
        provider: providers::ANTHROPIC,
        preset: presets::anthropic_claude,
        client_id: presets::CLAUDE_CODE_CLIENT_ID,
        client_secret: None,
    },
];

impl Cli {
    fn stem(&self) -> &'static str {
        self.file.strip_suffix(".json").unwrap_or(self.file)
    }

    fn id(&self) -> CredentialId {
        CredentialId::new(self.stem()).expect("valid id")
    }

    /// The preset pointed at the test's token server.
    fn refresher(&self, url: &str) -> HttpRefresher {
        HttpRefresher::builder((self.preset)().with_url(url))
            .request_timeout(Duration::from_secs(5))
            .build()
            .expect("the preset builds")
    }

    /// Reads the file as its CLI's format.
    fn read(&self, path: &Path) -> Credential {
        let bytes = std::fs::read(path).expect("read the file");
        let account = self
            .format
            .read(path, &bytes, self.id(), Utc::now())
            .expect("still in its CLI's format");
        assert_eq!(account.provider, self.provider);
        account.credential
    }
}

fn rt_of(c: &Credential) -> String {
    c.refresh_token
        .as_ref()
        .map(|t| t.expose_secret().to_owned())
        .unwrap_or_default()
}

/// The refresh strategy for 3-second tokens (the default 5-minute buffer would refresh on every
/// call): refresh within 1.5 s of expiry, not again within 0.5 s.
fn strategy() -> RefreshStrategy {
    RefreshStrategy {
        buffer_time: BUFFER,
        window: RefreshWindow::new(
            BUFFER,
            0.5,
            Duration::from_millis(200),
            Duration::from_millis(500),
        )
        .expect("valid window"),
        ..RefreshStrategy::default()
    }
}

/// Writes one file per CLI holding a fresh grant of the CLI's client (Gemini's confidential, with
/// its installed-app secret; the others public).
fn seed_files(dir: &Path, server: &TokenServer) -> Vec<PathBuf> {
    CLIS.iter()
        .map(|cli| {
            if let Some(secret) = cli.client_secret {
                server.register_client(cli.client_id, secret);
            }
            let grant = server.issue_grant(cli.client_id);
            let now = Utc::now();
            let mut cred = Credential::new(cli.stem(), grant.access_token.clone(), now)
                .expect("credential")
                .with_refresh_token(grant.refresh_token.clone())
                .with_expires_at(now + TimeDelta::from_std(TTL).expect("small"));
            cred.metadata.resource_url = Some("portal.qwen.ai".into());
            cred.scopes = vec!["https://www.googleapis.com/auth/cloud-platform".into()];
            let path = dir.join(cli.file);
            let bytes = cli
                .format
                .write(&path, None, cli.provider, &cred)
                .expect("seed");
            std::fs::write(&path, bytes).expect("write the seed");
            path
        })
        .collect()
}

/// A small PRNG (xorshift64*), seeded per run and printed for reproduction.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn from_time() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos());
        #[allow(clippy::cast_possible_truncation)] // any non-zero seed will do
        Self::new((nanos as u64) ^ u64::from(std::process::id()))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }

    fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).unwrap_or(0)
    }

    fn pause(&mut self, max_ms: u64) -> Duration {
        Duration::from_micros(self.below(max_ms * 1000))
    }
}

// ---- the CLI process ----

/// What the CLI process did.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    rounds: u64,
    refreshed: u64,
    adopted: u64,
    conflicts: u64,
    invalid_grants: u64,
}

impl Tally {
    fn line(&self) -> String {
        format!(
            "rounds={} refreshed={} adopted={} conflicts={} invalid_grants={}",
            self.rounds, self.refreshed, self.adopted, self.conflicts, self.invalid_grants
        )
    }

    fn parse(line: &str) -> Self {
        let mut t = Self::default();
        for part in line.split_whitespace() {
            let (k, v) = part.split_once('=').expect("key=value");
            let v: u64 = v.parse().expect("number");
            match k {
                "rounds" => t.rounds = v,
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

/// The CLI's own refresh: one refresh-token grant as its client, form-encoded. `Err` holds the
/// OAuth error code.
async fn cli_refresh(
    http: &reqwest::Client,
    url: &str,
    cli: &Cli,
    refresh_token: &str,
) -> Result<TokenSet, String> {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", cli.client_id),
    ];
    if let Some(secret) = cli.client_secret {
        form.push(("client_secret", secret));
    }
    let resp = http
        .post(url)
        .form(&form)
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
    if let Some(rt) = text("refresh_token") {
        tokens = tokens.with_refresh_token(rt);
    }
    let secs = body
        .get("expires_in")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(3600);
    Ok(tokens.with_expires_at(Utc::now() + TimeDelta::seconds(secs)))
}

/// One round of the CLI on one file: the protocol every writer follows.
async fn cli_round(
    http: &reqwest::Client,
    url: &str,
    cli: &Cli,
    file: &CliFile,
    last_seen: &mut Option<String>,
    tally: &mut Tally,
) {
    tally.rounds += 1;
    let lock = file.refresh_lock().expect("a CLI file has a refresh lock");
    let _guard = lock
        .acquire(cli.provider, &cli.id(), Duration::from_secs(30))
        .await
        .expect("refresh lock");
    let current = file
        .load(cli.provider, &cli.id())
        .await
        .expect("re-read")
        .expect("the account is there");
    let file_rt = rt_of(&current.value);
    if last_seen.as_deref().is_some_and(|seen| seen != file_rt) {
        // The pool refreshed since this CLI last looked: adopt, do not refresh.
        tally.adopted += 1;
        *last_seen = Some(file_rt);
        return;
    }
    match cli_refresh(http, url, cli, &file_rt).await {
        Ok(tokens) => {
            let mut next = current.value.clone();
            next.apply_tokens(tokens, Utc::now());
            match file.save(cli.provider, &next, Some(current.version)).await {
                Ok(_) => {
                    tally.refreshed += 1;
                    *last_seen = Some(rt_of(&next));
                }
                Err(e) if e.is_conflict() => tally.conflicts += 1,
                Err(e) => panic!("the CLI's write-back failed: {e}"),
            }
        }
        Err(code) if code == "invalid_grant" => tally.invalid_grants += 1,
        Err(other) => panic!("the CLI's refresh failed: {other}"),
    }
}

/// The CLI process: opens each file as its CLI's own file and refreshes at random moments.
#[test]
#[ignore = "child process of the_pool_and_a_cli_process_share_the_files_without_reusing_a_refresh_token"]
fn cli_process() {
    let (Ok(dir), Ok(url), Ok(run_ms), Ok(seed)) = (
        std::env::var(DIR_VAR),
        std::env::var(URL_VAR),
        std::env::var(RUN_MS_VAR),
        std::env::var(SEED_VAR),
    ) else {
        return; // run by hand with --ignored: nothing to do
    };
    let run = Duration::from_millis(run_ms.parse().expect("run ms"));
    let mut rng = Rng::new(seed.parse().expect("seed"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tally = runtime.block_on(async {
        let files: Vec<CliFile> = CLIS
            .iter()
            .map(|cli| {
                CliFile::open(cli.format, Path::new(&dir).join(cli.file), cli.stem())
                    .expect("open the CLI's file")
            })
            .collect();
        let http = reqwest::Client::new();
        let mut last_seen = vec![None; CLIS.len()];
        let mut tally = Tally::default();
        let until = Instant::now() + run;
        while Instant::now() < until {
            let i = rng.index(CLIS.len());
            cli_round(
                &http,
                &url,
                &CLIS[i],
                &files[i],
                &mut last_seen[i],
                &mut tally,
            )
            .await;
            // A random moment before the next refresh (not waiting for anything).
            tokio::time::sleep(rng.pause(150)).await;
        }
        tally
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{LINE_PREFIX}{}", tally.line()).expect("stdout");
    out.flush().expect("flush");
}

fn spawn_cli(envs: &[(&str, String)]) -> (Child, mpsc::Receiver<String>) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        CHILD,
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
    let mut child = cmd.spawn().expect("spawn the CLI process");
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

// ---- the pool side ----

/// Every event a pool publishes, collected until `stop` (then drained), and how many were lost.
struct Events {
    seen: Arc<Mutex<Vec<Event>>>,
    lagged: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Events {
    fn collect(pool: &OAuthKeyManager, mut stop: watch::Receiver<bool>) -> Self {
        let mut rx = pool.subscribe();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let lagged = Arc::new(AtomicU64::new(0));
        let (s, l) = (Arc::clone(&seen), Arc::clone(&lagged));
        let task = tokio::spawn(async move {
            let push = |e: Event| s.lock().unwrap_or_else(PoisonError::into_inner).push(e);
            loop {
                tokio::select! {
                    biased;
                    r = rx.recv() => match r {
                        Ok(e) => push(e),
                        Err(RecvError::Lagged(n)) => { l.fetch_add(n, Ordering::Relaxed); }
                        Err(RecvError::Closed) => break,
                    },
                    _ = stop.changed() => {
                        while let Ok(e) = rx.try_recv() {
                            push(e);
                        }
                        break;
                    }
                }
            }
        });
        Self { seen, lagged, task }
    }

    async fn finish(self) -> (Vec<Event>, u64) {
        self.task.await.expect("collector");
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner));
        (seen, self.lagged.load(Ordering::Relaxed))
    }
}

fn count(events: &[Event], name: &str) -> u64 {
    events.iter().filter(|e| e.kind.name() == name).count() as u64
}

/// Fails when `text` holds a planted secret or any token the test server issued.
fn assert_no_secret(what: &str, text: &str, known: &[String]) {
    for needle in [SECRET_MARKER, "tk-at-", "tk-rt-"]
        .into_iter()
        .chain(known.iter().map(String::as_str))
    {
        assert!(
            !text.contains(needle),
            "{what} leaks a secret ({needle}): {text}"
        );
    }
}

/// What the pools' operations and errors printed, for the secret search.
#[derive(Default)]
struct Outputs(Mutex<Vec<String>>);

impl Outputs {
    fn push(&self, s: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(s);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one scenario, its checks and its figures
async fn the_pool_and_a_cli_process_share_the_files_without_reusing_a_refresh_token() {
    let server = Arc::new(
        TokenServer::start_with(TokenServerConfig {
            access_token_ttl: TTL,
            ..TokenServerConfig::default()
        })
        .await
        .expect("token server"),
    );
    let api = FakeProvider::start(Arc::clone(&server))
        .await
        .expect("fake provider");
    let chat = ChatClient::new(api.url()).with_timeout(Duration::from_secs(5));
    let dir = tempfile::tempdir().expect("dir");
    let paths = seed_files(dir.path(), &server);
    let store = AccountDir::open(dir.path()).expect("open the directory");
    let url = server.url();

    let mut pools = Vec::new();
    for cli in &CLIS {
        let pool = OAuthKeyManager::builder(cli.provider)
            .store(store.clone())
            .refresher(cli.refresher(&url))
            .refresh_strategy(strategy())
            .build()
            .await
            .expect("a pool over the directory");
        assert_eq!(pool.credential_ids(), [cli.id()]);
        pools.push(pool);
    }
    // The Gemini and Qwen pools follow the directory (change feed, ticks refreshing ahead); the
    // Claude pool has no maintenance loop: the re-read inside its refresh flight is all it has.
    let maintenance: Vec<_> = pools[..2]
        .iter()
        .map(|p| {
            p.spawn_maintenance(
                MaintenanceConfig::default()
                    .with_interval(Duration::from_millis(200))
                    .with_refresh_ahead(Duration::from_millis(500)),
            )
            .expect("maintenance starts")
        })
        .collect();
    let (stop_events, stopped) = watch::channel(false);
    let collectors: Vec<_> = pools
        .iter()
        .map(|p| Events::collect(p, stopped.clone()))
        .collect();

    let mut rng = Rng::from_time();
    let seed = rng.below(u64::MAX);
    let started = Instant::now();
    let (mut child, lines) = spawn_cli(&[
        (DIR_VAR, dir.path().display().to_string()),
        (URL_VAR, url.clone()),
        (RUN_MS_VAR, RUN.as_millis().to_string()),
        (SEED_VAR, seed.to_string()),
    ]);
    let until = tokio::time::Instant::now() + RUN;
    let outputs = Arc::new(Outputs::default());
    let (calls, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    // Traffic: two callers per pool, a call every few milliseconds.
    let mut tasks = Vec::new();
    for (p, pool) in pools.iter().enumerate() {
        for caller in 0..2u64 {
            let (pool, chat, outputs) = (pool.clone(), chat.clone(), Arc::clone(&outputs));
            let (calls, failed) = (Arc::clone(&calls), Arc::clone(&failed));
            let mut rng = Rng::new(seed ^ (p as u64 * 16 + caller + 1));
            tasks.push(tokio::spawn(async move {
                while tokio::time::Instant::now() < until {
                    let served = pool
                        .execute_with_failover(|cred| {
                            let chat = chat.clone();
                            async move {
                                let reply =
                                    chat.chat(cred.access_token.expose_secret(), "hi").await?;
                                Ok::<_, ChatError>((reply.content, Some(reply.usage)))
                            }
                        })
                        .await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = served {
                        failed.fetch_add(1, Ordering::Relaxed);
                        outputs.push(format!("{e} / {e:?}"));
                    }
                    tokio::time::sleep(rng.pause(20)).await;
                }
            }));
        }
    }
    // An operator asking the pools to refresh at random moments (forced: a refresh happens unless
    // the re-read finds the CLI's newer tokens, which it then refreshes from).
    let forced = Arc::new(AtomicU64::new(0));
    {
        let (pools, outputs, forced) = (pools.clone(), Arc::clone(&outputs), Arc::clone(&forced));
        let mut rng = Rng::new(seed ^ 0xa5a5);
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < until {
                let i = rng.index(pools.len());
                match pools[i].refresh_now(CLIS[i].stem()).await {
                    Ok(c) => outputs.push(format!("{c:?}")),
                    Err(e) => outputs.push(format!("refresh_now failed: {e} / {e:?}")),
                }
                forced.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(rng.pause(300)).await;
            }
        }));
    }
    // The checker: whenever nobody is refreshing an account (its refresh lock held here), its
    // file holds a refresh token the server would accept now: the newest grant.
    let (checks, stale) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    {
        let (store, server, paths) = (store.clone(), Arc::clone(&server), paths.clone());
        let (checks, stale) = (Arc::clone(&checks), Arc::clone(&stale));
        let mut rng = Rng::new(seed ^ 0x5a5a);
        tasks.push(tokio::spawn(async move {
            let lock = store
                .refresh_lock()
                .expect("the directory has a refresh lock");
            while tokio::time::Instant::now() < until {
                let i = rng.index(CLIS.len());
                let cli = &CLIS[i];
                let guard = lock
                    .acquire(cli.provider, &cli.id(), Duration::from_secs(30))
                    .await
                    .expect("refresh lock");
                let in_file = cli.read(&paths[i]);
                if !server.is_refresh_token_valid(&rt_of(&in_file)) {
                    stale.fetch_add(1, Ordering::Relaxed);
                }
                checks.fetch_add(1, Ordering::Relaxed);
                drop(guard);
                tokio::time::sleep(rng.pause(40)).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let (line, status) = tokio::task::spawn_blocking(move || {
        let line = lines.recv_timeout(Duration::from_secs(60));
        (line, child.wait().expect("wait for the CLI process"))
    })
    .await
    .expect("join");
    assert!(status.success(), "the CLI process failed: {status}");
    let cli = Tally::parse(&line.expect("the CLI process reports"));
    let elapsed = started.elapsed();

    // After the CLI's last write: each pool, asked to refresh, re-reads the file, refreshes from
    // its newest grant, and the file and the pool hold the same, valid tokens.
    let mut known = Vec::new();
    for ((pool, cli), path) in pools.iter().zip(&CLIS).zip(&paths) {
        let refreshed = pool.refresh_now(cli.stem()).await.expect("final refresh");
        let in_file = cli.read(path);
        assert_eq!(
            rt_of(&in_file),
            rt_of(&refreshed),
            "{}: the file holds the pool's newest refresh token",
            cli.file
        );
        assert!(
            server.is_refresh_token_valid(&rt_of(&in_file)),
            "{}",
            cli.file
        );
        assert!(
            server.is_access_token_valid(in_file.access_token.expose_secret()),
            "{}",
            cli.file
        );
        known.push(rt_of(&in_file));
        known.push(in_file.access_token.expose_secret().to_owned());
    }

    for m in maintenance {
        m.stop().await;
    }
    stop_events.send(true).expect("collectors listen");
    let mut per_pool = Vec::new();
    for (c, cli) in collectors.into_iter().zip(&CLIS) {
        let (events, lagged) = c.finish().await;
        for e in &events {
            let text = format!("{e:?} {}", serde_json::to_string(e).expect("event json"));
            assert_no_secret("an event", &text, &known);
        }
        per_pool.push((cli.provider, events, lagged));
    }
    for pool in &pools {
        assert_no_secret("the pool's Debug", &format!("{pool:?}"), &known);
        assert_no_secret("export_json", &pool.export_json().expect("export"), &known);
        assert_no_secret(
            "health_summary",
            &format!("{:?}", pool.health_summary()),
            &known,
        );
    }
    for text in outputs.take() {
        assert_no_secret("an operation's output", &text, &known);
    }
    assert_no_secret("the store's Debug", &format!("{store:?}"), &known);

    let stats = server.stats();
    let refreshed: Vec<u64> = per_pool
        .iter()
        .map(|(_, e, _)| count(e, "refreshed"))
        .collect();
    let adopted: Vec<u64> = per_pool
        .iter()
        .map(|(_, e, _)| count(e, "externally_updated"))
        .collect();
    let lost: u64 = per_pool.iter().map(|(_, _, l)| l).sum();
    let pool_refreshes: u64 = refreshed.iter().sum();
    let (calls, failed) = (
        calls.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let (checks, stale) = (
        checks.load(Ordering::Relaxed),
        stale.load(Ordering::Relaxed),
    );
    let figures = json!({
        "seed": seed,
        "seconds": elapsed.as_secs_f64(),
        "files": CLIS.len(),
        "token_ttl_s": TTL.as_secs(),
        "cli_rounds": cli.rounds,
        "cli_refreshes": cli.refreshed,
        "cli_adoptions": cli.adopted,
        "cli_conflicts": cli.conflicts,
        "pool_refreshes": refreshed,
        "pool_adoptions": adopted,
        "pool_forced_refresh_calls": forced.load(Ordering::Relaxed),
        "calls": calls,
        "calls_failed": failed,
        "provider_ok": api.stats().ok,
        "server_refreshes": stats.refreshes,
        "invalid_grants": stats.invalid_grants,
        "reused_refresh_tokens": stats.reused_refresh_tokens,
        "families_revoked": stats.families_revoked,
        "file_checks": checks,
        "stale_files": stale,
        "events_lost": lost,
    });
    report(module_path!(), figures.clone());

    assert_eq!(stats.invalid_grants, 0, "{figures}");
    assert_eq!(stats.reused_refresh_tokens, 0, "{figures}");
    assert_eq!(stats.families_revoked, 0, "{figures}");
    assert_eq!(cli.invalid_grants, 0, "{figures}");
    assert_eq!(
        cli.conflicts, 0,
        "the refresh lock serialises the writers: {figures}"
    );
    assert_eq!(stale, 0, "every file held the newest grant: {figures}");
    assert!(checks > 20, "{figures}");
    assert_eq!(failed, 0, "every call was served: {figures}");
    assert!(calls > 100, "{figures}");
    for (provider, events, _) in &per_pool {
        for bad in [
            "needs_reauthorization",
            "refresh_failed",
            "persistence_failed",
        ] {
            assert_eq!(count(events, bad), 0, "{provider}: {bad}: {figures}");
        }
    }
    if lost == 0 {
        assert_eq!(
            stats.refreshes,
            cli.refreshed + pool_refreshes,
            "every refresh the server saw is one side's: {figures}"
        );
    }
    assert!(cli.refreshed > 10 && cli.adopted > 0, "{figures}");
    assert!(
        refreshed.iter().all(|n| *n > 0),
        "every pool refreshed: {figures}"
    );
    assert!(
        adopted.iter().all(|n| *n > 0),
        "every pool adopted the CLI's tokens (the Claude pool only inside its flights): {figures}"
    );
}

// ---- the watch ----

/// Replaces a file the way the CLIs do (a temporary file renamed over it).
fn replace_like_cli(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("cli-tmp");
    std::fs::write(&tmp, bytes).expect("write the temporary file");
    std::fs::rename(&tmp, path).expect("rename");
}

fn qwen_file(access: &str, refresh: &str, resource_url: &str) -> String {
    let ms = (Utc::now() + TimeDelta::hours(1)).timestamp_millis();
    json!({
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "resource_url": resource_url,
        "expiry_date": ms,
    })
    .to_string()
}

/// Polls `check` every millisecond (real time: the file system and the watcher work meanwhile)
/// until it holds or `limit` passes; how long it took.
async fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if check() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_follows_files_added_changed_and_removed_in_the_directory() {
    const LIMIT: Duration = Duration::from_secs(5);
    let dir = tempfile::tempdir().expect("dir");
    let first = dir.path().join("qwen-first.json");
    std::fs::write(
        &first,
        qwen_file(
            &format!("at-first-{SECRET_MARKER}"),
            &format!("rt-first-{SECRET_MARKER}"),
            "portal.qwen.ai",
        ),
    )
    .expect("seed");
    let store = AccountDir::open(dir.path()).expect("open");
    let pool = OAuthKeyManager::builder(providers::QWEN)
        .store(store.clone())
        .build()
        .await
        .expect("pool");
    // A long tick: what follows the directory here is the change feed, not a periodic reload.
    let maintenance = pool
        .spawn_maintenance(MaintenanceConfig::default().with_interval(Duration::from_secs(3600)))
        .expect("maintenance");
    let (stop_events, stopped) = watch::channel(false);
    let events = Events::collect(&pool, stopped);
    let id = |s: &str| CredentialId::new(s).expect("id");
    assert_eq!(pool.credential_ids(), [id("qwen-first")]);

    // Dropped in.
    let added = dir.path().join("qwen-added.json");
    replace_like_cli(
        &added,
        qwen_file(
            &format!("at-added-1-{SECRET_MARKER}"),
            &format!("rt-added-1-{SECRET_MARKER}"),
            "portal.qwen.ai",
        )
        .as_bytes(),
    );
    let join = wait_for(LIMIT, || pool.credential_ids().contains(&id("qwen-added")))
        .await
        .expect("a file dropped in joins the pool");
    let c = pool.credential("qwen-added").expect("joined");
    assert_eq!(
        c.access_token.expose_secret(),
        format!("at-added-1-{SECRET_MARKER}")
    );
    assert_eq!(c.metadata.resource_url.as_deref(), Some("portal.qwen.ai"));

    // Changed (the CLI refreshed it and the account moved to another API host).
    replace_like_cli(
        &added,
        qwen_file(
            &format!("at-added-2-{SECRET_MARKER}"),
            &format!("rt-added-2-{SECRET_MARKER}"),
            "dashscope.aliyuncs.com",
        )
        .as_bytes(),
    );
    let change = wait_for(LIMIT, || {
        pool.credential("qwen-added").is_some_and(|c| {
            c.access_token.expose_secret() == format!("at-added-2-{SECRET_MARKER}")
        })
    })
    .await
    .expect("a changed file is adopted");
    let c = pool.credential("qwen-added").expect("still there");
    assert_eq!(rt_of(&c), format!("rt-added-2-{SECRET_MARKER}"));
    assert_eq!(
        c.metadata.resource_url.as_deref(),
        Some("dashscope.aliyuncs.com"),
        "the metadata follows the file"
    );

    // Edited in place (an editor, not a rename).
    std::fs::write(
        &added,
        qwen_file(
            &format!("at-added-3-{SECRET_MARKER}"),
            &format!("rt-added-3-{SECRET_MARKER}"),
            "dashscope.aliyuncs.com",
        ),
    )
    .expect("edit in place");
    let in_place = wait_for(LIMIT, || {
        pool.credential("qwen-added").is_some_and(|c| {
            c.access_token.expose_secret() == format!("at-added-3-{SECRET_MARKER}")
        })
    })
    .await
    .expect("an in-place edit is adopted");

    // Removed.
    std::fs::remove_file(&added).expect("remove");
    let leave = wait_for(LIMIT, || !pool.credential_ids().contains(&id("qwen-added")))
        .await
        .expect("a removed file leaves the pool");
    assert!(pool.credential("qwen-added").is_none());
    assert_eq!(pool.credential_ids(), [id("qwen-first")]);

    // Dropped in again under the same name: it joins again, with the new file's tokens.
    replace_like_cli(
        &added,
        qwen_file(
            &format!("at-added-4-{SECRET_MARKER}"),
            &format!("rt-added-4-{SECRET_MARKER}"),
            "portal.qwen.ai",
        )
        .as_bytes(),
    );
    let rejoin = wait_for(LIMIT, || {
        pool.credential("qwen-added").is_some_and(|c| {
            c.access_token.expose_secret() == format!("at-added-4-{SECRET_MARKER}")
        })
    })
    .await
    .expect("a file dropped in again joins again");

    // Traffic reaches the joined account: selection sees it.
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let served = pool
            .execute_with_failover(|cred| async move {
                Ok::<_, std::io::Error>((cred.id.clone(), None))
            })
            .await
            .expect("served");
        served_by.insert(served.value);
    }
    assert!(served_by.contains(&id("qwen-added")), "{served_by:?}");

    // The last file removed: reported, not asserted (see the report).
    std::fs::remove_file(&first).expect("remove");
    std::fs::remove_file(&added).expect("remove");
    let last_leaves = wait_for(Duration::from_secs(1), || pool.credential_ids().is_empty())
        .await
        .map(ms);
    let left_after_removing_all: Vec<String> = pool
        .credential_ids()
        .iter()
        .map(ToString::to_string)
        .collect();

    maintenance.stop().await;
    stop_events.send(true).expect("collector listens");
    let (seen, _) = events.finish().await;
    for e in &seen {
        let text = format!("{e:?} {}", serde_json::to_string(e).expect("event json"));
        assert_no_secret("an event", &text, &[]);
    }
    assert_no_secret("the pool's Debug", &format!("{pool:?}"), &[]);
    assert_no_secret("export_json", &pool.export_json().expect("export"), &[]);

    // The module's result row is the concurrent test's; these figures go to stderr.
    eprintln!(
        "[cli_accounts watch] {}",
        json!({
            "watch_join_ms": ms(join),
            "watch_change_ms": ms(change),
            "watch_in_place_edit_ms": ms(in_place),
            "watch_leave_ms": ms(leave),
            "watch_rejoin_ms": ms(rejoin),
            "externally_updated_events": count(&seen, "externally_updated"),
            "last_file_removed_left_ms": last_leaves,
            "left_after_removing_every_file": left_after_removing_all,
        })
    );
}

// ---- secrets ----

/// An unsigned JWT with these claims; its signature part carries the secret marker.
fn jwt(claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.sig-{SECRET_MARKER}",
        enc.encode(br#"{"alg":"RS256"}"#),
        enc.encode(claims.to_string())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // every output, searched
async fn no_secret_from_the_files_in_any_debug_error_event_or_export() {
    let server = Arc::new(TokenServer::start().await.expect("token server"));
    let dir = tempfile::tempdir().expect("dir");
    // A live Codex account (id token, account id) and a dead one; a live Qwen account and a
    // malformed file.
    let codex = server.issue_grant(presets::CODEX_CLI_CLIENT_ID);
    let qwen = server.issue_grant(presets::QWEN_CODE_CLIENT_ID);
    let id_token = jwt(&json!({
        "email": "coder@example.com",
        "https://api.openai.com/auth": {"chatgpt_plan_type": "pro", "chatgpt_account_id": "acct-1"},
    }));
    let codex_file = |access: &str, refresh: &str| {
        json!({
            "OPENAI_API_KEY": format!("sk-{SECRET_MARKER}"),
            "tokens": {
                "id_token": id_token,
                "access_token": access,
                "refresh_token": refresh,
                "account_id": "acct-1",
            },
            "last_refresh": "2026-01-01T00:00:00Z",
        })
        .to_string()
    };
    std::fs::write(
        dir.path().join("codex-live.json"),
        codex_file(&codex.access_token, &codex.refresh_token),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("codex-dead.json"),
        codex_file(
            &format!("at-dead-{SECRET_MARKER}"),
            &format!("rt-dead-{SECRET_MARKER}"),
        ),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("qwen-live.json"),
        qwen_file(&qwen.access_token, &qwen.refresh_token, "portal.qwen.ai"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("qwen-broken.json"),
        format!(r#"{{"access_token": "at-{SECRET_MARKER}", "refresh_token": "#),
    )
    .expect("write");

    let store = AccountDir::open(dir.path()).expect("open");
    let api = FakeProvider::start(Arc::clone(&server))
        .await
        .expect("fake provider");
    let chat = ChatClient::new(api.url()).with_timeout(Duration::from_secs(5));
    let mut texts = vec![
        format!("{store:?}"),
        format!("{:?}", store.problems()),
        store
            .problems()
            .iter()
            .map(|p| format!("{} {}", p.path.display(), p.detail))
            .collect(),
    ];
    let mut seen_tokens = vec![
        codex.access_token.clone(),
        codex.refresh_token.clone(),
        qwen.access_token.clone(),
        qwen.refresh_token.clone(),
        presets::GEMINI_CLI_CLIENT_SECRET.to_owned(),
    ];
    let (stop_events, stopped) = watch::channel(false);
    let mut collectors = Vec::new();
    let mut pools = Vec::new();
    for (provider, preset) in [
        (
            providers::OPENAI,
            presets::openai_codex as fn() -> TokenEndpoint,
        ),
        (providers::QWEN, presets::qwen),
    ] {
        let refresher = HttpRefresher::builder(preset().with_url(server.url()))
            .build()
            .expect("refresher");
        texts.push(format!("{refresher:?}"));
        let pool = OAuthKeyManager::builder(provider)
            .store(store.clone())
            .refresher(refresher)
            .build()
            .await
            .expect("pool");
        collectors.push(Events::collect(&pool, stopped.clone()));
        pools.push(pool);
    }
    let (codex_pool, qwen_pool) = (&pools[0], &pools[1]);
    assert_eq!(
        codex_pool.credential_ids(),
        [
            CredentialId::new("codex-dead").expect("id"),
            CredentialId::new("codex-live").expect("id")
        ]
    );
    let live = codex_pool.credential("codex-live").expect("live");
    assert_eq!(live.metadata.account_id.as_deref(), Some("acct-1"));
    assert!(live.metadata.id_token.is_some());
    texts.push(format!("{live:?}"));
    texts.push(format!("{:?}", live.metadata));

    // Refreshes: one good, one dead grant (invalid_grant, an error and events).
    for pool in &pools {
        for id in pool.credential_ids() {
            match pool.refresh_now(id.as_str()).await {
                Ok(c) => {
                    seen_tokens.push(c.access_token.expose_secret().to_owned());
                    seen_tokens.push(rt_of(&c));
                    texts.push(format!("{c:?}"));
                }
                Err(e) => texts.push(format!("{e} / {e:?} / {:?}", std::error::Error::source(&e))),
            }
        }
    }
    assert!(
        codex_pool.refresh_now("codex-dead").await.is_err(),
        "the dead grant fails"
    );
    // Traffic, including a call whose operation fails with an unauthorized answer.
    for pool in &pools {
        for _ in 0..4 {
            let r = pool
                .execute_with_failover(|cred| {
                    let chat = chat.clone();
                    async move {
                        let reply = chat.chat(cred.access_token.expose_secret(), "hi").await?;
                        Ok::<_, ChatError>((reply.content, Some(reply.usage)))
                    }
                })
                .await;
            texts.push(match r {
                Ok(s) => format!("{:?} {}", s.credential, s.value),
                Err(e) => format!("{e} / {e:?}"),
            });
        }
        texts.push(format!("{pool:?}"));
        texts.push(pool.export_json().expect("export"));
        texts.push(format!("{:?}", pool.health_summary()));
        texts.push(serde_json::to_string(&pool.health_summary()).expect("summary json"));
        texts.push(format!("{:?}", pool.export_prometheus()));
        texts.push(format!("{:?}", pool.all_metrics()));
        texts.push(format!("{:?}", pool.check_alerts()));
    }
    // The broken file is not in the pool (its format cannot be told) and is listed as a problem;
    // reading it as its CLI's format is a typed error naming the file.
    assert_eq!(
        qwen_pool.credential_ids(),
        [CredentialId::new("qwen-live").expect("id")]
    );
    assert_eq!(store.problems().len(), 1, "{:?}", store.problems());
    let broken_path = dir.path().join("qwen-broken.json");
    let broken = Format::QwenCode
        .read(
            &broken_path,
            &std::fs::read(&broken_path).expect("read"),
            CredentialId::new("qwen-broken").expect("id"),
            Utc::now(),
        )
        .expect_err("malformed");
    texts.push(format!("{broken} / {broken:?}"));

    stop_events.send(true).expect("collectors listen");
    let mut events = Vec::new();
    for c in collectors {
        events.extend(c.finish().await.0);
    }
    assert!(count(&events, "refreshed") >= 2, "{events:?}");
    assert!(count(&events, "needs_reauthorization") >= 1, "{events:?}");
    for e in &events {
        texts.push(format!("{e:?}"));
        texts.push(serde_json::to_string(e).expect("event json"));
    }
    // The tokens now in the files are secrets too.
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        let path = entry.expect("entry").path();
        if let Ok(v) =
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path).expect("read"))
        {
            for key in ["access_token", "refresh_token"] {
                for holder in [&v, &v["tokens"]] {
                    if let Some(s) = holder[key].as_str() {
                        seen_tokens.push(s.to_owned());
                    }
                }
            }
        }
    }
    seen_tokens.push(id_token.clone());
    for text in &texts {
        assert_no_secret("an output", text, &seen_tokens);
    }
    eprintln!(
        "[cli_accounts secrets] {}",
        json!({
            "outputs_searched": texts.len(),
            "secrets_searched": seen_tokens.len() + 3,
            "events": events.len(),
            "leaks": 0,
        })
    );
}
