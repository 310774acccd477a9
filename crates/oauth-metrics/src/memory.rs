//! The in-memory recorder: everything the Go `CredentialMetrics` kept, plus a recent window.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, TryLockError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::{CredentialId, FailureKind, UsageSnapshot};

use crate::recorder::{CredentialRecorder, MetricsRecorder, RefreshResult, RequestOutcome};
use crate::shard::{MAX_SHARDS, default_shards, place, shard_count, thread_shard};

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
/// Each credential has its own [`CredentialMetrics`], whose counters a snapshot copies whole
/// (`request_count == success_count + error_count`, and the tokens and latency belong to the
/// same requests), and recording through a handle touches nothing shared with other
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
    map: HashMap<CredentialId, Arc<CredentialMetrics>>,
    /// The ids in `map` created by recording rather than registered (at most
    /// `max_unregistered`; kept apart so that the map's entries stay two pointers).
    unregistered: HashSet<CredentialId>,
}

impl Default for InMemoryRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryRecorder {
    /// An empty recorder with a 5-minute window, the default unknown-id bound, and up to one
    /// shard per core (at most 16) for credentials recorded by several threads at once.
    pub fn new() -> Self {
        let shards = default_shards();
        Self {
            window: DEFAULT_WINDOW,
            shards,
            max_unregistered: DEFAULT_MAX_CREDENTIALS,
            entries: RwLock::default(),
            overflow: Arc::new(CredentialMetrics::with_shards(DEFAULT_WINDOW, shards)),
        }
    }

    /// Sets the length of the recent window (kept in 30 buckets, so it is exact to within
    /// `window / 30`; at least 30 ms). Applies to credentials created afterwards: call it on a new
    /// recorder.
    #[must_use]
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self.overflow = Arc::new(CredentialMetrics::with_shards(window, self.shards));
        self
    }

    /// Sets how many shards each credential's counters may use (rounded up to a power of two, 1
    /// to 16; default: the machine's parallelism, at most 16). A credential starts with one; the
    /// first time two threads record on it at the same moment, its shards are allocated (384
    /// bytes each) and from then on each thread records into its own, so recording on a shared
    /// credential scales with threads. Credentials recorded by one thread at a time never pay
    /// for them. Applies to credentials created afterwards: call it on a new recorder.
    #[must_use]
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shard_count(shards);
        self.overflow = Arc::new(CredentialMetrics::with_shards(self.window, self.shards));
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
        match map.get(id) {
            Some(metrics) => {
                if !unregistered.is_empty() {
                    unregistered.remove(id);
                }
                Arc::clone(metrics)
            }
            None => {
                let metrics = Arc::new(CredentialMetrics::with_shards(self.window, self.shards));
                map.insert(id.clone(), Arc::clone(&metrics));
                metrics
            }
        }
    }

    /// The metrics of `id` if it is known (registered, or created by recording by id).
    pub fn metrics(&self, id: &CredentialId) -> Option<Arc<CredentialMetrics>> {
        self.read().map.get(id).map(Arc::clone)
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
            .map(|(id, m)| (id.clone(), Arc::clone(m)))
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
        if let Some(m) = entries.map.get(id) {
            return Arc::clone(m);
        }
        if entries.unregistered.len() >= self.max_unregistered {
            return Arc::clone(&self.overflow);
        }
        let metrics = Arc::new(CredentialMetrics::with_shards(self.window, self.shards));
        entries.unregistered.insert(id.clone());
        entries.map.insert(id.clone(), Arc::clone(&metrics));
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
        self.metrics_or_create(from).add_failover();
    }

    fn remove(&self, credential: &CredentialId) {
        let mut entries = self.write();
        entries.map.remove(credential);
        entries.unregistered.remove(credential);
    }
}

/// One credential's in-memory metrics (the Go `CredentialMetrics`); the handle
/// [`InMemoryRecorder`] gives out.
///
/// The counters are allocated by the first record: a credential never used costs only this handle
/// (48 bytes with its reference counts), one used adds its counters and recent window.
///
/// # The owner's counters
/// A thread that owns one of the process's shards (the first 16 threads to record into any of
/// this crate's sharded values own one each while they live, see the crate's `shard` module)
/// can record requests into counters it alone writes, with plain loads and stores inside a
/// sequence lock: no locked instruction, where a mutex takes two, each waiting for its cache
/// line. They are allocated by the first record, with the mutex below on a line of its own (448
/// bytes). The first owner to record a request on the credential claims them for its shard; the
/// next owners of that shard inherit them. Other threads, and rarer records (refreshes,
/// failovers, tokens alone), use the counters behind the mutex (352 bytes, allocated by their
/// first record) and its shards below.
///
/// # Shards
/// With more than one shard (see [`with_shards`](Self::with_shards) and
/// [`InMemoryRecorder::with_shards`]), the first time two threads record on this credential at
/// the same moment, the shards are allocated (384 bytes each, each on cache lines of its own),
/// and from then on every thread but the owner's writer records into its own, so threads
/// recording on one credential no longer wait for each other or bounce its lines between their
/// cores (the counters recorded before stay where they are). A credential recorded by
/// one thread at a time never allocates them. A snapshot copies the owner's counters (again if
/// their owner wrote meanwhile), locks the rest (in order) and adds it all up, so it is still
/// consistent: every request is in it whole or not at all.
#[derive(Debug)]
pub struct CredentialMetrics {
    /// Every counter, allocated by the first record (behind a thin pointer: this handle is 32
    /// bytes, written only when an owner claims the counters and by snapshots' `reads`).
    state: OnceLock<Box<State>>,
    /// 1 + the global shard whose owner writes the owner's counters; 0 until one claims them.
    /// Read by every record, so it is here, not on a line the owner writes.
    owner: AtomicU8,
    width: Width,
    /// Reads (snapshots) begun, in the high 16 bits, and finished, in the low 16, each wrapping:
    /// a record that finds shard 0 held while a read may be holding it waits for it instead of
    /// taking it for contention between recorders (see [`Self::reading`]).
    reads: AtomicU32,
    /// The number of shards (a power of two, 1 to 16).
    shards: u8,
}

