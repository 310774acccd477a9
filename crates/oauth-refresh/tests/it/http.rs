//! `HttpRefresher` against the fake token server: every error mapping, classified, leaking nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use oauth_core::{Clock, ExposeSecret, FailureKind, ManualClock};
use oauth_refresh::{
    ClientAuth, HttpRefresher, MalformedReason, OAuthErrorCode, RefreshError, Refresher,
    TokenEndpoint,
};
use oauth_testkit::token_server::{
    Fault, FaultTarget, MalformedBody, Outcome, TokenServer, TokenServerConfig,
};

use crate::support::{Fixture, RefreshApplied, assert_no_secrets, refresher, seeded};

#[tokio::test]
async fn success_rotates_the_refresh_token_and_consumes_the_old_one() {
    let server = TokenServer::start().await.expect("server starts");
    let grant = server.issue_grant("client-a");
    let cred = seeded("a", &grant);
    let out = refresher(&server)
        .refreshed(&cred)
        .await
        .expect("refreshes");

    let at = out.access_token.expose_secret();
    let rt = out.refresh_token.as_ref().expect("rotated").expose_secret();
    assert_ne!(at, grant.access_token);
    assert_ne!(rt, grant.refresh_token);
    assert!(server.is_access_token_valid(at));
    assert!(server.is_refresh_token_valid(rt));
    assert!(!server.is_refresh_token_valid(&grant.refresh_token));
    assert_eq!(out.id, cred.id);
    assert_eq!(out.refresh_count, 1);
    assert!(out.last_refresh.is_some());
    assert!(!out.needs_refresh(Utc::now()));
    assert_eq!(server.stats().refreshes, 1);
}

#[tokio::test]
async fn without_rotation_the_old_refresh_token_is_kept() {
    let server = TokenServer::start_with(TokenServerConfig {
        rotate_refresh_tokens: false,
        scope: Some("read write".into()),
        ..TokenServerConfig::default()
    })
    .await
    .expect("server starts");
    let grant = server.issue_grant("client-a");
    let out = refresher(&server)
        .refreshed(&seeded("a", &grant))
        .await
        .expect("refreshes");
    assert_eq!(
        out.refresh_token.as_ref().map(ExposeSecret::expose_secret),
        Some(grant.refresh_token.as_str())
    );
    assert_eq!(out.scopes, ["read", "write"]);
}

#[tokio::test]
async fn refresh_token_expiry_is_recorded_when_sent() {
    let server = TokenServer::start_with(TokenServerConfig {
        refresh_token_ttl: Some(Duration::from_secs(86_400)),
        ..TokenServerConfig::default()
    })
    .await
    .expect("server starts");
    let before = Utc::now();
    let out = refresher(&server)
        .refresh(&seeded("a", &server.issue_grant("c")))
        .await
        .expect("refreshes");
    let at = out
        .refresh_token_expires_at
        .expect("refresh_token_expires_in parsed");
    assert!(at >= before + TimeDelta::days(1) && at <= Utc::now() + TimeDelta::days(1));
}

#[tokio::test]
async fn expiry_is_dated_by_the_injected_clock() {
    let server = TokenServer::start().await.expect("server starts");
    let clock = ManualClock::new(Utc::now() - TimeDelta::days(3));
    let r = HttpRefresher::builder(TokenEndpoint::new(server.url()))
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("builds");
    let out = r
        .refreshed_at(&seeded("a", &server.issue_grant("c")), clock.now())
        .await
        .expect("refreshes");
    assert_eq!(out.expires_at, Some(clock.now() + TimeDelta::hours(1)));
    assert_eq!(out.last_refresh, Some(clock.now()));
}

#[tokio::test]
async fn reused_refresh_token_is_invalid_grant_and_permanent() {
    let server = TokenServer::start().await.expect("server starts");
    let grant = server.issue_grant("client-a");
    let cred = seeded("a", &grant);
    let r = refresher(&server);
    let fresh = r.refresh(&cred).await.expect("first refresh");
    let err = r.refresh(&cred).await.expect_err("stale token reused");

    assert!(matches!(
        err,
        RefreshError::OAuth {
            status: 400,
            code: OAuthErrorCode::InvalidGrant,
            ..
        }
    ));
    assert_eq!(err.kind(), FailureKind::PermanentAuth);
    assert!(!err.is_retryable());
    assert_no_secrets(&err, &[&grant.refresh_token, &grant.access_token]);
    // The server revoked the family: the token refreshed before is dead too.
    assert!(!server.is_access_token_valid(fresh.access_token.expose_secret()));
    let stats = server.stats();
    assert_eq!((stats.reused_refresh_tokens, stats.invalid_grants), (1, 1));
}

