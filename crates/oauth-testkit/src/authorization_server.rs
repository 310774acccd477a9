//! A strict fake OAuth authorization server for sign-in flows: a real HTTP server on 127.0.0.1
//! (random port) with an authorization endpoint, a token endpoint for the authorization code and
//! device code grants, and a device authorization endpoint.
//!
//! It is as strict as the RFCs allow, so a client that gets a detail wrong fails here:
//! - `GET /authorize` (RFC 6749 section 4.1.1): the client must be registered and the
//!   `redirect_uri` must equal a registered one **exactly** (otherwise a 400 page and no redirect,
//!   section 4.1.2.1); `response_type=code`; a PKCE challenge with method `S256` is required
//!   (RFC 7636; `plain` is refused). It then approves at once and redirects with `code` and the
//!   `state` echoed (or with `error=access_denied` after [`deny_next_authorization`]).
//! - `POST /token`, `grant_type=authorization_code`: the code is single-use (a second use is
//!   `invalid_grant` and revokes the tokens issued for it, RFC 6749 section 4.1.2) and short-lived
//!   (`code_ttl` on the injected [`Clock`]); `client_id` and `redirect_uri` must match the
//!   authorization request; `BASE64URL(SHA256(code_verifier))` must equal the challenge. A
//!   refused attempt does not consume the code.
//! - `POST /device/code` (RFC 8628 section 3.1), optionally with a PKCE challenge (Qwen's
//!   variant); `POST /token`, `grant_type=urn:ietf:params:oauth:grant-type:device_code`:
//!   `authorization_pending` until the test approves the user code
//!   ([`approve_user_code`](AuthorizationServer::approve_user_code)), `slow_down` when polled
//!   sooner than the interval after the previous poll (or the issue) and then the required
//!   interval grows by 5 s, as the client's must; `access_denied`, `expired_token`; the device
//!   code is single-use. Device timing uses tokio's clock (so tests run it paused, together with
//!   the client's polling).
//! - Tokens: with a [`TokenServer`] in the config, they are a grant of that server
//!   ([`TokenServer::issue_grant`]), so the strict token server accepts the refresh token;
//!   otherwise this server mints its own (not refreshable). An `id_token` (an unsigned JWT) is
//!   added when the client was registered with claims, and any extra fields (`resource_url`).
//!
//! Requests may be form- or JSON-encoded; a confidential client's secret goes in the body.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use oauth_testkit::authorization_server::{AuthorizationServer, ClientRegistration};
//!
//! let server = AuthorizationServer::start().await?;
//! server.register_client(ClientRegistration::new("cli").with_redirect_uri("http://127.0.0.1:9/cb"));
//! assert!(server.authorize_url().starts_with("http://127.0.0.1:"));
//! assert!(!server.approve_user_code("NOPE-0000"));
//! assert_eq!(server.stats().codes_issued, 0);
//! # Ok(()) }
//! ```
//!
//! [`deny_next_authorization`]: AuthorizationServer::deny_next_authorization

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use oauth_core::{Clock, SystemClock, after};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::serving::Serving;
use crate::token_server::{FamilyId, TokenServer};

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct AuthorizationServerConfig {
    /// Lifetime of authorization codes, on `clock`. Default one minute.
    pub code_ttl: Duration,
    /// The clock that decides code expiry. Default: the system clock.
    pub clock: Arc<dyn Clock>,
    /// Lifetime of tokens this server mints itself (without `tokens`). Default one hour.
    pub access_token_ttl: Duration,
    /// Issue tokens as grants of this token server, so they can be refreshed there.
    pub tokens: Option<Arc<TokenServer>>,
    /// Lifetime of device codes (`expires_in`), on tokio's clock. Default ten minutes.
    pub device_code_ttl: Duration,
    /// The polling interval advertised and enforced. Default 5 s.
    pub device_interval: Duration,
    /// Status of `slow_down` answers: 400 (RFC 8628) or 429 (what Qwen sends). Default 400.
    pub slow_down_status: u16,
}

