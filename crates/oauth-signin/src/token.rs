//! Requests to the token and device endpoints, reading their answers, and turning a token
//! response into a [`Credential`].

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use oauth_core::{Credential, CredentialMetadata, ExposeSecret, SecretString, after};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::config::Encoding;
use crate::error::{Endpoint, OAuthErrorCode, SigninError, TransportKind};

/// Largest answer read from an endpoint.
const MAX_BODY: usize = 256 * 1024;

/// One value of a request body: secrets are exposed only while the body is encoded.
pub(crate) enum Param<'a> {
    Plain(&'a str),
    Secret(&'a SecretString),
}

impl Param<'_> {
    fn value(&self) -> &str {
        match self {
            Self::Plain(v) => v,
            Self::Secret(s) => s.expose_secret(),
        }
    }
}

/// A POST to an endpoint.
pub(crate) struct Post<'a> {
    pub(crate) endpoint: Endpoint,
    pub(crate) url: &'a str,
    pub(crate) encoding: Encoding,
    pub(crate) params: Vec<(&'static str, Param<'a>)>,
    pub(crate) headers: &'a [(String, String)],
    pub(crate) timeout: Option<Duration>,
}

/// What an endpoint answered.
pub(crate) enum Answer {
    /// A 2xx JSON object without an `error` string.
    Success(Map<String, Value>),
    /// An OAuth error (any status, an `error` string member).
    OAuthError { status: u16, code: OAuthErrorCode },
}

/// Sends `post` and reads the answer (capped), classifying failures without keeping any body.
pub(crate) async fn send(http: &reqwest::Client, post: Post<'_>) -> Result<Answer, SigninError> {
    let endpoint = post.endpoint;
    let mut req = http
        .post(post.url)
        .header(ACCEPT, HeaderValue::from_static("application/json"));
    for (name, value) in post.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return Err(SigninError::Config {
                what: "a configured header is not a valid HTTP header",
            });
        };
        req = req.header(name, value);
    }
    let pairs: Vec<(&str, &str)> = post.params.iter().map(|(k, v)| (*k, v.value())).collect();
    req = match post.encoding {
        Encoding::Form => req.form(&pairs),
        Encoding::Json => {
            let object: Map<String, Value> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                .collect();
            req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(Value::Object(object).to_string())
        }
    };
    drop(pairs);
    if let Some(t) = post.timeout {
        req = req.timeout(t);
    }
    let mut resp = req.send().await.map_err(|e| transport(endpoint, &e))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(endpoint, &e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(SigninError::Transport {
                endpoint,
                kind: TransportKind::BodyTooLarge,
            });
        }
        body.extend_from_slice(&chunk);
    }
    let object = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    };
    let error = object
        .as_ref()
        .and_then(|o| o.get("error"))
        .and_then(Value::as_str)
        .map(OAuthErrorCode::parse);
    match (status, object, error) {
        (_, Some(_), Some(code)) => Ok(Answer::OAuthError { status, code }),
        (200..=299, Some(o), None) => Ok(Answer::Success(o)),
        (200..=299, None, _) => Err(SigninError::Malformed {
            endpoint,
            what: "the body is not a JSON object",
        }),
        _ => Err(SigninError::Http { endpoint, status }),
    }
}

fn transport(endpoint: Endpoint, e: &reqwest::Error) -> SigninError {
    let kind = if e.is_timeout() {
        TransportKind::Timeout
    } else if e.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    };
    SigninError::Transport { endpoint, kind }
}

/// Who the credential belongs to, for [`into_credential`].
pub(crate) struct Client<'a> {
    pub(crate) id: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) client_secret: Option<&'a SecretString>,
    pub(crate) requested_scopes: &'a [String],
}

/// Builds the credential from a successful token response (RFC 6749 section 5.1).
///
/// - `access_token` is required; `refresh_token`, `expires_in`, `refresh_token_expires_in`,
///   `scope` and `id_token` are used when present. Without `expires_in`, the access token's JWT
///   `exp` claim is used if it has one (Codex's response carries no `expires_in`).
/// - Metadata: the id token; the account id and e-mail from its claims (and the plan from
///   Codex's claims); Qwen's `resource_url`; Anthropic's `account.uuid` / `account.email_address`.
pub(crate) fn into_credential(
    mut body: Map<String, Value>,
    client: &Client<'_>,
    now: DateTime<Utc>,
) -> Result<Credential, SigninError> {
    let malformed = |what| SigninError::Malformed {
        endpoint: Endpoint::Token,
        what,
    };
    let access_token = match body.remove("access_token") {
        Some(Value::String(s)) if !s.is_empty() => SecretString::from(s),
        _ => return Err(malformed("no access_token")),
    };
    let refresh_token = string(body.remove("refresh_token"));
    let id_token = string(body.remove("id_token"));
    let expires_in = seconds(body.get("expires_in"));
    let refresh_expires_in = seconds(body.get("refresh_token_expires_in"));
    let scopes = match body.get("scope") {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => client.requested_scopes.to_vec(),
    };

    let mut cred = Credential::new(client.id, access_token.expose_secret(), now)?
        .with_client(
            client.client_id,
            client.client_secret.map(|s| s.expose_secret().to_owned()),
        )
        .with_scopes(scopes);
    if let Some(rt) = refresh_token {
        cred = cred.with_refresh_token(rt);
    }
    let expires_at = expires_in
        .map(|d| after(now, d))
        .or_else(|| jwt_exp(access_token.expose_secret()));
    cred.expires_at = expires_at;
    cred.refresh_token_expires_at = refresh_expires_in.map(|d| after(now, d));

    let mut metadata = CredentialMetadata::default();
    let mut extra = BTreeMap::new();
    if let Some(id_token) = &id_token {
        let claims = IdTokenClaims::read(id_token);
        metadata.account_id = claims.account_id;
        metadata.email = claims.email;
        metadata.plan = claims.plan;
    }
    if let Some(Value::Object(account)) = body.get("account") {
        if metadata.account_id.is_none() {
            metadata.account_id = account
                .get("uuid")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        if metadata.email.is_none() {
            metadata.email = account
                .get("email_address")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
    }
    if let Some(url) = body.get("resource_url").and_then(Value::as_str) {
        extra.insert("resource_url".to_owned(), url.to_owned());
    }
    metadata.absorb(extra);
    metadata.id_token = id_token.map(SecretString::from);
    cred.metadata = metadata;
    Ok(cred)
}

fn string(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// A positive number of seconds, as a JSON number or numeric string, below ten years.
fn seconds(v: Option<&Value>) -> Option<Duration> {
    const LIMIT: u64 = 10 * 365 * 24 * 3600;
    let n = match v? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e12)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }?;
    (n > 0 && n <= LIMIT).then(|| Duration::from_secs(n))
}

/// The JSON payload of a JWT, without checking its signature: the token came straight from the
/// token endpoint over the connection this client opened (OpenID Connect Core section 3.1.3.7
/// allows TLS server validation in place of the signature check in that case), and it is used only
/// to label the account, never to authorize anything.
fn jwt_payload(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(o) => Some(o),
        _ => None,
    }
}

