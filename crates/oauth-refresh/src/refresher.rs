//! The `Refresher` trait, the no-op refresher and the closure adapter.

use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use oauth_core::{Credential, TokenSet};

use crate::error::RefreshError;

/// Exchanges a credential's refresh token for new tokens.
///
/// An implementation returns what the token endpoint sent, as a [`TokenSet`]: the new access
/// token, the rotated refresh token if the server sent one, the expiry as an absolute time, and
/// whatever else it said. It does **no** bookkeeping on the credential: the caller applies the
/// set with [`Credential::apply_tokens`], the one place where RFC 6749 section 6 is done (a
/// missing refresh token keeps the old one; `last_refresh` and `refresh_count` are bumped there).
/// Failures are [`RefreshError`]s whose [`kind`](RefreshError::kind) says what they mean; a
/// refresher with its own error type wraps it with [`RefreshError::custom`].
///
/// Callers never run two refreshes of one credential at once: the
/// [`RefreshCoordinator`](crate::RefreshCoordinator) sees to that, so an implementation needs no
/// locking of its own.
///
/// A refresher whose provider sends only a new access token:
///
/// ```
/// use async_trait::async_trait;
/// use chrono::{TimeDelta, Utc};
/// use oauth_core::{Credential, ExposeSecret, FailureKind, TokenSet};
/// use oauth_refresh::{RefreshError, Refresher};
///
/// #[derive(Debug)]
/// struct AccessOnly;
///
/// #[async_trait]
/// impl Refresher for AccessOnly {
///     async fn refresh(&self, credential: &Credential) -> Result<TokenSet, RefreshError> {
///         if credential.refresh_token.is_none() {
///             return Err(RefreshError::NoRefreshToken { id: credential.id.clone() });
///         }
///         // ... call the provider with the refresh token ...
///         Ok(TokenSet::new("new-access").with_expires_at(Utc::now() + TimeDelta::hours(1)))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let now = Utc::now();
/// let mut cred = Credential::new("team", "old-access", now)?.with_refresh_token("long-lived");
/// let tokens = AccessOnly.refresh(&cred).await?;
/// let applied = cred.apply_tokens(tokens, now);
/// assert_eq!(cred.access_token.expose_secret(), "new-access");
/// // No refresh token in the response: the old one is kept (RFC 6749 section 6) ...
/// assert!(!applied.refresh_token_rotated);
/// assert_eq!(cred.refresh_token.as_ref().map(|t| t.expose_secret()), Some("long-lived"));
/// // ... and the bookkeeping is done by `apply_tokens`, not by the refresher.
/// assert_eq!(cred.refresh_count, 1);
/// assert_eq!(cred.last_refresh, Some(now));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Refresher: Send + Sync + fmt::Debug {
    /// Exchanges `credential`'s refresh token and returns the tokens the server issued.
    async fn refresh(&self, credential: &Credential) -> Result<TokenSet, RefreshError>;

    /// `false` for the no-op refresher ("refresh not configured"): the manager then keeps a
    /// credential usable until its access token really expires instead of trying to refresh it.
    fn is_configured(&self) -> bool {
        true
    }
}

/// The refresher used when none is configured (the Go `NoOpRefreshFunc`): every refresh fails with
/// [`RefreshError::NotConfigured`], and [`is_configured`](Refresher::is_configured) is `false`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopRefresher;

#[async_trait]
impl Refresher for NoopRefresher {
    async fn refresh(&self, credential: &Credential) -> Result<TokenSet, RefreshError> {
        Err(RefreshError::NotConfigured {
            id: credential.id.clone(),
        })
    }

    fn is_configured(&self) -> bool {
        false
    }
}

/// Adapts an async closure into a [`Refresher`] (the Go `RefreshFunc`).
///
/// The closure receives a copy of the credential and returns the [`TokenSet`] the provider issued.
///
/// ```
/// use oauth_core::{Credential, TokenSet};
/// use oauth_refresh::{FnRefresher, RefreshError, Refresher};
/// let refresher = FnRefresher::new(|cred: Credential| async move {
///     // call your provider here with `cred.refresh_token`
///     Ok::<_, RefreshError>(TokenSet::new("new-access").with_refresh_token("rotated"))
/// });
/// assert!(refresher.is_configured());
/// ```
pub struct FnRefresher<F> {
    f: F,
}

impl<F> FnRefresher<F> {
    /// Wraps `f`.
    pub const fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> fmt::Debug for FnRefresher<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnRefresher").finish_non_exhaustive()
    }
}

#[async_trait]
impl<F, Fut> Refresher for FnRefresher<F>
where
    F: Fn(Credential) -> Fut + Send + Sync,
    Fut: Future<Output = Result<TokenSet, RefreshError>> + Send,
{
    async fn refresh(&self, credential: &Credential) -> Result<TokenSet, RefreshError> {
        (self.f)(credential.clone()).await
    }
}

/// A shared refresher is a refresher (so `Arc<MyRefresher>` plugs in wherever one is taken).
#[async_trait]
impl<R: Refresher + ?Sized> Refresher for std::sync::Arc<R> {
    async fn refresh(&self, credential: &Credential) -> Result<TokenSet, RefreshError> {
        (**self).refresh(credential).await
    }

    fn is_configured(&self) -> bool {
        (**self).is_configured()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use oauth_core::{ExposeSecret, FailureKind};

    use super::*;

    #[tokio::test]
    async fn noop_refuses_and_says_not_configured() {
        let cred = Credential::new("c1", "at-secret", Utc::now()).expect("valid credential");
        let err = NoopRefresher
            .refresh(&cred)
            .await
            .expect_err("noop never refreshes");
        assert!(matches!(err, RefreshError::NotConfigured { .. }));
        assert_eq!(err.kind(), FailureKind::Misconfigured);
        assert!(err.to_string().contains("c1"));
        assert!(!NoopRefresher.is_configured());
    }

    #[tokio::test]
    async fn closure_refresher_is_called_with_the_credential() {
        let r =
            FnRefresher::new(
                |c: Credential| async move { Ok(TokenSet::new(format!("for-{}", c.id))) },
            );
        let cred = Credential::new("c1", "at", Utc::now()).expect("valid credential");
        let out = r.refresh(&cred).await.expect("refreshes");
        assert_eq!(out.access_token.expose_secret(), "for-c1");
        assert_eq!(format!("{r:?}"), "FnRefresher { .. }");
    }
}