impl Default for AuthorizationServerConfig {
    fn default() -> Self {
        Self {
            code_ttl: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
            access_token_ttl: Duration::from_secs(3600),
            tokens: None,
            device_code_ttl: Duration::from_secs(600),
            device_interval: Duration::from_secs(5),
            slow_down_status: 400,
        }
    }
}

/// A registered client.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientRegistration {
    /// The client id.
    pub client_id: String,
    /// Redirect URIs accepted, compared exactly.
    pub redirect_uris: Vec<String>,
    /// The secret of a confidential client (then required in token requests).
    pub secret: Option<String>,
    /// Claims of the `id_token` issued with the tokens; none without them.
    pub id_token_claims: Option<Value>,
    /// Extra members of token responses (`resource_url`, ...).
    pub token_fields: Map<String, Value>,
}

impl ClientRegistration {
    /// A public client with no redirect URI yet.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            redirect_uris: Vec::new(),
            secret: None,
            id_token_claims: None,
            token_fields: Map::new(),
        }
    }

    /// Accepts this redirect URI (exactly).
    #[must_use]
    pub fn with_redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }

    /// Makes the client confidential.
    #[must_use]
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Issues an `id_token` with these claims.
    #[must_use]
    pub fn with_id_token_claims(mut self, claims: Value) -> Self {
        self.id_token_claims = Some(claims);
        self
    }

    /// Adds a member to token responses.
    #[must_use]
    pub fn with_token_field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.token_fields.insert(name.into(), value.into());
        self
    }
}

impl fmt::Debug for ClientRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRegistration")
            .field("client_id", &self.client_id)
            .field("redirect_uris", &self.redirect_uris)
            .field("secret", &self.secret.as_ref().map(|_| "[REDACTED]"))
            .field(
                "token_fields",
                &self.token_fields.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Why the server refused a request (kept in [`AuthorizationServerStats::refusals`], so a test
/// can tell an expired code from a wrong verifier, which both read `invalid_grant` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// Unknown `client_id` (authorization or device request).
    UnknownClient,
    /// The `redirect_uri` of an authorization request is not a registered one.
    RedirectNotRegistered,
    /// `response_type` was not `code`.
    UnsupportedResponseType,
    /// No PKCE challenge.
    MissingChallenge,
    /// A challenge method other than `S256`.
    UnsupportedChallengeMethod,
    /// [`AuthorizationServer::deny_next_authorization`] answered `access_denied`.
    AuthorizationDenied,
    /// Unknown client or wrong secret at the token endpoint.
    InvalidClient,
    /// A code this server never issued.
    UnknownCode,
    /// A code presented a second time.
    CodeReused,
    /// A code presented after `code_ttl`.
    CodeExpired,
    /// A code presented by another client.
    ClientMismatch,
    /// A code presented with another `redirect_uri` than its authorization request's.
    RedirectMismatch,
    /// No `code_verifier`.
    MissingVerifier,
    /// The verifier does not hash to the challenge.
    PkceMismatch,
    /// A grant type this server does not serve.
    UnsupportedGrantType,
    /// An unreadable or incomplete request.
    BadRequest,
    /// A device code this server never issued.
    UnknownDeviceCode,
    /// A device code polled after its lifetime.
    DeviceCodeExpired,
    /// A device code polled again after its tokens were issued.
    DeviceCodeReused,
    /// The user denied the device request.
    DeviceDenied,
}

/// Counters of what the server has seen and answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthorizationServerStats {
    /// Requests to the authorization endpoint.
    pub authorize_requests: u64,
    /// Authorization codes issued.
    pub codes_issued: u64,
    /// Authorization codes exchanged for tokens.
    pub codes_redeemed: u64,
    /// Device codes issued.
    pub device_codes_issued: u64,
    /// Token requests of the device grant.
    pub device_polls: u64,
    /// `slow_down` answers.
    pub slow_downs: u64,
    /// `authorization_pending` answers.
    pub pending_answers: u64,
    /// Device codes exchanged for tokens.
    pub device_tokens_issued: u64,
    /// Every refusal, oldest first.
    pub refusals: Vec<Refusal>,
}

