//! The tower adapter: a [`Layer`] whose [`Service`] sends each `http::Request` with a credential
//! of the pool, over any inner HTTP service.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use oauth_core::{Credential, CredentialId, Usage};
use oauth_manager::OAuthKeyManager;
use oauth_providers::{Classification, Provider};
use tower::{BoxError, Layer, Service};

use crate::credential::authorize;
use crate::error::OAuthHttpError;
use crate::pool::{Ended, Failure, PoolClient, ServedBy, WatchedBody, ended, is_event_stream};

/// A request body that can be copied for another attempt, or says it cannot.
///
/// In-memory bodies replay; wrap a body that must be sent once (a stream) in [`OnceBody`].
pub trait ReplayBody: Sized {
    /// A copy for another attempt, or `None` when the body can be sent only once.
    fn try_clone(&self) -> Option<Self>;
}

macro_rules! replay_by_clone {
    ($($t:ty),*) => {$(
        impl ReplayBody for $t {
            fn try_clone(&self) -> Option<Self> {
                Some(self.clone())
            }
        }
    )*};
}
replay_by_clone!(
    String,
    Vec<u8>,
    Bytes,
    &'static str,
    &'static [u8],
    (),
    Full<Bytes>,
    Empty<Bytes>
);

/// A reqwest body replays when it is one buffer (not a stream).
impl ReplayBody for reqwest::Body {
    fn try_clone(&self) -> Option<Self> {
        self.as_bytes()
            .map(|b| reqwest::Body::from(Bytes::copy_from_slice(b)))
    }
}

/// A body sent at most once: a request carrying it gets one attempt, no failover.
#[derive(Debug)]
pub struct OnceBody<B>(pub B);

impl<B> ReplayBody for OnceBody<B> {
    fn try_clone(&self) -> Option<Self> {
        None
    }
}

impl<B: Into<reqwest::Body>> From<OnceBody<B>> for reqwest::Body {
    fn from(b: OnceBody<B>) -> Self {
        b.0.into()
    }
}

/// The body of an answer from [`OAuthService`]: read whole (a failure, or a JSON success whose
/// usage was recorded), or a watched stream.
#[derive(Debug)]
pub enum ResponseBody<B> {
    /// Read whole by the adapter.
    Whole(Full<Bytes>),
    /// A streamed answer, passed through.
    Stream(Box<WatchedBody<B>>),
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Whole(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e: Infallible| match e {}),
            Self::Stream(b) => Pin::new(&mut **b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Whole(b) => b.is_end_stream(),
            Self::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Whole(b) => b.size_hint(),
            Self::Stream(b) => b.size_hint(),
        }
    }
}

/// The [`Layer`] of [`OAuthService`].
#[derive(Debug, Clone)]
pub struct OAuthLayer {
    pool: PoolClient,
}

impl OAuthLayer {
    /// A layer over `manager` for `provider`.
    pub fn new(manager: OAuthKeyManager, provider: Provider) -> Self {
        Self {
            pool: PoolClient::new(manager, provider),
        }
    }

    /// A layer over a configured [`PoolClient`].
    pub const fn from_pool(pool: PoolClient) -> Self {
        Self { pool }
    }
}

impl<S> Layer<S> for OAuthLayer {
    type Service = OAuthService<S>;

    fn layer(&self, inner: S) -> OAuthService<S> {
        OAuthService {
            inner,
            pool: self.pool.clone(),
        }
    }
}

/// A [`Service`] that does for `http::Request`s what
/// [`OAuthMiddleware`](crate::OAuthMiddleware) does for reqwest's: picks a credential through
/// `execute_with_failover`, authorizes the request, calls the inner service, classifies the
/// answer, records usage and fails over with a copy of the request ([`ReplayBody`]).
///
/// Answers are `http::Response<ResponseBody<_>>` carrying [`ServedBy`] (and, for a stream,
/// [`StreamUsage`](crate::StreamUsage)) in their extensions; the error is a [`BoxError`]: the
/// inner service's error, or an [`OAuthHttpError`].
///
/// The request's URI must be absolute for a provider that rebases it on the account's resource
/// URL (Qwen); a relative one is sent as is.
#[derive(Clone)]
pub struct OAuthService<S> {
    inner: S,
    pool: PoolClient,
}

impl<S> fmt::Debug for OAuthService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthService")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

