//! The keeper's errors. None holds a token, a code or a client secret.

use std::net::SocketAddr;

use crate::config::ConfigError;
use crate::providers::ProviderKind;

/// What went wrong in the keeper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeeperError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The account directory failed.
    #[error("the account directory failed: {0}")]
    Store(#[source] oauth_manager::store::StoreError),
    /// A provider's refresher could not be built (a preset missing its client).
    #[error("{provider}: the refresher cannot be built: {reason}")]
    Refresher {
        /// The provider.
        provider: ProviderKind,
        /// Why.
        reason: String,
    },
    /// A provider's pool could not be built.
    #[error("{provider}: the pool cannot be built: {source}")]
    Pool {
        /// The provider.
        provider: ProviderKind,
        /// Why.
        #[source]
        source: oauth_manager::BuildError,
    },
    /// No account of that provider has that id.
    #[error("no {provider} account is named {id:?}")]
    UnknownAccount {
        /// The provider.
        provider: ProviderKind,
        /// The id asked for.
        id: String,
    },
    /// No provider has that name (the name is not repeated: it came from a request).
    #[error("unknown provider (known: gemini, claude, codex, qwen)")]
    UnknownProvider,
    /// An account id that cannot be a file name.
    #[error("an account id is 1 to 100 letters, digits, '.', '_' or '-', not starting with '.'")]
    InvalidAccountId,
    /// A forced refresh failed.
    #[error(
        "{provider}: refreshing {id} failed (dead grant: {dead_grant}, misconfigured: {misconfigured}, retryable: {retryable})"
    )]
    Refresh {
        /// The provider.
        provider: ProviderKind,
        /// The account.
        id: String,
        /// The grant is dead: sign in again.
        dead_grant: bool,
        /// The client configuration is wrong.
        misconfigured: bool,
        /// Trying again later may work.
        retryable: bool,
    },
    /// Too many sign-ins are waiting.
    #[error("too many sign-ins are waiting for the user")]
    TooManySignins,
    /// A sign-in could not start.
    #[error("{provider}: the sign-in cannot start: {source}")]
    Signin {
        /// The provider.
        provider: ProviderKind,
        /// Why.
        #[source]
        source: oauth_signin::SigninError,
    },
    /// A signed-in account could not be added or re-authorized.
    #[error("{provider}: the signed-in account cannot be installed: {reason}")]
    Install {
        /// The provider.
        provider: ProviderKind,
        /// Why.
        reason: String,
    },
    /// The OS random source failed.
    #[error("the system random source failed")]
    Random,
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
