//! A strict fake OAuth 2.0 token endpoint: a real HTTP server on 127.0.0.1 (random port).
//!
//! It behaves like a careful authorization server for the refresh-token grant (RFC 6749 section
//! 6, with the rotation rules of RFC 9700 / OAuth 2.1):
//! - [`TokenServer::issue_grant`] creates a token family for a client and returns its first
//!   access and refresh tokens, so a test can seed a credential;
//! - every refresh returns a new access token and, by default, a new refresh token: the presented
//!   one is consumed;
//! - presenting a consumed refresh token is answered `400 invalid_grant` **and revokes the whole
//!   family** (every access and refresh token of the grant stops working);
//! - faults are scriptable per client or per refresh token ([`Fault`]): latency, 5xx, 429 or 503
//!   with `Retry-After`, malformed bodies, a dropped connection, a revoked grant, any OAuth error,
//!   and successes with the oddities real servers send ([`ResponseQuirk`]: scope as an array, an
//!   odd `token_type` or `expires_in`, a `text/html` Content-Type, a large id token);
//! - it counts what it has seen ([`TokenServer::stats`], [`TokenServer::log`]) and can tell
//!   whether an access token is valid ([`TokenServer::is_access_token_valid`]), for a fake API.
//!
//! Requests may be form- or JSON-encoded, with client credentials in HTTP Basic or in the body.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use oauth_testkit::token_server::TokenServer;
//!
//! let server = TokenServer::start().await?;
//! let grant = server.issue_grant("my-client");
//! assert!(server.is_access_token_valid(&grant.access_token));
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! assert_eq!(server.stats().grants_issued, 1);
//! # Ok(()) }
//! ```

use crate::serving::Serving;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use oauth_core::{Clock, SystemClock, after};
use serde_json::{Value, json};

/// Text every malformed body and every error description contains, so tests can check that no
/// raw response body reaches an error message.
pub const RAW_BODY_MARKER: &str = "testkit-raw-body-marker";

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct TokenServerConfig {
    /// Lifetime of issued access tokens (`expires_in`). Default one hour.
    pub access_token_ttl: Duration,
    /// Lifetime of issued refresh tokens, sent as `refresh_token_expires_in` when set. Default
    /// none (they do not expire).
    pub refresh_token_ttl: Option<Duration>,
    /// Issue a new refresh token on every refresh and consume the presented one. Default on.
    pub rotate_refresh_tokens: bool,
    /// Revoke the whole token family when a consumed refresh token is presented again. Default
    /// on. (Off, a consumed token is merely rejected.)
    pub reuse_detection: bool,
    /// `scope` returned in token responses, if any.
    pub scope: Option<String>,
    /// The clock that decides expiry. Default: the system clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for TokenServerConfig {
    fn default() -> Self {
        Self {
            access_token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: None,
            rotate_refresh_tokens: true,
            reuse_detection: true,
            scope: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// A token family (one authorization grant and every token derived from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FamilyId(usize);

/// The first tokens of a grant, from [`TokenServer::issue_grant`].
#[derive(Clone)]
pub struct IssuedGrant {
    /// The client the grant belongs to.
    pub client_id: String,
    /// The access token.
    pub access_token: String,
    /// The refresh token.
    pub refresh_token: String,
    /// The access token's lifetime.
    pub expires_in: Duration,
    /// The token family.
    pub family: FamilyId,
}

impl fmt::Debug for IssuedGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedGrant")
            .field("client_id", &self.client_id)
            .field("access_token", &"[REDACTED]")
            .field("refresh_token", &"[REDACTED]")
            .field("expires_in", &self.expires_in)
            .field("family", &self.family)
            .finish()
    }
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultTarget {
    /// Every request.
    Any,
    /// Requests from this client id.
    Client(String),
    /// Requests presenting this refresh token.
    RefreshToken(String),
}

/// A malformed 200 response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MalformedBody {
    /// An empty body.
    Empty,
    /// An HTML page (`text/html`), as a proxy or WAF would send.
    Html,
    /// Plain text that is not JSON.
    NotJson,
    /// A JSON object without `access_token`.
    MissingAccessToken,
    /// A streamed body of this many bytes, without `Content-Length`.
    Oversized(usize),
}

/// An oddity in an otherwise successful token response, as real servers send: the grant is
/// honoured (new tokens issued, the presented refresh token consumed), only the response is odd.
/// A client that discards such a response has lost the grant: its next refresh presents the
/// consumed token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseQuirk {
    /// `scope` as a JSON array of strings instead of a space-separated string.
    ScopeArray,
    /// `token_type` set to this value (`"DPoP"`, `"N_A"`).
    TokenType(String),
    /// `expires_in` replaced by this raw JSON text (`"\"3600s\""`, `"-1"`, `"0"`,
    /// `"6311520000"` for 200 years); text that is not JSON is sent as a JSON string.
    ExpiresIn(String),
    /// `refresh_token_expires_in` set to this raw JSON text (`"\"never\""`).
    RefreshTokenExpiresIn(String),
    /// `Content-Type: text/html` on the JSON body.
    HtmlContentType,
    /// An `id_token` of this many bytes (an id token with many claims makes a large body).
    LargeIdToken(usize),
}

