//! Shared helpers.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use oauth_core::Credential;
use oauth_refresh::{HttpRefresher, RefreshError, Refresher, TokenEndpoint};
use oauth_testkit::token_server::{Fault, FaultTarget, IssuedGrant, RAW_BODY_MARKER, TokenServer};

/// A credential seeded from a grant, expiring in one minute (so it needs a refresh).
pub(crate) fn seeded(id: &str, grant: &IssuedGrant) -> Credential {
    let now = Utc::now();
    Credential::new(id, grant.access_token.clone(), now)
        .expect("valid credential")
        .with_client(grant.client_id.clone(), None)
        .with_refresh_token(grant.refresh_token.clone())
        .with_expires_at(now + TimeDelta::minutes(1))
}

/// A form/body refresher for the fake server.
pub(crate) fn refresher(server: &TokenServer) -> HttpRefresher {
    HttpRefresher::builder(TokenEndpoint::new(server.url()))
        .request_timeout(Duration::from_secs(5))
        .build()
        .expect("refresher builds")
}

/// Asserts that neither Display nor Debug of `err` contains any of `secrets` or the raw-body
/// marker the fake server puts in every body.
pub(crate) fn assert_no_secrets(err: &RefreshError, secrets: &[&str]) {
    let shown = format!("{err} / {err:?}");
    for s in secrets.iter().copied().chain([RAW_BODY_MARKER]) {
        assert!(!s.is_empty());
        assert!(!shown.contains(s), "error output leaks {s:?}: {shown}");
    }
}

/// A token server, one grant on it, a credential holding that grant, and a refresher for the
/// server: the setup of every error-mapping test.
pub(crate) struct Fixture {
    pub(crate) server: TokenServer,
    pub(crate) grant: IssuedGrant,
    pub(crate) cred: Credential,
    pub(crate) refresher: HttpRefresher,
}

impl Fixture {
    pub(crate) async fn start() -> Self {
        let server = TokenServer::start().await.expect("server starts");
        let grant = server.issue_grant("c");
        let cred = seeded("a", &grant);
        let refresher = refresher(&server);
        Self {
            server,
            grant,
            cred,
            refresher,
        }
    }

    /// Scripts `fault` for the next request, refreshes, and returns the error, having checked
    /// that it shows neither the refresh token nor the raw body.
    pub(crate) async fn fail_once(&self, fault: Fault) -> RefreshError {
        self.server.inject_times(FaultTarget::Any, fault, 1);
        let err = self
            .refresher
            .refresh(&self.cred)
            .await
            .expect_err("the scripted fault fails the refresh");
        assert_no_secrets(&err, &[&self.grant.refresh_token]);
        err
    }
}

/// Refreshes and applies the returned tokens to a copy of the credential (what a caller of a
/// [`Refresher`] does), so tests can look at the refreshed credential.
pub(crate) trait RefreshApplied {
    /// Refreshes `cred` and applies the tokens at the current time.
    async fn refreshed(&self, cred: &Credential) -> Result<Credential, RefreshError> {
        self.refreshed_at(cred, Utc::now()).await
    }

    /// Refreshes `cred` and applies the tokens at `now`.
    async fn refreshed_at(
        &self,
        cred: &Credential,
        now: DateTime<Utc>,
    ) -> Result<Credential, RefreshError>;
}

impl<R: Refresher + ?Sized> RefreshApplied for R {
    async fn refreshed_at(
        &self,
        cred: &Credential,
        now: DateTime<Utc>,
    ) -> Result<Credential, RefreshError> {
        let tokens = self.refresh(cred).await?;
        let mut out = cred.clone();
        out.apply_tokens(tokens, now);
        Ok(out)
    }
}
