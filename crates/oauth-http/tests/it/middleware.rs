//! The reqwest-middleware adapter, end to end, for every provider.

use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::FailureKind;
use oauth_http::{OAuthHttpError, OAuthMiddleware, ServedBy, StreamEnd, StreamUsage};
use oauth_manager::OAuthKeyManager;
use oauth_providers::{Cause, Provider, QuotaPeriod};
use oauth_testkit::provider::{Dialect, ProviderFault, dialect, usage_for};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

use crate::support::{CASES, Case, World, request_body};

fn client(world: &World, pool: &OAuthKeyManager, provider: Provider) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(OAuthMiddleware::new(pool.clone(), provider).with_clock(world.clock()))
        .build()
}

async fn call(
    client: &ClientWithMiddleware,
    world: &World,
    case: &Case,
    prompt: &str,
) -> reqwest_middleware::Result<reqwest::Response> {
    client
        .post(format!("{}{}", world.provider.base_url(), case.path))
        .json(&request_body(case.dialect, prompt, false))
        .send()
        .await
}

fn served_by(r: &reqwest::Response) -> ServedBy {
    r.extensions()
        .get::<ServedBy>()
        .cloned()
        .expect("ServedBy on every answer")
}

#[tokio::test]
async fn a_rate_limit_cools_that_account_exactly_as_long_and_another_serves() {
    for case in CASES {
        let world = World::start(case.dialect).await;
        let (a, ga) = world.grant("a");
        let (b, gb) = world.grant("b");
        let pool = world.pool(case.provider.as_str(), vec![a, b]).await;
        let client = client(&world, &pool, case.provider);
        let (answer, wait) = (case.rate_limit)(world.now());
        world
            .provider
            .inject(ga.family, ProviderFault::Answer(answer));
        let start = world.now();
        for i in 0..4 {
            let r = call(&client, &world, &case, &format!("prompt {i}"))
                .await
                .expect("served");
            assert_eq!(r.status(), 200, "{}", case.provider);
            assert_eq!(served_by(&r).credential, "b", "{}", case.provider);
        }
        let stats = world.provider.stats();
        assert_eq!(stats.rate_limited, 1, "{}: a was asked once", case.provider);
        assert_eq!((stats.ok_for(ga.family), stats.ok_for(gb.family)), (0, 4));
        let health = pool.credential_health("a").expect("known");
        assert_eq!(
            health.cooldown_until,
            Some(start + TimeDelta::from_std(wait).expect("small")),
            "{}: cooled down exactly as long as the provider said",
            case.provider
        );
        // One second before the end still cooling, at the end available again.
        world.provider.clear_faults();
        world.clock.advance(wait - Duration::from_secs(1));
        assert!(!pool.credential_health("a").expect("known").is_available);
        world.clock.advance(Duration::from_secs(1));
        assert!(
            pool.credential_health("a").expect("known").is_available,
            "{}",
            case.provider
        );
        // Usage of the served answers was recorded from the dialect's usage shape.
        let tokens: u64 = (0..4)
            .map(|i| usage_for(&format!("prompt {i}")).total_tokens)
            .sum();
        assert_eq!(
            pool.credential_metrics("b").map(|m| m.tokens_used),
            Some(tokens),
            "{}",
            case.provider
        );
        assert_eq!(world.tokens.stats().refreshes, 0);
    }
}

#[tokio::test]
async fn a_daily_quota_cools_until_its_reset() {
    // Gemini's per-day quota: until midnight Pacific (t0 is 04:00 PST: 20 hours).
    let cases = [
        (
            Provider::Gemini,
            Dialect::Gemini,
            dialect::gemini_per_day(),
            20 * 3600,
        ),
        (
            Provider::CodeAssist,
            Dialect::CodeAssist,
            dialect::gemini_per_day(),
            20 * 3600,
        ),
    ];
    for (provider, dialect, answer, secs) in cases {
        let world = World::start(dialect).await;
        let (a, ga) = world.grant("a");
        let (b, _) = world.grant("b");
        let pool = world.pool(provider.as_str(), vec![a, b]).await;
        let client = client(&world, &pool, provider);
        world
            .provider
            .inject_times(ga.family, ProviderFault::Answer(answer), 1);
        let case = CASES.iter().find(|c| c.provider == provider).expect("case");
        for _ in 0..2 {
            let r = call(&client, &world, case, "hi").await.expect("served");
            assert_eq!(served_by(&r).credential, "b");
        }
        let until = pool.credential_health("a").expect("known").cooldown_until;
        assert_eq!(
            until,
            Some(world.now() + TimeDelta::seconds(secs)),
            "{provider}"
        );
    }
    // Qwen's free daily allowance names no reset: the pool's default cooldown.
    let world = World::start(Dialect::Qwen).await;
    let (a, ga) = world.grant("a");
    let (b, _) = world.grant("b");
    let pool = world.pool("qwen", vec![a, b]).await;
    let client = client(&world, &pool, Provider::Qwen);
    world.provider.inject_times(
        ga.family,
        ProviderFault::Answer(dialect::qwen_free_quota()),
        1,
    );
    let case = CASES
        .iter()
        .find(|c| c.provider == Provider::Qwen)
        .expect("case");
    for _ in 0..2 {
        call(&client, &world, case, "hi").await.expect("served");
    }
    let health = pool.credential_health("a").expect("known");
    assert_eq!(
        health.cooldown_until,
        Some(world.now() + TimeDelta::seconds(60))
    );
}