/// A scripted fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Wait this long, then handle the request normally (or with the next matching fault).
    Latency(Duration),
    /// Answer this status with an empty body.
    Status(u16),
    /// Answer `status` (429 or 503) with this `Retry-After` value, if any.
    RateLimited {
        /// HTTP status.
        status: u16,
        /// The raw `Retry-After` header value.
        retry_after: Option<String>,
    },
    /// Answer an RFC 6749 section 5.2 error (with an `error_description` that echoes the
    /// presented refresh token, as careless servers do).
    OAuthError {
        /// HTTP status.
        status: u16,
        /// The `error` code.
        error: String,
    },
    /// Answer 200 with a malformed body.
    Malformed(MalformedBody),
    /// Send the status line and headers, then drop the connection.
    DropConnection,
    /// Revoke the grant of the presented refresh token, then handle the request (which then
    /// fails with `invalid_grant`).
    RevokeGrant,
    /// Handle the request normally; if it succeeds, answer with this oddity (the tokens are
    /// issued and the presented refresh token is consumed all the same).
    Quirk(ResponseQuirk),
}

/// What the server did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// New tokens were issued.
    Issued,
    /// `invalid_grant` was sent; `reused` when a consumed refresh token was presented.
    InvalidGrant {
        /// A consumed refresh token was presented (the family was revoked if reuse detection is on).
        reused: bool,
    },
    /// `invalid_client` was sent.
    InvalidClient,
    /// Another `400` (malformed request, unsupported grant type).
    BadRequest,
    /// A scripted fault answered.
    Fault(Fault),
}

/// One request the server has seen. Holds no token values (the refresh token is identified by
/// its serial number).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SeenRequest {
    /// When it arrived (server clock).
    pub at: DateTime<Utc>,
    /// The client id presented (Basic or body).
    pub client_id: Option<String>,
    /// `basic`, `body` or `none`.
    pub client_auth: &'static str,
    /// `form`, `json` or `other`.
    pub encoding: &'static str,
    /// `grant_type`.
    pub grant_type: Option<String>,
    /// `scope`, if sent.
    pub scope: Option<String>,
    /// `User-Agent`, if sent.
    pub user_agent: Option<String>,
    /// Serial number of the presented refresh token, if the server issued it.
    pub refresh_token_serial: Option<u64>,
    /// What the server answered.
    pub outcome: Outcome,
}

/// Counters of what the server has seen and answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenServerStats {
    /// Requests to the token endpoint.
    pub requests: u64,
    /// Grants created with [`TokenServer::issue_grant`].
    pub grants_issued: u64,
    /// Successful refreshes.
    pub refreshes: u64,
    /// `invalid_grant` responses sent.
    pub invalid_grants: u64,
    /// Consumed refresh tokens presented again.
    pub reused_refresh_tokens: u64,
    /// Families revoked (by reuse detection, a fault, or a test).
    pub families_revoked: u64,
    /// `invalid_client` responses sent.
    pub invalid_clients: u64,
    /// Other `400` responses sent.
    pub bad_requests: u64,
    /// Requests answered (or delayed) by a scripted fault.
    pub faults_injected: u64,
}

