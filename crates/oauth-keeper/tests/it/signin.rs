//! Sign-ins through the API against the strict authorization server, whose tokens are grants of
//! the strict token server: the account file is written, the account joins (or creates) its
//! pool and refreshes.

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use oauth_keeper::{Keeper, ProviderKind, SigninStatus};
use oauth_manager::refresh::presets::{GEMINI_CLI_CLIENT_ID, GEMINI_CLI_CLIENT_SECRET};
use oauth_testkit::authorization_server::{
    AuthorizationServer, AuthorizationServerConfig, ClientRegistration,
};
use oauth_testkit::token_server::TokenServer;

use crate::common::{TOKEN, TestResult, base_config};

async fn wait_done(keeper: &Keeper, signin: &str) -> Result<SigninStatus, &'static str> {
    for _ in 0..250 {
        match keeper.signin_status(signin) {
            Some(SigninStatus::Pending { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Some(s) => return Ok(s),
            None => return Err("unknown sign-in"),
        }
    }
    Err("the sign-in did not finish")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signin_through_the_api_writes_the_file_and_joins_the_pool() -> TestResult {
    crate::common::capture_logs();
    let dir = tempfile::tempdir()?;
    let tokens = Arc::new(TokenServer::start().await?);
    let auth = AuthorizationServer::start_with(AuthorizationServerConfig {
        tokens: Some(Arc::clone(&tokens)),
        ..AuthorizationServerConfig::default()
    })
    .await?;
    let mut config = base_config(&dir, &tokens)?;
    if let Some(g) = config.providers.get_mut(&ProviderKind::Gemini) {
        g.authorize_url = Some(auth.authorize_url());
        g.signin_token_url = Some(auth.token_url());
    }
    let keeper = Keeper::builder(config).build().await?;
    let running = keeper.serve().await?;
    assert!(
        keeper.providers().is_empty(),
        "an empty directory has no pool"
    );
    let http = reqwest::Client::new();
    let mut bodies = Vec::new();

    // "first" twice: the second sign-in re-authorizes the existing account.
    for account in ["first", "second", "first"] {
        let resp = http
            .post(format!("{}/signins", running.url()))
            .bearer_auth(TOKEN)
            .json(&json!({ "provider": "gemini", "account": account }))
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 202);
        let body: serde_json::Value = resp.json().await?;
        bodies.push(body.to_string());
        assert_eq!(body["prompt"]["kind"], "open_url");
        let url = url::Url::parse(body["prompt"]["url"].as_str().ok_or("no url")?)?;
        let redirect = url
            .query_pairs()
            .find(|(k, _)| k == "redirect_uri")
            .map(|(_, v)| v.into_owned())
            .ok_or("no redirect_uri")?;
        assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
        auth.register_client(
            ClientRegistration::new(GEMINI_CLI_CLIENT_ID)
                .with_secret(GEMINI_CLI_CLIENT_SECRET)
                .with_redirect_uri(redirect),
        );
        // The "browser": the fake server approves and redirects to the keeper's loopback port.
        let page = http.get(url.as_str()).send().await?;
        assert!(page.status().is_success(), "{}", page.status());

        let signin = body["signin"].as_str().ok_or("no signin id")?;
        let status = wait_done(&keeper, signin).await?;
        assert!(matches!(status, SigninStatus::Done { .. }), "{status:?}");
        let (code, text) = {
            let r = http
                .get(format!("{}/signins/{signin}", running.url()))
                .bearer_auth(TOKEN)
                .send()
                .await?;
            (r.status().as_u16(), r.text().await?)
        };
        assert_eq!(code, 200);
        assert!(text.contains("\"done\""), "{text}");
        bodies.push(text);
        assert!(
            dir.path()
                .join(format!("accounts/{account}.json"))
                .is_file()
        );
    }
    let pool = keeper.pool(ProviderKind::Gemini).ok_or("no pool")?;
    assert_eq!(pool.credential_ids().len(), 2);
    let reauthorized = pool.credential("first").ok_or("no first")?;
    assert_eq!(
        Some(oauth_manager::ExposeSecret::expose_secret(&reauthorized.access_token).to_owned()),
        auth.last_issued_access_token(),
        "the second sign-in of `first` installed its new tokens"
    );
    // The signed-in accounts refresh against the token server.
    for account in ["first", "second"] {
        let r = http
            .post(format!(
                "{}/accounts/gemini/{account}/refresh",
                running.url()
            ))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 200);
        bodies.push(r.text().await?);
    }
    assert_eq!(tokens.stats().refreshes, 2);
    assert_eq!(tokens.stats().invalid_grants, 0);

    let mut secrets = vec![TOKEN.to_owned(), GEMINI_CLI_CLIENT_SECRET.to_owned()];
    for c in pool.credentials() {
        secrets.push(oauth_manager::ExposeSecret::expose_secret(&c.access_token).to_owned());
        if let Some(r) = &c.refresh_token {
            secrets.push(oauth_manager::ExposeSecret::expose_secret(r).to_owned());
        }
    }
    if let Some(t) = auth.last_issued_access_token() {
        secrets.push(t);
    }
    let logs = crate::common::captured_logs();
    for s in &secrets {
        for b in &bodies {
            assert!(!b.contains(s.as_str()), "a body holds a secret");
        }
        assert!(!logs.contains(s.as_str()), "a log line holds a secret");
    }
    let _ = http
        .request(Method::GET, format!("{}/health", running.url()))
        .send()
        .await?;
    running.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_signin_is_reported_failed_without_detail() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tokens = Arc::new(TokenServer::start().await?);
    let auth = AuthorizationServer::start_with(AuthorizationServerConfig {
        tokens: Some(Arc::clone(&tokens)),
        ..AuthorizationServerConfig::default()
    })
    .await?;
    let mut config = base_config(&dir, &tokens)?;
    if let Some(g) = config.providers.get_mut(&ProviderKind::Gemini) {
        g.authorize_url = Some(auth.authorize_url());
        g.signin_token_url = Some(auth.token_url());
    }
    let keeper = Keeper::builder(config).build().await?;
    let started = keeper
        .start_signin(ProviderKind::Gemini, Some("denied"))
        .await?;
    let oauth_signin::SigninPrompt::OpenUrl { url } = &started.prompt else {
        return Err("not a URL".into());
    };
    let parsed = url::Url::parse(url)?;
    let redirect = parsed
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .ok_or("no redirect")?;
    auth.register_client(
        ClientRegistration::new(GEMINI_CLI_CLIENT_ID)
            .with_secret(GEMINI_CLI_CLIENT_SECRET)
            .with_redirect_uri(redirect),
    );
    auth.deny_next_authorization();
    let _ = reqwest::get(url.as_str()).await?;
    let status = wait_done(&keeper, &started.signin).await?;
    assert!(matches!(status, SigninStatus::Failed { .. }), "{status:?}");
    assert!(!dir.path().join("accounts/denied.json").exists());
    assert!(keeper.pool(ProviderKind::Gemini).is_none());
    keeper.stop_pools().await;
    Ok(())
}

