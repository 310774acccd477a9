//! A real webhook endpoint on 127.0.0.1 that checks signatures, records every request, and fails on
//! command.
//!
//! The receiver does not know any signature scheme: it is handed a [`VerifyFn`] (the workspace's
//! tests pass `oauth_webhooks::verify`), which keeps this crate below the concern crates.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use oauth_testkit::webhook_receiver::{Fault, WebhookReceiver};
//!
//! // Accept anything that carries a webhook-id header.
//! let verify = Arc::new(|headers: &axum::http::HeaderMap, _body: &[u8]| {
//!     headers.get("webhook-id").map(|_| ()).ok_or_else(|| "no webhook-id".to_owned())
//! });
//! let receiver = WebhookReceiver::start(verify).await?;
//! receiver.fail_next(1, Fault::Status(503));
//!
//! let client = reqwest::Client::new();
//! let send = || client.post(receiver.url()).header("webhook-id", "evt_1").body("{}").send();
//! assert_eq!(send().await.map(|r| r.status().as_u16()).ok(), Some(503));
//! assert_eq!(send().await.map(|r| r.status().as_u16()).ok(), Some(200));
//! assert_eq!(receiver.attempts("evt_1"), 2);
//! assert!(receiver.wait_for_accepted(1, Duration::from_secs(5)).await);
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::net::{TcpListener, TcpSocket};

use crate::serving::Serving;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Checks one request's signature: `Ok` to accept it, `Err(reason)` to answer 401.
pub type VerifyFn = Arc<dyn Fn(&HeaderMap, &[u8]) -> Result<(), String> + Send + Sync>;

/// How the receiver misbehaves for a request that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (e.g. 500, 503).
    Status(u16),
    /// Answer 429 with this `Retry-After` value (seconds or an HTTP date).
    TooManyRequests {
        /// The `Retry-After` header value.
        retry_after: String,
    },
    /// Answer 410 Gone (the sender should stop calling).
    Gone,
    /// Wait this long, then answer 200 (a sender with a shorter timeout gives up first).
    Slow(Duration),
}

/// One request the receiver got, whatever it answered.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// HTTP method.
    pub method: Method,
    /// Request path.
    pub path: String,
    /// All request headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
    /// The verify function's verdict.
    pub verification: Result<(), String>,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
    /// The status answered (or to be answered, for a slow request still waiting).
    pub status: u16,
    /// The answer is due: false while a [`Fault::Slow`] request waits (a slow answer counts once its
    /// delay is over, even if the sender gave up on it by then).
    pub answered: bool,
    /// Arrival time.
    pub at: Instant,
}

impl ReceivedRequest {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `webhook-id` header.
    pub fn webhook_id(&self) -> Option<&str> {
        self.header("webhook-id")
    }

    /// The body parsed as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Verified and answered with a 2xx.
    pub fn is_accepted(&self) -> bool {
        self.answered && self.verification.is_ok() && (200..300).contains(&self.status)
    }
}

#[derive(Default)]
struct Faults {
    next: VecDeque<Fault>,
    until: Option<(Instant, Fault)>,
}

struct Inner {
    verify: VerifyFn,
    faults: Mutex<Faults>,
    requests: Mutex<Vec<ReceivedRequest>>,
    changed: Notify,
}

impl Inner {
    fn requests(&self) -> MutexGuard<'_, Vec<ReceivedRequest>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_fault(&self) -> Option<Fault> {
        let mut f = self.faults();
        if let Some(fault) = f.next.pop_front() {
            return Some(fault);
        }
        match &f.until {
            Some((until, fault)) if Instant::now() < *until => Some(fault.clone()),
            Some(_) => {
                f.until = None;
                None
            }
            None => None,
        }
    }
}

/// A webhook endpoint on `127.0.0.1` (random port), serving until dropped.
///
/// Every request is recorded with its headers, body, verdict and answer. Requests that fail the
/// verify function get 401; verified ones get 200 unless a [`Fault`] is scheduled with
/// [`fail_next`](Self::fail_next) or [`fail_for`](Self::fail_for). [`go_down`](Self::go_down)
/// closes the listener (connections are refused) and [`come_back`](Self::come_back) listens again
/// on the same port.
pub struct WebhookReceiver {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: tokio::sync::Mutex<Option<Serving>>,
}

impl fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("addr", &self.addr)
            .field("requests", &self.inner.requests().len())
            .finish_non_exhaustive()
    }
}

