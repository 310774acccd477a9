//! What a refresh returns ([`TokenSet`]), the per-account data that travels with a credential
//! ([`CredentialMetadata`]), and the one function that applies the former to a
//! [`Credential`](crate::Credential) (RFC 6749 section 6).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::secret::{ExposeSecret, SecretString};

/// The tokens a refresh produced: what the token endpoint sent, already interpreted.
///
/// A refresher builds one and returns it; it never edits a [`Credential`](crate::Credential)
/// itself. [`Credential::apply_tokens`](crate::Credential::apply_tokens) does the bookkeeping
/// (keep the old refresh token when none was rotated, bump the refresh count, set the last refresh
/// time), so no implementer can forget it.
///
/// ```
/// use oauth_core::TokenSet;
/// let tokens = TokenSet::new("new-access-token").with_refresh_token("rotated");
/// assert!(!format!("{tokens:?}").contains("new-access-token"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct TokenSet {
    /// The new access token.
    pub access_token: SecretString,
    /// The rotated refresh token; `None` when the server sent none (the old one is kept).
    pub refresh_token: Option<SecretString>,
    /// When the new access token stops working; `None` when unknown (it is then never refreshed
    /// proactively, only when the provider rejects it).
    pub expires_at: Option<DateTime<Utc>>,
    /// When the refresh token stops working, if the server said so.
    pub refresh_token_expires_at: Option<DateTime<Utc>>,
    /// The granted scopes; `None` when the server did not say (the granted scope is unchanged).
    pub scopes: Option<Vec<String>>,
    /// An OpenID Connect id token, when the server sent one.
    pub id_token: Option<SecretString>,
    /// Other fields the server sent, as text (JSON values that are not strings are kept as their
    /// JSON text). Known account fields (`account_id`, `resource_url`, `email`, `plan`) are moved
    /// into the credential's [`CredentialMetadata`] by `apply_tokens`; the rest land in its `extra`.
    pub extra: BTreeMap<String, String>,
    /// Oddities found in the response that did not stop the tokens from being used (an unusable
    /// `expires_in`, a scope sent as an array, ...). The manager reports each as a
    /// `TokenResponseQuirk` event.
    pub quirks: Vec<TokenQuirk>,
}

impl TokenSet {
    /// A token set with only an access token: no rotation, unknown expiry, scope unchanged.
    pub fn new(access_token: impl Into<String>) -> Self {
        Self {
            access_token: SecretString::from(access_token.into()),
            refresh_token: None,
            expires_at: None,
            refresh_token_expires_at: None,
            scopes: None,
            id_token: None,
            extra: BTreeMap::new(),
            quirks: Vec::new(),
        }
    }

    /// Sets the rotated refresh token.
    #[must_use]
    pub fn with_refresh_token(mut self, token: impl Into<String>) -> Self {
        self.refresh_token = Some(SecretString::from(token.into()));
        self
    }

    /// Sets the access token's expiry.
    #[must_use]
    pub const fn with_expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets the granted scopes.
    #[must_use]
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the id token.
    #[must_use]
    pub fn with_id_token(mut self, token: impl Into<String>) -> Self {
        self.id_token = Some(SecretString::from(token.into()));
        self
    }

    /// Adds another field the server sent.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("expires_at", &self.expires_at)
            .field("refresh_token_expires_at", &self.refresh_token_expires_at)
            .field("scopes", &self.scopes)
            .field("id_token", &self.id_token)
            // Values of unknown fields may be secrets: only their names are shown.
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .field("quirks", &self.quirks)
            .finish()
    }
}

/// An oddity in a successful token response that was tolerated rather than turned into a failure
/// (a usable token in a success response is never discarded). Never holds remote text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenQuirk {
    /// `expires_in` was not a usable number of seconds (text, negative, absurdly large); the
    /// expiry fell back to the refresher's default.
    UnusableExpiresIn,
    /// `refresh_token_expires_in` was unusable; the refresh token's expiry is unknown.
    UnusableRefreshTokenExpiresIn,
    /// `scope` was not a space-separated string (an array, say); it was read as well as possible.
    OddScope,
    /// `token_type` was not `Bearer`.
    UnexpectedTokenType,
    /// The `Content-Type` was not JSON, but the body was.
    NotJsonContentType,
    /// A field had the wrong JSON type (or was too large to keep) and was ignored.
    OddField,
    /// The access token's stated lifetime was beyond the refresher's maximum and was clamped to
    /// it.
    ExpiryClamped,
}

impl TokenQuirk {
    /// Every quirk, in declaration order: what a metrics backend creates its series from, so
    /// each quirk's counter exists at 0 before the first one is seen.
    pub const ALL: [Self; 7] = [
        Self::UnusableExpiresIn,
        Self::UnusableRefreshTokenExpiresIn,
        Self::OddScope,
        Self::UnexpectedTokenType,
        Self::NotJsonContentType,
        Self::OddField,
        Self::ExpiryClamped,
    ];

