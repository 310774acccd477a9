//! The tower adapter, end to end, for every provider.

use std::time::Duration;

use chrono::TimeDelta;
use http_body_util::BodyExt;
use oauth_http::{
    OAuthLayer, OAuthService, OnceBody, PoolClient, ReqwestService, ResponseBody, ServedBy,
    StreamEnd, StreamUsage,
};
use oauth_manager::OAuthKeyManager;
use oauth_testkit::provider::{Dialect, ProviderFault, usage_for};
use serde_json::Value;
use tower::{BoxError, Layer, ServiceExt};

use crate::support::{CASES, Case, World, request_body};

type Svc = OAuthService<ReqwestService>;
type Answer = http::Response<ResponseBody<reqwest::Body>>;

fn service(world: &World, pool: &OAuthKeyManager, case: &Case) -> Svc {
    OAuthLayer::from_pool(PoolClient::new(pool.clone(), case.provider).with_clock(world.clock()))
        .layer(ReqwestService::new(reqwest::Client::new()))
}

async fn send(svc: &Svc, url: String, body: &Value) -> Result<Answer, BoxError> {
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .expect("request");
    svc.clone().oneshot(request).await
}

async fn call(svc: &Svc, world: &World, case: &Case, prompt: &str) -> Answer {
    let url = format!("{}{}", world.provider.base_url(), case.path);
    send(svc, url, &request_body(case.dialect, prompt, false))
        .await
        .expect("an answer")
}

fn served_by(r: &Answer) -> ServedBy {
    r.extensions().get::<ServedBy>().cloned().expect("ServedBy")
}

#[tokio::test]
async fn rate_limits_overloads_and_401s_through_tower() {
    for case in CASES {
        // A rate limit cools `a` exactly as long as the provider said; `b` serves.
        let world = World::start(case.dialect).await;
        let (a, ga) = world.grant("a");
        let (b, _) = world.grant("b");
        let pool = world.pool(case.provider.as_str(), vec![a, b]).await;
        let svc = service(&world, &pool, &case);
        let (answer, wait) = (case.rate_limit)(world.now());
        world
            .provider
            .inject_times(ga.family, ProviderFault::Answer(answer), 1);
        let r = call(&svc, &world, &case, "one").await;
        let by = served_by(&r);
        assert_eq!(
            (r.status().as_u16(), by.credential.as_str(), by.attempts),
            (200, "b", 2),
            "{}",
            case.provider
        );
        assert_eq!(
            pool.credential_health("a").expect("known").cooldown_until,
            Some(world.now() + TimeDelta::from_std(wait).expect("small")),
            "{}",
            case.provider
        );
        let body = r.into_body().collect().await.expect("body").to_bytes();
        assert!(!body.is_empty());
        assert_eq!(
            pool.credential_metrics("b").map(|m| m.tokens_used),
            Some(usage_for("one").total_tokens),
            "{}: usage recorded",
            case.provider
        );

        // Once `a` is back, an overload on it fails over to `b` without penalizing `a`.
        world.clock.advance(wait);
        world.provider.clear_faults();
        world
            .provider
            .inject_times(ga.family, ProviderFault::Answer((case.overloaded)()), 1);
        let mut by = Vec::new();
        for _ in 0..2 {
            let r = call(&svc, &world, &case, "two").await;
            assert_eq!(r.status(), 200, "{}", case.provider);
            let s = served_by(&r);
            by.push((s.credential.to_string(), s.attempts));
        }
        by.sort();
        assert!(
            by.contains(&("b".to_owned(), 2)),
            "{}: {by:?}",
            case.provider
        );
        let health = pool.credential_health("a").expect("known");
        assert!(
            health.is_available && health.failure_count == 0,
            "{}",
            case.provider
        );

        // A 401 refreshes `a` and retries once on it.
        world
            .provider
            .inject_times(ga.family, ProviderFault::Unauthorized, 1);
        let refreshes = world.tokens.stats().refreshes;
        let mut served = Vec::new();
        for _ in 0..2 {
            let r = call(&svc, &world, &case, "three").await;
            assert_eq!(r.status(), 200);
            let s = served_by(&r);
            served.push((s.credential.to_string(), s.attempts));
        }
        served.sort();
        assert_eq!(
            served,
            vec![("a".to_owned(), 1), ("b".to_owned(), 1)],
            "{}",
            case.provider
        );
        assert_eq!(
            world.tokens.stats().refreshes,
            refreshes + 1,
            "{}",
            case.provider
        );
    }
}