struct CodeEntry {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: Option<String>,
    issued_at: DateTime<Utc>,
    used: bool,
    family: Option<FamilyId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceStatus {
    Pending,
    Approved,
    Denied,
    Consumed,
}

struct DeviceEntry {
    client_id: String,
    user_code: String,
    challenge: Option<String>,
    scope: Option<String>,
    issued: Instant,
    last_poll: Option<Instant>,
    required_interval: Duration,
    status: DeviceStatus,
    polls: Vec<Duration>,
    approve_after: Option<u32>,
}

#[derive(Default)]
struct St {
    clients: HashMap<String, ClientRegistration>,
    codes: HashMap<String, CodeEntry>,
    devices: HashMap<String, DeviceEntry>,
    user_codes: HashMap<String, String>,
    deny_next: u32,
    scripted_slow_downs: u32,
    stats: AuthorizationServerStats,
    serial: u64,
    last_access_token: Option<String>,
}

struct Shared {
    config: AuthorizationServerConfig,
    random: RandomState,
    state: Mutex<St>,
    base: String,
}

/// The running server. Dropping it stops it.
pub struct AuthorizationServer {
    shared: Arc<Shared>,
    server: Serving,
}

impl fmt::Debug for AuthorizationServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationServer")
            .field("addr", &self.server.addr())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl AuthorizationServer {
    /// Starts a server with the default configuration on 127.0.0.1 and a random port.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(AuthorizationServerConfig::default()).await
    }

