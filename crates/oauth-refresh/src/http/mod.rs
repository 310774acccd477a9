//! `HttpRefresher`: the RFC 6749 section 6 refresh-token grant over reqwest (rustls).

mod response;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use oauth_core::{
    Clock, Credential, ExposeSecret, SecretString, SystemClock, TokenQuirk, TokenSet,
    parse_retry_after,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use thiserror::Error;

pub use self::response::{
    MAX_ACCESS_TOKEN_LIFETIME, MissingExpiry, TokenResponse, parse_error_response,
    parse_token_response,
};
use crate::error::RefreshError;
use crate::refresher::Refresher;

/// How the client authenticates to the token endpoint (RFC 6749 section 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded client id and secret (`client_secret_basic`).
    Basic,
    /// `client_id` and `client_secret` in the request body (`client_secret_post`).
    #[default]
    RequestBody,
    /// A public client: `client_id` in the body, no secret (`none`).
    None,
}

/// How the request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Encoding {
    /// `application/x-www-form-urlencoded`, as RFC 6749 requires.
    #[default]
    Form,
    /// `application/json`, for providers that require it (Anthropic, OpenAI).
    Json,
}

/// What client configuration an endpoint must carry itself, before any credential is seen.
///
/// The provider presets require their CLI's client (the credential files the CLIs write carry
/// no client id), so a preset stripped of it fails at
/// [`build`](HttpRefresherBuilder::build) with a typed [`HttpBuildError`] instead of failing
/// every refresh later as misconfigured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientRequirement {
    /// Nothing: each credential may carry its own client id (and secret). The default of
    /// [`TokenEndpoint::new`].
    #[default]
    None,
    /// A default client id ([`TokenEndpoint::default_client_id`]).
    ClientId,
    /// A default client id and secret (an installed-application client such as Gemini CLI's).
    ClientIdAndSecret,
}

/// A token endpoint and how to talk to it. Start from [`TokenEndpoint::new`] or a
/// [preset](crate::presets); every field stays configurable.
///
/// `Debug` shows the URL without its query, and the names but not the values of extra headers
/// and parameters (an API key may be configured there).
#[derive(Clone)]
#[non_exhaustive]
pub struct TokenEndpoint {
    /// The token endpoint URL (`http` or `https`).
    pub url: String,
    /// Client authentication.
    pub client_auth: ClientAuth,
    /// Request body encoding.
    pub encoding: Encoding,
    /// `scope` to send with the refresh, if any.
    pub scope: Option<String>,
    /// Headers the provider requires (User-Agent, beta flags).
    pub extra_headers: Vec<(String, String)>,
    /// Extra body parameters.
    pub extra_params: Vec<(String, String)>,
    /// Client id used when the credential has none (the provider CLI's public client id).
    pub default_client_id: Option<String>,
    /// Client secret used when the credential has none.
    pub default_client_secret: Option<SecretString>,
    /// What to assume when the response has no `expires_in`.
    pub missing_expiry: MissingExpiry,
    /// What client configuration the endpoint itself must carry (checked by
    /// [`build`](HttpRefresherBuilder::build)).
    pub client_requirement: ClientRequirement,
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |pairs: &[(String, String)]| -> Vec<String> {
            pairs
                .iter()
                .map(|(name, _)| format!("{name}: [REDACTED]"))
                .collect()
        };
        let url = self.url.split(['?', '#']).next().unwrap_or_default();
        f.debug_struct("TokenEndpoint")
            .field("url", &url)
            .field("client_auth", &self.client_auth)
            .field("encoding", &self.encoding)
            .field("scope", &self.scope)
            .field("extra_headers", &names(&self.extra_headers))
            .field("extra_params", &names(&self.extra_params))
            .field("default_client_id", &self.default_client_id)
            .field("default_client_secret", &self.default_client_secret)
            .field("missing_expiry", &self.missing_expiry)
            .field("client_requirement", &self.client_requirement)
            .finish()
    }
}

impl TokenEndpoint {
    /// A form-encoded endpoint with client authentication in the body.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_auth: ClientAuth::default(),
            encoding: Encoding::default(),
            scope: None,
            extra_headers: Vec::new(),
            extra_params: Vec::new(),
            default_client_id: None,
            default_client_secret: None,
            missing_expiry: MissingExpiry::default(),
            client_requirement: ClientRequirement::None,
        }
    }

    /// Replaces the URL (for example to point a preset at a test server).
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Sets the client authentication.
    #[must_use]
    pub const fn with_client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// Sets the body encoding.
    #[must_use]
    pub const fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Sets the scope to request.
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }

    /// Adds a body parameter.
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_params.push((name.into(), value.into()));
        self
    }

    /// Sets the client id (and secret) used for credentials that carry none.
    #[must_use]
    pub fn with_default_client(mut self, id: impl Into<String>, secret: Option<String>) -> Self {
        self.default_client_id = Some(id.into());
        self.default_client_secret = secret.map(SecretString::from);
        self
    }

    /// Sets what client configuration the endpoint itself must carry.
    #[must_use]
    pub const fn with_client_requirement(mut self, requirement: ClientRequirement) -> Self {
        self.client_requirement = requirement;
        self
    }

    /// Sets what to assume when the response has no `expires_in`.
    #[must_use]
    pub const fn with_missing_expiry(mut self, missing: MissingExpiry) -> Self {
        self.missing_expiry = missing;
        self
    }
}

