//! How a sign-in talks to a provider: the flow's endpoints, client, scopes and quirks, and the
//! options that do not depend on the provider (timeouts, the clock).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use oauth_core::{Clock, SecretString, SystemClock};

/// How the token endpoint wants its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Encoding {
    /// `application/x-www-form-urlencoded` (RFC 6749).
    #[default]
    Form,
    /// `application/json` (Anthropic's token endpoint).
    Json,
}

/// The host the redirect URI names. The listener always binds `127.0.0.1` (RFC 8252 section
/// 8.3: a loopback IP literal, never a name that could resolve elsewhere); some providers only
/// registered a `localhost` redirect, which browsers resolve to the loopback interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RedirectHost {
    /// `http://127.0.0.1:PORT/...` (RFC 8252 section 7.3).
    #[default]
    LoopbackIp,
    /// `http://localhost:PORT/...`.
    Localhost,
}

impl RedirectHost {
    /// The host as written in the redirect URI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LoopbackIp => "127.0.0.1",
            Self::Localhost => "localhost",
        }
    }
}

/// The authorization code grant with PKCE on a loopback redirect (RFC 6749 section 4.1, RFC
/// 7636, RFC 8252).
#[derive(Clone)]
#[non_exhaustive]
pub struct AuthorizationCodeConfig {
    /// The authorization endpoint the user's browser opens.
    pub authorize_url: String,
    /// The token endpoint the code is exchanged at.
    pub token_url: String,
    /// The OAuth client id (public).
    pub client_id: String,
    /// The client secret, for clients that have one (Google's installed-app clients).
    pub client_secret: Option<SecretString>,
    /// Scopes requested (space-joined into `scope`).
    pub scopes: Vec<String>,
    /// The host the redirect URI names.
    pub redirect_host: RedirectHost,
    /// The loopback port: 0 for an ephemeral one (RFC 8252 section 7.3), or the fixed port a
    /// provider registered.
    pub redirect_port: u16,
    /// The redirect path (`/callback`, ...).
    pub redirect_path: String,
    /// Extra query parameters for the authorization URL.
    pub extra_authorize_params: Vec<(String, String)>,
    /// How the token request is encoded.
    pub token_encoding: Encoding,
    /// Send `state` in the token request too (Anthropic's endpoint wants it).
    pub state_in_token_request: bool,
    /// Extra headers on token requests (a `User-Agent` some endpoints insist on).
    pub headers: Vec<(String, String)>,
}

impl AuthorizationCodeConfig {
    /// A config with an ephemeral `127.0.0.1` port, `/callback`, a form-encoded token request,
    /// and no scopes.
    pub fn new(
        authorize_url: impl Into<String>,
        token_url: impl Into<String>,
        client_id: impl Into<String>,
    ) -> Self {
        Self {
            authorize_url: authorize_url.into(),
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: None,
            scopes: Vec::new(),
            redirect_host: RedirectHost::LoopbackIp,
            redirect_port: 0,
            redirect_path: "/callback".to_owned(),
            extra_authorize_params: Vec::new(),
            token_encoding: Encoding::Form,
            state_in_token_request: false,
            headers: Vec::new(),
        }
    }

    /// Sets the scopes.
    #[must_use]
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the client secret.
    #[must_use]
    pub fn with_client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(SecretString::from(secret.into()));
        self
    }

    /// Sets the redirect URI's host, port (0: ephemeral) and path.
    #[must_use]
    pub fn with_redirect(mut self, host: RedirectHost, port: u16, path: impl Into<String>) -> Self {
        self.redirect_host = host;
        self.redirect_port = port;
        self.redirect_path = path.into();
        self
    }

    /// Adds a query parameter to the authorization URL.
    #[must_use]
    pub fn with_authorize_param(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.extra_authorize_params
            .push((name.into(), value.into()));
        self
    }

    /// Sets the token request's encoding.
    #[must_use]
    pub const fn with_token_encoding(mut self, encoding: Encoding) -> Self {
        self.token_encoding = encoding;
        self
    }

    /// Sends `state` in the token request.
    #[must_use]
    pub const fn with_state_in_token_request(mut self, on: bool) -> Self {
        self.state_in_token_request = on;
        self
    }

    /// Adds a header to token requests.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Points the flow at other endpoints (a test server, a proxy).
    #[must_use]
    pub fn with_endpoints(
        mut self,
        authorize_url: impl Into<String>,
        token_url: impl Into<String>,
    ) -> Self {
        self.authorize_url = authorize_url.into();
        self.token_url = token_url.into();
        self
    }
}

