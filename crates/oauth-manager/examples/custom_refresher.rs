//! Bring your own refresher: any async function from a credential to the tokens it was issued.
//!
//! `cargo run -p oauth-manager --example custom_refresher`

#![allow(clippy::print_stdout)] // an example prints what it shows

use std::sync::Arc;

use oauth_manager::Credential;
use oauth_manager::OAuthKeyManager;
use oauth_manager::refresh::{FnRefresher, RefreshError, TokenSet};

/// Pretend token endpoint: a real refresher would POST the refresh token and parse the answer.
/// It returns only what the provider issued; the pool keeps the old refresh token when none is
/// rotated and does the bookkeeping (`Credential::apply_tokens`).
async fn exchange(_credential: Credential) -> Result<TokenSet, RefreshError> {
    let now = chrono::Utc::now();
    Ok(TokenSet::new(format!("access-{}", now.timestamp()))
        .with_expires_at(now + chrono::TimeDelta::hours(1)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let now = chrono::Utc::now();
    let expiring = Credential::new("acct", "old-access", now)?
        .with_refresh_token("refresh-1")
        .with_expires_at(now + chrono::TimeDelta::minutes(2));
    let pool = OAuthKeyManager::builder("claude")
        .credential(expiring)
        .refresher(Arc::new(FnRefresher::new(exchange)))
        .build()
        .await?;

    // The token expires within the 5-minute buffer: the pool refreshes it once, before use.
    let served = pool
        .execute_with_failover(
            |cred| async move { Ok::<_, std::io::Error>((cred.expires_at, None)) },
        )
        .await?;
    println!(
        "served by {}; token now expires at {:?}",
        served.credential, served.value
    );
    let metrics = pool.credential_metrics("acct").unwrap_or_default();
    println!("refreshes: {}", metrics.refresh_count);
    Ok(())
}