#[derive(Clone, Default)]
struct Terminal(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Terminal {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_prints_the_url_and_writes_the_account_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let tokens = Arc::new(TokenServer::start().await?);
    let auth = AuthorizationServer::start_with(AuthorizationServerConfig {
        tokens: Some(Arc::clone(&tokens)),
        ..AuthorizationServerConfig::default()
    })
    .await?;
    let mut config = base_config(&dir, &tokens)?;
    if let Some(g) = config.providers.get_mut(&ProviderKind::Gemini) {
        g.authorize_url = Some(auth.authorize_url());
        g.signin_token_url = Some(auth.token_url());
    }
    let keeper = Keeper::builder(config).build().await?;
    let terminal = Terminal::default();
    let task = {
        let (keeper, mut out) = (keeper.clone(), terminal.clone());
        tokio::spawn(async move {
            oauth_keeper::login(&keeper, ProviderKind::Gemini, Some("cli-login"), &mut out).await
        })
    };
    let mut url = None;
    for _ in 0..250 {
        let text = String::from_utf8_lossy(
            &terminal
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned();
        if let Some(line) = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("http://"))
        {
            url = Some(line.to_owned());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let url = url.ok_or("no URL printed")?;
    let parsed = url::Url::parse(&url)?;
    let redirect = parsed
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .ok_or("no redirect")?;
    auth.register_client(
        ClientRegistration::new(GEMINI_CLI_CLIENT_ID)
            .with_secret(GEMINI_CLI_CLIENT_SECRET)
            .with_redirect_uri(redirect),
    );
    assert!(reqwest::get(url.as_str()).await?.status().is_success());
    let account = task.await??;
    assert_eq!(account, "cli-login");
    let file = std::fs::read_to_string(dir.path().join("accounts/cli-login.json"))?;
    let json: serde_json::Value = serde_json::from_str(&file)?;
    assert_eq!(json["type"], "gemini");
    let token = auth.last_issued_access_token().ok_or("no token")?;
    assert!(file.contains(&token), "the file holds the signed-in tokens");
    assert!(
        !String::from_utf8_lossy(
            &terminal
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        )
        .contains(&token)
    );
    keeper.stop_pools().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_beyond_loopback_without_a_token_file_or_with_a_readable_one() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let tokens = TokenServer::start().await?;
    let mut config = base_config(&dir, &tokens)?;
    config.listen = "0.0.0.0:0".parse()?;
    config.token_file = None;
    let e = Keeper::builder(config)
        .build()
        .await
        .err()
        .ok_or("started")?;
    assert!(
        matches!(
            e,
            oauth_keeper::KeeperError::Config(
                oauth_keeper::ConfigError::NonLoopbackWithoutToken { .. }
            )
        ),
        "{e}"
    );

    let mut config = base_config(&dir, &tokens)?;
    let path = config.token_file.clone().ok_or("no token file")?;
    std::fs::set_permissions(
        &path,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )?;
    config.listen = "127.0.0.1:0".parse()?;
    let e = Keeper::builder(config)
        .build()
        .await
        .err()
        .ok_or("started")?;
    let msg = e.to_string();
    assert!(msg.contains("token_file") && !msg.contains(TOKEN), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_signin_through_the_api_shows_the_user_code_and_starts_the_qwen_pool() -> TestResult
{
    crate::common::capture_logs();
    let dir = tempfile::tempdir()?;
    let tokens = Arc::new(TokenServer::start().await?);
    let auth = AuthorizationServer::start_with(AuthorizationServerConfig {
        tokens: Some(Arc::clone(&tokens)),
        device_interval: std::time::Duration::from_secs(1),
        ..AuthorizationServerConfig::default()
    })
    .await?;
    let qwen_id = oauth_manager::refresh::presets::QWEN_CODE_CLIENT_ID;
    auth.register_client(ClientRegistration::new(qwen_id));
    let mut config = base_config(&dir, &tokens)?;
    let mut qwen = oauth_keeper::ProviderOverrides::default();
    qwen.token_url = Some(tokens.url());
    qwen.signin_token_url = Some(auth.token_url());
    qwen.device_authorization_url = Some(auth.device_authorization_url());
    config.providers.insert(ProviderKind::Qwen, qwen);
    let keeper = Keeper::builder(config).build().await?;
    let running = keeper.serve().await?;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/signins", running.url()))
        .bearer_auth(TOKEN)
        .json(&json!({ "provider": "qwen" }))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 202);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["prompt"]["kind"], "enter_code");
    assert_eq!(body["provider"], "qwen");
    let code = body["prompt"]["user_code"].as_str().ok_or("no user code")?;
    assert!(auth.approve_user_code(code));
    let status = wait_done(&keeper, body["signin"].as_str().ok_or("no signin")?).await?;
    assert!(matches!(status, SigninStatus::Done { .. }), "{status:?}");
    let account = body["account"].as_str().ok_or("no account")?;
    assert!(account.starts_with("qwen-"), "{account}");
    assert!(
        dir.path()
            .join(format!("accounts/{account}.json"))
            .is_file()
    );
    let r = http
        .post(format!("{}/accounts/qwen/{account}/refresh", running.url()))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await?;
    assert_eq!(tokens.stats().refreshes, 1);
    let pool = keeper.pool(ProviderKind::Qwen).ok_or("no qwen pool")?;
    let logs = crate::common::captured_logs();
    for c in pool.credentials() {
        let at = oauth_manager::ExposeSecret::expose_secret(&c.access_token).to_owned();
        assert!(!text.contains(&at) && !logs.contains(&at) && !body.to_string().contains(&at));
    }
    running.shutdown().await;
    Ok(())
}
