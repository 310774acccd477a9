//! Authorization code with PKCE on a loopback redirect.

use std::sync::Arc;
use std::time::Duration;

use oauth_core::{ExposeSecret, ManualClock};
use oauth_signin::{
    AuthorizationCodeConfig, AuthorizationCodeSignin, Encoding, ExchangeRequest, OAuthErrorCode,
    PendingSignin, Pkce, SigninError, SigninFlow, SigninOptions, SigninPrompt, exchange_code,
};
use oauth_testkit::authorization_server::{
    AuthorizationServer, AuthorizationServerConfig, ClientRegistration, Refusal,
};
use serde_json::json;
use tokio::net::TcpStream;

use crate::support::{
    assert_hidden, browser, http, query, redirect_of, refresh_status, servers, shown,
};

const CLIENT: &str = "signin-cli";
const SECRET: &str = "client-secret-value-xyz";

fn config(server: &AuthorizationServer) -> AuthorizationCodeConfig {
    AuthorizationCodeConfig::new(server.authorize_url(), server.token_url(), CLIENT)
        .with_scopes(["openid", "email"])
        .with_client_secret(SECRET)
}

fn register(server: &AuthorizationServer, signin: &AuthorizationCodeSignin) {
    server.register_client(
        ClientRegistration::new(CLIENT)
            .with_redirect_uri(signin.redirect_uri())
            .with_secret(SECRET)
            .with_id_token_claims(json!({
                "sub": "google-sub-1",
                "email": "alice@example.com",
                "https://api.openai.com/auth": { "chatgpt_account_id": "acct-42" },
            })),
    );
}

async fn start(server: &AuthorizationServer, options: SigninOptions) -> AuthorizationCodeSignin {
    let signin = AuthorizationCodeSignin::start(config(server), http(), options)
        .await
        .expect("sign-in starts");
    register(server, &signin);
    signin
}