/// Building an [`HttpRefresher`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HttpBuildError {
    /// The URL does not parse or is not `http`/`https`.
    #[error("invalid token endpoint URL")]
    InvalidUrl,
    /// A configured header name or value is invalid (the value is not echoed).
    #[error("invalid extra header `{name}`")]
    InvalidHeader {
        /// The header name as configured.
        name: String,
    },
    /// An extra parameter would replace a field of the grant itself.
    #[error("extra parameter `{name}` is a field of the refresh grant and cannot be overridden")]
    ReservedParam {
        /// The parameter name as configured.
        name: String,
    },
    /// The HTTP client could not be built (TLS initialisation).
    #[error("could not build the HTTP client")]
    Client,
    /// The endpoint requires a default client id ([`ClientRequirement`]) and has none: a
    /// configuration mistake, reported before any refresh (set it with
    /// [`TokenEndpoint::with_default_client`]).
    #[error("the token endpoint needs a default client id and has none")]
    MissingClientId,
    /// The endpoint requires a default client secret ([`ClientRequirement::ClientIdAndSecret`])
    /// and has none.
    #[error("the token endpoint needs a default client secret and has none")]
    MissingClientSecret,
}

impl HttpBuildError {
    /// The [`FailureKind`](oauth_core::FailureKind) a refresh would have failed with:
    /// [`Misconfigured`](oauth_core::FailureKind::Misconfigured) for every build error (they are
    /// all configuration mistakes, which a configuration fix clears without a sign-in).
    pub const fn kind(&self) -> oauth_core::FailureKind {
        oauth_core::FailureKind::Misconfigured
    }
}

/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default timeout of the whole request, body included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The default cap on a successful response body (1 MiB). Token responses are usually a few
/// hundred bytes, but an id token with many claims can reach tens of kilobytes, and a success
/// cut off at the cap loses the rotated refresh token, so the cap is generous.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The default cap on an error response body (16 KiB): only its `error` code is read.
pub const DEFAULT_MAX_ERROR_BODY_BYTES: usize = 16 * 1024;

/// Configures an [`HttpRefresher`].
#[derive(Debug)]
pub struct HttpRefresherBuilder {
    endpoint: TokenEndpoint,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_response_bytes: usize,
    max_error_body_bytes: usize,
    clock: Arc<dyn Clock>,
    client: Option<reqwest::Client>,
}

