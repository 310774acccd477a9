//! Reading claims from a JWT's payload **without verifying it**: the account files' id tokens
//! carry the e-mail address, the plan and the account id, and Codex's access token carries its
//! expiry. Nothing here is used to decide trust; a token that does not decode yields no claims.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// URL-safe base64, padding optional (JWTs omit it; some writers keep it).
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The claims object of `jwt` (`header.payload.signature`), or `None` when it is not a JWT, its
/// payload is not base64url, or not a JSON object. Never panics, whatever the input.
pub(crate) fn claims(jwt: &str) -> Option<Map<String, Value>> {
    let mut parts = jwt.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if header.is_empty() || payload.is_empty() {
        return None;
    }
    let bytes = URL_SAFE_ANY_PAD.decode(payload).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// What an OpenID id token (Google's, OpenAI's) says about the account.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct IdClaims {
    pub(crate) email: Option<String>,
    pub(crate) plan: Option<String>,
    pub(crate) account_id: Option<String>,
}

/// The account claims of an id token. OpenAI's tokens keep the plan and account id under
/// `https://api.openai.com/auth` and may keep the e-mail under `https://api.openai.com/profile`
/// (openai/codex `codex-rs/login/src/token_data.rs`, `parse_chatgpt_jwt_claims`).
pub(crate) fn id_claims(jwt: &str) -> IdClaims {
    let Some(c) = claims(jwt) else {
        return IdClaims::default();
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let auth = c.get("https://api.openai.com/auth");
    let profile = c.get("https://api.openai.com/profile");
    IdClaims {
        email: text(c.get("email")).or_else(|| text(profile.and_then(|p| p.get("email")))),
        plan: text(auth.and_then(|a| a.get("chatgpt_plan_type"))),
        account_id: text(auth.and_then(|a| a.get("chatgpt_account_id"))),
    }
}

/// The `exp` claim (seconds since the epoch) of a JWT, if it has a usable one.
pub(crate) fn expiry(jwt: &str) -> Option<DateTime<Utc>> {
    let exp = claims(jwt)?.get("exp")?.as_i64()?;
    DateTime::from_timestamp(exp, 0)
}

#[cfg(test)]
pub(crate) fn make(claims: &Value) -> String {
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.sig",
        enc.encode(br#"{"alg":"none"}"#),
        enc.encode(claims.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_openai_claims() {
        let jwt = make(&json!({
            "https://api.openai.com/profile": {"email": "a@example.com"},
            "https://api.openai.com/auth": {"chatgpt_plan_type": "pro", "chatgpt_account_id": "acc-1"},
            "exp": 1_900_000_000
        }));
        let c = id_claims(&jwt);
        assert_eq!(c.email.as_deref(), Some("a@example.com"));
        assert_eq!(c.plan.as_deref(), Some("pro"));
        assert_eq!(c.account_id.as_deref(), Some("acc-1"));
        assert_eq!(expiry(&jwt).map(|t| t.timestamp()), Some(1_900_000_000));
    }

    #[test]
    fn bad_tokens_yield_nothing() {
        for bad in [
            "",
            "abc",
            "a.b",
            "a..c",
            "a.b.c.d",
            "a.!!!.c",
            "a.bm90IGpzb24.c", // "not json"
            "a.WzFd.c",        // "[1]": not an object
            "\u{0}.\u{ffff}.x",
        ] {
            assert_eq!(claims(bad), None, "{bad:?}");
            assert_eq!(id_claims(bad), IdClaims::default());
            assert_eq!(expiry(bad), None);
        }
        // Padding is accepted; an absurd `exp` is ignored.
        let padded = format!("e30.{}.s", "eyJleHAiOjF9"); // {"exp":1}
        assert!(claims(&padded).is_some());
        let absurd = make(&json!({"exp": i64::MAX}));
        assert_eq!(expiry(&absurd), None);
    }
}
