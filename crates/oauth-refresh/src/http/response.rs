//! Parsing token endpoint responses (RFC 6749 sections 5.1 and 5.2).

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use oauth_core::{ExposeSecret, SecretString, TokenSet, after};
use serde_json::{Map, Value};

use crate::error::{MalformedReason, OAuthErrorCode};

/// What to assume when a successful response has no `expires_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingExpiry {
    /// The access token does not expire (`expires_at = None`): it is never refreshed proactively.
    NoExpiry,
    /// It lives this long.
    Assume(Duration),
    /// Read the `exp` claim of the access token when it is a JWT (its signature is not checked: the
    /// token is only used to decide when to refresh), else assume the given lifetime.
    JwtExpOr(Duration),
}

impl Default for MissingExpiry {
    /// One hour, the most common lifetime, so a credential is still refreshed proactively.
    fn default() -> Self {
        Self::Assume(Duration::from_secs(3600))
    }
}

/// A successful token response (RFC 6749 section 5.1), as parsed by [`parse_token_response`].
///
/// Tokens are [`SecretString`]s: the `Debug` output is redacted.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The new access token (never empty).
    pub access_token: SecretString,
    /// `token_type` as sent (only `Bearer`, in any case, is accepted).
    pub token_type: Option<String>,
    /// `expires_in` (a JSON number or a numeric string; fractions are truncated).
    pub expires_in: Option<Duration>,
    /// The rotated refresh token; `None` when the server sent none (keep the old one).
    pub refresh_token: Option<SecretString>,
    /// `refresh_token_expires_in`, when sent.
    pub refresh_token_expires_in: Option<Duration>,
    /// `scope`, split on whitespace; `None` when absent (the granted scope is unchanged).
    pub scope: Option<Vec<String>>,
}

/// Parses a 2xx token response body.
///
/// Accepts `expires_in` and `refresh_token_expires_in` as JSON numbers or numeric strings, treats
/// `null` and empty strings as absent, and rejects everything else with a [`MalformedReason`]
/// that holds no remote text. Never panics, whatever the bytes.
///
/// # Errors
/// [`MalformedReason`]: empty body, HTML, not JSON, not an object, no access token, a field of
/// the wrong type or range, or a `token_type` other than `Bearer`.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, MalformedReason> {
    let obj = parse_object(body)?;
    let access_token = match obj.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => SecretString::from(s.as_str()),
        Some(Value::String(_) | Value::Null) | None => {
            return Err(MalformedReason::MissingAccessToken);
        }
        Some(_) => return Err(MalformedReason::InvalidField("access_token")),
    };
    let token_type = opt_string(&obj, "token_type")?;
    if let Some(t) = &token_type
        && !t.eq_ignore_ascii_case("bearer")
    {
        return Err(MalformedReason::UnsupportedTokenType);
    }
    let refresh_token = opt_string(&obj, "refresh_token")?.map(SecretString::from);
    let scope = opt_string(&obj, "scope")?
        .map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    Ok(TokenResponse {
        access_token,
        token_type,
        expires_in: opt_seconds(&obj, "expires_in")?,
        refresh_token,
        refresh_token_expires_in: opt_seconds(&obj, "refresh_token_expires_in")?,
        scope,
    })
}

/// Reads an RFC 6749 section 5.2 error body: `{"error": "code", ...}`, or the
/// `{"error": {"code"|"type": "code", ...}}` shape some providers use. `None` when the body is not
/// such an error. `error_description` is ignored on purpose (it may echo input). Never panics.
pub fn parse_error_response(body: &[u8]) -> Option<OAuthErrorCode> {
    let obj = parse_object(body).ok()?;
    match obj.get("error")? {
        // `null`, `""`, `{}` and `false` say there is no error.
        Value::Null | Value::Bool(false) => None,
        Value::String(code) if code.is_empty() => None,
        Value::Object(inner) if inner.is_empty() => None,
        Value::String(code) => Some(OAuthErrorCode::from_wire(code)),
        Value::Object(inner) => ["code", "type"]
            .iter()
            .find_map(|k| inner.get(*k).and_then(Value::as_str))
            .map(OAuthErrorCode::from_wire)
            .or(Some(OAuthErrorCode::Unrecognized)),
        _ => Some(OAuthErrorCode::Unrecognized),
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, MalformedReason> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return Err(MalformedReason::Empty);
    }
    if trimmed.first() == Some(&b'<') {
        return Err(MalformedReason::Html);
    }
    match serde_json::from_slice::<Value>(trimmed) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(MalformedReason::NotAnObject),
        Err(_) => Err(MalformedReason::NotJson),
    }
}

fn opt_string(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, MalformedReason> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(MalformedReason::InvalidField(field)),
    }
}

/// The longest lifetime accepted (100 years); beyond that a value is nonsense.
const MAX_LIFETIME_SECS: f64 = 100.0 * 365.0 * 86_400.0;

fn opt_seconds(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Duration>, MalformedReason> {
    let invalid = MalformedReason::InvalidField(field);
    let secs = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().ok_or(invalid)?,
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<f64>().map_err(|_| invalid)?,
        Some(_) => return Err(invalid),
    };
    if !secs.is_finite() || !(0.0..=MAX_LIFETIME_SECS).contains(&secs) {
        return Err(invalid);
    }
    Duration::try_from_secs_f64(secs.trunc())
        .map(Some)
        .map_err(|_| invalid)
}