/// What a handle allocates on its first record.
#[derive(Debug)]
struct State {
    /// The counters of the thread that owns a shard of the process's sharded values (see
    /// `crate::shard`) and recorded here first while owning it: it records requests into them
    /// without a lock.
    owned: Owned,
    /// Everyone else's, on lines of their own: the owner never reads a line they write.
    shared: Shared,
}

impl State {
    fn new() -> Self {
        Self {
            owned: Owned::new(),
            shared: Shared {
                first: Mutex::new(None),
                rest: OnceLock::new(),
            },
        }
    }
}

/// The counters behind locks.
#[derive(Debug)]
#[repr(align(64))]
struct Shared {
    /// The counters until two threads record at once here (and what was recorded until then);
    /// `None` until something is recorded here.
    first: Mutex<Option<Box<Counters>>>,
    /// The shards, one per thread slot, allocated on the first contended record.
    rest: OnceLock<Box<Rest>>,
}

/// The shards.
#[derive(Debug)]
struct Rest(Box<[Shard]>);

/// Request counters that one thread writes with plain loads and stores, inside a sequence lock:
/// no locked instruction on a record (a mutex takes two), where each one waits for its cache line.
///
/// The writer is the thread that owns global shard `CredentialMetrics::owner - 1`
/// (`crate::shard::place`), kept in the handle, a line the writer never writes: one thread
/// at a time owns it, and a shard passes to its next owner with release and acquire orderings,
/// so the next owner sees every count of the last. A reader copies the counters between two
/// reads of `seq` and retries if a write ran meanwhile (`seq` odd, or moved): a copy holds whole
/// requests only. Only requests are counted here; rarer records (refreshes, failovers, tokens
/// alone) take the locked path.
#[derive(Debug)]
struct Owned {
    /// Even while the counters are whole, odd while their owner writes them.
    seq: AtomicU64,
    success_count: AtomicU64,
    error_count: AtomicU64,
    tokens_used: AtomicU64,
    latency_secs: AtomicU64,
    latency_nanos: AtomicU32,
    first_used: AtomicInstant,
    last_used: AtomicInstant,
    recent: AtomicWindow,
}

/// An `Option<DateTime<Utc>>` as seconds and nanoseconds since the epoch (`nanos` is
/// [`AtomicInstant::NONE`] for `None`), written by one owner inside its sequence lock.
#[derive(Debug)]
struct AtomicInstant {
    secs: AtomicI64,
    nanos: AtomicU32,
}

impl AtomicInstant {
    const NONE: u32 = u32::MAX;

    const fn new() -> Self {
        Self {
            secs: AtomicI64::new(0),
            nanos: AtomicU32::new(Self::NONE),
        }
    }

    fn load(&self) -> Option<(i64, u32)> {
        let nanos = self.nanos.load(Ordering::Relaxed);
        (nanos != Self::NONE).then(|| (self.secs.load(Ordering::Relaxed), nanos))
    }

    fn store(&self, (secs, nanos): (i64, u32)) {
        self.secs.store(secs, Ordering::Relaxed);
        self.nanos.store(nanos, Ordering::Relaxed);
    }

    fn get(&self) -> Option<DateTime<Utc>> {
        // A leap-second fraction outside a `:59` second (which `chrono` can produce) becomes the
        // second's last nanosecond rather than nothing.
        self.load().and_then(|(secs, nanos)| {
            DateTime::from_timestamp(secs, nanos)
                .or_else(|| DateTime::from_timestamp(secs, nanos.min(999_999_999)))
        })
    }
}

