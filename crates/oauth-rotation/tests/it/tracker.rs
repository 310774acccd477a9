//! Every transition and error of the pure `RotationTracker`.

use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::{Clock, EventKind, RotationFacts};
use oauth_rotation::{RotationError, RotationPolicy, RotationState, RotationTracker};

use crate::{clock, id, t0};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn enabled(interval: Duration, grace: Duration) -> RotationTracker {
    RotationTracker::new(
        RotationPolicy::enabled()
            .with_rotation_interval(interval)
            .with_grace_period(grace),
    )
}

#[test]
fn go_case_one_ms_interval_makes_an_old_credential_due() {
    let clock = clock();
    let mut t = enabled(Duration::from_millis(1), DAY);
    t.track(id("old"), clock.now()).expect("track");
    assert!(
        t.check_rotation_needed(clock.now()).is_empty(),
        "age 0 < 1 ms"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(t.check_rotation_needed(clock.now()), vec![id("old")]);
}

#[test]
fn check_requires_enabled_policy_and_sorts() {
    let clock = clock();
    let mut t = RotationTracker::new(RotationPolicy::default().with_rotation_interval(DAY));
    for name in ["c", "a", "b"] {
        t.track(id(name), clock.now()).expect("track");
    }
    clock.advance(DAY * 2);
    assert!(t.check_rotation_needed(clock.now()).is_empty(), "disabled");
    t.set_policy(t.policy().clone().with_enabled(true));
    assert_eq!(
        t.check_rotation_needed(clock.now()),
        vec![id("a"), id("b"), id("c")]
    );
}

#[test]
fn check_age_boundary_is_inclusive_and_future_creation_is_not_due() {
    let clock = clock();
    let mut t = enabled(DAY, DAY);
    t.track(id("a"), clock.now()).expect("track");
    t.track(id("future"), clock.now() + TimeDelta::days(5))
        .expect("track");
    clock.advance(DAY - Duration::from_millis(1));
    assert!(t.check_rotation_needed(clock.now()).is_empty());
    clock.advance(Duration::from_millis(1));
    assert_eq!(t.check_rotation_needed(clock.now()), vec![id("a")]);
}

#[test]
fn marked_credentials_are_not_due_again_but_their_replacement_ages() {
    let clock = clock();
    let mut t = enabled(DAY, DAY);
    t.track(id("old"), clock.now()).expect("track");
    clock.advance(DAY);
    t.mark_for_rotation(&id("old"), id("new"), clock.now(), clock.now())
        .expect("mark");
    assert!(t.check_rotation_needed(clock.now()).is_empty());
    clock.advance(DAY);
    assert_eq!(t.check_rotation_needed(clock.now()), vec![id("new")]);
}

#[test]
fn due_events_carry_the_age() {
    let clock = clock();
    let mut t = enabled(DAY, DAY);
    t.track(id("a"), clock.now()).expect("track");
    clock.advance(DAY * 3);
    let events = t.due_events(clock.now());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].at, clock.now());
    assert_eq!(
        events[0].kind,
        EventKind::RotationDue {
            credential: id("a"),
            age: DAY * 3
        }
    );
}

#[test]
fn track_rejects_duplicates_and_untrack_returns_the_state() {
    let mut t = RotationTracker::default();
    t.track(id("a"), t0()).expect("track");
    assert_eq!(
        t.track(id("a"), t0()),
        Err(RotationError::DuplicateId { id: id("a") })
    );
    assert_eq!(t.len(), 1);
    assert_eq!(t.untrack(&id("a")), Some(RotationState::new(t0())));
    assert!(t.is_empty());
    assert_eq!(t.untrack(&id("a")), None);
}

