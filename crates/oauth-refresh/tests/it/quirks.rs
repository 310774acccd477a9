//! A usable token in a success response is never discarded (issue 13, item 1): for each oddity
//! real servers send, a refresh through `HttpRefresher` against the strict token server keeps the
//! rotated refresh token, so the next refresh presents the new one (0 reused tokens, the grant
//! alive), and the oddity is reported as a quirk.

use chrono::{TimeDelta, Utc};
use oauth_core::{Credential, ExposeSecret};
use oauth_refresh::{Refresher, TokenSet};
use oauth_testkit::token_server::{Fault, FaultTarget, ResponseQuirk, TokenServer};

use crate::support::{assert_no_secrets, refresher, seeded};

fn labels(tokens: &TokenSet) -> Vec<&'static str> {
    tokens.quirks.iter().map(|q| q.as_str()).collect()
}

/// One grant on a fresh strict server; the first refresh is answered with `quirk`, the second
/// normally. As a client would, a failed first refresh leaves the credential as it was. Then:
/// two refreshes issued, 0 reused refresh tokens, 0 `invalid_grant`, the grant alive, and the
/// first token set reports `expected` quirks (by label) with a sane expiry.
async fn survives(quirk: ResponseQuirk, expected: &[&str]) {
    let server = TokenServer::start().await.expect("server starts");
    let r = refresher(&server);
    let grant = server.issue_grant("c");
    let mut cred: Credential = seeded("q", &grant);
    server.inject_times(FaultTarget::Any, Fault::Quirk(quirk.clone()), 1);

    // 1. The odd response.
    let now = Utc::now();
    let first = r.refresh(&cred).await;
    if let Ok(tokens) = &first {
        cred.apply_tokens(tokens.clone(), now);
    }
    // 2. The next refresh presents whatever refresh token the credential now holds.
    let second = r.refresh(&cred).await;
    if let Ok(tokens) = &second {
        cred.apply_tokens(tokens.clone(), Utc::now());
    }

    let stats = server.stats();
    assert_eq!(
        (
            stats.reused_refresh_tokens,
            stats.invalid_grants,
            stats.families_revoked
        ),
        (0, 0, 0),
        "reused refresh tokens, invalid_grants, revoked families (first refresh: {:?})",
        first.as_ref().err()
    );
    assert_eq!(stats.refreshes, 2);
    assert!(
        server.is_access_token_valid(cred.access_token.expose_secret()),
        "the grant is alive"
    );
    let tokens = first.expect("the odd response's tokens were kept");
    second.expect("the second refresh succeeds");
    assert_eq!(labels(&tokens), expected);
    let expires_at = tokens.expires_at.expect("an expiry, known or assumed");
    assert!(
        expires_at > now && expires_at <= now + TimeDelta::days(367),
        "a sane expiry, got {expires_at}"
    );
    assert!(!format!("{tokens:?}").contains(tokens.access_token.expose_secret()));
    if let ResponseQuirk::LargeIdToken(len) = quirk {
        let id = tokens.id_token.as_ref().expect("id token kept");
        assert!(id.expose_secret().len() >= len - 8);
        assert!(
            cred.metadata.id_token.is_some(),
            "the id token reaches the credential"
        );
    }
}

#[tokio::test]
async fn scope_as_a_json_array() {
    survives(ResponseQuirk::ScopeArray, &["odd_scope"]).await;
}

#[tokio::test]
async fn token_type_dpop() {
    survives(
        ResponseQuirk::TokenType("DPoP".into()),
        &["unexpected_token_type"],
    )
    .await;
}

#[tokio::test]
async fn token_type_n_a() {
    survives(
        ResponseQuirk::TokenType("N_A".into()),
        &["unexpected_token_type"],
    )
    .await;
}

#[tokio::test]
async fn expires_in_as_text_with_a_unit() {
    survives(
        ResponseQuirk::ExpiresIn(r#""3600s""#.into()),
        &["unusable_expires_in"],
    )
    .await;
}

#[tokio::test]
async fn expires_in_negative() {
    survives(
        ResponseQuirk::ExpiresIn("-1".into()),
        &["unusable_expires_in"],
    )
    .await;
}

#[tokio::test]
async fn expires_in_zero() {
    survives(
        ResponseQuirk::ExpiresIn("0".into()),
        &["unusable_expires_in"],
    )
    .await;
}

#[tokio::test]
async fn expires_in_two_hundred_years() {
    survives(
        ResponseQuirk::ExpiresIn("6311520000".into()),
        &["expiry_clamped"],
    )
    .await;
}

#[tokio::test]
async fn refresh_token_expires_in_never() {
    survives(
        ResponseQuirk::RefreshTokenExpiresIn(r#""never""#.into()),
        &["unusable_refresh_token_expires_in"],
    )
    .await;
}

#[tokio::test]
async fn text_html_content_type_on_a_json_body() {
    survives(ResponseQuirk::HtmlContentType, &["not_json_content_type"]).await;
}

#[tokio::test]
async fn a_70_kb_body_with_a_large_id_token() {
    survives(ResponseQuirk::LargeIdToken(70 * 1024), &[]).await;
}

#[tokio::test]
async fn an_oauth_error_is_still_classified_under_the_small_error_cap() {
    // Success bodies may be large; error bodies are capped small and classified by their code.
    let server = TokenServer::start().await.expect("server starts");
    let grant = server.issue_grant("c");
    let cred = seeded("e", &grant);
    server.inject_times(
        FaultTarget::Any,
        Fault::OAuthError {
            status: 400,
            error: "invalid_grant".into(),
        },
        1,
    );
    let err = refresher(&server)
        .refresh(&cred)
        .await
        .expect_err("rejected");
    assert_eq!(err.kind(), oauth_core::FailureKind::PermanentAuth);
    assert_no_secrets(&err, &[&grant.refresh_token]);
}