struct Family {
    client_id: String,
    revoked: bool,
}

struct RefreshEntry {
    family: usize,
    serial: u64,
    consumed: bool,
    expires_at: Option<DateTime<Utc>>,
}

struct AccessEntry {
    family: usize,
    expires_at: DateTime<Utc>,
}

struct FaultRule {
    target: FaultTarget,
    fault: Fault,
    remaining: Option<u32>,
}

#[derive(Default)]
struct State_ {
    clients: HashMap<String, Option<String>>,
    families: Vec<Family>,
    refresh: HashMap<String, RefreshEntry>,
    access: HashMap<String, AccessEntry>,
    faults: Vec<FaultRule>,
    stats: TokenServerStats,
    log: Vec<SeenRequest>,
    serial: u64,
}

struct Shared {
    config: TokenServerConfig,
    random: RandomState,
    state: Mutex<State_>,
}

/// The running server. Dropping it stops it.
pub struct TokenServer {
    shared: Arc<Shared>,
    server: Serving,
}

impl fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenServer")
            .field("addr", &self.server.addr())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl TokenServer {
    /// Starts a server with the default configuration on 127.0.0.1 and a random port.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(TokenServerConfig::default()).await
    }

    /// Starts a server with `config`.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start_with(config: TokenServerConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            config,
            random: RandomState::new(),
            state: Mutex::new(State_::default()),
        });
        let app = Router::new()
            .route("/token", post(token_endpoint))
            .with_state(Arc::clone(&shared));
        let server = Serving::loopback(app).await?;
        Ok(Self { shared, server })
    }

    /// The token endpoint URL (`http://127.0.0.1:PORT/token`).
    pub fn url(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    /// The socket address.
    pub const fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Registers a confidential client: its requests must then authenticate with `secret`
    /// (HTTP Basic or in the body), else they get `401 invalid_client`. Clients first seen in
    /// [`issue_grant`](Self::issue_grant) are public (no secret).
    pub fn register_client(&self, client_id: &str, secret: &str) {
        self.state()
            .clients
            .insert(client_id.to_owned(), Some(secret.to_owned()));
    }

    /// Creates a grant (a token family) for `client_id` and returns its first tokens.
    pub fn issue_grant(&self, client_id: &str) -> IssuedGrant {
        let now = self.shared.config.clock.now();
        let mut st = self.state();
        st.clients.entry(client_id.to_owned()).or_insert(None);
        st.families.push(Family {
            client_id: client_id.to_owned(),
            revoked: false,
        });
        let family = st.families.len() - 1;
        let (access_token, refresh_token) = self.shared.mint(&mut st, family, now, true);
        st.stats.grants_issued += 1;
        IssuedGrant {
            client_id: client_id.to_owned(),
            access_token,
            refresh_token: refresh_token.unwrap_or_default(),
            expires_in: self.shared.config.access_token_ttl,
            family: FamilyId(family),
        }
    }

    /// Scripts `fault` for every matching request until cleared.
    pub fn inject(&self, target: FaultTarget, fault: Fault) {
        self.state().faults.push(FaultRule {
            target,
            fault,
            remaining: None,
        });
    }

    /// Scripts `fault` for the next `times` matching requests.
    pub fn inject_times(&self, target: FaultTarget, fault: Fault, times: u32) {
        self.state().faults.push(FaultRule {
            target,
            fault,
            remaining: Some(times),
        });
    }

    /// Removes every scripted fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Revokes a family: its access and refresh tokens stop working.
    pub fn revoke_family(&self, family: FamilyId) {
        let mut st = self.state();
        revoke(&mut st, family.0);
    }

    /// Is `token` an access token this server issued, unexpired (server clock), whose family is
    /// not revoked?
    pub fn is_access_token_valid(&self, token: &str) -> bool {
        let now = self.shared.config.clock.now();
        let st = self.state();
        st.access.get(token).is_some_and(|a| {
            now < a.expires_at && st.families.get(a.family).is_some_and(|f| !f.revoked)
        })
    }

    /// The token family of `token` when it is a valid access token (see
    /// [`is_access_token_valid`](Self::is_access_token_valid)), so a fake API can tell which
    /// grant (account) a request comes from.
    pub fn access_token_family(&self, token: &str) -> Option<FamilyId> {
        let now = self.shared.config.clock.now();
        let st = self.state();
        st.access
            .get(token)
            .filter(|a| now < a.expires_at && st.families.get(a.family).is_some_and(|f| !f.revoked))
            .map(|a| FamilyId(a.family))
    }

    /// Is `token` a refresh token of this server that would be accepted now?
    pub fn is_refresh_token_valid(&self, token: &str) -> bool {
        let now = self.shared.config.clock.now();
        let st = self.state();
        st.refresh.get(token).is_some_and(|r| {
            !r.consumed
                && r.expires_at.is_none_or(|at| now < at)
                && st.families.get(r.family).is_some_and(|f| !f.revoked)
        })
    }

    /// The counters.
    pub fn stats(&self) -> TokenServerStats {
        self.state().stats.clone()
    }

    /// Every request seen, oldest first.
    pub fn log(&self) -> Vec<SeenRequest> {
        self.state().log.clone()
    }

    /// Stops the server and waits briefly for it to close.
    pub async fn shutdown(self) {
        self.server.stop(Duration::from_secs(1)).await;
    }

    fn state(&self) -> MutexGuard<'_, State_> {
        self.shared.state()
    }
}