impl HttpRefresherBuilder {
    /// Connect timeout (default 10 s). Ignored with a caller-supplied [`client`](Self::client).
    #[must_use]
    pub const fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Timeout of the whole exchange, body included (default 30 s).
    #[must_use]
    pub const fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Cap on a successful (2xx) response body (default 1 MiB,
    /// [`DEFAULT_MAX_RESPONSE_BYTES`]); reading stops there.
    #[must_use]
    pub const fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// Cap on an error (non-2xx) response body (default 16 KiB,
    /// [`DEFAULT_MAX_ERROR_BODY_BYTES`]); a larger one is read no further and reported by its
    /// status alone.
    #[must_use]
    pub const fn max_error_body_bytes(mut self, n: usize) -> Self {
        self.max_error_body_bytes = n;
        self
    }

    /// The clock that turns `expires_in` into an absolute expiry (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses this reqwest client (proxies, custom roots). It must not follow redirects: a token
    /// request must not be replayed to another host.
    #[must_use]
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the refresher.
    ///
    /// # Errors
    /// [`HttpBuildError`] for an invalid URL or header, or a client that cannot be built.
    pub fn build(self) -> Result<HttpRefresher, HttpBuildError> {
        let url =
            reqwest::Url::parse(&self.endpoint.url).map_err(|_| HttpBuildError::InvalidUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpBuildError::InvalidUrl);
        }
        const GRANT_FIELDS: [&str; 5] = [
            "grant_type",
            "refresh_token",
            "client_id",
            "client_secret",
            "scope",
        ];
        if let Some((name, _)) = self
            .endpoint
            .extra_params
            .iter()
            .find(|(name, _)| GRANT_FIELDS.contains(&name.as_str()))
        {
            return Err(HttpBuildError::ReservedParam { name: name.clone() });
        }
        let ep = &self.endpoint;
        let has_id = ep
            .default_client_id
            .as_deref()
            .is_some_and(|id| !id.is_empty());
        let has_secret = ep
            .default_client_secret
            .as_ref()
            .is_some_and(|s| !s.expose_secret().is_empty());
        match ep.client_requirement {
            ClientRequirement::None => {}
            ClientRequirement::ClientId if !has_id => return Err(HttpBuildError::MissingClientId),
            ClientRequirement::ClientIdAndSecret if !has_id => {
                return Err(HttpBuildError::MissingClientId);
            }
            ClientRequirement::ClientIdAndSecret if !has_secret => {
                return Err(HttpBuildError::MissingClientSecret);
            }
            ClientRequirement::ClientId | ClientRequirement::ClientIdAndSecret => {}
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        for (name, value) in &self.endpoint.extra_headers {
            let invalid = || HttpBuildError::InvalidHeader { name: name.clone() };
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            let v = HeaderValue::from_str(value).map_err(|_| invalid())?;
            headers.insert(n, v);
        }
        let client = match self.client {
            Some(c) => c,
            None => reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .timeout(self.request_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|_| HttpBuildError::Client)?,
        };
        Ok(HttpRefresher {
            endpoint: self.endpoint,
            url,
            headers,
            request_timeout: self.request_timeout,
            max_response_bytes: self.max_response_bytes,
            max_error_body_bytes: self.max_error_body_bytes,
            clock: self.clock,
            client,
        })
    }
}

/// The RFC 6749 section 6 refresh-token grant over HTTPS (reqwest with rustls, no OpenSSL).
///
/// One POST per refresh: `grant_type=refresh_token`, the refresh token, client authentication
/// and scope as the [`TokenEndpoint`] says, form- or JSON-encoded. The response is read up to a
/// size cap and parsed with [`parse_token_response`] into a [`TokenSet`] (apply it with
/// [`Credential::apply_tokens`]: a rotated refresh token replaces the old one, a missing one
/// keeps it). Failures are classified (see [`RefreshError::kind`]): RFC 6749
/// section 5.2 codes, 429 and 503 with `Retry-After` as rate limits, other 5xx, timeouts and
/// connection errors as transient, malformed or oversized bodies as typed errors. No error
/// carries a token, a secret or the response body.
///
/// Redirects are not followed.
#[derive(Clone)]
pub struct HttpRefresher {
    endpoint: TokenEndpoint,
    url: reqwest::Url,
    headers: HeaderMap,
    request_timeout: Duration,
    max_response_bytes: usize,
    max_error_body_bytes: usize,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
}

impl fmt::Debug for HttpRefresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRefresher")
            .field("endpoint", &self.endpoint)
            .field("request_timeout", &self.request_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_error_body_bytes", &self.max_error_body_bytes)
            .finish_non_exhaustive()
    }
}

impl HttpRefresher {
    /// Starts configuring a refresher for `endpoint`.
    pub fn builder(endpoint: TokenEndpoint) -> HttpRefresherBuilder {
        HttpRefresherBuilder {
            endpoint,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_error_body_bytes: DEFAULT_MAX_ERROR_BODY_BYTES,
            clock: Arc::new(SystemClock),
            client: None,
        }
    }

    /// The endpoint configuration.
    pub const fn endpoint(&self) -> &TokenEndpoint {
        &self.endpoint
    }

    fn request(&self, credential: &Credential) -> Result<reqwest::RequestBuilder, RefreshError> {
        let id = || credential.id.clone();
        let refresh_token = credential
            .refresh_token
            .as_ref()
            .ok_or_else(|| RefreshError::NoRefreshToken { id: id() })?;
        let ep = &self.endpoint;
        let client_id = Some(credential.client_id.as_str())
            .filter(|c| !c.is_empty())
            .or(ep.default_client_id.as_deref());
        let secret = credential
            .client_secret
            .as_ref()
            .or(ep.default_client_secret.as_ref())
            .map(ExposeSecret::expose_secret);

        let mut params: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ];
        let mut req = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .timeout(self.request_timeout);
        let missing = |what| RefreshError::ClientConfig {
            id: id(),
            missing: what,
        };
        match ep.client_auth {
            ClientAuth::Basic => {
                let cid = client_id.ok_or_else(|| missing("a client id"))?;
                let sec = secret.ok_or_else(|| missing("a client secret for HTTP Basic"))?;
                req = req.basic_auth(form_encode(cid), Some(form_encode(sec)));
            }
            ClientAuth::RequestBody => {
                params.push((
                    "client_id",
                    client_id.ok_or_else(|| missing("a client id"))?,
                ));
                if let Some(sec) = secret {
                    params.push(("client_secret", sec));
                }
            }
            ClientAuth::None => {
                if let Some(cid) = client_id {
                    params.push(("client_id", cid));
                }
            }
        }
        if let Some(scope) = &ep.scope {
            params.push(("scope", scope));
        }
        params.extend(
            ep.extra_params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        Ok(match ep.encoding {
            Encoding::Form => req.form(&params),
            Encoding::Json => {
                let body: serde_json::Map<String, serde_json::Value> = params
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
                    .collect();
                req.json(&body)
            }
        })
    }

