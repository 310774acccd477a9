//! What an AI provider's HTTP answer means for the credential that made the request.
//!
//! One classifier per provider, written from the providers' public API documentation (cited in
//! each module): OpenAI, Codex (ChatGPT-plan accounts), Anthropic, Gemini (Generative Language),
//! Gemini Code Assist, and Qwen. From an answer's status, headers and body it gives a
//! [`Classification`]: the [`FailureKind`](oauth_core::FailureKind) the pool acts on (cool down
//! for exactly the wait the provider named, refresh and retry, disable, fail over, or return at
//! once), the provider-neutral [`Cause`], and where the wait came from. It also reads token
//! [`Usage`] from every provider's answer shape, whole ([`usage_from_body`]) or streamed
//! ([`SseUsage`]).
//!
//! This crate depends on `oauth-core` only: a caller with their own retry loop uses it directly;
//! `oauth-http` plugs it into reqwest-middleware and tower over the pool.
//!
//! ```
//! use std::time::Duration;
//! use chrono::{TimeZone, Utc};
//! use http::{HeaderMap, HeaderValue, StatusCode};
//! use oauth_core::FailureKind;
//! use oauth_providers::{Cause, ClassifyResponse, Provider};
//!
//! let now = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap();
//! let mut headers = HeaderMap::new();
//! headers.insert("x-ratelimit-remaining-tokens", HeaderValue::from_static("0"));
//! headers.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("6m0s"));
//! let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
//!
//! let c = Provider::OpenAi
//!     .classify(StatusCode::TOO_MANY_REQUESTS, &headers, body, now)
//!     .expect("a 429 is a failure");
//! assert_eq!(c.kind, FailureKind::rate_limited(Some(Duration::from_secs(360))));
//! assert_eq!(c.cause, Cause::RateLimit);
//!
//! // A success is not classified; its usage is read instead.
//! assert!(Provider::OpenAi.classify(StatusCode::OK, &headers, b"{}", now).is_none());
//! let usage = Provider::Gemini
//!     .usage(br#"{"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":3,"totalTokenCount":10}}"#);
//! assert_eq!(usage.map(|u| u.tokens()), Some(10));
//! ```
//!
//! # Implementing [`ClassifyResponse`]
//! For a provider this crate does not know, implement [`ClassifyResponse::classify`] (return
//! `None` for a success; start from [`classify_status`] for the generic meaning of a status) and,
//! if its usage shape is not one of those [`usage_from_json`] reads, [`ClassifyResponse::usage`].
//! The adapters of `oauth-http` take any implementation as `Arc<dyn ClassifyResponse>`.
//!
//! # Provider overload
//! A provider that is overloaded for everyone (Anthropic 529, Gemini `MODEL_CAPACITY_EXHAUSTED`)
//! gets [`OVERLOADED`] (`FailureKind::Overloaded`): fail over without penalizing the account.

mod anthropic;
mod classification;
mod common;
mod gemini;
mod hints;
mod openai;
mod qwen;
mod usage;

use std::fmt;

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use oauth_core::Usage;

pub use classification::{Cause, Classification, Hint, OVERLOADED, QuotaPeriod, Unreadable};
pub use hints::{
    next_month_start_utc, next_pacific_midnight, parse_epoch_secs, parse_go_duration,
    parse_proto_duration, parse_rfc3339,
};
pub use usage::{SseUsage, usage_from_body, usage_from_json};

/// Says what a provider's HTTP answers mean.
pub trait ClassifyResponse: Send + Sync + fmt::Debug {
    /// What a failed answer means, from its status, headers and (whole) body; `None` for a
    /// success (2xx). `now` is the wall time the answer arrived, used to turn a reset instant
    /// into a wait. Never panics, whatever the input.
    fn classify(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Option<Classification>;

    /// The usage a successful whole answer reports.
    fn usage(&self, body: &[u8]) -> Option<Usage> {
        usage_from_body(body)
    }

    /// A reader for this provider's streamed (SSE) answers.
    fn stream_usage(&self) -> SseUsage {
        SseUsage::new(Provider::OpenAi)
    }
}

/// The meaning of a status alone, for a provider this crate does not know: 401 unauthorized,
/// 402/403 permanent, other 4xx request-scoped (408 and 409 transient), 429 rate-limited with
/// `Retry-After`, 529 overloaded, 5xx transient. `None` for a success.
pub fn classify_status(
    status: StatusCode,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Option<Classification> {
    if status.is_success() {
        return None;
    }
    let mut c = common::by_status(status);
    if matches!(c.kind, oauth_core::FailureKind::RateLimited { .. }) && c.cause != Cause::Overloaded
    {
        common::apply_retry_after(&mut c, headers, now);
    }
    Some(common::finish(c, headers, now))
}

/// The providers this crate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provider {
    /// The OpenAI platform API (Chat Completions, Responses).
    OpenAi,
    /// Codex on a ChatGPT plan (the Responses API behind ChatGPT sign-in).
    Codex,
    /// Anthropic's Messages API (API keys and Claude-plan OAuth).
    Anthropic,
    /// The Gemini API (`generativelanguage.googleapis.com`).
    Gemini,
    /// Gemini Code Assist (`cloudcode-pa.googleapis.com`, Gemini CLI's Google sign-in).
    CodeAssist,
    /// Qwen (DashScope / Model Studio, and Qwen OAuth's OpenAI-compatible endpoint).
    Qwen,
}

impl Provider {
    /// Every provider.
    pub const ALL: [Self; 6] = [
        Self::OpenAi,
        Self::Codex,
        Self::Anthropic,
        Self::Gemini,
        Self::CodeAssist,
        Self::Qwen,
    ];

    /// A short stable name: `openai`, `codex`, `anthropic`, `gemini`, `code-assist`, `qwen`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Codex => "codex",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::CodeAssist => "code-assist",
            Self::Qwen => "qwen",
        }
    }

    /// The provider a name stands for (its [`as_str`](Self::as_str), or a common alias such as
    /// `claude` or `gemini-cli`), ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "openai" => Some(Self::OpenAi),
            "codex" | "chatgpt" => Some(Self::Codex),
            "anthropic" | "claude" => Some(Self::Anthropic),
            "gemini" | "google" => Some(Self::Gemini),
            "code-assist" | "codeassist" | "gemini-cli" => Some(Self::CodeAssist),
            "qwen" | "dashscope" => Some(Self::Qwen),
            _ => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ClassifyResponse for Provider {
    fn classify(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Option<Classification> {
        if status.is_success() {
            return None;
        }
        Some(match self {
            Self::OpenAi => openai::classify(status, headers, body, now, false),
            Self::Codex => openai::classify(status, headers, body, now, true),
            Self::Anthropic => anthropic::classify(status, headers, body, now),
            Self::Gemini | Self::CodeAssist => gemini::classify(status, headers, body, now),
            Self::Qwen => qwen::classify(status, headers, body, now),
        })
    }

    fn stream_usage(&self) -> SseUsage {
        SseUsage::new(*self)
    }
}