fn revoke(st: &mut State_, family: usize) {
    if let Some(f) = st.families.get_mut(family)
        && !f.revoked
    {
        f.revoked = true;
        st.stats.families_revoked += 1;
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn token(&self, kind: &str, serial: u64) -> String {
        let mut h = self.random.build_hasher();
        h.write_u64(serial);
        format!("tk-{kind}-{serial}-{:016x}", h.finish())
    }

    /// Issues an access token (and a refresh token when `with_refresh`) in `family`.
    fn mint(
        &self,
        st: &mut State_,
        family: usize,
        now: DateTime<Utc>,
        with_refresh: bool,
    ) -> (String, Option<String>) {
        st.serial += 1;
        let access = self.token("at", st.serial);
        st.access.insert(
            access.clone(),
            AccessEntry {
                family,
                expires_at: after(now, self.config.access_token_ttl),
            },
        );
        let refresh = with_refresh.then(|| {
            st.serial += 1;
            let serial = st.serial;
            let token = self.token("rt", serial);
            st.refresh.insert(
                token.clone(),
                RefreshEntry {
                    family,
                    serial,
                    consumed: false,
                    expires_at: self.config.refresh_token_ttl.map(|d| after(now, d)),
                },
            );
            token
        });
        (access, refresh)
    }
}

/// What a request carried.
struct Incoming {
    params: HashMap<String, String>,
    basic: Option<(String, String)>,
    encoding: &'static str,
    user_agent: Option<String>,
}

impl Incoming {
    fn client_id(&self) -> Option<&str> {
        self.basic
            .as_ref()
            .map(|(id, _)| id.as_str())
            .or_else(|| self.params.get("client_id").map(String::as_str))
    }

    fn client_secret(&self) -> Option<&str> {
        self.basic
            .as_ref()
            .map(|(_, s)| s.as_str())
            .or_else(|| self.params.get("client_secret").map(String::as_str))
    }

    fn client_auth(&self) -> &'static str {
        if self.basic.is_some() {
            "basic"
        } else if self.params.contains_key("client_secret") {
            "body"
        } else {
            "none"
        }
    }

    fn refresh_token(&self) -> Option<&str> {
        self.params.get("refresh_token").map(String::as_str)
    }
}

