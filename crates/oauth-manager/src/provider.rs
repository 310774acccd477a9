//! Credentials that live outside the manager.

use async_trait::async_trait;
use oauth_core::Credential;

use crate::error::ProviderError;

/// A source of credentials the manager does not own (the Go `types.CredentialProvider`): a secrets
/// manager, a CLI's credential file, an application database.
///
/// The manager reads the provider's credentials when it is set and at every maintenance tick, and
/// calls [`update_credential`](Self::update_credential) after every refresh, before the refreshed
/// token is used (the Go package never called it, so refreshed tokens were lost and every request
/// refreshed again).
///
/// The provider has no versions, so a copy it returns for a credential the pool already holds
/// replaces the pool's only when it is newer: refreshed later (`last_refresh`) or more often
/// (`refresh_count`), or holding another grant while the pool's needs re-authorization. It never
/// replaces a refreshed credential the provider has not accepted yet (its `update_credential`
/// failed): that one holds the only valid refresh token, and maintenance retries writing it back.
/// Set `last_refresh` when you store re-authorized tokens, so the pool adopts them.
#[async_trait]
pub trait CredentialProvider: Send + Sync + std::fmt::Debug {
    /// All credentials of `provider`.
    async fn credentials(&self, provider: &str) -> Result<Vec<Credential>, ProviderError>;

    /// Stores a refreshed credential. A rotated refresh token exists only here until this returns.
    async fn update_credential(
        &self,
        provider: &str,
        credential: &Credential,
    ) -> Result<(), ProviderError>;
}
