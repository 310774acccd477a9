//! Adapter overhead on 127.0.0.1: the same chat request to oauth-testkit's fake provider with the
//! bare reqwest client (bearer set by hand), through `OAuthMiddleware`, and through
//! `OAuthService`, over a pool of three credentials. `cargo xtask bench` prints each adapter's
//! time as a ratio of the bare client's (`adapter_overhead/bare`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use oauth_http::{OAuthLayer, OAuthMiddleware, ReqwestService};
use oauth_manager::{Credential, OAuthKeyManager};
use oauth_providers::Provider;
use oauth_testkit::provider::FakeProvider;
use oauth_testkit::token_server::TokenServer;
use serde_json::json;
use tower::{Layer, ServiceExt};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (tokens, provider, pool, bare_token) = rt.block_on(async {
        let tokens = Arc::new(TokenServer::start().await.expect("token server"));
        let provider = FakeProvider::start(Arc::clone(&tokens))
            .await
            .expect("provider");
        let now = chrono::Utc::now();
        let grants: Vec<_> = (0..3)
            .map(|i| tokens.issue_grant(&format!("c{i}")))
            .collect();
        let creds = grants.iter().enumerate().map(|(i, g)| {
            Credential::new(format!("c{i}"), g.access_token.clone(), now)
                .expect("credential")
                .with_expires_at(now + chrono::TimeDelta::hours(10))
        });
        let pool = OAuthKeyManager::builder("openai")
            .credentials(creds)
            .build()
            .await
            .expect("pool");
        let bare = grants[0].access_token.clone();
        (tokens, provider, pool, bare)
    });
    let url = provider.url();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hello there"}]});
    let bare = reqwest::Client::new();
    let middleware = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(OAuthMiddleware::new(pool.clone(), Provider::OpenAi))
        .build();
    let service = OAuthLayer::new(pool.clone(), Provider::OpenAi)
        .layer(ReqwestService::new(reqwest::Client::new()));
    let text = body.to_string();

    let mut group = c.benchmark_group("adapter_overhead");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("bare", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = bare
                    .post(&url)
                    .bearer_auth(&bare_token)
                    .json(&body)
                    .send()
                    .await
                    .expect("sent");
                assert!(r.status().is_success());
                r.bytes().await.expect("body")
            })
        });
    });
    group.bench_function("reqwest_middleware", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = middleware
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .expect("sent");
                assert!(r.status().is_success());
                r.bytes().await.expect("body")
            })
        });
    });
    group.bench_function("tower", |b| {
        b.iter(|| {
            rt.block_on(async {
                let request = http::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(text.clone())
                    .expect("request");
                let r = service.clone().oneshot(request).await.expect("sent");
                assert!(r.status().is_success());
                http_body_util::BodyExt::collect(r.into_body())
                    .await
                    .expect("body")
                    .to_bytes()
            })
        });
    });
    group.finish();
    drop((tokens, provider));
    write_ratios();
}

fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion")
}

/// Criterion's mean (ns) for `adapter_overhead/<function>`.
fn mean_ns(function: &str) -> Option<f64> {
    let path = criterion_dir()
        .join("adapter_overhead")
        .join(function)
        .join("new")
        .join("estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v.pointer("/mean/point_estimate")?.as_f64()
}

/// Each adapter's mean as a ratio of the bare client's, where `cargo xtask bench` shows it
/// (`new/extra.json`) and on stderr.
#[allow(clippy::print_stderr)] // the ratio is the point of this bench
fn write_ratios() {
    let Some(bare) = mean_ns("bare").filter(|b| *b > 0.0) else {
        return;
    };
    for function in ["bare", "reqwest_middleware", "tower"] {
        let Some(mean) = mean_ns(function) else {
            continue;
        };
        let ratio = mean / bare;
        eprintln!("adapter_overhead/{function}: {ratio:.3}x the bare client");
        let dir = criterion_dir()
            .join("adapter_overhead")
            .join(function)
            .join("new");
        let json = format!(r#"{{"ratio_vs_bare": {ratio:.3}}}"#);
        let _ = std::fs::write(dir.join("extra.json"), json);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
