//! The reqwest-middleware adapter.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use http::Extensions;
use oauth_core::Usage;
use oauth_manager::OAuthKeyManager;
use oauth_providers::{Classification, Provider};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::credential::{ProviderRequests, authorize};
use crate::pool::{Ended, Failure, PoolClient, ServedBy, ended, is_event_stream};

type Attempt = Failure<Response, reqwest_middleware::Error>;

/// A [`reqwest_middleware::Middleware`] that sends each request with a credential of the pool,
/// through [`OAuthKeyManager::execute_with_failover`]:
///
/// 1. takes an available credential (refreshed first when due);
/// 2. sets `Authorization: Bearer <access token>` and the provider's per-account headers
///    ([`ProviderRequests`]);
/// 3. sends the request down the middleware chain;
/// 4. classifies the answer with the provider's classifier: a success records the usage its
///    body reports; a rate limit cools the credential down for exactly the wait the provider
///    named; a 401 refreshes the token and retries once on the same credential; a provider
///    overload fails over without penalizing; a permanent failure takes the credential out; a
///    request-scoped failure returns at once;
/// 5. fails over to another credential with a copy of the request, when the request can be
///    copied (`Request::try_clone`: a streaming body cannot, and is sent once).
///
/// A streamed answer (`text/event-stream`) is classified on its status and headers and returned
/// as soon as they arrive; its body is passed through while its usage and error events are read
/// ([`StreamUsage`](crate::StreamUsage) in the answer's extensions); it is never retried.
///
/// When the call ends on a provider's failure answer (request-scoped, or every attempt failed),
/// that answer is returned as `Ok`, as reqwest returns any status. Every returned answer carries
/// [`ServedBy`] in its extensions. When no answer was obtained (no credential available, the
/// deadline, a failed refresh) the error is [`OAuthHttpError`](crate::OAuthHttpError) inside
/// `reqwest_middleware::Error::Middleware`.
#[derive(Debug, Clone)]
pub struct OAuthMiddleware {
    pool: PoolClient,
}

impl OAuthMiddleware {
    /// A middleware over `manager` for `provider`.
    pub fn new(manager: OAuthKeyManager, provider: Provider) -> Self {
        Self {
            pool: PoolClient::new(manager, provider),
        }
    }

    /// A middleware over a configured [`PoolClient`] (custom classifier, clock or headers).
    pub const fn from_pool(pool: PoolClient) -> Self {
        Self { pool }
    }

    /// Dresses requests as `requests` says.
    #[must_use]
    pub fn with_requests(mut self, requests: ProviderRequests) -> Self {
        self.pool = self.pool.with_requests(requests);
        self
    }

    /// Reads wall time for classification from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn oauth_core::Clock>) -> Self {
        self.pool = self.pool.with_clock(clock);
        self
    }

    /// The adapter's core.
    pub const fn pool(&self) -> &PoolClient {
        &self.pool
    }

    async fn attempt(
        &self,
        request: Option<Request>,
        credential: &oauth_core::Credential,
        next: Next<'_>,
        mut extensions: Extensions,
        replayable: bool,
        stash: &Mutex<Option<(Response, oauth_core::CredentialId, Classification)>>,
    ) -> Result<(Response, Option<Usage>), Attempt> {
        let Some(mut request) = request else {
            return Err(Failure::NotReplayable);
        };
        let mut url = request.url().clone();
        authorize(
            request.headers_mut(),
            Some(&mut url),
            credential,
            self.pool.requests,
        )
        .map_err(Failure::Credential)?;
        *request.url_mut() = url;
        let response = next
            .run(request, &mut extensions)
            .await
            .map_err(Failure::Transport)?;
        let status = response.status();
        if status.is_success() && is_event_stream(response.headers()) {
            let url = response.url().clone();
            let http: http::Response<reqwest::Body> = response.into();
            let (parts, body) = http.into_parts();
            let (watched, report) = self.pool.watch(body, credential.id.clone());
            let mut rebuilt = rebuild(parts, url, reqwest::Body::wrap(watched));
            rebuilt.extensions_mut().insert(report);
            return Ok((rebuilt, None));
        }
        let url = response.url().clone();
        let http: http::Response<reqwest::Body> = response.into();
        let (parts, body) = http.into_parts();
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .map_err(|e| Failure::Transport(reqwest_middleware::Error::Reqwest(e)))?
            .to_bytes();
        let classification = self.pool.classify(status, &parts.headers, &bytes);
        let usage = classification
            .is_none()
            .then(|| self.pool.classifier.usage(&bytes))
            .flatten();
        let rebuilt = rebuild(parts, url, reqwest::Body::from(bytes));
        match classification {
            None => Ok((rebuilt, usage)),
            Some(classification) => {
                let answer = if replayable {
                    Some(rebuilt)
                } else {
                    *stash.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((rebuilt, credential.id.clone(), classification.clone()));
                    None
                };
                Err(Failure::Answer {
                    classification,
                    answer,
                })
            }
        }
    }
}

/// A reqwest answer from parts, keeping the URL (reqwest's conversion to `http::Response`
/// drops it; its `ResponseBuilderExt` puts it back as an extension).
fn rebuild(mut parts: http::response::Parts, url: reqwest::Url, body: reqwest::Body) -> Response {
    use reqwest::ResponseBuilderExt;
    if let Ok(carrier) = http::response::Builder::new().url(url).body(()) {
        parts.extensions.extend(carrier.into_parts().0.extensions);
    }
    http::Response::from_parts(parts, body).into()
}

#[async_trait::async_trait]
impl Middleware for OAuthMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let replayable = request.try_clone().is_some();
        let once = Mutex::new(Some(request));
        let stash = Mutex::new(None);
        let template = &once;
        let calls = AtomicU32::new(0);
        let result = self
            .pool
            .manager
            .execute_with_failover(|credential| {
                calls.fetch_add(1, Ordering::Relaxed);
                let request = if replayable {
                    template
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .as_ref()
                        .and_then(Request::try_clone)
                } else {
                    template
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take()
                };
                let next = next.clone();
                let extensions = extensions.clone();
                let stash = &stash;
                async move {
                    self.attempt(request, &credential, next, extensions, replayable, stash)
                        .await
                }
            })
            .await;
        match result {
            Ok(served) => {
                let mut response = served.value;
                response.extensions_mut().insert(ServedBy {
                    credential: served.credential,
                    attempts: served.attempts,
                    failure: None,
                });
                Ok(response)
            }
            Err(error) => {
                let stash = stash.into_inner().unwrap_or_else(PoisonError::into_inner);
                match ended(error, stash, calls.load(Ordering::Relaxed)) {
                    Ended::Answer(mut response, served_by) => {
                        response.extensions_mut().insert(served_by);
                        Ok(response)
                    }
                    Ended::Transport(e) => Err(e),
                    Ended::Error(e) => Err(reqwest_middleware::Error::middleware(e)),
                }
            }
        }
    }
}
