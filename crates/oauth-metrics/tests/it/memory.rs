//! The in-memory recorder: every counter and derived value, Go vectors, the window, the bound.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use oauth_core::{FailureKind, UsageSnapshot};
use oauth_metrics::{
    DEFAULT_WINDOW, InMemoryRecorder, MetricsRecorder, RefreshResult, RequestOutcome,
};

use crate::{id, t0};

const FAIL: RequestOutcome = RequestOutcome::Failure(FailureKind::Transient);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn go_vector_three_requests() {
    let rec = InMemoryRecorder::new();
    let h = rec.handle(&id("a"));
    h.record_request(100, ms(50), RequestOutcome::Success, t0());
    h.record_request(200, ms(100), RequestOutcome::Success, t0());
    h.record_request(150, ms(75), FAIL, t0());
    let s = rec.snapshot(&id("a"), t0()).expect("known");
    assert_eq!(s.request_count, 3);
    assert_eq!(s.success_count, 2);
    assert_eq!(s.error_count, 1);
    assert_eq!(s.tokens_used, 450);
    assert_eq!(s.total_latency, ms(225));
    assert_eq!(s.average_latency(), ms(75));
    assert_eq!(s.last_used, Some(t0()));
    assert_eq!(s.recent_requests, 3);
    assert_eq!(s.recent_failures, 1);
    assert_eq!(s.recent_window, DEFAULT_WINDOW);
}

#[test]
fn go_vector_success_rates() {
    for (ok, failed, want) in [(10, 0, 1.0), (5, 5, 0.5), (0, 0, 1.0), (1, 3, 0.25)] {
        let rec = InMemoryRecorder::new();
        let h = rec.handle(&id("a"));
        for _ in 0..ok {
            h.record_request(1, ms(1), RequestOutcome::Success, t0());
        }
        for _ in 0..failed {
            h.record_request(1, ms(1), FAIL, t0());
        }
        let s = rec.snapshot(&id("a"), t0()).expect("known");
        assert_eq!(s.success_rate(), want, "{ok} ok / {failed} failed");
    }
}

#[test]
fn fresh_credential_has_zeroes_and_no_first_use() {
    let rec = InMemoryRecorder::new();
    let _h = rec.handle(&id("a"));
    let s = rec.snapshot(&id("a"), t0()).expect("registered");
    assert_eq!(
        s,
        UsageSnapshot {
            recent_window: DEFAULT_WINDOW,
            ..UsageSnapshot::default()
        }
    );
    assert_eq!(s.success_rate(), 1.0);
    assert_eq!(s.requests_per_hour(t0()), 0.0);
    assert_eq!(s.average_latency(), Duration::ZERO);
    assert_eq!(rec.snapshot(&id("unknown"), t0()), None);
}

#[test]
fn first_used_is_the_first_request_not_registration() {
    let rec = InMemoryRecorder::new();
    let h = rec.handle(&id("a")); // registered at t0, unused for an hour
    let first = t0() + TimeDelta::hours(1);
    h.record_request(1, ms(10), RequestOutcome::Success, first);
    h.record_request(
        1,
        ms(10),
        RequestOutcome::Success,
        first + TimeDelta::minutes(30),
    );
    // A request reported late, with an earlier finish time, still counts as the first.
    let earlier = first - TimeDelta::seconds(5);
    h.record_request(1, ms(10), RequestOutcome::Success, earlier);
    let s = rec.snapshot(&id("a"), first).expect("known");
    assert_eq!(s.first_used, Some(earlier));
    assert_eq!(s.last_used, Some(first + TimeDelta::minutes(30)));
}

#[test]
fn requests_per_hour_is_continuous() {
    let rec = InMemoryRecorder::new();
    let h = rec.handle(&id("a"));
    for _ in 0..100 {
        h.record_request(1, ms(1), RequestOutcome::Success, t0());
    }
    let s = rec.snapshot(&id("a"), t0()).expect("known");
    // Go jumped from 100 to 10,000 at 36 s; here it is the count during the first hour.
    assert_eq!(s.requests_per_hour(t0() + TimeDelta::seconds(35)), 100.0);
    assert_eq!(s.requests_per_hour(t0() + TimeDelta::seconds(37)), 100.0);
    assert_eq!(s.requests_per_hour(t0() + TimeDelta::hours(1)), 100.0);
    assert_eq!(s.requests_per_hour(t0() + TimeDelta::hours(2)), 50.0);
}

