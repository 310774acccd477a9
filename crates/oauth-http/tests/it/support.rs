//! The servers, a pool of real grants with the HTTP refresher, and one case per provider.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oauth_core::{Clock, Credential, ManualClock};
use oauth_manager::refresh::{HttpRefresher, TokenEndpoint};
use oauth_manager::{OAuthKeyManager, OAuthKeyManagerBuilder};
use oauth_providers::Provider;
use oauth_testkit::provider::{Dialect, FakeProvider, ScriptedAnswer, dialect};
use oauth_testkit::token_server::{IssuedGrant, TokenServer, TokenServerConfig};
use serde_json::{Value, json};

/// 2026-01-15 12:00 UTC: 04:00 Pacific standard time, 20 hours before the Gemini daily reset.
pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The token server and the fake provider on one manual clock.
pub(crate) struct World {
    pub(crate) clock: ManualClock,
    pub(crate) tokens: Arc<TokenServer>,
    pub(crate) provider: FakeProvider,
}

impl World {
    pub(crate) async fn start(dialect: Dialect) -> Self {
        let clock = ManualClock::new(t0());
        let tokens = Arc::new(
            TokenServer::start_with(TokenServerConfig {
                clock: Arc::new(clock.clone()),
                ..TokenServerConfig::default()
            })
            .await
            .expect("token server starts"),
        );
        let provider = FakeProvider::start(Arc::clone(&tokens))
            .await
            .expect("provider starts");
        provider.set_dialect(dialect);
        Self {
            clock,
            tokens,
            provider,
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        Clock::now(&self.clock)
    }

    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(self.clock.clone())
    }

    /// A real grant and the credential `id` holding its tokens.
    pub(crate) fn grant(&self, id: &str) -> (Credential, IssuedGrant) {
        let grant = self.tokens.issue_grant(&format!("client-{id}"));
        let now = self.now();
        let credential = Credential::new(id, grant.access_token.clone(), now)
            .expect("valid credential")
            .with_refresh_token(grant.refresh_token.clone())
            .with_client(grant.client_id.clone(), None)
            .with_expires_at(now + TimeDelta::from_std(grant.expires_in).expect("small ttl"));
        (credential, grant)
    }

    /// A pool over `credentials` with the world's clock and the HTTP refresher against the
    /// token server. The health policy is the default one: its cooldown clamp (25 hours) lets a
    /// daily quota cool for up to a day.
    pub(crate) async fn pool(&self, name: &str, credentials: Vec<Credential>) -> OAuthKeyManager {
        self.builder(name, credentials)
            .build()
            .await
            .expect("pool builds")
    }

    /// The builder of [`pool`](Self::pool), for a test that adds to it (a metrics recorder).
    pub(crate) fn builder(
        &self,
        name: &str,
        credentials: Vec<Credential>,
    ) -> OAuthKeyManagerBuilder {
        let refresher = HttpRefresher::builder(TokenEndpoint::new(self.tokens.url()))
            .clock(self.clock())
            .request_timeout(Duration::from_secs(5))
            .build()
            .expect("refresher builds");
        OAuthKeyManager::builder(name)
            .credentials(credentials)
            .clock(self.clock())
            .refresher(Arc::new(refresher))
    }
}

/// One provider as the tests exercise it.
#[derive(Clone, Copy)]
pub(crate) struct Case {
    pub(crate) provider: Provider,
    pub(crate) dialect: Dialect,
    /// The provider's documented 429 with a reset hint, and the wait it names.
    pub(crate) rate_limit: fn(DateTime<Utc>) -> (ScriptedAnswer, Duration),
    /// The provider's overload answer.
    pub(crate) overloaded: fn() -> ScriptedAnswer,
    /// The request path.
    pub(crate) path: &'static str,
    /// The streaming request path.
    pub(crate) stream_path: &'static str,
}

fn bare_529() -> ScriptedAnswer {
    ScriptedAnswer::new(
        529,
        json!({"error": {"message": "overloaded", "type": "overloaded_error"}}),
    )
}

pub(crate) const CASES: [Case; 6] = [
    Case {
        provider: Provider::OpenAi,
        dialect: Dialect::OpenAi,
        rate_limit: |_| {
            (
                dialect::openai_rate_limit(Duration::from_secs(360)),
                Duration::from_secs(360),
            )
        },
        overloaded: bare_529,
        path: "/v1/chat/completions",
        stream_path: "/v1/chat/completions",
    },
    Case {
        provider: Provider::Codex,
        dialect: Dialect::Codex,
        rate_limit: |now| {
            (
                dialect::codex_usage_limit(Duration::from_secs(7260), now),
                Duration::from_secs(7260),
            )
        },
        overloaded: bare_529,
        path: "/backend-api/codex/responses",
        stream_path: "/backend-api/codex/responses",
    },
    Case {
        provider: Provider::Anthropic,
        dialect: Dialect::Anthropic,
        rate_limit: |now| {
            (
                dialect::anthropic_rate_limit(now + TimeDelta::seconds(40)),
                Duration::from_secs(40),
            )
        },
        overloaded: dialect::anthropic_overloaded,
        path: "/v1/messages",
        stream_path: "/v1/messages",
    },
    Case {
        provider: Provider::Gemini,
        dialect: Dialect::Gemini,
        rate_limit: |_| {
            (
                dialect::gemini_per_minute(Duration::from_secs(30)),
                Duration::from_secs(30),
            )
        },
        overloaded: dialect::gemini_overloaded,
        path: "/v1beta/models/gemini-2.5-flash:generateContent",
        stream_path: "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
    },
    Case {
        provider: Provider::CodeAssist,
        dialect: Dialect::CodeAssist,
        rate_limit: |_| {
            (
                dialect::gemini_per_minute(Duration::from_secs(25)),
                Duration::from_secs(25),
            )
        },
        overloaded: dialect::code_assist_capacity,
        path: "/v1internal:generateContent",
        stream_path: "/v1internal:streamGenerateContent?alt=sse",
    },
    Case {
        provider: Provider::Qwen,
        dialect: Dialect::Qwen,
        rate_limit: |_| {
            (
                dialect::qwen_throttling(Duration::from_secs(12)),
                Duration::from_secs(12),
            )
        },
        overloaded: bare_529,
        path: "/v1/chat/completions",
        stream_path: "/v1/chat/completions",
    },
];

/// The request body for `prompt` in `dialect`, streamed or not.
pub(crate) fn request_body(dialect: Dialect, prompt: &str, stream: bool) -> Value {
    let mut v = match dialect {
        Dialect::Codex => json!({"model": "gpt-5-codex", "input": prompt}),
        Dialect::Anthropic => json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
            "messages": [{"role": "user", "content": prompt}]}),
        Dialect::Gemini => json!({"contents": [{"role": "user", "parts": [{"text": prompt}]}]}),
        Dialect::CodeAssist => json!({"model": "gemini-2.5-pro", "project": "p",
            "request": {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}}),
        _ => json!({"model": "m", "messages": [{"role": "user", "content": prompt}]}),
    };
    if stream && !matches!(dialect, Dialect::Gemini | Dialect::CodeAssist) {
        v["stream"] = json!(true);
    }
    v
}
