//! Shared fixtures: the real servers, credentials seeded from real grants, the HTTP refresher, a
//! chat call through the pool, signed webhooks, and the per-scenario result rows.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oauth_core::ManualClock;
use oauth_manager::refresh::{HttpRefresher, Refresher, TokenEndpoint};
use oauth_manager::webhooks::{MonitoringConfig, RetrySchedule, WebhookEventType, WebhookSecret};
use oauth_manager::{
    Clock, Credential, ExecuteError, ExposeSecret, OAuthKeyManager, OAuthKeyManagerBuilder, Served,
};
use oauth_testkit::provider::{ChatClient, ChatError, FakeProvider};
use oauth_testkit::token_server::{IssuedGrant, TokenServer, TokenServerConfig};
use oauth_testkit::webhook_receiver::{VerifyFn, WebhookReceiver};
use serde_json::{Value, json};

/// The provider name every scenario's pool uses.
pub(crate) const PROVIDER: &str = "fake-ai";

/// Where `cargo xtask integration` wants the result rows (one JSON file per scenario).
pub(crate) const RESULTS_DIR_VAR: &str = "OAUTH_TESTS_RESULTS_DIR";

/// The test signing secret (Standard Webhooks form).
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
        .single()
        .expect("valid date")
}

pub(crate) fn now(clock: &ManualClock) -> DateTime<Utc> {
    Clock::now(clock)
}

/// The token server, the fake provider and a chat client, all on one manual clock.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) clock: ManualClock,
    pub(crate) tokens: Arc<TokenServer>,
    pub(crate) provider: FakeProvider,
    pub(crate) chat: ChatClient,
}

impl World {
    pub(crate) async fn start() -> Self {
        Self::start_with(TokenServerConfig::default()).await
    }

    /// Starts the servers; `config.clock` is replaced by the world's manual clock.
    pub(crate) async fn start_with(config: TokenServerConfig) -> Self {
        let clock = ManualClock::new(t0());
        let tokens = Arc::new(
            TokenServer::start_with(TokenServerConfig {
                clock: Arc::new(clock.clone()),
                ..config
            })
            .await
            .expect("token server starts"),
        );
        let provider = FakeProvider::start(Arc::clone(&tokens))
            .await
            .expect("provider starts");
        let chat = ChatClient::new(provider.url()).with_timeout(Duration::from_secs(5));
        Self {
            clock,
            tokens,
            provider,
            chat,
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        now(&self.clock)
    }

    /// A real grant for client `client-<id>` and the credential holding its tokens.
    pub(crate) fn grant(&self, id: &str) -> (Credential, IssuedGrant) {
        let grant = self.tokens.issue_grant(&format!("client-{id}"));
        (credential(id, &grant, self.now()), grant)
    }

    /// The HTTP refresher against the token server, reading expiry from the world's clock.
    pub(crate) fn refresher(&self) -> Arc<dyn Refresher> {
        refresher(&self.tokens.url(), Arc::new(self.clock.clone()))
    }

    /// A pool builder over `credentials` with the world's clock and the HTTP refresher.
    pub(crate) fn builder(&self, credentials: Vec<Credential>) -> OAuthKeyManagerBuilder {
        OAuthKeyManager::builder(PROVIDER)
            .credentials(credentials)
            .clock(Arc::new(self.clock.clone()))
            .refresher(self.refresher())
    }

    /// One chat request through the pool.
    pub(crate) async fn chat(
        &self,
        pool: &OAuthKeyManager,
        prompt: &str,
    ) -> Result<Served<String>, ExecuteError<ChatError>> {
        chat(pool, &self.chat, prompt).await
    }
}

/// The credential holding `grant`'s tokens, expiring when the server says.
pub(crate) fn credential(id: &str, grant: &IssuedGrant, now: DateTime<Utc>) -> Credential {
    Credential::new(id, grant.access_token.clone(), now)
        .expect("valid credential")
        .with_refresh_token(grant.refresh_token.clone())
        .with_client(grant.client_id.clone(), None)
        .with_expires_at(now + TimeDelta::from_std(grant.expires_in).expect("small ttl"))
}

pub(crate) fn refresher(url: &str, clock: Arc<dyn Clock>) -> Arc<dyn Refresher> {
    Arc::new(
        HttpRefresher::builder(TokenEndpoint::new(url))
            .clock(clock)
            .request_timeout(Duration::from_secs(5))
            .build()
            .expect("refresher builds"),
    )
}

/// One chat request through `pool` with `client`.
pub(crate) async fn chat(
    pool: &OAuthKeyManager,
    client: &ChatClient,
    prompt: &str,
) -> Result<Served<String>, ExecuteError<ChatError>> {
    pool.execute_with_failover(|cred| async move {
        let reply = client
            .chat(cred.access_token.expose_secret(), prompt)
            .await?;
        Ok((reply.content, Some(reply.usage)))
    })
    .await
}

pub(crate) fn signing_secret() -> WebhookSecret {
    WebhookSecret::new(SIGNING_SECRET).expect("valid secret")
}

/// A webhook receiver that accepts only deliveries signed with [`signing_secret`], checked with
/// `oauth_manager::webhooks::verify` against the system clock.
pub(crate) async fn signed_receiver() -> Arc<WebhookReceiver> {
    let secrets = vec![signing_secret()];
    let verify: VerifyFn = Arc::new(move |headers, body| {
        oauth_manager::webhooks::verify(
            &secrets,
            headers,
            body,
            Utc::now(),
            Duration::from_secs(300),
        )
        .map_err(|e| e.to_string())
    });
    Arc::new(
        WebhookReceiver::start(verify)
            .await
            .expect("receiver starts"),
    )
}

/// Monitoring that sends every event type, signed, to `url`, retrying quickly.
pub(crate) fn monitoring(url: String) -> MonitoringConfig {
    MonitoringConfig {
        webhook_url: Some(url),
        webhook_events: WebhookEventType::ALL.into_iter().collect(),
        signing_secrets: vec![signing_secret()],
        timeout: Duration::from_secs(2),
        retry: RetrySchedule {
            max_attempts: 4,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
            jitter: 0.2,
        },
        ..MonitoringConfig::default()
    }
}

/// Writes this scenario's result row for `cargo xtask integration` (when it asked for them):
/// `{"scenario": "<module>", "figures": {...}}`. `module` is the caller's `module_path!()`.
pub(crate) fn report(module: &str, figures: Value) {
    let scenario = module.rsplit("::").next().unwrap_or(module);
    eprintln!("[{scenario}] {figures}");
    let Some(dir) = std::env::var_os(RESULTS_DIR_VAR) else {
        return;
    };
    let row = json!({ "scenario": scenario, "figures": figures });
    let path = std::path::Path::new(&dir).join(format!("{scenario}.json"));
    std::fs::write(&path, row.to_string()).expect("result row written");
}

/// Polls `check` (real time, for network I/O to happen) until it holds or `limit` passes.
pub(crate) async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
