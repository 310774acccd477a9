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
///
/// # Sharing a source with another program
/// When something else refreshes the same credentials (a CLI sharing its credential file, another
/// process), a provider is not enough to keep the grant alive: the pool must re-read the source
/// *inside* its refresh, and write back only if nobody else wrote meanwhile. Use a
/// [`CredentialStore`](oauth_store::CredentialStore) for such sources (the account-file stores of
/// `oauth-accounts` are): the pool takes the store's refresh lock, re-reads, adopts a refresh token
/// the other program rotated instead of presenting the spent one, and writes back with
/// compare-and-set.
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

#[async_trait]
impl<P: CredentialProvider + ?Sized> CredentialProvider for std::sync::Arc<P> {
    async fn credentials(&self, provider: &str) -> Result<Vec<Credential>, ProviderError> {
        (**self).credentials(provider).await
    }

    async fn update_credential(
        &self,
        provider: &str,
        credential: &Credential,
    ) -> Result<(), ProviderError> {
        (**self).update_credential(provider, credential).await
    }
}

/// The provider used when none is set: it has no credentials and accepts every update.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoProvider;

#[async_trait]
impl CredentialProvider for NoProvider {
    async fn credentials(&self, _provider: &str) -> Result<Vec<Credential>, ProviderError> {
        Ok(Vec::new())
    }

    async fn update_credential(
        &self,
        _provider: &str,
        _credential: &Credential,
    ) -> Result<(), ProviderError> {
        Ok(())
    }
}
