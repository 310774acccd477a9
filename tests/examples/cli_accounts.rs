//! A pool per provider over the accounts the official CLIs signed in: a directory of CLI files
//! (`cargo run -p oauth-tests --example cli_accounts -- ~/.cli-proxy-api`), else the CLIs' own
//! files where they exist (`~/.gemini/oauth_creds.json`, ...), else a throwaway demo directory.
//! Refreshes use the CLIs' public clients (`presets`); `OAUTH_TOKEN_URL` points them elsewhere.
//! It prints what it would send (no token): Qwen's `resource_url` is the API base, Codex's
//! account id goes in `chatgpt-account-id`.

#![allow(clippy::print_stdout)] // an example prints what it shows

use oauth_accounts::{AccountDir, CliFile, Format, providers};
use oauth_manager::refresh::{HttpRefresher, TokenEndpoint, presets};
use oauth_manager::store::CredentialStore;
use oauth_manager::{ExposeSecret, OAuthKeyManager};

type Cli = (&'static str, Format, fn() -> TokenEndpoint, &'static str);
const CLIS: [Cli; 4] = [
    (
        providers::GEMINI,
        Format::GeminiCli,
        presets::google_gemini,
        "https://cloudcode-pa.googleapis.com/v1internal:generateContent",
    ),
    (
        providers::ANTHROPIC,
        Format::ClaudeCode,
        presets::anthropic_claude,
        "https://api.anthropic.com/v1/messages",
    ),
    (
        providers::OPENAI,
        Format::Codex,
        presets::openai_codex,
        "https://chatgpt.com/backend-api/codex/responses",
    ),
    (
        providers::QWEN,
        Format::QwenCode,
        presets::qwen,
        "https://portal.qwen.ai/v1/chat/completions",
    ),
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (arg, demo) = (std::env::args().nth(1), tempfile::tempdir()?);
    if arg.is_none() {
        write_demo_files(demo.path())?;
    }
    for (provider, format, preset, default_url) in CLIS {
        let store: Box<dyn CredentialStore> = match &arg {
            Some(dir) => Box::new(AccountDir::open(dir)?),
            None if format.default_path().is_some_and(|p| p.exists()) => {
                Box::new(CliFile::at_default_path(format)?)
            }
            None => Box::new(AccountDir::open(demo.path())?),
        };
        if store.load_all(provider).await?.is_empty() {
            continue; // no account of this provider
        }
        let endpoint = std::env::var("OAUTH_TOKEN_URL")
            .map_or_else(|_| preset(), |url| preset().with_url(url));
        let pool = OAuthKeyManager::builder(provider)
            .store_arc(store.into())
            .refresher(HttpRefresher::builder(endpoint).build()?)
            .build()
            .await?;
        let served = pool
            .execute_with_failover(|cred| async move {
                let url = cred.metadata.resource_url.as_ref().map_or_else(
                    || default_url.to_owned(),
                    |host| format!("https://{host}/v1/chat/completions"),
                );
                let mut headers = vec![format!(
                    "Authorization: Bearer <{} bytes>",
                    cred.access_token.expose_secret().len()
                )];
                if let Some(account) = &cred.metadata.account_id {
                    headers.push(format!("chatgpt-account-id: {account}"));
                }
                Ok::<_, std::io::Error>((format!("POST {url} {headers:?}"), None))
            })
            .await?;
        println!(
            "{provider}/{}: would send {}",
            served.credential, served.value
        );
    }
    Ok(())
}

/// One made-up account per CLI, unexpired (so nothing is refreshed against the real providers).
fn write_demo_files(dir: &std::path::Path) -> std::io::Result<()> {
    let ms = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let files = [
        ("gemini-work.json", format!(r#"{{"access_token":"ya29.demo","refresh_token":"1//demo","expiry_date":{ms},"scope":"https://www.googleapis.com/auth/cloud-platform"}}"#)),
        ("claude-max.json", format!(r#"{{"claudeAiOauth":{{"accessToken":"demo","refreshToken":"demo","expiresAt":{ms},"subscriptionType":"max"}}}}"#)),
        ("codex-main.json", r#"{"tokens":{"access_token":"demo","refresh_token":"demo","account_id":"acct-demo"},"last_refresh":"2026-01-01T00:00:00Z"}"#.to_owned()),
        ("qwen-1.json", format!(r#"{{"access_token":"demo","refresh_token":"demo","resource_url":"portal.qwen.ai","expiry_date":{ms}}}"#)),
    ];
    for (name, body) in files {
        std::fs::write(dir.join(name), body)?;
    }
    Ok(())
}
