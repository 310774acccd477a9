//! Issue 13: a tolerated token-response quirk reaches Prometheus, not only the event stream. A
//! refresh through `HttpRefresher` against the strict token server on 127.0.0.1, answered with a
//! quirky body, bumps `token_response_quirks_total` in the manager's exposition; every quirk's
//! series is there at 0 from the start; no token value appears in it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use oauth_manager::metrics::prometheus_client::registry::Registry;
use oauth_manager::metrics::{PrometheusRecorder, encode_openmetrics};
use oauth_manager::refresh::{HttpRefresher, TokenEndpoint};
use oauth_manager::{Credential, EventKind, ExposeSecret, OAuthKeyManager, TokenQuirk};
use oauth_testkit::token_server::{Fault, FaultTarget, ResponseQuirk, TokenServer};

/// The value of `token_response_quirks_total{provider="test",quirk=...}` in `text`.
fn quirk_count(text: &str, quirk: TokenQuirk) -> Option<f64> {
    let prefix = format!(
        "oauth_pool_token_response_quirks_total{{provider=\"test\",quirk=\"{}\"}} ",
        quirk.as_str()
    );
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_quirky_token_response_counts_in_prometheus_without_any_token() {
    let server = TokenServer::start().await.expect("token server starts");
    let grant = server.issue_grant("client-a");
    let now = Utc::now();
    let credential = Credential::new("a", grant.access_token.clone(), now)
        .expect("valid credential")
        .with_client(grant.client_id.clone(), None)
        .with_refresh_token(grant.refresh_token.clone())
        .with_expires_at(now + TimeDelta::hours(1));
    let refresher = HttpRefresher::builder(TokenEndpoint::new(server.url()))
        .request_timeout(Duration::from_secs(5))
        .build()
        .expect("refresher builds");
    let mut registry = Registry::with_prefix("oauth_pool");
    let recorder = PrometheusRecorder::new(&mut registry, "test");
    let manager = OAuthKeyManager::builder("test")
        .credential(credential)
        .refresher(Arc::new(refresher))
        .metrics(recorder)
        .build()
        .await
        .expect("pool builds");
    let mut events = manager.subscribe();

    let before = encode_openmetrics(&registry).expect("encodes");
    for q in TokenQuirk::ALL {
        assert_eq!(quirk_count(&before, q), Some(0.0), "{q:?} at 0: {before}");
    }

    // The token endpoint answers the refresh with `"expires_in": "3600s"` (text, not seconds).
    server.inject_times(
        FaultTarget::Any,
        Fault::Quirk(ResponseQuirk::ExpiresIn(r#""3600s""#.into())),
        1,
    );
    let refreshed = manager.refresh_now("a").await.expect("the tokens are kept");
    // A second refresh, normal, presents the rotated refresh token: the grant is alive.
    let again = manager.refresh_now("a").await.expect("second refresh");
    let stats = server.stats();
    assert_eq!((stats.refreshes, stats.reused_refresh_tokens), (2, 0));

    let after = encode_openmetrics(&registry).expect("encodes");
    for q in TokenQuirk::ALL {
        let want = if q == TokenQuirk::UnusableExpiresIn {
            1.0
        } else {
            0.0
        };
        assert_eq!(quirk_count(&after, q), Some(want), "{q:?}: {after}");
    }
    let mut quirk_events = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventKind::TokenResponseQuirk { credential, quirk } = event.kind {
            quirk_events.push((credential.to_string(), quirk));
        }
    }
    assert_eq!(
        quirk_events,
        [("a".to_owned(), TokenQuirk::UnusableExpiresIn)],
        "the event still goes out, once"
    );

    let mut secrets = vec![grant.access_token.clone(), grant.refresh_token.clone()];
    for c in [&refreshed, &again] {
        secrets.push(c.access_token.expose_secret().to_owned());
        if let Some(r) = &c.refresh_token {
            secrets.push(r.expose_secret().to_owned());
        }
    }
    for secret in &secrets {
        assert!(secret.len() >= 8, "a real token");
        assert!(
            !after.contains(secret.as_str()),
            "a token in the exposition"
        );
    }
}
