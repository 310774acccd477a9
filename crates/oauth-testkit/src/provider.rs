//! A fake AI provider: a chat-completion shaped HTTP endpoint on 127.0.0.1 (random port) that
//! only serves access tokens the fake [`TokenServer`] issued and still considers valid.
//!
//! - `POST /v1/chat/completions` with `Authorization: Bearer <access token>` and an
//!   OpenAI-style body (`{"model": .., "messages": [{"role": "user", "content": ..}]}`) answers
//!   `200` with a completion and deterministic [`usage_for`] figures;
//! - a missing, unknown, expired or revoked token is answered `401`;
//! - faults are scriptable per account (token family): 429 with `Retry-After` or a reset hint in
//!   the body, 401, any 5xx, latency, or a request-scoped 400 ([`ProviderFault`]);
//! - [`FakeProvider::stats`] counts what it answered, per account too.
//! - it speaks each provider's dialect ([`Dialect`], set with [`FakeProvider::set_dialect`]):
//!   success bodies and their usage shapes, streamed (SSE) answers when the request asks for a
//!   stream (`"stream": true`, a `streamGenerateContent` path or `alt=sse`), and the providers'
//!   documented error answers ([`dialect`]'s constructors, scripted with
//!   [`ProviderFault::Answer`]); [`ProviderFault::StreamCut`] breaks a stream after its first
//!   event. Every POST path is served the same way, so clients can use the provider's own paths.
//!
//! [`ChatClient`] is the matching client: its [`ChatError`] implements
//! [`ClassifyFailure`], so it plugs straight into a pool's failover.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use oauth_core::{ClassifyFailure, FailureKind};
//! use oauth_testkit::provider::{ChatClient, FakeProvider, ProviderFault};
//! use oauth_testkit::token_server::TokenServer;
//!
//! let tokens = Arc::new(TokenServer::start().await?);
//! let grant = tokens.issue_grant("client");
//! let provider = FakeProvider::start(Arc::clone(&tokens)).await?;
//! let client = ChatClient::new(provider.url());
//!
//! let reply = client.chat(&grant.access_token, "hello there").await?;
//! assert_eq!(reply.usage, oauth_testkit::provider::usage_for("hello there"));
//!
//! provider.inject_times(grant.family, ProviderFault::Unauthorized, 1);
//! let err = client.chat(&grant.access_token, "again").await.unwrap_err();
//! assert_eq!(err.failure_kind(), FailureKind::Unauthorized);
//! assert!(!err.to_string().contains(&grant.access_token));
//! assert_eq!(provider.stats().ok, 1);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use oauth_core::{ClassifyFailure, FailureKind, Usage};
use serde_json::{Value, json};

use crate::serving::Serving;
use crate::token_server::{FamilyId, RAW_BODY_MARKER, TokenServer};

pub mod dialect;

pub use dialect::{Dialect, ScriptedAnswer};

/// The path the provider serves.
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// Completion tokens of every successful answer.
pub const COMPLETION_TOKENS: u64 = 16;

/// The usage the provider reports for a prompt: one prompt token per started group of four
/// bytes (at least one), and [`COMPLETION_TOKENS`] completion tokens.
pub fn usage_for(prompt: &str) -> Usage {
    let prompt_tokens = u64::try_from(prompt.len().div_ceil(4))
        .unwrap_or(u64::MAX)
        .max(1);
    Usage {
        prompt_tokens,
        completion_tokens: COMPLETION_TOKENS,
        total_tokens: prompt_tokens + COMPLETION_TOKENS,
    }
}

/// A scripted misbehaviour for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderFault {
    /// Answer `429`. `retry_after` goes in the `Retry-After` header (whole seconds, rounded up),
    /// or, with `reset_hint_in_body`, only in the JSON body as
    /// `{"error":{"type":"rate_limit","reset_seconds":N}}`.
    RateLimited {
        /// How long the client should wait, if the provider says.
        retry_after: Option<Duration>,
        /// Put the wait in the body instead of the header.
        reset_hint_in_body: bool,
    },
    /// Answer `401` although the token is valid (as after a server-side revocation).
    Unauthorized,
    /// Answer this status (500, 502, 503, ...) with an error body.
    ServerError(u16),
    /// Wait this long, then answer normally (or with the account's next fault).
    Slow(Duration),
    /// Answer a request-scoped `400` (the request is bad, not the credential).
    BadRequest,
    /// Answer exactly this (a provider's documented error answer: see [`dialect`]).
    Answer(ScriptedAnswer),
    /// Answer `200` with a stream (whatever the request asked) that breaks the connection after
    /// its first event.
    StreamCut,
}

