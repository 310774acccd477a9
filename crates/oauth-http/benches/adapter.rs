//! Adapter overhead on 127.0.0.1: the same chat request to oauth-testkit's fake provider with the
//! bare reqwest client (bearer set by hand), through `OAuthMiddleware`, and through
//! `OAuthService`, over a pool of three credentials. `cargo xtask bench` prints each adapter's
//! time as a ratio of the bare client's, measured in interleaved rounds so that load from other
//! processes on the machine affects all three alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

    // One request by the bare client (0), the middleware (1) or the tower service (2).
    let one = |which: usize| {
        rt.block_on(async {
            match which {
                0 => {
                    let r = bare
                        .post(&url)
                        .bearer_auth(&bare_token)
                        .json(&body)
                        .send()
                        .await
                        .expect("sent");
                    assert!(r.status().is_success());
                    r.bytes().await.expect("body")
                }
                1 => {
                    let r = middleware
                        .post(&url)
                        .json(&body)
                        .send()
                        .await
                        .expect("sent");
                    assert!(r.status().is_success());
                    r.bytes().await.expect("body")
                }
                _ => {
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
                }
            }
        })
    };

    let mut group = c.benchmark_group("adapter_overhead");
    group.measurement_time(Duration::from_secs(5));
    for (i, name) in NAMES.iter().enumerate() {
        group.bench_function(*name, |b| b.iter(|| one(i)));
    }
    group.finish();

    // The ratio, measured in interleaved rounds (bare, middleware, tower, bare, ...) so that
    // load from other processes affects all three alike.
    let mut sums = [Duration::ZERO; 3];
    for _ in 0..PAIRED_ROUNDS {
        for (i, sum) in sums.iter_mut().enumerate() {
            let started = Instant::now();
            std::hint::black_box(one(i));
            *sum += started.elapsed();
        }
    }
    drop((tokens, provider));
    write_ratios(&sums);
}

const NAMES: [&str; 3] = ["bare", "reqwest_middleware", "tower"];
const PAIRED_ROUNDS: u32 = 2000;

fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion")
}

/// Each adapter's time as a ratio of the bare client's, from the interleaved rounds, where
/// `cargo xtask bench` shows it (`new/extra.json`) and on stderr.
#[allow(clippy::print_stderr)] // the ratio is the point of this bench
fn write_ratios(sums: &[Duration; 3]) {
    let bare = sums[0].as_secs_f64();
    if bare <= 0.0 {
        return;
    }
    for (name, sum) in NAMES.iter().zip(sums) {
        let ratio = sum.as_secs_f64() / bare;
        let us = sum.as_secs_f64() * 1e6 / f64::from(PAIRED_ROUNDS);
        eprintln!(
            "adapter_overhead/{name}: {us:.1} us/request, {ratio:.3}x the bare client (interleaved)"
        );
        let dir = criterion_dir()
            .join("adapter_overhead")
            .join(name)
            .join("new");
        let json = format!(r#"{{"ratio_vs_bare": {ratio:.3}, "interleaved_us": {us:.1}}}"#);
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join("extra.json"), json);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