type Answer<RB> = http::Response<ResponseBody<RB>>;
type Attempt<RB> = Failure<Answer<RB>, BoxError>;
type Stash<RB> = Mutex<Option<(Answer<RB>, CredentialId, Classification)>>;

impl<S, B, RB> Service<http::Request<B>> for OAuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: ReplayBody + Send + 'static,
    RB: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Answer<RB>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Answer<RB>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let pool = self.pool.clone();
        Box::pin(async move { run(pool, inner, request).await })
    }
}

async fn run<S, B, RB>(
    pool: PoolClient,
    inner: S,
    request: http::Request<B>,
) -> Result<Answer<RB>, BoxError>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: ReplayBody + Send + 'static,
    RB: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    RB::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let replayable = body.try_clone().is_some();
    let template = Mutex::new(Some(body));
    let stash: Stash<RB> = Mutex::new(None);
    let calls = AtomicU32::new(0);
    let result = pool
        .manager
        .execute_with_failover(|credential| {
            calls.fetch_add(1, Ordering::Relaxed);
            let body = {
                let mut guard = template.lock().unwrap_or_else(PoisonError::into_inner);
                if replayable {
                    guard.as_ref().and_then(ReplayBody::try_clone)
                } else {
                    guard.take()
                }
            };
            let request = body.map(|b| http::Request::from_parts(parts.clone(), b));
            let svc = inner.clone();
            let (pool, stash) = (&pool, &stash);
            async move { attempt(pool, svc, request, &credential, replayable, stash).await }
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
                Ended::Error(e) => Err(Box::new(e)),
            }
        }
    }
}

async fn attempt<S, B, RB>(
    pool: &PoolClient,
    mut svc: S,
    request: Option<http::Request<B>>,
    credential: &Credential,
    replayable: bool,
    stash: &Stash<RB>,
) -> Result<(Answer<RB>, Option<Usage>), Attempt<RB>>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: Into<BoxError>,
{
    let Some(mut request) = request else {
        return Err(Failure::NotReplayable);
    };
    let mut url = reqwest::Url::parse(&request.uri().to_string()).ok();
    authorize(
        request.headers_mut(),
        url.as_mut(),
        credential,
        pool.requests,
    )
    .map_err(Failure::Credential)?;
    if let Some(url) = url {
        *request.uri_mut() = url.as_str().parse().map_err(|_| {
            Failure::Credential(OAuthHttpError::InvalidRequest("the rebased URI is invalid"))
        })?;
    }
    poll_fn(|cx| svc.poll_ready(cx))
        .await
        .map_err(|e| Failure::Transport(e.into()))?;
    let response = svc
        .call(request)
        .await
        .map_err(|e| Failure::Transport(e.into()))?;
    let (parts, body) = response.into_parts();
    if parts.status.is_success() && is_event_stream(&parts.headers) {
        let (watched, report) = pool.watch(body, credential.id.clone());
        let mut response =
            http::Response::from_parts(parts, ResponseBody::Stream(Box::new(watched)));
        response.extensions_mut().insert(report);
        return Ok((response, None));
    }
    let bytes = body
        .collect()
        .await
        .map_err(|e| Failure::Transport(e.into()))?
        .to_bytes();
    let classification = pool.classify(parts.status, &parts.headers, &bytes);
    let usage = classification
        .is_none()
        .then(|| pool.classifier.usage(&bytes))
        .flatten();
    let response = http::Response::from_parts(parts, ResponseBody::Whole(Full::new(bytes)));
    match classification {
        None => Ok((response, usage)),
        Some(classification) => {
            let answer = if replayable {
                Some(response)
            } else {
                *stash.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((response, credential.id.clone(), classification.clone()));
                None
            };
            Err(Failure::Answer {
                classification,
                answer,
            })
        }
    }
}

/// A [`reqwest::Client`] as a tower [`Service`] of `http::Request`s, for [`OAuthLayer`] (reqwest's
/// own `Service` impl takes `reqwest::Request`s).
#[derive(Debug, Clone, Default)]
pub struct ReqwestService(pub reqwest::Client);

impl ReqwestService {
    /// Wraps `client`.
    pub const fn new(client: reqwest::Client) -> Self {
        Self(client)
    }
}

impl<B: Into<reqwest::Body>> Service<http::Request<B>> for ReqwestService {
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, reqwest::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), reqwest::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let client = self.0.clone();
        let request = reqwest::Request::try_from(request);
        Box::pin(async move { Ok(client.execute(request?).await?.into()) })
    }
}
