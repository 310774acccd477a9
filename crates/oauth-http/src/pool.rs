//! What both adapters share: the pool and classifier they work with, one attempt's failure, the
//! extensions they put on answers, and the body wrapper that watches a stream.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use oauth_core::{ClassifyFailure, Clock, CredentialId, FailureKind, SystemClock, Usage};
use oauth_manager::{AttemptError, ExecuteError, OAuthKeyManager};
use oauth_providers::{Classification, ClassifyResponse, Provider, SseUsage, classify_status};

use crate::credential::ProviderRequests;
use crate::error::OAuthHttpError;

/// The pool, the provider's classifier and how requests are dressed: what an adapter needs.
#[derive(Clone)]
pub struct PoolClient {
    pub(crate) manager: OAuthKeyManager,
    pub(crate) classifier: Arc<dyn ClassifyResponse>,
    pub(crate) requests: ProviderRequests,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) on_stream_end: OnStreamEnd,
}

/// Called when a watched stream ends, with its credential, the usage it reported and how it
/// ended.
pub type OnStreamEnd = Arc<dyn Fn(&CredentialId, Option<Usage>, StreamEnd) + Send + Sync>;

impl fmt::Debug for PoolClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolClient")
            .field("provider", &self.manager.provider())
            .field("classifier", &self.classifier)
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl PoolClient {
    /// An adapter core over `manager` for `provider`: its classifier and its per-account
    /// request headers ([`ProviderRequests::for_provider`]), the system clock.
    pub fn new(manager: OAuthKeyManager, provider: Provider) -> Self {
        Self {
            manager,
            classifier: Arc::new(provider),
            requests: ProviderRequests::for_provider(provider),
            clock: Arc::new(SystemClock),
            on_stream_end: Arc::new(|_, _, _| {}),
        }
    }

    /// Uses `classifier` instead of the provider's (a provider this crate does not know).
    #[must_use]
    pub fn with_classifier(mut self, classifier: Arc<dyn ClassifyResponse>) -> Self {
        self.classifier = classifier;
        self
    }

    /// Dresses requests as `requests` says.
    #[must_use]
    pub const fn with_requests(mut self, requests: ProviderRequests) -> Self {
        self.requests = requests;
        self
    }

    /// Reads wall time for classification from `clock` (give the pool's clock in tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Calls `hook` when a streamed answer ends, with the usage it reported. The pool records a
    /// stream's request when its headers arrive, before its usage is known; the adapter adds the
    /// stream's tokens itself when it ends
    /// ([`OAuthKeyManager::record_tokens`](oauth_manager::OAuthKeyManager::record_tokens)), then
    /// calls `hook`, for anything else the application does with them (the answer's
    /// [`StreamUsage`] has them too).
    #[must_use]
    pub fn on_stream_end(mut self, hook: OnStreamEnd) -> Self {
        self.on_stream_end = hook;
        self
    }

    /// The pool.
    pub const fn manager(&self) -> &OAuthKeyManager {
        &self.manager
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// What a failed answer means; a failure the classifier does not recognise as one (it
    /// answered `None` for a non-success) gets the status's generic meaning. `None` only for a
    /// success status.
    pub(crate) fn classify(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Classification> {
        let now = self.now();
        self.classifier
            .classify(status, headers, body, now)
            .or_else(|| classify_status(status, headers, now))
    }

    /// Watches a streamed answer's body for `credential`.
    pub(crate) fn watch<B>(
        &self,
        body: B,
        credential: CredentialId,
    ) -> (WatchedBody<B>, StreamUsage) {
        let report = StreamUsage::default();
        let watched = WatchedBody {
            inner: body,
            sse: self.classifier.stream_usage(),
            report: report.clone(),
            done: false,
            credential,
            manager: self.manager.clone(),
            clock: Arc::clone(&self.clock),
            on_end: Arc::clone(&self.on_stream_end),
        };
        (watched, report)
    }
}

/// Is this answer a server-sent-events stream?
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// Put on every answer an adapter returns: the credential that carried the (last) attempt, and
/// how many attempts the call took.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServedBy {
    /// The credential.
    pub credential: CredentialId,
    /// Attempts made.
    pub attempts: u32,
    /// What the answer meant, when it was a failure (the call ended on it: request-scoped,
    /// or attempts exhausted).
    pub failure: Option<Classification>,
}

/// Put on a streamed answer: what the stream reported, filled in as the body is read.
#[derive(Debug, Clone, Default)]
pub struct StreamUsage(Arc<Mutex<StreamState>>);

#[derive(Debug, Default)]
struct StreamState {
    usage: Option<Usage>,
    error: Option<Classification>,
    end: Option<StreamEnd>,
}

/// How a watched stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEnd {
    /// The body ended normally.
    Complete,
    /// Reading the body failed (the connection broke mid-stream).
    Broken,
    /// The caller dropped the body before its end.
    Dropped,
}

