use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oauth_core::{Credential, CredentialError, ExposeSecret, Usage};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
        .single()
        .expect("valid date")
}

fn expiring_in(d: Option<TimeDelta>) -> Credential {
    let c = Credential::new("c1", "at", t0()).expect("valid credential");
    match d {
        Some(d) => c.with_expires_at(t0() + d),
        None => c,
    }
}

#[test]
fn needs_refresh_go_vectors() {
    let cases = [
        (Some(TimeDelta::hours(1)), false),
        (Some(TimeDelta::hours(-1)), true),
        (Some(TimeDelta::minutes(3)), true),
        (Some(TimeDelta::minutes(6)), false),
        (Some(TimeDelta::minutes(10)), false),
        (None, false),
    ];
    for (d, want) in cases {
        let c = expiring_in(d);
        assert_eq!(c.needs_refresh(t0()), want, "expiry {d:?}");
        assert_eq!(c.is_expired(t0()), want, "expiry {d:?}");
    }
}

#[test]
fn the_buffer_boundary_is_strict() {
    let c = expiring_in(Some(TimeDelta::minutes(5)));
    assert!(!c.needs_refresh(t0()));
    assert!(c.needs_refresh(t0() + TimeDelta::milliseconds(1)));
}

#[test]
fn access_token_validity_has_no_buffer() {
    let c = expiring_in(Some(TimeDelta::minutes(3)));
    assert!(c.access_token_valid(t0()));
    assert!(!c.access_token_valid(t0() + TimeDelta::minutes(3)));
    assert!(expiring_in(None).access_token_valid(t0()));
    assert_eq!(
        c.time_to_expiry(t0() + TimeDelta::hours(1)),
        Some(std::time::Duration::ZERO)
    );
}

#[test]
fn bad_credentials_are_typed_errors() {
    assert!(matches!(
        Credential::new("", "at", t0()),
        Err(CredentialError::InvalidId { .. })
    ));
    assert!(matches!(
        Credential::new("c1", "", t0()),
        Err(CredentialError::EmptyAccessToken { .. })
    ));
}

#[test]
fn persisted_round_trip_keeps_secrets_and_creation_time() {
    let created = t0() - TimeDelta::days(40);
    let c = Credential::new("c1", "at-1", created)
        .expect("valid")
        .with_refresh_token("rt-1")
        .with_client("client", Some("shh".into()))
        .with_scopes(["a", "b"])
        .with_expires_at(t0());
    let json = serde_json::to_string(&c.persisted()).expect("serializes");
    let back: Credential = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back.created_at, created);
    assert_eq!(back.access_token.expose_secret(), "at-1");
    assert_eq!(
        back.refresh_token.as_ref().map(ExposeSecret::expose_secret),
        Some("rt-1")
    );
    assert_eq!(
        back.client_secret.as_ref().map(ExposeSecret::expose_secret),
        Some("shh")
    );
    assert_eq!(back.scopes, ["a", "b"]);
    assert!(back.same_tokens(&c));
}

#[test]
fn usage_counts_total_when_only_total_is_filled() {
    let total_only = Usage {
        total_tokens: 100,
        ..Usage::default()
    };
    assert_eq!(total_only.tokens(), 100);
    let split = Usage {
        prompt_tokens: 30,
        completion_tokens: 20,
        total_tokens: 0,
    };
    assert_eq!(split.tokens(), 50);
    let both = Usage {
        prompt_tokens: 30,
        completion_tokens: 20,
        total_tokens: 55,
    };
    assert_eq!(both.tokens(), 55);
}

#[test]
fn expiry_checks_saturate_near_the_ends_of_time() {
    // `expires_at - buffer` before the earliest representable time used to panic
    // ("DateTime - TimeDelta overflowed").
    let early = Credential::new("c1", "at", t0())
        .expect("valid credential")
        .with_expires_at(DateTime::<Utc>::MIN_UTC + TimeDelta::minutes(2));
    assert!(early.needs_refresh(t0()));
    assert!(early.is_expired(t0()));
    assert!(early.expires_within(std::time::Duration::MAX, DateTime::<Utc>::MIN_UTC));
    let late = expiring_in(Some(TimeDelta::hours(1)));
    assert!(late.expires_within(std::time::Duration::MAX, t0()));
    assert!(!late.expires_within(std::time::Duration::ZERO, t0()));
    let never = Credential::new("c1", "at", t0())
        .expect("valid credential")
        .with_expires_at(DateTime::<Utc>::MAX_UTC);
    assert!(!never.needs_refresh(DateTime::<Utc>::MAX_UTC - TimeDelta::minutes(6)));
    assert!(never.needs_refresh(DateTime::<Utc>::MAX_UTC));
}