#[test]
fn refresh_counts_and_last_refresh() {
    let rec = InMemoryRecorder::new();
    let h = rec.handle(&id("a"));
    let later = t0() + TimeDelta::minutes(10);
    h.record_refresh(RefreshResult::Success, ms(200), later);
    h.record_refresh(RefreshResult::Success, ms(200), t0()); // out of order: keeps the latest
    h.record_refresh(
        RefreshResult::Failure(FailureKind::PermanentAuth),
        ms(50),
        later + TimeDelta::minutes(1),
    );
    let s = rec.snapshot(&id("a"), later).expect("known");
    assert_eq!(s.refresh_count, 2);
    assert_eq!(s.refresh_failures, 1);
    assert_eq!(s.last_refresh, Some(later));
    assert_eq!(s.request_count, 0, "refreshes are not requests");
}

#[test]
fn failovers_are_counted_per_credential() {
    let rec = InMemoryRecorder::new();
    let _h = rec.handle(&id("a"));
    rec.record_failover(&id("a"), FailureKind::Transient);
    rec.record_failover(&id("a"), FailureKind::rate_limited(None));
    assert_eq!(rec.failovers(&id("a")), Some(2));
    assert_eq!(rec.failovers(&id("b")), None);
}

#[test]
fn recent_window_shows_a_credential_that_just_broke() {
    let rec = InMemoryRecorder::new();
    let h = rec.handle(&id("a"));
    for _ in 0..20 {
        h.record_request(1, ms(1), RequestOutcome::Success, t0());
    }
    let broke = t0() + TimeDelta::minutes(30);
    for i in 0..5 {
        h.record_request(1, ms(1), FAIL, broke + TimeDelta::seconds(i));
    }
    let now = broke + TimeDelta::seconds(10);
    let s = rec.snapshot(&id("a"), now).expect("known");
    assert_eq!(s.error_count, 5);
    assert_eq!(s.success_rate(), 0.8, "lifetime rate hides it");
    assert_eq!((s.recent_requests, s.recent_failures), (5, 5));
    assert_eq!(s.recent_failure_rate(), 1.0, "the window shows it");
    // Five minutes after the failures stopped they leave the window.
    let s = rec
        .snapshot(&id("a"), broke + TimeDelta::minutes(6))
        .expect("known");
    assert_eq!((s.recent_requests, s.recent_failures), (0, 0));
    assert_eq!(s.recent_failure_rate(), 0.0);
}

#[test]
fn custom_window() {
    let rec = InMemoryRecorder::new().with_window(Duration::from_secs(60));
    let h = rec.handle(&id("a"));
    h.record_request(1, ms(1), FAIL, t0());
    let at = |s| {
        rec.snapshot(&id("a"), t0() + TimeDelta::seconds(s))
            .expect("known")
    };
    assert_eq!(at(0).recent_window, Duration::from_secs(60));
    assert_eq!(at(59).recent_failures, 1);
    assert_eq!(at(61).recent_failures, 0);
}

#[test]
fn unknown_ids_are_recorded_within_the_bound_then_fold_into_overflow() {
    let rec = InMemoryRecorder::new().with_max_credentials(2);
    let _pool = rec.handle(&id("pool"));
    for name in ["x1", "x2", "x3", "x4", "x3"] {
        rec.record_request(&id(name), 10, ms(5), RequestOutcome::Success, t0());
    }
    let all = rec.snapshots(t0());
    let names: Vec<&str> = all.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["pool", "x1", "x2"]);
    assert_eq!(all[&id("x1")].request_count, 1);
    let overflow = rec.overflow(t0());
    assert_eq!(overflow.request_count, 3, "x3, x4, x3 folded and counted");
    assert_eq!(overflow.tokens_used, 30);

    // Registering an unknown id moves it out of the bound; registered ids are never refused.
    let _x2 = rec.handle(&id("x2"));
    rec.record_request(&id("x5"), 1, ms(1), RequestOutcome::Success, t0());
    assert!(rec.snapshot(&id("x5"), t0()).is_some());
    for i in 0..50 {
        let _h = rec.handle(&id(&format!("reg-{i}")));
    }
    assert_eq!(rec.len(), 4 + 50);
    // Removing an unregistered entry frees its slot.
    rec.remove(&id("x1"));
    rec.record_request(&id("x6"), 1, ms(1), RequestOutcome::Success, t0());
    assert!(rec.snapshot(&id("x6"), t0()).is_some());
    rec.record_request(&id("x7"), 1, ms(1), RequestOutcome::Success, t0());
    assert_eq!(rec.snapshot(&id("x7"), t0()), None);
    assert_eq!(rec.overflow(t0()).request_count, 4);
}

