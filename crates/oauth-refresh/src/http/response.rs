//! Parsing token endpoint responses (RFC 6749 sections 5.1 and 5.2).
//!
//! The success parser is lenient on purpose: once the server has answered 2xx with an access
//! token, the refresh token that was presented is spent, and dropping the new tokens over an odd
//! field would lose the grant. Every field but `access_token` degrades to "unknown" (or the
//! configured default) and is reported as a [`TokenQuirk`].

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use oauth_core::{ExposeSecret, SecretString, TokenQuirk, TokenSet, after};
use serde_json::{Map, Value};

use crate::error::{MalformedReason, OAuthErrorCode};

/// What to assume when a successful response has no usable `expires_in`.
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

/// The longest access-token lifetime believed (366 days). A longer `expires_in` (or JWT `exp`, or
/// [`MissingExpiry`] assumption) is clamped to it and reported as [`TokenQuirk::ExpiryClamped`]:
/// a token that claims to live for centuries is refreshed once a year, which costs nothing, and
/// no expiry arithmetic can overflow.
pub const MAX_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 86_400);

/// The longest refresh-token lifetime believed (100 years); beyond it the expiry is unknown.
const MAX_REFRESH_TOKEN_LIFETIME_SECS: f64 = 100.0 * 365.0 * 86_400.0;

/// Extra fields longer than this are dropped (reported as [`TokenQuirk::OddField`]): they are
/// persisted with the credential.
const MAX_EXTRA_VALUE_BYTES: usize = 16 * 1024;
/// At most this many extra fields are kept.
const MAX_EXTRA_FIELDS: usize = 64;

/// Fields of the response that have a place of their own, or that mean nothing on a success (an
/// `error` member beside a token), and so never land in `extra`.
const KNOWN_FIELDS: [&str; 10] = [
    "access_token",
    "refresh_token",
    "token_type",
    "expires_in",
    "refresh_token_expires_in",
    "scope",
    "id_token",
    "error",
    "error_description",
    "error_uri",
];

/// A successful token response (RFC 6749 section 5.1), as parsed by [`parse_token_response`].
///
/// Tokens are [`SecretString`]s: the `Debug` output is redacted (extra values are shown only by
/// name).
#[derive(Clone)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The new access token (never empty).
    pub access_token: SecretString,
    /// `token_type` as sent, if it was a string (anything other than `Bearer` is a quirk).
    pub token_type: Option<String>,
    /// `expires_in`, when usable (a JSON number or a numeric string, above zero; fractions are
    /// truncated). An unusable one is `None` with [`TokenQuirk::UnusableExpiresIn`].
    pub expires_in: Option<Duration>,
    /// The rotated refresh token; `None` when the server sent none (keep the old one).
    pub refresh_token: Option<SecretString>,
    /// `refresh_token_expires_in`, when sent and usable.
    pub refresh_token_expires_in: Option<Duration>,
    /// `scope`, split on whitespace (or read from an array of strings, a quirk); `None` when
    /// absent (the granted scope is unchanged).
    pub scope: Option<Vec<String>>,
    /// `id_token`, when sent.
    pub id_token: Option<SecretString>,
    /// Every other field, as text (non-string JSON values as their JSON text; `null` dropped).
    pub extra: BTreeMap<String, String>,
    /// What was odd but tolerated.
    pub quirks: Vec<TokenQuirk>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token)
            .field("refresh_token_expires_in", &self.refresh_token_expires_in)
            .field("scope", &self.scope)
            .field("id_token", &self.id_token)
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .field("quirks", &self.quirks)
            .finish()
    }
}

