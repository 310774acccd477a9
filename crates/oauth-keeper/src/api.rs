//! The HTTP surface: `/metrics`, `/health` and the management API, every route behind the
//! bearer token.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, VARY,
    WWW_AUTHENTICATE,
};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use oauth_manager::metrics::encode_scrape;
use oauth_signin::SigninPrompt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::KeeperError;
use crate::keeper::Keeper;
use crate::providers::ProviderKind;

/// The router over `keeper`.
pub(crate) fn router(keeper: Keeper) -> Router {
    let limit = keeper.config().max_body_bytes;
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/accounts", get(list_accounts))
        .route(
            "/accounts/{provider}/{id}",
            get(get_account).delete(remove_account),
        )
        .route("/accounts/{provider}/{id}/disable", post(disable))
        .route("/accounts/{provider}/{id}/enable", post(enable))
        .route("/accounts/{provider}/{id}/refresh", post(refresh))
        .route(
            "/accounts/{provider}/{id}/clear-cooldown",
            post(clear_cooldown),
        )
        .route("/signins", post(start_signin))
        .route("/signins/{signin}", get(signin_status))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            keeper.clone(),
            authorize,
        ))
        .with_state(keeper)
}

/// Every route: `Authorization: Bearer <token>` or 401 with an empty body. Without a token
/// file every request is refused. The header is never logged.
async fn authorize(State(keeper): State<Keeper>, req: Request, next: Next) -> Response {
    let ok = keeper.token().is_some_and(|t| {
        t.matches_header(req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes))
    });
    if !ok {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let mut r = next.run(req).await;
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", None)
}

fn error_response(status: StatusCode, code: &str, detail: Option<String>) -> Response {
    let mut body = json!({ "error": code });
    if let Some(d) = detail {
        body["detail"] = Value::String(d);
    }
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for KeeperError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::UnknownAccount { .. } => (StatusCode::NOT_FOUND, "unknown_account"),
            Self::UnknownProvider => (StatusCode::NOT_FOUND, "unknown_provider"),
            Self::InvalidAccountId => (StatusCode::BAD_REQUEST, "invalid_account_id"),
            Self::Refresh {
                dead_grant: true, ..
            } => (StatusCode::BAD_GATEWAY, "dead_grant"),
            Self::Refresh {
                misconfigured: true,
                ..
            } => (StatusCode::BAD_GATEWAY, "misconfigured"),
            Self::Refresh { .. } => (StatusCode::BAD_GATEWAY, "refresh_failed"),
            Self::TooManySignins => (StatusCode::TOO_MANY_REQUESTS, "too_many_signins"),
            Self::Signin { .. } => (StatusCode::BAD_GATEWAY, "signin_failed"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        // Every error's text is secret-free (typed errors with classifications only).
        error_response(status, code, Some(self.to_string()))
    }
}

fn provider(name: &str) -> Result<ProviderKind, KeeperError> {
    name.parse::<ProviderKind>()
        .map_err(|_| KeeperError::UnknownProvider)
}

async fn metrics(State(keeper): State<Keeper>, req: Request) -> Response {
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match encode_scrape(keeper.registry(), header(ACCEPT), header(ACCEPT_ENCODING)) {
        Ok(scrape) => {
            let mut r = Response::new(Body::from(scrape.body));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(scrape.content_type));
            h.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
            if let Some(enc) = scrape.content_encoding {
                h.insert(CONTENT_ENCODING, HeaderValue::from_static(enc));
            }
            r
        }
        Err(_) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "encode_failed", None),
    }
}

async fn health(State(keeper): State<Keeper>) -> Response {
    let accounts = keeper.accounts();
    let mut providers = serde_json::Map::new();
    let mut degraded = false;
    for kind in keeper.providers() {
        let of: Vec<_> = accounts
            .iter()
            .filter(|a| a.provider == kind.pool_name())
            .collect();
        let available = of.iter().filter(|a| a.health.is_available).count();
        degraded |= available == 0;
        providers.insert(
            kind.pool_name().to_owned(),
            json!({ "accounts": of.len(), "available": available }),
        );
    }
    let status = if degraded {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if degraded { "degraded" } else { "ok" },
        "providers": providers,
        "accounts": accounts,
    });
    (status, axum::Json(body)).into_response()
}

async fn list_accounts(State(keeper): State<Keeper>) -> Response {
    axum::Json(json!({ "accounts": keeper.accounts() })).into_response()
}

async fn get_account(
    State(keeper): State<Keeper>,
    Path((p, id)): Path<(String, String)>,
) -> Response {
    let kind = match provider(&p) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    match keeper.account(kind, &id) {
        Ok(a) => axum::Json(a).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn disable(State(keeper): State<Keeper>, Path((p, id)): Path<(String, String)>) -> Response {
    let kind = match provider(&p) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    match keeper.disable(kind, &id) {
        Ok(a) => axum::Json(a).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn enable(State(keeper): State<Keeper>, Path((p, id)): Path<(String, String)>) -> Response {
    let kind = match provider(&p) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    match keeper.enable(kind, &id) {
        Ok(a) => axum::Json(a).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn refresh(State(keeper): State<Keeper>, Path((p, id)): Path<(String, String)>) -> Response {
    let kind = match provider(&p) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    match keeper.refresh_now(kind, &id).await {
        Ok(a) => axum::Json(a).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn clear_cooldown(
    State(keeper): State<Keeper>,
    Path((p, id)): Path<(String, String)>,
) -> Response {
    let kind = match provider(&p) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    match keeper.clear_cooldown(kind, &id) {
        Ok(outcome) => match keeper.account(kind, &id) {
            Ok(a) => axum::Json(json!({ "outcome": outcome, "account": a })).into_response(),
            Err(e) => e.into_response(),
        },
        Err(e) => e.into_response(),
    }
}

async fn remove_account(
    State(keeper): State<Keeper>,
    Path((p, id)): Path<(String, String)>,
) -> Response {
    let kind = match provider(&p) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    match keeper.remove(kind, &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SigninRequest {
    provider: String,
    #[serde(default)]
    account: Option<String>,
}

async fn start_signin(State(keeper): State<Keeper>, body: Bytes) -> Response {
    // Parsed here, not by axum's `Json`, so a refusal never echoes the body.
    let Ok(req) = serde_json::from_slice::<SigninRequest>(&body) else {
        return error_response(StatusCode::BAD_REQUEST, "bad_request", None);
    };
    let kind = match provider(&req.provider) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    match keeper.start_signin(kind, req.account.as_deref()).await {
        Ok(started) => {
            let prompt = match &started.prompt {
                SigninPrompt::OpenUrl { url } => json!({ "kind": "open_url", "url": url }),
                SigninPrompt::EnterCode {
                    user_code,
                    verification_uri,
                    verification_uri_complete,
                    expires_in,
                } => json!({
                    "kind": "enter_code",
                    "user_code": user_code,
                    "verification_uri": verification_uri,
                    "verification_uri_complete": verification_uri_complete,
                    "expires_in_secs": expires_in.as_secs(),
                }),
                _ => json!({ "kind": "unknown" }),
            };
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({
                    "signin": started.signin,
                    "provider": started.provider.pool_name(),
                    "account": started.account,
                    "prompt": prompt,
                })),
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn signin_status(State(keeper): State<Keeper>, Path(signin): Path<String>) -> Response {
    match keeper.signin_status(&signin) {
        Some(s) => axum::Json(s).into_response(),
        None => error_response(StatusCode::NOT_FOUND, "unknown_signin", None),
    }
}