/// What the provider has answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderStats {
    /// Requests received.
    pub requests: u64,
    /// `200` answers.
    pub ok: u64,
    /// `401` answers (invalid token or scripted).
    pub unauthorized: u64,
    /// `401` answers because the token was missing, unknown, expired or revoked.
    pub invalid_tokens: u64,
    /// `429` answers.
    pub rate_limited: u64,
    /// `5xx` answers.
    pub server_errors: u64,
    /// `400` answers (scripted, or an unreadable body).
    pub bad_requests: u64,
    /// Requests delayed by a [`ProviderFault::Slow`].
    pub slow: u64,
    /// Total tokens reported in `200` answers.
    pub tokens: u64,
    /// Streamed `200` answers (complete or cut).
    pub streams: u64,
    /// Streams broken after their first event ([`ProviderFault::StreamCut`]).
    pub cut_streams: u64,
    /// Values of the `chatgpt-account-id` header of served requests (Codex's account header).
    pub account_ids: Vec<String>,
    /// `200` answers per account.
    pub ok_by_account: HashMap<FamilyId, u64>,
}

impl ProviderStats {
    /// `200` answers for `account`.
    pub fn ok_for(&self, account: FamilyId) -> u64 {
        self.ok_by_account.get(&account).copied().unwrap_or(0)
    }
}

struct FaultRule {
    account: FamilyId,
    fault: ProviderFault,
    remaining: Option<u32>,
}

#[derive(Default)]
struct ProviderState {
    faults: Vec<FaultRule>,
    stats: ProviderStats,
    dialect: Dialect,
}

