//! A keeper over a temporary account directory and the strict token server.

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oauth_accounts::{AccountDir, providers};
use oauth_keeper::{Keeper, KeeperConfig, ProviderKind, ProviderOverrides, RunningKeeper};
use oauth_manager::refresh::presets::{GEMINI_CLI_CLIENT_ID, GEMINI_CLI_CLIENT_SECRET};
use oauth_manager::store::CredentialStore;
use oauth_manager::{Clock, Credential, ExposeSecret, SystemClock};
use oauth_testkit::token_server::{IssuedGrant, TokenServer, TokenServerConfig};

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub(crate) const TOKEN: &str = "keeper-test-bearer-0123456789abcdef";

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) tokens: Arc<TokenServer>,
    pub(crate) running: RunningKeeper,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) grants: Vec<IssuedGrant>,
    pub(crate) http: reqwest::Client,
    /// Every response body the tests read, for the secret search.
    pub(crate) bodies: Mutex<Vec<String>>,
}

pub(crate) struct Options {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) accounts: usize,
    pub(crate) ttl: Duration,
    pub(crate) tune: Box<dyn FnOnce(&mut KeeperConfig) + Send>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            accounts: 3,
            ttl: Duration::from_secs(3600),
            tune: Box::new(|_| {}),
        }
    }
}

pub(crate) fn accounts_dir(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("accounts")
}

pub(crate) fn write_token_file(dir: &tempfile::TempDir) -> std::io::Result<std::path::PathBuf> {
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{TOKEN}\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

pub(crate) fn base_config(
    dir: &tempfile::TempDir,
    tokens: &TokenServer,
) -> std::io::Result<KeeperConfig> {
    let mut config = KeeperConfig::new(accounts_dir(dir));
    config.listen = "127.0.0.1:0".parse().map_err(std::io::Error::other)?;
    config.token_file = Some(write_token_file(dir)?);
    let mut gemini = ProviderOverrides::default();
    gemini.token_url = Some(tokens.url());
    config.providers.insert(ProviderKind::Gemini, gemini);
    Ok(config)
}

/// Account `acct-NN`, seeded from a fresh grant, written by the directory store itself.
pub(crate) async fn seed(
    dir: &tempfile::TempDir,
    tokens: &TokenServer,
    n: usize,
) -> Result<Vec<IssuedGrant>, Box<dyn std::error::Error + Send + Sync>> {
    let store = AccountDir::open_unwatched(accounts_dir(dir))?;
    let now = chrono::Utc::now();
    let mut grants = Vec::new();
    for i in 0..n {
        let grant = tokens.issue_grant(GEMINI_CLI_CLIENT_ID);
        let expires = now + chrono::Duration::from_std(grant.expires_in)?;
        let credential = Credential::new(format!("acct-{i:02}"), grant.access_token.clone(), now)?
            .with_refresh_token(grant.refresh_token.clone())
            .with_client(GEMINI_CLI_CLIENT_ID, None)
            .with_expires_at(expires);
        store.save(providers::GEMINI, &credential, None).await?;
        grants.push(grant);
    }
    Ok(grants)
}

impl Fixture {
    pub(crate) async fn start(
        options: Options,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        capture_logs();
        let dir = tempfile::tempdir()?;
        let tokens = Arc::new(
            TokenServer::start_with(TokenServerConfig {
                access_token_ttl: options.ttl,
                clock: Arc::clone(&options.clock),
                ..TokenServerConfig::default()
            })
            .await?,
        );
        let grants = seed(&dir, &tokens, options.accounts).await?;
        let mut config = base_config(&dir, &tokens)?;
        (options.tune)(&mut config);
        let keeper = Keeper::builder(config)
            .clock(Arc::clone(&options.clock))
            .build()
            .await?;
        let running = keeper.serve().await?;
        Ok(Self {
            dir,
            tokens,
            running,
            clock: options.clock,
            grants,
            http: reqwest::Client::new(),
            bodies: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url())
    }

    /// Sends an authorized request and returns the status and body (recorded).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, String), reqwest::Error> {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        self.bodies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(text.clone());
        Ok((status, text))
    }

    pub(crate) async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<(u16, serde_json::Value), Box<dyn std::error::Error + Send + Sync>> {
        let (status, text) = self.call(method, path, None).await?;
        Ok((status, serde_json::from_str(&text)?))
    }

    pub(crate) async fn health_of(
        &self,
        id: &str,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let (_, h) = self.json(reqwest::Method::GET, "/health").await?;
        let accounts = h["accounts"].as_array().ok_or("no accounts")?;
        Ok(accounts
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
            .unwrap_or(serde_json::Value::Null))
    }

    pub(crate) async fn metrics(&self) -> Result<String, reqwest::Error> {
        self.call(reqwest::Method::GET, "/metrics", None)
            .await
            .map(|(_, t)| t)
    }

    /// Every secret the keeper has held: the seeded tokens, the pool's current tokens, the
    /// bearer token, the client secret.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut s = vec![TOKEN.to_owned(), GEMINI_CLI_CLIENT_SECRET.to_owned()];
        for g in &self.grants {
            s.push(g.access_token.clone());
            s.push(g.refresh_token.clone());
        }
        if let Some(pool) = self.running.keeper().pool(ProviderKind::Gemini) {
            for c in pool.credentials() {
                s.push(c.access_token.expose_secret().to_owned());
                if let Some(r) = &c.refresh_token {
                    s.push(r.expose_secret().to_owned());
                }
            }
        }
        s
    }

    /// Searches every response body read and every log line written so far.
    pub(crate) fn assert_no_secret_in_bodies(&self) {
        let bodies = self
            .bodies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(!bodies.is_empty());
        let logs = captured_logs();
        for secret in self.secrets() {
            for body in bodies.iter() {
                assert!(!body.contains(&secret), "a response body holds a secret");
            }
            assert!(!logs.contains(&secret), "a log line holds a secret");
        }
    }
}

/// The value of a metric line that starts with `prefix` (labels included).
pub(crate) fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary (all levels down to debug) goes to a buffer.
pub(crate) fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

pub(crate) fn captured_logs() -> String {
    String::from_utf8_lossy(
        &LOGS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned()
}
