//! The credential: one OAuth account's client, tokens and bookkeeping.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::error::CredentialError;
use crate::id::CredentialId;
use crate::secret::{ExposeSecret, SecretString};
use crate::tokens::{CredentialMetadata, PersistedMetadata, TokenSet, TokensApplied};

/// Tokens expiring within this window should be refreshed proactively (the Go `RefreshBufferTime`).
pub const REFRESH_BUFFER: Duration = Duration::from_secs(5 * 60);

/// One OAuth account: everything the Go `OAuthCredentialSet` holds, plus the creation time that
/// rotation age is measured from.
///
/// Secrets are [`SecretString`]s: `Debug` prints them redacted, there is no `Display`, and the type
/// does **not** implement `Serialize`. A store persists a credential deliberately through
/// [`Credential::persisted`]; reading one back is plain `Deserialize` (the same JSON shape).
#[derive(Clone, Deserialize)]
#[non_exhaustive]
pub struct Credential {
    /// Configured id; the only per-credential value that appears in logs, events and metrics.
    pub id: CredentialId,
    /// OAuth client id (public information, never a secret).
    #[serde(default)]
    pub client_id: String,
    /// OAuth client secret, for confidential clients.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// Current access token.
    pub access_token: SecretString,
    /// Current refresh token, if the account has one.
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    /// When the access token stops working; `None` means it does not expire.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// When the refresh token stops working, if the provider said so (`refresh_token_expires_in`).
    #[serde(default)]
    pub refresh_token_expires_at: Option<DateTime<Utc>>,
    /// Granted scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Time of the last successful refresh.
    #[serde(default)]
    pub last_refresh: Option<DateTime<Utc>>,
    /// Number of successful refreshes over the credential's life (persisted).
    #[serde(default)]
    pub refresh_count: u64,
    /// When this credential was first added to a pool; rotation age is measured from it and it
    /// survives restarts because it is persisted with the credential.
    pub created_at: DateTime<Utc>,
    /// Per-account data (account id, id token, resource URL, ...), carried through refreshes and
    /// persisted.
    #[serde(default)]
    pub metadata: CredentialMetadata,
}

impl Credential {
    /// A credential with an access token and nothing else, created at `created_at`.
    ///
    /// # Errors
    /// [`CredentialError`] for an invalid id or an empty access token.
    pub fn new(
        id: impl AsRef<str>,
        access_token: impl Into<String>,
        created_at: DateTime<Utc>,
    ) -> Result<Self, CredentialError> {
        let id = CredentialId::new(id)?;
        let access_token: String = access_token.into();
        if access_token.is_empty() {
            return Err(CredentialError::EmptyAccessToken { id: id.to_string() });
        }
        Ok(Self {
            id,
            client_id: String::new(),
            client_secret: None,
            access_token: SecretString::from(access_token),
            refresh_token: None,
            expires_at: None,
            refresh_token_expires_at: None,
            scopes: Vec::new(),
            last_refresh: None,
            refresh_count: 0,
            created_at,
            metadata: CredentialMetadata::default(),
        })
    }

    /// Sets the refresh token.
    #[must_use]
    pub fn with_refresh_token(mut self, token: impl Into<String>) -> Self {
        self.refresh_token = Some(SecretString::from(token.into()));
        self
    }

    /// Sets the OAuth client id and, for confidential clients, its secret.
    #[must_use]
    pub fn with_client(mut self, client_id: impl Into<String>, secret: Option<String>) -> Self {
        self.client_id = client_id.into();
        self.client_secret = secret.map(SecretString::from);
        self
    }

    /// Sets the access token's expiry.
    #[must_use]
    pub fn with_expires_at(mut self, expires_at: DateTime<Utc>) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Sets the granted scopes.
    #[must_use]
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Go `IsExpired`: true when the token expires within [`REFRESH_BUFFER`] (strictly after
    /// `expires_at - 5 min`). No expiry means never expired.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_within(REFRESH_BUFFER, now)
    }

    /// Go `NeedsRefresh`: the same rule as [`is_expired`](Self::is_expired); kept as its own name
    /// because callers ask the two questions for different reasons.
    pub fn needs_refresh(&self, now: DateTime<Utc>) -> bool {
        self.expires_within(REFRESH_BUFFER, now)
    }

    /// True when the access token expires within `buffer` of `now` (strict, as in Go). `false`
    /// without an expiry. Saturating: when `expires_at − buffer` is before the earliest
    /// representable time, the token is within the buffer (no panic near `DateTime::MIN_UTC` or
    /// for `Duration::MAX`).
    pub fn expires_within(&self, buffer: Duration, now: DateTime<Utc>) -> bool {
        match self.expires_at {
            None => false,
            Some(at) => at
                .checked_sub_signed(delta(buffer))
                .is_none_or(|start| now > start),
        }
    }

    /// True while the access token itself still works (no buffer): `now < expires_at`.
    pub fn access_token_valid(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }

    /// Time left until the access token expires (`None` without an expiry; zero once expired).
    pub fn time_to_expiry(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.expires_at
            .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO))
    }

    /// Applies what a refresh returned (RFC 6749 section 6), the one place this bookkeeping is done:
    /// the new access token and its expiry; the rotated refresh token, or the old one kept when
    /// none was sent (its expiry too); the scopes when the server named them; the id token and
    /// other account fields into [`metadata`](Self::metadata); `last_refresh = now` and
    /// `refresh_count + 1` (saturating).
    ///
    /// ```
    /// use chrono::Utc;
    /// use oauth_core::{Credential, ExposeSecret, TokenSet};
    /// let now = Utc::now();
    /// let mut cred = Credential::new("c1", "old-access", now)?.with_refresh_token("kept");
    /// let applied = cred.apply_tokens(TokenSet::new("new-access"), now);
    /// assert!(!applied.refresh_token_rotated);
    /// assert_eq!(cred.refresh_token.as_ref().map(|t| t.expose_secret()), Some("kept"));
    /// assert_eq!(cred.refresh_count, 1);
    /// assert_eq!(cred.last_refresh, Some(now));
    /// # Ok::<(), oauth_core::CredentialError>(())
    /// ```
    pub fn apply_tokens(&mut self, tokens: TokenSet, now: DateTime<Utc>) -> TokensApplied {
        let TokenSet {
            access_token,
            refresh_token,
            expires_at,
            refresh_token_expires_at,
            scopes,
            id_token,
            extra,
            quirks: _,
        } = tokens;
        let refresh_token_rotated = match refresh_token {
            Some(new) => {
                let rotated = self
                    .refresh_token
                    .as_ref()
                    .is_none_or(|old| old.expose_secret() != new.expose_secret());
                if rotated {
                    // A new refresh token's lifetime is what the server said of it, or unknown.
                    self.refresh_token_expires_at = refresh_token_expires_at;
                } else if refresh_token_expires_at.is_some() {
                    self.refresh_token_expires_at = refresh_token_expires_at;
                }
                self.refresh_token = Some(new);
                rotated
            }
            None => {
                if refresh_token_expires_at.is_some() {
                    self.refresh_token_expires_at = refresh_token_expires_at;
                }
                false
            }
        };
        self.access_token = access_token;
        self.expires_at = expires_at;
        if let Some(scopes) = scopes {
            self.scopes = scopes;
        }
        if let Some(id_token) = id_token {
            self.metadata.id_token = Some(id_token);
        }
        self.metadata.absorb(extra);
        self.last_refresh = Some(now);
        self.refresh_count = self.refresh_count.saturating_add(1);
        TokensApplied {
            refresh_token_rotated,
        }
    }

    /// True when `other` holds a different refresh token than `self` (one side having none and
    /// the other one counts as different).
    pub fn refresh_token_differs(&self, other: &Self) -> bool {
        self.refresh_token.as_ref().map(ExposeSecret::expose_secret)
            != other
                .refresh_token
                .as_ref()
                .map(ExposeSecret::expose_secret)
    }

    /// A view that serializes every field, secrets included, in clear text. Only stores call this.
    pub fn persisted(&self) -> PersistedCredential<'_> {
        PersistedCredential(self)
    }
}

/// Converts a std duration to a chrono delta, saturating at chrono's range.
pub fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// `t + d`, saturating at the latest representable time instead of overflowing (a nonsense
/// duration must not panic a library path).
pub fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(delta(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("expires_at", &self.expires_at)
            .field("refresh_token_expires_at", &self.refresh_token_expires_at)
            .field("scopes", &self.scopes)
            .field("last_refresh", &self.last_refresh)
            .field("refresh_count", &self.refresh_count)
            .field("created_at", &self.created_at)
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// The deliberate, clear-text serialization of a [`Credential`], for stores. Its own `Debug` stays
/// redacted.
#[derive(Debug, Clone, Copy)]
pub struct PersistedCredential<'a>(&'a Credential);

impl Serialize for PersistedCredential<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            id: &'a CredentialId,
            client_id: &'a str,
            client_secret: Option<&'a str>,
            access_token: &'a str,
            refresh_token: Option<&'a str>,
            expires_at: Option<DateTime<Utc>>,
            refresh_token_expires_at: Option<DateTime<Utc>>,
            scopes: &'a [String],
            last_refresh: Option<DateTime<Utc>>,
            refresh_count: u64,
            created_at: DateTime<Utc>,
            #[serde(skip_serializing_if = "no_metadata", serialize_with = "metadata")]
            metadata: &'a CredentialMetadata,
        }
        #[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature
        fn no_metadata(m: &&CredentialMetadata) -> bool {
            m.is_empty()
        }
        fn metadata<S: serde::Serializer>(
            m: &&CredentialMetadata,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            PersistedMetadata::from(*m).serialize(serializer)
        }
        let c = self.0;
        Wire {
            id: &c.id,
            client_id: &c.client_id,
            client_secret: c.client_secret.as_ref().map(ExposeSecret::expose_secret),
            access_token: c.access_token.expose_secret(),
            refresh_token: c.refresh_token.as_ref().map(ExposeSecret::expose_secret),
            expires_at: c.expires_at,
            refresh_token_expires_at: c.refresh_token_expires_at,
            scopes: &c.scopes,
            last_refresh: c.last_refresh,
            refresh_count: c.refresh_count,
            created_at: c.created_at,
            metadata: &c.metadata,
        }
        .serialize(serializer)
    }
}

impl Credential {
    /// True when both hold the same access and refresh tokens (compares secrets without exposing them
    /// to the caller).
    pub fn same_tokens(&self, other: &Self) -> bool {
        self.access_token.expose_secret() == other.access_token.expose_secret()
            && self.refresh_token.as_ref().map(ExposeSecret::expose_secret)
                == other
                    .refresh_token
                    .as_ref()
                    .map(ExposeSecret::expose_secret)
    }
}

/// Token usage reported by one AI request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens in the completion.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Total as the provider reported it (some fill only this).
    #[serde(default)]
    pub total_tokens: u64,
}

impl Usage {
    /// The token count to account: the provider's total when it sent one, otherwise prompt +
    /// completion. (The Go package used prompt + completion only, so total-only providers counted 0.)
    pub fn tokens(&self) -> u64 {
        if self.total_tokens > 0 {
            self.total_tokens
        } else {
            self.prompt_tokens.saturating_add(self.completion_tokens)
        }
    }
}