#[test]
fn go_case_mark_with_24h_grace_lists_two_and_records_the_replacement() {
    let clock = clock();
    let mut t = RotationTracker::new(RotationPolicy::default().with_grace_period(DAY));
    t.track(id("old"), t0()).expect("track");
    clock.advance(Duration::from_secs(60));
    let now = clock.now();
    let event = t
        .mark_for_rotation(&id("old"), id("new"), now, now)
        .expect("mark works with the policy disabled, as in Go");

    let ids: Vec<_> = t.states().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, vec![id("new"), id("old")]);
    let old = t.state(&id("old")).expect("old state");
    assert!(old.marked_for_rotation);
    assert_eq!(old.replacement_id, Some(id("new")));
    assert_eq!(old.rotation_started_at, Some(now));
    assert_eq!(old.decommission_at, Some(now + TimeDelta::hours(24)));
    assert_eq!(old.created_at, t0());
    assert_eq!(t.state(&id("new")), Some(&RotationState::new(now)));

    assert_eq!(event.at, now);
    assert_eq!(
        event.kind,
        EventKind::RotationStarted {
            credential: id("old"),
            replacement: id("new"),
            decommission_at: now + TimeDelta::hours(24)
        }
    );
    // The replacement is preferred; the old one is marked.
    assert!(t.is_marked(&id("old")) && !t.is_preferred(&id("old")));
    assert!(!t.is_marked(&id("new")) && t.is_preferred(&id("new")));
    assert!(t.is_preferred(&id("untracked")));
    assert_eq!(t.replacement_of(&id("old")), Some(&id("new")));
    assert_eq!(t.replaced_by(&id("new")), Some(&id("old")));
    assert_eq!(t.replacement_of(&id("new")), None);
    assert_eq!(t.marked().cloned().collect::<Vec<_>>(), vec![id("old")]);
    assert_eq!(
        t.facts(&id("old")),
        RotationFacts {
            marked_for_rotation: true,
            decommission_at: Some(now + TimeDelta::hours(24))
        }
    );
    assert_eq!(t.facts(&id("new")), RotationFacts::default());
}

#[test]
fn mark_errors_change_nothing() {
    let mut t = RotationTracker::default();
    t.track(id("a"), t0()).expect("track");
    t.track(id("b"), t0()).expect("track");
    let before: Vec<_> = t.states().map(|(i, s)| (i.clone(), s.clone())).collect();

    assert_eq!(
        t.mark_for_rotation(&id("ghost"), id("n"), t0(), t0()),
        Err(RotationError::UnknownCredential { id: id("ghost") })
    );
    assert_eq!(
        t.mark_for_rotation(&id("a"), id("b"), t0(), t0()),
        Err(RotationError::DuplicateId { id: id("b") })
    );
    assert_eq!(
        t.mark_for_rotation(&id("a"), id("a"), t0(), t0()),
        Err(RotationError::DuplicateId { id: id("a") }),
        "the old id as its own replacement"
    );
    let after: Vec<_> = t.states().map(|(i, s)| (i.clone(), s.clone())).collect();
    assert_eq!(before, after);

    t.mark_for_rotation(&id("a"), id("a2"), t0(), t0())
        .expect("mark");
    let err = t
        .mark_for_rotation(&id("a"), id("a3"), t0(), t0())
        .expect_err("already marked");
    assert_eq!(err, RotationError::AlreadyMarked { id: id("a") });
    assert!(!err.is_retryable());
    assert!(t.state(&id("a3")).is_none());
}

#[test]
fn completion_errors_unknown_not_marked_and_grace_saying_when() {
    let clock = clock();
    let mut t = RotationTracker::new(RotationPolicy::default().with_grace_period(DAY));
    t.track(id("a"), t0()).expect("track");
    assert_eq!(
        t.begin_completion(&id("ghost"), clock.now()),
        Err(RotationError::UnknownCredential { id: id("ghost") })
    );
    assert_eq!(
        t.begin_completion(&id("a"), clock.now()),
        Err(RotationError::NotMarked { id: id("a") })
    );
    t.mark_for_rotation(&id("a"), id("b"), clock.now(), clock.now())
        .expect("mark");
    let at = clock.now() + TimeDelta::days(1);
    clock.advance(DAY - Duration::from_millis(1));
    let err = t
        .begin_completion(&id("a"), clock.now())
        .expect_err("grace not over");
    assert_eq!(
        err,
        RotationError::GraceNotElapsed {
            id: id("a"),
            decommission_at: at
        }
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_at(), Some(at));
    assert!(err.to_string().contains(&at.to_rfc3339()), "{err}");
    assert_eq!(err.credential(), &id("a"));
    // At exactly the end of grace a manual completion is allowed (Go: error only when now < at).
    clock.advance(Duration::from_millis(1));
    let ticket = t.begin_completion(&id("a"), clock.now()).expect("ticket");
    assert_eq!(ticket.id(), &id("a"));
    assert_eq!(ticket.replacement(), &id("b"));
    assert_eq!(ticket.decommission_at(), at);
    assert!(t.is_marked(&id("a")), "phase 1 changes nothing");
}

