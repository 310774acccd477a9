//! The in-memory recorder against a straightforward model: every event kept in a list, every
//! figure of a snapshot recomputed from it. Random event sequences at random times, extreme
//! ones included (the first and last representable instants, the epoch, sub-millisecond
//! parts), random windows (zero to `Duration::MAX`) and latencies (up to `Duration::MAX`): the
//! compact layout (counters allocated on first use, a ring of `u32` buckets without
//! timestamps) gives exactly the model's snapshot, and nothing panics.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use oauth_core::{FailureKind, UsageSnapshot};
use oauth_metrics::{
    CredentialMetrics, CredentialRecorder, InMemoryRecorder, MetricsRecorder, RefreshResult,
    RequestOutcome,
};
use proptest::prelude::*;

use crate::{id, t0};

const BUCKETS: i64 = 30;

/// A time: mostly near t0 (so the window has something to count), sometimes anywhere in
/// `DateTime`'s range or at its very ends.
fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    let min = DateTime::<Utc>::MIN_UTC.timestamp_millis();
    let max = DateTime::<Utc>::MAX_UTC.timestamp_millis();
    prop_oneof![
        6 => (-900_000i64..900_000, 0u32..1_000_000).prop_map(|(ms, ns)| {
            t0() + TimeDelta::milliseconds(ms) + TimeDelta::nanoseconds(i64::from(ns))
        }),
        1 => (min..=max).prop_map(|ms| DateTime::from_timestamp_millis(ms).unwrap_or(t0())),
        1 => prop_oneof![
            Just(DateTime::<Utc>::MIN_UTC),
            Just(DateTime::<Utc>::MAX_UTC),
            Just(DateTime::<Utc>::MIN_UTC + TimeDelta::milliseconds(1)),
            Just(DateTime::<Utc>::MAX_UTC - TimeDelta::milliseconds(1)),
            Just(DateTime::<Utc>::UNIX_EPOCH),
            Just(DateTime::<Utc>::UNIX_EPOCH - TimeDelta::nanoseconds(1)),
        ],
    ]
}

fn any_window() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (1u64..3_600_000).prop_map(Duration::from_millis),
        1 => Just(Duration::ZERO),
        1 => Just(Duration::from_millis(29)),
        1 => Just(Duration::MAX),
        1 => Just(Duration::from_secs(u64::MAX / 1000)),
    ]
}

fn any_latency() -> impl Strategy<Value = Duration> {
    prop_oneof![
        6 => (0u64..10_000_000).prop_map(Duration::from_micros),
        1 => Just(Duration::MAX),
        1 => Just(Duration::new(u64::MAX / 2, 999_999_999)),
    ]
}

