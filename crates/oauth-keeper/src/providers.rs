//! The four providers the keeper knows: their store name, sign-in preset and refresh preset.

use std::fmt;
use std::str::FromStr;

use oauth_accounts::providers;
use oauth_manager::refresh::{TokenEndpoint, presets};
use oauth_signin::{Provider, SigninFlow};

use crate::config::ProviderOverrides;

/// A provider with a sign-in and a refresh preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ProviderKind {
    /// Gemini CLI (Google).
    Gemini,
    /// Claude Code (Anthropic).
    Claude,
    /// Codex (OpenAI).
    Codex,
    /// Qwen Code.
    Qwen,
}

/// A provider name the keeper does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?} (known: gemini, claude, codex, qwen)")]
pub struct UnknownProviderName(pub String);

impl ProviderKind {
    /// Every provider.
    pub const ALL: [Self; 4] = [Self::Gemini, Self::Claude, Self::Codex, Self::Qwen];

    /// The provider name of its pool, its account files and its metrics label (`gemini`,
    /// `anthropic`, `openai`, `qwen`).
    pub const fn pool_name(self) -> &'static str {
        match self {
            Self::Gemini => providers::GEMINI,
            Self::Claude => providers::ANTHROPIC,
            Self::Codex => providers::OPENAI,
            Self::Qwen => providers::QWEN,
        }
    }

    /// The name used in the configuration and on the command line (`gemini`, `claude`,
    /// `codex`, `qwen`).
    pub const fn config_name(self) -> &'static str {
        self.signin().as_str()
    }

    /// The sign-in preset.
    pub const fn signin(self) -> Provider {
        match self {
            Self::Gemini => Provider::Gemini,
            Self::Claude => Provider::Claude,
            Self::Codex => Provider::Codex,
            Self::Qwen => Provider::Qwen,
        }
    }

    /// The refresh preset with the overrides applied.
    pub fn token_endpoint(self, o: &ProviderOverrides, secret: Option<String>) -> TokenEndpoint {
        let mut e = match self {
            Self::Gemini => presets::google_gemini(),
            Self::Claude => presets::anthropic_claude(),
            Self::Codex => presets::openai_codex(),
            Self::Qwen => presets::qwen(),
        };
        if let Some(url) = &o.token_url {
            e = e.with_url(url.clone());
        }
        if let Some(id) = &o.client_id {
            let secret = secret.or_else(|| {
                e.default_client_secret
                    .as_ref()
                    .map(|s| oauth_manager::ExposeSecret::expose_secret(s).to_owned())
            });
            e = e.with_default_client(id.clone(), secret);
        } else if let Some(secret) = secret {
            let id = e.default_client_id.clone().unwrap_or_default();
            e = e.with_default_client(id, Some(secret));
        }
        e
    }

    /// The sign-in flow with the overrides applied (Gemini gets its installed-app client
    /// secret from the refresh preset, where it is documented).
    pub fn signin_flow(self, o: &ProviderOverrides, secret: Option<String>) -> SigninFlow {
        let flow = self.signin().flow();
        let token_url = o.signin_token_url.as_ref().or(o.token_url.as_ref());
        let flow = match flow {
            SigninFlow::AuthorizationCode(mut c) => {
                if let Some(u) = &o.authorize_url {
                    c.authorize_url = u.clone();
                }
                if let Some(u) = token_url {
                    c.token_url = u.clone();
                }
                if let Some(id) = &o.client_id {
                    c.client_id = id.clone();
                }
                SigninFlow::AuthorizationCode(c)
            }
            SigninFlow::Device(mut c) => {
                if let Some(u) = &o.device_authorization_url {
                    c.device_authorization_url = u.clone();
                }
                if let Some(u) = token_url {
                    c.token_url = u.clone();
                }
                if let Some(id) = &o.client_id {
                    c.client_id = id.clone();
                }
                SigninFlow::Device(c)
            }
            other => other,
        };
        let secret = secret.or_else(|| {
            (self == Self::Gemini && o.client_id.is_none())
                .then(|| presets::GEMINI_CLI_CLIENT_SECRET.to_owned())
        });
        match secret {
            Some(s) => flow.with_client_secret(s),
            None => flow,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.config_name())
    }
}

impl FromStr for ProviderKind {
    type Err = UnknownProviderName;

    /// Accepts the sign-in names and aliases (`gemini`, `claude`, `codex`, `qwen`, ...) and the
    /// pool names (`anthropic`, `openai`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let p = s
            .parse::<Provider>()
            .map_err(|_| UnknownProviderName(s.chars().take(40).collect()))?;
        Ok(match p {
            Provider::Gemini => Self::Gemini,
            Provider::Claude => Self::Claude,
            Provider::Codex => Self::Codex,
            Provider::Qwen => Self::Qwen,
            _ => return Err(UnknownProviderName(s.chars().take(40).collect())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in ProviderKind::ALL {
            assert_eq!(p.config_name().parse::<ProviderKind>(), Ok(p));
            assert_eq!(p.pool_name().parse::<ProviderKind>(), Ok(p));
        }
        assert!("nope".parse::<ProviderKind>().is_err());
    }
}