impl TokenResponse {
    /// What the response means at `now`: the tokens, with `expires_in` turned into an absolute
    /// expiry (saturating; `missing_expiry` when the response has none). Apply it to a credential
    /// with [`Credential::apply_tokens`](oauth_core::Credential::apply_tokens).
    pub fn into_token_set(self, now: DateTime<Utc>, missing_expiry: MissingExpiry) -> TokenSet {
        let expires_at = match self.expires_in {
            Some(d) => Some(after(now, d)),
            None => match missing_expiry {
                MissingExpiry::NoExpiry => None,
                MissingExpiry::Assume(d) => Some(after(now, d)),
                MissingExpiry::JwtExpOr(d) => Some(
                    jwt_exp(self.access_token.expose_secret()).unwrap_or_else(|| after(now, d)),
                ),
            },
        };
        let mut tokens = TokenSet::new(self.access_token.expose_secret());
        tokens.refresh_token = self.refresh_token;
        tokens.expires_at = expires_at;
        tokens.refresh_token_expires_at = self.refresh_token_expires_in.map(|d| after(now, d));
        tokens.scopes = self.scope;
        tokens
    }
}

/// The `exp` claim of a JWT, unverified.
fn jwt_exp(token: &str) -> Option<DateTime<Utc>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    DateTime::from_timestamp(exp, 0)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};
    use oauth_core::Credential;

    use super::*;

    fn apply(
        r: &TokenResponse,
        old: &Credential,
        now: DateTime<Utc>,
        missing: MissingExpiry,
    ) -> Credential {
        let mut out = old.clone();
        out.apply_tokens(r.clone().into_token_set(now, missing), now);
        out
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn parses_numbers_and_numeric_strings() {
        let r = parse_token_response(
            br#"{"access_token":"a","token_type":"bearer","expires_in":"3600","refresh_token_expires_in":7200.9,"scope":"x  y"}"#,
        )
        .expect("valid");
        assert_eq!(r.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(r.refresh_token_expires_in, Some(Duration::from_secs(7200)));
        assert_eq!(r.scope, Some(vec!["x".to_owned(), "y".to_owned()]));
        assert!(r.refresh_token.is_none());
    }

    #[test]
    fn rejects_bad_bodies_with_reasons() {
        let cases: [(&[u8], MalformedReason); 8] = [
            (b"", MalformedReason::Empty),
            (b"  <html>oops</html>", MalformedReason::Html),
            (b"access_token=a", MalformedReason::NotJson),
            (b"[1]", MalformedReason::NotAnObject),
            (
                br#"{"token_type":"Bearer"}"#,
                MalformedReason::MissingAccessToken,
            ),
            (
                br#"{"access_token":""}"#,
                MalformedReason::MissingAccessToken,
            ),
            (
                br#"{"access_token":"a","expires_in":-1}"#,
                MalformedReason::InvalidField("expires_in"),
            ),
            (
                br#"{"access_token":"a","token_type":"mac"}"#,
                MalformedReason::UnsupportedTokenType,
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse_token_response(body).err(), Some(want));
        }
    }

    #[test]
    fn error_bodies_in_both_shapes() {
        assert_eq!(
            parse_error_response(br#"{"error":"invalid_grant","error_description":"x"}"#),
            Some(OAuthErrorCode::InvalidGrant)
        );
        assert_eq!(
            parse_error_response(br#"{"error":{"code":"refresh_token_reused","message":"m"}}"#),
            Some(OAuthErrorCode::RefreshTokenReused)
        );
        assert_eq!(
            parse_error_response(br#"{"error":"something_new"}"#),
            Some(OAuthErrorCode::Unrecognized)
        );
        assert_eq!(parse_error_response(br#"{"access_token":"a"}"#), None);
        for no_error in [
            br#"{"error":null}"#.as_slice(),
            br#"{"error":""}"#,
            br#"{"error":{}}"#,
            br#"{"error":false}"#,
        ] {
            assert_eq!(parse_error_response(no_error), None);
        }
    }

    #[test]
    fn rotation_replaces_and_absence_keeps_the_refresh_token() {
        let old = Credential::new("c", "old-at", now())
            .expect("valid")
            .with_refresh_token("old-rt");
        let kept = apply(
            &parse_token_response(br#"{"access_token":"new-at","expires_in":60}"#).expect("valid"),
            &old,
            now(),
            MissingExpiry::default(),
        );
        assert_eq!(
            kept.refresh_token.as_ref().map(ExposeSecret::expose_secret),
            Some("old-rt")
        );
        assert_eq!(kept.access_token.expose_secret(), "new-at");
        assert_eq!(kept.expires_at, Some(now() + TimeDelta::seconds(60)));
        assert_eq!((kept.refresh_count, kept.last_refresh), (1, Some(now())));
        let rotated = apply(
            &parse_token_response(
                br#"{"access_token":"new-at","expires_in":60,"refresh_token":"new-rt"}"#,
            )
            .expect("valid"),
            &old,
            now(),
            MissingExpiry::default(),
        );
        assert_eq!(
            rotated
                .refresh_token
                .as_ref()
                .map(ExposeSecret::expose_secret),
            Some("new-rt")
        );
    }

    #[test]
    fn missing_expiry_policies() {
        let old = Credential::new("c", "a", now()).expect("valid");
        let exp = now().timestamp() + 600;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        let body = format!(r#"{{"access_token":"h.{payload}.s"}}"#);
        let r = parse_token_response(body.as_bytes()).expect("valid");
        let hour = Duration::from_secs(3600);
        assert_eq!(
            apply(&r, &old, now(), MissingExpiry::JwtExpOr(hour)).expires_at,
            Some(now() + TimeDelta::seconds(600))
        );
        assert_eq!(
            apply(&r, &old, now(), MissingExpiry::Assume(hour)).expires_at,
            Some(now() + TimeDelta::hours(1))
        );
        assert_eq!(
            apply(&r, &old, now(), MissingExpiry::NoExpiry).expires_at,
            None
        );
    }
}