fn any_outcome() -> impl Strategy<Value = RequestOutcome> {
    prop_oneof![
        3 => Just(RequestOutcome::Success),
        1 => Just(RequestOutcome::Failure(FailureKind::Transient)),
        1 => Just(RequestOutcome::Failure(FailureKind::RequestScoped)),
        1 => Just(RequestOutcome::Failure(FailureKind::Unauthorized)),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Request(u64, Duration, RequestOutcome, DateTime<Utc>),
    Refresh(bool, DateTime<Utc>),
    Tokens(u64),
    Failover,
    Snapshot(DateTime<Utc>),
}

fn any_op() -> impl Strategy<Value = Op> {
    let tokens = prop_oneof![4 => 0u64..10_000, 1 => Just(u64::MAX), 1 => Just(u64::MAX / 2)];
    prop_oneof![
        8 => (tokens.clone(), any_latency(), any_outcome(), any_time())
            .prop_map(|(t, l, o, at)| Op::Request(t, l, o, at)),
        1 => (any::<bool>(), any_time()).prop_map(|(ok, at)| Op::Refresh(ok, at)),
        1 => tokens.prop_map(Op::Tokens),
        1 => Just(Op::Failover),
        3 => any_time().prop_map(Op::Snapshot),
    ]
}

/// Everything recorded, kept as a list; each figure recomputed from it.
struct Model {
    width_ms: i64,
    requests: Vec<(u64, Duration, RequestOutcome, DateTime<Utc>)>,
    refreshes: Vec<(bool, DateTime<Utc>)>,
    late_tokens: Vec<u64>,
    failovers: u64,
}

impl Model {
    fn new(window: Duration) -> Self {
        // The documented resolution: 30 buckets of `window / 30`, at least 1 ms each.
        let width_ms = i64::try_from(window.as_millis() / 30)
            .unwrap_or(i64::MAX)
            .clamp(1, i64::MAX / BUCKETS);
        Self {
            width_ms,
            requests: Vec::new(),
            refreshes: Vec::new(),
            late_tokens: Vec::new(),
            failovers: 0,
        }
    }

    fn slot(&self, at: DateTime<Utc>) -> i64 {
        at.timestamp_millis().div_euclid(self.width_ms)
    }

    /// The requests and failures the recent window counts at `now`: those in the 30 slots ending
    /// at `now`'s, among the ones the ring keeps (within 30 slots of the latest slot recorded so
    /// far; a request already 30 slots behind it when it came is not counted at all).
    fn recent(&self, now: DateTime<Utc>) -> (u64, u64) {
        let current = self.slot(now);
        let mut latest: Option<i64> = None;
        let mut kept: Vec<(i64, bool)> = Vec::new();
        for (_, _, outcome, at) in &self.requests {
            let slot = self.slot(*at);
            if latest.is_some_and(|l| slot <= l - BUCKETS) {
                continue;
            }
            latest = Some(latest.map_or(slot, |l| l.max(slot)));
            let credential_fault =
                matches!(outcome, RequestOutcome::Failure(k) if *k != FailureKind::RequestScoped);
            kept.push((slot, credential_fault));
        }
        let Some(latest) = latest else {
            return (0, 0);
        };
        kept.iter()
            .filter(|(s, _)| *s <= current && *s > current - BUCKETS && *s > latest - BUCKETS)
            .fold((0, 0), |(r, f), (_, failed)| {
                (r + 1, f + u64::from(*failed))
            })
    }

    fn snapshot(&self, now: DateTime<Utc>) -> UsageSnapshot {
        let errors = self
            .requests
            .iter()
            .filter(|(_, _, o, _)| !o.is_success())
            .count() as u64;
        let (recent_requests, recent_failures) = self.recent(now);
        let tokens = self
            .requests
            .iter()
            .map(|r| r.0)
            .chain(self.late_tokens.iter().copied())
            .fold(0u64, u64::saturating_add);
        UsageSnapshot {
            request_count: self.requests.len() as u64,
            success_count: self.requests.len() as u64 - errors,
            error_count: errors,
            tokens_used: tokens,
            total_latency: self
                .requests
                .iter()
                .fold(Duration::ZERO, |acc, r| acc.saturating_add(r.1)),
            first_used: self.requests.iter().map(|r| r.3).min(),
            last_used: self.requests.iter().map(|r| r.3).max(),
            refresh_count: self.refreshes.iter().filter(|r| r.0).count() as u64,
            refresh_failures: self.refreshes.iter().filter(|r| !r.0).count() as u64,
            last_refresh: self.refreshes.iter().filter(|r| r.0).map(|r| r.1).max(),
            recent_requests,
            recent_failures,
            recent_window: Duration::from_millis(
                u64::try_from(self.width_ms * BUCKETS).unwrap_or(u64::MAX),
            ),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Through the recorder, as the pool uses it (a cached handle, failovers by id): every
    /// snapshot is the model's, at any time asked.
    #[test]
    fn snapshots_match_the_model_at_any_time(
        window in any_window(),
        shards in prop_oneof![Just(1usize), Just(4)],
        ops in proptest::collection::vec(any_op(), 1..120),
        last in any_time(),
    ) {
        let rec = InMemoryRecorder::new().with_window(window).with_shards(shards);
        let h = rec.handle(&id("a"));
        let mut model = Model::new(window);
        for op in ops {
            match op {
                Op::Request(tokens, latency, outcome, at) => {
                    h.record_request(tokens, latency, outcome, at);
                    model.requests.push((tokens, latency, outcome, at));
                }
                Op::Refresh(ok, at) => {
                    let result = if ok {
                        RefreshResult::Success
                    } else {
                        RefreshResult::Failure(FailureKind::Transient)
                    };
                    h.record_refresh(result, Duration::from_millis(3), at);
                    model.refreshes.push((ok, at));
                }
                Op::Tokens(n) => {
                    h.record_tokens(n);
                    model.late_tokens.push(n);
                }
                Op::Failover => {
                    rec.record_failover(&id("a"), FailureKind::Transient);
                    model.failovers += 1;
                }
                Op::Snapshot(at) => {
                    prop_assert_eq!(rec.snapshot(&id("a"), at), Some(model.snapshot(at)));
                }
            }
        }
        prop_assert_eq!(rec.snapshot(&id("a"), last), Some(model.snapshot(last)));
        prop_assert_eq!(rec.failovers(&id("a")), Some(model.failovers));
    }

    /// The handle on its own, time moving forward by small steps as a pool's clock does: the
    /// recent counts, hence the rates, are the model's after every record.
    #[test]
    fn recent_rates_match_the_model_as_time_moves_on(
        window_ms in 30u64..600_000,
        steps in proptest::collection::vec((0i64..30_000, any_outcome()), 1..300),
    ) {
        let window = Duration::from_millis(window_ms);
        let m = CredentialMetrics::new(window);
        let mut model = Model::new(window);
        let mut at = t0();
        for (step_ms, outcome) in steps {
            at += TimeDelta::milliseconds(step_ms);
            m.record_request(1, Duration::from_millis(1), outcome, at);
            model.requests.push((1, Duration::from_millis(1), outcome, at));
            let (got, want) = (m.snapshot(at), model.snapshot(at));
            prop_assert_eq!((got.recent_requests, got.recent_failures), (want.recent_requests, want.recent_failures));
            prop_assert_eq!(got.recent_failure_rate(), want.recent_failure_rate());
            prop_assert_eq!(got.success_rate(), want.success_rate());
        }
    }
}
