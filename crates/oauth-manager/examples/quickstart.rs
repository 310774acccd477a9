//! The smallest useful pool: two accounts, one call with failover.
//!
//! `cargo run -p oauth-manager --example quickstart`

#![allow(clippy::print_stdout)] // an example prints what it shows

use oauth_manager::{Credential, OAuthKeyManager, Usage};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let now = chrono::Utc::now();
    let in_an_hour = now + chrono::TimeDelta::hours(1);
    let pool = OAuthKeyManager::builder("gemini")
        .credential(Credential::new("team", "access-1", now)?.with_expires_at(in_an_hour))
        .credential(Credential::new("personal", "access-2", now)?.with_expires_at(in_an_hour))
        .build()
        .await?;

    let served = pool
        .execute_with_failover(|cred| async move {
            // Call the provider here with `cred.access_token.expose_secret()`.
            let usage = Usage {
                total_tokens: 100,
                ..Usage::default()
            };
            Ok::<_, std::io::Error>((format!("hello from {}", cred.id), Some(usage)))
        })
        .await?;
    println!(
        "{} (served by {}, {} attempt)",
        served.value, served.credential, served.attempts
    );
    Ok(())
}
