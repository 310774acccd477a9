//! The device authorization grant, on tokio's paused clock.

use std::time::Duration;

use oauth_core::ExposeSecret;
use oauth_signin::{
    DeviceConfig, DeviceSignin, PendingSignin, SigninError, SigninFlow, SigninOptions, SigninPrompt,
};
use oauth_testkit::authorization_server::{
    AuthorizationServer, AuthorizationServerConfig, ClientRegistration, Refusal,
};

use crate::support::{assert_hidden, http, refresh_status, servers, shown};

const CLIENT: &str = "qwen-like";

fn secs(s: &[u64]) -> Vec<Duration> {
    s.iter().copied().map(Duration::from_secs).collect()
}

fn config(server: &AuthorizationServer) -> DeviceConfig {
    DeviceConfig::new(
        server.device_authorization_url(),
        server.token_url(),
        CLIENT,
    )
    .with_scopes(["openid", "model.completion"])
    .with_pkce(true)
}

/// Options for the paused clock: no per-request timer (see `SigninOptions::request_timeout`).
fn options() -> SigninOptions {
    SigninOptions::default().with_request_timeout(None)
}

async fn server(
    config: AuthorizationServerConfig,
) -> (
    std::sync::Arc<oauth_testkit::token_server::TokenServer>,
    AuthorizationServer,
) {
    let (tokens, server) = servers(config).await;
    server.register_client(
        ClientRegistration::new(CLIENT).with_token_field("resource_url", "portal.example.test"),
    );
    (tokens, server)
}

#[tokio::test(start_paused = true)]
async fn polling_honours_the_interval_and_slow_down() {
    let (tokens, server) = server(AuthorizationServerConfig {
        device_interval: Duration::from_secs(5),
        slow_down_status: 429, // as Qwen answers it
        ..AuthorizationServerConfig::default()
    })
    .await;
    let signin = DeviceSignin::start(config(&server), http(), options())
        .await
        .expect("device code issued");
    assert_eq!(signin.interval(), Duration::from_secs(5));
    assert_eq!(signin.expires_in(), Duration::from_secs(600));
    assert_eq!(signin.verification_uri(), server.verification_uri());
    let user_code = signin.user_code().to_owned();
    assert!(
        signin
            .verification_uri_complete()
            .is_some_and(|u| u.ends_with(&user_code))
    );
    // Two slow_downs, then one authorization_pending, then the user approves.
    server.inject_slow_down(2);
    assert!(server.approve_user_code_after_polls(&user_code, 3));

    let started = tokio::time::Instant::now();
    let cred = signin.finish("qwen-a").await.expect("approved");
    // 5 s, then 5 + 5 after each slow_down: 10 s, 15 s, and 15 s again.
    assert_eq!(
        server.device_poll_offsets(&user_code),
        secs(&[5, 15, 30, 45])
    );
    assert_eq!(started.elapsed(), Duration::from_secs(45));
    let stats = server.stats();
    assert_eq!(
        (
            stats.device_polls,
            stats.slow_downs,
            stats.pending_answers,
            stats.device_tokens_issued
        ),
        (4, 2, 1, 1)
    );
    assert!(
        stats.refusals.is_empty(),
        "the PKCE verifier matched: {:?}",
        stats.refusals
    );

    assert_eq!(cred.id.as_str(), "qwen-a");
    assert_eq!(
        cred.metadata.resource_url.as_deref(),
        Some("portal.example.test")
    );
    assert_eq!(cred.scopes, vec!["openid", "model.completion"]);
    let refresh = cred
        .refresh_token
        .as_ref()
        .expect("refresh token")
        .expose_secret()
        .to_owned();
    assert_eq!(refresh_status(&tokens, CLIENT, &refresh).await, 200);
    assert_hidden(
        &[format!("{cred:?}")],
        &[cred.access_token.expose_secret(), &refresh],
    );
}