async fn port_is_closed(addr: std::net::SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn success_gives_a_credential_the_token_server_refreshes() {
    let (tokens, server) = servers(AuthorizationServerConfig::default()).await;
    let signin = start(&server, SigninOptions::default()).await;
    let addr = signin.local_addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0, "an ephemeral port was bound");
    assert_eq!(
        signin.redirect_uri(),
        format!("http://127.0.0.1:{}/callback", addr.port())
    );
    let url = reqwest::Url::parse(signin.authorization_url()).expect("a URL");
    let q = query(&url);
    assert_eq!(
        q.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
    assert_eq!(q.get("scope").map(String::as_str), Some("openid email"));
    let state = q.get("state").cloned().expect("a state");
    assert!(state.len() >= 43, "state has 256 bits");
    let debug_signin = format!("{signin:?}");

    let page = browser().get(signin.authorization_url()).send();
    let (cred, page) = tokio::join!(signin.finish("alice"), page);
    let page = page.expect("the loopback page answers");
    assert_eq!(page.status().as_u16(), 200);
    let page = page.text().await.expect("page body");
    let cred = cred.expect("signed in");

    // The credential and its metadata.
    let now = chrono::Utc::now();
    assert_eq!(cred.id.as_str(), "alice");
    assert_eq!(cred.client_id, CLIENT);
    assert_eq!(
        cred.client_secret.as_ref().map(|s| s.expose_secret()),
        Some(SECRET)
    );
    let expiry = cred.expires_at.expect("expires_in was sent") - now;
    assert!((3590..=3600).contains(&expiry.num_seconds()), "{expiry}");
    assert_eq!(cred.scopes, vec!["openid", "email"]);
    assert_eq!(cred.metadata.email.as_deref(), Some("alice@example.com"));
    assert_eq!(cred.metadata.account_id.as_deref(), Some("acct-42"));
    let id_token = cred.metadata.id_token.as_ref().expect("id token kept");
    assert_eq!(cred.refresh_count, 0);
    assert_eq!(cred.last_refresh, None);

    // The tokens are a grant of the strict token server: valid there, and refreshable.
    let access = cred.access_token.expose_secret().to_owned();
    let refresh = cred
        .refresh_token
        .as_ref()
        .expect("refresh token")
        .expose_secret()
        .to_owned();
    assert!(tokens.is_access_token_valid(&access));
    assert_eq!(refresh_status(&tokens, CLIENT, &refresh).await, 200);
    let stats = server.stats();
    assert_eq!((stats.codes_issued, stats.codes_redeemed), (1, 1));
    assert!(stats.refusals.is_empty(), "{:?}", stats.refusals);

    // The listener is gone, and nothing secret was shown.
    assert!(port_is_closed(addr).await, "no listener is left behind");
    assert_hidden(
        &[
            format!("{cred:?}"),
            debug_signin,
            page,
            format!("{:?}", config(&server)),
        ],
        &[&access, &refresh, id_token.expose_secret(), SECRET, &state],
    );
}

#[tokio::test]
async fn wrong_state_is_refused_before_any_exchange() {
    let (_tokens, server) = servers(AuthorizationServerConfig::default()).await;
    let signin = start(&server, SigninOptions::default()).await;
    let addr = signin.local_addr();
    let mut redirect = redirect_of(signin.authorization_url()).await;
    let q = query(&redirect);
    let code = q.get("code").cloned().expect("a code");
    let forged = format!("{}x", q.get("state").expect("state echoed"));
    redirect.set_query(Some(&format!("code={code}&state={forged}")));

    let page = browser().get(redirect).send();
    let (result, page) = tokio::join!(signin.finish("alice"), page);
    let err = result.expect_err("a forged state is refused");
    assert!(matches!(err, SigninError::StateMismatch), "{err:?}");
    assert_eq!(page.expect("page").status().as_u16(), 400);
    assert_eq!(
        server.stats().codes_redeemed,
        0,
        "the code was not exchanged"
    );
    assert!(port_is_closed(addr).await);
    assert_hidden(&shown(&err), &[&code, &forged]);
}

#[tokio::test]
async fn wrong_pkce_verifier_is_refused() {
    let (_tokens, server) = servers(AuthorizationServerConfig::default()).await;
    let signin = start(&server, SigninOptions::default()).await;
    let redirect = redirect_of(signin.authorization_url()).await;
    let code = query(&redirect).get("code").cloned().expect("a code");
    let wrong = Pkce::generate().expect("random");

    let err = exchange_code(
        &config(&server),
        &http(),
        &SigninOptions::default(),
        &ExchangeRequest {
            code: &code,
            pkce: &wrong,
            redirect_uri: signin.redirect_uri(),
            state: None,
        },
        "alice",
    )
    .await
    .expect_err("another verifier is refused");
    assert!(err.is_invalid_grant(), "{err:?}");
    assert!(matches!(
        err,
        SigninError::TokenEndpoint {
            status: 400,
            code: OAuthErrorCode::InvalidGrant
        }
    ));
    assert_eq!(server.stats().refusals, vec![Refusal::PkceMismatch]);
    assert_hidden(
        &shown(&err),
        &[&code, wrong.verifier().expose_secret(), SECRET],
    );
}

#[tokio::test]
async fn reused_code_is_refused_and_revokes_what_it_granted() {
    let (tokens, server) = servers(AuthorizationServerConfig::default()).await;
    let pkce = Pkce::generate().expect("random");
    let signin = AuthorizationCodeSignin::start_with_pkce(
        config(&server),
        http(),
        SigninOptions::default(),
        pkce.clone(),
    )
    .await
    .expect("starts");
    register(&server, &signin);
    let redirect_uri = signin.redirect_uri().to_owned();
    let redirect = redirect_of(signin.authorization_url()).await;
    let code = query(&redirect).get("code").cloned().expect("a code");
    let (cred, _) = tokio::join!(signin.finish("alice"), browser().get(redirect).send());
    let cred = cred.expect("the first exchange succeeds");
    let refresh = cred
        .refresh_token
        .as_ref()
        .expect("rt")
        .expose_secret()
        .to_owned();
    assert!(tokens.is_refresh_token_valid(&refresh));

    let err = exchange_code(
        &config(&server),
        &http(),
        &SigninOptions::default(),
        &ExchangeRequest {
            code: &code,
            pkce: &pkce,
            redirect_uri: &redirect_uri,
            state: None,
        },
        "alice-again",
    )
    .await
    .expect_err("a code is single-use");
    assert!(err.is_invalid_grant(), "{err:?}");
    assert_eq!(server.stats().refusals, vec![Refusal::CodeReused]);
    assert!(
        !tokens.is_refresh_token_valid(&refresh)
            && !tokens.is_access_token_valid(cred.access_token.expose_secret()),
        "the tokens of a replayed code are revoked"
    );
    assert_hidden(
        &shown(&err),
        &[&code, pkce.verifier().expose_secret(), &refresh],
    );
}

#[tokio::test]
async fn expired_code_is_refused() {
    let clock = ManualClock::default();
    let (_tokens, server) = servers(AuthorizationServerConfig {
        code_ttl: Duration::from_secs(60),
        clock: Arc::new(clock.clone()),
        ..AuthorizationServerConfig::default()
    })
    .await;
    let options = SigninOptions::default().with_clock(Arc::new(clock.clone()));
    let signin = start(&server, options).await;
    let redirect = redirect_of(signin.authorization_url()).await;
    let code = query(&redirect).get("code").cloned().expect("a code");
    clock.advance(Duration::from_secs(60));

    let (result, page) = tokio::join!(signin.finish("alice"), browser().get(redirect).send());
    let err = result.expect_err("an expired code is refused");
    assert!(err.is_invalid_grant(), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(page.expect("page").status().as_u16(), 400);
    assert_eq!(server.stats().refusals, vec![Refusal::CodeExpired]);
    assert_hidden(&shown(&err), &[&code]);
}

#[tokio::test]
async fn a_declined_authorization_is_a_typed_error() {
    let (_tokens, server) = servers(AuthorizationServerConfig::default()).await;
    let signin = start(&server, SigninOptions::default()).await;
    server.deny_next_authorization();
    let url = signin.authorization_url().to_owned();
    let (result, page) = tokio::join!(signin.finish("alice"), browser().get(url).send());
    let err = result.expect_err("declined");
    assert!(
        matches!(
            err,
            SigninError::Denied {
                code: OAuthErrorCode::AccessDenied
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.oauth_code(), Some(OAuthErrorCode::AccessDenied));
    assert_eq!(page.expect("page").status().as_u16(), 400);
    assert_eq!(server.stats().codes_issued, 0);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_sign_in_leaves_no_listener_behind() {
    let (_tokens, server) = servers(AuthorizationServerConfig::default()).await;
    let options = SigninOptions::default().with_redirect_timeout(Duration::from_secs(300));
    let signin = start(&server, options).await;
    let addr = signin.local_addr();
    assert!(
        !port_is_closed(addr).await,
        "the listener is up while the sign-in waits"
    );
    let started = tokio::time::Instant::now();
    let err = signin.finish("alice").await.expect_err("nobody signs in");
    assert!(
        matches!(err, SigninError::TimedOut { timeout } if timeout == Duration::from_secs(300))
    );
    assert!(err.is_retryable());
    assert!(
        started.elapsed() >= Duration::from_secs(300),
        "it waited the whole timeout"
    );
    assert!(
        port_is_closed(addr).await,
        "the port is closed after the timeout"
    );
}

#[tokio::test]
async fn a_dropped_sign_in_leaves_no_listener_behind() {
    let (_tokens, server) = servers(AuthorizationServerConfig::default()).await;
    // Dropped before finish.
    let signin = start(&server, SigninOptions::default()).await;
    let addr = signin.local_addr();
    drop(signin);
    assert!(port_is_closed(addr).await);
    // Cancelled while finish waits.
    let signin = start(&server, SigninOptions::default()).await;
    let addr = signin.local_addr();
    let task = tokio::spawn(async move { signin.finish("alice").await });
    let probe = TcpStream::connect(addr).await;
    assert!(probe.is_ok(), "the listener is up while finish waits");
    task.abort();
    assert!(task.await.is_err_and(|e| e.is_cancelled()));
    assert!(
        port_is_closed(addr).await,
        "the port is closed after cancellation"
    );
}

#[tokio::test]
async fn other_paths_do_not_end_the_wait() {
    let (_tokens, server) = servers(AuthorizationServerConfig::default()).await;
    let signin = start(&server, SigninOptions::default()).await;
    let addr = signin.local_addr();
    let url = signin.authorization_url().to_owned();
    let task = tokio::spawn(async move { signin.finish("alice").await });
    let favicon = browser()
        .get(format!("http://{addr}/favicon.ico"))
        .send()
        .await
        .expect("answered");
    assert_eq!(favicon.status().as_u16(), 404);
    let page = browser().get(url).send().await.expect("answered");
    assert_eq!(page.status().as_u16(), 200);
    let cred = task.await.expect("joined").expect("signed in");
    assert_eq!(cred.id.as_str(), "alice");
}

#[tokio::test]
async fn json_token_request_with_state_on_localhost() {
    // Claude Code's shape: a `localhost` redirect, a JSON token request carrying `state`.
    let (tokens, server) = servers(AuthorizationServerConfig::default()).await;
    let config = config(&server)
        .with_redirect(oauth_signin::RedirectHost::Localhost, 0, "/cb")
        .with_token_encoding(Encoding::Json)
        .with_state_in_token_request(true)
        .with_header("User-Agent", "signin-test/1");
    let signin = AuthorizationCodeSignin::start(config, http(), SigninOptions::default())
        .await
        .expect("starts");
    assert!(signin.redirect_uri().starts_with("http://localhost:"));
    register(&server, &signin);
    // The redirect names `localhost`; send the "browser" to the listener's address.
    let redirect = redirect_of(signin.authorization_url()).await;
    let mut to_listener = redirect.clone();
    to_listener.set_host(Some("127.0.0.1")).expect("host");
    let (cred, _) = tokio::join!(signin.finish("claude-a"), browser().get(to_listener).send());
    let cred = cred.expect("signed in over JSON");
    assert!(tokens.is_access_token_valid(cred.access_token.expose_secret()));
}

#[tokio::test]
async fn a_pasted_code_is_checked_and_exchanged() {
    let (_tokens, server) = servers(AuthorizationServerConfig::default()).await;
    let signin = start(&server, SigninOptions::default()).await;
    let q = query(&redirect_of(signin.authorization_url()).await);
    let code = q["code"].clone();
    let err = signin
        .finish_with_code(&code, "not-the-state", "alice")
        .await
        .expect_err("the pasted state is checked");
    assert!(matches!(err, SigninError::StateMismatch));

    let signin = start(&server, SigninOptions::default()).await;
    let addr = signin.local_addr();
    let q = query(&redirect_of(signin.authorization_url()).await);
    let cred = signin
        .finish_with_code(&q["code"], &q["state"], "alice")
        .await
        .expect("a pasted code works");
    assert_eq!(cred.metadata.email.as_deref(), Some("alice@example.com"));
    assert!(port_is_closed(addr).await);
}

#[tokio::test]
async fn pending_signin_prompts_for_the_browser() {
    let (_tokens, server) = servers(AuthorizationServerConfig::default()).await;
    let pending = PendingSignin::start(
        SigninFlow::AuthorizationCode(config(&server)),
        http(),
        SigninOptions::default(),
    )
    .await
    .expect("starts");
    let PendingSignin::Browser(signin) = &pending else {
        panic!("a browser flow");
    };
    register(&server, signin);
    let SigninPrompt::OpenUrl { url } = pending.prompt() else {
        panic!("a URL to open");
    };
    let state = query(&reqwest::Url::parse(&url).expect("url"))["state"].clone();
    assert_hidden(
        &[format!("{:?}", pending.prompt()), format!("{pending:?}")],
        &[&state],
    );
    let (cred, _) = tokio::join!(pending.finish("alice"), browser().get(url).send());
    assert!(cred.is_ok());
}

#[tokio::test]
async fn bad_configuration_is_a_typed_error() {
    let bad = AuthorizationCodeConfig::new("not a url", "http://127.0.0.1:9/token", "c");
    let err = AuthorizationCodeSignin::start(bad, http(), SigninOptions::default())
        .await
        .expect_err("refused");
    assert!(matches!(err, SigninError::Config { .. }));
    let empty = AuthorizationCodeConfig::new("http://127.0.0.1:9/a", "http://127.0.0.1:9/t", "");
    assert!(
        AuthorizationCodeSignin::start(empty, http(), SigninOptions::default())
            .await
            .is_err()
    );
    // A taken fixed port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let fixed = AuthorizationCodeConfig::new("http://127.0.0.1:9/a", "http://127.0.0.1:9/t", "c")
        .with_redirect(oauth_signin::RedirectHost::LoopbackIp, port, "/cb");
    let err = AuthorizationCodeSignin::start(fixed, http(), SigninOptions::default())
        .await
        .expect_err("the port is taken");
    assert!(
        matches!(err, SigninError::Bind { port: p, kind: std::io::ErrorKind::AddrInUse } if p == port)
    );
}

#[test]
fn sign_ins_can_be_spawned() {
    // Compile-time: a management API starts a sign-in, answers with the prompt, and finishes it
    // on a spawned task.
    fn spawnable<T: Send + 'static>(_: &T) {}
    let check = |p: PendingSignin| {
        spawnable(&p);
        spawnable(&p.finish("x"));
    };
    let _ = check;
}