    /// Starts a server with `config`.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start_with(config: AuthorizationServerConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            config,
            random: RandomState::new(),
            state: Mutex::new(St::default()),
            base,
        });
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/device/code", post(device_code))
            .route("/device", get(verification_page))
            .with_state(Arc::clone(&shared));
        let server = Serving::on(listener, app)?;
        Ok(Self { shared, server })
    }

    /// The authorization endpoint (`http://127.0.0.1:PORT/authorize`).
    pub fn authorize_url(&self) -> String {
        format!("{}/authorize", self.shared.base)
    }

    /// The token endpoint (`.../token`).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.shared.base)
    }

    /// The device authorization endpoint (`.../device/code`).
    pub fn device_authorization_url(&self) -> String {
        format!("{}/device/code", self.shared.base)
    }

    /// The verification URI given to device-flow users (`.../device`).
    pub fn verification_uri(&self) -> String {
        format!("{}/device", self.shared.base)
    }

    /// The socket address.
    pub const fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Registers (or replaces) a client.
    pub fn register_client(&self, client: ClientRegistration) {
        self.state()
            .clients
            .insert(client.client_id.clone(), client);
    }

    /// The next authorization request is answered `error=access_denied` (the user declined).
    pub fn deny_next_authorization(&self) {
        self.state().deny_next += 1;
    }

    /// The next `times` device polls are answered `slow_down` whatever their timing (the
    /// required interval grows by 5 s each time, as for a poll that came too soon).
    pub fn inject_slow_down(&self, times: u32) {
        self.state().scripted_slow_downs += times;
    }

    /// The user approves the device request with `user_code`. False when no pending request
    /// has that code.
    pub fn approve_user_code(&self, user_code: &str) -> bool {
        self.set_device_status(user_code, DeviceStatus::Approved)
    }

    /// The user approves the device request with `user_code` once it has been polled `polls`
    /// times: poll number `polls + 1` (if it is not too soon) gets the tokens. False when no
    /// pending request has that code.
    pub fn approve_user_code_after_polls(&self, user_code: &str, polls: u32) -> bool {
        let mut st = self.state();
        let Some(device_code) = st.user_codes.get(user_code).cloned() else {
            return false;
        };
        match st.devices.get_mut(&device_code) {
            Some(d) if d.status == DeviceStatus::Pending => {
                d.approve_after = Some(polls);
                true
            }
            _ => false,
        }
    }

    /// The user denies the device request with `user_code`. False when no pending request has
    /// that code.
    pub fn deny_user_code(&self, user_code: &str) -> bool {
        self.set_device_status(user_code, DeviceStatus::Denied)
    }

    fn set_device_status(&self, user_code: &str, status: DeviceStatus) -> bool {
        let mut st = self.state();
        let Some(device_code) = st.user_codes.get(user_code).cloned() else {
            return false;
        };
        match st.devices.get_mut(&device_code) {
            Some(d) if d.status == DeviceStatus::Pending => {
                d.status = status;
                true
            }
            _ => false,
        }
    }

    /// When each poll of the device request with `user_code` arrived, measured on tokio's clock
    /// from the moment its device code was issued.
    pub fn device_poll_offsets(&self, user_code: &str) -> Vec<Duration> {
        let st = self.state();
        st.user_codes
            .get(user_code)
            .and_then(|dc| st.devices.get(dc))
            .map(|d| d.polls.clone())
            .unwrap_or_default()
    }

    /// The user codes of device requests still waiting for the user.
    pub fn pending_user_codes(&self) -> Vec<String> {
        self.state()
            .devices
            .values()
            .filter(|d| d.status == DeviceStatus::Pending)
            .map(|d| d.user_code.clone())
            .collect()
    }

    /// The access token of the most recent token response, for tests that search outputs for it.
    pub fn last_issued_access_token(&self) -> Option<String> {
        self.state().last_access_token.clone()
    }

    /// The counters.
    pub fn stats(&self) -> AuthorizationServerStats {
        self.state().stats.clone()
    }

    /// Stops the server and waits briefly for it to close.
    pub async fn shutdown(self) {
        self.server.stop(Duration::from_secs(1)).await;
    }

    fn state(&self) -> MutexGuard<'_, St> {
        self.shared.state()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, St> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn random(&self, st: &mut St, kind: &str) -> String {
        st.serial += 1;
        let mut h = self.random.build_hasher();
        h.write_u64(st.serial);
        format!("{kind}-{}-{:016x}", st.serial, h.finish())
    }

    fn user_code(&self, st: &mut St) -> String {
        st.serial += 1;
        let mut h = self.random.build_hasher();
        h.write_u64(st.serial);
        let n = h.finish();
        const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
        let letters: String = (0..8)
            .map(|i| char::from(ALPHABET[usize::try_from((n >> (i * 5)) % 20).unwrap_or(0)]))
            .collect();
        format!("{}-{}", &letters[..4], &letters[4..])
    }

    /// A token response for `client`, and the family the tokens belong to.
    fn issue_tokens(
        &self,
        st: &mut St,
        client_id: &str,
        scope: Option<&str>,
    ) -> (Value, Option<FamilyId>) {
        let (access, refresh, expires_in, family) = match &self.config.tokens {
            Some(tokens) => {
                let g = tokens.issue_grant(client_id);
                (
                    g.access_token,
                    g.refresh_token,
                    g.expires_in,
                    Some(g.family),
                )
            }
            None => (
                self.random(st, "as-at"),
                self.random(st, "as-rt"),
                self.config.access_token_ttl,
                None,
            ),
        };
        let mut body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": expires_in.as_secs(),
            "refresh_token": refresh,
        });
        if let Some(scope) = scope {
            body["scope"] = Value::from(scope);
        }
        if let Some(reg) = st.clients.get(client_id) {
            if let Some(claims) = &reg.id_token_claims {
                body["id_token"] = Value::from(unsigned_jwt(claims));
            }
            for (k, v) in &reg.token_fields {
                body[k] = v.clone();
            }
        }
        st.last_access_token = Some(access);
        (body, family)
    }
}

