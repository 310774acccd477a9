//! The credential pool: per-credential slots and lock-free selection.
//!
//! Reads never take a lock shared by all credentials:
//! - the list of slots is an immutable [`Pool`] behind an `ArcSwap`, replaced when credentials are
//!   added or removed;
//! - each slot publishes when it is next available as an atomic (`available_at_ms`), derived from its
//!   own [`CredentialHealth`] (a per-credential mutex, taken only on state changes);
//! - the available slots form an immutable [`Available`] snapshot, rebuilt when a slot's
//!   availability changes or when the earliest backoff ends. Selection indexes into it with the
//!   calling thread's own cursor (one of eight, claimed on first use), so its cost does not depend on
//!   how many credentials are in backoff, threads do not write a shared line, and a skipped
//!   credential's share is spread evenly over the others (the Go code gave it to the successor).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::settings::Selection;
use chrono::{DateTime, Utc};
use oauth_core::{Availability, Credential, CredentialHealth, CredentialId, HealthChange};
use std::time::Duration;

use oauth_core::CredentialState;
use oauth_metrics::{CredentialMetrics, CredentialRecorder, RefreshResult, RequestOutcome};

/// `available_at_ms` value for "now".
const NOW: i64 = i64::MIN;
/// `available_at_ms` value for "never" (needs re-authorization, disabled).
const NEVER: i64 = i64::MAX;

pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// One credential in the pool.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) id: CredentialId,
    credential: ArcSwap<Credential>,
    /// The store's version of this credential (0: not stored).
    pub(crate) version: AtomicU64,
    health: Mutex<CredentialHealth>,
    available_at_ms: AtomicI64,
    /// Until when it stays available (a credential needing re-authorization, while its access
    /// token lasts); `i64::MAX` for no limit.
    available_until_ms: AtomicI64,
    /// The health has something to clear on success (failures, backoff); a success on a clean slot
    /// takes no lock.
    troubled: AtomicBool,
    /// Fields written on every call. (Giving them a cache line of their own was measured: it
    /// helped two threads sharing three credentials by 8% and cost a single thread over 10,000
    /// credentials 19%, so they stay packed.)
    per_call: PerCall,
    /// Being replaced by a rotation: selected only when no unmarked credential is available.
    pub(crate) marked: AtomicBool,
    /// Relative share of the traffic (1 = an equal share; up to [`MAX_WEIGHT`]).
    pub(crate) weight: AtomicU32,
    /// A refreshed credential that could not be persisted yet.
    pub(crate) persist_pending: AtomicBool,
    /// Failed attempts to persist the pending credential.
    persist_attempts: AtomicU32,
    /// The manager's own in-memory counters (static dispatch on the hot path).
    pub(crate) usage: Arc<CredentialMetrics>,
    /// The application's recorder, if any (e.g. Prometheus).
    extra: Option<Arc<dyn CredentialRecorder>>,
}

impl Slot {
    pub(crate) fn new(
        credential: Credential,
        version: u64,
        seed: u64,
        usage: Arc<CredentialMetrics>,
        extra: Option<Arc<dyn CredentialRecorder>>,
    ) -> Self {
        Self {
            id: credential.id.clone(),
            credential: ArcSwap::from_pointee(credential),
            version: AtomicU64::new(version),
            health: Mutex::new(CredentialHealth::new(seed)),
            available_at_ms: AtomicI64::new(NOW),
            available_until_ms: AtomicI64::new(i64::MAX),
            troubled: AtomicBool::new(false),
            per_call: PerCall {
                last_success_ms: AtomicI64::new(i64::MIN),
                in_flight: AtomicU32::new(0),
                latency_ewma_us: AtomicU64::new(0),
            },
            marked: AtomicBool::new(false),
            weight: AtomicU32::new(1),
            persist_pending: AtomicBool::new(false),
            persist_attempts: AtomicU32::new(0),
            usage,
            extra,
        }
    }

    /// Records one request in every recorder.
    pub(crate) fn record_request(
        &self,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
        now: DateTime<Utc>,
    ) {
        self.usage.record_request(tokens, latency, outcome, now);
        // EWMA with weight 1/8; a lost race between two updates only loses one sample.
        let sample = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let old = self.per_call.latency_ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.per_call.latency_ewma_us.store(new, Ordering::Relaxed);
        if let Some(extra) = &self.extra {
            extra.record_request(tokens, latency, outcome, now);
        }
    }