impl StreamUsage {
    fn state(&self) -> std::sync::MutexGuard<'_, StreamState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The usage the stream reported so far.
    pub fn usage(&self) -> Option<Usage> {
        self.state().usage
    }

    /// The error event the stream carried, classified.
    pub fn error(&self) -> Option<Classification> {
        self.state().error.clone()
    }

    /// How the stream ended; `None` while it is being read.
    pub fn end(&self) -> Option<StreamEnd> {
        self.state().end
    }
}

/// A streamed body passed through to the caller unchanged while its events are read for usage
/// and errors. When it ends, the usage it reported is added to the credential's token count
/// (without counting another request), and a mid-stream error event (or a broken connection) is
/// reported to the pool against the credential; it is never retried (its first bytes reached
/// the caller).
pub struct WatchedBody<B> {
    inner: B,
    sse: SseUsage,
    report: StreamUsage,
    done: bool,
    credential: CredentialId,
    manager: OAuthKeyManager,
    clock: Arc<dyn Clock>,
    on_end: OnStreamEnd,
}

impl<B> fmt::Debug for WatchedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedBody")
            .field("credential", &self.credential)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<B> WatchedBody<B> {
    fn finish(&mut self, end: StreamEnd) {
        if self.done {
            return;
        }
        self.done = true;
        let now = self.clock.now();
        if end == StreamEnd::Complete {
            self.sse.finish(now);
        }
        let error = self.sse.error().cloned();
        {
            let mut st = self.report.state();
            st.usage = self.sse.usage();
            st.error.clone_from(&error);
            st.end = Some(end);
        }
        let kind = match (&error, end) {
            (Some(c), _) => Some(c.kind),
            (None, StreamEnd::Broken) => Some(FailureKind::Transient),
            (None, _) => None,
        };
        if let Some(kind) = kind.filter(|k| *k != FailureKind::RequestScoped) {
            self.manager
                .report_failure_kind(self.credential.as_str(), kind);
        }
        // The stream's request was recorded when its headers arrived, with no tokens: its usage
        // counts now, whatever the end (tokens reported before a cut were consumed). A
        // credential removed meanwhile has no counters left to add to.
        if let Some(tokens) = self.sse.usage().map(|u| u.tokens()).filter(|t| *t > 0) {
            let _ = self.manager.record_tokens(self.credential.as_str(), tokens);
        }
        (self.on_end)(&self.credential, self.sse.usage(), end);
    }
}

impl<B> Drop for WatchedBody<B> {
    fn drop(&mut self) {
        self.finish(StreamEnd::Dropped);
    }
}

