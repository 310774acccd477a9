//! The in-memory recorder: everything the Go `CredentialMetrics` kept, plus a recent window.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, FailureKind, UsageSnapshot};

use crate::recorder::{CredentialRecorder, MetricsRecorder, RefreshResult, RequestOutcome};
use crate::shard::{shard_count, thread_shard};

/// The default length of the recent window: 5 minutes.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);

/// The default bound on credentials created by recording for an id never registered through
/// [`MetricsRecorder::handle`].
pub const DEFAULT_MAX_CREDENTIALS: usize = 1024;

/// The recent window is kept in this many buckets of `window / WINDOW_BUCKETS` each.
const WINDOW_BUCKETS: usize = 30;

/// Keeps per-credential usage in memory and reports it as [`UsageSnapshot`]s (the Go
/// `CredentialMetrics`): request, success and error counts, tokens, total latency, first and last
/// use, refresh counts and the latest refresh, and the requests and failures of a recent window
/// (default [`DEFAULT_WINDOW`]) for alerting on a credential that just broke.
///
/// Each credential has its own [`CredentialMetrics`] behind its own small mutex, so a snapshot is
/// consistent (`request_count == success_count + error_count`, and the tokens and latency belong to
/// the same requests), and recording through a handle touches nothing shared with other
/// credentials. The id → metrics map is only used by [`handle`](MetricsRecorder::handle), the by-id
/// methods and the reports.
///
/// # Unknown ids
/// [`record_request`](Self::record_request) by id accepts ids never registered through
/// [`handle`](MetricsRecorder::handle), as the Go `RecordRequest` did, but bounded: at most
/// `max_credentials` (default [`DEFAULT_MAX_CREDENTIALS`]) such unregistered entries are created.
/// Beyond that, recordings for further unknown ids fold into one overflow entry, readable with
/// [`overflow`](Self::overflow); its `request_count` counts the folded requests. Registered
/// credentials (the pool's own) are never refused and do not count toward the bound.
///
/// Gauges are not kept here: the health reports read state from the manager's health tracking.
#[derive(Debug)]
pub struct InMemoryRecorder {
    window: Duration,
    shards: usize,
    max_unregistered: usize,
    entries: RwLock<Entries>,
    overflow: Arc<CredentialMetrics>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<CredentialId, Entry>,
    unregistered: usize,
}

#[derive(Debug)]
struct Entry {
    metrics: Arc<CredentialMetrics>,
    registered: bool,
}