struct Shared {
    tokens: Arc<TokenServer>,
    state: Mutex<ProviderState>,
    next_id: AtomicU64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, ProviderState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running provider. Dropping it stops it.
pub struct FakeProvider {
    shared: Arc<Shared>,
    server: Serving,
}

impl fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeProvider")
            .field("addr", &self.server.addr())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl FakeProvider {
    /// Starts a provider on 127.0.0.1 and a random port, accepting the access tokens `tokens`
    /// issued while they are valid.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start(tokens: Arc<TokenServer>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            tokens,
            state: Mutex::new(ProviderState::default()),
            next_id: AtomicU64::new(1),
        });
        let app = Router::new()
            .route(CHAT_PATH, post(chat_endpoint))
            .fallback(chat_endpoint)
            .with_state(Arc::clone(&shared));
        let server = Serving::loopback(app).await?;
        Ok(Self { shared, server })
    }

    /// The URL to POST to: `http://127.0.0.1:PORT/v1/chat/completions`.
    pub fn url(&self) -> String {
        format!("http://{}{CHAT_PATH}", self.server.addr())
    }

    /// The socket address.
    pub const fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT`: every path below it is served.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Answers (successes and streams) in `dialect` from now on (default [`Dialect::OpenAi`]).
    pub fn set_dialect(&self, dialect: Dialect) {
        self.shared.state().dialect = dialect;
    }

    /// Scripts `fault` for every request of `account` until cleared.
    pub fn inject(&self, account: FamilyId, fault: ProviderFault) {
        self.shared.state().faults.push(FaultRule {
            account,
            fault,
            remaining: None,
        });
    }

    /// Scripts `fault` for the next `times` requests of `account`.
    pub fn inject_times(&self, account: FamilyId, fault: ProviderFault, times: u32) {
        self.shared.state().faults.push(FaultRule {
            account,
            fault,
            remaining: Some(times),
        });
    }

    /// Removes every scripted fault.
    pub fn clear_faults(&self) {
        self.shared.state().faults.clear();
    }

    /// The counters.
    pub fn stats(&self) -> ProviderStats {
        self.shared.state().stats.clone()
    }

    /// Stops the provider.
    pub async fn shutdown(self) {
        self.server.stop(Duration::from_secs(1)).await;
    }
}

/// The prompt of a request in any dialect: `messages[].content` (a string or text parts),
/// Gemini's `contents[].parts[].text` (also under Code Assist's `request`), or the Responses
/// API's `input` (a string or messages).
fn prompt_of(request: &Value) -> String {
    fn texts(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| texts(i, out)),
            Value::Object(o) => {
                for key in ["content", "text", "parts"] {
                    if let Some(inner) = o.get(key) {
                        texts(inner, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for place in ["/messages", "/contents", "/request/contents", "/input"] {
        if let Some(v) = request.pointer(place) {
            texts(v, &mut out);
        }
    }
    out.join("\n")
}

/// Does the request ask for a streamed answer?
fn wants_stream(uri: &Uri, request: &Value) -> bool {
    request.get("stream").and_then(Value::as_bool) == Some(true)
        || uri.path().contains("streamGenerateContent")
        || uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn chat_endpoint(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.state().stats.requests += 1;
    let Some(account) = bearer(&headers).and_then(|t| shared.tokens.access_token_family(t)) else {
        let mut st = shared.state();
        st.stats.unauthorized += 1;
        st.stats.invalid_tokens += 1;
        return unauthorized("invalid_token");
    };

    let (latency, fault) = pick_faults(&mut shared.state(), account);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let cut = fault == Some(ProviderFault::StreamCut);
    if let Some(fault) = fault.filter(|_| !cut) {
        return fault_response(&shared, &fault);
    }

    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        shared.state().stats.bad_requests += 1;
        return error_body(StatusCode::BAD_REQUEST, "invalid_request_error", None);
    };
    let prompt = prompt_of(&request);
    let stream = cut || wants_stream(&uri, &request);
    let usage = usage_for(&prompt);
    let dialect = {
        let mut st = shared.state();
        st.stats.ok += 1;
        st.stats.tokens += usage.total_tokens;
        *st.stats.ok_by_account.entry(account).or_insert(0) += 1;
        if let Some(v) = headers
            .get("chatgpt-account-id")
            .and_then(|v| v.to_str().ok())
        {
            st.stats.account_ids.push(v.to_owned());
        }
        if stream {
            st.stats.streams += 1;
        }
        if cut {
            st.stats.cut_streams += 1;
        }
        st.dialect
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let text = format!("Fake answer {id} to a {}-byte prompt.", prompt.len());
    if stream {
        return stream_response(dialect::stream_events(dialect, id, &text, usage), cut);
    }
    let body = dialect::success_body(dialect, id, &text, usage);
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A `text/event-stream` answer of `events`; with `cut`, the first event and then a broken
/// connection (after a short pause, so the first event reaches the client first).
fn stream_response(events: Vec<String>, cut: bool) -> Response {
    use futures_util::StreamExt;
    let take = if cut { 1 } else { events.len() };
    let chunks = futures_util::stream::iter(
        events
            .into_iter()
            .take(take)
            .map(|e| Ok::<_, std::io::Error>(Bytes::from(e))),
    );
    let tail = futures_util::stream::iter(cut.then_some(())).then(|()| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err(std::io::Error::other("stream cut by the fake provider"))
    });
    (
        StatusCode::OK,
        [(CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(chunks.chain(tail)),
    )
        .into_response()
}

/// Latency to add (summed) and the first answering fault, consuming scripted counts.
fn pick_faults(st: &mut ProviderState, account: FamilyId) -> (Duration, Option<ProviderFault>) {
    let mut latency = Duration::ZERO;
    let mut answer = None;
    let mut slowed = false;
    for rule in &mut st.faults {
        if rule.account != account || rule.remaining == Some(0) {
            continue;
        }
        match &rule.fault {
            ProviderFault::Slow(d) => {
                latency += *d;
                slowed = true;
            }
            f if answer.is_none() => answer = Some(f.clone()),
            _ => continue,
        }
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
    }
    st.faults.retain(|r| r.remaining != Some(0));
    if slowed {
        st.stats.slow += 1;
    }
    (latency, answer)
}

fn fault_response(shared: &Shared, fault: &ProviderFault) -> Response {
    let mut st = shared.state();
    match fault {
        ProviderFault::RateLimited {
            retry_after,
            reset_hint_in_body,
        } => {
            st.stats.rate_limited += 1;
            let secs = retry_after.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
            let hint = if *reset_hint_in_body { secs } else { None };
            let mut r = error_body(StatusCode::TOO_MANY_REQUESTS, "rate_limit", hint);
            if !*reset_hint_in_body && let Some(s) = secs {
                r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
            }
            r
        }
        ProviderFault::Unauthorized => {
            st.stats.unauthorized += 1;
            unauthorized("invalid_token")
        }
        ProviderFault::ServerError(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_server_error() {
                st.stats.server_errors += 1;
            }
            error_body(status, "server_error", None)
        }
        ProviderFault::BadRequest => {
            st.stats.bad_requests += 1;
            error_body(StatusCode::BAD_REQUEST, "invalid_request_error", None)
        }
        ProviderFault::Answer(answer) => {
            let status =
                StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            match status.as_u16() {
                429 => st.stats.rate_limited += 1,
                401 => st.stats.unauthorized += 1,
                400 => st.stats.bad_requests += 1,
                s if s >= 500 => st.stats.server_errors += 1,
                _ => {}
            }
            let mut r = (
                status,
                [(CONTENT_TYPE, "application/json")],
                answer.body.clone(),
            )
                .into_response();
            // A scripted header replaces the default of that name (a scripted Content-Type
            // makes the body a stream, say); repeated names are all sent.
            let mut scripted = Vec::new();
            for (name, value) in &answer.headers {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    if scripted.contains(&n) {
                        r.headers_mut().append(n, v);
                    } else {
                        r.headers_mut().insert(n.clone(), v);
                        scripted.push(n);
                    }
                }
            }
            r
        }
        // Delays are applied before answering, cuts after reading the request; never reached.
        ProviderFault::Slow(_) | ProviderFault::StreamCut => StatusCode::OK.into_response(),
    }
}

fn unauthorized(kind: &str) -> Response {
    let mut r = error_body(StatusCode::UNAUTHORIZED, kind, None);
    r.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    r
}

/// An OpenAI-style error body; its message contains [`RAW_BODY_MARKER`] so tests can check that
/// no raw body reaches an error message.
fn error_body(status: StatusCode, kind: &str, reset_seconds: Option<u64>) -> Response {
    let mut error = json!({
        "type": kind,
        "message": format!("{RAW_BODY_MARKER}: {kind}"),
    });
    if let Some(s) = reset_seconds {
        error["reset_seconds"] = Value::from(s);
    }
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        json!({ "error": error }).to_string(),
    )
        .into_response()
}

/// A successful completion.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChatReply {
    /// The assistant's message.
    pub content: String,
    /// The usage the provider reported.
    pub usage: Usage,
}

/// Why a chat request failed. Never contains the access token or a raw response body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// `429`: rate-limited, with the wait from `Retry-After` or the body's reset hint.
    #[error("rate limited by the provider{}", .retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// How long to wait, if the provider said.
        retry_after: Option<Duration>,
    },
    /// `401`: the access token was rejected.
    #[error("the provider rejected the access token (401)")]
    Unauthorized,
    /// `400`: the request itself is bad.
    #[error("the provider rejected the request (400)")]
    BadRequest,
    /// Any other non-success status (5xx and unexpected ones).
    #[error("the provider answered HTTP {status}")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// No answer in time.
    #[error("the provider did not answer in time")]
    Timeout,
    /// The request could not be sent or the answer not read.
    #[error("could not reach the provider")]
    Network(#[source] reqwest::Error),
    /// A `200` whose body is not a completion.
    #[error("the provider's answer is not a chat completion")]
    InvalidResponse,
}

impl ChatError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else {
            Self::Network(e.without_url())
        }
    }
}

impl ClassifyFailure for ChatError {
    fn failure_kind(&self) -> FailureKind {
        match self {
            Self::RateLimited { retry_after } => FailureKind::rate_limited(*retry_after),
            Self::Unauthorized => FailureKind::Unauthorized,
            Self::BadRequest => FailureKind::RequestScoped,
            Self::Status { .. } | Self::Timeout | Self::Network(_) | Self::InvalidResponse => {
                FailureKind::Transient
            }
        }
    }
}

/// A client for [`FakeProvider`] (or any chat-completion API of that shape): posts one user
/// message with a bearer access token and classifies failures.
#[derive(Debug, Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl ChatClient {
    /// A client posting to `url`, with a 10-second timeout per request.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets the per-request timeout.
    #[must_use]
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `prompt` as one user message, authenticated with `access_token`.
    ///
    /// # Errors
    /// [`ChatError`], classified for failover.
    pub async fn chat(&self, access_token: &str, prompt: &str) -> Result<ChatReply, ChatError> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(access_token)
            .timeout(self.timeout)
            .json(&json!({
                "model": "fake-model",
                "messages": [{ "role": "user", "content": prompt }],
            }))
            .send()
            .await
            .map_err(ChatError::from_reqwest)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| oauth_core::parse_retry_after(v, chrono::Utc::now()).ok());
        let body = response.bytes().await.map_err(ChatError::from_reqwest)?;
        match status {
            200..=299 => parse_reply(&body).ok_or(ChatError::InvalidResponse),
            429 => Err(ChatError::RateLimited {
                retry_after: retry_after.or_else(|| reset_hint(&body)),
            }),
            401 => Err(ChatError::Unauthorized),
            400 => Err(ChatError::BadRequest),
            status => Err(ChatError::Status { status }),
        }
    }
}

fn parse_reply(body: &[u8]) -> Option<ChatReply> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let content = v
        .pointer("/choices/0/message/content")?
        .as_str()?
        .to_owned();
    let usage = v
        .get("usage")
        .and_then(|u| serde_json::from_value(u.clone()).ok())
        .unwrap_or_default();
    Some(ChatReply { content, usage })
}

/// The `{"error":{"reset_seconds":N}}` hint of a 429 body.
fn reset_hint(body: &[u8]) -> Option<Duration> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/reset_seconds")?
        .as_u64()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use oauth_core::ManualClock;

    use super::*;
    use crate::token_server::TokenServerConfig;

    async fn setup() -> (Arc<TokenServer>, FakeProvider, ChatClient, ManualClock) {
        let clock = ManualClock::default();
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
        let client = ChatClient::new(provider.url());
        (tokens, provider, client, clock)
    }

    #[tokio::test]
    async fn serves_only_valid_tokens_of_the_token_server() {
        let (tokens, provider, client, clock) = setup().await;
        let a = tokens.issue_grant("a");
        let b = tokens.issue_grant("b");
        let reply = client.chat(&a.access_token, "12345").await.expect("served");
        assert_eq!(
            reply.usage,
            Usage {
                prompt_tokens: 2,
                completion_tokens: COMPLETION_TOKENS,
                total_tokens: 2 + COMPLETION_TOKENS
            }
        );
        assert!(reply.content.contains("5-byte prompt"));

        let unknown = client.chat("tk-at-made-up", "x").await.expect_err("401");
        assert_eq!(unknown.failure_kind(), FailureKind::Unauthorized);
        tokens.revoke_family(b.family);
        let revoked = client.chat(&b.access_token, "x").await.expect_err("401");
        assert!(matches!(revoked, ChatError::Unauthorized));
        clock.advance(Duration::from_secs(3600));
        let expired = client.chat(&a.access_token, "x").await.expect_err("401");
        assert!(matches!(expired, ChatError::Unauthorized));

        let stats = provider.stats();
        assert_eq!(
            (
                stats.requests,
                stats.ok,
                stats.unauthorized,
                stats.invalid_tokens
            ),
            (4, 1, 3, 3)
        );
        assert_eq!((stats.ok_for(a.family), stats.ok_for(b.family)), (1, 0));
        assert_eq!(stats.tokens, 2 + COMPLETION_TOKENS);
    }

    #[tokio::test]
    async fn faults_are_per_account_and_classified() {
        let (tokens, provider, client, _clock) = setup().await;
        let a = tokens.issue_grant("a");
        let b = tokens.issue_grant("b");
        let fam = a.family;
        let at = a.access_token.as_str();
        provider.inject_times(
            fam,
            ProviderFault::RateLimited {
                retry_after: Some(Duration::from_millis(1500)),
                reset_hint_in_body: false,
            },
            1,
        );
        provider.inject_times(
            fam,
            ProviderFault::RateLimited {
                retry_after: Some(Duration::from_secs(42)),
                reset_hint_in_body: true,
            },
            1,
        );
        provider.inject_times(fam, ProviderFault::ServerError(503), 1);
        provider.inject_times(fam, ProviderFault::BadRequest, 1);

        // The other account is unaffected.
        client.chat(&b.access_token, "b").await.expect("b served");

        let kinds = [
            FailureKind::rate_limited(Some(Duration::from_secs(2))),
            FailureKind::rate_limited(Some(Duration::from_secs(42))),
            FailureKind::Transient,
            FailureKind::RequestScoped,
        ];
        for want in kinds {
            let err = client.chat(at, "a").await.expect_err("fault");
            assert_eq!(err.failure_kind(), want);
            let text = format!("{err} {err:?}");
            assert!(
                !text.contains(at) && !text.contains(RAW_BODY_MARKER),
                "{text}"
            );
        }
        // Slow, then a timeout: transient.
        provider.inject_times(fam, ProviderFault::Slow(Duration::from_millis(300)), 1);
        let short = ChatClient::new(provider.url()).with_timeout(Duration::from_millis(100));
        let err = short.chat(at, "a").await.expect_err("times out");
        assert!(matches!(err, ChatError::Timeout));
        assert_eq!(err.failure_kind(), FailureKind::Transient);
        client.chat(at, "a").await.expect("faults used up");

        let stats = provider.stats();
        assert_eq!(
            (
                stats.rate_limited,
                stats.server_errors,
                stats.bad_requests,
                stats.slow
            ),
            (2, 1, 1, 1)
        );
        provider.inject(fam, ProviderFault::Unauthorized);
        for _ in 0..2 {
            let err = client.chat(at, "a").await.expect_err("scripted 401");
            assert_eq!(err.failure_kind(), FailureKind::Unauthorized);
        }
        provider.clear_faults();
        client.chat(at, "a").await.expect("cleared");
    }

    #[tokio::test]
    async fn speaks_each_dialect_and_streams() {
        let (tokens, provider, _client, _clock) = setup().await;
        let a = tokens.issue_grant("a");
        let http = reqwest::Client::new();
        let post = |path: &str, body: Value| {
            http.post(format!("{}{path}", provider.base_url()))
                .bearer_auth(&a.access_token)
                .header("chatgpt-account-id", "acct-7")
                .json(&body)
                .send()
        };
        // Success bodies carry the dialect's usage shape.
        provider.set_dialect(Dialect::Gemini);
        let v: Value = post(
            "/v1beta/models/m:generateContent",
            json!({"contents": [{"parts": [{"text": "12345678"}]}]}),
        )
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
        assert_eq!(
            v.pointer("/usageMetadata/promptTokenCount"),
            Some(&json!(2))
        );

        // A scripted error answer comes back verbatim.
        provider.set_dialect(Dialect::Anthropic);
        provider.inject_times(
            a.family,
            ProviderFault::Answer(dialect::anthropic_overloaded()),
            1,
        );
        let r = post("/v1/messages", json!({"messages": []}))
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 529);
        let body = r.text().await.expect("body");
        assert!(body.contains("overloaded_error"), "{body}");
        let at = chrono::Utc::now();
        provider.inject_times(
            a.family,
            ProviderFault::Answer(dialect::anthropic_rate_limit(at)),
            1,
        );
        let r = post("/v1/messages", json!({})).await.expect("sent");
        assert_eq!(r.status().as_u16(), 429);
        assert!(r.headers().contains_key("anthropic-ratelimit-tokens-reset"));

        // A stream in the dialect, complete.
        let r = post(
            "/v1/messages",
            json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .expect("sent");
        assert_eq!(
            r.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let text = r.text().await.expect("whole stream");
        assert!(text.starts_with("event: message_start") && text.contains("message_stop"));

        // A stream cut after its first event: the first event arrives, then the body fails.
        provider.inject_times(a.family, ProviderFault::StreamCut, 1);
        let mut r = post("/v1/messages", json!({}))
            .await
            .expect("headers arrive");
        assert_eq!(r.status().as_u16(), 200);
        let first = r.chunk().await.expect("first chunk").expect("some bytes");
        assert!(String::from_utf8_lossy(&first).contains("message_start"));
        let mut failed = false;
        loop {
            match r.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "a cut stream fails");
        let stats = provider.stats();
        assert_eq!((stats.streams, stats.cut_streams), (2, 1));
        assert_eq!((stats.rate_limited, stats.server_errors), (1, 1));
        assert!(stats.account_ids.iter().all(|id| id == "acct-7"));
        assert_eq!(stats.account_ids.len(), 3);
    }

    #[tokio::test]
    async fn unreachable_provider_is_transient() {
        let (tokens, provider, _client, _clock) = setup().await;
        let a = tokens.issue_grant("a");
        let url = provider.url();
        provider.shutdown().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = ChatClient::new(url)
            .chat(&a.access_token, "x")
            .await
            .expect_err("nobody listens");
        assert_eq!(err.failure_kind(), FailureKind::Transient);
        assert!(!format!("{err} {err:?}").contains(&a.access_token));
    }
}
