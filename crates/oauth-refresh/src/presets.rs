//! Token endpoints of the providers whose OAuth accounts people pool, complete enough that a pool
//! over the official CLIs' credential files needs no other configuration.
//!
//! Each preset is a [`TokenEndpoint`] with the provider's URL, the public client the CLI itself
//! uses (its client id, and for Gemini CLI its installed-application secret), client
//! authentication, request encoding and quirks, read from the CLI's public source where it is
//! open source (cited per function, with the commit read). Providers change these without notice;
//! every field stays configurable (`preset().with_url(..)`, `.with_header(..)`,
//! `.with_default_client(..)`). A credential's own client id, when it has one, wins over the
//! preset's.
//!
//! Every preset requires its client ([`ClientRequirement`]): one stripped of it fails at
//! [`build`](crate::HttpRefresherBuilder::build) with
//! [`HttpBuildError::MissingClientId`](crate::HttpBuildError::MissingClientId) or
//! [`MissingClientSecret`](crate::HttpBuildError::MissingClientSecret), a configuration mistake
//! reported at once, instead of every refresh failing later with `invalid_client`.
//!
//! | preset | CLI | URL | client auth | body | scope sent | refresh-token rotation |
//! |---|---|---|---|---|---|---|
//! | [`google_gemini`] | Gemini CLI | `https://oauth2.googleapis.com/token` | id + secret in body | form | none | no (Google keeps it) |
//! | [`anthropic_claude`] | Claude Code | `https://platform.claude.com/v1/oauth/token` | public client | JSON | none | every refresh |
//! | [`openai_codex`] | Codex | `https://auth.openai.com/oauth/token` | public client | JSON | none | every refresh |
//! | [`qwen`] | Qwen Code | `https://chat.qwen.ai/api/v1/oauth2/token` | public client | form | none | when sent |
//!
//! None of the CLIs sends a `scope` when refreshing (the grant keeps the scopes of the sign-in);
//! the scopes each CLI signs in with are given as constants ([`GEMINI_CLI_SCOPES`], ...) for
//! reference and for sign-in code.

use std::time::Duration;

use crate::http::{ClientAuth, ClientRequirement, Encoding, MissingExpiry, TokenEndpoint};

/// Gemini CLI's OAuth client id (`OAUTH_CLIENT_ID` in `packages/core/src/code_assist/oauth2.ts`
/// of google-gemini/gemini-cli).
pub const GEMINI_CLI_CLIENT_ID: &str =
    "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com";
/// Gemini CLI's installed-application client secret (`OAUTH_CLIENT_SECRET`, same file). Google
/// documents that for installed applications "the client secret is obviously not treated as a
/// secret" (developers.google.com/identity/protocols/oauth2#installed), which is why gemini-cli
/// commits it; this crate still holds it as a `SecretString` (redacted in `Debug`).
pub const GEMINI_CLI_CLIENT_SECRET: &str = "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";
/// The scopes Gemini CLI signs in with (`OAUTH_SCOPE`, same file).
pub const GEMINI_CLI_SCOPES: [&str; 3] = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
];
/// The public client id of Claude Code (not open source; see [`anthropic_claude`]).
pub const CLAUDE_CODE_CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
/// The scopes reimplementations of Claude Code's sign-in request (not verified against Claude
/// Code itself; see [`anthropic_claude`]).
pub const CLAUDE_CODE_SCOPES: [&str; 3] = ["org:create_api_key", "user:profile", "user:inference"];
/// The public client id of the Codex CLI (`CLIENT_ID` in `codex-rs/login/src/auth/manager.rs` of
/// openai/codex).
pub const CODEX_CLI_CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
/// The public client id of Qwen Code (`QWEN_OAUTH_CLIENT_ID` in
/// `packages/core/src/qwen/qwenOAuth2.ts` of QwenLM/qwen-code).
pub const QWEN_CODE_CLIENT_ID: &str = "f0304373b74a44d2b584a3fb70ca9e56";
/// The scopes Qwen Code's device sign-in requests (`QWEN_OAUTH_SCOPE`, same file).
pub const QWEN_CODE_SCOPES: [&str; 4] = ["openid", "profile", "email", "model.completion"];

