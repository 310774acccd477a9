//! How the four providers' CLIs sign an account in: which flow, endpoints, client id and scopes,
//! read from each CLI's public source (cited per function). Providers change these without
//! notice; every field of the returned config stays public and can be overridden.
//!
//! | provider | flow | redirect | token request |
//! |---|---|---|---|
//! | [`gemini_cli`] | code + PKCE | `http://127.0.0.1:<ephemeral>/oauth2callback` | form, client secret in body |
//! | [`claude_code`] | code + PKCE | `http://localhost:<ephemeral>/callback` | JSON, with `state` |
//! | [`codex`] | code + PKCE | `http://localhost:1455/auth/callback` (fixed) | form |
//! | [`qwen_code`] | device + PKCE | none | form |

use std::fmt;
use std::str::FromStr;

use crate::config::{AuthorizationCodeConfig, DeviceConfig, Encoding, RedirectHost, SigninFlow};

/// Gemini CLI's OAuth client id (`OAUTH_CLIENT_ID` in gemini-cli's `oauth2.ts`).
pub const GEMINI_CLI_CLIENT_ID: &str =
    "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com";
/// Claude Code's public client id.
pub const CLAUDE_CODE_CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
/// The Codex CLI's public client id.
pub const CODEX_CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
/// Qwen Code's public client id (`QWEN_OAUTH_CLIENT_ID` in `qwenOAuth2.ts`).
pub const QWEN_CODE_CLIENT_ID: &str = "f0304373b74a44d2b584a3fb70ca9e56";

/// Gemini CLI (Google OAuth for Gemini Code Assist): authorization code on a loopback redirect.
///
/// From `authWithWeb` in `packages/core/src/code_assist/oauth2.ts` of
/// [google-gemini/gemini-cli](https://github.com/google-gemini/gemini-cli):
/// - redirect `http://127.0.0.1:${port}/oauth2callback` on a free port, a 32-byte hex `state`
///   checked on return, `access_type=offline` (so Google issues a refresh token);
/// - scopes `cloud-platform`, `userinfo.email`, `userinfo.profile`;
/// - client `OAUTH_CLIENT_ID` with `OAUTH_CLIENT_SECRET`, an installed-application client whose
///   secret Google says "is obviously not treated as a secret". This crate (which depends on
///   `oauth-core` only) does not carry it: pass it with [`SigninFlow::with_client_secret`], e.g.
///   `oauth_refresh::presets::GEMINI_CLI_CLIENT_SECRET`, as oauth-keeper does; Google refuses the
///   exchange without it.
///
/// Not taken from that file, and not verified against Google: the endpoint URLs (those
/// google-auth-library uses, `accounts.google.com/o/oauth2/v2/auth` and
/// `oauth2.googleapis.com/token`) and PKCE: gemini-cli's loopback flow sends no challenge (its
/// manual user-code flow does); Google accepts PKCE from installed apps, so it is sent here.
/// Google adds `openid` to these scopes and returns an `id_token` with `email` and `sub`.
pub fn gemini_cli() -> SigninFlow {
    SigninFlow::AuthorizationCode(
        AuthorizationCodeConfig::new(
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://oauth2.googleapis.com/token",
            GEMINI_CLI_CLIENT_ID,
        )
        .with_scopes([
            "https://www.googleapis.com/auth/cloud-platform",
            "https://www.googleapis.com/auth/userinfo.email",
            "https://www.googleapis.com/auth/userinfo.profile",
        ])
        .with_redirect(RedirectHost::LoopbackIp, 0, "/oauth2callback")
        .with_authorize_param("access_type", "offline"),
    )
}

/// Claude Code (Anthropic OAuth for Claude Pro/Max): authorization code with PKCE.
///
/// Claude Code is not open source; these values come from public reimplementations of its flow
/// (e.g. `anthropic-oauth-flow.md` in notforyou23/evobrew, "extracted from Claude Code CLI"):
/// - authorize at `https://claude.ai/oauth/authorize` with `code=true`, `response_type=code`,
///   scopes `org:create_api_key user:profile user:inference`, an `S256` challenge and `state`;
///   Claude Code listens on `http://localhost:<random port>/callback`;
/// - the token request is **JSON** `{grant_type, client_id, code, state, redirect_uri,
///   code_verifier}`, `state` included;
/// - the token endpoint moved from `console.anthropic.com` to `platform.claude.com` (the host
///   `oauth-refresh`'s preset uses, with its `claude-cli` User-Agent, both cited there).
///
/// Not verified: whether Anthropic accepts any loopback port (reimplementations use a random
/// one, some a fixed 54545), and the `account` object (`uuid`, `email_address`) some
/// reimplementations read from the token response; it is read when present.
pub fn claude_code() -> SigninFlow {
    SigninFlow::AuthorizationCode(
        AuthorizationCodeConfig::new(
            "https://claude.ai/oauth/authorize",
            "https://platform.claude.com/v1/oauth/token",
            CLAUDE_CODE_CLIENT_ID,
        )
        .with_scopes(["org:create_api_key", "user:profile", "user:inference"])
        .with_redirect(RedirectHost::Localhost, 0, "/callback")
        .with_authorize_param("code", "true")
        .with_token_encoding(Encoding::Json)
        .with_state_in_token_request(true)
        .with_header("User-Agent", "claude-cli/2.1.81 (external, cli)"),
    )
}