impl Owned {
    fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            success_count: AtomicU64::new(0),
            error_count: AtomicU64::new(0),
            tokens_used: AtomicU64::new(0),
            latency_secs: AtomicU64::new(0),
            latency_nanos: AtomicU32::new(0),
            first_used: AtomicInstant::new(),
            last_used: AtomicInstant::new(),
            recent: AtomicWindow::new(),
        }
    }

    /// Records one request; only by the writer (see [`CredentialMetrics::owned_by_me`]).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        tokens: u64,
        latency: Duration,
        failed: bool,
        credential_fault: bool,
        now: DateTime<Utc>,
        now_ms: i64,
        width: Width,
    ) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        // The odd `seq` is seen before any of the writes below (paired with the reader's
        // acquire fence before it reads `seq` again).
        fence(Ordering::Release);
        let count = if failed {
            &self.error_count
        } else {
            &self.success_count
        };
        bump(count, 1);
        let tokens_used = self
            .tokens_used
            .load(Ordering::Relaxed)
            .saturating_add(tokens);
        self.tokens_used.store(tokens_used, Ordering::Relaxed);
        let total = self.latency().saturating_add(latency);
        self.latency_secs.store(total.as_secs(), Ordering::Relaxed);
        self.latency_nanos
            .store(total.subsec_nanos(), Ordering::Relaxed);
        let at = (now.timestamp(), now.timestamp_subsec_nanos());
        if self.first_used.load().is_none_or(|t| at < t) {
            self.first_used.store(at);
        }
        if self.last_used.load().is_none_or(|t| at > t) {
            self.last_used.store(at);
        }
        let mut recent = Writing(&self.recent);
        let slot = recent.slot_of(now_ms, width);
        recent.record(slot, credential_fault);
        // Release: a reader that sees this `seq` sees every write above.
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    fn latency(&self) -> Duration {
        Duration::new(
            self.latency_secs.load(Ordering::Relaxed),
            self.latency_nanos.load(Ordering::Relaxed).min(999_999_999),
        )
    }

    /// A whole copy of the counters (retried while the owner writes).
    fn read(&self) -> Counters {
        let mut spins = 0u32;
        loop {
            let seq = self.seq.load(Ordering::Acquire);
            if seq & 1 == 0 {
                let copy = Counters {
                    success_count: self.success_count.load(Ordering::Relaxed),
                    error_count: self.error_count.load(Ordering::Relaxed),
                    tokens_used: self.tokens_used.load(Ordering::Relaxed),
                    total_latency: self.latency(),
                    first_used: self.first_used.get(),
                    last_used: self.last_used.get(),
                    recent: self.recent.load(),
                    ..Counters::new()
                };
                // Paired with the writer's release fence: a write that any load above saw
                // has moved `seq` by the time it is read again.
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == seq {
                    return copy;
                }
            }
            // The owner is writing (a few instructions), unless it was preempted meanwhile.
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Adds `v` to a counter only its owner writes (saturating).
#[inline]
fn bump(c: &AtomicU64, v: u64) {
    c.store(
        c.load(Ordering::Relaxed).saturating_add(v),
        Ordering::Relaxed,
    );
}

/// One shard: its own cache lines, so two shards never share one.
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
    const fn new() -> Self {
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
            recent: RecentWindow::new(),
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

    /// Empty metrics with a recent window of `window`, in up to `shards` shards (rounded up to a
    /// power of two, 1 to 16; allocated on the first contended record, see the type's docs).
    pub fn with_shards(window: Duration, shards: usize) -> Self {
        Self {
            state: OnceLock::new(),
            owner: AtomicU8::new(0),
            width: Width::of(window),
            reads: AtomicU32::new(0),
            shards: u8::try_from(shard_count(shards)).unwrap_or(1),
        }
    }

    /// A consistent copy of the counters; the recent window is evaluated at `now`.
    pub fn snapshot(&self, now: DateTime<Utc>) -> UsageSnapshot {
        self.reading(|| self.sum(now))
    }

    fn sum(&self, now: DateTime<Utc>) -> UsageSnapshot {
        let mut s = UsageSnapshot {
            recent_window: self.width.window(),
            ..UsageSnapshot::default()
        };
        let Some(state) = self.state.get() else {
            return s;
        };
        let owned = state.owned.read();
        let first = lock(&state.shared.first);
        let rest: Vec<MutexGuard<'_, Counters>> = state
            .shared
            .rest
            .get()
            .map(|r| r.0.iter().map(|s| lock(&s.0)).collect())
            .unwrap_or_default();
        let current = self.width.slot(now);
        for c in std::iter::once(&owned)
            .chain(first.as_deref())
            .chain(rest.iter().map(|g| &**g))
        {
            let (recent_requests, recent_failures) = c.recent.totals(current);
            s.success_count = s.success_count.saturating_add(c.success_count);
            s.error_count = s.error_count.saturating_add(c.error_count);
            s.tokens_used = s.tokens_used.saturating_add(c.tokens_used);
            s.total_latency = s.total_latency.saturating_add(c.total_latency);
            s.first_used = earliest(s.first_used, c.first_used);
            s.last_used = s.last_used.max(c.last_used);
            s.refresh_count = s.refresh_count.saturating_add(c.refresh_count);
            s.refresh_failures = s.refresh_failures.saturating_add(c.refresh_failures);
            s.last_refresh = s.last_refresh.max(c.last_refresh);
            s.recent_requests = s.recent_requests.saturating_add(recent_requests);
            s.recent_failures = s.recent_failures.saturating_add(recent_failures);
        }
        s.request_count = s.success_count.saturating_add(s.error_count);
        s
    }

    /// Failovers away from this credential.
    pub fn failovers(&self) -> u64 {
        let Some(state) = self.state.get() else {
            return 0;
        };
        self.reading(|| {
            let first = lock(&state.shared.first)
                .as_ref()
                .map_or(0, |c| c.failovers);
            let rest = state.shared.rest.get().map_or(0, |r| {
                r.0.iter()
                    .map(|s| lock(&s.0).failovers)
                    .fold(0u64, u64::saturating_add)
            });
            first.saturating_add(rest)
        })
    }

    /// Runs `read`, which locks the shards, announced in `reads` so that a record finding shard
    /// 0 held meanwhile does not take it for contention between recorders.
    ///
    /// A record decides that it met another recorder (and allocates the shards) only when no
    /// read was running when it looked before its `try_lock`, and none began by the time it
    /// looked again after the `try_lock` failed. Each look that matters is ordered with the
    /// lock: the read publishes its beginning before it locks (release fence, paired with the
    /// acquire fence after the failed `try_lock`, which read the read's lock or later), and its
    /// end after it unlocked (release, paired with the acquire load before the `try_lock`). A
    /// wrong guess could only cost memory (shards allocated for nothing), never a count.
    fn reading<R>(&self, read: impl FnOnce() -> R) -> R {
        self.reads.fetch_add(1 << 16, Ordering::Relaxed);
        fence(Ordering::Release);
        let out = read();
        let _ = self
            .reads
            .fetch_update(Ordering::Release, Ordering::Relaxed, |v| {
                Some((v & 0xffff_0000) | u32::from((v as u16).wrapping_add(1)))
            });
        out
    }

    /// Whether the `reads` seen before and after a failed `try_lock` rule out a read holding
    /// the lock: none running at the first look, none begun by the second.
    fn no_read_between(before: u32, after: u32) -> bool {
        before >> 16 == before & 0xffff && after >> 16 == before >> 16
    }

    /// The number of shards the counters may use (allocated only once two threads record at
    /// the same moment).
    pub fn shards(&self) -> usize {
        usize::from(self.shards)
    }

    /// Whether the shards have been allocated (by a contended record).
    #[cfg(test)]
    fn is_sharded(&self) -> bool {
        self.state
            .get()
            .is_some_and(|s| s.shared.rest.get().is_some())
    }

    /// Whether anything was recorded on the locked path.
    #[cfg(test)]
    fn locked_counters(&self) -> bool {
        self.state
            .get()
            .is_some_and(|s| lock(&s.shared.first).is_some())
    }

    /// Every counter (allocated by the first record).
    #[inline]
    fn state(&self) -> &State {
        self.state.get_or_init(|| Box::new(State::new()))
    }

    /// The owner's counters, if the calling thread writes them (see [`Owned`]).
    #[inline]
    fn owned_by_me(&self) -> Option<&Owned> {
        #[cfg(test)]
        if tests::LOCKED_ONLY.get() {
            return None;
        }
        let me = u8::try_from(place().owned_in(MAX_SHARDS - 1)?)
            .ok()?
            .wrapping_add(1);
        match self.owner.load(Ordering::Relaxed) {
            owner if owner == me => {}
            0 if self
                .owner
                .compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok() => {}
            _ => return None,
        }
        Some(&self.state().owned)
    }

    fn add_failover(&self) {
        self.with_mine(|c| c.failovers = c.failovers.saturating_add(1));
    }

    /// Runs `f` on the calling thread's counters, locked: the first ones until two threads record
    /// at the same moment, then the thread's own shard.
    #[inline]
    fn with_mine<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        let shared = &self.state().shared;
        if let Some(rest) = shared.rest.get() {
            return self.with_sharded(shared, &rest.0, f);
        }
        let reads = self.reads.load(Ordering::Acquire);
        let mut first = match shared.first.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                fence(Ordering::Acquire);
                if self.shards > 1
                    && Self::no_read_between(reads, self.reads.load(Ordering::Relaxed))
                {
                    let rest = shared.rest.get_or_init(|| {
                        Box::new(Rest(
                            (0..self.shards)
                                .map(|_| Shard(Mutex::new(Counters::new())))
                                .collect(),
                        ))
                    });
                    return self.with_sharded(shared, &rest.0, f);
                }
                lock(&shared.first)
            }
        };
        f(first.get_or_insert_with(|| Box::new(Counters::new())))
    }

    fn with_sharded<R>(
        &self,
        shared: &Shared,
        rest: &[Shard],
        f: impl FnOnce(&mut Counters) -> R,
    ) -> R {
        let i = thread_shard() & (usize::from(self.shards) - 1);
        match rest.get(i) {
            Some(shard) => f(&mut lock(&shard.0)),
            None => f(lock(&shared.first).get_or_insert_with(|| Box::new(Counters::new()))),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while the lock is held; a poisoned lock still holds consistent counters.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CredentialMetrics {
    /// [`record_request`](CredentialRecorder::record_request) for a caller that also has `now`
    /// in milliseconds since the epoch (`now_ms`, which must be `now.timestamp_millis()`): the
    /// record then does no calendar arithmetic, and no division while `now` is in the time slot
    /// of the latest record. (Any `now_ms` is safe: none panics; one that is not `now`'s only
    /// files the request in another slot of the recent window.)
    #[inline]
    pub fn record_request_at(
        &self,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
        now: DateTime<Utc>,
        now_ms: i64,
    ) {
        let failed = !outcome.is_success();
        // The recent window drives health alerts: a request rejected for its own fault says
        // nothing about the credential, so it counts as a request but not as a failure there.
        let credential_fault =
            failed && !matches!(outcome, RequestOutcome::Failure(FailureKind::RequestScoped));
        let width = self.width;
        // `i64::MIN` is the window's "nothing recorded"; no `DateTime` is that early.
        let now_ms = now_ms.max(i64::MIN + 1);
        if let Some(owned) = self.owned_by_me() {
            owned.record(
                tokens,
                latency,
                failed,
                credential_fault,
                now,
                now_ms,
                width,
            );
            return;
        }
        self.with_mine(|c| {
            let slot = c.recent.slot_of(now_ms, width);
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
            c.recent.record(slot, credential_fault);
        });
    }
}

impl CredentialRecorder for CredentialMetrics {
    /// The handle's line (the pointer to the counters, and who owns them). The counters behind
    /// it are not asked for: a hint for them measured slower (pinned A/B, execute over 10,000
    /// credentials with Prometheus).
    #[inline]
    fn prefetch(&self) {
        oauth_core::hint::prefetch_write(self);
    }

    fn record_request(
        &self,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
        now: DateTime<Utc>,
    ) {
        self.record_request_at(tokens, latency, outcome, now, now.timestamp_millis());
    }

    fn record_refresh(&self, result: RefreshResult, _duration: Duration, now: DateTime<Utc>) {
        self.with_mine(|c| {
            if result.is_success() {
                c.refresh_count += 1;
                if c.last_refresh.is_none_or(|t| now > t) {
                    c.last_refresh = Some(now);
                }
            } else {
                c.refresh_failures += 1;
            }
        });
    }

    /// Adds to `tokens_used` only: no request, latency or time of use is counted.
    fn record_tokens(&self, tokens: u64) {
        if tokens > 0 {
            self.with_mine(|c| c.tokens_used = c.tokens_used.saturating_add(tokens));
        }
    }
}

/// The width of the recent window's buckets, in milliseconds (at least 1): the window is
/// `width * 30`. Kept once per credential, beside its shards.
#[derive(Debug, Clone, Copy)]
struct Width(i64);

impl Width {
    fn of(window: Duration) -> Self {
        let buckets = RecentWindow::BUCKETS;
        Self(
            i64::try_from(window.as_millis() / u128::from(WINDOW_BUCKETS as u32))
                .unwrap_or(i64::MAX / buckets)
                .clamp(1, i64::MAX / buckets),
        )
    }

    /// The window actually covered: the buckets' total width.
    fn window(self) -> Duration {
        Duration::from_millis(u64::try_from(self.0 * RecentWindow::BUCKETS).unwrap_or(u64::MAX))
    }

    /// The bucket slot of `at` (`timestamp_ms / width`); defined for every `DateTime`.
    fn slot(self, at: DateTime<Utc>) -> i64 {
        self.slot_ms(at.timestamp_millis())
    }

    /// The bucket slot of `ms` milliseconds since the epoch.
    fn slot_ms(self, ms: i64) -> i64 {
        ms.div_euclid(self.0)
    }
}

/// The state of a [`RecentWindow`], wherever it is kept: the window's plain fields (under a
/// lock), or an owner's atomics ([`Writing`]). One algorithm records into both.
trait Ring {
    /// The latest slot recorded; `i64::MIN` before the first record.
    fn last(&self) -> i64;
    fn set_last(&mut self, slot: i64);
    /// Requests and failures in bucket `i` (below [`WINDOW_BUCKETS`]).
    fn bucket(&self, i: usize) -> [u32; 2];
    fn set_bucket(&mut self, i: usize, counts: [u32; 2]);

    /// See [`RecentWindow::slot_of`].
    #[inline]
    fn slot_of(&self, ms: i64, width: Width) -> i64 {
        let last = self.last();
        if last != i64::MIN
            && let Some(start) = last.checked_mul(width.0)
            && ms >= start
            && ms.abs_diff(start) < width.0.unsigned_abs()
        {
            return last;
        }
        width.slot_ms(ms)
    }

    /// Counts a request (a failure if `failed`) in `slot`, moving the ring to it if it is later
    /// than the latest.
    #[inline]
    fn record(&mut self, slot: i64, failed: bool) {
        let last = self.last();
        if last == i64::MIN || slot.saturating_sub(last) >= RecentWindow::BUCKETS {
            for i in 0..WINDOW_BUCKETS {
                self.set_bucket(i, [0; 2]);
            }
            self.set_last(slot);
        } else if slot > last {
            for s in last + 1..=slot {
                self.set_bucket(RecentWindow::index(s), [0; 2]);
            }
            self.set_last(slot);
        } else if slot <= last.saturating_sub(RecentWindow::BUCKETS) {
            return; // older than the window already: nothing to count
        }
        let i = RecentWindow::index(slot);
        let [requests, failures] = self.bucket(i);
        self.set_bucket(
            i,
            [
                requests.saturating_add(1),
                failures.saturating_add(u32::from(failed)),
            ],
        );
    }
}

impl Ring for RecentWindow {
    fn last(&self) -> i64 {
        self.last
    }

    fn set_last(&mut self, slot: i64) {
        self.last = slot;
    }

    fn bucket(&self, i: usize) -> [u32; 2] {
        self.counts.get(i).copied().unwrap_or_default()
    }

    fn set_bucket(&mut self, i: usize, counts: [u32; 2]) {
        if let Some(c) = self.counts.get_mut(i) {
            *c = counts;
        }
    }
}

/// A [`RecentWindow`] in atomics, which one owner writes inside its sequence lock ([`Owned`]).
#[derive(Debug)]
struct AtomicWindow {
    last: AtomicI64,
    counts: [[AtomicU32; 2]; WINDOW_BUCKETS],
}

impl AtomicWindow {
    const fn new() -> Self {
        Self {
            last: AtomicI64::new(i64::MIN),
            counts: [const { [AtomicU32::new(0), AtomicU32::new(0)] }; WINDOW_BUCKETS],
        }
    }

    /// A copy (whole only between two equal reads of the owner's sequence).
    fn load(&self) -> RecentWindow {
        RecentWindow {
            last: self.last.load(Ordering::Relaxed),
            counts: std::array::from_fn(|i| {
                self.counts[i].each_ref().map(|c| c.load(Ordering::Relaxed))
            }),
        }
    }
}

/// The owner's access to its [`AtomicWindow`] (plain loads and stores: it is the only writer).
struct Writing<'a>(&'a AtomicWindow);

impl Ring for Writing<'_> {
    #[inline]
    fn last(&self) -> i64 {
        self.0.last.load(Ordering::Relaxed)
    }

    #[inline]
    fn set_last(&mut self, slot: i64) {
        self.0.last.store(slot, Ordering::Relaxed);
    }

    #[inline]
    fn bucket(&self, i: usize) -> [u32; 2] {
        self.0
            .counts
            .get(i)
            .map_or([0; 2], |c| c.each_ref().map(|c| c.load(Ordering::Relaxed)))
    }

    #[inline]
    fn set_bucket(&mut self, i: usize, counts: [u32; 2]) {
        if let Some(c) = self.0.counts.get(i) {
            c[0].store(counts[0], Ordering::Relaxed);
            c[1].store(counts[1], Ordering::Relaxed);
        }
    }
}

