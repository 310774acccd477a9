//! Putting a credential on a request: the bearer token and the provider's per-account headers.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use oauth_core::{Credential, ExposeSecret};
use oauth_providers::Provider;

use crate::error::OAuthHttpError;

/// The header Codex's ChatGPT backend reads the account from.
pub const CODEX_ACCOUNT_HEADER: &str = "chatgpt-account-id";

/// The beta flag Anthropic's Messages API wants with Claude-plan OAuth access tokens.
pub const ANTHROPIC_OAUTH_BETA: &str = "oauth-2025-04-20";

/// How requests are dressed for a provider: which per-account headers the credential's
/// `metadata` supplies, and whether its `resource_url` replaces the request's API base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderRequests {
    /// Send `chatgpt-account-id` from `metadata.account_id` (Codex).
    pub account_header: bool,
    /// Send `anthropic-beta: oauth-2025-04-20` unless the request sets `anthropic-beta` itself
    /// (Anthropic OAuth; the flag Claude Code sends with plan tokens).
    pub anthropic_oauth_beta: bool,
    /// Send the request to `metadata.resource_url` instead of the request's own scheme, host and
    /// API base (Qwen OAuth assigns each account its endpoint).
    pub resource_url_base: bool,
}

impl ProviderRequests {
    /// Nothing beyond `Authorization: Bearer`.
    pub const NONE: Self = Self {
        account_header: false,
        anthropic_oauth_beta: false,
        resource_url_base: false,
    };

    /// What `provider`'s OAuth accounts need.
    pub const fn for_provider(provider: Provider) -> Self {
        match provider {
            Provider::Codex => Self {
                account_header: true,
                ..Self::NONE
            },
            Provider::Anthropic => Self {
                anthropic_oauth_beta: true,
                ..Self::NONE
            },
            Provider::Qwen => Self {
                resource_url_base: true,
                ..Self::NONE
            },
            _ => Self::NONE,
        }
    }
}

/// Sets `Authorization: Bearer <access token>` (marked sensitive, so it is redacted in `Debug`)
/// and the provider's per-account headers; rebases `url` (when the request has an absolute one)
/// on the account's resource URL when the provider wants that.
pub(crate) fn authorize(
    headers: &mut HeaderMap,
    url: Option<&mut reqwest::Url>,
    credential: &Credential,
    how: ProviderRequests,
) -> Result<(), OAuthHttpError> {
    let token = credential.access_token.expose_secret();
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        OAuthHttpError::InvalidCredential {
            credential: credential.id.to_string(),
            what: "access token is not a valid header value",
        }
    })?;
    value.set_sensitive(true);
    headers.insert(AUTHORIZATION, value);
    // An API key header from another scheme must not ride along with the OAuth token.
    headers.remove("x-api-key");
    if how.account_header
        && let Some(id) = credential.metadata.account_id.as_deref()
    {
        let v = HeaderValue::from_str(id).map_err(|_| OAuthHttpError::InvalidCredential {
            credential: credential.id.to_string(),
            what: "account id is not a valid header value",
        })?;
        headers.insert(CODEX_ACCOUNT_HEADER, v);
    }
    if how.anthropic_oauth_beta && !headers.contains_key("anthropic-beta") {
        headers.insert(
            "anthropic-beta",
            HeaderValue::from_static(ANTHROPIC_OAUTH_BETA),
        );
    }
    if how.resource_url_base
        && let Some(base) = credential.metadata.resource_url.as_deref()
        && let Some(url) = url
    {
        *url = rebase(url, base).ok_or_else(|| OAuthHttpError::InvalidCredential {
            credential: credential.id.to_string(),
            what: "resource_url is not a usable API base",
        })?;
    }
    Ok(())
}

/// `url` moved onto the API base `resource_url`: Qwen's `resource_url` is a host
/// ("portal.qwen.ai") or a URL, and the OpenAI-compatible API lives under its `/v1`
/// (as Qwen Code builds it). The request's path below its own `/v1` (or its whole path when it
/// has none) is kept, with its query.
pub fn rebase(url: &reqwest::Url, resource_url: &str) -> Option<reqwest::Url> {
    let base = resource_url.trim();
    if base.is_empty() {
        return None;
    }
    let with_scheme = if base.contains("://") {
        base.to_owned()
    } else {
        format!("https://{base}")
    };
    let mut base = reqwest::Url::parse(&with_scheme).ok()?;
    if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
        return None;
    }
    let base_path = base.path().trim_end_matches('/').to_owned();
    let base_path = if base_path.ends_with("/v1") {
        base_path
    } else {
        format!("{base_path}/v1")
    };
    let path = url.path();
    let rest = path
        .find("/v1/")
        .map_or(path, |i| &path[i + 3..])
        .trim_start_matches('/');
    base.set_path(&format!("{base_path}/{rest}"));
    base.set_query(url.query());
    Some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap_or_else(|_| reqwest::Url::parse("http://x").expect("url"))
    }

    #[test]
    fn rebase_on_resource_url() {
        let req = url("https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions?x=1");
        assert_eq!(
            rebase(&req, "portal.qwen.ai").map(|u| u.to_string()),
            Some("https://portal.qwen.ai/v1/chat/completions?x=1".to_owned())
        );
        assert_eq!(
            rebase(&req, "http://127.0.0.1:8080/v1/").map(|u| u.to_string()),
            Some("http://127.0.0.1:8080/v1/chat/completions?x=1".to_owned())
        );
        let bare = url("https://example.invalid/chat/completions");
        assert_eq!(
            rebase(&bare, "https://a.example/api").map(|u| u.to_string()),
            Some("https://a.example/api/v1/chat/completions".to_owned())
        );
        assert_eq!(rebase(&req, ""), None);
        assert_eq!(rebase(&req, "ftp://x/"), None);
        assert_eq!(rebase(&req, "http://"), None);
    }
}
