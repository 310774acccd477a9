//! Token endpoints of the providers whose OAuth accounts people pool.
//!
//! Each preset is a [`TokenEndpoint`] with the provider's URL, client authentication, request
//! encoding and quirks, researched from public sources (cited per function). Providers change
//! these without notice; every field stays configurable (`preset().with_url(..)`, `.with_header(..)`).
//! The client id a preset carries is the provider CLI's *public* client id, used only when a
//! credential has none of its own.
//!
//! | preset | URL | auth | body | refresh-token rotation |
//! |---|---|---|---|---|
//! | [`google_gemini`] | `https://oauth2.googleapis.com/token` | id + secret in body | form | no (Google keeps it) |
//! | [`anthropic_claude`] | `https://platform.claude.com/v1/oauth/token` | public client | JSON | every refresh |
//! | [`openai_codex`] | `https://auth.openai.com/oauth/token` | public client | JSON | every refresh |
//! | [`qwen`] | `https://chat.qwen.ai/api/v1/oauth2/token` | public client | form | when sent |

use std::time::Duration;

use crate::http::{ClientAuth, Encoding, MissingExpiry, TokenEndpoint};

/// The public client id of Claude Code.
pub const CLAUDE_CODE_CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
/// The public client id of the Codex CLI.
pub const CODEX_CLI_CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
/// The public client id of Qwen Code.
pub const QWEN_CODE_CLIENT_ID: &str = "f0304373b74a44d2b584a3fb70ca9e56";

/// Google OAuth 2.0 for Gemini CLI / Gemini Code Assist accounts.
///
/// - Endpoint `https://oauth2.googleapis.com/token`, form-encoded, `client_id` and
///   `client_secret` in the body (what google-auth-library, used by gemini-cli, sends).
/// - The client is the gemini-cli "installed application" client (`OAUTH_CLIENT_ID` /
///   `OAUTH_CLIENT_SECRET` in `packages/core/src/code_assist/oauth2.ts` of
///   [google-gemini/gemini-cli](https://github.com/google-gemini/gemini-cli)). Google documents
///   that an installed app's secret is not treated as a secret, but it is not copied here: put
///   the client id and secret on the credential, or use
///   [`TokenEndpoint::with_default_client`].
/// - Access tokens live about an hour (`expires_in` ≈ 3599); Google normally returns no new
///   refresh token, so the old one is kept. The response also has `id_token`, ignored here.
pub fn google_gemini() -> TokenEndpoint {
    TokenEndpoint::new("https://oauth2.googleapis.com/token")
        .with_client_auth(ClientAuth::RequestBody)
        .with_encoding(Encoding::Form)
}

/// Anthropic OAuth for Claude Pro/Max (Claude Code) accounts.
///
/// - Endpoint `https://platform.claude.com/v1/oauth/token`; Anthropic moved it from
///   `console.anthropic.com` with Claude Code 2.1.81
///   ([NousResearch/hermes-agent#3246](https://github.com/NousResearch/hermes-agent/pull/3246);
///   host moves also in [TopiCsarno/yapcap#12](https://github.com/TopiCsarno/yapcap/pull/12)).
/// - JSON body `{grant_type, refresh_token, client_id}` with Claude Code's public client id
///   ([hermes-agent#3246](https://github.com/NousResearch/hermes-agent/pull/3246) switched to
///   JSON to match Claude Code; some clients report form bodies working too, e.g.
///   [1mancompany/OneManCompany#238](https://github.com/1mancompany/OneManCompany/pull/238), so
///   the encoding stays configurable).
/// - Cloudflare in front of the endpoint answers 429 to unknown user agents; a `claude-cli/...`
///   User-Agent is sent
///   ([griffinmartin/opencode-claude-auth#60](https://github.com/griffinmartin/opencode-claude-auth/pull/60)).
/// - The refresh token rotates on every refresh
///   ([ID-Robots/clawbox#936](https://github.com/ID-Robots/clawbox/pull/936)); a response carries
///   `expires_in` and the new `refresh_token`.
pub fn anthropic_claude() -> TokenEndpoint {
    TokenEndpoint::new("https://platform.claude.com/v1/oauth/token")
        .with_client_auth(ClientAuth::None)
        .with_encoding(Encoding::Json)
        .with_default_client(CLAUDE_CODE_CLIENT_ID, None)
        .with_header("User-Agent", "claude-cli/2.1.81 (external, cli)")
}

/// OpenAI OAuth for ChatGPT (Codex CLI) accounts.
///
/// - Endpoint `https://auth.openai.com/oauth/token` (`REFRESH_TOKEN_URL` in
///   `codex-rs/login/src/auth/manager.rs` of [openai/codex](https://github.com/openai/codex)),
///   JSON body `{client_id, grant_type, refresh_token}` with the Codex CLI's public client id.
/// - The refresh token is single-use: reuse is answered `refresh_token_reused` (mapped to
///   [`OAuthErrorCode::RefreshTokenReused`](crate::OAuthErrorCode), a permanent failure), and
///   expired/revoked ones `refresh_token_expired` / `refresh_token_invalidated` (same file).
/// - The response (`id_token`, `access_token`, `refresh_token`) may omit `expires_in`; the expiry
///   is then read from the access token's JWT `exp` claim
///   ([`MissingExpiry::JwtExpOr`]), falling back to one hour.
pub fn openai_codex() -> TokenEndpoint {
    TokenEndpoint::new("https://auth.openai.com/oauth/token")
        .with_client_auth(ClientAuth::None)
        .with_encoding(Encoding::Json)
        .with_default_client(CODEX_CLI_CLIENT_ID, None)
        .with_missing_expiry(MissingExpiry::JwtExpOr(Duration::from_secs(3600)))
}

/// Qwen OAuth (Qwen Code, device-flow accounts).
///
/// - Endpoint `https://chat.qwen.ai/api/v1/oauth2/token`, form body
///   `{grant_type, refresh_token, client_id}` with Qwen Code's public client id, `Accept:
///   application/json` (`refreshAccessToken` in `packages/core/src/qwen/qwenOAuth2.ts` of
///   [QwenLM/qwen-code](https://github.com/QwenLM/qwen-code)).
/// - The response may carry a new `refresh_token` (kept when absent, as Qwen Code does) and a
///   `resource_url`, the account's API base. `resource_url` has no field in
///   [`Credential`](oauth_core::Credential) and is ignored here.
/// - Qwen Code treats any 400 from a refresh as an expired grant; this crate classifies by the
///   `error` code instead, and a 400 without one is transient.
pub fn qwen() -> TokenEndpoint {
    TokenEndpoint::new("https://chat.qwen.ai/api/v1/oauth2/token")
        .with_client_auth(ClientAuth::None)
        .with_encoding(Encoding::Form)
        .with_default_client(QWEN_CODE_CLIENT_ID, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpRefresher;

    #[test]
    fn presets_build() {
        for ep in [google_gemini(), anthropic_claude(), openai_codex(), qwen()] {
            assert!(ep.url.starts_with("https://"));
            HttpRefresher::builder(ep).build().expect("preset builds");
        }
    }
}