async fn token_endpoint(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let Some(incoming) = read_request(req).await else {
        let mut st = shared.state();
        st.stats.requests += 1;
        st.stats.bad_requests += 1;
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", None);
    };

    // 1. Record the request and pick the scripted faults.
    let (latency, fault) = {
        let mut st = shared.state();
        st.stats.requests += 1;
        pick_faults(&mut st, &incoming)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    // 2. Answer.
    let now = shared.config.clock.now();
    let mut st = shared.state();
    let serial = incoming
        .refresh_token()
        .and_then(|t| st.refresh.get(t))
        .map(|r| r.serial);
    let (response, outcome) = match fault {
        Some(Fault::RevokeGrant) => grant(&shared, &mut st, &incoming, now, true, None),
        Some(Fault::Quirk(quirk)) => grant(&shared, &mut st, &incoming, now, false, Some(&quirk)),
        Some(f) => (
            fault_response(&f, incoming.refresh_token()),
            Outcome::Fault(f),
        ),
        None => grant(&shared, &mut st, &incoming, now, false, None),
    };
    match &outcome {
        Outcome::Issued => st.stats.refreshes += 1,
        Outcome::InvalidGrant { reused } => {
            st.stats.invalid_grants += 1;
            if *reused {
                st.stats.reused_refresh_tokens += 1;
            }
        }
        Outcome::InvalidClient => st.stats.invalid_clients += 1,
        Outcome::BadRequest => st.stats.bad_requests += 1,
        Outcome::Fault(_) => {}
    }
    st.log.push(SeenRequest {
        at: now,
        client_id: incoming.client_id().map(str::to_owned),
        client_auth: incoming.client_auth(),
        encoding: incoming.encoding,
        grant_type: incoming.params.get("grant_type").cloned(),
        scope: incoming.params.get("scope").cloned(),
        user_agent: incoming.user_agent.clone(),
        refresh_token_serial: serial,
        outcome,
    });
    response
}

/// Latency to add (summed) and the first response-changing fault, consuming scripted counts.
fn pick_faults(st: &mut State_, incoming: &Incoming) -> (Duration, Option<Fault>) {
    let mut latency = Duration::ZERO;
    let mut answer = None;
    for rule in &mut st.faults {
        if rule.remaining == Some(0) {
            continue;
        }
        let matches = match &rule.target {
            FaultTarget::Any => true,
            FaultTarget::Client(c) => incoming.client_id() == Some(c.as_str()),
            FaultTarget::RefreshToken(t) => incoming.refresh_token() == Some(t.as_str()),
        };
        if !matches {
            continue;
        }
        match &rule.fault {
            Fault::Latency(d) => latency += *d,
            f if answer.is_none() => answer = Some(f.clone()),
            _ => continue,
        }
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
        st.stats.faults_injected += 1;
    }
    st.faults.retain(|r| r.remaining != Some(0));
    (latency, answer)
}

/// The refresh-token grant, strictly; a success is answered with `quirk`, if any.
fn grant(
    shared: &Shared,
    st: &mut State_,
    inc: &Incoming,
    now: DateTime<Utc>,
    revoke_first: bool,
    quirk: Option<&ResponseQuirk>,
) -> (Response, Outcome) {
    let bad = |code| {
        (
            oauth_error(StatusCode::BAD_REQUEST, code, inc.refresh_token()),
            Outcome::BadRequest,
        )
    };
    match inc.params.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {}
        Some(_) => return bad("unsupported_grant_type"),
        None => return bad("invalid_request"),
    }
    let Some(presented) = inc.refresh_token() else {
        return bad("invalid_request");
    };

    // Client authentication.
    let invalid_client = || {
        let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", None);
        if inc.basic.is_some() {
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        }
        (r, Outcome::InvalidClient)
    };
    let Some(client_id) = inc.client_id() else {
        return invalid_client();
    };
    match st.clients.get(client_id) {
        None => return invalid_client(),
        Some(Some(secret)) if inc.client_secret() != Some(secret.as_str()) => {
            return invalid_client();
        }
        Some(_) => {}
    }

    let invalid_grant = |reused| {
        (
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", Some(presented)),
            Outcome::InvalidGrant { reused },
        )
    };
    let Some((family, consumed, expires_at)) = st
        .refresh
        .get(presented)
        .map(|e| (e.family, e.consumed, e.expires_at))
    else {
        return invalid_grant(false);
    };
    if revoke_first {
        revoke(st, family);
    }
    let Some(fam) = st.families.get(family) else {
        return invalid_grant(false);
    };
    if fam.client_id != client_id || fam.revoked {
        return invalid_grant(false);
    }
    if consumed {
        if shared.config.reuse_detection {
            revoke(st, family);
        }
        return invalid_grant(true);
    }
    if expires_at.is_some_and(|at| now >= at) {
        return invalid_grant(false);
    }

    let rotate = shared.config.rotate_refresh_tokens;
    if rotate && let Some(e) = st.refresh.get_mut(presented) {
        e.consumed = true;
    }
    let (access, refresh) = shared.mint(st, family, now, rotate);
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": shared.config.access_token_ttl.as_secs(),
    });
    if let Some(rt) = refresh {
        body["refresh_token"] = Value::from(rt);
        if let Some(ttl) = shared.config.refresh_token_ttl {
            body["refresh_token_expires_in"] = Value::from(ttl.as_secs());
        }
    }
    if let Some(scope) = &shared.config.scope {
        body["scope"] = Value::from(scope.as_str());
    }
    let response = match quirk {
        None => json_response(StatusCode::OK, &body),
        Some(quirk) => quirky_response(body, quirk),
    };
    (response, Outcome::Issued)
}

