//! `cargo xtask demo`: the project's main job, and what a newcomer runs first.
//!
//! Everything runs in this process on 127.0.0.1: the strict fake OAuth token endpoint, the fake AI
//! provider and a webhook receiver that verifies signatures (all from `oauth-testkit`). An
//! `OAuthKeyManager` is built over several credentials whose grants come from the token endpoint,
//! with the HTTP refresher, a Prometheus recorder, signed webhooks and background maintenance.
//! Concurrent callers drive chat requests through it while a script ([`script`]) makes one token
//! expire, rate-limits one credential, revokes one grant, rotates one credential out, and sends
//! some bad requests, slow answers and server errors. A live progress line and a timeline show
//! what happens; the report ([`report`]) shows each credential's figures, the webhooks received,
//! the token endpoint's and provider's counters and an excerpt of `/metrics`, then the checks.
//! The demo fails (non-zero exit) when a check fails: a reused refresh token, an invalid_grant the
//! library caused, a lost event or webhook, a cooldown not honoured, a rotation not completed.

mod console;
mod options;
mod report;
mod script;
mod traffic;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use chrono::Utc;
use oauth_manager::metrics::PrometheusRecorder;
use oauth_manager::refresh::{ClientAuth, HttpRefresher, TokenEndpoint};
use oauth_manager::rotation::RotationPolicy;
use oauth_manager::webhooks::{
    DEFAULT_TOLERANCE, MonitoringConfig, Notifier, WebhookNotifier, WebhookSecret,
};
use oauth_manager::{MaintenanceConfig, OAuthKeyManager, REFRESH_BUFFER};
use oauth_testkit::provider::{ChatClient, FakeProvider};
use oauth_testkit::token_server::TokenServer;
use oauth_testkit::webhook_receiver::{VerifyFn, WebhookReceiver};
use prometheus_client::registry::Registry;
use tokio::sync::{oneshot, watch};

use self::console::{Console, ID_WIDTH};
use self::options::{HELP, Options};
use self::report::{Findings, Scrape};
use self::script::Cast;
use self::traffic::{EventLog, Traffic};

/// The provider name the pool reports under.
const PROVIDER: &str = "fake-ai";

/// How often maintenance runs (refresh ahead, auto-decommission, alerts).
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(500);

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let Some(options) = Options::parse(args)? else {
        print!("{HELP}");
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("demo: cannot start the tokio runtime: {e}"))?;
    runtime.block_on(demo(options))
}

fn fail(what: &str, error: impl std::fmt::Display) -> String {
    format!("demo: {what}: {error}")
}