    /// Records one refresh in every recorder.
    pub(crate) fn record_refresh(&self, result: RefreshResult, took: Duration, now: DateTime<Utc>) {
        self.usage.record_refresh(result, took, now);
        if let Some(extra) = &self.extra {
            extra.record_refresh(result, took, now);
        }
    }

    /// Counts a failed attempt to persist this credential; returns the attempts so far.
    pub(crate) fn record_persistence_failure(&self) -> u32 {
        let attempts = self
            .persist_attempts
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        self.usage.record_persistence_failure();
        if let Some(extra) = &self.extra {
            extra.record_persistence_failure();
        }
        attempts
    }

    /// The credential was persisted: pending work and the attempt count clear.
    pub(crate) fn persisted(&self) {
        self.persist_pending.store(false, Ordering::Release);
        self.persist_attempts.store(0, Ordering::Release);
    }

    /// Reports the state gauges.
    pub(crate) fn record_state(
        &self,
        state: CredentialState,
        expires_in: Option<Duration>,
        cooldown: Option<Duration>,
    ) {
        if let Some(extra) = &self.extra {
            extra.record_state(state, expires_in, cooldown);
        }
    }

    /// The current credential (a cheap shared copy; the pool never hands out a mutable pointer).
    pub(crate) fn credential(&self) -> Arc<Credential> {
        self.credential.load_full()
    }

    /// The current credential without touching its reference count (a thread-local debt slot of
    /// arc-swap), for callers that hold it briefly.
    pub(crate) fn lease(&self) -> arc_swap::Guard<Arc<Credential>> {
        self.credential.load()
    }

    /// Publishes a new credential (after a refresh, or adopted from the store).
    pub(crate) fn set_credential(&self, credential: Credential) {
        self.credential.store(Arc::new(credential));
    }

    /// How loaded the slot looks to a load-aware selection: lower is better.
    fn load_score(&self, selection: Selection) -> u64 {
        let in_flight = u64::from(self.per_call.in_flight.load(Ordering::Relaxed));
        match selection {
            Selection::RoundRobin | Selection::LeastInFlight => in_flight,
            Selection::LatencyAware => (in_flight + 1)
                .saturating_mul(self.per_call.latency_ewma_us.load(Ordering::Relaxed).max(1)),
        }
    }

    /// True when the slot can serve at `now_ms`.
    pub(crate) fn is_available_at(&self, now_ms: i64) -> bool {
        self.available_at_ms.load(Ordering::Acquire) <= now_ms
            && now_ms < self.available_until_ms.load(Ordering::Acquire)
    }

    /// True when the slot can serve now; reads the clock only if the slot has a time to compare.
    fn is_available(&self, now: &Now<'_>) -> bool {
        let from = match self.available_at_ms.load(Ordering::Acquire) {
            NOW => true,
            NEVER => false,
            at => at <= now.get(),
        };
        from && match self.available_until_ms.load(Ordering::Acquire) {
            i64::MAX => true,
            until => now.get() < until,
        }
    }

    /// Runs `f` on the health under its (per-credential) lock, then republishes availability.
    /// Returns `f`'s result and whether availability changed.
    pub(crate) fn with_health<R>(
        &self,
        now: DateTime<Utc>,
        f: impl FnOnce(&mut CredentialHealth) -> R,
    ) -> (R, bool) {
        let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        let r = f(&mut h);
        let now_ms = millis(now);
        let at = match h.availability(now) {
            Availability::Now => NOW,
            Availability::At(t) => millis(t),
            Availability::Never => NEVER,
        };
        let until = h.available_until().map_or(i64::MAX, millis);
        let troubled = h.consecutive_failures() > 0 || at != NOW || until != i64::MAX;
        drop(h);
        let before_until = self.available_until_ms.swap(until, Ordering::AcqRel);
        let before = self.available_at_ms.swap(at, Ordering::AcqRel);
        self.troubled.store(troubled, Ordering::Release);
        let changed = (before <= now_ms) != (at <= now_ms)
            || (before == NEVER) != (at == NEVER)
            || before_until != until;
        (r, changed)
    }

    /// True while the credential needs re-authorization (takes the slot's own lock).
    pub(crate) fn needs_reauthorization(&self) -> bool {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .needs_reauthorization()
    }