#[tokio::test]
async fn an_overload_fails_over_without_penalizing_the_account() {
    for case in CASES {
        let world = World::start(case.dialect).await;
        let (a, ga) = world.grant("a");
        let (b, _) = world.grant("b");
        let pool = world.pool(case.provider.as_str(), vec![a, b]).await;
        let client = client(&world, &pool, case.provider);
        world
            .provider
            .inject_times(ga.family, ProviderFault::Answer((case.overloaded)()), 1);
        // The first call meets the overload on `a` and fails over to `b`.
        let r = call(&client, &world, &case, "hi").await.expect("served");
        let by = served_by(&r);
        assert_eq!(
            (by.credential.as_str(), by.attempts),
            ("b", 2),
            "{}",
            case.provider
        );
        let health = pool.credential_health("a").expect("known");
        assert!(health.is_available, "{}: not penalized", case.provider);
        assert_eq!(health.failure_count, 0, "{}", case.provider);
        assert!(
            health.cooldown_until.is_none_or(|t| t <= world.now()),
            "{}",
            case.provider
        );
        assert!(
            health
                .request_backoff_until
                .is_none_or(|t| t <= world.now())
        );
        // The next call goes to `a` (round-robin) at once, and it serves.
        let r = call(&client, &world, &case, "again").await.expect("served");
        let by = served_by(&r);
        assert_eq!(
            (by.credential.as_str(), by.attempts),
            ("a", 1),
            "{}",
            case.provider
        );
        assert_eq!(world.provider.stats().requests, 3, "{}", case.provider);
    }
}

#[tokio::test]
async fn a_401_refreshes_and_retries_once_on_the_same_account() {
    for case in CASES {
        let world = World::start(case.dialect).await;
        let (a, ga) = world.grant("a");
        let (b, _) = world.grant("b");
        let pool = world.pool(case.provider.as_str(), vec![a, b]).await;
        let client = client(&world, &pool, case.provider);
        // The provider rejects `a`'s token once (a server-side revocation of that token).
        world
            .provider
            .inject_times(ga.family, ProviderFault::Unauthorized, 1);
        let r = call(&client, &world, &case, "hi").await.expect("served");
        let by = served_by(&r);
        assert_eq!(
            (by.credential.as_str(), by.attempts),
            ("a", 1),
            "{}",
            case.provider
        );
        assert_eq!(world.tokens.stats().refreshes, 1, "{}", case.provider);
        let stats = world.provider.stats();
        assert_eq!((stats.unauthorized, stats.ok), (1, 1), "{}", case.provider);
        // A token that stays rejected is refreshed and retried once only, then the call fails
        // over; the other call of the round goes to `b` directly.
        world
            .provider
            .inject(ga.family, ProviderFault::Unauthorized);
        let mut seen = Vec::new();
        for _ in 0..2 {
            let r = call(&client, &world, &case, "hi").await.expect("served");
            let by = served_by(&r);
            seen.push((by.credential.to_string(), by.attempts));
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![("b".to_owned(), 1), ("b".to_owned(), 2)],
            "{}",
            case.provider
        );
        assert_eq!(world.provider.stats().unauthorized, 3, "{}", case.provider);
        assert_eq!(world.tokens.stats().refreshes, 2, "{}", case.provider);
    }
}

