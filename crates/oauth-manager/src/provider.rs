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