fn jwt_exp(token: &str) -> Option<DateTime<Utc>> {
    let exp = jwt_payload(token)?.get("exp")?.as_i64()?;
    DateTime::<Utc>::from_timestamp(exp, 0)
}

/// What an id token says about the account.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct IdTokenClaims {
    pub(crate) account_id: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) plan: Option<String>,
}

impl IdTokenClaims {
    /// `email`; the account id from Codex's `https://api.openai.com/auth.chatgpt_account_id`
    /// claim, else `sub`; the plan from `chatgpt_plan_type`.
    pub(crate) fn read(id_token: &str) -> Self {
        let Some(claims) = jwt_payload(id_token) else {
            return Self::default();
        };
        let text =
            |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
        let openai = claims
            .get("https://api.openai.com/auth")
            .and_then(Value::as_object);
        Self {
            account_id: openai
                .and_then(|o| text(o, "chatgpt_account_id"))
                .or_else(|| text(&claims, "sub")),
            email: text(&claims, "email"),
            plan: openai.and_then(|o| text(o, "chatgpt_plan_type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(claims: &Value) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(b"{\"alg\":\"none\"}"),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => Map::new(),
        }
    }

    #[test]
    fn codex_claims_and_jwt_expiry() {
        let now = Utc::now();
        let id = jwt(&json!({
            "sub": "auth0|x", "email": "a@example.com",
            "https://api.openai.com/auth": { "chatgpt_account_id": "acc-1", "chatgpt_plan_type": "pro" }
        }));
        let access = jwt(&json!({ "exp": 2_000_000_000 }));
        let body = object(json!({ "access_token": access, "refresh_token": "rt", "id_token": id }));
        let client = Client {
            id: "codex-a",
            client_id: "app",
            client_secret: None,
            requested_scopes: &["openid".to_owned()],
        };
        let cred = into_credential(body, &client, now).expect("usable");
        assert_eq!(cred.metadata.account_id.as_deref(), Some("acc-1"));
        assert_eq!(cred.metadata.email.as_deref(), Some("a@example.com"));
        assert_eq!(cred.metadata.plan.as_deref(), Some("pro"));
        assert_eq!(cred.expires_at.map(|t| t.timestamp()), Some(2_000_000_000));
        assert_eq!(cred.scopes, vec!["openid".to_owned()]);
        assert!(cred.refresh_token.is_some());
    }

    #[test]
    fn qwen_resource_url_and_odd_fields() {
        let now = Utc::now();
        let body = object(json!({
            "access_token": "at", "expires_in": "3600", "resource_url": "portal.qwen.ai",
            "scope": "openid model.completion", "refresh_token_expires_in": -5
        }));
        let client = Client {
            id: "qwen-a",
            client_id: "q",
            client_secret: None,
            requested_scopes: &[],
        };
        let cred = into_credential(body, &client, now).expect("usable");
        assert_eq!(
            cred.metadata.resource_url.as_deref(),
            Some("portal.qwen.ai")
        );
        assert_eq!(cred.expires_at, Some(after(now, Duration::from_secs(3600))));
        assert_eq!(cred.refresh_token_expires_at, None);
        assert_eq!(cred.scopes, vec!["openid", "model.completion"]);
        assert!(cred.metadata.account_id.is_none());
    }

    #[test]
    fn no_access_token_is_malformed() {
        let client = Client {
            id: "x",
            client_id: "c",
            client_secret: None,
            requested_scopes: &[],
        };
        let err = into_credential(object(json!({ "access_token": "" })), &client, Utc::now())
            .expect_err("no token");
        assert!(matches!(err, SigninError::Malformed { .. }));
        assert_eq!(IdTokenClaims::read("not-a-jwt"), IdTokenClaims::default());
    }
}