/// Google OAuth 2.0 for Gemini CLI / Gemini Code Assist accounts (`~/.gemini/oauth_creds.json`).
///
/// Read from `packages/core/src/code_assist/oauth2.ts` of
/// [google-gemini/gemini-cli](https://github.com/google-gemini/gemini-cli) (commit
/// `002d91056d437151caa50fb00c272af7471807c6`):
/// - the client is gemini-cli's installed-application client, `OAUTH_CLIENT_ID` with
///   `OAUTH_CLIENT_SECRET` ([`GEMINI_CLI_CLIENT_ID`], [`GEMINI_CLI_CLIENT_SECRET`]), given to
///   google-auth-library's `OAuth2Client`, which refreshes with a form-encoded POST to
///   `https://oauth2.googleapis.com/token` carrying `client_id` and `client_secret` in the body
///   and no scope (the library's behaviour, not re-read here);
/// - sign-in scopes [`GEMINI_CLI_SCOPES`] (`OAUTH_SCOPE`).
///
/// Access tokens live about an hour (`expires_in` ≈ 3599); Google normally returns no new refresh
/// token, so the old one is kept. The response carries an `id_token`, kept in the credential's
/// metadata.
pub fn google_gemini() -> TokenEndpoint {
    TokenEndpoint::new("https://oauth2.googleapis.com/token")
        .with_client_auth(ClientAuth::RequestBody)
        .with_encoding(Encoding::Form)
        .with_default_client(
            GEMINI_CLI_CLIENT_ID,
            Some(GEMINI_CLI_CLIENT_SECRET.to_owned()),
        )
        .with_client_requirement(ClientRequirement::ClientIdAndSecret)
}

/// Anthropic OAuth for Claude Pro/Max (Claude Code) accounts (`~/.claude/.credentials.json`).
///
/// Claude Code is not open source, so nothing here is read from its source; the values are
/// those of public reimplementations that say they match it:
/// - endpoint `https://platform.claude.com/v1/oauth/token`; Anthropic moved it from
///   `console.anthropic.com` with Claude Code 2.1.81
///   ([NousResearch/hermes-agent#3246](https://github.com/NousResearch/hermes-agent/pull/3246),
///   "per Claude Code's cli.js" in
///   [#2968](https://github.com/NousResearch/hermes-agent/pull/2968));
/// - JSON body `{grant_type, refresh_token, client_id}` with Claude Code's public client id
///   [`CLAUDE_CODE_CLIENT_ID`], "matching Claude Code v2.1.80's implementation"
///   ([griffinmartin/opencode-claude-auth#60](https://github.com/griffinmartin/opencode-claude-auth/pull/60));
/// - Cloudflare in front of the endpoint answers 429 to unknown user agents, so a `claude-cli/...`
///   User-Agent is sent (same PR). **Not verified**: another client reports that a fixed
///   `claude-code/1.0` works where versioned ones got 429
///   ([jeongwookie/WhereMyTokens#10](https://github.com/jeongwookie/WhereMyTokens/pull/10)); if
///   refreshes get 429, try `.with_header("User-Agent", ..)`;
/// - **not verified**: whether Claude Code sends a `scope` on refresh (some reimplementations
///   send `user:profile user:inference user:sessions:claude_code`); none is sent here.
///
/// The refresh token rotates on every refresh; a response carries `expires_in` (about 8 hours)
/// and the new `refresh_token`.
pub fn anthropic_claude() -> TokenEndpoint {
    TokenEndpoint::new("https://platform.claude.com/v1/oauth/token")
        .with_client_auth(ClientAuth::None)
        .with_encoding(Encoding::Json)
        .with_default_client(CLAUDE_CODE_CLIENT_ID, None)
        .with_header("User-Agent", "claude-cli/2.1.81 (external, cli)")
        .with_client_requirement(ClientRequirement::ClientId)
}