/// A successful token response with `quirk` applied.
fn quirky_response(mut body: Value, quirk: &ResponseQuirk) -> Response {
    let raw =
        |text: &str| serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::from(text));
    let mut content_type = "application/json";
    match quirk {
        ResponseQuirk::ScopeArray => body["scope"] = json!(["read", "write"]),
        ResponseQuirk::TokenType(t) => body["token_type"] = Value::from(t.as_str()),
        ResponseQuirk::ExpiresIn(text) => body["expires_in"] = raw(text),
        ResponseQuirk::RefreshTokenExpiresIn(text) => {
            body["refresh_token_expires_in"] = raw(text);
        }
        ResponseQuirk::HtmlContentType => content_type = "text/html; charset=utf-8",
        ResponseQuirk::LargeIdToken(len) => {
            let head = "eyJhbGciOiJub25lIn0.";
            let claims = "a".repeat(len.saturating_sub(head.len() + 1));
            body["id_token"] = Value::from(format!("{head}{claims}."));
        }
    }
    (
        StatusCode::OK,
        [(CONTENT_TYPE, content_type)],
        body.to_string(),
    )
        .into_response()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// An RFC 6749 section 5.2 error, with a description that (carelessly) echoes the refresh token.
fn oauth_error(status: StatusCode, code: &str, refresh_token: Option<&str>) -> Response {
    let description = format!(
        "{RAW_BODY_MARKER}: refresh token {} rejected",
        refresh_token.unwrap_or("-")
    );
    let mut r = json_response(
        status,
        &json!({ "error": code, "error_description": description }),
    );
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

fn fault_response(fault: &Fault, refresh_token: Option<&str>) -> Response {
    let echo = refresh_token.unwrap_or("-");
    let status = |s: u16| StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match fault {
        Fault::Status(s) => status(*s).into_response(),
        Fault::RateLimited {
            status: s,
            retry_after,
        } => {
            let mut r = (status(*s), format!("{RAW_BODY_MARKER} slow down")).into_response();
            if let Some(v) = retry_after
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                r.headers_mut().insert(RETRY_AFTER, v);
            }
            r
        }
        Fault::OAuthError { status: s, error } => oauth_error(status(*s), error, refresh_token),
        Fault::Malformed(kind) => malformed(*kind, echo),
        Fault::DropConnection => {
            let failing = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped"))
            });
            Response::new(Body::from_stream(failing))
        }
        // Handled before answering; never reaches here.
        Fault::Latency(_) | Fault::RevokeGrant | Fault::Quirk(_) => StatusCode::OK.into_response(),
    }
}

