//! Authorization code with PKCE on a loopback redirect (RFC 6749 section 4.1, RFC 7636, RFC 8252).

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header::{CONNECTION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use oauth_core::{Credential, SecretString};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::config::{AuthorizationCodeConfig, SigninOptions};
use crate::error::{Endpoint, OAuthErrorCode, SigninError};
use crate::pkce::{Pkce, constant_time_eq, random_token};
use crate::token::{self, Answer, Client, Param, Post};

/// How long the listener lets the browser's page finish after the flow is decided.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A started authorization-code sign-in: the loopback listener is bound, the authorization URL
/// is built. Show [`authorization_url`](Self::authorization_url) to the user (opening a browser is
/// the caller's business), then await [`finish`](Self::finish).
///
/// Dropping it, or dropping the `finish` future, closes the listener.
pub struct AuthorizationCodeSignin {
    config: AuthorizationCodeConfig,
    http: reqwest::Client,
    options: SigninOptions,
    pkce: Pkce,
    state: SecretString,
    listener: TcpListener,
    local_addr: SocketAddr,
    redirect_uri: String,
    authorization_url: String,
}

impl fmt::Debug for AuthorizationCodeSignin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationCodeSignin")
            .field("client_id", &self.config.client_id)
            .field("local_addr", &self.local_addr)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl AuthorizationCodeSignin {
    /// Binds the loopback listener (`127.0.0.1`, the configured port or an ephemeral one) and
    /// builds the authorization URL with a fresh PKCE pair and `state`.
    ///
    /// # Errors
    /// [`SigninError::Config`] for an authorization URL that does not parse or an empty client
    /// id; [`SigninError::Bind`] when the port is taken; [`SigninError::Random`].
    pub async fn start(
        config: AuthorizationCodeConfig,
        http: reqwest::Client,
        options: SigninOptions,
    ) -> Result<Self, SigninError> {
        Self::start_with_pkce(config, http, options, Pkce::generate()?).await
    }

    /// [`start`](Self::start) with a PKCE pair the caller made (one kept across a restart, or a
    /// test's).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn start_with_pkce(
        config: AuthorizationCodeConfig,
        http: reqwest::Client,
        options: SigninOptions,
        pkce: Pkce,
    ) -> Result<Self, SigninError> {
        if config.client_id.is_empty() {
            return Err(SigninError::Config {
                what: "the client id is empty",
            });
        }
        if !config.redirect_path.starts_with('/') {
            return Err(SigninError::Config {
                what: "the redirect path must start with '/'",
            });
        }
        let mut url = url::Url::parse(&config.authorize_url).map_err(|_| SigninError::Config {
            what: "the authorization URL does not parse",
        })?;
        let state = SecretString::from(random_token(32)?);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.redirect_port))
            .await
            .map_err(|e| SigninError::Bind {
                port: config.redirect_port,
                kind: e.kind(),
            })?;
        let local_addr = listener.local_addr().map_err(|e| SigninError::Bind {
            port: config.redirect_port,
            kind: e.kind(),
        })?;
        let redirect_uri = format!(
            "http://{}:{}{}",
            config.redirect_host.as_str(),
            local_addr.port(),
            config.redirect_path
        );
        {
            use oauth_core::ExposeSecret as _;
            let mut q = url.query_pairs_mut();
            for (k, v) in &config.extra_authorize_params {
                q.append_pair(k, v);
            }
            q.append_pair("response_type", "code")
                .append_pair("client_id", &config.client_id)
                .append_pair("redirect_uri", &redirect_uri);
            if !config.scopes.is_empty() {
                q.append_pair("scope", &config.scopes.join(" "));
            }
            q.append_pair("code_challenge", pkce.challenge())
                .append_pair("code_challenge_method", Pkce::METHOD)
                .append_pair("state", state.expose_secret());
        }
        Ok(Self {
            authorization_url: url.into(),
            config,
            http,
            options,
            pkce,
            state,
            listener,
            local_addr,
            redirect_uri,
        })
    }

    /// The URL the user opens in a browser. It carries the `state` and the PKCE challenge (not
    /// the verifier); show it to the user, do not log it.
    pub fn authorization_url(&self) -> &str {
        &self.authorization_url
    }

    /// The redirect URI sent to the provider.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Where the listener is bound (`127.0.0.1:PORT`).
    pub const fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the browser's redirect (at most the options' `redirect_timeout`), checks its
    /// `state` in constant time, exchanges the code at the token endpoint, and returns the
    /// credential with id `id`. The listener is closed when this returns, whatever the outcome,
    /// and when the future is dropped.
    ///
    /// Requests to other paths are answered 404 and do not end the wait; the first request to
    /// the redirect path decides the flow.
    ///
    /// # Errors
    /// [`SigninError::TimedOut`], [`SigninError::StateMismatch`], [`SigninError::Denied`] (the
    /// redirect carried an `error`), [`SigninError::MissingCode`], the exchange's errors (see
    /// [`exchange_code`]).
    pub async fn finish(self, id: &str) -> Result<Credential, SigninError> {
        let Self {
            config,
            http,
            options,
            pkce,
            state,
            listener,
            redirect_uri,
            ..
        } = self;
        let (tx, mut rx) = mpsc::channel::<Callback>(4);
        let app = Router::new()
            .route(&config.redirect_path, get(callback))
            .fallback(|| async { StatusCode::NOT_FOUND })
            .with_state(tx);
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        let serve = std::future::IntoFuture::into_future(serve);
        tokio::pin!(serve);

        let waited = tokio::select! {
            got = tokio::time::timeout(options.redirect_timeout, rx.recv()) => got,
            _ = &mut serve => Ok(None),
        };
        let result = match waited {
            Err(_) => Err(SigninError::TimedOut {
                timeout: options.redirect_timeout,
            }),
            Ok(None) => Err(SigninError::ListenerStopped),
            Ok(Some(cb)) => {
                let outcome = decide(&cb.params, &state);
                let result = match outcome {
                    Ok(code) => {
                        let exchange = ExchangeRequest {
                            code: &code,
                            pkce: &pkce,
                            redirect_uri: &redirect_uri,
                            state: Some(&state),
                        };
                        exchange_code(&config, &http, &options, &exchange, id).await
                    }
                    Err(e) => Err(e),
                };
                let _ = cb.reply.send(result.is_ok());
                result
            }
        };
        // Let the page reach the browser, then close the listener.
        let _ = stop.send(());
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut serve).await;
        result
    }

    /// Exchanges a code the user pasted (the provider showed it instead of redirecting, or the
    /// browser ran on another machine), after checking the pasted `state`. Closes the listener.
    ///
    /// # Errors
    /// [`SigninError::StateMismatch`] and the exchange's errors (see [`exchange_code`]).
    pub async fn finish_with_code(
        self,
        code: &str,
        state: &str,
        id: &str,
    ) -> Result<Credential, SigninError> {
        drop(self.listener);
        if !constant_time_eq(state, &self.state) {
            return Err(SigninError::StateMismatch);
        }
        let exchange = ExchangeRequest {
            code,
            pkce: &self.pkce,
            redirect_uri: &self.redirect_uri,
            state: Some(&self.state),
        };
        exchange_code(&self.config, &self.http, &self.options, &exchange, id).await
    }
}

