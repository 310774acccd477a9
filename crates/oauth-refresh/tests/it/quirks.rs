//! A usable token in a success response is never discarded (issue 13, item 1): for each oddity
//! real servers send, a refresh through `HttpRefresher` against the strict token server keeps the
//! rotated refresh token, so the next refresh presents the new one (0 reused tokens, the grant
//! alive), and the oddity is reported as a quirk.

use chrono::{TimeDelta, Utc};
use oauth_core::{Credential, ExposeSecret};
use oauth_refresh::{Refresher, TokenSet};
use oauth_testkit::token_server::{Fault, FaultTarget, ResponseQuirk, TokenServer};

use crate::support::{assert_no_secrets, refresher, seeded};

/// The oddities, each with the quirk labels the token set must report.
fn cases() -> Vec<(&'static str, ResponseQuirk, &'static [&'static str])> {
    vec![
        (
            "scope as a JSON array",
            ResponseQuirk::ScopeArray,
            &["odd_scope"],
        ),
        (
            "token_type DPoP",
            ResponseQuirk::TokenType("DPoP".into()),
            &["unexpected_token_type"],
        ),
        (
            "token_type N_A",
            ResponseQuirk::TokenType("N_A".into()),
            &["unexpected_token_type"],
        ),
        (
            "expires_in \"3600s\"",
            ResponseQuirk::ExpiresIn(r#""3600s""#.into()),
            &["unusable_expires_in"],
        ),
        (
            "expires_in -1",
            ResponseQuirk::ExpiresIn("-1".into()),
            &["unusable_expires_in"],
        ),
        (
            "expires_in 0",
            ResponseQuirk::ExpiresIn("0".into()),
            &["unusable_expires_in"],
        ),
        (
            "expires_in 200 years",
            ResponseQuirk::ExpiresIn("6311520000".into()),
            &["expiry_clamped"],
        ),
        (
            "refresh_token_expires_in \"never\"",
            ResponseQuirk::RefreshTokenExpiresIn(r#""never""#.into()),
            &["unusable_refresh_token_expires_in"],
        ),
        (
            "Content-Type text/html on a JSON body",
            ResponseQuirk::HtmlContentType,
            &["not_json_content_type"],
        ),
        (
            "a 70 KB body (a large id token)",
            ResponseQuirk::LargeIdToken(70 * 1024),
            &[],
        ),
    ]
}

fn labels(tokens: &TokenSet) -> Vec<&'static str> {
    tokens.quirks.iter().map(|q| q.as_str()).collect()
}

#[tokio::test]
async fn odd_success_responses_keep_the_rotated_token_and_the_grant_alive() {
    let server = TokenServer::start().await.expect("server starts");
    let r = refresher(&server);
    for (name, quirk, expected) in cases() {
        let grant = server.issue_grant("c");
        let before = server.stats();
        let mut cred: Credential = seeded(name, &grant);
        server.inject_times(
            FaultTarget::RefreshToken(grant.refresh_token.clone()),
            Fault::Quirk(quirk.clone()),
            1,
        );

        // 1. The odd response: its tokens are kept.
        let now = Utc::now();
        let tokens = r
            .refresh(&cred)
            .await
            .unwrap_or_else(|e| panic!("{name}: the tokens were discarded: {e:?}"));
        assert_eq!(labels(&tokens), expected, "{name}");
        let expires_at = tokens.expires_at.expect("an expiry, known or assumed");
        assert!(
            expires_at > now && expires_at <= now + TimeDelta::days(367),
            "{name}: a sane expiry, got {expires_at}"
        );
        assert!(!format!("{tokens:?}").contains(tokens.access_token.expose_secret()));
        if let ResponseQuirk::LargeIdToken(len) = quirk {
            let id = tokens.id_token.as_ref().expect("id token kept");
            assert!(id.expose_secret().len() >= len - 8, "{name}");
        }
        let applied = cred.apply_tokens(tokens, now);
        assert!(applied.refresh_token_rotated, "{name}");
        let rotated = cred
            .refresh_token
            .as_ref()
            .expect("rotated")
            .expose_secret()
            .to_owned();
        assert!(server.is_refresh_token_valid(&rotated), "{name}");

        // 2. The next refresh presents the new refresh token: nothing reused, the grant alive.
        let next = r
            .refresh(&cred)
            .await
            .unwrap_or_else(|e| panic!("{name}: the second refresh failed: {e:?}"));
        assert!(labels(&next).is_empty(), "{name}");
        cred.apply_tokens(next, Utc::now());
        let stats = server.stats();
        assert_eq!(
            (
                stats.refreshes - before.refreshes,
                stats.reused_refresh_tokens - before.reused_refresh_tokens,
                stats.invalid_grants - before.invalid_grants,
                stats.families_revoked - before.families_revoked,
            ),
            (2, 0, 0, 0),
            "{name}: refreshes, reused tokens, invalid_grants, revoked families"
        );
        assert!(
            server.is_access_token_valid(cred.access_token.expose_secret()),
            "{name}: the grant is alive"
        );
    }
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