async fn demo(options: Options) -> Result<(), String> {
    // The fake world.
    let tokens = Arc::new(
        TokenServer::start()
            .await
            .map_err(|e| fail("starting the token endpoint", e))?,
    );
    let provider = FakeProvider::start(Arc::clone(&tokens))
        .await
        .map_err(|e| fail("starting the fake provider", e))?;
    let secret_text = random_secret();
    let secret =
        WebhookSecret::new(&secret_text).map_err(|e| fail("creating the webhook secret", e))?;
    let receiver = Arc::new(
        WebhookReceiver::start(verifier(secret.clone()))
            .await
            .map_err(|e| fail("starting the webhook receiver", e))?,
    );
    let mut cast = Cast::new(&tokens, options.credentials, options.duration, Utc::now())?;

    // The pool, wired as an application would wire it.
    let monitoring = MonitoringConfig {
        webhook_url: Some(receiver.url()),
        signing_secrets: vec![secret],
        // Warn a minute before the refresh window opens: the expiring credential gets a warning.
        expiry_warning_time: REFRESH_BUFFER + Duration::from_secs(60),
        // Go's filter: routine `refresh` events too (the report checks one arrives).
        ..MonitoringConfig::go_default()
    };
    let notifier =
        Arc::new(WebhookNotifier::new(&monitoring).map_err(|e| fail("creating the notifier", e))?);
    let refresher =
        HttpRefresher::builder(TokenEndpoint::new(tokens.url()).with_client_auth(ClientAuth::None))
            .build()
            .map_err(|e| fail("creating the refresher", e))?;
    let mut registry = Registry::with_prefix("oauth_pool");
    let recorder = PrometheusRecorder::new(&mut registry, PROVIDER);
    let pool = OAuthKeyManager::builder(PROVIDER)
        .credentials(std::mem::take(&mut cast.credentials))
        .refresher(Arc::new(refresher))
        .metrics(Arc::new(recorder))
        .notifier(Arc::clone(&notifier) as Arc<dyn Notifier>)
        .monitoring(monitoring.clone())
        .rotation_policy(RotationPolicy::default().with_grace_period(cast.grace))
        .build()
        .await
        .map_err(|e| fail("building the pool", e))?;
    let (addr, stop_server) = serve(pool.clone(), Arc::new(registry))
        .await
        .map_err(|e| fail("serving /metrics", e))?;
    let metrics_url = format!("http://{addr}/metrics");
    let health_url = format!("http://{addr}/health");

    print_header(
        &options,
        &cast,
        &[
            (
                "token endpoint",
                tokens.url(),
                "strict fake OAuth server (rotates refresh tokens)",
            ),
            (
                "AI provider",
                provider.url(),
                "fake chat API, checks access tokens",
            ),
            ("webhooks", receiver.url(), "verifies every signature"),
        ],
        &metrics_url,
        &health_url,
    );

    // Traffic, script, and the live views.
    let console = Arc::new(Console::new());
    let traffic = Arc::new(Traffic::new(console.start()));
    let log = Arc::new(Mutex::new(EventLog::default()));
    let recorder_task = tokio::spawn(traffic::record_events(
        pool.subscribe(),
        Arc::clone(&console),
        Arc::clone(&log),
    ));
    let maintenance = pool
        .spawn_maintenance(
            MaintenanceConfig::default()
                .with_interval(MAINTENANCE_INTERVAL)
                .with_refresh_ahead(Duration::ZERO),
        )
        .map_err(|e| fail("starting maintenance", e))?;
    let (stop_watch, watching) = watch::channel(false);
    let watcher = tokio::spawn(traffic::watch(
        Arc::clone(&console),
        pool.clone(),
        Arc::clone(&tokens),
        Arc::clone(&receiver),
        Arc::clone(&traffic),
        options.duration,
        watching,
    ));
    let client = Arc::new(ChatClient::new(provider.url()));
    let until = console.start() + options.duration;
    let callers: Vec<_> = (0..options.concurrency)
        .map(|i| {
            tokio::spawn(traffic::caller(
                pool.clone(),
                Arc::clone(&client),
                Arc::clone(&traffic),
                i,
                until,
            ))
        })
        .collect();
    let steps = std::mem::take(&mut cast.steps);
    let script_failures = script::play(
        steps,
        cast.accounts.clone(),
        &tokens,
        &provider,
        &pool,
        &console,
    )
    .await;
    for caller in callers {
        caller
            .await
            .map_err(|e| fail("a caller task ended abnormally", e))?;
    }
    let elapsed = console.elapsed();

    // Wind down: maintenance, then the notifier's queue, then the views.
    maintenance.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shutdown = notifier.shutdown(Duration::from_secs(10)).await;
    let _ = stop_watch.send(true);
    let _ = watcher.await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    recorder_task.abort();
    let events = std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner));

    let findings = Findings {
        cast: &cast,
        pool: &pool,
        monitoring: &monitoring,
        start_utc: console.start_utc(),
        elapsed,
        traffic: &traffic,
        tallies: traffic.per_credential(),
        token_stats: tokens.stats(),
        token_log: tokens.log(),
        provider: provider.stats(),
        webhooks: receiver.requests(),
        delivery: notifier.stats(),
        shutdown,
        events,
        metrics: scrape(&metrics_url).await,
        health: scrape(&health_url).await,
        script_failures,
        secret: secret_text,
    };
    findings.print();
    let checks = findings.checks();
    println!("\nChecks");
    for c in &checks {
        println!("  {} {}", if c.ok { "✓" } else { "✗" }, c.text);
    }
    let broken = checks.iter().filter(|c| !c.ok).count();
    if broken == 0 {
        println!("\nAll {} checks passed.", checks.len());
    }

    if options.linger.is_zero() {
        println!("(Run with --linger 60 to keep {metrics_url} and /health up after the report.)");
    } else {
        println!(
            "\nStill serving {metrics_url} and {health_url} for {} s (Ctrl-C to stop).",
            options.linger.as_secs()
        );
        tokio::time::sleep(options.linger).await;
    }
    let _ = stop_server.send(());

    if broken == 0 {
        Ok(())
    } else {
        Err(format!(
            "demo: {broken} of {} checks failed (marked ✗ above)",
            checks.len()
        ))
    }
}

