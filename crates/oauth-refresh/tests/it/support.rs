//! Shared helpers.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use oauth_core::Credential;
use oauth_refresh::{HttpRefresher, RefreshError, TokenEndpoint};
use oauth_testkit::token_server::{IssuedGrant, RAW_BODY_MARKER, TokenServer};

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