impl WebhookReceiver {
    /// Starts a receiver on `127.0.0.1:0` that judges signatures with `verify`.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub async fn start(verify: VerifyFn) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            verify,
            faults: Mutex::new(Faults::default()),
            requests: Mutex::new(Vec::new()),
            changed: Notify::new(),
        });
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = listener.local_addr()?;
        let server = serve(listener, Arc::clone(&inner))?;
        Ok(Self {
            inner,
            addr,
            server: tokio::sync::Mutex::new(Some(server)),
        })
    }

    /// The endpoint URL (`http://127.0.0.1:<port>/webhook`).
    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// The listening address (the same after [`come_back`](Self::come_back)).
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `fault` to the next `n` verified requests.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.inner
            .faults()
            .next
            .extend(std::iter::repeat_n(fault, n));
    }

    /// Applies `fault` to every verified request for the next `duration` (after any `fail_next`
    /// faults are used up).
    pub fn fail_for(&self, duration: Duration, fault: Fault) {
        self.inner.faults().until = Some((Instant::now() + duration, fault));
    }

    /// Cancels every scheduled fault.
    pub fn clear_faults(&self) {
        *self.inner.faults() = Faults::default();
    }

    /// Stops listening and closes connections: senders get "connection refused" until
    /// [`come_back`](Self::come_back). Slow requests in progress get up to one second to finish.
    pub async fn go_down(&self) {
        let server = self.server.lock().await.take();
        if let Some(server) = server {
            server.stop(Duration::from_secs(1)).await;
        }
    }

    /// Listens again on the same port (no-op while up).
    ///
    /// # Errors
    /// When the port cannot be bound again.
    pub async fn come_back(&self) -> std::io::Result<()> {
        let mut server = self.server.lock().await;
        if server.is_none() {
            let listener = bind(self.addr)?;
            *server = Some(serve(listener, Arc::clone(&self.inner))?);
        }
        Ok(())
    }

    /// Goes down now and comes back after `duration` (in a background task).
    pub async fn down_for(self: &Arc<Self>, duration: Duration) {
        self.go_down().await;
        let this = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            let _ = this.come_back().await;
        });
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.inner.requests().clone()
    }

    /// The requests that were verified and answered 2xx.
    pub fn accepted(&self) -> Vec<ReceivedRequest> {
        self.filtered(ReceivedRequest::is_accepted)
    }

    /// The JSON bodies of the accepted requests.
    pub fn accepted_events(&self) -> Vec<serde_json::Value> {
        self.accepted()
            .iter()
            .filter_map(ReceivedRequest::json)
            .collect()
    }

    /// The requests that failed verification (answered 401).
    pub fn rejections(&self) -> Vec<ReceivedRequest> {
        self.filtered(|r| r.verification.is_err())
    }

    /// How many requests carried `webhook-id: <id>` (every attempt, whatever the answer).
    pub fn attempts(&self, webhook_id: &str) -> usize {
        self.inner
            .requests()
            .iter()
            .filter(|r| r.webhook_id() == Some(webhook_id))
            .count()
    }

    /// Waits (real time, at most `timeout`) until at least `n` requests were accepted.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |rs| {
            rs.iter().filter(|r| r.is_accepted()).count() >= n
        })
        .await
    }

    /// Waits (real time, at most `timeout`) until at least `n` requests arrived.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |rs| rs.len() >= n).await
    }

    fn filtered(&self, keep: impl Fn(&ReceivedRequest) -> bool) -> Vec<ReceivedRequest> {
        self.inner
            .requests()
            .iter()
            .filter(|r| keep(r))
            .cloned()
            .collect()
    }

    async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedRequest]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&self.inner.requests()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(&self.inner.requests());
            }
        }
    }
}