#[tokio::test]
async fn a_stream_is_served_and_a_cut_stream_is_not_retried() {
    for case in CASES {
        let world = World::start(case.dialect).await;
        let (a, ga) = world.grant("a");
        let (b, gb) = world.grant("b");
        let pool = world.pool(case.provider.as_str(), vec![a, b]).await;
        let client = client(&world, &pool, case.provider);
        let url = format!("{}{}", world.provider.base_url(), case.stream_path);
        let prompt = "stream this please";
        let r = client
            .post(&url)
            .json(&request_body(case.dialect, prompt, true))
            .send()
            .await
            .expect("stream starts");
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r).credential, "a");
        let report = r
            .extensions()
            .get::<StreamUsage>()
            .cloned()
            .expect("StreamUsage");
        let text = r.text().await.expect("whole stream");
        assert!(text.contains("data: "), "{}", case.provider);
        assert_eq!(report.end(), Some(StreamEnd::Complete), "{}", case.provider);
        assert_eq!(
            report.usage().map(|u| u.tokens()),
            Some(usage_for(prompt).total_tokens),
            "{}",
            case.provider
        );

        // `b` cuts its stream after the first event: the caller sees the first bytes, then an
        // error; nothing is retried.
        world
            .provider
            .inject_times(gb.family, ProviderFault::StreamCut, 1);
        let mut r = client
            .post(&url)
            .json(&request_body(case.dialect, prompt, true))
            .send()
            .await
            .expect("stream starts");
        assert_eq!(served_by(&r).credential, "b");
        let report = r
            .extensions()
            .get::<StreamUsage>()
            .cloned()
            .expect("StreamUsage");
        let first = r.chunk().await.expect("first bytes").expect("some");
        assert!(!first.is_empty());
        let mut broke = false;
        loop {
            match r.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    broke = true;
                    break;
                }
            }
        }
        assert!(broke, "{}: the cut reaches the caller", case.provider);
        let stats = world.provider.stats();
        assert_eq!(
            (stats.requests, stats.cut_streams),
            (2, 1),
            "{}: not retried",
            case.provider
        );
        assert_eq!(report.end(), Some(StreamEnd::Broken));
        // The broken stream counts against `b` (a transient failure).
        assert_eq!(pool.credential_health("b").expect("known").failure_count, 1);
        let _ = ga;
    }
}

#[tokio::test]
async fn a_body_that_cannot_be_replayed_is_sent_once() {
    let world = World::start(Dialect::Anthropic).await;
    let (a, ga) = world.grant("a");
    let (b, _) = world.grant("b");
    let pool = world.pool("anthropic", vec![a, b]).await;
    let client = client(&world, &pool, Provider::Anthropic);
    let (answer, wait) = (CASES[2].rate_limit)(world.now());
    world
        .provider
        .inject_times(ga.family, ProviderFault::Answer(answer), 1);
    let body = request_body(Dialect::Anthropic, "once", false).to_string();
    // A streaming request body (not a single buffer) cannot be cloned.
    let streaming = reqwest::Body::wrap(http_body_util::Full::new(bytes::Bytes::from(body)));
    let r = client
        .post(format!("{}/v1/messages", world.provider.base_url()))
        .header("content-type", "application/json")
        .body(streaming)
        .send()
        .await
        .expect("the provider's answer");
    // The 429 comes back to the caller as the provider sent it; `b` was never asked.
    assert_eq!(r.status(), 429);
    let by = served_by(&r);
    assert_eq!(by.credential, "a");
    assert_eq!(by.failure.map(|c| c.cause), Some(Cause::RateLimit));
    assert!(r.text().await.expect("body").contains("rate_limit_error"));
    assert_eq!(world.provider.stats().requests, 1);
    // And `a` still cooled down for its reset.
    let until = pool.credential_health("a").expect("known").cooldown_until;
    assert_eq!(
        until,
        Some(world.now() + TimeDelta::from_std(wait).expect("small"))
    );
}