    /// Records a success: lock-free unless the health has something to clear.
    pub(crate) fn record_success(&self, now: DateTime<Utc>) -> (Option<HealthChange>, bool) {
        self.per_call
            .last_success_ms
            .store(millis(now), Ordering::Relaxed);
        if !self.troubled.load(Ordering::Acquire) {
            return (None, false);
        }
        self.with_health(now, |h| h.record_success(now))
    }

    /// A snapshot of the health (with the lock-free last-success time merged in).
    pub(crate) fn health_snapshot(
        &self,
        policy: &oauth_core::HealthPolicy,
        now: DateTime<Utc>,
    ) -> oauth_core::HealthSnapshot {
        let mut snap = self
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot(policy, now);
        let ms = self.per_call.last_success_ms.load(Ordering::Relaxed);
        if let Some(t) = (ms != i64::MIN).then(|| from_millis(ms)).flatten()
            && snap.last_success.is_none_or(|l| l < t)
        {
            snap.last_success = Some(t);
        }
        snap
    }
}

/// The largest weight a credential may have.
pub(crate) const MAX_WEIGHT: u32 = 16;

/// Expands `slots` so that each appears as many times as its weight, interleaved by stride
/// scheduling (the least-advanced slot goes next), so a weight-3 credential gets every third or
/// so pick rather than three in a row. Unchanged when every weight is 1. `O(total · log n)` per
/// rebuild; the total is at most [`MAX_WEIGHT`] times the number of slots.
fn weighted(slots: Vec<Arc<Slot>>) -> Vec<Arc<Slot>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let weights: Vec<u64> = slots
        .iter()
        .map(|s| u64::from(s.weight.load(Ordering::Relaxed).clamp(1, MAX_WEIGHT)))
        .collect();
    if weights.iter().all(|w| *w == 1) {
        return slots;
    }
    const SPAN: u64 = 1 << 20;
    let total: u64 = weights.iter().sum();
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| Reverse((SPAN / w / 2, i)))
        .collect();
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(slots.len()));
    while let Some(Reverse((pass, i))) = heap.pop() {
        if out.len() as u64 == total {
            break;
        }
        out.push(Arc::clone(&slots[i]));
        heap.push(Reverse((pass + SPAN / weights[i], i)));
    }
    out
}

/// The per-call counters of a slot.
#[derive(Debug)]
struct PerCall {
    last_success_ms: AtomicI64,
    /// Requests running on this credential now (kept only for the load-aware selections).
    in_flight: AtomicU32,
    /// Exponentially weighted moving average of request latency, in microseconds (0: none yet).
    latency_ewma_us: AtomicU64,
}

/// Counts a request in flight on a slot until dropped (also on cancellation).
pub(crate) struct InFlight<'a>(&'a Slot);

impl<'a> InFlight<'a> {
    pub(crate) fn enter(slot: &'a Slot) -> Self {
        slot.per_call.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(slot)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.per_call.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The immutable list of slots.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    pub(crate) slots: Vec<Arc<Slot>>,
    pub(crate) by_id: HashMap<CredentialId, Arc<Slot>>,
}

impl Pool {
    pub(crate) fn new(slots: Vec<Arc<Slot>>) -> Self {
        let by_id = slots
            .iter()
            .map(|s| (s.id.clone(), Arc::clone(s)))
            .collect();
        Self { slots, by_id }
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Arc<Slot>> {
        self.by_id.get(id)
    }
}

/// The slots available when the snapshot was built.
#[derive(Debug, Default)]
struct Available {
    /// Unmarked available slots.
    preferred: Vec<Arc<Slot>>,
    /// Available slots being rotated out: used only when `preferred` is empty.
    fallback: Vec<Arc<Slot>>,
    /// Rebuild when the clock reaches this (the earliest backoff end); `i64::MAX` for never.
    recheck_at_ms: i64,
}

/// "Now" in milliseconds, read from the clock at most once and only if asked.
pub(crate) struct Now<'a> {
    clock: &'a dyn oauth_core::Clock,
    ms: std::cell::Cell<Option<i64>>,
}

impl<'a> Now<'a> {
    pub(crate) fn new(clock: &'a dyn oauth_core::Clock) -> Self {
        Self {
            clock,
            ms: std::cell::Cell::new(None),
        }
    }

    /// The time, read on first use.
    pub(crate) fn get(&self) -> i64 {
        match self.ms.get() {
            Some(ms) => ms,
            None => {
                let ms = self.clock.now_millis();
                self.ms.set(Some(ms));
                ms
            }
        }
    }
}

/// Why nothing was selected.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoneAvailable {
    /// When the first credential will be available again, if any will.
    pub(crate) next_available_at: Option<DateTime<Utc>>,
}