/// Parses a 2xx token response body, leniently.
///
/// Only a missing or unusable `access_token` (or a body that is not a JSON object) is an error:
/// it is the one thing without which nothing can be kept. Everything else that is odd is
/// tolerated and listed in [`TokenResponse::quirks`]: `expires_in` as text (`"3600s"`), negative,
/// zero or absurd; `refresh_token_expires_in` as `"never"`; `scope` as an array; `token_type`
/// other than `Bearer` (`"DPoP"`, `"N_A"`); a field of the wrong JSON type. `null` and empty
/// strings count as absent. Never panics, whatever the bytes.
///
/// # Errors
/// [`MalformedReason`]: empty body, HTML, not JSON, not an object, no usable access token.
pub fn parse_token_response(body: &[u8]) -> Result<TokenResponse, MalformedReason> {
    let obj = parse_object(body)?;
    let access_token = match obj.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => SecretString::from(s.as_str()),
        Some(Value::String(_) | Value::Null) | None => {
            return Err(MalformedReason::MissingAccessToken);
        }
        Some(_) => return Err(MalformedReason::InvalidField("access_token")),
    };
    let mut quirks = Vec::new();
    let mut quirk = |q: TokenQuirk| {
        if !quirks.contains(&q) {
            quirks.push(q);
        }
    };

    let token_type = match lenient_string(&obj, "token_type") {
        Ok(t) => t,
        Err(()) => {
            quirk(TokenQuirk::UnexpectedTokenType);
            None
        }
    };
    if token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        quirk(TokenQuirk::UnexpectedTokenType);
    }
    let refresh_token = match lenient_string(&obj, "refresh_token") {
        Ok(t) => t.map(SecretString::from),
        Err(()) => {
            quirk(TokenQuirk::OddField);
            None
        }
    };
    let id_token = match lenient_string(&obj, "id_token") {
        Ok(t) => t.map(SecretString::from),
        Err(()) => {
            quirk(TokenQuirk::OddField);
            None
        }
    };
    let scope = match obj.get("scope") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.split_whitespace().map(str::to_owned).collect()),
        Some(Value::Array(items)) => {
            quirk(TokenQuirk::OddScope);
            let scopes: Vec<String> = items
                .iter()
                .filter_map(Value::as_str)
                .flat_map(str::split_whitespace)
                .map(str::to_owned)
                .collect();
            (!scopes.is_empty()).then_some(scopes)
        }
        Some(_) => {
            quirk(TokenQuirk::OddScope);
            None
        }
    };
    let expires_in = match seconds(&obj, "expires_in") {
        Seconds::Absent => None,
        Seconds::Value(secs) if secs >= 1.0 => Some(clamped_secs(secs)),
        Seconds::Value(_) | Seconds::Unusable => {
            quirk(TokenQuirk::UnusableExpiresIn);
            None
        }
    };
    let refresh_token_expires_in = match seconds(&obj, "refresh_token_expires_in") {
        Seconds::Absent => None,
        Seconds::Value(secs) if secs > 0.0 && secs <= MAX_REFRESH_TOKEN_LIFETIME_SECS => {
            Some(clamped_secs(secs))
        }
        Seconds::Value(_) | Seconds::Unusable => {
            quirk(TokenQuirk::UnusableRefreshTokenExpiresIn);
            None
        }
    };

    let secret_values = [Some(&access_token), refresh_token.as_ref()];
    let mut extra = BTreeMap::new();
    for (key, value) in &obj {
        if KNOWN_FIELDS.contains(&key.as_str()) {
            continue;
        }
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        // A token repeated under another name is not metadata: never copy it there.
        if secret_values
            .iter()
            .flatten()
            .any(|t| t.expose_secret() == text)
        {
            continue;
        }
        if text.len() > MAX_EXTRA_VALUE_BYTES || extra.len() >= MAX_EXTRA_FIELDS {
            quirk(TokenQuirk::OddField);
            continue;
        }
        extra.insert(key.clone(), text);
    }

    Ok(TokenResponse {
        access_token,
        token_type,
        expires_in,
        refresh_token,
        refresh_token_expires_in,
        scope,
        id_token,
        extra,
        quirks,
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
    // A UTF-8 byte-order mark is not JSON, but some servers send one.
    let trimmed = trimmed
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(trimmed)
        .trim_ascii();
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

/// A string field: `Ok(None)` when absent, `null` or empty; `Err(())` for another JSON type.
fn lenient_string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, ()> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

enum Seconds {
    Absent,
    Value(f64),
    Unusable,
}

/// A number of seconds, as a JSON number or a numeric string.
fn seconds(obj: &Map<String, Value>, field: &str) -> Seconds {
    let secs = match obj.get(field) {
        None | Some(Value::Null) => return Seconds::Absent,
        Some(Value::String(s)) if s.trim().is_empty() => return Seconds::Absent,
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match secs {
        Some(secs) if secs.is_finite() => Seconds::Value(secs),
        _ => Seconds::Unusable,
    }
}

/// Whole seconds, saturating (`secs` is finite and positive here; anything past `Duration`'s
/// range saturates, and the caller clamps to its own maximum).
fn clamped_secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.trunc()).unwrap_or(Duration::MAX)
}

impl TokenResponse {
    /// What the response means at `now`, as a [`TokenSet`]: the tokens, with `expires_in` turned
    /// into an absolute expiry (or `missing_expiry` when the response has no usable one), clamped
    /// to [`MAX_ACCESS_TOKEN_LIFETIME`], with saturating arithmetic. The quirks found while
    /// parsing are carried over (plus [`TokenQuirk::ExpiryClamped`] when the clamp applied).
    ///
    /// Apply the set to a credential with
    /// [`Credential::apply_tokens`](oauth_core::Credential::apply_tokens).
    pub fn into_token_set(self, now: DateTime<Utc>, missing_expiry: MissingExpiry) -> TokenSet {
        let mut quirks = self.quirks;
        let latest = after(now, MAX_ACCESS_TOKEN_LIFETIME);
        let expires_at = match self.expires_in {
            Some(d) => Some(after(now, d)),
            None => match missing_expiry {
                MissingExpiry::NoExpiry => None,
                MissingExpiry::Assume(d) => Some(after(now, d)),
                MissingExpiry::JwtExpOr(d) => Some(
                    jwt_exp(self.access_token.expose_secret())
                        .filter(|exp| *exp > now)
                        .unwrap_or_else(|| after(now, d)),
                ),
            },
        };
        let expires_at = expires_at.map(|at| {
            if at > latest {
                if !quirks.contains(&TokenQuirk::ExpiryClamped) {
                    quirks.push(TokenQuirk::ExpiryClamped);
                }
                latest
            } else {
                at
            }
        });
        let mut tokens = TokenSet::new(self.access_token.expose_secret());
        tokens.refresh_token = self.refresh_token;
        tokens.expires_at = expires_at;
        tokens.refresh_token_expires_at = self.refresh_token_expires_in.map(|d| after(now, d));
        tokens.scopes = self.scope;
        tokens.id_token = self.id_token;
        tokens.extra = self.extra;
        tokens.quirks = quirks;
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
        assert!(r.quirks.is_empty(), "{:?}", r.quirks);
    }

    #[test]
    fn rejects_only_bodies_without_a_usable_access_token() {
        let cases: [(&[u8], MalformedReason); 7] = [
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
                br#"{"access_token":42}"#,
                MalformedReason::InvalidField("access_token"),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse_token_response(body).err(), Some(want));
        }
    }

    #[test]
    fn odd_fields_are_quirks_and_the_tokens_are_kept() {
        let cases: [(&str, TokenQuirk); 11] = [
            (r#""scope":["a","b"]"#, TokenQuirk::OddScope),
            (r#""scope":7"#, TokenQuirk::OddScope),
            (r#""token_type":"DPoP""#, TokenQuirk::UnexpectedTokenType),
            (r#""token_type":"N_A""#, TokenQuirk::UnexpectedTokenType),
            (r#""token_type":1"#, TokenQuirk::UnexpectedTokenType),
            (r#""expires_in":"3600s""#, TokenQuirk::UnusableExpiresIn),
            (r#""expires_in":-1"#, TokenQuirk::UnusableExpiresIn),
            (r#""expires_in":0"#, TokenQuirk::UnusableExpiresIn),
            (r#""expires_in":true"#, TokenQuirk::UnusableExpiresIn),
            (
                r#""refresh_token_expires_in":"never""#,
                TokenQuirk::UnusableRefreshTokenExpiresIn,
            ),
            (r#""id_token":{"a":1}"#, TokenQuirk::OddField),
        ];
        for (field, quirk) in cases {
            let body = format!(r#"{{"access_token":"at","refresh_token":"rt",{field}}}"#);
            let r = parse_token_response(body.as_bytes()).expect(field);
            assert_eq!(r.access_token.expose_secret(), "at", "{field}");
            assert_eq!(
                r.refresh_token.as_ref().map(ExposeSecret::expose_secret),
                Some("rt"),
                "{field}"
            );
            assert_eq!(r.quirks, [quirk], "{field}");
        }
        let r =
            parse_token_response(br#"{"access_token":"at","scope":["a b","c",3]}"#).expect("valid");
        assert_eq!(r.scope, Some(vec!["a".into(), "b".into(), "c".into()]));
    }

    #[test]
    fn expiry_is_clamped_and_unusable_expiry_falls_back_to_the_default() {
        let hour = Duration::from_secs(3600);
        let r = parse_token_response(br#"{"access_token":"a","expires_in":6311520000}"#)
            .expect("200 years parses");
        let t = r.into_token_set(now(), MissingExpiry::Assume(hour));
        assert_eq!(t.expires_at, Some(after(now(), MAX_ACCESS_TOKEN_LIFETIME)));
        assert_eq!(t.quirks, [TokenQuirk::ExpiryClamped]);
        let r = parse_token_response(br#"{"access_token":"a","expires_in":1e300}"#)
            .expect("absurd parses");
        let t = r.into_token_set(DateTime::<Utc>::MAX_UTC, MissingExpiry::Assume(hour));
        assert_eq!(t.expires_at, Some(DateTime::<Utc>::MAX_UTC));
        let r =
            parse_token_response(br#"{"access_token":"a","expires_in":"soon"}"#).expect("parses");
        assert_eq!(
            r.clone()
                .into_token_set(now(), MissingExpiry::Assume(hour))
                .expires_at,
            Some(now() + TimeDelta::hours(1))
        );
        assert_eq!(
            r.into_token_set(now(), MissingExpiry::NoExpiry).expires_at,
            None
        );
    }

    #[test]
    fn id_token_and_extra_fields_are_kept_but_never_the_tokens() {
        let r = parse_token_response(
            br#"{"access_token":"at-1","refresh_token":"rt-1","id_token":"idt","account_id":"acct","resource_url":"portal.qwen.ai","n":3,"obj":{"k":true},"copy":"rt-1","also":"at-1","gone":null,"error":null}"#,
        )
        .expect("valid");
        let t = r.into_token_set(now(), MissingExpiry::default());
        assert_eq!(
            t.id_token.as_ref().map(ExposeSecret::expose_secret),
            Some("idt")
        );
        let extra: Vec<(&str, &str)> = t
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            extra,
            [
                ("account_id", "acct"),
                ("n", "3"),
                ("obj", r#"{"k":true}"#),
                ("resource_url", "portal.qwen.ai"),
            ]
        );
        assert!(t.quirks.is_empty());
    }

    #[test]
    fn debug_shows_no_token_id_token_or_extra_value() {
        let body = br#"{"access_token":"AT-SECRET","refresh_token":"RT-SECRET","id_token":"ID-SECRET","session_key":"EXTRA-SECRET","scope":["a"]}"#;
        let r = parse_token_response(body).expect("valid");
        let t = r.clone().into_token_set(now(), MissingExpiry::default());
        for shown in [format!("{r:?}"), format!("{t:?}")] {
            for secret in ["AT-SECRET", "RT-SECRET", "ID-SECRET", "EXTRA-SECRET"] {
                assert!(!shown.contains(secret), "{shown}");
            }
            assert!(
                shown.contains("session_key") && shown.contains("OddScope"),
                "{shown}"
            );
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
