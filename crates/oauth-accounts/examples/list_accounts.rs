//! Lists the accounts of a CLI's credential file or of an account directory, without a single
//! token, then follows the directory for a while and prints what joins, changes and leaves.
//!
//! ```text
//! cargo run -p oauth-accounts --example list_accounts -- ~/.cli-proxy-api
//! cargo run -p oauth-accounts --example list_accounts -- ~/.gemini/oauth_creds.json gemini
//! ```
//!
//! With no argument it lists a throwaway directory it fills with one account per format.

#![allow(clippy::print_stdout)] // an example prints what it shows

use std::path::PathBuf;
use std::time::Duration;

use oauth_accounts::{AccountDir, CliFile, Format, providers};
use oauth_store::{CredentialStore, StoreChange};

const PROVIDERS: [&str; 4] = [
    providers::GEMINI,
    providers::ANTHROPIC,
    providers::OPENAI,
    providers::QWEN,
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let _demo_dir;
    let store: Box<dyn CredentialStore> = match (args.next(), args.next()) {
        (Some(path), Some(cli)) => {
            let format = match cli.as_str() {
                "gemini" => Format::GeminiCli,
                "claude" => Format::ClaudeCode,
                "codex" => Format::Codex,
                "qwen" => Format::QwenCode,
                other => return Err(format!("unknown CLI {other:?}").into()),
            };
            Box::new(CliFile::open(format, &path, format.default_id())?)
        }
        (Some(dir), None) => Box::new(AccountDir::open(PathBuf::from(dir))?),
        (None, _) => {
            let dir = tempfile::tempdir()?;
            demo_files(dir.path())?;
            let store = AccountDir::open(dir.path())?;
            _demo_dir = dir;
            Box::new(store)
        }
    };

    for provider in PROVIDERS {
        for account in store.load_all(provider).await? {
            let c = &account.value;
            let m = &c.metadata;
            println!(
                "{provider:<10} {:<24} v{} expires {} email {} plan {} account {} resource {}",
                c.id.as_str(),
                account.version,
                c.expires_at
                    .map_or_else(|| "unknown".to_owned(), |t| t.to_rfc3339()),
                m.email.as_deref().unwrap_or("-"),
                m.plan.as_deref().unwrap_or("-"),
                m.account_id.as_deref().unwrap_or("-"),
                m.resource_url.as_deref().unwrap_or("-"),
            );
        }
    }

    // Follow the changes for a few seconds (drop a file in, edit one, remove one).
    let Some(mut changes) = store.changes() else {
        return Ok(());
    };
    println!("watching for 5 s ...");
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Ok(change)) = tokio::time::timeout_at(until, changes.recv()).await {
        match change {
            StoreChange::Changed { provider, id } => println!("changed: {provider}/{id}"),
            StoreChange::Removed { provider, id } => println!("removed: {provider}/{id}"),
            other => println!("{other:?}"),
        }
    }
    Ok(())
}

/// One made-up account per format, so the example shows something without real logins.
fn demo_files(dir: &std::path::Path) -> std::io::Result<()> {
    let files = [
        (
            "gemini-work.json",
            r#"{"access_token":"ya29.demo","refresh_token":"1//demo","expiry_date":1767225600000,
                "token_type":"Bearer","scope":"https://www.googleapis.com/auth/cloud-platform"}"#,
        ),
        (
            "claude-personal.json",
            r#"{"claudeAiOauth":{"accessToken":"demo","refreshToken":"demo","expiresAt":1767225600000,
                "scopes":["user:inference"],"subscriptionType":"max"}}"#,
        ),
        (
            "codex-main.json",
            r#"{"OPENAI_API_KEY":null,"tokens":{"id_token":"","access_token":"demo",
                "refresh_token":"demo","account_id":"acct-demo"},"last_refresh":"2026-01-01T00:00:00Z"}"#,
        ),
        (
            "qwen-1.json",
            r#"{"access_token":"demo","refresh_token":"demo","token_type":"Bearer",
                "resource_url":"portal.qwen.ai","expiry_date":1767225600000}"#,
        ),
    ];
    for (name, body) in files {
        std::fs::write(dir.join(name), body)?;
    }
    Ok(())
}
