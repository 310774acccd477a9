//! The device authorization grant (RFC 8628), with PKCE when the provider wants it (Qwen).

use std::fmt;
use std::time::Duration;

use oauth_core::{Credential, SecretString};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{DeviceConfig, SigninOptions};
use crate::error::{Endpoint, OAuthErrorCode, SigninError};
use crate::pkce::Pkce;
use crate::token::{self, Answer, Client, Param, Post};

/// The polling interval when the server names none (RFC 8628 section 3.2).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// How much `slow_down` adds to the interval (RFC 8628 section 3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// Longest interval the poller accepts from a server or reaches by backing off.
const MAX_INTERVAL: Duration = Duration::from_secs(120);
/// Longest `expires_in` accepted.
const MAX_EXPIRES_IN: Duration = Duration::from_secs(3600);

/// A started device sign-in: the device code is issued. Show the user
/// [`user_code`](Self::user_code) and [`verification_uri`](Self::verification_uri) (or
/// [`verification_uri_complete`](Self::verification_uri_complete)), then await
/// [`finish`](Self::finish), which polls until the user approves.
pub struct DeviceSignin {
    config: DeviceConfig,
    http: reqwest::Client,
    options: SigninOptions,
    pkce: Option<Pkce>,
    device_code: SecretString,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: Duration,
    interval: Duration,
    issued: Instant,
}