/// Requests and failures over the recent window, in a ring of 30 fixed-width time buckets of
/// `u32` counts (saturating). Which time slot a bucket holds follows from its position and the
/// latest slot recorded (`last`): the ring always covers the 30 slots ending at `last`, and
/// buckets are zeroed as `last` moves past them, so no bucket needs a timestamp of its own.
/// 248 bytes (it was 720 with a timestamp and two `u64` counts per bucket); the bucket width is
/// the credential's [`Width`].
#[derive(Debug)]
struct RecentWindow {
    /// The latest slot recorded; `i64::MIN` before the first record.
    last: i64,
    /// Requests and failures per slot, at index `slot mod 30`.
    counts: [[u32; 2]; WINDOW_BUCKETS],
}

impl RecentWindow {
    const BUCKETS: i64 = WINDOW_BUCKETS as i64;

    const fn new() -> Self {
        Self {
            last: i64::MIN,
            counts: [[0; 2]; WINDOW_BUCKETS],
        }
    }

    fn index(slot: i64) -> usize {
        usize::try_from(slot.rem_euclid(Self::BUCKETS)).unwrap_or(0)
    }

    /// The slot of `ms` (see [`Width::slot_ms`]): the latest one recorded when `ms` is in it
    /// (a checked multiplication and comparisons), otherwise divided out.
    #[inline]
    fn slot_of(&self, ms: i64, width: Width) -> i64 {
        Ring::slot_of(self, ms, width)
    }