    /// A short stable label for events, logs and metric labels (the serialized name).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnusableExpiresIn => "unusable_expires_in",
            Self::UnusableRefreshTokenExpiresIn => "unusable_refresh_token_expires_in",
            Self::OddScope => "odd_scope",
            Self::UnexpectedTokenType => "unexpected_token_type",
            Self::NotJsonContentType => "not_json_content_type",
            Self::OddField => "odd_field",
            Self::ExpiryClamped => "expiry_clamped",
        }
    }
}

/// Per-account data that travels with a credential: carried through refreshes (a token
/// response's extra fields) and persisted with it.
///
/// The id token is a secret (redacted `Debug`); values in `extra` are shown only by name.
#[derive(Clone, Default, Deserialize)]
#[non_exhaustive]
pub struct CredentialMetadata {
    /// The provider's account id (Codex's `account_id`, sent in the `chatgpt-account-id` header).
    #[serde(default)]
    pub account_id: Option<String>,
    /// An OpenID Connect id token.
    #[serde(default)]
    pub id_token: Option<SecretString>,
    /// The API base the provider assigned to the account (Qwen's `resource_url`).
    #[serde(default)]
    pub resource_url: Option<String>,
    /// The account's e-mail address, where known.
    #[serde(default)]
    pub email: Option<String>,
    /// The account's plan or subscription type, where known.
    #[serde(default)]
    pub plan: Option<String>,
    /// Other per-account values.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

impl CredentialMetadata {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.account_id.is_none()
            && self.id_token.is_none()
            && self.resource_url.is_none()
            && self.email.is_none()
            && self.plan.is_none()
            && self.extra.is_empty()
    }

    /// Moves the known account fields of a token response's extras into their typed places and
    /// the rest into `extra`.
    pub fn absorb(&mut self, extra: BTreeMap<String, String>) {
        for (key, value) in extra {
            match key.as_str() {
                "account_id" => self.account_id = Some(value),
                "resource_url" => self.resource_url = Some(value),
                "email" => self.email = Some(value),
                "plan" | "subscription_type" => self.plan = Some(value),
                _ => {
                    self.extra.insert(key, value);
                }
            }
        }
    }
}

impl fmt::Debug for CredentialMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialMetadata")
            .field("account_id", &self.account_id)
            .field("id_token", &self.id_token)
            .field("resource_url", &self.resource_url)
            .field("email", &self.email)
            .field("plan", &self.plan)
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for CredentialMetadata {
    fn eq(&self, other: &Self) -> bool {
        self.account_id == other.account_id
            && self.id_token.as_ref().map(ExposeSecret::expose_secret)
                == other.id_token.as_ref().map(ExposeSecret::expose_secret)
            && self.resource_url == other.resource_url
            && self.email == other.email
            && self.plan == other.plan
            && self.extra == other.extra
    }
}

/// The clear-text serialization of [`CredentialMetadata`], for stores.
#[derive(Serialize)]
pub(crate) struct PersistedMetadata<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extra: &'a BTreeMap<String, String>,
}

impl<'a> From<&'a CredentialMetadata> for PersistedMetadata<'a> {
    fn from(m: &'a CredentialMetadata) -> Self {
        Self {
            account_id: m.account_id.as_deref(),
            id_token: m.id_token.as_ref().map(ExposeSecret::expose_secret),
            resource_url: m.resource_url.as_deref(),
            email: m.email.as_deref(),
            plan: m.plan.as_deref(),
            extra: &m.extra,
        }
    }
}

/// What applying a [`TokenSet`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokensApplied {
    /// The server rotated the refresh token (sent one different from the old).
    pub refresh_token_rotated: bool,
}

#[cfg(test)]
mod tests {
    use super::TokenQuirk;

    /// Exhaustive (no wildcard): a new variant does not compile until it has a place here, and
    /// the test then fails until it is in [`TokenQuirk::ALL`] at that place.
    const fn position(q: TokenQuirk) -> usize {
        match q {
            TokenQuirk::UnusableExpiresIn => 0,
            TokenQuirk::UnusableRefreshTokenExpiresIn => 1,
            TokenQuirk::OddScope => 2,
            TokenQuirk::UnexpectedTokenType => 3,
            TokenQuirk::NotJsonContentType => 4,
            TokenQuirk::OddField => 5,
            TokenQuirk::ExpiryClamped => 6,
        }
    }

    #[test]
    fn all_lists_every_quirk_once_and_labels_are_the_serialized_names() {
        let mut labels = Vec::new();
        for (i, q) in TokenQuirk::ALL.iter().enumerate() {
            assert_eq!(position(*q), i, "{q:?}");
            let json = serde_json::to_string(q).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", q.as_str()));
            assert!(!labels.contains(&q.as_str()), "{q:?}");
            labels.push(q.as_str());
        }
        assert_eq!(labels.len(), 7);
    }
}
