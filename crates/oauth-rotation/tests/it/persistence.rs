//! Rotation age and state survive a restart; events and errors carry no secrets.

use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::{Clock, Credential, EventKind};
use oauth_rotation::{Rotation, RotationPolicy, RotationState, RotationTracker};

use crate::{clock, id, t0};

const DAY: Duration = Duration::from_secs(24 * 3600);
const ACCESS: &str = "sk-ant-oat01-access-SECRET";
const REFRESH: &str = "sk-ant-ort01-refresh-SECRET";

#[test]
fn creation_time_survives_a_restart_so_rotation_age_does_too() {
    let clock = clock();
    let cred = Credential::new("team", ACCESS, clock.now())
        .expect("credential")
        .with_refresh_token(REFRESH);

    // Process 1: tracked at creation, persisted.
    let mut before =
        RotationTracker::new(RotationPolicy::enabled().with_rotation_interval(DAY * 30));
    before
        .track(cred.id.clone(), cred.created_at)
        .expect("track");
    let stored = serde_json::to_string(&cred.persisted()).expect("serialize");

    // Process 2, 29 days later: the credential is read back and tracked again.
    clock.advance(DAY * 29);
    let loaded: Credential = serde_json::from_str(&stored).expect("deserialize");
    assert_eq!(loaded.created_at, t0());
    let mut after =
        RotationTracker::new(RotationPolicy::enabled().with_rotation_interval(DAY * 30));
    after
        .track(loaded.id.clone(), loaded.created_at)
        .expect("track");
    assert!(after.check_rotation_needed(clock.now()).is_empty());
    assert_eq!(
        after.state(&id("team")).map(|s| s.age(clock.now())),
        Some(DAY * 29),
        "the age was not reset by the restart"
    );
    clock.advance(DAY);
    assert_eq!(after.check_rotation_needed(clock.now()), vec![id("team")]);
}

#[tokio::test]
async fn a_marked_state_survives_serde_and_finishes_after_restart() {
    let clock = clock();
    let rotation = Rotation::without_hooks(RotationPolicy::default().with_grace_period(DAY));
    rotation
        .track(id("old"), t0() - TimeDelta::days(40))
        .expect("track");
    rotation
        .mark_for_rotation(&id("old"), id("new"), clock.now(), clock.now())
        .await
        .expect("mark");
    let saved: Vec<(String, String)> = rotation.with_tracker(|t| {
        t.states()
            .map(|(id, s)| {
                (
                    id.to_string(),
                    serde_json::to_string(s).expect("serialize state"),
                )
            })
            .collect()
    });

    let mut restored = RotationTracker::new(RotationPolicy::default().with_grace_period(DAY));
    for (name, json) in &saved {
        let state: RotationState = serde_json::from_str(json).expect("deserialize state");
        assert_eq!(rotation.state(&id(name)).as_ref(), Some(&state));
        restored.restore(id(name), state).expect("restore");
    }
    assert_eq!(
        restored.state(&id("old")).map(|s| s.created_at),
        Some(t0() - TimeDelta::days(40))
    );
    assert_eq!(restored.replacement_of(&id("old")), Some(&id("new")));
    clock.advance(DAY + Duration::from_secs(1));
    assert_eq!(
        restored.expired_for_decommission(clock.now()),
        vec![id("old")]
    );

    let restarted = Rotation::from_tracker(restored, rotation.hooks().clone());
    let event = restarted
        .complete_rotation(&id("old"), clock.now(), |_| {})
        .await
        .expect("complete");
    assert_eq!(
        event.kind,
        EventKind::Decommissioned {
            credential: id("old")
        }
    );
}

#[test]
fn an_active_state_deserializes_from_just_its_creation_time() {
    let state: RotationState =
        serde_json::from_str(r#"{"created_at":"2026-03-01T12:00:00Z"}"#).expect("state");
    assert_eq!(state, RotationState::new(t0()));
    assert!(state.is_consistent());
}

#[tokio::test]
async fn events_and_errors_carry_ids_not_secrets() {
    let clock = clock();
    let old = Credential::new("old", ACCESS, t0())
        .expect("credential")
        .with_refresh_token(REFRESH);
    let rotation = Rotation::without_hooks(
        RotationPolicy::enabled()
            .with_rotation_interval(DAY)
            .with_grace_period(DAY),
    );
    rotation
        .track(old.id.clone(), old.created_at)
        .expect("track");
    clock.advance(DAY);
    let mut out = Vec::new();
    let due = rotation.with_tracker(|t| t.due_events(clock.now()));
    out.extend(due.iter().map(|e| serde_json::to_string(e).expect("json")));
    let marked = rotation
        .mark_for_rotation(&old.id, id("new"), clock.now(), clock.now())
        .await
        .expect("mark");
    out.push(serde_json::to_string(&marked.event).expect("json"));
    out.push(format!("{marked:?}"));
    let err = rotation
        .complete_rotation(&old.id, clock.now(), |_| {})
        .await
        .expect_err("grace");
    out.push(format!("{err} {err:?}"));
    out.push(format!("{rotation:?}"));
    clock.advance(DAY * 2);
    let report = rotation
        .auto_decommission_expired(clock.now(), |_| {})
        .await;
    out.push(format!("{report:?}"));
    assert_eq!(report.decommissioned, vec![id("old")]);

    let all = out.join("\n");
    assert!(all.contains("\"type\":\"rotation_due\""), "{all}");
    assert!(all.contains("\"type\":\"rotation_started\""), "{all}");
    assert!(all.contains("Decommissioned"), "{all}");
    for secret in [ACCESS, REFRESH, "SECRET"] {
        assert!(!all.contains(secret), "leaked {secret}: {all}");
    }
}