#[tokio::test]
async fn streams_through_tower_are_served_and_never_retried() {
    for case in CASES {
        let world = World::start(case.dialect).await;
        let (a, _) = world.grant("a");
        let (b, gb) = world.grant("b");
        let pool = world.pool(case.provider.as_str(), vec![a, b]).await;
        let svc = service(&world, &pool, &case);
        let url = format!("{}{}", world.provider.base_url(), case.stream_path);
        let r = send(
            &svc,
            url.clone(),
            &request_body(case.dialect, "stream me", true),
        )
        .await
        .expect("stream");
        assert_eq!(served_by(&r).credential, "a");
        let report = r
            .extensions()
            .get::<StreamUsage>()
            .cloned()
            .expect("StreamUsage");
        let bytes = r.into_body().collect().await.expect("whole").to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains("data: "));
        assert_eq!(report.end(), Some(StreamEnd::Complete));
        assert_eq!(
            report.usage().map(|u| u.tokens()),
            Some(usage_for("stream me").total_tokens),
            "{}",
            case.provider
        );

        world
            .provider
            .inject_times(gb.family, ProviderFault::StreamCut, 1);
        let r = send(&svc, url, &request_body(case.dialect, "stream me", true))
            .await
            .expect("stream starts");
        assert_eq!(served_by(&r).credential, "b");
        let mut body = r.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
        let mut broke = false;
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                broke = true;
                break;
            }
        }
        assert!(broke, "{}", case.provider);
        assert_eq!(
            world.provider.stats().requests,
            2,
            "{}: not retried",
            case.provider
        );
    }
}

#[tokio::test]
async fn a_once_body_gets_one_attempt() {
    let world = World::start(Dialect::Gemini).await;
    let (a, ga) = world.grant("a");
    let (b, _) = world.grant("b");
    let pool = world.pool("gemini", vec![a, b]).await;
    let case = &CASES[3];
    world.provider.inject_times(
        ga.family,
        ProviderFault::Answer(oauth_testkit::provider::dialect::gemini_per_minute(
            Duration::from_secs(30),
        )),
        1,
    );
    let request = http::Request::post(format!("{}{}", world.provider.base_url(), case.path))
        .header("content-type", "application/json")
        .body(OnceBody(
            request_body(Dialect::Gemini, "once", false).to_string(),
        ))
        .expect("request");
    let svc = OAuthLayer::from_pool(
        PoolClient::new(pool.clone(), case.provider).with_clock(world.clock()),
    )
    .layer(ReqwestService::new(reqwest::Client::new()));
    let r = svc.oneshot(request).await.expect("the provider's answer");
    assert_eq!(r.status(), 429);
    assert_eq!(served_by(&r).credential, "a");
    assert_eq!(world.provider.stats().requests, 1);
    assert_eq!(
        pool.credential_health("a").expect("known").cooldown_until,
        Some(world.now() + TimeDelta::seconds(30))
    );
}

#[tokio::test]
async fn tower_sends_account_headers_and_rebases_on_the_resource_url() {
    let world = World::start(Dialect::Codex).await;
    let (mut a, _) = world.grant("a");
    a.metadata.account_id = Some("acct-tower".to_owned());
    let pool = world.pool("codex", vec![a]).await;
    let r = call(&service(&world, &pool, &CASES[1]), &world, &CASES[1], "hi").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        world.provider.stats().account_ids,
        vec!["acct-tower".to_owned()]
    );

    let world = World::start(Dialect::Qwen).await;
    let (mut a, _) = world.grant("a");
    a.metadata.resource_url = Some(world.provider.base_url());
    let pool = world.pool("qwen", vec![a]).await;
    let svc = service(&world, &pool, &CASES[5]);
    let r = send(
        &svc,
        "https://portal.qwen.invalid/v1/chat/completions".to_owned(),
        &request_body(Dialect::Qwen, "hi", false),
    )
    .await
    .expect("sent to the account's resource URL");
    assert_eq!(r.status(), 200);
    assert_eq!(world.provider.stats().ok, 1);
}

#[tokio::test]
async fn the_stream_end_hook_gets_the_streamed_usage() {
    let world = World::start(Dialect::Anthropic).await;
    let (a, _) = world.grant("a");
    let pool = world.pool("anthropic", vec![a]).await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&seen);
    let svc = OAuthLayer::from_pool(
        PoolClient::new(pool.clone(), CASES[2].provider)
            .with_clock(world.clock())
            .on_stream_end(std::sync::Arc::new(move |id, usage, end| {
                if let Ok(mut v) = sink.lock() {
                    v.push((id.to_string(), usage.map(|u| u.tokens()), end));
                }
            })),
    )
    .layer(ReqwestService::new(reqwest::Client::new()));
    let url = format!("{}{}", world.provider.base_url(), CASES[2].stream_path);
    let r = send(
        &svc,
        url,
        &request_body(Dialect::Anthropic, "count me", true),
    )
    .await
    .expect("stream");
    let _ = r.into_body().collect().await.expect("whole");
    let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(
        seen,
        vec![(
            "a".to_owned(),
            Some(usage_for("count me").total_tokens),
            StreamEnd::Complete
        )]
    );
    // The adapter recorded the stream's tokens itself (the hook is for anything else), once.
    let usage = pool.credential_metrics("a").expect("known");
    assert_eq!(
        (usage.request_count, usage.tokens_used),
        (1, usage_for("count me").total_tokens)
    );
}