/// A listener with `SO_REUSEADDR`, so the port can be bound again right after going down.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn serve(listener: TcpListener, inner: Arc<Inner>) -> std::io::Result<Serving> {
    Serving::on(listener, Router::new().fallback(handle).with_state(inner))
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let verification = (inner.verify)(&headers, &body);
    let fault = if verification.is_ok() {
        inner.next_fault()
    } else {
        None
    };
    let status = match (&verification, &fault) {
        (Err(_), _) => StatusCode::UNAUTHORIZED,
        (Ok(()), None | Some(Fault::Slow(_))) => StatusCode::OK,
        (Ok(()), Some(Fault::Status(code))) => {
            StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        (Ok(()), Some(Fault::TooManyRequests { .. })) => StatusCode::TOO_MANY_REQUESTS,
        (Ok(()), Some(Fault::Gone)) => StatusCode::GONE,
    };
    let slow = match &fault {
        Some(Fault::Slow(d)) => Some(*d),
        _ => None,
    };
    let retry_after = match &fault {
        Some(Fault::TooManyRequests { retry_after }) => HeaderValue::from_str(retry_after).ok(),
        _ => None,
    };
    let index = {
        let mut requests = inner.requests();
        requests.push(ReceivedRequest {
            method,
            path: uri.path().to_owned(),
            headers,
            body,
            verification,
            fault,
            status: status.as_u16(),
            answered: slow.is_none(),
            at: Instant::now(),
        });
        requests.len() - 1
    };
    inner.changed.notify_waiters();
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
        if let Some(r) = inner.requests().get_mut(index) {
            r.answered = true;
        }
        inner.changed.notify_waiters();
    }
    let mut response = status.into_response();
    if let Some(value) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs_id() -> VerifyFn {
        Arc::new(|headers: &HeaderMap, _body: &[u8]| {
            headers
                .get("webhook-id")
                .map(|_| ())
                .ok_or_else(|| "missing webhook-id".to_owned())
        })
    }

    async fn post(rx: &WebhookReceiver, id: Option<&str>) -> reqwest::Result<reqwest::Response> {
        let mut req = reqwest::Client::new().post(rx.url()).body("{\"n\":1}");
        if let Some(id) = id {
            req = req.header("webhook-id", id);
        }
        req.send().await
    }

    #[tokio::test]
    async fn rejections_get_401_and_do_not_use_up_faults() {
        let rx = WebhookReceiver::start(needs_id()).await.expect("binds");
        rx.fail_next(1, Fault::Status(500));
        let r = post(&rx, None).await.expect("answered");
        assert_eq!(r.status().as_u16(), 401);
        let r = post(&rx, Some("a")).await.expect("answered");
        assert_eq!(r.status().as_u16(), 500);
        let r = post(&rx, Some("a")).await.expect("answered");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(rx.rejections().len(), 1);
        assert_eq!(
            rx.rejections()[0].verification,
            Err("missing webhook-id".to_owned())
        );
        assert_eq!(rx.attempts("a"), 2);
        assert_eq!(rx.accepted_events(), [serde_json::json!({"n": 1})]);
    }

    #[tokio::test]
    async fn scripted_faults_429_410_and_for_a_while() {
        let rx = WebhookReceiver::start(needs_id()).await.expect("binds");
        rx.fail_next(
            1,
            Fault::TooManyRequests {
                retry_after: "7".into(),
            },
        );
        rx.fail_next(1, Fault::Gone);
        let r = post(&rx, Some("x")).await.expect("answered");
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("7")
        );
        let r = post(&rx, Some("x")).await.expect("answered");
        assert_eq!(r.status().as_u16(), 410);
        rx.fail_for(Duration::from_secs(600), Fault::Status(503));
        for _ in 0..3 {
            let r = post(&rx, Some("x")).await.expect("answered");
            assert_eq!(r.status().as_u16(), 503);
        }
        rx.clear_faults();
        let r = post(&rx, Some("x")).await.expect("answered");
        assert_eq!(r.status().as_u16(), 200);
    }

    #[tokio::test]
    async fn down_refuses_connections_and_comes_back_on_the_same_port() {
        let rx = WebhookReceiver::start(needs_id()).await.expect("binds");
        assert!(post(&rx, Some("before")).await.is_ok());
        let addr = rx.addr();
        rx.go_down().await;
        let err = post(&rx, Some("while-down")).await.expect_err("refused");
        assert!(err.is_connect(), "{err}");
        rx.come_back().await.expect("rebinds");
        assert_eq!(rx.addr(), addr);
        let r = post(&rx, Some("after")).await.expect("answered");
        assert_eq!(r.status().as_u16(), 200);
        let ids: Vec<String> = rx
            .requests()
            .iter()
            .filter_map(|r| r.webhook_id().map(str::to_owned))
            .collect();
        assert_eq!(ids, ["before", "after"]);
    }

    #[tokio::test]
    async fn slow_answers_count_once_answered() {
        let rx = WebhookReceiver::start(needs_id()).await.expect("binds");
        rx.fail_next(1, Fault::Slow(Duration::from_millis(50)));
        let r = post(&rx, Some("s")).await.expect("answered");
        assert_eq!(r.status().as_u16(), 200);
        assert!(rx.wait_for_accepted(1, Duration::from_secs(5)).await);
        assert_eq!(
            rx.accepted()[0].fault,
            Some(Fault::Slow(Duration::from_millis(50)))
        );
    }
}
