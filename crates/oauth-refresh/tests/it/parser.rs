//! The token-response parser never panics, whatever it is fed.

use oauth_refresh::{parse_error_response, parse_token_response};
use proptest::prelude::*;
use serde_json::{Value, json};

fn any_json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
        "[0-9 .eE+-]{0,24}".prop_map(Value::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_token_response(&bytes);
        let _ = parse_error_response(&bytes);
    }

    #[test]
    fn token_shaped_objects_never_panic(
        access in any_json_scalar(),
        expires in any_json_scalar(),
        refresh in any_json_scalar(),
        refresh_expires in any_json_scalar(),
        scope in any_json_scalar(),
        token_type in any_json_scalar(),
        error in any_json_scalar(),
    ) {
        let body = json!({
            "access_token": access,
            "expires_in": expires,
            "refresh_token": refresh,
            "refresh_token_expires_in": refresh_expires,
            "scope": scope,
            "token_type": token_type,
            "error": error,
        })
        .to_string();
        if let Ok(parsed) = parse_token_response(body.as_bytes()) {
            // Whatever parsed, applying it never panics either.
            let mut cred = oauth_core::Credential::new("p", "old", chrono::Utc::now()).expect("valid");
            let now = chrono::Utc::now();
            let tokens = parsed.into_token_set(now, oauth_refresh::MissingExpiry::JwtExpOr(std::time::Duration::from_secs(60)));
            let _ = cred.apply_tokens(tokens, now);
        }
        let _ = parse_error_response(body.as_bytes());
    }
}
