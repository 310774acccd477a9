//! The management API: refused without the token, each operation visible in /health and
//! /metrics, concurrent operations, no secret in any body.

use std::io::Read;

use reqwest::Method;
use serde_json::json;

use oauth_keeper::ProviderKind;
use oauth_manager::FailureKind;

use crate::common::{Fixture, Options, TestResult, metric};

fn routes() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/metrics"),
        (Method::GET, "/health"),
        (Method::GET, "/accounts"),
        (Method::GET, "/accounts/gemini/acct-00"),
        (Method::DELETE, "/accounts/gemini/acct-00"),
        (Method::POST, "/accounts/gemini/acct-00/disable"),
        (Method::POST, "/accounts/gemini/acct-00/enable"),
        (Method::POST, "/accounts/gemini/acct-00/refresh"),
        (Method::POST, "/accounts/gemini/acct-00/clear-cooldown"),
        (Method::POST, "/signins"),
        (Method::GET, "/signins/0123"),
        (Method::GET, "/no/such/route"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_refused_without_the_token_or_with_a_wrong_one() -> TestResult {
    let f = Fixture::start(Options::default()).await?;
    let wrong = [
        None,
        Some("Bearer wrong-token-wrong-token-wrong".to_owned()),
        Some(format!("Bearer {}x", crate::common::TOKEN)),
        Some(format!("Basic {}", crate::common::TOKEN)),
        Some(crate::common::TOKEN.to_owned()),
        Some("Bearer ".to_owned()),
    ];
    for (method, path) in routes() {
        for auth in &wrong {
            let mut req = f
                .http
                .request(method.clone(), f.url(path))
                .body("{\"provider\":\"gemini\"}");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().await?;
            assert_eq!(
                resp.status().as_u16(),
                401,
                "{method} {path} with {:?}",
                auth.is_some()
            );
            assert!(resp.text().await?.is_empty(), "401 has no detail");
        }
    }
    // Nothing happened: the account is still there, enabled, never refreshed.
    let a = f.health_of("acct-00").await?;
    assert_eq!(a["state"], "active");
    assert_eq!(f.tokens.stats().refreshes, 0);
    // With the token each route answers (not 401).
    for (method, path) in routes() {
        if method == Method::DELETE || path == "/signins" {
            continue;
        }
        let (status, _) = f.call(method.clone(), path, None).await?;
        assert_ne!(status, 401, "{method} {path}");
    }
    f.assert_no_secret_in_bodies();
    f.running.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_shows_in_health_and_metrics() -> TestResult {
    let f = Fixture::start(Options::default()).await?;
    let state = |id: &str, s: &str| {
        format!(
            "oauth_pool_credential_state{{provider=\"gemini\",credential=\"{id}\",state=\"{s}\"}}"
        )
    };

    // list
    let (status, list) = f.json(Method::GET, "/accounts").await?;
    assert_eq!(status, 200);
    assert_eq!(list["accounts"].as_array().map(Vec::len), Some(3));

    // disable / enable
    let (status, _) = f
        .call(Method::POST, "/accounts/gemini/acct-00/disable", None)
        .await?;
    assert_eq!(status, 200);
    assert_eq!(f.health_of("acct-00").await?["state"], "disabled");
    assert_eq!(
        metric(&f.metrics().await?, &state("acct-00", "disabled")),
        Some(1.0)
    );
    let (status, _) = f
        .call(Method::POST, "/accounts/gemini/acct-00/enable", None)
        .await?;
    assert_eq!(status, 200);
    assert_eq!(f.health_of("acct-00").await?["state"], "active");
    assert_eq!(
        metric(&f.metrics().await?, &state("acct-00", "disabled")),
        Some(0.0)
    );
    assert_eq!(
        metric(&f.metrics().await?, &state("acct-00", "active")),
        Some(1.0)
    );

    // refresh: against the strict server, written to the file, counted
    let before = std::fs::read_to_string(f.dir.path().join("accounts/acct-01.json"))?;
    let (status, _) = f
        .call(Method::POST, "/accounts/gemini/acct-01/refresh", None)
        .await?;
    assert_eq!(status, 200);
    assert_eq!(f.tokens.stats().refreshes, 1);
    assert_eq!(f.health_of("acct-01").await?["refresh_count"], 1);
    let refreshes =
        "oauth_pool_refreshes_total{provider=\"gemini\",credential=\"acct-01\",result=\"success\"}";
    assert_eq!(metric(&f.metrics().await?, refreshes), Some(1.0));
    let after = std::fs::read_to_string(f.dir.path().join("accounts/acct-01.json"))?;
    assert_ne!(before, after, "the refreshed tokens are in the file");
    assert!(
        !after.contains(&f.grants[1].refresh_token),
        "the spent refresh token is gone"
    );

    // clear a transient backoff (the application reported failures)
    let pool = f
        .running
        .keeper()
        .pool(ProviderKind::Gemini)
        .ok_or("no pool")?;
    pool.report_failure_kind("acct-02", FailureKind::Transient);
    assert_eq!(f.health_of("acct-02").await?["state"], "backing_off");
    assert_eq!(
        metric(&f.metrics().await?, &state("acct-02", "backing_off")),
        Some(1.0)
    );
    let (status, body) = f
        .json(Method::POST, "/accounts/gemini/acct-02/clear-cooldown")
        .await?;
    assert_eq!(status, 200);
    assert_eq!(body["outcome"], "cleared");
    assert_eq!(f.health_of("acct-02").await?["state"], "active");
    assert_eq!(
        metric(&f.metrics().await?, &state("acct-02", "active")),
        Some(1.0)
    );
    let (_, body) = f
        .json(Method::POST, "/accounts/gemini/acct-02/clear-cooldown")
        .await?;
    assert_eq!(body["outcome"], "nothing_to_clear");

    // a rate-limit cooldown is cleared too, and /metrics says so at once
    pool.report_failure_kind("acct-02", FailureKind::RateLimited { retry_after: None });
    assert_eq!(f.health_of("acct-02").await?["state"], "cooling_down");
    let (status, body) = f
        .json(Method::POST, "/accounts/gemini/acct-02/clear-cooldown")
        .await?;
    assert_eq!(status, 200);
    assert_eq!(body["outcome"], "cleared");
    assert_eq!(f.health_of("acct-02").await?["state"], "active");
    assert_eq!(
        metric(&f.metrics().await?, &state("acct-02", "active")),
        Some(1.0)
    );

    // unknown account / provider
    let (status, _) = f
        .call(Method::POST, "/accounts/gemini/nobody/disable", None)
        .await?;
    assert_eq!(status, 404);
    let (status, _) = f
        .call(Method::POST, "/accounts/nowhere/acct-00/disable", None)
        .await?;
    assert_eq!(status, 404);

    // remove: gone from the pool, the directory, /health and /metrics
    let (status, _) = f
        .call(Method::DELETE, "/accounts/gemini/acct-00", None)
        .await?;
    assert_eq!(status, 204);
    assert!(!f.dir.path().join("accounts/acct-00.json").exists());
    assert!(f.health_of("acct-00").await?.is_null());
    assert!(!f.metrics().await?.contains("credential=\"acct-00\""));
    // the last accounts too: the pool goes with the last one
    drop(pool);
    for id in ["acct-01", "acct-02"] {
        let (status, _) = f
            .call(Method::DELETE, &format!("/accounts/gemini/{id}"), None)
            .await?;
        assert_eq!(status, 204, "{id}");
    }
    let (_, list) = f.json(Method::GET, "/accounts").await?;
    assert_eq!(list["accounts"].as_array().map(Vec::len), Some(0));
    let text = f.metrics().await?;
    let left: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("credential=\""))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        std::fs::read_dir(f.dir.path().join("accounts"))?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .count(),
        0
    );

    let stats = f.tokens.stats();
    assert_eq!((stats.invalid_grants, stats.reused_refresh_tokens), (0, 0));
    f.assert_no_secret_in_bodies();
    f.running.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_negotiate_format_and_gzip() -> TestResult {
    let f = Fixture::start(Options::default()).await?;
    let resp = f
        .http
        .get(f.url("/metrics"))
        .bearer_auth(crate::common::TOKEN)
        .header("accept", "application/openmetrics-text;version=1.0.0")
        .header("accept-encoding", "gzip")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert_eq!(
        resp.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let bytes = resp.bytes().await?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text)?;
    assert!(text.ends_with("# EOF\n"));
    assert!(text.contains("credential=\"acct-00\""));
    let plain = f.metrics().await?;
    assert!(plain.contains("oauth_pool_credential_state") && !plain.contains("# EOF"));
    f.running.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_limited_and_bad_bodies_are_not_echoed() -> TestResult {
    let f = Fixture::start(Options {
        tune: Box::new(|c| c.max_body_bytes = 256),
        ..Options::default()
    })
    .await?;
    let big = format!(
        "{{\"provider\":\"gemini\",\"account\":\"{}\"}}",
        "a".repeat(4096)
    );
    let resp = f
        .http
        .post(f.url("/signins"))
        .bearer_auth(crate::common::TOKEN)
        .body(big)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 413);
    let marker = "zz-echo-marker-zz";
    let (status, body) = f
        .call(
            Method::POST,
            "/signins",
            Some(json!({ "provider": "gemini", marker: 1 })),
        )
        .await?;
    assert_eq!(status, 400);
    assert!(!body.contains(marker), "{body}");
    let (status, body) = f
        .call(
            Method::POST,
            "/signins",
            Some(json!({ "provider": marker })),
        )
        .await?;
    assert_eq!(status, 404);
    assert!(!body.contains(marker), "{body}");
    let (status, _) = f
        .call(
            Method::POST,
            "/signins",
            Some(json!({ "provider": "gemini", "account": "../evil" })),
        )
        .await?;
    assert_eq!(status, 400);
    f.running.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_operations() -> TestResult {
    let f = std::sync::Arc::new(
        Fixture::start(Options {
            accounts: 6,
            ..Options::default()
        })
        .await?,
    );
    let mut tasks = Vec::new();
    for round in 0..5 {
        for i in 0..6 {
            let f = std::sync::Arc::clone(&f);
            tasks.push(tokio::spawn(async move {
                let id = format!("acct-{i:02}");
                let ops = [
                    (Method::POST, format!("/accounts/gemini/{id}/refresh")),
                    (Method::POST, format!("/accounts/gemini/{id}/disable")),
                    (Method::POST, format!("/accounts/gemini/{id}/enable")),
                    (Method::GET, "/health".to_owned()),
                    (Method::GET, "/metrics".to_owned()),
                ];
                let (m, p) = &ops[(round + i) % ops.len()];
                f.call(m.clone(), p, None).await.map(|(s, _)| s)
            }));
        }
    }
    for t in tasks {
        let status = t.await??;
        assert!(status == 200 || status == 503, "{status}");
    }
    // Everything enabled at the end, every account usable, no grant spent twice.
    for i in 0..6 {
        f.call(
            Method::POST,
            &format!("/accounts/gemini/acct-{i:02}/enable"),
            None,
        )
        .await?;
    }
    let (status, health) = f.json(Method::GET, "/health").await?;
    assert_eq!(status, 200);
    assert_eq!(health["providers"]["gemini"]["available"], 6);
    let stats = f.tokens.stats();
    assert!(stats.refreshes >= 6, "{stats:?}");
    assert_eq!(
        (
            stats.invalid_grants,
            stats.reused_refresh_tokens,
            stats.families_revoked
        ),
        (0, 0, 0)
    );
    let pool = f
        .running
        .keeper()
        .pool(ProviderKind::Gemini)
        .ok_or("no pool")?;
    for c in pool.credentials() {
        assert!(
            f.tokens
                .is_access_token_valid(oauth_manager::ExposeSecret::expose_secret(&c.access_token))
        );
    }
    f.assert_no_secret_in_bodies();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_file_dropped_in_starts_a_pool_and_its_removal_stops_it() -> TestResult {
    let f = Fixture::start(Options {
        accounts: 0,
        ..Options::default()
    })
    .await?;
    assert!(f.running.keeper().providers().is_empty());
    crate::common::seed(&f.dir, &f.tokens, 1).await?;
    let mut joined = false;
    for _ in 0..100 {
        if f.running.keeper().pool(ProviderKind::Gemini).is_some() {
            joined = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(joined, "the watcher started a pool for the new file");
    assert_eq!(f.health_of("acct-00").await?["state"], "active");
    // The pool keeps its last credential when its file goes; the keeper drops the pool.
    std::fs::remove_file(f.dir.path().join("accounts/acct-00.json"))?;
    let mut left = false;
    for _ in 0..100 {
        if f.running.keeper().pool(ProviderKind::Gemini).is_none() {
            left = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(left, "the pool of the removed last file is gone");
    assert!(f.health_of("acct-00").await?.is_null());
    assert!(!f.metrics().await?.contains("credential=\"acct-00\""));
    f.running.shutdown().await;
    Ok(())
}