/// Cursor shards: each thread advances its own cursor (no cache line shared by every caller), and
/// one thread's successive calls still go round-robin exactly.
const CURSOR_SHARDS: usize = 8;

/// A cursor on its own cache line.
#[derive(Debug)]
#[repr(align(128))]
struct Cursor(AtomicUsize);

/// A small process-wide tag for the current thread (never 0).
fn thread_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TAG: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TAG.with(|t| *t)
}

/// Lock-free round-robin selection over the available slots.
#[derive(Debug)]
pub(crate) struct Selector {
    pool: ArcSwap<Pool>,
    available: ArcSwap<Available>,
    cursors: [Cursor; CURSOR_SHARDS],
    /// Which thread owns each cursor (its [`thread_tag`]; 0: free). The first thread to select
    /// gets cursor 0, the next cursor 1, and so on; beyond the last, threads share by tag.
    owners: [AtomicU64; CURSOR_SHARDS],
    /// Credentials in the pool (read on every call to bound its attempts).
    len: AtomicUsize,
    /// The [`Selection`] in force (its index), read on every pick without touching the settings.
    selection: std::sync::atomic::AtomicU8,
    /// Serializes changes of the slot list.
    writer: Mutex<()>,
    rebuild: Mutex<()>,
}

impl Selector {
    pub(crate) fn new(pool: Pool, now: DateTime<Utc>) -> Self {
        let s = Self {
            len: AtomicUsize::new(pool.slots.len()),
            pool: ArcSwap::from_pointee(pool),
            available: ArcSwap::from_pointee(Available::default()),
            // Cursor i starts at credential i: the first thread's first pick is the first
            // credential, and threads running in step do not all pick the same one.
            cursors: std::array::from_fn(|i| Cursor(AtomicUsize::new(i))),
            owners: std::array::from_fn(|_| AtomicU64::new(0)),
            selection: std::sync::atomic::AtomicU8::new(0),
            writer: Mutex::new(()),
            rebuild: Mutex::new(()),
        };
        s.rebuild(millis(now));
        s
    }

    pub(crate) fn pool(&self) -> arc_swap::Guard<Arc<Pool>> {
        self.pool.load()
    }