#[tokio::test(start_paused = true)]
async fn the_server_answers_slow_down_to_polls_that_come_too_soon() {
    // The server enforces 10 s but advertises it too; a client honouring `interval` is never
    // told to slow down, so the enforcement is checked by a poll that comes early.
    let (_tokens, server) = server(AuthorizationServerConfig {
        device_interval: Duration::from_secs(10),
        ..AuthorizationServerConfig::default()
    })
    .await;
    let signin = DeviceSignin::start(config(&server), http(), options())
        .await
        .expect("issued");
    let user_code = signin.user_code().to_owned();
    assert!(server.approve_user_code_after_polls(&user_code, 1));
    let cred = signin.finish("qwen-b").await.expect("approved");
    assert_eq!(server.device_poll_offsets(&user_code), secs(&[10, 20]));
    assert_eq!(
        server.stats().slow_downs,
        0,
        "polls at the interval are not too soon"
    );
    drop(cred);

    // A raw poll straight after the device code was issued is too soon.
    let body: serde_json::Value = http()
        .post(server.device_authorization_url())
        .form(&[("client_id", CLIENT)])
        .send()
        .await
        .expect("issued")
        .json()
        .await
        .expect("json");
    let device_code = body["device_code"].as_str().expect("device code");
    let poll = http()
        .post(server.token_url())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", CLIENT),
            ("device_code", device_code),
        ])
        .send()
        .await
        .expect("answered");
    assert_eq!(poll.status().as_u16(), 400);
    let err: serde_json::Value = poll.json().await.expect("json");
    assert_eq!(err["error"], "slow_down");
}

#[tokio::test(start_paused = true)]
async fn access_denied_is_a_typed_error() {
    let (_tokens, server) = server(AuthorizationServerConfig::default()).await;
    let signin = DeviceSignin::start(config(&server), http(), options())
        .await
        .expect("issued");
    assert!(server.deny_user_code(signin.user_code()));
    let err = signin.finish("qwen-c").await.expect_err("denied");
    assert!(matches!(err, SigninError::AccessDenied), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(server.stats().refusals, vec![Refusal::DeviceDenied]);
}

#[tokio::test(start_paused = true)]
async fn an_expired_device_code_is_a_typed_error() {
    let (_tokens, server) = server(AuthorizationServerConfig {
        device_code_ttl: Duration::from_secs(30),
        device_interval: Duration::from_secs(5),
        ..AuthorizationServerConfig::default()
    })
    .await;
    let signin = DeviceSignin::start(config(&server), http(), options())
        .await
        .expect("issued");
    let user_code = signin.user_code().to_owned();
    let err = signin.finish("qwen-d").await.expect_err("nobody approved");
    assert!(matches!(err, SigninError::ExpiredToken), "{err:?}");
    assert!(err.is_retryable(), "starting over can succeed");
    assert_eq!(
        server.device_poll_offsets(&user_code),
        secs(&[5, 10, 15, 20, 25, 30])
    );
    assert_eq!(server.stats().refusals, vec![Refusal::DeviceCodeExpired]);
    assert_hidden(&shown(&err), &[&user_code]);
}

#[tokio::test(start_paused = true)]
async fn pending_signin_prompts_for_the_user_code() {
    let (_tokens, server) = server(AuthorizationServerConfig::default()).await;
    let pending = PendingSignin::start(SigninFlow::Device(config(&server)), http(), options())
        .await
        .expect("issued");
    let SigninPrompt::EnterCode {
        user_code,
        verification_uri,
        expires_in,
        ..
    } = pending.prompt()
    else {
        panic!("a code to enter");
    };
    assert_eq!(verification_uri, server.verification_uri());
    assert_eq!(expires_in, Duration::from_secs(600));
    assert_eq!(server.pending_user_codes(), vec![user_code.clone()]);
    assert_hidden(
        &[format!("{:?}", pending.prompt()), format!("{pending:?}")],
        &[&user_code],
    );
    assert!(server.approve_user_code(&user_code));
    let cred = pending.finish("qwen-e").await.expect("approved");
    assert_eq!(cred.client_id, CLIENT);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_device_endpoint_is_a_transport_error() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/device/code", dead.local_addr().expect("addr"));
    drop(dead);
    let config = DeviceConfig::new(url.clone(), url, CLIENT);
    let err = DeviceSignin::start(config, http(), options())
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, SigninError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
}
