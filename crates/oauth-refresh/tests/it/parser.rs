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

fn any_json() -> impl Strategy<Value = Value> {
    any_json_scalar().prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// Issue 13: a success body with a usable access token is never rejected, whatever the other
    /// fields hold, and a rotated refresh token sent as a string is always kept.
    #[test]
    fn a_usable_token_is_never_discarded(
        access in "[A-Za-z0-9._-]{1,64}",
        refresh in proptest::option::of("[A-Za-z0-9._-]{1,64}"),
        fields in proptest::collection::btree_map(
            prop_oneof![
                Just("expires_in".to_owned()),
                Just("refresh_token_expires_in".to_owned()),
                Just("scope".to_owned()),
                Just("token_type".to_owned()),
                Just("id_token".to_owned()),
                Just("error".to_owned()),
                "[a-z_]{1,16}",
            ],
            any_json(),
            0..8,
        ),
    ) {
        let mut body: serde_json::Map<String, Value> = fields.into_iter().collect();
        body.insert("access_token".into(), Value::from(access.clone()));
        match &refresh {
            Some(rt) => body.insert("refresh_token".into(), Value::from(rt.clone())),
            None => body.remove("refresh_token"),
        };
        let text = Value::Object(body).to_string();
        let parsed = parse_token_response(text.as_bytes());
        prop_assert!(parsed.is_ok(), "{text}: {parsed:?}");
        let tokens = parsed
            .expect("checked")
            .into_token_set(chrono::Utc::now(), oauth_refresh::MissingExpiry::default());
        use oauth_core::ExposeSecret;
        prop_assert_eq!(tokens.access_token.expose_secret(), access.as_str());
        prop_assert_eq!(
            tokens.refresh_token.as_ref().map(|t| t.expose_secret().to_owned()),
            refresh.clone()
        );
        // Neither token is copied into the extra fields.
        for value in tokens.extra.values() {
            prop_assert!(value != &access && Some(value) != refresh.as_ref());
        }
    }
}