    /// Reads at most `cap` bytes; `Ok(None)` when the body is larger (reading stopped).
    async fn read_capped(
        mut resp: reqwest::Response,
        cap: usize,
    ) -> Result<Option<Vec<u8>>, RefreshError> {
        if resp
            .content_length()
            .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > cap))
        {
            return Ok(None);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > cap {
                return Ok(None);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }
}

#[async_trait]
impl Refresher for HttpRefresher {
    async fn refresh(&self, credential: &Credential) -> Result<TokenSet, RefreshError> {
        let req = self.request(credential)?;
        let resp = req.send().await.map_err(transport_error)?;
        let now = self.clock.now();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now).ok());
        let json_content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));

        match status {
            429 => {
                return Err(RefreshError::RateLimited {
                    status,
                    retry_after,
                });
            }
            503 if retry_after.is_some() => {
                return Err(RefreshError::RateLimited {
                    status,
                    retry_after,
                });
            }
            500..=599 => return Err(RefreshError::Server { status }),
            _ => {}
        }
        let success = (200..300).contains(&status);
        let cap = if success {
            self.max_response_bytes
        } else {
            self.max_error_body_bytes
        };
        let Some(body) = Self::read_capped(resp, cap).await? else {
            return Err(if success {
                RefreshError::ResponseTooLarge { limit: cap }
            } else {
                RefreshError::UnexpectedStatus { status }
            });
        };
        if success {
            // A usable access token in a success response is never discarded: the presented
            // refresh token is spent, and the response may carry its replacement. Whatever else
            // is odd (the Content-Type, a stray `error` member, a field the parser dislikes)
            // becomes a quirk.
            return match parse_token_response(&body) {
                Ok(parsed) => {
                    let mut tokens = parsed.into_token_set(now, self.endpoint.missing_expiry);
                    if !json_content_type {
                        tokens.quirks.push(TokenQuirk::NotJsonContentType);
                    }
                    Ok(tokens)
                }
                // No token: a 5.2 error body on a 2xx, as some providers send, or garbage.
                Err(reason) => Err(match parse_error_response(&body) {
                    Some(code) => RefreshError::OAuth {
                        status,
                        code,
                        retry_after,
                    },
                    None => RefreshError::Malformed { reason },
                }),
            };
        }
        match parse_error_response(&body) {
            Some(code) if (400..500).contains(&status) => Err(RefreshError::OAuth {
                status,
                code,
                retry_after,
            }),
            _ => Err(RefreshError::UnexpectedStatus { status }),
        }
    }
}

/// Maps a reqwest error to a classified error, keeping nothing of its text (which can hold the
/// URL, and some servers put tokens in URLs).
fn transport_error(e: reqwest::Error) -> RefreshError {
    if e.is_timeout() {
        RefreshError::Timeout
    } else if e.is_connect() {
        RefreshError::Connect
    } else {
        RefreshError::Network
    }
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749 section 2.3.1 requires it
/// for the Basic credentials).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_of_basic_credentials() {
        assert_eq!(form_encode("a b+c/d:é"), "a+b%2Bc%2Fd%3A%C3%A9");
        assert_eq!(form_encode("plain-ID_1.*"), "plain-ID_1.*");
    }

    #[test]
    fn build_rejects_bad_urls_and_headers() {
        let bad = HttpRefresher::builder(TokenEndpoint::new("ftp://x/token")).build();
        assert_eq!(bad.err(), Some(HttpBuildError::InvalidUrl));
        let bad = HttpRefresher::builder(
            TokenEndpoint::new("https://x/token").with_header("bad header", "v"),
        )
        .build();
        assert!(matches!(bad, Err(HttpBuildError::InvalidHeader { .. })));
    }

    #[test]
    fn debug_redacts_the_default_secret() {
        let ep = TokenEndpoint::new("https://x/token")
            .with_default_client("cid", Some("very-secret".to_owned()));
        let r = HttpRefresher::builder(ep).build().expect("builds");
        assert!(!format!("{r:?}").contains("very-secret"));
    }
}