fn malformed(kind: MalformedBody, echo: &str) -> Response {
    match kind {
        MalformedBody::Empty => {
            (StatusCode::OK, [(CONTENT_TYPE, "application/json")], "").into_response()
        }
        MalformedBody::Html => (
            StatusCode::OK,
            [(CONTENT_TYPE, "text/html")],
            format!("<html><body>{RAW_BODY_MARKER} {echo}</body></html>"),
        )
            .into_response(),
        MalformedBody::NotJson => (
            StatusCode::OK,
            [(CONTENT_TYPE, "text/plain")],
            format!("access_token={echo}&{RAW_BODY_MARKER}"),
        )
            .into_response(),
        MalformedBody::MissingAccessToken => json_response(
            StatusCode::OK,
            &json!({ "token_type": "Bearer", "note": RAW_BODY_MARKER, "refresh_token": echo }),
        ),
        MalformedBody::Oversized(total) => {
            const CHUNK: usize = 8 * 1024;
            let head = format!("{{\"access_token\":\"{RAW_BODY_MARKER}\",\"pad\":\"");
            let chunks = std::iter::once(Bytes::from(head))
                .chain((0..total.div_ceil(CHUNK)).map(|_| Bytes::from(vec![b'a'; CHUNK])));
            let stream = futures_util::stream::iter(chunks.map(Ok::<_, std::io::Error>));
            (
                StatusCode::OK,
                [(CONTENT_TYPE, "application/json")],
                Body::from_stream(stream),
            )
                .into_response()
        }
    }
}

/// Reads the body (form or JSON) and the Basic credentials. `None` for an unreadable request.
async fn read_request(req: Request) -> Option<Incoming> {
    let headers: HeaderMap = req.headers().clone();
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let user_agent = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic);
    let (encoding, params) = if content_type.starts_with("application/json") {
        let bytes = axum::body::to_bytes(req.into_body(), 64 * 1024)
            .await
            .ok()?;
        let map: HashMap<String, Value> = serde_json::from_slice(&bytes).ok()?;
        let params = map
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k, s)),
                Value::Null => None,
                other => Some((k, other.to_string())),
            })
            .collect();
        ("json", params)
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let axum::Form(params) = axum::Form::<HashMap<String, String>>::from_request(req, &())
            .await
            .ok()?;
        ("form", params)
    } else {
        ("other", HashMap::new())
    };
    Some(Incoming {
        params,
        basic,
        encoding,
        user_agent,
    })
}

