//! A reqwest-middleware client over a pool of Gemini accounts. It runs against oauth-testkit's
//! fake Gemini on 127.0.0.1; for the real API, post to
//! `https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent`.

use std::sync::Arc;

use oauth_http::{OAuthMiddleware, ServedBy};
use oauth_manager::{Credential, OAuthKeyManager};
use oauth_providers::Provider;
use oauth_testkit::{
    provider::{Dialect, FakeProvider},
    token_server::TokenServer,
};

#[allow(clippy::print_stdout)] // an example prints its result
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokens = Arc::new(TokenServer::start().await?);
    let gemini = FakeProvider::start(Arc::clone(&tokens)).await?;
    gemini.set_dialect(Dialect::Gemini);
    let now = chrono::Utc::now();
    let accounts = ["work", "personal"]
        .map(|id| Credential::new(id, tokens.issue_grant(id).access_token, now));
    let pool = OAuthKeyManager::builder("gemini")
        .credentials(accounts.into_iter().collect::<Result<Vec<_>, _>>()?)
        .build()
        .await?;

    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(OAuthMiddleware::new(pool.clone(), Provider::Gemini))
        .build();
    let answer = client
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash:generateContent",
            gemini.base_url()
        ))
        .json(&serde_json::json!({"contents": [{"parts": [{"text": "Hello"}]}]}))
        .send()
        .await?;
    let by = answer
        .extensions()
        .get::<ServedBy>()
        .map(|s| s.credential.to_string());
    println!(
        "{} served by {by:?}; tokens recorded: {:?}",
        answer.status(),
        pool.credential_metrics("work").map(|m| m.tokens_used)
    );
    Ok(())
}