#[test]
fn by_id_recording_reaches_the_registered_handle() {
    let rec = InMemoryRecorder::new();
    let h = rec.handle(&id("a"));
    rec.record_request(&id("a"), 7, ms(3), RequestOutcome::Success, t0());
    h.record_request(3, ms(3), RequestOutcome::Success, t0());
    let s = rec.snapshot(&id("a"), t0()).expect("known");
    assert_eq!((s.request_count, s.tokens_used), (2, 10));
    // The same handle comes back for the same id.
    let again = rec.register(&id("a"));
    assert_eq!(again.snapshot(t0()), s);
}

#[test]
fn remove_forgets_and_old_handles_do_not_panic() {
    let rec = InMemoryRecorder::new();
    let h = rec.handle(&id("a"));
    h.record_request(1, ms(1), RequestOutcome::Success, t0());
    rec.remove(&id("a"));
    assert!(rec.is_empty());
    assert_eq!(rec.snapshot(&id("a"), t0()), None);
    h.record_request(1, ms(1), RequestOutcome::Success, t0());

    assert!(rec.snapshots(t0()).is_empty());
}

#[test]
fn concurrent_recording_loses_nothing_and_snapshots_stay_consistent() {
    for shards in [1, 2, 4] {
        concurrent_recording_with(shards);
    }
}

fn concurrent_recording_with(shards: usize) {
    let rec = Arc::new(InMemoryRecorder::new().with_shards(shards));
    let h = rec.handle(&id("shared"));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let h = Arc::clone(&h);
            s.spawn(move || {
                for i in 0..5_000u64 {
                    let outcome = if (i + t) % 4 == 0 {
                        FAIL
                    } else {
                        RequestOutcome::Success
                    };
                    h.record_request(2, ms(1), outcome, t0());
                }
            });
        }
        let rec = Arc::clone(&rec);
        s.spawn(move || {
            for _ in 0..1_000 {
                let snap = rec.snapshot(&id("shared"), t0()).expect("known");
                assert_eq!(snap.tokens_used, 2 * snap.request_count);
                assert_eq!(snap.total_latency, ms(snap.request_count));
                assert_eq!(snap.recent_requests, snap.request_count);
                assert_eq!(snap.recent_failures, snap.error_count);
            }
        });
    });
    let s = rec.snapshot(&id("shared"), t0()).expect("known");
    assert_eq!(s.request_count, 20_000);
    assert_eq!(s.error_count, 5_000);
    assert_eq!(s.success_count, 15_000);
    assert_eq!(s.tokens_used, 40_000);
}

#[test]
fn request_scoped_failures_are_errors_but_not_recent_credential_failures() {
    let rec = InMemoryRecorder::new();
    let h = rec.handle(&id("a"));
    h.record_request(
        0,
        ms(5),
        RequestOutcome::Failure(FailureKind::RequestScoped),
        t0(),
    );
    h.record_request(0, ms(5), FAIL, t0());
    let s = rec.snapshot(&id("a"), t0()).expect("known");
    assert_eq!(
        (s.request_count, s.error_count),
        (2, 2),
        "Go parity: every error counts"
    );
    assert_eq!(
        (s.recent_requests, s.recent_failures),
        (2, 1),
        "the alert window blames the credential once"
    );
}

/// Issue 18: tokens reported after their request was recorded (a stream's final usage) add to
/// `tokens_used` only: no request, no latency, no time of use, nothing in the recent window; in
/// one shard or several.
#[test]
fn late_tokens_add_to_tokens_used_without_counting_a_request() {
    for shards in [1, 4] {
        let rec = InMemoryRecorder::new().with_shards(shards);
        let h = rec.handle(&id("a"));
        h.record_request(0, ms(40), RequestOutcome::Success, t0());
        h.record_tokens(900);
        h.record_tokens(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| h.record_tokens(100));
            }
        });
        let s = rec.snapshot(&id("a"), t0()).expect("known");
        assert_eq!(s.tokens_used, 1200, "{shards} shards");
        assert_eq!((s.request_count, s.success_count, s.error_count), (1, 1, 0));
        assert_eq!(s.total_latency, ms(40));
        assert_eq!((s.first_used, s.last_used), (Some(t0()), Some(t0())));
        assert_eq!((s.recent_requests, s.recent_failures), (1, 0));
    }
    // Tokens alone: still no request and no first use.
    let rec = InMemoryRecorder::new();
    rec.handle(&id("b")).record_tokens(7);
    let s = rec.snapshot(&id("b"), t0()).expect("known");
    assert_eq!((s.tokens_used, s.request_count, s.first_used), (7, 0, None));
}