/// `header.payload.signature` with `alg: none` and a placeholder signature.
fn unsigned_jwt(claims: &Value) -> String {
    format!(
        "{}.{}.testkit-unsigned",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn s256(verifier: &str) -> String {
    use sha2::Digest as _;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

fn refuse(st: &mut St, why: Refusal) {
    st.stats.refusals.push(why);
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// A 302 to `redirect_uri` with `params` added to its query.
fn redirect(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let Ok(mut url) = reqwest::Url::parse(redirect_uri) else {
        return text(StatusCode::BAD_REQUEST, "unusable redirect_uri");
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    let Ok(location) = HeaderValue::from_str(url.as_str()) else {
        return text(StatusCode::BAD_REQUEST, "unusable redirect_uri");
    };
    let mut r = StatusCode::FOUND.into_response();
    r.headers_mut().insert(LOCATION, location);
    r
}

async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = shared.config.clock.now();
    let mut st = shared.state();
    st.stats.authorize_requests += 1;
    let get = |k: &str| q.get(k).map(String::as_str);
    let Some(client) = get("client_id").and_then(|c| st.clients.get(c)).cloned() else {
        refuse(&mut st, Refusal::UnknownClient);
        return text(StatusCode::BAD_REQUEST, "unknown client_id");
    };
    let Some(redirect_uri) =
        get("redirect_uri").filter(|r| client.redirect_uris.iter().any(|u| u == r))
    else {
        // Never redirect to an unregistered URI (RFC 6749 section 4.1.2.1).
        refuse(&mut st, Refusal::RedirectNotRegistered);
        return text(StatusCode::BAD_REQUEST, "redirect_uri is not registered");
    };
    let state = get("state");
    let fail = |st: &mut St, why: Refusal, error: &str| {
        refuse(st, why);
        let mut params = vec![("error", error)];
        if let Some(s) = state {
            params.push(("state", s));
        }
        redirect(redirect_uri, &params)
    };
    if get("response_type") != Some("code") {
        return fail(
            &mut st,
            Refusal::UnsupportedResponseType,
            "unsupported_response_type",
        );
    }
    let Some(challenge) = get("code_challenge").filter(|c| !c.is_empty()) else {
        return fail(&mut st, Refusal::MissingChallenge, "invalid_request");
    };
    if get("code_challenge_method") != Some("S256") {
        return fail(
            &mut st,
            Refusal::UnsupportedChallengeMethod,
            "invalid_request",
        );
    }
    if st.deny_next > 0 {
        st.deny_next -= 1;
        return fail(&mut st, Refusal::AuthorizationDenied, "access_denied");
    }
    let code = shared.random(&mut st, "ac");
    st.codes.insert(
        code.clone(),
        CodeEntry {
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            challenge: challenge.to_owned(),
            scope: get("scope").map(str::to_owned),
            issued_at: now,
            used: false,
            family: None,
        },
    );
    st.stats.codes_issued += 1;
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = state {
        params.push(("state", s));
    }
    redirect(redirect_uri, &params)
}

async fn verification_page() -> Response {
    text(StatusCode::OK, "Enter the code shown on your device.")
}

/// Reads a form or JSON body into strings. `None` for an unreadable body.
async fn read_params(req: Request) -> Option<HashMap<String, String>> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        let bytes = axum::body::to_bytes(req.into_body(), 64 * 1024)
            .await
            .ok()?;
        let map: HashMap<String, Value> = serde_json::from_slice(&bytes).ok()?;
        Some(
            map.into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    Value::Null => None,
                    other => Some((k, other.to_string())),
                })
                .collect(),
        )
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let axum::Form(p) = axum::Form::<HashMap<String, String>>::from_request(req, &())
            .await
            .ok()?;
        Some(p)
    } else {
        None
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn oauth_error(status: StatusCode, code: &str) -> Response {
    json_response(
        status,
        &json!({ "error": code, "error_description": "refused by the testkit authorization server" }),
    )
}

/// Checks the client of a token or device request (a confidential client's secret too).
fn client_ok(st: &St, p: &HashMap<String, String>) -> bool {
    let Some(reg) = p.get("client_id").and_then(|c| st.clients.get(c)) else {
        return false;
    };
    reg.secret
        .as_ref()
        .is_none_or(|s| p.get("client_secret") == Some(s))
}

async fn token(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let Some(p) = read_params(req).await else {
        refuse(&mut shared.state(), Refusal::BadRequest);
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    match p.get("grant_type").map(String::as_str) {
        Some("authorization_code") => code_grant(&shared, &p),
        Some("urn:ietf:params:oauth:grant-type:device_code") => device_grant(&shared, &p),
        _ => {
            refuse(&mut shared.state(), Refusal::UnsupportedGrantType);
            oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type")
        }
    }
}

fn code_grant(shared: &Shared, p: &HashMap<String, String>) -> Response {
    let now = shared.config.clock.now();
    let mut st = shared.state();
    if !client_ok(&st, p) {
        refuse(&mut st, Refusal::InvalidClient);
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let invalid_grant = |st: &mut St, why| {
        refuse(st, why);
        oauth_error(StatusCode::BAD_REQUEST, "invalid_grant")
    };
    let get = |k: &str| p.get(k).map(String::as_str);
    let Some(entry) = get("code").and_then(|c| st.codes.get(c)) else {
        return invalid_grant(&mut st, Refusal::UnknownCode);
    };
    let (used, family) = (entry.used, entry.family);
    let client_id = entry.client_id.clone();
    let scope = entry.scope.clone();
    let why = if used {
        Some(Refusal::CodeReused)
    } else if Some(entry.client_id.as_str()) != get("client_id") {
        Some(Refusal::ClientMismatch)
    } else if now >= after(entry.issued_at, shared.config.code_ttl) {
        Some(Refusal::CodeExpired)
    } else if Some(entry.redirect_uri.as_str()) != get("redirect_uri") {
        Some(Refusal::RedirectMismatch)
    } else {
        match get("code_verifier") {
            None => Some(Refusal::MissingVerifier),
            Some(v) if s256(v) != entry.challenge => Some(Refusal::PkceMismatch),
            Some(_) => None,
        }
    };
    if let Some(why) = why {
        if why == Refusal::CodeReused
            && let (Some(tokens), Some(family)) = (&shared.config.tokens, family)
        {
            // RFC 6749 section 4.1.2: revoke what the code granted.
            tokens.revoke_family(family);
        }
        return invalid_grant(&mut st, why);
    }
    let (body, family) = shared.issue_tokens(&mut st, &client_id, scope.as_deref());
    if let Some(e) = get("code").and_then(|c| st.codes.get_mut(c)) {
        e.used = true;
        e.family = family;
    }
    st.stats.codes_redeemed += 1;
    json_response(StatusCode::OK, &body)
}

async fn device_code(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let Some(p) = read_params(req).await else {
        refuse(&mut shared.state(), Refusal::BadRequest);
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let mut st = shared.state();
    if !client_ok(&st, &p) {
        refuse(&mut st, Refusal::UnknownClient);
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let challenge = p.get("code_challenge").cloned();
    if challenge.is_some() && p.get("code_challenge_method").map(String::as_str) != Some("S256") {
        refuse(&mut st, Refusal::UnsupportedChallengeMethod);
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let device_code = shared.random(&mut st, "dc");
    let user_code = shared.user_code(&mut st);
    st.devices.insert(
        device_code.clone(),
        DeviceEntry {
            client_id: p.get("client_id").cloned().unwrap_or_default(),
            user_code: user_code.clone(),
            challenge,
            scope: p.get("scope").cloned(),
            issued: Instant::now(),
            last_poll: None,
            required_interval: shared.config.device_interval,
            status: DeviceStatus::Pending,
            polls: Vec::new(),
            approve_after: None,
        },
    );
    st.user_codes.insert(user_code.clone(), device_code.clone());
    st.stats.device_codes_issued += 1;
    let verification_uri = format!("{}/device", shared.base);
    json_response(
        StatusCode::OK,
        &json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
            "expires_in": shared.config.device_code_ttl.as_secs(),
            "interval": shared.config.device_interval.as_secs(),
        }),
    )
}

/// What a device poll is answered, decided while the entry is borrowed.
enum Poll {
    Refuse(Refusal, &'static str),
    SlowDown,
    Pending,
    Tokens {
        client_id: String,
        scope: Option<String>,
    },
}

fn device_grant(shared: &Shared, p: &HashMap<String, String>) -> Response {
    let now = Instant::now();
    let mut st = shared.state();
    st.stats.device_polls += 1;
    if !client_ok(&st, p) {
        refuse(&mut st, Refusal::InvalidClient);
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let scripted = st.scripted_slow_downs > 0;
    if scripted {
        st.scripted_slow_downs -= 1;
    }
    let ttl = shared.config.device_code_ttl;
    let device_code = p.get("device_code").map(String::as_str).unwrap_or_default();
    let poll = match st.devices.get_mut(device_code) {
        None => Poll::Refuse(Refusal::UnknownDeviceCode, "invalid_grant"),
        Some(d) => {
            if d.status == DeviceStatus::Pending
                && d.approve_after.is_some_and(|n| d.polls.len() >= n as usize)
            {
                d.status = DeviceStatus::Approved;
            }
            d.polls.push(now.saturating_duration_since(d.issued));
            let since = now.saturating_duration_since(d.last_poll.unwrap_or(d.issued));
            d.last_poll = Some(now);
            if Some(d.client_id.as_str()) != p.get("client_id").map(String::as_str) {
                Poll::Refuse(Refusal::ClientMismatch, "invalid_grant")
            } else if d.status == DeviceStatus::Consumed {
                Poll::Refuse(Refusal::DeviceCodeReused, "invalid_grant")
            } else if now.saturating_duration_since(d.issued) >= ttl {
                Poll::Refuse(Refusal::DeviceCodeExpired, "expired_token")
            } else if scripted || since < d.required_interval {
                d.required_interval += Duration::from_secs(5);
                Poll::SlowDown
            } else {
                match d.status {
                    DeviceStatus::Pending => Poll::Pending,
                    DeviceStatus::Denied => Poll::Refuse(Refusal::DeviceDenied, "access_denied"),
                    DeviceStatus::Approved | DeviceStatus::Consumed => {
                        match (&d.challenge, p.get("code_verifier")) {
                            (Some(_), None) => {
                                Poll::Refuse(Refusal::MissingVerifier, "invalid_grant")
                            }
                            (Some(c), Some(v)) if &s256(v) != c => {
                                Poll::Refuse(Refusal::PkceMismatch, "invalid_grant")
                            }
                            _ => {
                                d.status = DeviceStatus::Consumed;
                                Poll::Tokens {
                                    client_id: d.client_id.clone(),
                                    scope: d.scope.clone(),
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    match poll {
        Poll::Refuse(why, code) => {
            refuse(&mut st, why);
            oauth_error(StatusCode::BAD_REQUEST, code)
        }
        Poll::SlowDown => {
            st.stats.slow_downs += 1;
            let status = StatusCode::from_u16(shared.config.slow_down_status)
                .unwrap_or(StatusCode::BAD_REQUEST);
            oauth_error(status, "slow_down")
        }
        Poll::Pending => {
            st.stats.pending_answers += 1;
            oauth_error(StatusCode::BAD_REQUEST, "authorization_pending")
        }
        Poll::Tokens { client_id, scope } => {
            let (body, _) = shared.issue_tokens(&mut st, &client_id, scope.as_deref());
            st.stats.device_tokens_issued += 1;
            json_response(StatusCode::OK, &body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIRECT: &str = "http://127.0.0.1:9/cb";

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client builds")
    }

    async fn server() -> AuthorizationServer {
        let server = AuthorizationServer::start().await.expect("starts");
        server.register_client(
            ClientRegistration::new("cli")
                .with_redirect_uri(REDIRECT)
                .with_secret("s3cret"),
        );
        server
    }

    async fn authorize(server: &AuthorizationServer, params: &[(&str, &str)]) -> reqwest::Response {
        let mut url = reqwest::Url::parse(&server.authorize_url()).expect("url");
        url.query_pairs_mut().extend_pairs(params);
        client().get(url).send().await.expect("answered")
    }

    fn location(resp: &reqwest::Response) -> HashMap<String, String> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("a redirect");
        reqwest::Url::parse(loc)
            .expect("absolute")
            .query_pairs()
            .into_owned()
            .collect()
    }

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn good(state: &str) -> Vec<(&'static str, &str)> {
        vec![
            ("response_type", "code"),
            ("client_id", "cli"),
            ("redirect_uri", REDIRECT),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("state", state),
        ]
    }

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(s256(VERIFIER), CHALLENGE);
    }

    #[tokio::test]
    async fn authorization_requests_are_checked_strictly() {
        let server = server().await;
        // An unregistered redirect URI (even one differing only in its port) gets no redirect.
        let mut other = good("st");
        other[2] = ("redirect_uri", "http://127.0.0.1:10/cb");
        let r = authorize(&server, &other).await;
        assert_eq!(r.status().as_u16(), 400);
        assert!(r.headers().get(LOCATION).is_none());
        // No challenge, or `plain`: an error redirect, state echoed.
        let mut plain = good("st");
        plain[4] = ("code_challenge_method", "plain");
        let r = authorize(&server, &plain).await;
        assert_eq!(r.status().as_u16(), 302);
        let q = location(&r);
        assert_eq!(
            (q["error"].as_str(), q["state"].as_str()),
            ("invalid_request", "st")
        );
        let r = authorize(&server, &good("st")[..3]).await;
        assert_eq!(location(&r)["error"], "invalid_request");
        // A good one: a code, state echoed.
        let r = authorize(&server, &good("st-2")).await;
        let q = location(&r);
        assert_eq!(q["state"], "st-2");
        assert!(q.contains_key("code"));
        assert_eq!(
            server.stats().refusals,
            vec![
                Refusal::RedirectNotRegistered,
                Refusal::UnsupportedChallengeMethod,
                Refusal::MissingChallenge
            ]
        );
    }

    #[tokio::test]
    async fn code_exchange_is_strict_and_single_use() {
        let server = server().await;
        let code = location(&authorize(&server, &good("st")).await)["code"].clone();
        let exchange = |verifier: &'static str, secret: &'static str, redirect: &'static str| {
            let url = server.token_url();
            let code = code.clone();
            async move {
                let r = client()
                    .post(url)
                    .json(&json!({
                        "grant_type": "authorization_code", "code": code, "client_id": "cli",
                        "client_secret": secret, "redirect_uri": redirect, "code_verifier": verifier,
                    }))
                    .send()
                    .await
                    .expect("answered");
                let status = r.status().as_u16();
                let body: Value = r.json().await.expect("json");
                (status, body)
            }
        };
        let wrong_verifier = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(exchange(VERIFIER, "wrong", REDIRECT).await.0, 401);
        let (s, b) = exchange(wrong_verifier, "s3cret", REDIRECT).await;
        assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
        let (s, _) = exchange(VERIFIER, "s3cret", "http://127.0.0.1:9/other").await;
        assert_eq!(s, 400);
        let (s, b) = exchange(VERIFIER, "s3cret", REDIRECT).await;
        assert_eq!(s, 200, "refused attempts do not consume the code: {b}");
        assert!(b["access_token"].is_string() && b["refresh_token"].is_string());
        let (s, _) = exchange(VERIFIER, "s3cret", REDIRECT).await;
        assert_eq!(s, 400, "a code is single-use");
        assert_eq!(
            server.stats().refusals,
            vec![
                Refusal::InvalidClient,
                Refusal::PkceMismatch,
                Refusal::RedirectMismatch,
                Refusal::CodeReused
            ]
        );
        let d = format!(
            "{server:?} {:?}",
            ClientRegistration::new("x").with_secret("s3cret")
        );
        assert!(!d.contains("s3cret") && !d.contains(&code));
    }
}