/// `Basic base64(form-encoded id ":" form-encoded secret)` (RFC 6749 section 2.3.1).
fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, b64) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// Decodes one `application/x-www-form-urlencoded` value.
fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = char::from(bytes.next()?).to_digit(16)?;
                let lo = char::from(bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("my+id:s%3Acret%2B")
        );
        assert_eq!(
            parse_basic(&v),
            Some(("my id".to_owned(), "s:cret+".to_owned()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
    }

    async fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(url)
            .form(form)
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn rotation_and_reuse_detection_revoke_the_family() {
        let server = TokenServer::start().await.expect("server starts");
        let g = server.issue_grant("cli");
        let refresh = |rt: String| {
            let url = server.url();
            async move {
                post_form(
                    &url,
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &rt),
                        ("client_id", "cli"),
                    ],
                )
                .await
            }
        };
        let (status, body) = refresh(g.refresh_token.clone()).await;
        assert_eq!(status, 200);
        let new_at = body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned();
        let new_rt = body["refresh_token"].as_str().expect("rotated").to_owned();
        assert_eq!(body["expires_in"], 3600);
        assert!(server.is_access_token_valid(&new_at));

        // The consumed token again: invalid_grant, and the whole family is revoked.
        let (status, body) = refresh(g.refresh_token.clone()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert!(!server.is_access_token_valid(&new_at));
        assert!(!server.is_refresh_token_valid(&new_rt));
        let (status, _) = refresh(new_rt).await;
        assert_eq!(status, 400);

        let stats = server.stats();
        assert_eq!(
            (
                stats.refreshes,
                stats.reused_refresh_tokens,
                stats.invalid_grants
            ),
            (1, 1, 2)
        );
        assert_eq!(stats.families_revoked, 1);
        let log = server.log();
        assert_eq!(log[1].outcome, Outcome::InvalidGrant { reused: true });
        assert_eq!(log[2].outcome, Outcome::InvalidGrant { reused: false });
    }

    #[tokio::test]
    async fn strict_about_clients_and_grant_types() {
        let server = TokenServer::start().await.expect("server starts");
        let g = server.issue_grant("cli");
        let url = server.url();
        let rt = g.refresh_token.as_str();
        let (s, b) = post_form(&url, &[("grant_type", "password"), ("client_id", "cli")]).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (400, Some("unsupported_grant_type"))
        );
        let (s, b) = post_form(
            &url,
            &[("grant_type", "refresh_token"), ("refresh_token", rt)],
        )
        .await;
        assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")));
        let other = [
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", "x"),
        ];
        let (s, _) = post_form(&url, &other).await;
        assert_eq!(s, 401, "unknown client");
        server.issue_grant("other");
        let (s, b) = post_form(
            &url,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", "other"),
            ],
        )
        .await;
        assert_eq!(
            (s, b["error"].as_str()),
            (400, Some("invalid_grant")),
            "token of another client"
        );
        assert!(
            server.is_refresh_token_valid(rt),
            "rejections consume nothing"
        );
    }

    #[tokio::test]
    async fn expiry_follows_the_injected_clock_and_faults_are_counted() {
        let clock = oauth_core::ManualClock::default();
        let server = TokenServer::start_with(TokenServerConfig {
            clock: Arc::new(clock.clone()),
            ..TokenServerConfig::default()
        })
        .await
        .expect("server starts");
        let g = server.issue_grant("cli");
        assert!(server.is_access_token_valid(&g.access_token));
        clock.advance(Duration::from_secs(3600));
        assert!(!server.is_access_token_valid(&g.access_token));

        server.inject_times(FaultTarget::Client("cli".into()), Fault::Status(502), 1);
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", g.refresh_token.as_str()),
            ("client_id", "cli"),
        ];
        let (s, _) = post_form(&server.url(), &form).await;
        assert_eq!(s, 502);
        let (s, _) = post_form(&server.url(), &form).await;
        assert_eq!(s, 200, "the fault was used up");
        assert_eq!(server.stats().faults_injected, 1);
    }

    #[tokio::test]
    async fn a_quirk_answers_oddly_but_honours_the_grant() {
        let server = TokenServer::start().await.expect("server starts");
        let g = server.issue_grant("cli");
        server.inject_times(
            FaultTarget::Any,
            Fault::Quirk(ResponseQuirk::ExpiresIn(r#""3600s""#.into())),
            1,
        );
        server.inject_times(
            FaultTarget::Any,
            Fault::Quirk(ResponseQuirk::HtmlContentType),
            1,
        );
        let form = |rt: &str| {
            [
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", rt.to_owned()),
                ("client_id", "cli".to_owned()),
            ]
        };
        let resp = reqwest::Client::new()
            .post(server.url())
            .form(&form(&g.refresh_token))
            .send()
            .await
            .expect("sent");
        let body: Value = resp.json().await.expect("JSON body");
        assert_eq!(body["expires_in"], "3600s");
        assert!(!server.is_refresh_token_valid(&g.refresh_token), "consumed");
        let rt = body["refresh_token"].as_str().expect("rotated").to_owned();
        assert!(server.is_refresh_token_valid(&rt));
        let resp = reqwest::Client::new()
            .post(server.url())
            .form(&form(&rt))
            .send()
            .await
            .expect("sent");
        let ct = resp.headers().get(CONTENT_TYPE).cloned();
        assert_eq!(
            ct.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/html; charset=utf-8")
        );
        let body: Value = serde_json::from_slice(&resp.bytes().await.expect("body")).expect("JSON");
        assert!(body["access_token"].is_string());
        assert_eq!(server.stats().refreshes, 2);
    }

    #[test]
    fn issued_grant_debug_is_redacted() {
        let g = IssuedGrant {
            client_id: "c".into(),
            access_token: "at-secret".into(),
            refresh_token: "rt-secret".into(),
            expires_in: Duration::from_secs(1),
            family: FamilyId(0),
        };
        let d = format!("{g:?}");
        assert!(!d.contains("at-secret") && !d.contains("rt-secret"));
    }
}