impl fmt::Debug for DeviceSignin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceSignin")
            .field("client_id", &self.config.client_id)
            .field("verification_uri", &self.verification_uri)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl DeviceSignin {
    /// Requests a device code (RFC 8628 section 3.1; with a PKCE `S256` challenge when the config
    /// asks for it).
    ///
    /// # Errors
    /// [`SigninError::TokenEndpoint`] for a refusal (with the device endpoint's error code),
    /// [`SigninError::Http`], [`SigninError::Transport`], [`SigninError::Malformed`] when the
    /// answer lacks `device_code`, `user_code` or `verification_uri`.
    pub async fn start(
        config: DeviceConfig,
        http: reqwest::Client,
        options: SigninOptions,
    ) -> Result<Self, SigninError> {
        if config.client_id.is_empty() {
            return Err(SigninError::Config {
                what: "the client id is empty",
            });
        }
        let pkce = if config.pkce {
            Some(Pkce::generate()?)
        } else {
            None
        };
        let scope = config.scopes.join(" ");
        let mut params = vec![("client_id", Param::Plain(&config.client_id))];
        if !scope.is_empty() {
            params.push(("scope", Param::Plain(&scope)));
        }
        if let Some(p) = &pkce {
            params.push(("code_challenge", Param::Plain(p.challenge())));
            params.push(("code_challenge_method", Param::Plain(Pkce::METHOD)));
        }
        if let Some(secret) = &config.client_secret {
            params.push(("client_secret", Param::Secret(secret)));
        }
        let answer = token::send(
            &http,
            Post {
                endpoint: Endpoint::DeviceAuthorization,
                url: &config.device_authorization_url,
                encoding: config.encoding,
                params,
                headers: &config.headers,
                timeout: options.request_timeout,
            },
        )
        .await?;
        let issued = Instant::now();
        let mut body = match answer {
            Answer::Success(body) => body,
            Answer::OAuthError { status, code } => {
                return Err(SigninError::TokenEndpoint { status, code });
            }
        };
        let malformed = |what| SigninError::Malformed {
            endpoint: Endpoint::DeviceAuthorization,
            what,
        };
        let mut text = |k: &str| match body.remove(k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            _ => None,
        };
        let device_code = text("device_code").ok_or_else(|| malformed("no device_code"))?;
        let user_code = text("user_code").ok_or_else(|| malformed("no user_code"))?;
        // `verification_url` is what Google's endpoint has sent.
        let verification_uri = text("verification_uri")
            .or_else(|| text("verification_url"))
            .ok_or_else(|| malformed("no verification_uri"))?;
        let verification_uri_complete = text("verification_uri_complete");
        let secs = |k: &str| body.get(k).and_then(Value::as_u64).map(Duration::from_secs);
        let expires_in = secs("expires_in")
            .filter(|d| !d.is_zero())
            .ok_or_else(|| malformed("no expires_in"))?
            .min(MAX_EXPIRES_IN);
        let interval = secs("interval")
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_INTERVAL)
            .min(MAX_INTERVAL);
        Ok(Self {
            config,
            http,
            options,
            pkce,
            device_code: SecretString::from(device_code),
            user_code,
            verification_uri,
            verification_uri_complete,
            expires_in,
            interval,
            issued,
        })
    }

    /// The code the user types at the verification URI.
    pub fn user_code(&self) -> &str {
        &self.user_code
    }

    /// Where the user goes to enter the code.
    pub fn verification_uri(&self) -> &str {
        &self.verification_uri
    }

    /// The verification URI with the code filled in, when the server sent one.
    pub fn verification_uri_complete(&self) -> Option<&str> {
        self.verification_uri_complete.as_deref()
    }

    /// How long the device code lives.
    pub const fn expires_in(&self) -> Duration {
        self.expires_in
    }

    /// The polling interval the server asked for (5 s when it named none).
    pub const fn interval(&self) -> Duration {
        self.interval
    }

    /// Polls the token endpoint until the user approves (RFC 8628 section 3.4): it waits the
    /// interval before every poll; `authorization_pending` polls again; `slow_down` adds 5 s to
    /// the interval for this and every later poll; a transport failure doubles the interval (at
    /// most [`SigninOptions::max_poll_failures`] in a row). Waiting goes through tokio's timer.
    ///
    /// # Errors
    /// [`SigninError::AccessDenied`], [`SigninError::ExpiredToken`] (the server said
    /// `expired_token`, or `expires_in` passed), [`SigninError::TokenEndpoint`] for other
    /// refusals, [`SigninError::Transport`] after too many failures in a row,
    /// [`SigninError::Malformed`], [`SigninError::Credential`] for an invalid `id`.
    pub async fn finish(self, id: &str) -> Result<Credential, SigninError> {
        oauth_core::CredentialId::new(id)?;
        let deadline = self.issued + self.expires_in;
        let mut interval = self.interval;
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(interval).await;
            if Instant::now() > deadline {
                return Err(SigninError::ExpiredToken);
            }
            match self.poll().await {
                Ok(Answer::Success(body)) => {
                    return token::into_credential(
                        body,
                        &Client {
                            id,
                            client_id: &self.config.client_id,
                            client_secret: self.config.client_secret.as_ref(),
                            requested_scopes: &self.config.scopes,
                        },
                        self.options.clock.now(),
                    );
                }
                Ok(Answer::OAuthError { status, code }) => {
                    failures = 0;
                    match code {
                        OAuthErrorCode::AuthorizationPending => {}
                        OAuthErrorCode::SlowDown => {
                            interval = (interval + SLOW_DOWN_STEP).min(MAX_INTERVAL);
                        }
                        OAuthErrorCode::AccessDenied => return Err(SigninError::AccessDenied),
                        OAuthErrorCode::ExpiredToken => return Err(SigninError::ExpiredToken),
                        code => return Err(SigninError::TokenEndpoint { status, code }),
                    }
                }
                Err(e @ (SigninError::Transport { .. } | SigninError::Http { .. }))
                    if e.is_retryable() =>
                {
                    failures += 1;
                    if failures > self.options.max_poll_failures {
                        return Err(e);
                    }
                    interval = (interval * 2).min(MAX_INTERVAL);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn poll(&self) -> Result<Answer, SigninError> {
        let mut params = vec![
            (
                "grant_type",
                Param::Plain("urn:ietf:params:oauth:grant-type:device_code"),
            ),
            ("client_id", Param::Plain(&self.config.client_id)),
            ("device_code", Param::Secret(&self.device_code)),
        ];
        if let Some(p) = &self.pkce {
            params.push(("code_verifier", Param::Secret(p.verifier())));
        }
        if let Some(secret) = &self.config.client_secret {
            params.push(("client_secret", Param::Secret(secret)));
        }
        token::send(
            &self.http,
            Post {
                endpoint: Endpoint::Token,
                url: &self.config.token_url,
                encoding: self.config.encoding,
                params,
                headers: &self.config.headers,
                timeout: self.options.request_timeout,
            },
        )
        .await
    }
}
