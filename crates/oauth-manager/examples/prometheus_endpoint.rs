//! Serve the pool's Prometheus metrics and a health endpoint with axum.
//!
//! `cargo run -p oauth-manager --example prometheus_endpoint` then
//! `curl 127.0.0.1:9898/metrics` and `curl 127.0.0.1:9898/health`.
//!
//! `/metrics` honours content negotiation as Prometheus asks for it: OpenMetrics 1.0.0 when the
//! scraper's `Accept` prefers it, the 0.0.4 text format otherwise, gzip when `Accept-Encoding`
//! allows it. The gauges (state, token expiry, cooldown) are computed when scraped.

#![allow(clippy::print_stdout)] // an example prints what it shows

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use oauth_manager::metrics::{PrometheusRecorder, encode_scrape};
use oauth_manager::{Credential, OAuthKeyManager};
use prometheus_client::registry::Registry;

#[derive(Clone)]
struct App {
    pool: OAuthKeyManager,
    registry: Arc<Mutex<Registry>>,
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> impl IntoResponse {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let registry = app
        .registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match encode_scrape(&registry, header(ACCEPT), header(ACCEPT_ENCODING)) {
        Ok(scrape) => {
            let mut response = ([(CONTENT_TYPE, scrape.content_type)], scrape.body).into_response();
            if let Some(encoding) = scrape.content_encoding {
                response.headers_mut().insert(
                    CONTENT_ENCODING,
                    axum::http::HeaderValue::from_static(encoding),
                );
            }
            response
        }
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn health(State(app): State<App>) -> impl IntoResponse {
    axum::Json(app.pool.health_summary())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut registry = Registry::with_prefix("oauth_pool");
    let recorder = PrometheusRecorder::new(&mut registry, "gemini");
    let now = chrono::Utc::now();
    let pool = OAuthKeyManager::builder("gemini")
        .credential(Credential::new("team", "access-1", now)?)
        .metrics(recorder)
        .build()
        .await?;
    pool.execute_with_failover(|_| async { Ok::<_, std::io::Error>(((), None)) })
        .await?;

    let app = App {
        pool,
        registry: Arc::new(Mutex::new(registry)),
    };
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9898").await?;
    println!(
        "serving http://{}/metrics and /health",
        listener.local_addr()?
    );
    if std::env::var_os("EXAMPLE_EXIT_IMMEDIATELY").is_some() {
        return Ok(());
    }
    axum::serve(listener, router).await?;
    Ok(())
}