/// OpenAI OAuth for ChatGPT (Codex CLI) accounts (`~/.codex/auth.json`).
///
/// Read from `codex-rs/login/src/auth/manager.rs` of [openai/codex](https://github.com/openai/codex)
/// (commit `0126a9dd8ce398bce4ee305279fcd2030a7f24ed`):
/// - `REFRESH_TOKEN_URL` `https://auth.openai.com/oauth/token`; `request_chatgpt_token_refresh`
///   posts JSON `RefreshRequest {client_id: CLIENT_ID, grant_type: "refresh_token",
///   refresh_token}` (no secret, no scope) with `CLIENT_ID` [`CODEX_CLI_CLIENT_ID`];
/// - the answer is `RefreshResponse {id_token, access_token, refresh_token}`: no `expires_in`, so
///   the expiry is read from the access token's JWT `exp` claim ([`MissingExpiry::JwtExpOr`]),
///   falling back to one hour;
/// - the refresh token is single-use: reuse is answered `refresh_token_reused` (mapped to
///   [`OAuthErrorCode::RefreshTokenReused`](crate::OAuthErrorCode), a dead grant), expired and
///   revoked ones `refresh_token_expired` / `refresh_token_invalidated`
///   (`classify_refresh_token_failure`).
pub fn openai_codex() -> TokenEndpoint {
    TokenEndpoint::new("https://auth.openai.com/oauth/token")
        .with_client_auth(ClientAuth::None)
        .with_encoding(Encoding::Json)
        .with_default_client(CODEX_CLI_CLIENT_ID, None)
        .with_missing_expiry(MissingExpiry::JwtExpOr(Duration::from_secs(3600)))
        .with_client_requirement(ClientRequirement::ClientId)
}

/// Qwen OAuth (Qwen Code device-flow accounts, `~/.qwen/oauth_creds.json`).
///
/// Read from `packages/core/src/qwen/qwenOAuth2.ts` of
/// [QwenLM/qwen-code](https://github.com/QwenLM/qwen-code) (commit
/// `0231fe436d81bfe0d57d66c6279390bbe7da5d3d`):
/// - `QWEN_OAUTH_TOKEN_ENDPOINT` `https://chat.qwen.ai/api/v1/oauth2/token`;
///   `refreshAccessToken` posts a form body `{grant_type: "refresh_token", refresh_token,
///   client_id: QWEN_OAUTH_CLIENT_ID}` with `Accept: application/json` (no secret, no scope);
/// - the answer (`TokenRefreshData`) has `access_token`, `token_type`, `expires_in`, maybe a new
///   `refresh_token` (Qwen Code keeps the old one when absent, as here) and a `resource_url`, the
///   account's API base, which lands in the credential's metadata.
///
/// Qwen Code treats any 400 or 401 from a refresh as an expired grant; this crate classifies by
/// the `error` code instead, and a 400 without one is transient.
pub fn qwen() -> TokenEndpoint {
    TokenEndpoint::new("https://chat.qwen.ai/api/v1/oauth2/token")
        .with_client_auth(ClientAuth::None)
        .with_encoding(Encoding::Form)
        .with_default_client(QWEN_CODE_CLIENT_ID, None)
        .with_client_requirement(ClientRequirement::ClientId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HttpBuildError, HttpRefresher};

    #[test]
    fn presets_build() {
        for ep in [google_gemini(), anthropic_claude(), openai_codex(), qwen()] {
            assert!(ep.url.starts_with("https://"));
            assert!(ep.default_client_id.is_some(), "{ep:?}");
            assert_ne!(ep.client_requirement, ClientRequirement::None);
            HttpRefresher::builder(ep).build().expect("preset builds");
        }
    }

    #[test]
    fn a_preset_without_its_client_is_a_build_error() {
        for mut ep in [google_gemini(), anthropic_claude(), openai_codex(), qwen()] {
            ep.default_client_id = None;
            let err = HttpRefresher::builder(ep)
                .build()
                .expect_err("no client id");
            assert_eq!(err, HttpBuildError::MissingClientId);
            assert_eq!(err.kind(), oauth_core::FailureKind::Misconfigured);
        }
        let mut gemini = google_gemini();
        gemini.default_client_secret = None;
        assert_eq!(
            HttpRefresher::builder(gemini).build().err(),
            Some(HttpBuildError::MissingClientSecret)
        );
        let mut empty = qwen();
        empty.default_client_id = Some(String::new());
        assert_eq!(
            HttpRefresher::builder(empty).build().err(),
            Some(HttpBuildError::MissingClientId)
        );
        // Opting out: credentials carry their own client.
        let mut own = google_gemini().with_client_requirement(ClientRequirement::None);
        own.default_client_id = None;
        own.default_client_secret = None;
        HttpRefresher::builder(own)
            .build()
            .expect("credentials carry the client");
    }

    #[test]
    fn the_gemini_secret_is_redacted_in_debug() {
        let shown = format!(
            "{:?}",
            HttpRefresher::builder(google_gemini())
                .build()
                .expect("builds")
        );
        assert!(!shown.contains(GEMINI_CLI_CLIENT_SECRET), "{shown}");
        assert!(shown.contains(GEMINI_CLI_CLIENT_ID));
    }
}