/// Codex CLI (OpenAI OAuth for ChatGPT accounts): authorization code with PKCE on a **fixed**
/// loopback port.
///
/// From `codex-rs/login/src/server.rs` of [openai/codex](https://github.com/openai/codex):
/// - issuer `https://auth.openai.com`: `/oauth/authorize` and `/oauth/token`;
/// - redirect `http://localhost:1455/auth/callback`: port 1455 (fallback 1457) is on the
///   client's "Hydra redirect URI allow-list", so an ephemeral port is refused;
/// - `build_authorize_url`: scopes `openid profile email offline_access api.connectors.read
///   api.connectors.invoke`, `S256`, `id_token_add_organizations=true`,
///   `codex_cli_simplified_flow=true`, `state`, `originator`;
/// - `exchange_code_for_tokens`: a form body `grant_type=authorization_code, code,
///   redirect_uri, client_id, code_verifier`; the answer is `{id_token, access_token,
///   refresh_token}` (no `expires_in`: the access token's JWT `exp` is used); the account id is
///   the id token's `https://api.openai.com/auth.chatgpt_account_id` claim.
///
/// Not verified: the `originator` value (`originator()` lives in another file); `codex_cli_rs`
/// is sent. The fallback port 1457 is not tried automatically: set `redirect_port`.
pub fn codex() -> SigninFlow {
    SigninFlow::AuthorizationCode(
        AuthorizationCodeConfig::new(
            "https://auth.openai.com/oauth/authorize",
            "https://auth.openai.com/oauth/token",
            CODEX_CLIENT_ID,
        )
        .with_scopes([
            "openid",
            "profile",
            "email",
            "offline_access",
            "api.connectors.read",
            "api.connectors.invoke",
        ])
        .with_redirect(RedirectHost::Localhost, 1455, "/auth/callback")
        .with_authorize_param("id_token_add_organizations", "true")
        .with_authorize_param("codex_cli_simplified_flow", "true")
        .with_authorize_param("originator", "codex_cli_rs"),
    )
}

/// Qwen Code (Qwen OAuth): the device authorization grant with PKCE.
///
/// From `packages/core/src/qwen/qwenOAuth2.ts` of
/// [QwenLM/qwen-code](https://github.com/QwenLM/qwen-code):
/// - device endpoint `https://chat.qwen.ai/api/v1/oauth2/device/code`, form body `{client_id,
///   scope, code_challenge, code_challenge_method}`, `Accept: application/json`;
/// - token endpoint `https://chat.qwen.ai/api/v1/oauth2/token`, polled with `{grant_type:
///   urn:ietf:params:oauth:grant-type:device_code, client_id, device_code, code_verifier}`;
///   `authorization_pending` comes as 400 and `slow_down` as **429**, both handled;
/// - scope `openid profile email model.completion`; the token answer may carry
///   `resource_url`, the account's API base (kept in the credential's metadata).
///
/// Not verified: the device answer's `interval` (the TS type has none; this crate then polls
/// every 5 s, RFC 8628's default).
pub fn qwen_code() -> SigninFlow {
    SigninFlow::Device(
        DeviceConfig::new(
            "https://chat.qwen.ai/api/v1/oauth2/device/code",
            "https://chat.qwen.ai/api/v1/oauth2/token",
            QWEN_CODE_CLIENT_ID,
        )
        .with_scopes(["openid", "profile", "email", "model.completion"])
        .with_pkce(true),
    )
}

/// The providers with a preset, for `login <provider>`-style commands.
///
/// ```
/// use oauth_signin::{Provider, SigninFlow};
/// let p: Provider = "qwen".parse()?;
/// assert!(matches!(p.flow(), SigninFlow::Device(_)));
/// assert_eq!(p.to_string(), "qwen");
/// # Ok::<(), oauth_signin::UnknownProvider>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provider {
    /// [`gemini_cli`].
    Gemini,
    /// [`claude_code`].
    Claude,
    /// [`codex`].
    Codex,
    /// [`qwen_code`].
    Qwen,
}

impl Provider {
    /// Every provider.
    pub const ALL: [Self; 4] = [Self::Gemini, Self::Claude, Self::Codex, Self::Qwen];

    /// The preset.
    pub fn flow(self) -> SigninFlow {
        match self {
            Self::Gemini => gemini_cli(),
            Self::Claude => claude_code(),
            Self::Codex => codex(),
            Self::Qwen => qwen_code(),
        }
    }

    /// The short name (`gemini`, `claude`, `codex`, `qwen`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gemini => "gemini",
            Self::Claude => "claude",
            Self::Codex => "codex",
            Self::Qwen => "qwen",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider name with no preset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no sign-in preset is named {0:?} (known: gemini, claude, codex, qwen)")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gemini" | "gemini-cli" | "google" => Ok(Self::Gemini),
            "claude" | "claude-code" | "anthropic" => Ok(Self::Claude),
            "codex" | "openai" | "chatgpt" => Ok(Self::Codex),
            "qwen" | "qwen-code" => Ok(Self::Qwen),
            _ => Err(UnknownProvider(s.chars().take(40).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_well_formed() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
            match p.flow() {
                SigninFlow::AuthorizationCode(c) => {
                    assert!(url::Url::parse(&c.authorize_url).is_ok(), "{p}");
                    assert!(c.token_url.starts_with("https://"), "{p}");
                    assert!(c.redirect_path.starts_with('/'), "{p}");
                    assert!(!c.scopes.is_empty(), "{p}");
                }
                SigninFlow::Device(c) => {
                    assert!(c.pkce, "{p}");
                    assert!(c.device_authorization_url.starts_with("https://"), "{p}");
                }
            }
        }
        assert!("nope".parse::<Provider>().is_err());
    }
}