#[test]
fn go_case_completing_after_grace_leaves_only_the_new_one() {
    let clock = clock();
    let mut t = RotationTracker::new(RotationPolicy::default().with_grace_period(DAY));
    t.track(id("old"), t0()).expect("track");
    t.mark_for_rotation(&id("old"), id("new"), clock.now(), clock.now())
        .expect("mark");
    clock.advance(DAY + Duration::from_secs(1));
    let ticket = t.begin_completion(&id("old"), clock.now()).expect("ticket");
    let event = t.finish_completion(ticket, clock.now()).expect("finish");
    assert_eq!(event.at, clock.now());
    assert_eq!(
        event.kind,
        EventKind::Decommissioned {
            credential: id("old")
        }
    );
    assert!(t.state(&id("old")).is_none());
    let ids: Vec<_> = t.states().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, vec![id("new")]);
    assert_eq!(t.replaced_by(&id("new")), None);
}

#[test]
fn finish_rechecks_state_changed_between_the_phases() {
    let clock = clock();
    let mut t = RotationTracker::new(RotationPolicy::default().with_grace_period(Duration::ZERO));
    t.track(id("a"), t0()).expect("track");
    t.mark_for_rotation(&id("a"), id("b"), clock.now(), clock.now())
        .expect("mark");
    let ticket = t
        .begin_completion(&id("a"), clock.now())
        .expect("zero grace");

    // Removed meanwhile.
    let saved = t.untrack(&id("a")).expect("state");
    assert_eq!(
        t.finish_completion(ticket.clone(), clock.now()),
        Err(RotationError::UnknownCredential { id: id("a") })
    );
    // Back, but unmarked.
    t.track(id("a"), t0()).expect("track");
    assert_eq!(
        t.finish_completion(ticket.clone(), clock.now()),
        Err(RotationError::NotMarked { id: id("a") })
    );
    // Marked again in another rotation.
    clock.advance(Duration::from_secs(5));
    t.mark_for_rotation(&id("a"), id("c"), clock.now(), clock.now())
        .expect("mark again");
    let err = t
        .finish_completion(ticket.clone(), clock.now())
        .expect_err("another rotation");
    assert_eq!(err, RotationError::StateChanged { id: id("a") });
    assert!(t.is_marked(&id("a")));
    // The original rotation, restored, finishes with the original ticket.
    t.untrack(&id("a"));
    t.restore(id("a"), saved).expect("restore");
    t.finish_completion(ticket, clock.now())
        .expect("same rotation");
    assert!(t.state(&id("a")).is_none());
}

#[test]
fn expired_for_decommission_is_strict_sorted_and_only_when_auto() {
    let clock = clock();
    let mut t = RotationTracker::new(RotationPolicy::default().with_grace_period(DAY));
    for name in ["z", "y", "x"] {
        t.track(id(name), t0()).expect("track");
    }
    t.mark_for_rotation(&id("z"), id("z2"), clock.now(), clock.now())
        .expect("mark");
    t.mark_for_rotation(&id("y"), id("y2"), clock.now(), clock.now())
        .expect("mark");
    clock.advance(DAY);
    assert!(
        t.expired_for_decommission(clock.now()).is_empty(),
        "strictly after"
    );
    clock.advance(Duration::from_millis(1));
    t.mark_for_rotation(&id("x"), id("x2"), clock.now(), clock.now())
        .expect("mark");
    assert_eq!(
        t.expired_for_decommission(clock.now()),
        vec![id("y"), id("z")]
    );
    t.set_policy(t.policy().clone().with_auto_decommission(false));
    assert!(t.expired_for_decommission(clock.now()).is_empty());
}

#[test]
fn restore_rejects_inconsistent_states() {
    let mut t = RotationTracker::default();
    let mut marked_without_end = RotationState::new(t0());
    marked_without_end.marked_for_rotation = true;
    marked_without_end.replacement_id = Some(id("b"));
    marked_without_end.rotation_started_at = Some(t0());
    assert_eq!(
        t.restore(id("a"), marked_without_end.clone()),
        Err(RotationError::InconsistentState { id: id("a") })
    );
    let mut unmarked_with_fields = marked_without_end;
    unmarked_with_fields.marked_for_rotation = false;
    assert!(t.restore(id("a"), unmarked_with_fields).is_err());
    assert!(t.is_empty());
}

#[test]
fn huge_grace_period_saturates_instead_of_overflowing() {
    let mut t = RotationTracker::new(RotationPolicy::default().with_grace_period(Duration::MAX));
    t.track(id("a"), t0()).expect("track");
    t.mark_for_rotation(&id("a"), id("b"), t0(), t0())
        .expect("mark");
    let at = t
        .state(&id("a"))
        .and_then(|s| s.decommission_at)
        .expect("end of grace");
    assert!(at > t0() + TimeDelta::days(365 * 1000));
    assert!(
        t.expired_for_decommission(t0() + TimeDelta::days(365 * 1000))
            .is_empty()
    );
}