impl<B> Body for WatchedBody<B>
where
    B: Body + Unpin,
    B::Data: AsRef<[u8]>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let now = this.clock.now();
                    this.sse.feed(data.as_ref(), now);
                    let mut st = this.report.state();
                    st.usage = this.sse.usage();
                    st.error = this.sse.error().cloned();
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(StreamEnd::Broken),
            Poll::Ready(None) => this.finish(StreamEnd::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One attempt's failure, as `execute_with_failover` sees it. `R` is the answer type.
pub(crate) enum Failure<R, T> {
    /// The provider answered with a failure; the answer is kept for the caller (unless it was
    /// stashed because the request cannot be replayed).
    Answer {
        classification: Classification,
        answer: Option<R>,
    },
    /// The request could not be sent or the answer not read.
    Transport(T),
    /// The request's body cannot be replayed for another attempt.
    NotReplayable,
    /// The credential cannot be put on the request.
    Credential(OAuthHttpError),
}

impl<R, T> ClassifyFailure for Failure<R, T> {
    fn failure_kind(&self) -> FailureKind {
        match self {
            Self::Answer { classification, .. } => classification.kind,
            Self::Transport(_) => FailureKind::Transient,
            Self::NotReplayable => FailureKind::RequestScoped,
            Self::Credential(_) => FailureKind::Misconfigured,
        }
    }
}

/// What the caller gets when the call did not succeed.
pub(crate) enum Ended<R, T> {
    /// A provider's answer (the call ended on it), with its credential and classification.
    Answer(R, ServedBy),
    /// A transport error of the last attempt.
    Transport(T),
    /// No answer.
    Error(OAuthHttpError),
}

/// Maps the pool's error to what the caller gets; `stash` holds the answer of a request that
/// could not be replayed; `calls` is how many times the operation ran (the attempt count where
/// the pool's error does not carry one; a 401's retry on the same credential counts too).
pub(crate) fn ended<R, T>(
    error: ExecuteError<Failure<R, T>>,
    stash: Option<(R, CredentialId, Classification)>,
    calls: u32,
) -> Ended<R, T> {
    let from_failure =
        |credential: CredentialId, attempts: u32, failure: Failure<R, T>| match failure {
            Failure::Answer {
                classification,
                answer: Some(answer),
            } => Ended::Answer(
                answer,
                ServedBy {
                    credential,
                    attempts,
                    failure: Some(classification),
                },
            ),
            Failure::Transport(t) => Ended::Transport(t),
            Failure::Credential(e) => Ended::Error(e),
            Failure::Answer { answer: None, .. } | Failure::NotReplayable => {
                Ended::Error(OAuthHttpError::Pool("the answer was not kept".to_owned()))
            }
        };
    let stashed = |stash: Option<(R, CredentialId, Classification)>| {
        stash.map(|(answer, credential, classification)| {
            Ended::Answer(
                answer,
                ServedBy {
                    credential,
                    attempts: 1,
                    failure: Some(classification),
                },
            )
        })
    };
    match error {
        ExecuteError::RequestScoped {
            credential, error, ..
        } => match error {
            Failure::NotReplayable | Failure::Answer { answer: None, .. } => stashed(stash)
                .unwrap_or_else(|| {
                    Ended::Error(OAuthHttpError::Pool(
                        "the request body cannot be replayed".to_owned(),
                    ))
                }),
            other => from_failure(credential, calls.max(1), other),
        },
        ExecuteError::AttemptsExhausted {
            credential,
            attempts,
            last,
            kind,
            ..
        } => match last {
            AttemptError::Operation(Failure::Answer { answer: None, .. }) => stashed(stash)
                .unwrap_or_else(|| Ended::Error(OAuthHttpError::Pool(kind.to_string()))),
            AttemptError::Operation(f) => from_failure(credential, attempts, f),
            AttemptError::Refresh(e) => refresh_error(&credential, &e, stash),
            _ => Ended::Error(OAuthHttpError::Pool(kind.to_string())),
        },
        ExecuteError::Unavailable { unavailable, last } => match last {
            Some((
                credential,
                AttemptError::Operation(
                    f @ Failure::Answer {
                        answer: Some(_), ..
                    },
                ),
            ))
            | Some((credential, AttemptError::Operation(f @ Failure::Transport(_)))) => {
                from_failure(credential, calls.max(1), f)
            }
            _ => stashed(stash).unwrap_or_else(|| {
                Ended::Error(OAuthHttpError::NoCredential {
                    provider: unavailable.provider,
                    next_available_at: unavailable.next_available_at,
                })
            }),
        },
        ExecuteError::DeadlineExceeded { provider } => {
            Ended::Error(OAuthHttpError::DeadlineExceeded { provider })
        }
        _ => Ended::Error(OAuthHttpError::Pool("unknown pool error".to_owned())),
    }
}

fn refresh_error<R, T>(
    credential: &CredentialId,
    e: &oauth_manager::refresh::RefreshError,
    stash: Option<(R, CredentialId, Classification)>,
) -> Ended<R, T> {
    if let Some((answer, credential, classification)) = stash {
        return Ended::Answer(
            answer,
            ServedBy {
                credential,
                attempts: 1,
                failure: Some(classification),
            },
        );
    }
    Ended::Error(OAuthHttpError::Refresh {
        credential: credential.to_string(),
        kind: e.kind(),
        reason: e.to_string(),
    })
}