#[tokio::test]
async fn revoked_grant_is_permanent() {
    let server = TokenServer::start().await.expect("server starts");
    let grant = server.issue_grant("client-a");
    server.inject(FaultTarget::Client("client-a".into()), Fault::RevokeGrant);
    let err = refresher(&server)
        .refresh(&seeded("a", &grant))
        .await
        .expect_err("revoked");
    assert_eq!(err.kind(), FailureKind::PermanentAuth);
    assert_no_secrets(&err, &[&grant.refresh_token]);
    assert!(!server.is_access_token_valid(&grant.access_token));
}

#[tokio::test]
async fn provider_specific_reuse_code_is_permanent() {
    let server = TokenServer::start().await.expect("server starts");
    let grant = server.issue_grant("c");
    server.inject(
        FaultTarget::RefreshToken(grant.refresh_token.clone()),
        Fault::OAuthError {
            status: 401,
            error: "refresh_token_reused".into(),
        },
    );
    let err = refresher(&server)
        .refresh(&seeded("a", &grant))
        .await
        .expect_err("rejected");
    assert!(matches!(
        err,
        RefreshError::OAuth {
            code: OAuthErrorCode::RefreshTokenReused,
            ..
        }
    ));
    assert_eq!(err.kind(), FailureKind::PermanentAuth);
    assert_no_secrets(&err, &[&grant.refresh_token]);
}

#[tokio::test]
async fn invalid_client_and_unauthorized_client_are_misconfigured() {
    let server = TokenServer::start().await.expect("server starts");
    server.register_client("conf", "right-secret");
    let grant = server.issue_grant("conf");
    let cred = seeded("a", &grant).with_client("conf", Some("wrong-secret-value".into()));
    let err = refresher(&server)
        .refresh(&cred)
        .await
        .expect_err("bad secret");
    assert!(matches!(
        err,
        RefreshError::OAuth {
            status: 401,
            code: OAuthErrorCode::InvalidClient,
            ..
        }
    ));
    assert_eq!(err.kind(), FailureKind::Misconfigured);
    assert_no_secrets(
        &err,
        &["wrong-secret-value", "right-secret", &grant.refresh_token],
    );

    server.inject(
        FaultTarget::Any,
        Fault::OAuthError {
            status: 400,
            error: "unauthorized_client".into(),
        },
    );
    let cred = cred.with_client("conf", Some("right-secret".into()));
    let err = refresher(&server)
        .refresh(&cred)
        .await
        .expect_err("unauthorized");
    assert_eq!(err.kind(), FailureKind::Misconfigured);
    assert_no_secrets(&err, &["right-secret", &grant.refresh_token]);
}

#[tokio::test]
async fn basic_client_authentication_with_characters_needing_encoding() {
    let server = TokenServer::start().await.expect("server starts");
    let secret = "s3c:r+t/ é";
    server.register_client("conf id", secret);
    let grant = server.issue_grant("conf id");
    let cred = seeded("a", &grant).with_client("conf id", Some(secret.into()));
    let r = HttpRefresher::builder(
        TokenEndpoint::new(server.url()).with_client_auth(ClientAuth::Basic),
    )
    .build()
    .expect("builds");
    r.refresh(&cred).await.expect("refreshes with Basic");
    let seen = server.log();
    assert_eq!(seen[0].client_auth, "basic");
    assert_eq!(seen[0].outcome, Outcome::Issued);

    let no_secret = seeded("b", &server.issue_grant("conf id"));
    let err = r
        .refresh(&no_secret)
        .await
        .expect_err("Basic needs a secret");
    assert!(matches!(err, RefreshError::ClientConfig { .. }));
    assert_eq!(err.kind(), FailureKind::Misconfigured);
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let f = Fixture::start().await;
    for status in [429, 503] {
        let retry_after = Some("7".into());
        let err = f
            .fail_once(Fault::RateLimited {
                status,
                retry_after,
            })
            .await;
        assert_eq!(
            err.kind(),
            FailureKind::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            },
            "status {status}"
        );
        assert!(err.is_retryable());
    }
    let err = f
        .fail_once(Fault::RateLimited {
            status: 429,
            retry_after: None,
        })
        .await;
    assert_eq!(err.kind(), FailureKind::RateLimited { retry_after: None });
}