impl Default for InMemoryRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryRecorder {
    /// An empty recorder with a 5-minute window and the default unknown-id bound.
    pub fn new() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            shards: 1,
            max_unregistered: DEFAULT_MAX_CREDENTIALS,
            entries: RwLock::default(),
            overflow: Arc::new(CredentialMetrics::new(DEFAULT_WINDOW)),
        }
    }

    /// Sets the length of the recent window (kept in 30 buckets, so it is exact to within
    /// `window / 30`; at least 30 ms). Applies to credentials created afterwards: call it on a new
    /// recorder.
    #[must_use]
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self.overflow = Arc::new(CredentialMetrics::new(window));
        self
    }

    /// Sets how many shards each credential's counters have (rounded up to a power of two, 1 to
    /// 16; default 1). With one shard per core, threads recording on the same credential at the
    /// same moment each take their own lock, so recording scales with threads; each shard costs
    /// 384 bytes per credential. Applies to credentials created afterwards: call it on a new
    /// recorder.
    #[must_use]
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shard_count(shards);
        self
    }

    /// Sets how many entries recording for unregistered ids may create (see the type's docs).
    #[must_use]
    pub fn with_max_credentials(mut self, max: usize) -> Self {
        self.max_unregistered = max;
        self
    }

    /// The per-credential metrics of `id`, registering it (like [`handle`](MetricsRecorder::handle))
    /// if it is new. The concrete type gives access to [`CredentialMetrics::snapshot`].
    pub fn register(&self, id: &CredentialId) -> Arc<CredentialMetrics> {
        let mut entries = self.write();
        let Entries { map, unregistered } = &mut *entries;
        match map.get_mut(id) {
            Some(entry) => {
                if !entry.registered {
                    entry.registered = true;
                    *unregistered -= 1;
                }
                Arc::clone(&entry.metrics)
            }
            None => {
                let metrics = Arc::new(CredentialMetrics::with_shards(self.window, self.shards));
                map.insert(
                    id.clone(),
                    Entry {
                        metrics: Arc::clone(&metrics),
                        registered: true,
                    },
                );
                metrics
            }
        }
    }

    /// The metrics of `id` if it is known (registered, or created by recording by id).
    pub fn metrics(&self, id: &CredentialId) -> Option<Arc<CredentialMetrics>> {
        self.read().map.get(id).map(|e| Arc::clone(&e.metrics))
    }

    /// Go `RecordRequest`: records a request by id. Unknown ids get an entry, within the bound
    /// described on the type; beyond it the request is counted in [`overflow`](Self::overflow).
    /// Prefer a cached [`handle`](MetricsRecorder::handle) on hot paths: this looks the id up.
    pub fn record_request(
        &self,
        id: &CredentialId,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
        now: DateTime<Utc>,
    ) {
        self.metrics_or_create(id)
            .record_request(tokens, latency, outcome, now);
    }

    /// A consistent snapshot of `id` at `now`, or `None` for an unknown id (Go
    /// `GetCredentialMetrics`).
    pub fn snapshot(&self, id: &CredentialId, now: DateTime<Utc>) -> Option<UsageSnapshot> {
        self.metrics(id).map(|m| m.snapshot(now))
    }

    /// Snapshots of every known credential, sorted by id (Go `GetAllMetrics`; the overflow entry is
    /// not included).
    pub fn snapshots(&self, now: DateTime<Utc>) -> BTreeMap<CredentialId, UsageSnapshot> {
        let metrics: Vec<(CredentialId, Arc<CredentialMetrics>)> = self
            .read()
            .map
            .iter()
            .map(|(id, e)| (id.clone(), Arc::clone(&e.metrics)))
            .collect();
        metrics
            .into_iter()
            .map(|(id, m)| (id, m.snapshot(now)))
            .collect()
    }

    /// What was recorded for unknown ids past the bound.
    pub fn overflow(&self, now: DateTime<Utc>) -> UsageSnapshot {
        self.overflow.snapshot(now)
    }

    /// Failovers away from `id`, or `None` for an unknown id.
    pub fn failovers(&self, id: &CredentialId) -> Option<u64> {
        self.metrics(id).map(|m| m.failovers())
    }

    /// The number of known credentials (registered and unregistered).
    pub fn len(&self) -> usize {
        self.read().map.len()
    }

    /// True when no credential is known.
    pub fn is_empty(&self) -> bool {
        self.read().map.is_empty()
    }

    fn metrics_or_create(&self, id: &CredentialId) -> Arc<CredentialMetrics> {
        if let Some(m) = self.metrics(id) {
            return m;
        }
        let mut entries = self.write();
        if let Some(e) = entries.map.get(id) {
            return Arc::clone(&e.metrics);
        }
        if entries.unregistered >= self.max_unregistered {
            return Arc::clone(&self.overflow);
        }
        let metrics = Arc::new(CredentialMetrics::with_shards(self.window, self.shards));
        entries.unregistered += 1;
        entries.map.insert(
            id.clone(),
            Entry {
                metrics: Arc::clone(&metrics),
                registered: false,
            },
        );
        metrics
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MetricsRecorder for InMemoryRecorder {
    fn handle(&self, credential: &CredentialId) -> Arc<dyn CredentialRecorder> {
        self.register(credential)
    }

    fn record_failover(&self, from: &CredentialId, _reason: FailureKind) {
        self.metrics_or_create(from).lock().failovers += 1;
    }

    fn remove(&self, credential: &CredentialId) {
        let mut entries = self.write();
        if let Some(e) = entries.map.remove(credential)
            && !e.registered
        {
            entries.unregistered -= 1;
        }
    }
}

/// One credential's in-memory metrics (the Go `CredentialMetrics`); the handle
/// [`InMemoryRecorder`] gives out.
///
/// The counters sit behind a small mutex of their own, in one or more shards (see
/// [`InMemoryRecorder::with_shards`]): a thread records into its own shard, so threads recording
/// on the same credential at once do not wait for each other; a snapshot locks every shard (in
/// order) and adds them up, so it is still consistent. One shard is 384 bytes.
#[derive(Debug)]
pub struct CredentialMetrics {
    /// Shard 0, inline: with one shard (the default) recording follows no extra pointer.
    first: Shard,
    /// Shards 1 and up.
    rest: Box<[Shard]>,
    mask: usize,
}

/// One shard: its own line(s), so two shards never share a cache line.
#[derive(Debug)]
#[repr(align(64))]
struct Shard(Mutex<Counters>);

#[derive(Debug)]
struct Counters {
    success_count: u64,
    error_count: u64,
    tokens_used: u64,
    total_latency: Duration,
    first_used: Option<DateTime<Utc>>,
    last_used: Option<DateTime<Utc>>,
    refresh_count: u64,
    refresh_failures: u64,
    last_refresh: Option<DateTime<Utc>>,
    failovers: u64,
    recent: RecentWindow,
}

impl Counters {
    fn new(window: Duration) -> Self {
        Self {
            success_count: 0,
            error_count: 0,
            tokens_used: 0,
            total_latency: Duration::ZERO,
            first_used: None,
            last_used: None,
            refresh_count: 0,
            refresh_failures: 0,
            last_refresh: None,
            failovers: 0,
            recent: RecentWindow::new(window),
        }
    }
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl CredentialMetrics {
    /// Empty metrics with a recent window of `window`, in one shard.
    pub fn new(window: Duration) -> Self {
        Self::with_shards(window, 1)
    }

    /// Empty metrics with a recent window of `window`, in `shards` shards (rounded up to a power
    /// of two, 1 to 16).
    pub fn with_shards(window: Duration, shards: usize) -> Self {
        let shards = shard_count(shards);
        let shard = || Shard(Mutex::new(Counters::new(window)));
        Self {
            first: shard(),
            rest: (1..shards).map(|_| shard()).collect(),
            mask: shards - 1,
        }
    }

    /// A consistent copy of the counters; the recent window is evaluated at `now`.
    pub fn snapshot(&self, now: DateTime<Utc>) -> UsageSnapshot {
        let guards: Vec<MutexGuard<'_, Counters>> = self.all().map(lock).collect();
        let mut s = UsageSnapshot::default();
        for c in &guards {
            let (recent_requests, recent_failures) = c.recent.totals(now);
            s.success_count += c.success_count;
            s.error_count += c.error_count;
            s.tokens_used = s.tokens_used.saturating_add(c.tokens_used);
            s.total_latency = s.total_latency.saturating_add(c.total_latency);
            s.first_used = earliest(s.first_used, c.first_used);
            s.last_used = s.last_used.max(c.last_used);
            s.refresh_count += c.refresh_count;
            s.refresh_failures += c.refresh_failures;
            s.last_refresh = s.last_refresh.max(c.last_refresh);
            s.recent_requests += recent_requests;
            s.recent_failures += recent_failures;
            s.recent_window = c.recent.window();
        }
        s.request_count = s.success_count + s.error_count;
        s
    }

    /// Failovers away from this credential.
    pub fn failovers(&self) -> u64 {
        self.all().map(|s| lock(s).failovers).sum()
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.mask + 1
    }

    fn all(&self) -> impl Iterator<Item = &Shard> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    /// The calling thread's shard, locked.
    fn lock(&self) -> MutexGuard<'_, Counters> {
        if self.mask == 0 {
            return lock(&self.first);
        }
        match (thread_shard() & self.mask).checked_sub(1) {
            Some(i) => lock(self.rest.get(i).unwrap_or(&self.first)),
            None => lock(&self.first),
        }
    }
}

fn lock(shard: &Shard) -> MutexGuard<'_, Counters> {
    // Nothing panics while the lock is held; a poisoned lock still holds consistent counters.
    shard.0.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CredentialRecorder for CredentialMetrics {
    fn record_request(
        &self,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
        now: DateTime<Utc>,
    ) {
        let mut c = self.lock();
        let failed = !outcome.is_success();
        if failed {
            c.error_count += 1;
        } else {
            c.success_count += 1;
        }
        c.tokens_used = c.tokens_used.saturating_add(tokens);
        c.total_latency = c.total_latency.saturating_add(latency);
        if c.first_used.is_none_or(|t| now < t) {
            c.first_used = Some(now);
        }
        if c.last_used.is_none_or(|t| now > t) {
            c.last_used = Some(now);
        }
        // The recent window drives health alerts: a request rejected for its own fault says
        // nothing about the credential, so it counts as a request but not as a failure there.
        let credential_fault =
            failed && !matches!(outcome, RequestOutcome::Failure(FailureKind::RequestScoped));
        c.recent.record(now, credential_fault);
    }

    fn record_refresh(&self, result: RefreshResult, _duration: Duration, now: DateTime<Utc>) {
        let mut c = self.lock();
        if result.is_success() {
            c.refresh_count += 1;
            if c.last_refresh.is_none_or(|t| now > t) {
                c.last_refresh = Some(now);
            }
        } else {
            c.refresh_failures += 1;
        }
    }

    /// Adds to `tokens_used` only: no request, latency or time of use is counted.
    fn record_tokens(&self, tokens: u64) {
        if tokens > 0 {
            let mut c = self.lock();
            c.tokens_used = c.tokens_used.saturating_add(tokens);
        }
    }
}

/// Requests and failures over the recent window, in a ring of 30 fixed-width time buckets of
/// `u32` counts (saturating). Which time slot a bucket holds follows from its position and the
/// latest slot recorded (`last`): the ring always covers the 30 slots ending at `last`, and
/// buckets are zeroed as `last` moves past them, so no bucket needs a timestamp of its own.
/// 256 bytes (it was 720 with a timestamp and two `u64` counts per bucket).
#[derive(Debug)]
struct RecentWindow {
    width_ms: i64,
    /// The latest slot (`timestamp_ms / width_ms`) recorded; `i64::MIN` before the first record.
    last: i64,
    /// Requests and failures per slot, at index `slot mod 30`.
    counts: [[u32; 2]; WINDOW_BUCKETS],
}

impl RecentWindow {
    const BUCKETS: i64 = WINDOW_BUCKETS as i64;

    fn new(window: Duration) -> Self {
        let width_ms = i64::try_from(window.as_millis() / u128::from(WINDOW_BUCKETS as u32))
            .unwrap_or(i64::MAX / Self::BUCKETS)
            .clamp(1, i64::MAX / Self::BUCKETS);
        Self {
            width_ms,
            last: i64::MIN,
            counts: [[0; 2]; WINDOW_BUCKETS],
        }
    }

    /// The window actually covered: the buckets' total width.
    fn window(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.width_ms * Self::BUCKETS).unwrap_or(u64::MAX))
    }

    fn index(slot: i64) -> usize {
        usize::try_from(slot.rem_euclid(Self::BUCKETS)).unwrap_or(0)
    }

    fn slot(&self, at: DateTime<Utc>) -> i64 {
        at.timestamp_millis().div_euclid(self.width_ms)
    }

    fn record(&mut self, at: DateTime<Utc>, failed: bool) {
        let slot = self.slot(at);
        if self.last == i64::MIN || slot.saturating_sub(self.last) >= Self::BUCKETS {
            self.counts = [[0; 2]; WINDOW_BUCKETS];
            self.last = slot;
        } else if slot > self.last {
            for s in self.last + 1..=slot {
                self.counts[Self::index(s)] = [0; 2];
            }
            self.last = slot;
        } else if slot <= self.last - Self::BUCKETS {
            return; // older than the window already: nothing to count
        }
        let c = &mut self.counts[Self::index(slot)];
        c[0] = c[0].saturating_add(1);
        c[1] = c[1].saturating_add(u32::from(failed));
    }

    /// Requests and failures in the buckets that end no earlier than `now - window` (the current
    /// bucket and the 29 before it) among those the ring still holds.
    fn totals(&self, now: DateTime<Utc>) -> (u64, u64) {
        if self.last == i64::MIN {
            return (0, 0);
        }
        let current = self.slot(now);
        let lo = self.last.max(current) - (Self::BUCKETS - 1);
        let hi = self.last.min(current);
        (lo..=hi.max(lo - 1))
            .map(|s| self.counts[Self::index(s)])
            .fold((0, 0), |(r, f), [cr, cf]| {
                (r + u64::from(cr), f + u64::from(cf))
            })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("valid date")
    }

    #[test]
    fn window_counts_recent_and_forgets_old() {
        let mut w = RecentWindow::new(Duration::from_secs(300));
        assert_eq!(w.window(), Duration::from_secs(300));
        w.record(t0(), false);
        w.record(t0() + TimeDelta::seconds(100), true);
        assert_eq!(w.totals(t0() + TimeDelta::seconds(100)), (2, 1));
        // 295 s later, the first bucket (t0 .. t0+10 s) is still inside the window.
        assert_eq!(w.totals(t0() + TimeDelta::seconds(295)), (2, 1));
        // At t0+300 s the first bucket left the window.
        assert_eq!(w.totals(t0() + TimeDelta::seconds(300)), (1, 1));
        assert_eq!(w.totals(t0() + TimeDelta::seconds(400)), (0, 0));
        // A bucket is reused a whole ring later, and old counts are dropped, not added.
        w.record(t0() + TimeDelta::seconds(405), false);
        assert_eq!(w.totals(t0() + TimeDelta::seconds(405)), (1, 0));
        // A record older than the bucket's current slot is ignored.
        w.record(t0() + TimeDelta::seconds(105), true);
        assert_eq!(w.totals(t0() + TimeDelta::seconds(405)), (1, 0));
    }

    #[test]
    fn window_does_not_count_the_future() {
        let mut w = RecentWindow::new(Duration::from_secs(60));
        w.record(t0() + TimeDelta::seconds(30), true);
        assert_eq!(w.totals(t0()), (0, 0));
        assert_eq!(w.totals(t0() + TimeDelta::seconds(30)), (1, 1));
    }

    /// The window before it was compacted (a timestamp and two `u64` counts per bucket), kept as
    /// the reference the compact one must agree with.
    struct OldWindow {
        width_ms: i64,
        buckets: [(i64, u64, u64); WINDOW_BUCKETS],
    }

    impl OldWindow {
        fn new(window: Duration) -> Self {
            let w = RecentWindow::new(window);
            Self {
                width_ms: w.width_ms,
                buckets: [(i64::MIN, 0, 0); WINDOW_BUCKETS],
            }
        }

        fn record(&mut self, at: DateTime<Utc>, failed: bool) {
            let slot = at.timestamp_millis().div_euclid(self.width_ms);
            let b = &mut self.buckets[RecentWindow::index(slot)];
            if b.0 != slot {
                if b.0 > slot {
                    return;
                }
                *b = (slot, 0, 0);
            }
            b.1 += 1;
            b.2 += u64::from(failed);
        }

        fn totals(&self, now: DateTime<Utc>) -> (u64, u64) {
            let current = now.timestamp_millis().div_euclid(self.width_ms);
            self.buckets
                .iter()
                .filter(|b| b.0 <= current && b.0 > current - RecentWindow::BUCKETS)
                .fold((0, 0), |(r, f), b| (r + b.1, f + b.2))
        }
    }

    /// The straightforward model: every record kept with its slot; a record counts at `now` when
    /// its slot is one of the 30 ending at `now` and no later record has pushed it out of the
    /// ring (30 slots behind the latest), and a record already 30 slots behind the latest is
    /// dropped.
    #[derive(Default)]
    struct Model {
        records: Vec<(i64, bool)>,
        latest: Option<i64>,
    }

    impl Model {
        fn record(&mut self, slot: i64, failed: bool) {
            if self
                .latest
                .is_some_and(|l| slot <= l - RecentWindow::BUCKETS)
            {
                return;
            }
            self.latest = Some(self.latest.map_or(slot, |l| l.max(slot)));
            self.records.push((slot, failed));
        }

        fn totals(&self, current: i64) -> (u64, u64) {
            let Some(latest) = self.latest else {
                return (0, 0);
            };
            let live = |s: i64| {
                s <= current
                    && s > current - RecentWindow::BUCKETS
                    && s > latest - RecentWindow::BUCKETS
            };
            self.records
                .iter()
                .filter(|(s, _)| live(*s))
                .fold((0, 0), |(r, f), (_, failed)| {
                    (r + 1, f + u64::from(*failed))
                })
        }
    }

    proptest::proptest! {
        /// Arbitrary records and queries (time going back and forth): the compact window gives
        /// exactly the model's counts.
        #[test]
        fn compact_window_matches_the_model(
            window_s in 1u64..900,
            ops in proptest::collection::vec((-400i64..400, proptest::bool::ANY, proptest::bool::ANY), 1..200),
        ) {
            let mut w = RecentWindow::new(Duration::from_secs(window_s));
            let mut model = Model::default();
            let mut at = t0();
            for (step_s, failed, query) in ops {
                at += TimeDelta::milliseconds(step_s * 100);
                if query {
                    let current = at.timestamp_millis().div_euclid(w.width_ms);
                    proptest::prop_assert_eq!(w.totals(at), model.totals(current));
                } else {
                    w.record(at, failed);
                    model.record(at.timestamp_millis().div_euclid(w.width_ms), failed);
                }
            }
        }

        /// Time moving forward (as the pool's clock does), queried at or after the latest record:
        /// the compact window gives the same requests and failures, hence the same rates, as the
        /// window it replaced.
        #[test]
        fn compact_window_gives_the_old_rates(
            window_s in 1u64..900,
            ops in proptest::collection::vec((0i64..120_000, proptest::bool::ANY, 0u8..4), 1..300),
        ) {
            let window = Duration::from_secs(window_s);
            let mut new = RecentWindow::new(window);
            let mut old = OldWindow::new(window);
            let mut at = t0();
            for (step_ms, failed, kind) in ops {
                at += TimeDelta::milliseconds(step_ms);
                match kind {
                    0 => proptest::prop_assert_eq!(new.totals(at), old.totals(at)),
                    _ => {
                        new.record(at, failed);
                        old.record(at, failed);
                    }
                }
            }
            proptest::prop_assert_eq!(new.totals(at), old.totals(at));
        }
    }

    proptest::proptest! {
        /// Threads recording at once into a sharded credential: the snapshot is the sum of what
        /// was recorded, whatever the shard count (1 included) and thread count.
        #[test]
        fn sharded_metrics_sum_to_the_total(
            shards in 1usize..=8,
            work in proptest::collection::vec(
                proptest::collection::vec((0u64..50, 0u64..100, proptest::bool::ANY), 0..100), 1..5),
        ) {
            let m = CredentialMetrics::with_shards(Duration::from_secs(300), shards);
            proptest::prop_assert!(m.shards().is_power_of_two());
            std::thread::scope(|s| {
                for ops in &work {
                    let m = &m;
                    s.spawn(move || {
                        for (i, (tokens, ms, failed)) in ops.iter().enumerate() {
                            let outcome = if *failed {
                                RequestOutcome::Failure(FailureKind::Transient)
                            } else {
                                RequestOutcome::Success
                            };
                            let at = t0() + TimeDelta::seconds(i64::try_from(i).unwrap_or(0));
                            m.record_request(*tokens, Duration::from_millis(*ms), outcome, at);
                        }
                    });
                }
            });
            let all: Vec<&(u64, u64, bool)> = work.iter().flatten().collect();
            let snap = m.snapshot(t0() + TimeDelta::seconds(100));
            let failures = all.iter().filter(|(_, _, f)| *f).count() as u64;
            proptest::prop_assert_eq!(snap.request_count, all.len() as u64);
            proptest::prop_assert_eq!(snap.error_count, failures);
            proptest::prop_assert_eq!(snap.tokens_used, all.iter().map(|(t, _, _)| t).sum::<u64>());
            proptest::prop_assert_eq!(
                snap.total_latency,
                Duration::from_millis(all.iter().map(|(_, ms, _)| ms).sum::<u64>())
            );
            proptest::prop_assert_eq!((snap.recent_requests, snap.recent_failures), (all.len() as u64, failures));
            let longest = work.iter().map(Vec::len).max().unwrap_or(0);
            if longest > 0 {
                proptest::prop_assert_eq!(snap.first_used, Some(t0()));
                let last = t0() + TimeDelta::seconds(i64::try_from(longest - 1).unwrap_or(0));
                proptest::prop_assert_eq!(snap.last_used, Some(last));
            }
        }
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let mut w = RecentWindow::new(Duration::from_secs(300));
        w.counts[RecentWindow::index(w.slot(t0()))] = [u32::MAX, u32::MAX - 1];
        w.last = w.slot(t0());
        w.record(t0(), true);
        w.record(t0(), true);
        assert_eq!(w.totals(t0()), (u64::from(u32::MAX), u64::from(u32::MAX)));
    }

    #[test]
    fn the_window_is_small() {
        assert_eq!(std::mem::size_of::<RecentWindow>(), 256);
        // One shard of counters: 368 bytes on x86_64, 384 with its alignment (840 before).
        assert!(std::mem::size_of::<Counters>() <= 384);
        assert_eq!(std::mem::size_of::<Shard>(), 384);
    }

    #[test]
    fn tiny_window_is_clamped() {
        let w = RecentWindow::new(Duration::ZERO);
        assert_eq!(w.window(), Duration::from_millis(30));
    }
}