/// What the token request of an authorization-code exchange carries.
#[derive(Clone, Copy)]
pub struct ExchangeRequest<'a> {
    /// The authorization code.
    pub code: &'a str,
    /// The PKCE pair whose verifier is sent.
    pub pkce: &'a Pkce,
    /// The redirect URI used in the authorization request (sent again, RFC 6749 section 4.1.3).
    pub redirect_uri: &'a str,
    /// The `state`, sent only when the config asks for it.
    pub state: Option<&'a SecretString>,
}

impl fmt::Debug for ExchangeRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("code", &"[REDACTED]")
            .field("pkce", self.pkce)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// The token request of the authorization code grant (RFC 6749 section 4.1.3 with the RFC 7636
/// `code_verifier`), and the credential built from its answer.
///
/// [`AuthorizationCodeSignin`] calls it; it is public for a code obtained some other way.
///
/// # Errors
/// [`SigninError::TokenEndpoint`] for a refusal (`invalid_grant` for a wrong verifier, a reused
/// or an expired code), [`SigninError::Http`], [`SigninError::Transport`],
/// [`SigninError::Malformed`], [`SigninError::Credential`] for an invalid `id`.
pub async fn exchange_code(
    config: &AuthorizationCodeConfig,
    http: &reqwest::Client,
    options: &SigninOptions,
    request: &ExchangeRequest<'_>,
    id: &str,
) -> Result<Credential, SigninError> {
    // Validate the id before a code is spent on it.
    oauth_core::CredentialId::new(id)?;
    let mut params = vec![
        ("grant_type", Param::Plain("authorization_code")),
        ("code", Param::Plain(request.code)),
        ("redirect_uri", Param::Plain(request.redirect_uri)),
        ("client_id", Param::Plain(&config.client_id)),
        ("code_verifier", Param::Secret(request.pkce.verifier())),
    ];
    if let Some(secret) = &config.client_secret {
        params.push(("client_secret", Param::Secret(secret)));
    }
    if config.state_in_token_request
        && let Some(state) = request.state
    {
        params.push(("state", Param::Secret(state)));
    }
    let answer = token::send(
        http,
        Post {
            endpoint: Endpoint::Token,
            url: &config.token_url,
            encoding: config.token_encoding,
            params,
            headers: &config.headers,
            timeout: options.request_timeout,
        },
    )
    .await?;
    match answer {
        Answer::Success(body) => token::into_credential(
            body,
            &Client {
                id,
                client_id: &config.client_id,
                client_secret: config.client_secret.as_ref(),
                requested_scopes: &config.scopes,
            },
            options.clock.now(),
        ),
        Answer::OAuthError { status, code } => Err(SigninError::TokenEndpoint { status, code }),
    }
}