#[tokio::test]
async fn server_errors_are_transient() {
    let f = Fixture::start().await;
    for status in [500, 502, 503, 504] {
        let err = f.fail_once(Fault::Status(status)).await;
        assert!(matches!(err, RefreshError::Server { status: s } if s == status));
        assert_eq!(err.kind(), FailureKind::Transient);
    }
    // A 4xx without an OAuth error body says nothing permanent.
    let err = f.fail_once(Fault::Status(400)).await;
    assert!(matches!(
        err,
        RefreshError::UnexpectedStatus { status: 400 }
    ));
    assert_eq!(err.kind(), FailureKind::Transient);
    // The faults consumed nothing: the grant still works.
    f.refresher
        .refresh(&f.cred)
        .await
        .expect("refreshes after the faults");
}

#[tokio::test]
async fn timeouts_are_transient() {
    let server = TokenServer::start().await.expect("server starts");
    let grant = server.issue_grant("c");
    server.inject(FaultTarget::Any, Fault::Latency(Duration::from_secs(3)));
    let r = HttpRefresher::builder(TokenEndpoint::new(server.url()))
        .request_timeout(Duration::from_millis(150))
        .build()
        .expect("builds");
    let err = r
        .refresh(&seeded("a", &grant))
        .await
        .expect_err("times out");
    assert!(matches!(err, RefreshError::Timeout));
    assert_eq!(err.kind(), FailureKind::Transient);
    assert_no_secrets(&err, &[&grant.refresh_token]);
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let url = format!("http://{}/token", listener.local_addr().expect("addr"));
    drop(listener);
    let r = HttpRefresher::builder(TokenEndpoint::new(url))
        .build()
        .expect("builds");
    let server = TokenServer::start().await.expect("server starts");
    let grant = server.issue_grant("c");
    let err = r.refresh(&seeded("a", &grant)).await.expect_err("refused");
    assert!(matches!(err, RefreshError::Connect));
    assert_eq!(err.kind(), FailureKind::Transient);
    assert_no_secrets(&err, &[&grant.refresh_token]);
}

#[tokio::test]
async fn dropped_connection_is_transient() {
    let err = Fixture::start()
        .await
        .fail_once(Fault::DropConnection)
        .await;
    assert!(
        matches!(err, RefreshError::Network | RefreshError::Connect),
        "{err:?}"
    );
    assert_eq!(err.kind(), FailureKind::Transient);
}

#[tokio::test]
async fn malformed_bodies_are_typed_errors() {
    let f = Fixture::start().await;
    let cases = [
        (MalformedBody::Html, MalformedReason::Html),
        (MalformedBody::NotJson, MalformedReason::NotJson),
        (MalformedBody::Empty, MalformedReason::Empty),
        (
            MalformedBody::MissingAccessToken,
            MalformedReason::MissingAccessToken,
        ),
    ];
    for (body, reason) in cases {
        let err = f.fail_once(Fault::Malformed(body)).await;
        assert!(
            matches!(err, RefreshError::Malformed { reason: r } if r == reason),
            "{body:?}: {err:?}"
        );
        assert_eq!(err.kind(), FailureKind::Transient);
    }
}

#[tokio::test]
async fn oversized_streamed_body_stops_at_the_cap() {
    let server = TokenServer::start().await.expect("server starts");
    let grant = server.issue_grant("c");
    server.inject_times(
        FaultTarget::Any,
        Fault::Malformed(MalformedBody::Oversized(4 * 1024 * 1024)),
        1,
    );
    let r = HttpRefresher::builder(TokenEndpoint::new(server.url()))
        .max_response_bytes(16 * 1024)
        .build()
        .expect("builds");
    let err = r
        .refresh(&seeded("a", &grant))
        .await
        .expect_err("too large");
    assert!(matches!(
        err,
        RefreshError::ResponseTooLarge { limit: 16_384 }
    ));
    assert_eq!(err.kind(), FailureKind::Transient);
    assert_no_secrets(&err, &[&grant.refresh_token]);
}

#[tokio::test]
async fn no_refresh_token_fails_without_calling_the_endpoint() {
    let server = TokenServer::start().await.expect("server starts");
    let cred = oauth_core::Credential::new("a", "only-an-access-token", Utc::now()).expect("valid");
    let err = refresher(&server)
        .refresh(&cred)
        .await
        .expect_err("nothing to exchange");
    assert!(matches!(err, RefreshError::NoRefreshToken { .. }));
    assert_eq!(err.kind(), FailureKind::PermanentAuth);
    assert_no_secrets(&err, &["only-an-access-token"]);
    assert_eq!(server.stats().requests, 0);
}

