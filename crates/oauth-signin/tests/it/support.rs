//! Shared test plumbing: HTTP clients, a fake "browser", and the secret search.

use std::collections::HashMap;
use std::sync::Arc;

use oauth_testkit::authorization_server::{AuthorizationServer, AuthorizationServerConfig};
use oauth_testkit::token_server::TokenServer;

/// The sign-in's own HTTP client, as an application would build it. Idle pooled connections get
/// no timer, so tests on tokio's paused clock see no time jump while a request is in flight.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(None)
        .build()
        .expect("client builds")
}

/// A browser that follows redirects (approval at the fake server, then the loopback redirect).
pub(crate) fn browser() -> reqwest::Client {
    http()
}

/// A browser that stops at the authorization server's redirect, so a test can look at (or
/// tamper with) the redirect before it reaches the loopback listener.
pub(crate) fn stopping_browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(None)
        .build()
        .expect("client builds")
}

/// Follows the authorization URL to the fake server and returns its redirect location.
pub(crate) async fn redirect_of(authorization_url: &str) -> reqwest::Url {
    let resp = stopping_browser()
        .get(authorization_url)
        .send()
        .await
        .expect("authorization server answers");
    assert_eq!(
        resp.status().as_u16(),
        302,
        "the fake server approves at once"
    );
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("a Location header");
    reqwest::Url::parse(location).expect("an absolute redirect")
}

/// The query parameters of a URL.
pub(crate) fn query(url: &reqwest::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// A token server and an authorization server issuing its grants.
pub(crate) async fn servers(
    config: AuthorizationServerConfig,
) -> (Arc<TokenServer>, AuthorizationServer) {
    let tokens = Arc::new(TokenServer::start().await.expect("token server starts"));
    let auth = AuthorizationServer::start_with(AuthorizationServerConfig {
        tokens: Some(Arc::clone(&tokens)),
        ..config
    })
    .await
    .expect("authorization server starts");
    (tokens, auth)
}

/// Fails when any secret appears in any of the outputs.
pub(crate) fn assert_hidden(outputs: &[String], secrets: &[&str]) {
    for secret in secrets.iter().filter(|s| s.len() >= 6) {
        for out in outputs {
            assert!(!out.contains(secret), "a secret leaked into {out:?}");
        }
    }
}

/// `Debug` and `Display` of an error.
pub(crate) fn shown(e: &oauth_signin::SigninError) -> Vec<String> {
    vec![format!("{e:?}"), e.to_string()]
}

/// A refresh at the strict token server with the credential's refresh token.
pub(crate) async fn refresh_status(
    tokens: &TokenServer,
    client_id: &str,
    refresh_token: &str,
) -> u16 {
    http()
        .post(tokens.url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ])
        .send()
        .await
        .expect("token server answers")
        .status()
        .as_u16()
}
