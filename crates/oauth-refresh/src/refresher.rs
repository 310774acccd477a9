//! The `Refresher` trait, the no-op refresher and the closure adapter.

use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use oauth_core::Credential;

use crate::error::RefreshError;

/// Exchanges a credential's refresh token for new tokens.
///
/// Implementations return the refreshed credential: the same id; the new access token and its
/// expiry; the new refresh token when the server rotated it, otherwise the old one kept (RFC 6749
/// section 6); `last_refresh` set to now and `refresh_count` incremented. Failures are
/// [`RefreshError`]s whose [`kind`](RefreshError::kind) says what they mean.
///
/// Callers never run two refreshes of one credential at once: the
/// [`RefreshCoordinator`](crate::RefreshCoordinator) sees to that, so an implementation needs no
/// locking of its own.
#[async_trait]
pub trait Refresher: Send + Sync + fmt::Debug {
    /// Exchanges `credential`'s refresh token and returns the refreshed credential.
    async fn refresh(&self, credential: &Credential) -> Result<Credential, RefreshError>;

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
    async fn refresh(&self, credential: &Credential) -> Result<Credential, RefreshError> {
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
/// The closure receives a copy of the credential and returns the refreshed one.
///
/// ```
/// use oauth_refresh::{FnRefresher, RefreshError, Refresher};
/// # use oauth_core::Credential;
/// let refresher = FnRefresher::new(|mut cred: Credential| async move {
///     // call your provider here
///     cred.refresh_count += 1;
///     Ok::<_, RefreshError>(cred)
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
    Fut: Future<Output = Result<Credential, RefreshError>> + Send,
{
    async fn refresh(&self, credential: &Credential) -> Result<Credential, RefreshError> {
        (self.f)(credential.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use oauth_core::FailureKind;

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
        let r = FnRefresher::new(|mut c: Credential| async move {
            c.refresh_count += 1;
            Ok(c)
        });
        let cred = Credential::new("c1", "at", Utc::now()).expect("valid credential");
        let out = r.refresh(&cred).await.expect("refreshes");
        assert_eq!(out.refresh_count, 1);
        assert_eq!(format!("{r:?}"), "FnRefresher { .. }");
    }
}