/// A redirect that reached the listener, with the channel to tell the page the outcome.
struct Callback {
    params: HashMap<String, String>,
    reply: oneshot::Sender<bool>,
}

async fn callback(
    State(tx): State<mpsc::Sender<Callback>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let (reply, outcome) = oneshot::channel();
    if tx.send(Callback { params, reply }).await.is_err() {
        return page(StatusCode::GONE, "This sign-in is no longer waiting.");
    }
    match outcome.await {
        Ok(true) => page(
            StatusCode::OK,
            "Signed in. You can close this tab and return to the terminal.",
        ),
        _ => page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed. Return to the terminal for details.",
        ),
    }
}

fn page(status: StatusCode, text: &str) -> Response {
    let mut r = (
        status,
        format!("<!doctype html><title>Sign-in</title><p>{text}</p>"),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The code of a redirect, after its `state` (checked first, in constant time) and `error`.
fn decide(params: &HashMap<String, String>, state: &SecretString) -> Result<String, SigninError> {
    let state_ok = params
        .get("state")
        .is_some_and(|s| constant_time_eq(s, state));
    if !state_ok {
        return Err(SigninError::StateMismatch);
    }
    if let Some(error) = params.get("error") {
        return Err(SigninError::Denied {
            code: OAuthErrorCode::parse(error),
        });
    }
    match params.get("code") {
        Some(code) if !code.is_empty() => Ok(code.clone()),
        _ => Err(SigninError::MissingCode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn state_is_checked_before_anything_else() {
        let state = SecretString::from("s1".to_owned());
        assert!(matches!(
            decide(&params(&[("code", "c"), ("state", "s2")]), &state),
            Err(SigninError::StateMismatch)
        ));
        assert!(matches!(
            decide(&params(&[("error", "access_denied")]), &state),
            Err(SigninError::StateMismatch)
        ));
        assert!(matches!(
            decide(
                &params(&[("error", "access_denied"), ("state", "s1")]),
                &state
            ),
            Err(SigninError::Denied {
                code: OAuthErrorCode::AccessDenied
            })
        ));
        assert!(matches!(
            decide(&params(&[("state", "s1")]), &state),
            Err(SigninError::MissingCode)
        ));
        assert_eq!(
            decide(&params(&[("code", "c"), ("state", "s1")]), &state).ok(),
            Some("c".to_owned())
        );
    }
}