    /// Credentials in the pool.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub(crate) fn pool_full(&self) -> Arc<Pool> {
        self.pool.load_full()
    }

    /// Changes the list of slots (credentials added or removed) and rebuilds the available set.
    /// Writers are serialized, so two concurrent changes never lose one another.
    pub(crate) fn modify_pool(
        &self,
        now: DateTime<Utc>,
        change: impl FnOnce(&[Arc<Slot>]) -> Vec<Arc<Slot>>,
    ) {
        {
            let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let slots = change(&self.pool.load().slots);
            let pool = Pool::new(slots);
            self.len.store(pool.slots.len(), Ordering::Relaxed);
            self.pool.store(Arc::new(pool));
        }
        self.rebuild(millis(now));
    }

    /// Rebuilds the snapshot because a backoff ended, unless another caller already did while this
    /// one waited (so callers arriving together after a backoff rebuild once, not once each).
    fn rebuild_if_due(&self, now_ms: i64) {
        let serialized = self.rebuild.lock().unwrap_or_else(PoisonError::into_inner);
        if now_ms >= self.available.load().recheck_at_ms {
            self.rebuild_locked(now_ms, serialized);
        }
    }

    /// Rebuilds the available snapshot from the slots' published availability.
    pub(crate) fn rebuild(&self, now_ms: i64) {
        let serialized = self.rebuild.lock().unwrap_or_else(PoisonError::into_inner);
        self.rebuild_locked(now_ms, serialized);
    }

    fn rebuild_locked(&self, now_ms: i64, _serialized: std::sync::MutexGuard<'_, ()>) {
        let pool = self.pool.load();
        let mut next = Available {
            preferred: Vec::with_capacity(pool.slots.len()),
            fallback: Vec::new(),
            recheck_at_ms: i64::MAX,
        };
        for slot in &pool.slots {
            let at = slot.available_at_ms.load(Ordering::Acquire);
            let until = slot.available_until_ms.load(Ordering::Acquire);
            if until <= now_ms {
                continue; // its access token has expired and it needs re-authorization
            }
            if at <= now_ms {
                if slot.marked.load(Ordering::Acquire) {
                    next.fallback.push(Arc::clone(slot));
                } else {
                    next.preferred.push(Arc::clone(slot));
                }
                if until != i64::MAX {
                    next.recheck_at_ms = next.recheck_at_ms.min(until);
                }
            } else if at != NEVER {
                next.recheck_at_ms = next.recheck_at_ms.min(at);
            }
        }
        next.preferred = weighted(next.preferred);
        next.fallback = weighted(next.fallback);
        self.available.store(Arc::new(next));
    }

    /// This thread's cursor: the one it owns, or the first free one it claims.
    fn shard(&self) -> usize {
        let tag = thread_tag();
        for (i, owner) in self.owners.iter().enumerate() {
            let current = owner.load(Ordering::Relaxed);
            if current == tag
                || (current == 0
                    && owner
                        .compare_exchange(0, tag, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok())
            {
                return i;
            }
        }
        usize::try_from(tag).unwrap_or(0) % CURSOR_SHARDS
    }

    /// Sets how the next credential is chosen.
    pub(crate) fn set_selection(&self, selection: Selection) {
        let index = match selection {
            Selection::RoundRobin => 0,
            Selection::LeastInFlight => 1,
            Selection::LatencyAware => 2,
        };
        self.selection.store(index, Ordering::Relaxed);
    }

    pub(crate) fn selection(&self) -> Selection {
        match self.selection.load(Ordering::Relaxed) {
            1 => Selection::LeastInFlight,
            2 => Selection::LatencyAware,
            _ => Selection::RoundRobin,
        }
    }

    /// The next available slot, round-robin (weighted when weights are set), passed to `f` (so a
    /// caller that needs only the credential takes no reference on the slot).
    pub(crate) fn select<R>(
        &self,
        now: &Now<'_>,
        f: impl Fn(&Arc<Slot>) -> R,
    ) -> Result<R, NoneAvailable> {
        let selection = self.selection();
        if let Some(r) = self.try_select(now, selection, &f) {
            return Ok(r);
        }
        // The snapshot may be stale (a slot changed between its publication and our read).
        self.rebuild(now.get());
        self.try_select(now, selection, &f)
            .ok_or_else(|| NoneAvailable {
                next_available_at: self.next_available_at(now.get()),
            })
    }

    fn try_select<R>(
        &self,
        now: &Now<'_>,
        selection: Selection,
        f: &impl Fn(&Arc<Slot>) -> R,
    ) -> Option<R> {
        let mut avail = self.available.load();
        // With no credential waiting out a backoff there is nothing to recheck: no clock read.
        if avail.recheck_at_ms != i64::MAX && now.get() >= avail.recheck_at_ms {
            drop(avail);
            self.rebuild_if_due(now.get());
            avail = self.available.load();
        }
        let list = if avail.preferred.is_empty() {
            &avail.fallback
        } else {
            &avail.preferred
        };
        let n = list.len();
        if n == 0 {
            return None;
        }
        let start = self.cursors[self.shard()].0.fetch_add(1, Ordering::Relaxed);
        let (first_index, first) = (0..n.min(4))
            .map(|k| start.wrapping_add(k) % n)
            .map(|i| (i, &list[i]))
            .find(|(_, slot)| slot.is_available(now))?;
        if selection == Selection::RoundRobin || n == 1 {
            return Some(f(first));
        }
        // Power of two choices: a second, different candidate picked by a multiplicative hash of
        // the cursor; the less loaded of the two wins (ties keep round-robin order).
        let mut j = start.wrapping_mul(0x9E37_79B9).rotate_right(7) % (n - 1);
        if j >= first_index {
            j += 1;
        }
        let other = &list[j];
        let pick = if other.is_available(now)
            && other.load_score(selection) < first.load_score(selection)
        {
            other
        } else {
            first
        };
        Some(f(pick))
    }

    /// The earliest time any credential becomes available (`None`: none ever will by itself).
    pub(crate) fn next_available_at(&self, now_ms: i64) -> Option<DateTime<Utc>> {
        let pool = self.pool.load();
        pool.slots
            .iter()
            .filter(|s| s.available_until_ms.load(Ordering::Acquire) > now_ms)
            .map(|s| s.available_at_ms.load(Ordering::Acquire))
            .filter(|at| *at != NEVER)
            .map(|at| at.max(now_ms))
            .min()
            .and_then(from_millis)
    }
}
