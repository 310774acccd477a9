//! The provider presets, pointed at the fake server: encoding, client authentication, headers.

use oauth_core::ExposeSecret;
use oauth_refresh::{HttpRefresher, Refresher, presets};
use oauth_testkit::token_server::{Outcome, TokenServer};

use crate::support::{RefreshApplied, seeded};

async fn refresh_with(
    server: &TokenServer,
    endpoint: oauth_refresh::TokenEndpoint,
    cred: oauth_core::Credential,
) -> oauth_core::Credential {
    HttpRefresher::builder(endpoint.with_url(server.url()))
        .build()
        .expect("builds")
        .refreshed(&cred)
        .await
        .expect("refreshes")
}

#[tokio::test]
async fn public_client_presets_send_their_client_id_and_encoding() {
    let cases = [
        (
            presets::anthropic_claude(),
            presets::CLAUDE_CODE_CLIENT_ID,
            "json",
        ),
        (
            presets::openai_codex(),
            presets::CODEX_CLI_CLIENT_ID,
            "json",
        ),
        (presets::qwen(), presets::QWEN_CODE_CLIENT_ID, "form"),
    ];
    for (endpoint, client_id, encoding) in cases {
        let server = TokenServer::start().await.expect("server starts");
        let grant = server.issue_grant(client_id);
        // A credential without its own client id: the preset's public one is used.
        let cred = seeded("p", &grant).with_client("", None);
        let out = refresh_with(&server, endpoint, cred).await;
        assert!(server.is_access_token_valid(out.access_token.expose_secret()));
        let seen = &server.log()[0];
        assert_eq!(seen.client_id.as_deref(), Some(client_id));
        assert_eq!((seen.encoding, seen.client_auth), (encoding, "none"));
        assert_eq!(seen.grant_type.as_deref(), Some("refresh_token"));
        assert_eq!(seen.outcome, Outcome::Issued);
        if client_id == presets::CLAUDE_CODE_CLIENT_ID {
            assert!(
                seen.user_agent
                    .as_deref()
                    .is_some_and(|ua| ua.starts_with("claude-cli/"))
            );
        }
    }
}

#[tokio::test]
async fn gemini_preset_sends_the_confidential_client_in_the_body() {
    let server = TokenServer::start().await.expect("server starts");
    server.register_client("gemini-client.apps.example", "installed-app-secret");
    let grant = server.issue_grant("gemini-client.apps.example");
    let cred = seeded("g", &grant).with_client(
        "gemini-client.apps.example",
        Some("installed-app-secret".into()),
    );
    refresh_with(&server, presets::google_gemini(), cred).await;
    let seen = &server.log()[0];
    assert_eq!((seen.encoding, seen.client_auth), ("form", "body"));
}

#[tokio::test]
async fn gemini_preset_alone_refreshes_a_cli_credential_with_the_cli_client() {
    // A Gemini CLI credential file carries no client: the preset's installed-app client is sent.
    let server = TokenServer::start().await.expect("server starts");
    server.register_client(
        presets::GEMINI_CLI_CLIENT_ID,
        presets::GEMINI_CLI_CLIENT_SECRET,
    );
    let grant = server.issue_grant(presets::GEMINI_CLI_CLIENT_ID);
    let cred = seeded("g", &grant).with_client("", None);
    let out = refresh_with(&server, presets::google_gemini(), cred).await;
    assert!(server.is_access_token_valid(out.access_token.expose_secret()));
    let seen = &server.log()[0];
    assert_eq!(
        seen.client_id.as_deref(),
        Some(presets::GEMINI_CLI_CLIENT_ID)
    );
    assert_eq!((seen.encoding, seen.client_auth), ("form", "body"));
    assert_eq!(seen.scope, None, "the CLIs send no scope on refresh");
    assert_eq!(seen.outcome, Outcome::Issued);
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_misconfiguration_not_a_dead_grant() {
    // The README scenario of issue 14: the Gemini preset with a client the server does not
    // accept fails as misconfigured; the grant is untouched and needs no sign-in.
    let server = TokenServer::start().await.expect("server starts");
    server.register_client(presets::GEMINI_CLI_CLIENT_ID, "the-real-secret");
    let grant = server.issue_grant(presets::GEMINI_CLI_CLIENT_ID);
    let cred = seeded("g", &grant).with_client("", None);
    let err = HttpRefresher::builder(presets::google_gemini().with_url(server.url()))
        .build()
        .expect("builds")
        .refresh(&cred)
        .await
        .expect_err("invalid_client");
    assert!(err.is_misconfiguration(), "{err:?}");
    assert!(!err.is_dead_grant());
    assert_eq!(err.kind(), oauth_core::FailureKind::Misconfigured);
    assert!(
        server.is_refresh_token_valid(&grant.refresh_token),
        "grant untouched"
    );
    crate::support::assert_no_secrets(
        &err,
        &[
            presets::GEMINI_CLI_CLIENT_SECRET,
            "the-real-secret",
            &grant.refresh_token,
        ],
    );
}