impl fmt::Debug for AuthorizationCodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationCodeConfig")
            .field("authorize_url", &self.authorize_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("scopes", &self.scopes)
            .field("redirect_host", &self.redirect_host)
            .field("redirect_port", &self.redirect_port)
            .field("redirect_path", &self.redirect_path)
            .field(
                "extra_authorize_params",
                &self
                    .extra_authorize_params
                    .iter()
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>(),
            )
            .field("token_encoding", &self.token_encoding)
            .field("state_in_token_request", &self.state_in_token_request)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The device authorization grant (RFC 8628), optionally with PKCE (Qwen).
#[derive(Clone)]
#[non_exhaustive]
pub struct DeviceConfig {
    /// The device authorization endpoint.
    pub device_authorization_url: String,
    /// The token endpoint polled for the tokens.
    pub token_url: String,
    /// The OAuth client id (public).
    pub client_id: String,
    /// The client secret, for clients that have one.
    pub client_secret: Option<SecretString>,
    /// Scopes requested.
    pub scopes: Vec<String>,
    /// Send a PKCE challenge with the device request and the verifier with each poll.
    pub pkce: bool,
    /// How requests are encoded.
    pub encoding: Encoding,
    /// Extra headers on every request.
    pub headers: Vec<(String, String)>,
}

impl DeviceConfig {
    /// A config without PKCE, form-encoded, with no scopes.
    pub fn new(
        device_authorization_url: impl Into<String>,
        token_url: impl Into<String>,
        client_id: impl Into<String>,
    ) -> Self {
        Self {
            device_authorization_url: device_authorization_url.into(),
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: None,
            scopes: Vec::new(),
            pkce: false,
            encoding: Encoding::Form,
            headers: Vec::new(),
        }
    }

    /// Sets the scopes.
    #[must_use]
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Turns PKCE on or off.
    #[must_use]
    pub const fn with_pkce(mut self, on: bool) -> Self {
        self.pkce = on;
        self
    }

    /// Sets the client secret.
    #[must_use]
    pub fn with_client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(SecretString::from(secret.into()));
        self
    }

    /// Adds a header to every request.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Points the flow at other endpoints (a test server, a proxy).
    #[must_use]
    pub fn with_endpoints(
        mut self,
        device_authorization_url: impl Into<String>,
        token_url: impl Into<String>,
    ) -> Self {
        self.device_authorization_url = device_authorization_url.into();
        self.token_url = token_url.into();
        self
    }
}

impl fmt::Debug for DeviceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceConfig")
            .field("device_authorization_url", &self.device_authorization_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("scopes", &self.scopes)
            .field("pkce", &self.pkce)
            .field("encoding", &self.encoding)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Which flow a provider signs in with, and how.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SigninFlow {
    /// Authorization code with PKCE on a loopback redirect.
    AuthorizationCode(AuthorizationCodeConfig),
    /// The device authorization grant.
    Device(DeviceConfig),
}

impl SigninFlow {
    /// Sets the client secret of either flow (Google's installed-app client needs one).
    #[must_use]
    pub fn with_client_secret(self, secret: impl Into<String>) -> Self {
        match self {
            Self::AuthorizationCode(c) => Self::AuthorizationCode(c.with_client_secret(secret)),
            Self::Device(c) => Self::Device(c.with_client_secret(secret)),
        }
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        match self {
            Self::AuthorizationCode(c) => &c.client_id,
            Self::Device(c) => &c.client_id,
        }
    }
}

/// What does not depend on the provider.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SigninOptions {
    /// How long the loopback listener waits for the redirect. Default five minutes (Gemini
    /// CLI's). Device flows wait for the device code's own `expires_in`.
    pub redirect_timeout: Duration,
    /// Timeout of each HTTP request. Default 30 s. `None` leaves timeouts to the client; tests on
    /// tokio's paused clock need `None`, because a paused runtime jumps to the next timer while a
    /// request waits on a socket.
    pub request_timeout: Option<Duration>,
    /// Device flow: consecutive transport failures tolerated while polling (each one doubles the
    /// interval, RFC 8628 section 3.5) before the sign-in fails. Default 3.
    pub max_poll_failures: u32,
    /// The clock that dates the credential (`created_at`, `expires_at`). Waiting (the redirect
    /// timeout, polling intervals) goes through tokio's timer instead, so tests use tokio's
    /// paused clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for SigninOptions {
    fn default() -> Self {
        Self {
            redirect_timeout: Duration::from_secs(5 * 60),
            request_timeout: Some(Duration::from_secs(30)),
            max_poll_failures: 3,
            clock: Arc::new(SystemClock),
        }
    }
}

impl SigninOptions {
    /// Sets the redirect timeout.
    #[must_use]
    pub const fn with_redirect_timeout(mut self, timeout: Duration) -> Self {
        self.redirect_timeout = timeout;
        self
    }

    /// Sets (or, with `None`, removes) the per-request timeout.
    #[must_use]
    pub const fn with_request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}
