//! No secret reaches Debug output, a health snapshot or an event.

use chrono::{TimeZone, Utc};
use oauth_core::{
    Credential, CredentialHealth, Event, EventKind, FailureKind, HealthPolicy, SecretString,
};

const SECRETS: [&str; 3] = [
    "access-SECRET-1111",
    "refresh-SECRET-2222",
    "client-SECRET-3333",
];

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} leaks {s}: {text}");
    }
}

#[test]
fn no_secret_in_debug_snapshots_or_events() {
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    let cred = Credential::new("acct", SECRETS[0], now)
        .expect("valid")
        .with_refresh_token(SECRETS[1])
        .with_client("client-id", Some(SECRETS[2].to_owned()))
        .with_expires_at(now);
    assert_clean("Credential Debug", &format!("{cred:?}"));
    assert_clean("Credential pretty Debug", &format!("{cred:#?}"));
    assert_clean(
        "PersistedCredential Debug",
        &format!("{:?}", cred.persisted()),
    );
    assert_clean(
        "SecretString Debug",
        &format!("{:?}", SecretString::from(SECRETS[0])),
    );
    assert_clean("access token Debug", &format!("{:?}", cred.access_token));

    let p = HealthPolicy::default();
    let mut h = CredentialHealth::default();
    h.record_refresh_failure(FailureKind::PermanentAuth, cred.expires_at, &p, now);
    let snap = h.snapshot(&p, now);
    assert_clean("HealthSnapshot Debug", &format!("{snap:?}"));
    assert_clean(
        "HealthSnapshot JSON",
        &serde_json::to_string(&snap).expect("serializes"),
    );
    assert_clean("CredentialHealth Debug", &format!("{h:?}"));

    let events = [
        Event::new(
            now,
            EventKind::RefreshFailed {
                credential: cred.id.clone(),
                reason: FailureKind::PermanentAuth,
                consecutive_failures: 1,
            },
        ),
        Event::new(
            now,
            EventKind::Refreshed {
                credential: cred.id.clone(),
                expires_at: cred.expires_at,
                refresh_token_rotated: true,
            },
        ),
    ];
    for e in &events {
        assert_clean("Event Debug", &format!("{e:?}"));
        assert_clean("Event JSON", &serde_json::to_string(e).expect("serializes"));
    }

    // The deliberate persistence view does hold them: that is its purpose.
    let persisted = serde_json::to_string(&cred.persisted()).expect("serializes");
    assert!(SECRETS.iter().all(|s| persisted.contains(s)));
}

#[test]
fn event_json_shape() {
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    let e = Event::new(
        now,
        EventKind::PoolExhausted {
            provider: "gemini".into(),
            next_available_at: None,
        },
    );
    let v = serde_json::to_value(&e).expect("serializes");
    assert_eq!(v["type"], "pool_exhausted");
    assert_eq!(v["provider"], "gemini");
    assert_eq!(e.kind.name(), "pool_exhausted");
    let back: Event = serde_json::from_value(v).expect("round trip");
    assert_eq!(back, e);
}