#[tokio::test]
async fn request_scoped_answers_return_at_once_and_no_credential_is_an_error() {
    let world = World::start(Dialect::Gemini).await;
    let (a, ga) = world.grant("a");
    let (b, gb) = world.grant("b");
    let pool = world.pool("gemini", vec![a, b]).await;
    let client = client(&world, &pool, Provider::Gemini);
    let case = &CASES[3];
    world
        .provider
        .inject_times(ga.family, ProviderFault::BadRequest, 1);
    let r = call(&client, &world, case, "bad").await.expect("the 400");
    assert_eq!(r.status(), 400);
    assert_eq!(
        served_by(&r).failure.map(|c| c.kind),
        Some(FailureKind::RequestScoped)
    );
    assert_eq!(world.provider.stats().requests, 1);
    assert!(pool.credential_health("a").expect("known").is_available);

    // Both accounts on their daily quota: the last answer comes back (attempts exhausted)...
    for g in [&ga, &gb] {
        world
            .provider
            .inject(g.family, ProviderFault::Answer(dialect::gemini_per_day()));
    }
    let r = call(&client, &world, case, "x")
        .await
        .expect("the last 429");
    assert_eq!(r.status(), 429);
    let by = served_by(&r);
    assert_eq!(by.attempts, 2);
    assert_eq!(
        by.failure.map(|c| c.cause),
        Some(Cause::QuotaExhausted(QuotaPeriod::Day))
    );
    // ...and then no credential is available: a typed error saying until when.
    let err = call(&client, &world, case, "x")
        .await
        .expect_err("none available");
    let inner = match &err {
        reqwest_middleware::Error::Middleware(e) => e.downcast_ref::<OAuthHttpError>(),
        reqwest_middleware::Error::Reqwest(_) => None,
    };
    match inner {
        Some(OAuthHttpError::NoCredential {
            next_available_at, ..
        }) => {
            assert_eq!(*next_available_at, Some(world.now() + TimeDelta::hours(20)));
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = format!("{err} {err:?}");
    assert!(!text.contains(&ga.access_token) && !text.contains(&gb.access_token));
}

#[tokio::test]
async fn account_headers_and_resource_urls_come_from_the_credential() {
    // Codex: `chatgpt-account-id` from the credential's account id.
    let world = World::start(Dialect::Codex).await;
    let (mut a, _) = world.grant("a");
    a.metadata.account_id = Some("acct-1234".to_owned());
    let pool = world.pool("codex", vec![a]).await;
    let codex = client(&world, &pool, Provider::Codex);
    call(&codex, &world, &CASES[1], "hi").await.expect("served");
    assert_eq!(
        world.provider.stats().account_ids,
        vec!["acct-1234".to_owned()]
    );

    // Qwen: the account's resource URL is the API base, whatever host the request named.
    let world = World::start(Dialect::Qwen).await;
    let (mut a, _) = world.grant("a");
    a.metadata.resource_url = Some(format!("{}/v1", world.provider.base_url()));
    let pool = world.pool("qwen", vec![a]).await;
    let qwen = client(&world, &pool, Provider::Qwen);
    let r = qwen
        .post("https://portal.qwen.invalid/v1/chat/completions")
        .json(&request_body(Dialect::Qwen, "hi", false))
        .send()
        .await
        .expect("sent to the resource URL");
    assert_eq!(r.status(), 200);
    assert!(r.url().as_str().starts_with(&world.provider.base_url()));
}

#[tokio::test]
async fn an_error_event_inside_a_stream_is_reported_against_the_account() {
    let world = World::start(Dialect::Gemini).await;
    let (a, ga) = world.grant("a");
    let (b, _) = world.grant("b");
    let pool = world.pool("gemini", vec![a, b]).await;
    let client = client(&world, &pool, Provider::Gemini);
    world.provider.inject_times(
        ga.family,
        ProviderFault::Answer(dialect::gemini_stream_error(Duration::from_secs(20))),
        1,
    );
    let case = &CASES[3];
    let r = client
        .post(format!("{}{}", world.provider.base_url(), case.stream_path))
        .json(&request_body(Dialect::Gemini, "hi", true))
        .send()
        .await
        .expect("the stream starts");
    assert_eq!(
        (r.status().as_u16(), served_by(&r).credential.as_str()),
        (200, "a")
    );
    let report = r
        .extensions()
        .get::<StreamUsage>()
        .cloned()
        .expect("StreamUsage");
    let text = r.text().await.expect("the whole stream");
    assert!(text.contains("RESOURCE_EXHAUSTED"));
    let error = report.error().expect("the error event");
    assert_eq!(
        error.kind,
        FailureKind::rate_limited(Some(Duration::from_secs(20)))
    );
    assert_eq!(report.end(), Some(StreamEnd::Complete));
    // Not retried, but the account cools down for the event's retryDelay.
    assert_eq!(world.provider.stats().requests, 1);
    assert_eq!(
        pool.credential_health("a").expect("known").cooldown_until,
        Some(world.now() + TimeDelta::seconds(20))
    );
}

#[tokio::test]
async fn no_token_in_debug_or_errors() {
    let world = World::start(Dialect::OpenAi).await;
    let (a, ga) = world.grant("a");
    let pool = world.pool("openai", vec![a]).await;
    let middleware = OAuthMiddleware::new(pool.clone(), Provider::OpenAi);
    let client = client(&world, &pool, Provider::OpenAi);
    world.provider.inject(
        ga.family,
        ProviderFault::Answer(dialect::openai_rate_limit(Duration::from_secs(360))),
    );
    let r = call(&client, &world, &CASES[0], "x")
        .await
        .expect("the 429");
    let by = served_by(&r);
    let first = format!("{middleware:?} {by:?} {r:?}");
    // `a` is cooling down: no credential for the next call.
    let err = call(&client, &world, &CASES[0], "x")
        .await
        .expect_err("none available");
    let text = format!("{first} {err} {err:?}");
    assert!(!text.contains(&ga.access_token), "{text}");
    assert!(!text.contains(&ga.refresh_token), "{text}");
}

#[tokio::test]
async fn a_request_scoped_answer_after_a_failover_counts_both_attempts() {
    let world = World::start(Dialect::OpenAi).await;
    let (a, ga) = world.grant("a");
    let (b, gb) = world.grant("b");
    let pool = world.pool("openai", vec![a, b]).await;
    let client = client(&world, &pool, Provider::OpenAi);
    world
        .provider
        .inject_times(ga.family, ProviderFault::ServerError(503), 1);
    world
        .provider
        .inject_times(gb.family, ProviderFault::BadRequest, 1);
    let r = call(&client, &world, &CASES[0], "x")
        .await
        .expect("the 400");
    assert_eq!(r.status(), 400);
    let by = served_by(&r);
    assert_eq!((by.credential.as_str(), by.attempts), ("b", 2));
    assert_eq!(by.failure.map(|c| c.kind), Some(FailureKind::RequestScoped));
    // `b` is not penalized for the request's fault; `a` backs off for its 503.
    assert!(pool.credential_health("b").expect("known").is_available);
    assert_eq!(pool.credential_health("a").expect("known").failure_count, 1);
}

/// Issue 18: a streamed answer's final usage reaches the pool's metrics. The stream is recorded
/// as one request when its headers arrive (no tokens yet); when the body has been read to its
/// end the usage it reported is in `credential_metrics` and in Prometheus' `tokens_total`, and
/// still one request: for every provider's stream shape, from a real streamed body on
/// 127.0.0.1.
#[tokio::test]
async fn a_streamed_answers_final_usage_reaches_the_pool_metrics() {
    use oauth_manager::metrics::prometheus_client::registry::Registry;
    use oauth_manager::metrics::{PrometheusRecorder, encode_openmetrics};

    for case in CASES {
        let world = World::start(case.dialect).await;
        let (a, _) = world.grant("a");
        let p = case.provider.as_str();
        let mut registry = Registry::with_prefix("oauth_pool");
        let recorder = PrometheusRecorder::new(&mut registry, p);
        let pool = world
            .builder(p, vec![a])
            .metrics(recorder)
            .build()
            .await
            .expect("pool builds");
        let client = client(&world, &pool, case.provider);
        let prompt = "count my streamed tokens please";
        let want = usage_for(prompt).total_tokens;
        assert!(want > 0);
        let r = client
            .post(format!("{}{}", world.provider.base_url(), case.stream_path))
            .json(&request_body(case.dialect, prompt, true))
            .send()
            .await
            .expect("stream starts");
        assert_eq!(r.status(), 200, "{p}");
        let before = pool.credential_metrics("a").expect("known");
        assert_eq!((before.request_count, before.tokens_used), (1, 0), "{p}");
        let report = r
            .extensions()
            .get::<StreamUsage>()
            .cloned()
            .expect("StreamUsage");
        let text = r.text().await.expect("whole stream");
        assert!(text.contains("data: "), "{p}");
        assert_eq!(report.end(), Some(StreamEnd::Complete), "{p}");
        assert_eq!(report.usage().map(|u| u.tokens()), Some(want), "{p}");

        let after = pool.credential_metrics("a").expect("known");
        assert_eq!(
            (after.request_count, after.success_count, after.tokens_used),
            (1, 1, want),
            "{p}: the stream's tokens, and still one request"
        );
        let exposition = encode_openmetrics(&registry).expect("encodes");
        let tokens = format!("oauth_pool_tokens_total{{provider=\"{p}\",credential=\"a\"}} {want}");
        let requests = format!(
            "oauth_pool_requests_total{{provider=\"{p}\",credential=\"a\",outcome=\"success\"}} 1"
        );
        for line in [tokens, requests] {
            assert!(
                exposition.lines().any(|l| l == line),
                "{line}\n{exposition}"
            );
        }
    }
}