    fn record(&mut self, slot: i64, failed: bool) {
        Ring::record(self, slot, failed);
    }

    /// Requests and failures in the buckets that end no earlier than `now - window` (the current
    /// slot `current` and the 29 before it) among those the ring still holds.
    fn totals(&self, current: i64) -> (u64, u64) {
        if self.last == i64::MIN {
            return (0, 0);
        }
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

    std::thread_local! {
        /// Makes the calling thread record on the locked path, as a thread owning no shard does
        /// (for the tests of that path).
        pub(super) static LOCKED_ONLY: std::cell::Cell<bool> =
            const { std::cell::Cell::new(false) };
    }

    /// The calling thread records on the locked path from now on.
    fn locked_path() {
        LOCKED_ONLY.set(true);
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("valid date")
    }

    /// A window with its width, as a credential keeps them, recording and read at times.
    struct TestWindow {
        width: Width,
        inner: RecentWindow,
    }

    impl TestWindow {
        fn new(window: Duration) -> Self {
            Self {
                width: Width::of(window),
                inner: RecentWindow::new(),
            }
        }

        fn window(&self) -> Duration {
            self.width.window()
        }

        fn record(&mut self, at: DateTime<Utc>, failed: bool) {
            self.inner.record(self.width.slot(at), failed);
        }

        fn totals(&self, now: DateTime<Utc>) -> (u64, u64) {
            self.inner.totals(self.width.slot(now))
        }
    }

    impl std::ops::Deref for TestWindow {
        type Target = RecentWindow;
        fn deref(&self) -> &RecentWindow {
            &self.inner
        }
    }

    impl std::ops::DerefMut for TestWindow {
        fn deref_mut(&mut self) -> &mut RecentWindow {
            &mut self.inner
        }
    }

    #[test]
    fn window_counts_recent_and_forgets_old() {
        let mut w = TestWindow::new(Duration::from_secs(300));
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
        let mut w = TestWindow::new(Duration::from_secs(60));
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
            let w = TestWindow::new(window);
            Self {
                width_ms: w.width.0,
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

    /// Milliseconds that are not the instant's, at the ends of `i64` and with the narrowest
    /// window (1 ms buckets): nothing panics, and every request is counted.
    #[test]
    fn any_milliseconds_record_without_panicking() {
        let m = CredentialMetrics::new(Duration::from_millis(30));
        let ms = [
            i64::MIN,
            i64::MIN + 5,
            i64::MIN + 3,
            -1,
            0,
            i64::MAX - 3,
            i64::MAX,
            i64::MIN,
        ];
        for ms in ms {
            m.record_request_at(1, Duration::ZERO, RequestOutcome::Success, t0(), ms);
        }
        assert_eq!(m.snapshot(t0()).request_count, 8);
    }

    proptest::proptest! {
        /// Arbitrary records and queries (time going back and forth): the compact window gives
        /// exactly the model's counts.
        #[test]
        fn compact_window_matches_the_model(
            window_s in 1u64..900,
            ops in proptest::collection::vec((-400i64..400, proptest::bool::ANY, proptest::bool::ANY), 1..200),
        ) {
            let mut w = TestWindow::new(Duration::from_secs(window_s));
            let mut model = Model::default();
            let mut at = t0();
            for (step_s, failed, query) in ops {
                at += TimeDelta::milliseconds(step_s * 100);
                if query {
                    let current = at.timestamp_millis().div_euclid(w.width.0);
                    proptest::prop_assert_eq!(w.totals(at), model.totals(current));
                } else {
                    w.record(at, failed);
                    model.record(at.timestamp_millis().div_euclid(w.width.0), failed);
                }
            }
        }

        /// The slot a record takes from the latest one recorded (without a division) is the one
        /// the division gives, for any time, width and latest slot, near it or at the extremes.
        #[test]
        fn the_slot_kept_from_the_latest_record_is_the_divided_one(
            window_ms in proptest::prop_oneof![1u64..100_000, proptest::strategy::Just(u64::MAX)],
            last in proptest::prop_oneof![proptest::num::i64::ANY, -1_000i64..1_000],
            far in proptest::num::i64::ANY,
            near in -3i64..3,
            offset in 0i64..10_000,
            use_far in proptest::bool::ANY,
        ) {
            let width = Width::of(Duration::from_millis(window_ms));
            let mut w = RecentWindow::new();
            w.last = last;
            let ms = if use_far {
                far
            } else {
                last.saturating_add(near)
                    .saturating_mul(width.0)
                    .saturating_add(offset % width.0)
            };
            proptest::prop_assert_eq!(w.slot_of(ms, width), width.slot_ms(ms));
        }

        /// Recording with the milliseconds beside the instant gives the snapshot recording with
        /// the instant alone gives, at any time chrono holds (its edges included).
        #[test]
        fn recording_with_milliseconds_is_recording_with_the_instant(
            window_ms in 1u64..1_000_000,
            steps in proptest::collection::vec((proptest::prop_oneof![
                -8_334_601_228_800_000i64..=8_210_266_876_799_999,
                proptest::strategy::Just(-8_334_601_228_800_000i64),
                proptest::strategy::Just(8_210_266_876_799_999i64),
                1_800_000_000_000i64..1_800_000_100_000,
            ], proptest::bool::ANY), 1..40),
        ) {
            let with_instant = CredentialMetrics::new(Duration::from_millis(window_ms));
            let with_ms = CredentialMetrics::new(Duration::from_millis(window_ms));
            for (ms, failed) in &steps {
                let now = DateTime::from_timestamp_millis(*ms).expect("in chrono's range");
                let outcome = if *failed {
                    RequestOutcome::Failure(FailureKind::Transient)
                } else {
                    RequestOutcome::Success
                };
                with_instant.record_request(1, Duration::from_millis(2), outcome, now);
                with_ms.record_request_at(1, Duration::from_millis(2), outcome, now, *ms);
                proptest::prop_assert_eq!(with_instant.snapshot(now), with_ms.snapshot(now));
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
            let mut new = TestWindow::new(window);
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
        let mut w = TestWindow::new(Duration::from_secs(300));
        let slot = w.width.slot(t0());
        w.counts[RecentWindow::index(slot)] = [u32::MAX, u32::MAX - 1];
        w.last = slot;
        w.record(t0(), true);
        w.record(t0(), true);
        assert_eq!(w.totals(t0()), (u64::from(u32::MAX), u64::from(u32::MAX)));
    }

    #[test]
    fn the_handle_is_small_and_the_counters_come_with_the_first_record() {
        // On x86_64: the handle 32 bytes (48 with the `Arc`'s counts; 512 before); once
        // something is recorded, the owner's counters and the locks' line 448, and the locked
        // counters 352 once a thread other than the owner records, the window 248 of them (720
        // before).
        if cfg!(target_pointer_width = "64") {
            assert_eq!(std::mem::size_of::<CredentialMetrics>(), 32);
            assert_eq!(std::mem::size_of::<Counters>(), 352);
            assert_eq!(std::mem::size_of::<RecentWindow>(), 248);
            assert_eq!(std::mem::size_of::<State>(), 448);
            assert_eq!(std::mem::size_of::<Owned>(), 328);
        }
        assert_eq!(std::mem::size_of::<Shard>() % 64, 0);
        let m = CredentialMetrics::with_shards(Duration::from_secs(300), 4);
        assert!(
            m.state.get().is_none(),
            "nothing allocated before the first record"
        );
        assert_eq!(
            m.snapshot(t0()),
            UsageSnapshot {
                recent_window: Duration::from_secs(300),
                ..UsageSnapshot::default()
            }
        );
        assert!(m.state.get().is_none(), "a snapshot allocates nothing");
        m.record_request(1, Duration::from_millis(5), RequestOutcome::Success, t0());
        if place().owned_in(MAX_SHARDS - 1).is_some() {
            // An owner of a global shard records into the owned counters, and only there.
            assert!(!m.locked_counters());
            assert_eq!(m.state().owned.read().success_count, 1);
        } else {
            assert!(m.locked_counters());
        }
        assert!(!m.is_sharded(), "one thread alone stays in shard 0");
        assert_eq!(m.snapshot(t0()).request_count, 1);
    }

    /// A thread that owns a global shard records requests into the owned counters, without a
    /// lock, while other threads copy them: every copy holds whole requests (the tokens, latency,
    /// outcomes and recent window of the same requests), and the last one every request.
    #[test]
    fn owned_counters_are_copied_whole_while_their_owner_writes() {
        let _serial = crate::shard::tests::serial();
        let step = 17_003; // ns between requests: the seconds move too
        let at = |i: u64| t0() + TimeDelta::nanoseconds(i64::try_from(i * step).unwrap_or(0));
        let outcome = |i: u64| {
            if i.is_multiple_of(3) {
                RequestOutcome::Failure(FailureKind::Transient)
            } else {
                RequestOutcome::Success
            }
        };
        let latency = Duration::from_nanos(1_000_000_007);
        // A thread that owns a shard (other tests' threads may hold them all for a moment).
        for _ in 0..64 {
            let m = CredentialMetrics::with_shards(Duration::from_secs(300), 4);
            let done = std::sync::atomic::AtomicBool::new(false);
            let midway = std::sync::atomic::AtomicU64::new(0);
            let recorded = std::thread::scope(|s| {
                let writer = s.spawn(|| {
                    if place().owned_in(MAX_SHARDS - 1).is_none() {
                        done.store(true, Ordering::Release);
                        return None;
                    }
                    // Until at least one copy was taken while this thread was writing.
                    let mut i = 0;
                    while i < 200_000 || (midway.load(Ordering::Relaxed) == 0 && i < 2_000_000) {
                        m.record_request(3, latency, outcome(i), at(i));
                        i += 1;
                    }
                    done.store(true, Ordering::Release);
                    Some(i)
                });
                for _ in 0..2 {
                    s.spawn(|| {
                        let mut last_seen = 0;
                        while !done.load(Ordering::Acquire) {
                            let snap = m.snapshot(t0() + TimeDelta::seconds(299));
                            let n = snap.request_count;
                            assert!(n >= last_seen, "counts never go back");
                            last_seen = n;
                            assert_eq!(snap.tokens_used, 3 * n);
                            assert_eq!(snap.total_latency, latency * u32::try_from(n).unwrap_or(0));
                            assert_eq!(snap.error_count, n.div_ceil(3));
                            assert_eq!(
                                (snap.recent_requests, snap.recent_failures),
                                (n, snap.error_count)
                            );
                            if n > 0 {
                                assert_eq!(snap.first_used, Some(t0()));
                                assert_eq!(snap.last_used, Some(at(n - 1)));
                                midway.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
                writer.join().expect("writer")
            });
            let Some(total) = recorded else { continue };
            assert!(
                midway.load(Ordering::Relaxed) > 0,
                "copies taken while the owner wrote"
            );
            let owned = m.state().owned.read();
            assert_eq!(owned.success_count, total - total.div_ceil(3));
            assert!(!m.locked_counters(), "the owner took no lock");
            assert_eq!(
                m.snapshot(t0() + TimeDelta::seconds(299)).request_count,
                total
            );
            return;
        }
        panic!("no thread got a shard of its own");
    }

    /// The owned counters pass with the global shard: threads that own it one after another
    /// write them in turn (the next owner sees the last one's counts), and a thread owning
    /// another shard records on the locked path meanwhile. Nothing is lost.
    #[test]
    fn owned_counters_pass_to_the_next_owner_of_the_shard() {
        let _serial = crate::shard::tests::serial();
        let m = CredentialMetrics::with_shards(Duration::from_secs(300), 4);
        for round in 0..8u64 {
            std::thread::scope(|s| {
                let writers: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            for _ in 0..10_000 {
                                m.record_request(1, Duration::ZERO, RequestOutcome::Success, t0());
                            }
                        })
                    })
                    .collect();
                for w in writers {
                    w.join().expect("writer");
                }
            });
            assert_eq!(m.snapshot(t0()).request_count, (round + 1) * 20_000);
        }
        let owned = m.state().owned.read();
        assert!(
            owned.success_count >= 10_000,
            "an owner wrote the owned counters"
        );
    }

    /// Runs `f` on a new thread whose shard (of `shards`) is not shard 0, trying new threads
    /// until one is.
    fn on_a_thread_off_shard_0(shards: usize, f: impl Fn() + Sync) {
        std::thread::scope(|s| {
            for _ in 0..64 {
                let off = s
                    .spawn(|| {
                        locked_path();
                        let off = thread_shard() & (shards - 1) != 0;
                        if off {
                            f();
                        }
                        off
                    })
                    .join()
                    .expect("thread");
                if off {
                    return;
                }
            }
            panic!("no thread got a shard other than 0");
        });
    }

    #[test]
    fn a_contended_record_takes_a_shard_of_its_own_instead_of_waiting() {
        locked_path();
        let m = CredentialMetrics::with_shards(Duration::from_secs(300), 4);
        m.record_request(1, Duration::from_millis(1), RequestOutcome::Success, t0());
        {
            // Another recorder holds shard 0: this record must not wait for it.
            let _held = lock(&m.state().shared.first);
            on_a_thread_off_shard_0(4, || {
                m.record_request(2, Duration::from_millis(3), RequestOutcome::Success, t0());
            });
        }
        assert!(m.is_sharded());
        let s = m.snapshot(t0());
        assert_eq!((s.request_count, s.tokens_used), (2, 3));
        assert_eq!(s.total_latency, Duration::from_millis(4));
        assert_eq!(s.recent_requests, 2);
        // From now on other threads record into their own shards too.
        on_a_thread_off_shard_0(4, || {
            m.record_request(4, Duration::ZERO, RequestOutcome::Success, t0());
        });
        assert_eq!(m.snapshot(t0()).tokens_used, 7);
    }

    #[test]
    fn one_shard_never_allocates_more() {
        let m = CredentialMetrics::new(Duration::from_secs(300));
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    locked_path();
                    for _ in 0..20_000 {
                        m.record_request(1, Duration::ZERO, RequestOutcome::Success, t0());
                    }
                });
            }
        });
        assert!(!m.is_sharded());
        assert_eq!(m.snapshot(t0()).request_count, 40_000);
    }

    /// Snapshots taken while one thread records do not count as contention: the credential
    /// stays in one shard (a reporting loop would otherwise shard every credential in time).
    #[test]
    fn snapshots_do_not_shard_a_credential() {
        let m = CredentialMetrics::with_shards(Duration::from_secs(300), 4);
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                locked_path();
                for _ in 0..200_000 {
                    m.record_request(1, Duration::ZERO, RequestOutcome::Success, t0());
                }
                done.store(true, Ordering::Release);
            });
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    std::hint::black_box(m.snapshot(t0()));
                }
            });
        });
        assert!(!m.is_sharded());
        assert_eq!(m.snapshot(t0()).request_count, 200_000);
    }

    /// Writers on one credential at once, with snapshots taken meanwhile: every snapshot holds
    /// whole requests only, and the end result is the sum of everything recorded, whether or not
    /// (and whenever) the credential got its shards.
    #[test]
    fn concurrent_writers_sum_to_the_total_and_snapshots_stay_whole() {
        for shards in [1, 2, 4, 16] {
            let m = CredentialMetrics::with_shards(Duration::from_secs(300), shards);
            let writers = 4u64;
            let per_writer = 20_000u64;
            let done = AtomicU32::new(0);
            std::thread::scope(|s| {
                for t in 0..writers {
                    let (m, done) = (&m, &done);
                    s.spawn(move || {
                        for i in 0..per_writer {
                            let outcome = if (i + t) % 5 == 0 {
                                RequestOutcome::Failure(FailureKind::Transient)
                            } else {
                                RequestOutcome::Success
                            };
                            m.record_request(3, Duration::from_micros(7), outcome, t0());
                            if i % 1000 == 0 {
                                m.record_refresh(RefreshResult::Success, Duration::ZERO, t0());
                            }
                        }
                        done.fetch_add(1, Ordering::Release);
                    });
                }
                s.spawn(|| {
                    while done.load(Ordering::Acquire) < 4 {
                        let snap = m.snapshot(t0());
                        assert_eq!(snap.tokens_used, 3 * snap.request_count);
                        assert_eq!(
                            snap.total_latency,
                            Duration::from_micros(7 * snap.request_count)
                        );
                        assert_eq!(snap.recent_requests, snap.request_count);
                        assert_eq!(snap.recent_failures, snap.error_count);
                    }
                });
            });
            let s = m.snapshot(t0());
            let total = writers * per_writer;
            assert_eq!(s.request_count, total, "{shards} shards");
            assert_eq!(s.error_count, total / 5);
            assert_eq!(s.tokens_used, 3 * total);
            assert_eq!(s.total_latency, Duration::from_micros(7 * total));
            assert_eq!((s.recent_requests, s.recent_failures), (total, total / 5));
            assert_eq!(s.refresh_count, writers * per_writer / 1000);
            assert_eq!((s.first_used, s.last_used), (Some(t0()), Some(t0())));
            if shards == 1 {
                assert!(!m.is_sharded());
            }
        }
    }

    #[test]
    fn tiny_window_is_clamped() {
        let w = TestWindow::new(Duration::ZERO);
        assert_eq!(w.window(), Duration::from_millis(30));
    }
}