/// Serves one canned HTTP response to the first connection on 127.0.0.1 and returns its URL.
async fn one_shot(status: &str, body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}/token", listener.local_addr().expect("addr"));
    let status = status.to_owned();
    tokio::spawn(async move {
        if let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = vec![0u8; 16 * 1024];
            let _ = conn.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    url
}

#[tokio::test]
async fn a_token_with_a_null_error_member_is_a_success_and_keeps_the_rotated_token() {
    // Some servers send `"error": null` beside a good token. Treating that as a failure would
    // drop the rotated refresh token after the server consumed the old one.
    let url = one_shot(
        "200 OK",
        r#"{"access_token":"at-2","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-2","error":null}"#,
    )
    .await;
    let r = HttpRefresher::builder(TokenEndpoint::new(url))
        .build()
        .expect("builds");
    let cred = oauth_core::Credential::new("a", "at-1", Utc::now())
        .expect("valid")
        .with_refresh_token("rt-1")
        .with_client("c", None);
    let fresh = r.refresh(&cred).await.expect("a success");
    assert_eq!(fresh.access_token.expose_secret(), "at-2");
    assert_eq!(
        fresh
            .refresh_token
            .as_ref()
            .map(ExposeSecret::expose_secret),
        Some("rt-2")
    );
}

#[tokio::test]
async fn an_error_body_on_a_200_without_a_token_is_the_error() {
    let url = one_shot("200 OK", r#"{"error":"invalid_grant"}"#).await;
    let r = HttpRefresher::builder(TokenEndpoint::new(url))
        .build()
        .expect("builds");
    let cred = oauth_core::Credential::new("a", "at-1", Utc::now())
        .expect("valid")
        .with_refresh_token("rt-1")
        .with_client("c", None);
    let err = r.refresh(&cred).await.expect_err("an OAuth error");
    assert_eq!(err.kind(), FailureKind::PermanentAuth);
}

#[test]
fn extra_parameters_cannot_override_the_grant() {
    let err = HttpRefresher::builder(
        TokenEndpoint::new("http://127.0.0.1:1/token").with_param("refresh_token", "injected"),
    )
    .build()
    .expect_err("reserved");
    assert!(err.to_string().contains("refresh_token"), "{err}");
    assert!(!err.to_string().contains("injected"));
}

#[test]
fn the_endpoint_debug_hides_header_and_parameter_values_and_the_query() {
    let endpoint = TokenEndpoint::new("https://auth.example.com/token?key=QUERY-SECRET")
        .with_header("x-api-key", "HEADER-SECRET")
        .with_param("audience", "PARAM-SECRET");
    let refresher = HttpRefresher::builder(endpoint.clone())
        .build()
        .expect("builds");
    for shown in [format!("{endpoint:?}"), format!("{refresher:?}")] {
        for secret in ["QUERY-SECRET", "HEADER-SECRET", "PARAM-SECRET"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("x-api-key") && shown.contains("audience"),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn configuration_mistakes_are_misconfigured_and_dead_grants_are_not() {
    let f = Fixture::start().await;
    for code in [
        "invalid_client",
        "unauthorized_client",
        "unsupported_grant_type",
    ] {
        let err = f
            .fail_once(Fault::OAuthError {
                status: 400,
                error: code.into(),
            })
            .await;
        assert!(
            err.is_misconfiguration() && !err.is_dead_grant(),
            "{code}: {err:?}"
        );
        assert_eq!(err.kind(), FailureKind::Misconfigured, "{code}");
    }
    for code in ["invalid_grant", "refresh_token_reused", "access_denied"] {
        let err = f
            .fail_once(Fault::OAuthError {
                status: 400,
                error: code.into(),
            })
            .await;
        assert!(
            err.is_dead_grant() && !err.is_misconfiguration(),
            "{code}: {err:?}"
        );
    }
    // No client id anywhere for client authentication in the body: refused before any request.
    let before = f.server.stats().requests;
    let anonymous = seeded("n", &f.server.issue_grant("c")).with_client("", None);
    let err = f
        .refresher
        .refresh(&anonymous)
        .await
        .expect_err("no client id");
    assert!(matches!(err, RefreshError::ClientConfig { .. }));
    assert!(err.is_misconfiguration());
    assert_eq!(f.server.stats().requests, before);
}
