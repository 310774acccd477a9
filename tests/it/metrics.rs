//! `/metrics` scraped over HTTP: the Prometheus recorder's registry served by axum on 127.0.0.1,
//! fetched with reqwest in both formats (content negotiation on `Accept`), the classic text checked
//! by `promtool check metrics` (Debian's `prometheus` package), and the figures matching the
//! workload the fake provider and token server saw.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use oauth_manager::ExecuteError;
use oauth_manager::metrics::{OPENMETRICS_CONTENT_TYPE, PrometheusRecorder, encode_openmetrics};
use oauth_testkit::provider::ProviderFault;
use oauth_testkit::token_server::TokenServerConfig;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::support::{World, report};

/// `/metrics`: OpenMetrics when the scraper asks for it, else the classic text format.
async fn metrics(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (body, content_type) = if accept.contains("application/openmetrics-text") {
        (encode_openmetrics(&registry), OPENMETRICS_CONTENT_TYPE)
    } else {
        let mut out = String::new();
        (
            prometheus_text::encode(&mut out, &registry).map(|()| out),
            prometheus_text::CONTENT_TYPE,
        )
    };
    match body {
        Ok(body) => (StatusCode::OK, [(CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn serve(registry: Arc<Registry>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(registry);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/metrics")
}

async fn scrape(url: &str, accept: &str) -> (String, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .header(ACCEPT, accept)
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (content_type, resp.text().await.expect("body"))
}

/// Samples of an exposition: `name{labels}` (labels in order) -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line");
            (series.to_owned(), value.parse().expect("numeric value"))
        })
        .collect()
}

/// The sum of the samples of `name` whose labels contain every `name="value"` of `with`.
fn sum(samples: &BTreeMap<String, f64>, name: &str, with: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series.split('{').next() == Some(name) && with.iter().all(|w| series.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Runs `promtool check metrics` on `text`; `None` when promtool is not installed.
fn promtool_check(text: &str) -> Option<(bool, String)> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("promtool could not start: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

#[tokio::test]
async fn metrics_scraped_over_http_pass_promtool_and_match_the_workload() {
    let world = World::start_with(TokenServerConfig {
        access_token_ttl: Duration::from_secs(600),
        ..TokenServerConfig::default()
    })
    .await;
    let mut registry = Registry::with_prefix("oauth_pool");
    let recorder = PrometheusRecorder::new(&mut registry, "fake-ai");
    let registry = Arc::new(registry);
    let (a, ga) = world.grant("a");
    let (b, gb) = world.grant("b");
    let (c, gc) = world.grant("c");
    let pool = world
        .builder(vec![a, b, c])
        .metrics(Arc::new(recorder))
        .build()
        .await
        .expect("pool builds");

    // The workload: 40 calls; `a` is rate-limited once, `b` fails twice with 500; halfway every
    // token needs a refresh; the last call is a bad request.
    world.provider.inject_times(
        ga.family,
        ProviderFault::RateLimited {
            retry_after: Some(Duration::from_secs(5)),
            reset_hint_in_body: false,
        },
        1,
    );
    world
        .provider
        .inject_times(gb.family, ProviderFault::ServerError(500), 2);
    let mut failovers = 0;
    for i in 0..40 {
        if i == 20 {
            world.clock.advance(Duration::from_secs(6 * 60));
        }
        let served = world
            .chat(&pool, &format!("prompt number {i}"))
            .await
            .expect("served");
        failovers += served.attempts - 1;
        if i % 4 == 3 {
            world.clock.advance(Duration::from_secs(2));
        }
    }
    for family in [ga.family, gb.family, gc.family] {
        world
            .provider
            .inject_times(family, ProviderFault::BadRequest, 1);
    }
    let err = world.chat(&pool, "a bad request").await.expect_err("400");
    assert!(matches!(err, ExecuteError::RequestScoped { .. }), "{err}");
    world.provider.clear_faults();
    let provider = world.provider.stats();
    let server = world.tokens.stats();
    assert_eq!(server.refreshes, 3);

    let url = serve(Arc::clone(&registry)).await;
    let (classic_type, classic) = scrape(&url, "text/plain;version=0.0.4").await;
    assert!(
        classic_type.starts_with("text/plain; version=0.0.4"),
        "{classic_type}"
    );
    let (om_type, openmetrics) = scrape(
        &url,
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )
    .await;
    assert_eq!(om_type, OPENMETRICS_CONTENT_TYPE);
    assert!(openmetrics.ends_with("# EOF\n"));

    // promtool: a real Prometheus tool checks the exposition (classic text on stdin).
    let promtool = match promtool_check(&classic) {
        Some((ok, said)) => {
            assert!(
                ok,
                "promtool check metrics failed:\n{said}\n--- exposition ---\n{classic}"
            );
            "passed"
        }
        None if std::env::var_os("CI").is_some() => {
            panic!("promtool is not installed (Debian package `prometheus`); CI must have it")
        }
        None => {
            eprintln!(
                "\n!!!!! SKIPPED `promtool check metrics`: promtool is not installed \
                 (apt-get install prometheus). The figures are still checked. !!!!!\n"
            );
            "skipped (not installed)"
        }
    };

    // The figures match what the servers saw, in both formats.
    let s = samples(&classic);
    let om = samples(&openmetrics);
    let requests = "oauth_pool_requests_total";
    for (outcome, want) in [
        ("success", provider.ok),
        ("rate_limited", provider.rate_limited),
        ("transient", provider.server_errors),
        ("request_scoped", provider.bad_requests),
        ("unauthorized", 0),
    ] {
        let label = format!("outcome=\"{outcome}\"");
        #[allow(clippy::cast_precision_loss)]
        let want = want as f64;
        assert_eq!(sum(&s, requests, &[&label]), want, "{outcome}");
        assert_eq!(
            sum(&om, requests, &[&label]),
            want,
            "{outcome} (OpenMetrics)"
        );
    }
    assert_eq!(
        (provider.ok, provider.rate_limited, provider.server_errors),
        (40, 1, 2)
    );
    #[allow(clippy::cast_precision_loss)]
    let tokens = provider.tokens as f64;
    assert_eq!(sum(&s, "oauth_pool_tokens_total", &[]), tokens);
    for (id, family) in [("a", ga.family), ("b", gb.family), ("c", gc.family)] {
        let label = format!("credential=\"{id}\"");
        #[allow(clippy::cast_precision_loss)]
        let ok = provider.ok_for(family) as f64;
        assert_eq!(
            sum(&s, requests, &[&label, "outcome=\"success\""]),
            ok,
            "{id}"
        );
    }
    assert_eq!(
        sum(&s, "oauth_pool_refreshes_total", &["result=\"success\""]),
        3.0
    );
    assert_eq!(
        sum(&s, "oauth_pool_failovers_total", &[]),
        f64::from(failovers)
    );
    assert_eq!(failovers, 3, "one failover per 429 and 500");
    assert_eq!(
        sum(&s, "oauth_pool_request_duration_seconds_count", &[]),
        sum(&s, requests, &[])
    );
    assert_eq!(
        sum(&om, "oauth_pool_refresh_duration_seconds_count", &[]),
        3.0
    );
    assert!(!classic.contains(&ga.access_token) && !classic.contains(&ga.refresh_token));

    report(
        module_path!(),
        json!({
            "series": s.len(),
            "requests_success": provider.ok,
            "tokens": provider.tokens,
            "refreshes": server.refreshes,
            "failovers": failovers,
            "promtool": promtool,
        }),
    );
}