fn print_header(
    options: &Options,
    cast: &Cast,
    servers: &[(&str, String, &str)],
    metrics_url: &str,
    health_url: &str,
) {
    println!("oauth-manager demo");
    println!(
        "  A pool of {} OAuth credentials for one AI provider, used by {} concurrent callers for \
         {} s.",
        options.credentials,
        options.concurrency,
        options.duration.as_secs()
    );
    println!(
        "  Everything runs in this process on 127.0.0.1: a fake OAuth token endpoint, a fake AI \
         provider\n  and a webhook receiver. The pool refreshes tokens over HTTP, records \
         Prometheus metrics,\n  sends signed webhooks and runs maintenance every {} ms.\n",
        MAINTENANCE_INTERVAL.as_millis()
    );
    let width = servers
        .iter()
        .map(|(_, url, _)| url.len())
        .max()
        .unwrap_or(0);
    for (name, url, what) in servers {
        println!("  {name:<15} {url:<width$}  {what}");
    }
    println!("\nmetrics: {metrics_url}");
    println!("health:  {health_url}");
    println!("  (curl them while the demo runs)\n");
    println!("The script (seconds from the start of traffic)");
    for step in &cast.steps {
        println!(
            "  {:>6}  {:<ID_WIDTH$} {}",
            format!("{:.1}s", step.at.as_secs_f64()),
            cast.accounts[step.account].id,
            step.plan
        );
    }
    println!(
        "\nTimeline (script: what the demo does · pool: events the pool reported · webhook: \
         deliveries received)"
    );
}

/// A fresh `whsec_` signing secret (32 random bytes; `RandomState` is seeded by the OS).
fn random_secret() -> String {
    use std::hash::{BuildHasher, Hasher, RandomState};
    let mut key = Vec::with_capacity(32);
    while key.len() < 32 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_usize(key.len());
        key.extend_from_slice(&hasher.finish().to_le_bytes());
    }
    format!(
        "{}{}",
        WebhookSecret::PREFIX,
        base64::engine::general_purpose::STANDARD.encode(&key)
    )
}

/// The receiver's signature check: the library's own `verify`, with the demo's secret.
fn verifier(secret: WebhookSecret) -> VerifyFn {
    Arc::new(move |headers: &HeaderMap, body: &[u8]| {
        oauth_manager::webhooks::verify(
            std::slice::from_ref(&secret),
            headers,
            body,
            Utc::now(),
            DEFAULT_TOLERANCE,
        )
        .map_err(|e| e.to_string())
    })
}

#[derive(Clone)]
struct Endpoints {
    pool: OAuthKeyManager,
    registry: Arc<Registry>,
}

/// `/metrics` with content negotiation and gzip, as Prometheus asks for them.
async fn metrics(State(app): State<Endpoints>, headers: HeaderMap) -> Response {
    use axum::http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING};
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    match oauth_manager::metrics::encode_scrape(
        &app.registry,
        header(ACCEPT),
        header(ACCEPT_ENCODING),
    ) {
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
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn health(State(app): State<Endpoints>) -> Response {
    axum::Json(app.pool.health_summary()).into_response()
}

/// Serves `/metrics` and `/health` on a random 127.0.0.1 port until the sender is used or dropped.
async fn serve(
    pool: OAuthKeyManager,
    registry: Arc<Registry>,
) -> std::io::Result<(SocketAddr, oneshot::Sender<()>)> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(Endpoints { pool, registry });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((addr, stop))
}

/// GETs one of the demo's own endpoints, as a person with curl would.
async fn scrape(url: &str) -> Scrape {
    // The Accept header Prometheus itself sends: OpenMetrics preferred.
    let request = reqwest::Client::new().get(url).header(
        "accept",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    );
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return Scrape {
                error: Some(e.without_url().to_string()),
                ..Scrape::default()
            };
        }
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    match response.text().await {
        Ok(body) => Scrape {
            status,
            content_type,
            body,
            error: None,
        },
        Err(e) => Scrape {
            status,
            content_type,
            body: String::new(),
            error: Some(e.without_url().to_string()),
        },
    }
}
