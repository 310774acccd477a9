//! The same pool of Gemini accounts through tower: `OAuthLayer` over any `http::Request`
//! service (here reqwest's client as one, `ReqwestService`).

use std::sync::Arc;

use oauth_http::{OAuthLayer, ReqwestService, ServedBy};
use oauth_manager::{Credential, OAuthKeyManager};
use oauth_providers::Provider;
use oauth_testkit::{
    provider::{Dialect, FakeProvider},
    token_server::TokenServer,
};
use tower::{Layer, ServiceExt};

#[allow(clippy::print_stdout)] // an example prints its result
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
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

    let service = OAuthLayer::new(pool.clone(), Provider::Gemini)
        .layer(ReqwestService::new(reqwest::Client::new()));
    let request = http::Request::post(format!(
        "{}/v1beta/models/gemini-2.5-flash:generateContent",
        gemini.base_url()
    ))
    .header("content-type", "application/json")
    .body(r#"{"contents": [{"parts": [{"text": "Hello"}]}]}"#.to_owned())?;
    let answer = service.oneshot(request).await?;
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
