//! Selection, the hot path: per-credential slots and lock-free selection over them.
//!
//! All instants here are on the manager's health timeline (monotonic time mapped onto
//! wall-clock-like milliseconds, see `clock::Timeline`), so a wall-clock step never stretches a
//! backoff.
//!
//! Reads never take a lock shared by all credentials:
//! - the list of slots is an immutable [`Pool`] behind an `ArcSwap`, replaced when credentials are
//!   added or removed;
//! - each slot publishes when it is next available as an atomic (`available_at_ms`), derived from its
//!   own [`CredentialHealth`] (a per-credential mutex, taken only on state changes);
//! - the available slots form an immutable [`Available`] snapshot, rebuilt when a slot's
//!   availability changes or when the earliest backoff ends. Each thread keeps a copy of it
//!   (thread-local, served while the selector's version is the one it was loaded at, so a pick
//!   does not pay arc-swap's debt protocol; emptied at the thread's next pick once a pool is
//!   dropped or a credential removed, and when the thread exits). Selection indexes into it with
//!   the calling thread's own cursor (one of eight, claimed on first use, passed on when its
//!   thread exits; threads beyond eight share a ninth), so its cost does not depend on how many
//!   credentials are in backoff, the owning threads do not write a shared line, and a skipped
//!   credential's share is spread evenly over the others (the Go code gave it to the successor).
//! - when no credential is available but some are only in a transient backoff (soft), the one that
//!   recovers first takes the call: transient backoff alone never empties the pool.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use crate::settings::{FailoverSettings, Selection};
use chrono::{DateTime, Utc};
use oauth_core::{Availability, Credential, CredentialHealth, CredentialId, HealthChange};
use std::time::Duration;

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
///
/// `repr(C)`, with the fields a healthy call reads or writes first, in the slot's first 120 bytes
/// (two or three cache lines, as the `Arc` places the slot, where the compiler's order spread them
/// over the whole slot: over 10,000 credentials every call misses the cache for each line it
/// touches); the small fields after them, so that the slot is no larger than in the compiler's
/// order.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Slot {
    pub(crate) id: CredentialId,
    credential: ArcSwap<Credential>,
    available_at_ms: AtomicI64,
    /// Until when it stays available (a credential needing re-authorization, while its access
    /// token lasts); `i64::MAX` for no limit.
    available_until_ms: AtomicI64,
    /// Wall-clock milliseconds before which the current credential can be used as it is: no
    /// refresh due under the strategy (with a refresher), or its token still valid (without one).
    /// The hot path's one comparison; `i64::MIN` until the slow path has decided (and again after
    /// anything it depends on changed: the credential, the strategy, the refresher).
    usable_until_ms: AtomicI64,
    /// Counts credential replacements (moved before the new credential is published), so a call
    /// can tell later whether the credential it used is still the current one without keeping a
    /// second reference to it.
    generation: AtomicU64,
    /// Counts credential replacements too, but moved after the new credential is stored: a
    /// thread's private copy of the credential (see [`Held`]), made after reading `installed` at
    /// `i`, is current while `installed` is still `i`.
    installed: AtomicU64,
    /// Fields written on every call. (Giving them a cache line of their own was measured: it
    /// helped two threads sharing three credentials by 8% and cost a single thread over 10,000
    /// credentials 19%, so they stay packed.)
    per_call: PerCall,
    /// The manager's own in-memory counters (static dispatch on the hot path).
    usage: Arc<CredentialMetrics>,
    /// The application's recorder (a no-op one when none is configured).
    recorder: Arc<dyn CredentialRecorder>,
    /// The health has something to clear on success (failures, backoff); a success on a clean slot
    /// takes no lock.
    troubled: AtomicBool,
    /// Removed from the pool: a flight still running for it drops its result, and nothing
    /// records into its (already removed) series.
    removed: AtomicBool,
    /// Being replaced by a rotation: selected only when no unmarked credential is available.
    marked: AtomicBool,
    /// The recorder's handle has a second hint for a picked slot
    /// ([`CredentialRecorder::prefetches_indirect`]).
    indirect: bool,
    /// Relative share of the traffic (1 = an equal share; up to [`MAX_WEIGHT`]).
    weight: AtomicU32,
    /// A refreshed credential that could not be persisted yet.
    persist_pending: AtomicBool,
    /// Failed attempts to persist the pending credential.
    persist_attempts: AtomicU32,
    /// The store's version of this credential (0: not stored).
    version: AtomicU64,
    /// Like `available_at_ms`, ignoring a transient request backoff (see
    /// [`CredentialHealth::hard_availability`]).
    hard_at_ms: AtomicI64,
    health: Mutex<CredentialHealth>,
}

/// How a health mutation changed what the slot publishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Republished {
    /// Whether the slot can serve now changed (the available snapshot must be rebuilt).
    pub(crate) flipped: bool,
    /// When it can serve again moved (matters while nothing is available: the soonest-recovering
    /// slot may have changed).
    pub(crate) moved: bool,
}

impl Slot {
    pub(crate) fn new(
        credential: Credential,
        version: u64,
        seed: u64,
        usage: Arc<CredentialMetrics>,
        recorder: Arc<dyn CredentialRecorder>,
    ) -> Self {
        Self {
            id: credential.id.clone(),
            credential: ArcSwap::from_pointee(credential),
            version: AtomicU64::new(version),
            health: Mutex::new(CredentialHealth::new(seed)),
            available_at_ms: AtomicI64::new(NOW),
            hard_at_ms: AtomicI64::new(NOW),
            available_until_ms: AtomicI64::new(i64::MAX),
            troubled: AtomicBool::new(false),
            usable_until_ms: AtomicI64::new(i64::MIN),
            generation: AtomicU64::new(0),
            installed: AtomicU64::new(0),
            per_call: PerCall {
                last_success_ms: AtomicI64::new(i64::MIN),
                in_flight: AtomicU32::new(0),
                latency_ewma_us: AtomicU64::new(0),
            },
            marked: AtomicBool::new(false),
            indirect: recorder.prefetches_indirect(),
            weight: AtomicU32::new(1),
            persist_pending: AtomicBool::new(false),
            persist_attempts: AtomicU32::new(0),
            removed: AtomicBool::new(false),
            usage,
            recorder,
        }
    }

    /// Asks for the slot's own hot lines (its first 120 bytes, see the type's layout): for a
    /// slot a call will pick soon (see `oauth_core::hint`).
    #[inline]
    fn prefetch(&self) {
        oauth_core::hint::prefetch(&self.id);
        oauth_core::hint::prefetch(&self.per_call);
        oauth_core::hint::prefetch(&self.weight);
    }

    /// Asks for what a call reaches through the slot: the id's bytes (a [`Served`](crate::Served)
    /// clones the id: an id longer than fits inline is behind a reference count; a short one is
    /// in the slot itself, so its hint costs nothing) and the recorders' lines. It reads the
    /// slot's own lines for their addresses, so it is for a slot whose lines were asked for a
    /// call before.
    ///
    /// Not the credential: its address costs an `ArcSwap` load (two locked instructions on the
    /// thread's debt slot), which measured dearer than the miss it saves (pinned A/B on an Intel
    /// Xeon, execute with Prometheus: 1,000 credentials 196-204 ns with the hint against 175-187
    /// without, 10,000 credentials 228-247 against 217-233).
    #[inline]
    fn prefetch_targets(&self) {
        if let Some(first) = self.id.as_str().as_bytes().first() {
            oauth_core::hint::prefetch_write(first);
        }
        self.usage.prefetch();
        self.recorder.prefetch();
    }

    /// The store version this slot's credential was read at or written as (0: not stored).
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub(crate) fn set_version(&self, version: u64) {
        self.version.store(version, Ordering::Release);
    }

    pub(crate) fn mark(&self) {
        self.marked.store(true, Ordering::Release);
    }

    pub(crate) fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Release);
    }

    /// A refreshed credential waits to be persisted.
    pub(crate) fn persist_pending(&self) -> bool {
        self.persist_pending.load(Ordering::Acquire)
    }

    pub(crate) fn set_persist_pending(&self) {
        self.persist_pending.store(true, Ordering::Release);
    }

    /// The slot left the pool.
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    /// The manager's in-memory counters of this credential.
    pub(crate) fn usage(&self) -> &CredentialMetrics {
        &self.usage
    }

    /// Records one request in every recorder; `now_ms` is `now` in milliseconds since the epoch.
    pub(crate) fn record_request(
        &self,
        tokens: u64,
        latency: Duration,
        outcome: RequestOutcome,
        now: DateTime<Utc>,
        now_ms: i64,
    ) {
        if self.is_removed() {
            return; // its series are gone; a call still in flight must not bring them back
        }
        self.usage
            .record_request_at(tokens, latency, outcome, now, now_ms);
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
        // Written only when it moves: threads sharing a credential then share its cache line
        // instead of fighting over it.
        if new != old {
            self.per_call.latency_ewma_us.store(new, Ordering::Relaxed);
        }
        self.recorder.record_request(tokens, latency, outcome, now);
    }

    /// Records one refresh in every recorder.
    pub(crate) fn record_refresh(&self, result: RefreshResult, took: Duration, now: DateTime<Utc>) {
        if self.is_removed() {
            return;
        }
        self.usage.record_refresh(result, took, now);
        self.recorder.record_refresh(result, took, now);
    }

    /// Counts a failed attempt to persist this credential; returns the attempts so far.
    pub(crate) fn record_persistence_failure(&self) -> u32 {
        let attempts = self
            .persist_attempts
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if !self.is_removed() {
            self.usage.record_persistence_failure();
            self.recorder.record_persistence_failure();
        }
        attempts
    }

    /// The credential was persisted: pending work and the attempt count clear.
    pub(crate) fn persisted(&self) {
        self.persist_pending.store(false, Ordering::Release);
        self.persist_attempts.store(0, Ordering::Release);
    }

    /// The current credential (a cheap shared copy; the pool never hands out a mutable pointer).
    pub(crate) fn credential(&self) -> Arc<Credential> {
        self.credential.load_full()
    }

    /// The current credential and its generation (see [`generation`](Self::generation)).
    pub(crate) fn credential_and_generation(&self) -> (Arc<Credential>, u64) {
        let credential = self.credential.load_full();
        (credential, self.generation.load(Ordering::SeqCst))
    }

    /// How many times the credential was replaced. Read after the credential: a generation read
    /// after loading credential `c` that is still the same later means `c` was not replaced
    /// (at worst, a replacement under way makes a caller think the new credential is the one it
    /// used, which costs one unneeded refresh, never a lost one).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The current credential without touching its reference count (a thread-local debt slot of
    /// arc-swap), for callers that hold it briefly.
    #[inline]
    pub(crate) fn lease(&self) -> arc_swap::Guard<Arc<Credential>> {
        self.credential.load()
    }

    /// Publishes a new credential (after a refresh, or adopted from the store).
    pub(crate) fn set_credential(&self, credential: Credential) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.credential.store(Arc::new(credential));
        self.usable_until_ms.store(i64::MIN, Ordering::SeqCst);
        self.installed.fetch_add(1, Ordering::SeqCst);
    }

    /// Until when (wall milliseconds) the current credential is usable without a decision; see
    /// [`remember_usable_until`](Self::remember_usable_until).
    pub(crate) fn usable_until_ms(&self) -> i64 {
        self.usable_until_ms.load(Ordering::Acquire)
    }

    /// Remembers that `credential` is usable as it is before `until_ms` (wall milliseconds), as
    /// decided under the selector's `epoch`. Forgotten at once if the credential was replaced or
    /// the epoch moved meanwhile (both writers store first and reset after, so one of the two
    /// always sees the other).
    pub(crate) fn remember_usable_until(
        &self,
        credential: &Arc<Credential>,
        until_ms: i64,
        epoch: u64,
        selector: &Selector,
    ) {
        self.usable_until_ms.store(until_ms, Ordering::SeqCst);
        if !Arc::ptr_eq(&self.credential.load(), credential) || selector.usable_epoch() != epoch {
            self.usable_until_ms.store(i64::MIN, Ordering::SeqCst);
        }
    }

    /// How loaded the slot looks to a load-aware selection: lower is better.
    #[inline]
    fn load_score(&self, selection: Selection) -> u64 {
        let in_flight = u64::from(self.per_call.in_flight.load(Ordering::Relaxed));
        match selection {
            Selection::RoundRobin | Selection::LeastInFlight => in_flight,
            Selection::LatencyAware => (in_flight + 1)
                .saturating_mul(self.per_call.latency_ewma_us.load(Ordering::Relaxed).max(1)),
        }
    }

    /// True when the slot can serve at `now_ms`.
    #[inline]
    pub(crate) fn is_available_at(&self, now_ms: i64) -> bool {
        self.available_at_ms.load(Ordering::Acquire) <= now_ms
            && now_ms < self.available_until_ms.load(Ordering::Acquire)
    }

    /// True when the slot can serve now; reads the clock only if the slot has a time to compare.
    #[inline]
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
    /// `now` is on the health timeline. Returns `f`'s result and what the republication changed.
    pub(crate) fn with_health<R>(
        &self,
        now: DateTime<Utc>,
        f: impl FnOnce(&mut CredentialHealth) -> R,
    ) -> (R, Republished) {
        let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        let r = f(&mut h);
        let published = self.publish(&h, now);
        drop(h);
        (r, published)
    }

    /// Recomputes what the slot publishes from its health at `now` (the selector calls this when
    /// a published time has passed: a backoff ended, or a token's validity ran out).
    fn republish(&self, now: DateTime<Utc>) -> Republished {
        let h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        self.publish(&h, now)
    }

    fn publish(&self, h: &CredentialHealth, now: DateTime<Utc>) -> Republished {
        let now_ms = millis(now);
        let encode = |a: Availability| match a {
            Availability::Now => NOW,
            Availability::At(t) => millis(t),
            Availability::Never => NEVER,
        };
        let at = encode(h.availability(now));
        let hard = encode(h.hard_availability(now));
        // A limit already reached is in `at` (availability counts it from then on).
        let until = h
            .available_until()
            .filter(|u| *u > now)
            .map_or(i64::MAX, millis);
        let troubled = h.consecutive_failures() > 0
            || at != NOW
            || until != i64::MAX
            || h.refresh_backoff_until(now).is_some();
        let before_until = self.available_until_ms.swap(until, Ordering::AcqRel);
        let before = self.available_at_ms.swap(at, Ordering::AcqRel);
        self.hard_at_ms.store(hard, Ordering::Release);
        self.troubled.store(troubled, Ordering::Release);
        Republished {
            flipped: (before <= now_ms) != (at <= now_ms)
                || (before == NEVER) != (at == NEVER)
                || before_until != until,
            moved: before != at,
        }
    }

    /// Reads the health under its lock.
    pub(crate) fn read_health<R>(&self, f: impl FnOnce(&CredentialHealth) -> R) -> R {
        f(&self.health.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records a success: lock-free unless the health has something to clear.
    /// `now` and `now_ms` are the same instant (the caller has both).
    pub(crate) fn record_success(
        &self,
        now: DateTime<Utc>,
        now_ms: i64,
    ) -> (Option<HealthChange>, Republished) {
        // The latest success (a racing older one never moves it back), written only when it
        // moves: calls in the same millisecond leave the shared line alone.
        let last = &self.per_call.last_success_ms;
        if now_ms > last.load(Ordering::Relaxed) {
            last.fetch_max(now_ms, Ordering::Relaxed);
        }
        if !self.troubled.load(Ordering::Acquire) {
            return (None, Republished::default());
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

    /// Adds tokens to both recorders without counting a request (a stream's final usage).
    pub(crate) fn record_tokens(&self, tokens: u64) {
        if !self.is_removed() {
            self.usage.record_tokens(tokens);
            self.recorder.record_tokens(tokens);
        }
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
    slots: Arc<Vec<Arc<Slot>>>,
    /// The slots by id: keyed by the slot's own id, so the index holds no copy of it (one id
    /// less per credential in a large pool).
    by_id: HashSet<ById>,
}

/// A slot in [`Pool::by_id`]: hashed, compared and looked up as its id.
#[derive(Debug)]
struct ById(Arc<Slot>);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl std::hash::Hash for ById {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As a `str` hashes, so that a lookup by `&str` finds it (see `Borrow`).
        self.0.id.as_str().hash(state);
    }
}

impl std::borrow::Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.0.id.as_str()
    }
}

impl Pool {
    // A `ById` hashes and compares by the slot's id, which never changes (the slot's interior
    // mutability is elsewhere).
    #[allow(clippy::mutable_key_type)]
    pub(crate) fn new(slots: Vec<Arc<Slot>>) -> Self {
        let by_id = slots.iter().map(|s| ById(Arc::clone(s))).collect();
        Self {
            slots: Arc::new(slots),
            by_id,
        }
    }

    fn get(&self, id: &str) -> Option<&Arc<Slot>> {
        self.by_id.get(id).map(|s| &s.0)
    }
}

/// Checks a credential weight is in range.
pub(crate) fn check_weight(id: &str, weight: u32) -> Result<(), crate::error::SettingsError> {
    if (1..=MAX_WEIGHT).contains(&weight) {
        Ok(())
    } else {
        Err(crate::error::SettingsError::Weight {
            id: id.to_owned(),
            weight,
            max: MAX_WEIGHT,
        })
    }
}

/// A small, stable hash of a credential id (FxHash) for its jitter seed and maintenance spread.
pub(crate) fn seed_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95)
    })
}

/// The slots available when the snapshot was built.
#[derive(Debug, Default)]
struct Available {
    /// Unmarked available slots.
    preferred: Vec<Arc<Slot>>,
    /// Available slots being rotated out: used only when `preferred` is empty.
    fallback: Vec<Arc<Slot>>,
    /// When nothing is available: the slot kept out only by a transient backoff that recovers
    /// first, so a transient backoff alone never empties the pool.
    soonest: Option<Arc<Slot>>,
    /// Rebuild when the clock reaches this (the earliest backoff end); `i64::MAX` for never.
    recheck_at_ms: i64,
}

impl Available {
    /// Whether a backoff ended since the snapshot was built (it must be rebuilt). With no
    /// credential waiting out a backoff there is nothing to recheck: no clock read.
    #[inline]
    fn rebuild_due(&self, now: &Now<'_>) -> bool {
        self.recheck_at_ms != i64::MAX && now.get() >= self.recheck_at_ms
    }
}

/// "Now" in milliseconds, read from the clock at most once and only if asked.
pub(crate) struct Now<'a> {
    clock: &'a crate::clock::Timeline,
    ms: std::cell::Cell<Option<i64>>,
}

impl<'a> Now<'a> {
    pub(crate) fn new(clock: &'a crate::clock::Timeline) -> Self {
        Self {
            clock,
            ms: std::cell::Cell::new(None),
        }
    }

    /// The time, read on first use.
    #[inline]
    pub(crate) fn get(&self) -> i64 {
        match self.ms.get() {
            Some(ms) => ms,
            None => {
                let ms = self.clock.now_ms();
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

/// [`Selector::failover`]: the settings fit in the word.
const QUICK: u64 = 1 << 63;
/// [`Selector::failover`]: `max_attempts` is set (its value in the low 32 bits).
const HAS_MAX: u64 = 1 << 32;

fn selection_index(selection: Selection) -> u8 {
    match selection {
        Selection::RoundRobin => 0,
        Selection::LeastInFlight => 1,
        Selection::LatencyAware => 2,
    }
}

/// What a pick asks the caches for ahead of this thread's next picks, in a pool of at least
/// [`PREFETCH_FROM`] credentials going round-robin: the slot after next (its own lines), and
/// with [`Ahead::Targets`] the next slot's id and recorders, whose addresses are in the lines the
/// previous pick asked for (not its credential: see `Slot::prefetch_targets`). Over 10,000
/// credentials each call otherwise waits for memory line after line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ahead {
    /// The slots' lines only (a lease reads nothing else).
    Slots,
    /// Also what a call reaches through the slot (`execute_with_failover`).
    Targets,
}

/// The smallest pool whose picks prefetch (smaller ones stay in the caches of a core; the
/// hints would only cost).
const PREFETCH_FROM: usize = 64;

/// Owned cursors: each of this many threads advances its own cursor (no cache line shared by
/// every caller), and its successive calls go round-robin exactly; further threads picking at
/// the same time share one more cursor.
const CURSOR_SHARDS: usize = 8;

/// A cursor on its own cache line: how many picks it made, and (owned cursors) where the next
/// one starts in the list it last picked from, so that a pick from a list of unchanged length
/// needs no division.
#[derive(Debug)]
#[repr(align(128))]
struct Cursor {
    count: AtomicUsize,
    at: AtomicUsize,
}

impl Cursor {
    fn new(start: usize) -> Self {
        Self {
            count: AtomicUsize::new(start),
            at: AtomicUsize::new(start),
        }
    }

    /// Advances the cursor for a pick from a list of `n`, by plain loads and stores: only its
    /// owner writes it. The start needs no division while the list is as long as on the
    /// previous pick (or longer).
    #[inline]
    fn advance_owned(&self, n: usize) -> Start {
        let count = self.count.load(Ordering::Relaxed);
        self.count.store(count.wrapping_add(1), Ordering::Relaxed);
        let at = self.at.load(Ordering::Relaxed);
        let index = if at < n { at } else { at % n.max(1) };
        let next = if index + 1 >= n { 0 } else { index + 1 };
        self.at.store(next, Ordering::Relaxed);
        Start { index, count }
    }
}

/// Where a pick starts in a list, and the cursor's count of picks (a seed for the power of two
/// choices).
#[derive(Debug, Clone, Copy)]
struct Start {
    index: usize,
    count: usize,
}

/// Thread tags: a small number per live thread (never 0), given back when the thread exits and
/// handed to the next new thread, which so inherits the cursors the exited thread owned (their
/// only writer is gone). Without this, the first eight threads a process ever ran would own the
/// cursors for good, and every later one (a pool that replaces its threads) would share.
#[derive(Debug)]
struct Tags {
    next: AtomicU64,
    free: Mutex<Vec<u64>>,
}

impl Tags {
    const fn new() -> Self {
        Self {
            next: AtomicU64::new(1),
            free: Mutex::new(Vec::new()),
        }
    }

    /// A tag no live thread has: the latest given back, or a new one.
    fn take(&self) -> u64 {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn give_back(&self, tag: u64) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tag);
    }
}

static TAGS: Tags = Tags::new();

/// How many selectors' snapshots a thread keeps at once (direct-mapped by their [`Selector::uid`]:
/// a thread picking from more pools than this in turn reloads some, it never serves a wrong one).
const CACHED_SNAPSHOTS: usize = 16;

/// The next selector's [`Selector::uid`]: never reused (an address is, once its selector is
/// dropped, and would let a new selector match a dropped one's cached snapshot).
static NEXT_SELECTOR: AtomicU64 = AtomicU64::new(1);

/// Moves when a selector is dropped or a slot leaves a pool: each thread empties its cached
/// snapshots at its next pick (from any pool), so a removed credential or a dropped pool is not
/// kept alive by the threads that picked from it. Not needed for correctness (a stale snapshot
/// never matches, see [`Selector::version`]), only to give the memory back.
static RELEASED: AtomicU64 = AtomicU64::new(0);

/// A selector's available snapshot as this thread last loaded it.
struct CachedSnapshot {
    /// Its selector's [`Selector::uid`] (0: empty).
    selector: u64,
    /// The selector's [`Selector::version`] read before the snapshot was loaded.
    version: u64,
    snapshot: Option<Arc<Available>>,
    /// The thread's private handles on the slots of a pool of at most [`COPIED_CREDENTIALS`]
    /// (see [`Held::Copied`]); allocated on first use, kept while the snapshot is reloaded.
    copies: Option<Box<Copies>>,
}

impl CachedSnapshot {
    const EMPTY: Self = Self {
        selector: 0,
        version: 0,
        snapshot: None,
        copies: None,
    };
}

/// The largest pool whose calls take a thread's private handle on the slot and its credential
/// (see [`Held::Copied`]); each thread keeps one per credential it called on, so larger pools
/// take a reference on the shared slot and load the shared credential.
pub(crate) const COPIED_CREDENTIALS: usize = 8;

/// A thread's private handles on one small pool's slots: entries in the order they were filled,
/// then the next to replace once all are (a pool that replaced a credential).
#[derive(Default)]
struct Copies {
    entries: [Option<Arc<Copied>>; COPIED_CREDENTIALS],
    victim: usize,
}

/// A thread's private handle on a slot, with a copy of its credential: allocations of their
/// own, whose references only this thread (and the calls it hands them to) counts.
pub(crate) struct Copied {
    /// The slot: kept alive, so a pointer comparison identifies it.
    slot: Arc<Slot>,
    /// The slot's [`Slot::installed`], read before the credential was loaded.
    installed: u64,
    /// The slot's generation, read after the credential was loaded.
    generation: u64,
    credential: Arc<Credential>,
}

impl Copies {
    /// The handle on `slot` with a copy of its current credential: the one kept if its copy is
    /// current, else a new one, made from the shared credential and kept.
    fn get(&mut self, slot: &Arc<Slot>) -> Arc<Copied> {
        // Before the credential is loaded: a replacement stored after this read moves it on.
        let installed = slot.installed.load(Ordering::SeqCst);
        let mut at = None;
        for (i, entry) in self.entries.iter().enumerate() {
            match entry {
                Some(c) if Arc::ptr_eq(&c.slot, slot) => {
                    if c.installed == installed {
                        return Arc::clone(c);
                    }
                    at = Some(i);
                    break;
                }
                None if at.is_none() => at = Some(i),
                _ => {}
            }
        }
        let i = at.unwrap_or_else(|| {
            let i = self.victim % COPIED_CREDENTIALS;
            self.victim = i + 1;
            i
        });
        let (shared, generation) = slot.credential_and_generation();
        let copied = Arc::new(Copied {
            slot: Arc::clone(slot),
            installed,
            generation,
            credential: Arc::new((*shared).clone()),
        });
        if let Some(entry) = self.entries.get_mut(i) {
            *entry = Some(Arc::clone(&copied));
        }
        copied
    }
}

/// The slot a call picked, held for the call.
pub(crate) enum Held {
    /// A reference on the shared slot.
    Shared(Arc<Slot>),
    /// The calling thread's private handle (a pool of at most [`COPIED_CREDENTIALS`]): taking
    /// and dropping it writes no line that another thread's calls write, where the slot's
    /// reference count is written twice by every call on the slot.
    Copied(Arc<Copied>),
}

impl Held {
    /// The slot.
    #[inline]
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        match self {
            Self::Shared(slot) => slot,
            Self::Copied(copied) => &copied.slot,
        }
    }

    /// The slot's current credential and its generation (see [`Slot::generation`]). From a
    /// private handle, its copy while that is current (made after reading the slot's
    /// [`installed`](Slot::installed) count, it is while the count has not moved, so a
    /// replacement stored before this read is always seen): a reference only this thread
    /// counts, where loading the shared credential takes three locked instructions (arc-swap's
    /// debt slot and the reference count) and writes a count every call on it writes.
    #[inline]
    pub(crate) fn credential_and_generation(&self) -> (Arc<Credential>, u64) {
        match self {
            Self::Copied(c) if c.slot.installed.load(Ordering::SeqCst) == c.installed => {
                (Arc::clone(&c.credential), c.generation)
            }
            _ => self.slot().credential_and_generation(),
        }
    }
}

/// What a thread keeps for its picks: its tag (taken on first use, given back when the thread
/// exits) and its cached snapshots. One thread-local, so a pick reads both in one access.
struct ThreadState {
    /// See [`Tags`]; 0 until the thread's first pick.
    tag: Cell<u64>,
    /// [`RELEASED`] when the snapshots were last emptied.
    released_seen: Cell<u64>,
    snapshots: RefCell<[CachedSnapshot; CACHED_SNAPSHOTS]>,
}

impl ThreadState {
    /// The thread's tag, taken on first use.
    #[inline]
    fn tag(&self) -> u64 {
        match self.tag.get() {
            0 => {
                let tag = TAGS.take();
                self.tag.set(tag);
                tag
            }
            tag => tag,
        }
    }

    /// Empties the snapshots if a selector was dropped or a slot removed since they were last
    /// emptied.
    #[inline]
    fn release_if_due(&self, snapshots: &mut [CachedSnapshot; CACHED_SNAPSHOTS]) {
        let released = RELEASED.load(Ordering::Acquire);
        if released != self.released_seen.get() {
            self.release(snapshots, released);
        }
    }

    #[cold]
    fn release(&self, snapshots: &mut [CachedSnapshot; CACHED_SNAPSHOTS], released: u64) {
        self.released_seen.set(released);
        for entry in snapshots {
            *entry = CachedSnapshot::EMPTY;
        }
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        let tag = self.tag.get();
        if tag != 0 {
            TAGS.give_back(tag);
        }
    }
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            tag: Cell::new(0),
            released_seen: Cell::new(0),
            snapshots: RefCell::new([CachedSnapshot::EMPTY; CACHED_SNAPSHOTS]),
        }
    };
}

/// The current thread's tag (see [`Tags`]); `u64::MAX`, which owns no cursor, while the thread
/// is exiting and its tag is already given back.
#[cfg(test)]
fn thread_tag() -> u64 {
    THREAD.try_with(ThreadState::tag).unwrap_or(u64::MAX)
}

/// Lock-free round-robin selection over the available slots.
#[derive(Debug)]
pub(crate) struct Selector {
    pool: ArcSwap<Pool>,
    available: ArcSwap<Available>,
    /// This selector's number, unique in the process: keys the threads' cached snapshots.
    uid: u64,
    /// Moves (after the store) each time `available` is replaced: a thread's cached snapshot
    /// serves while the version it was loaded at is current. A hit costs a thread-local access
    /// and two loads of lines no call writes, where an `ArcSwap` load costs arc-swap's debt-slot
    /// protocol (two atomic read-modify-writes).
    version: AtomicU64,
    /// One per owning thread, then the one the threads beyond them share.
    cursors: [Cursor; CURSOR_SHARDS + 1],
    /// Which thread owns each of the first [`CURSOR_SHARDS`] cursors (its [`thread_tag`]; 0:
    /// free). The first thread to select gets cursor 0, the next cursor 1, and so on; a thread
    /// that exits passes its cursors on with its tag to the next new thread (see [`Tags`]);
    /// threads beyond the owners share the last cursor.
    owners: [AtomicU64; CURSOR_SHARDS],
    /// Credentials in the pool (read on every call to bound its attempts).
    len: AtomicUsize,
    /// The [`Selection`] in force (its index), read on every pick without touching the settings.
    selection: std::sync::atomic::AtomicU8,
    /// The failover settings a call reads, packed into one word when they fit (no deadline, no
    /// wait for an available credential): [`QUICK`], then the selection's index in bits 40-47,
    /// [`HAS_MAX`] and `max_attempts` in the low 32 bits. 0 when they do not fit: the call then
    /// reads the settings themselves. One atomic word, so a call never sees half of a change.
    failover: AtomicU64,
    /// Serializes replacements of the failover settings, so the settings and the packed copy
    /// change together (see [`replace_failover`](Self::replace_failover)).
    failover_writer: Mutex<()>,
    /// Serializes changes of the slot list.
    writer: Mutex<()>,
    rebuild: Mutex<()>,
    /// Moves whenever what the slots' `usable_until_ms` was decided with changes (the refresh
    /// strategy, the refresher).
    usable_epoch: AtomicU64,
}

impl Selector {
    pub(crate) fn new(pool: Pool, now_ms: i64) -> Self {
        let s = Self {
            len: AtomicUsize::new(pool.slots.len()),
            pool: ArcSwap::from_pointee(pool),
            available: ArcSwap::from_pointee(Available::default()),
            uid: NEXT_SELECTOR.fetch_add(1, Ordering::Relaxed),
            version: AtomicU64::new(0),
            // Cursor i starts at credential i: the first thread's first pick is the first
            // credential, and threads running in step do not all pick the same one.
            cursors: std::array::from_fn(Cursor::new),
            owners: std::array::from_fn(|_| AtomicU64::new(0)),
            selection: std::sync::atomic::AtomicU8::new(0),
            failover: AtomicU64::new(0),
            failover_writer: Mutex::new(()),
            writer: Mutex::new(()),
            rebuild: Mutex::new(()),
            usable_epoch: AtomicU64::new(0),
        };
        s.rebuild(now_ms);
        s
    }

    /// The epoch the slots' usable-until times are decided under.
    pub(crate) fn usable_epoch(&self) -> u64 {
        self.usable_epoch.load(Ordering::SeqCst)
    }

    /// The refresh strategy or the refresher changed: every slot decides again on its next use.
    pub(crate) fn forget_usable_until(&self) {
        self.usable_epoch.fetch_add(1, Ordering::SeqCst);
        for slot in self.pool.load().slots.iter() {
            slot.usable_until_ms.store(i64::MIN, Ordering::SeqCst);
        }
    }

    /// The slot of credential `id`.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Slot>> {
        self.pool.load().get(id).cloned()
    }

    /// Every slot, in pool order (a snapshot: slots added or removed later are not in it).
    pub(crate) fn slots(&self) -> Arc<Vec<Arc<Slot>>> {
        Arc::clone(&self.pool.load().slots)
    }

    /// Credentials in the pool.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Adds a slot.
    pub(crate) fn insert(&self, slot: Arc<Slot>, now_ms: i64) {
        self.modify_pool(now_ms, move |slots| {
            let mut slots = slots.to_vec();
            slots.push(slot);
            slots
        });
    }

    /// Removes the slot of `id`, returning it.
    pub(crate) fn remove(&self, id: &CredentialId, now_ms: i64) -> Option<Arc<Slot>> {
        let removed = self.get(id.as_str());
        self.modify_pool(now_ms, |slots| {
            slots.iter().filter(|s| &s.id != id).cloned().collect()
        });
        if removed.is_some() {
            // The threads' cached snapshots still hold the slot: have them let go.
            RELEASED.fetch_add(1, Ordering::Release);
        }
        removed
    }

    /// Changes the list of slots (credentials added or removed) and rebuilds the available set.
    /// Writers are serialized, so two concurrent changes never lose one another.
    fn modify_pool(&self, now_ms: i64, change: impl FnOnce(&[Arc<Slot>]) -> Vec<Arc<Slot>>) {
        {
            let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let slots = change(&self.pool.load().slots);
            let pool = Pool::new(slots);
            self.len.store(pool.slots.len(), Ordering::Relaxed);
            self.pool.store(Arc::new(pool));
        }
        self.rebuild(now_ms);
    }

    /// Rebuilds the snapshot because a backoff ended, unless another caller already did while this
    /// one waited (so callers arriving together after a backoff rebuild once, not once each).
    #[cold]
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
            soonest: None,
            recheck_at_ms: i64::MAX,
        };
        let now = from_millis(now_ms);
        let mut soonest: Option<(i64, &Arc<Slot>)> = None;
        for slot in pool.slots.iter() {
            let mut at = slot.available_at_ms.load(Ordering::Acquire);
            let mut until = slot.available_until_ms.load(Ordering::Acquire);
            // A published time passed: what follows from the health now (a refresh backoff that
            // keeps out a credential whose token just expired, a backoff that ended).
            if let Some(now) = now
                && (until <= now_ms || (at != NOW && at != NEVER && at <= now_ms))
            {
                slot.republish(now);
                at = slot.available_at_ms.load(Ordering::Acquire);
                until = slot.available_until_ms.load(Ordering::Acquire);
            }
            if until <= now_ms {
                continue; // its access token has expired and it cannot be refreshed
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
                if slot.hard_at_ms.load(Ordering::Acquire) <= now_ms
                    && soonest.is_none_or(|(best, _)| at < best)
                {
                    soonest = Some((at, slot));
                }
            }
        }
        if next.preferred.is_empty() && next.fallback.is_empty() {
            next.soonest = soonest.map(|(_, slot)| Arc::clone(slot));
        }
        next.preferred = weighted(next.preferred);
        next.fallback = weighted(next.fallback);
        self.available.store(Arc::new(next));
        self.version.fetch_add(1, Ordering::Release);
    }

    /// This thread's cached copy of the available snapshot, while it is current (see
    /// [`version`](Self::version)); else the published one, loaded into the cache for the
    /// thread's next picks.
    #[inline(always)]
    fn cached<'a>(
        &self,
        thread: &ThreadState,
        snapshots: &'a mut [CachedSnapshot; CACHED_SNAPSHOTS],
    ) -> (&'a Available, &'a mut Option<Box<Copies>>) {
        thread.release_if_due(snapshots);
        // Read before the snapshot is loaded: a rebuild that stores after this read moves the
        // version past it, so the copy is reloaded next time.
        let version = self.version.load(Ordering::Acquire);
        let entry = &mut snapshots[(self.uid % CACHED_SNAPSHOTS as u64) as usize];
        if entry.selector != self.uid || entry.version != version {
            Self::forget(entry, self.uid, version, self.len() <= COPIED_CREDENTIALS);
        }
        let CachedSnapshot {
            snapshot, copies, ..
        } = entry;
        (
            snapshot.get_or_insert_with(|| self.available.load_full()),
            copies,
        )
    }

    /// Empties a cached snapshot that is another selector's or stale, for `uid` at `version`.
    /// The private handles stay across a reload of the same selector's snapshot (each copy is
    /// checked against its slot when used) while its pool is still small (`small`): a pool that
    /// grew past [`COPIED_CREDENTIALS`] takes no more copies, so none would ever replace them.
    #[cold]
    fn forget(entry: &mut CachedSnapshot, uid: u64, version: u64, small: bool) {
        let copies = if entry.selector == uid && small {
            entry.copies.take()
        } else {
            None
        };
        *entry = CachedSnapshot {
            selector: uid,
            version,
            snapshot: None,
            copies,
        };
    }

    /// True when the snapshot has no available slot (a moved backoff then matters).
    pub(crate) fn is_exhausted(&self) -> bool {
        let avail = self.available.load();
        avail.preferred.is_empty() && avail.fallback.is_empty()
    }

    /// Rebuilds the snapshot if `change` makes it stale.
    pub(crate) fn republished(&self, change: Republished, now_ms: i64) {
        if change.flipped || (change.moved && self.is_exhausted()) {
            self.rebuild(now_ms);
        }
    }

    /// The next position of this thread's cursor: the one it owns, or the first free one it
    /// claims, or beyond [`CURSOR_SHARDS`] threads the shared one. An owned cursor has a single
    /// writer, its owner, so it advances by a plain load and store, not a read-modify-write, and
    /// one thread's successive picks go round-robin exactly; the shared cursor advances
    /// atomically (its threads' picks interleave).
    #[inline]
    fn advance_cursor(&self, tag: u64, n: usize) -> Start {
        for (cursor, owner) in self.cursors.iter().zip(&self.owners) {
            let current = owner.load(Ordering::Relaxed);
            if current == tag {
                return cursor.advance_owned(n);
            }
            if current == 0 && tag != u64::MAX {
                return self.claim_cursor(tag, n);
            }
        }
        self.shared_cursor(n)
    }

    /// A thread's first pick: claims the first free cursor (or, when none is free, uses the
    /// shared one) and advances it.
    #[cold]
    fn claim_cursor(&self, tag: u64, n: usize) -> Start {
        for (cursor, owner) in self.cursors.iter().zip(&self.owners) {
            let current = owner.load(Ordering::Relaxed);
            if current == tag
                || (current == 0
                    && owner
                        .compare_exchange(0, tag, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok())
            {
                // Owned now (a cursor passes on only once its owner has exited).
                return cursor.advance_owned(n);
            }
        }
        self.shared_cursor(n)
    }

    /// The cursor of the threads beyond the owners, advanced atomically.
    fn shared_cursor(&self, n: usize) -> Start {
        let count = self.cursors[CURSOR_SHARDS]
            .count
            .fetch_add(1, Ordering::Relaxed);
        Start {
            index: count % n.max(1),
            count,
        }
    }

    /// Sets how the next credential is chosen.
    fn set_selection(&self, selection: Selection) {
        self.selection
            .store(selection_index(selection), Ordering::Relaxed);
    }

    /// Takes in new failover settings (after the manager's settings were replaced): the selection,
    /// and the packed copy calls read (see [`quick_failover`](Self::quick_failover)).
    pub(crate) fn set_failover(&self, failover: &FailoverSettings) {
        self.set_selection(failover.selection);
        let word = if failover.deadline.is_none() && failover.wait_for_available.is_none() {
            QUICK
                | u64::from(selection_index(failover.selection)) << 40
                | failover.max_attempts.map_or(0, |n| HAS_MAX | u64::from(n))
        } else {
            0
        };
        self.failover.store(word, Ordering::Release);
    }

    /// Replaces the failover settings: `commit` stores them in the manager's settings, then the
    /// packed copy follows, both under one lock, so two threads replacing them at once cannot
    /// leave the copy on the one whose settings lost.
    pub(crate) fn replace_failover(&self, failover: &FailoverSettings, commit: impl FnOnce()) {
        let _writer = self
            .failover_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        commit();
        self.set_failover(failover);
    }

    /// The failover settings in force when they have no deadline and no wait (the common case),
    /// from one atomic word instead of the settings' `ArcSwap`; `None` otherwise (the caller
    /// reads the settings).
    #[inline]
    pub(crate) fn quick_failover(&self) -> Option<FailoverSettings> {
        let word = self.failover.load(Ordering::Acquire);
        if word & QUICK == 0 {
            return None;
        }
        let selection = match (word >> 40) & 0xff {
            1 => Selection::LeastInFlight,
            2 => Selection::LatencyAware,
            _ => Selection::RoundRobin,
        };
        let max_attempts = (word & HAS_MAX != 0).then_some((word & 0xffff_ffff) as u32);
        Some(FailoverSettings {
            selection,
            max_attempts,
            wait_for_available: None,
            deadline: None,
        })
    }

    #[inline]
    pub(crate) fn selection(&self) -> Selection {
        match self.selection.load(Ordering::Relaxed) {
            1 => Selection::LeastInFlight,
            2 => Selection::LatencyAware,
            _ => Selection::RoundRobin,
        }
    }

    /// The next available slot, round-robin (weighted when weights are set), passed to `f` (so a
    /// caller that needs only the credential takes no reference on the slot).
    ///
    /// With `soft`, a pool whose every credential is out only for a transient backoff still
    /// yields the one that recovers first (what `execute_with_failover` wants); without it, the
    /// Go behaviour of `next_credential`: one failure is enough to skip a credential.
    #[inline]
    pub(crate) fn select<R>(
        &self,
        now: &Now<'_>,
        soft: bool,
        ahead: Ahead,
        f: impl Fn(&Arc<Slot>) -> R,
    ) -> Result<R, NoneAvailable> {
        let selection = self.selection();
        match self.try_select(now, selection, soft, ahead, &f) {
            Some(r) => Ok(r),
            None => self.select_again(now, selection, soft, ahead, &f),
        }
    }

    /// [`select`](Self::select) for a call that runs an operation on the slot: in a pool of at
    /// most [`COPIED_CREDENTIALS`], the calling thread's private handle on the slot and its
    /// credential (see [`Held::Copied`]); otherwise, or when the thread's cached snapshot cannot
    /// serve, a reference on the shared slot.
    #[inline]
    pub(crate) fn select_held(
        &self,
        now: &Now<'_>,
        soft: bool,
        ahead: Ahead,
    ) -> Result<Held, NoneAvailable> {
        let shared = |slot: &Arc<Slot>| Held::Shared(Arc::clone(slot));
        if self.len() <= COPIED_CREDENTIALS
            && let Ok(Some((picked, selection))) = THREAD.try_with(|thread| {
                let mut snapshots = thread.snapshots.try_borrow_mut().ok()?;
                let (avail, copies) = self.cached(thread, &mut snapshots);
                if avail.rebuild_due(now) {
                    return None;
                }
                let selection = self.selection();
                let picked = self
                    .pick_from(avail, thread.tag(), now, selection, soft, ahead)
                    .map(|slot| Held::Copied(copies.get_or_insert_with(Box::default).get(slot)));
                Some((picked, selection))
            })
        {
            // Nothing in the thread's snapshot: straight to the retry (another pick from the
            // same snapshot would only advance the cursor again).
            return match picked {
                Some(held) => Ok(held),
                None => self.select_again(now, selection, soft, ahead, &shared),
            };
        }
        self.select(now, soft, ahead, shared)
    }

    /// [`select`](Self::select) after the snapshot had nothing to give: out of line, so that the
    /// common case compiles to the few instructions of a pick.
    #[cold]
    #[inline(never)]
    fn select_again<R>(
        &self,
        now: &Now<'_>,
        selection: Selection,
        soft: bool,
        ahead: Ahead,
        f: &impl Fn(&Arc<Slot>) -> R,
    ) -> Result<R, NoneAvailable> {
        // The snapshot may be stale (a slot changed between its publication and our read):
        // rebuild, unless another caller is rebuilding right now (then its snapshot serves: an
        // exhausted pool must not serialize every caller on this lock).
        match self.rebuild.try_lock() {
            Ok(serialized) => self.rebuild_locked(now.get(), serialized),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                self.rebuild_locked(now.get(), p.into_inner())
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                // Another caller is rebuilding, perhaps from slot states older than the ones that
                // made this pick fail: a stale snapshot must not turn a pool that can serve into
                // "none available". The soft path scans the slots themselves (this is the failure
                // path only); the strict one waits for the rebuild in progress.
                if soft {
                    return self
                        .soonest_except(now.get(), &[])
                        .map(|slot| f(&slot))
                        .ok_or_else(|| self.none_available(now.get()));
                }
                drop(self.rebuild.lock().unwrap_or_else(PoisonError::into_inner));
            }
        }
        self.try_select(now, selection, soft, ahead, f)
            .ok_or_else(|| self.none_available(now.get()))
    }

    /// When everything is in backoff: the slot kept out only by a transient backoff that
    /// recovers first, other than those in `except` (a call's own failed attempts). Scans the pool:
    /// only for that failure path.
    pub(crate) fn soonest_except(&self, now_ms: i64, except: &[Arc<Slot>]) -> Option<Arc<Slot>> {
        let pool = self.pool.load();
        pool.slots
            .iter()
            .filter(|s| !except.iter().any(|e| Arc::ptr_eq(e, s)))
            .filter(|s| s.hard_at_ms.load(Ordering::Acquire) <= now_ms)
            .filter(|s| s.available_until_ms.load(Ordering::Acquire) > now_ms)
            .min_by_key(|s| s.available_at_ms.load(Ordering::Acquire))
            .cloned()
    }

    /// Why nothing can be selected at `now_ms`.
    pub(crate) fn none_available(&self, now_ms: i64) -> NoneAvailable {
        NoneAvailable {
            next_available_at: self.next_available_at(now_ms),
        }
    }

    /// A pick from this thread's cached snapshot; when there is none to use (a backoff ended
    /// and the snapshot must be rebuilt, the thread is exiting, or it is already inside a pick,
    /// as a drop that picks would be), from the published one.
    #[inline(always)]
    fn try_select<R>(
        &self,
        now: &Now<'_>,
        selection: Selection,
        soft: bool,
        ahead: Ahead,
        f: &impl Fn(&Arc<Slot>) -> R,
    ) -> Option<R> {
        let picked = THREAD.try_with(|thread| {
            let mut snapshots = thread.snapshots.try_borrow_mut().ok()?;
            let (avail, _) = self.cached(thread, &mut snapshots);
            if avail.rebuild_due(now) {
                return None;
            }
            Some(
                self.pick_from(avail, thread.tag(), now, selection, soft, ahead)
                    .map(f),
            )
        });
        match picked {
            Ok(Some(picked)) => picked,
            _ => self.pick_uncached(now, selection, soft, ahead, f),
        }
    }

    /// [`try_select`](Self::try_select) from the published snapshot, rebuilt first if a backoff
    /// ended (unless another caller just did).
    #[cold]
    #[inline(never)]
    fn pick_uncached<R>(
        &self,
        now: &Now<'_>,
        selection: Selection,
        soft: bool,
        ahead: Ahead,
        f: &impl Fn(&Arc<Slot>) -> R,
    ) -> Option<R> {
        if self.available.load().rebuild_due(now) {
            self.rebuild_if_due(now.get());
        }
        let tag = THREAD.try_with(ThreadState::tag).unwrap_or(u64::MAX);
        self.pick_from(&self.available.load(), tag, now, selection, soft, ahead)
            .map(f)
    }

    /// The pick itself, from the snapshot `avail`, advancing the cursor of the thread tagged `tag`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn pick_from<'a>(
        &self,
        avail: &'a Available,
        tag: u64,
        now: &Now<'_>,
        selection: Selection,
        soft: bool,
        ahead: Ahead,
    ) -> Option<&'a Arc<Slot>> {
        let list = if avail.preferred.is_empty() {
            &avail.fallback
        } else {
            &avail.preferred
        };
        let n = list.len();
        if n == 0 {
            // Everything is in backoff: the credential that recovers first, if only a transient
            // backoff keeps it out.
            return avail
                .soonest
                .as_ref()
                .filter(|slot| soft && slot.hard_at_ms.load(Ordering::Acquire) <= now.get());
        }
        let start = self.advance_cursor(tag, n);
        // The cursor's slot, or the first available of the three after it (a slot whose state
        // changed since the snapshot was built).
        let mut found = None;
        let mut i = start.index;
        for _ in 0..n.min(4) {
            if let Some(slot) = list.get(i)
                && slot.is_available(now)
            {
                found = Some((i, slot));
                break;
            }
            i = if i + 1 >= n { 0 } else { i + 1 };
        }
        let (first_index, first) = found?;
        if selection == Selection::RoundRobin || n == 1 {
            if n >= PREFETCH_FROM {
                let next = if first_index + 1 == n {
                    0
                } else {
                    first_index + 1
                };
                let after = if next + 1 == n { 0 } else { next + 1 };
                list[after].prefetch();
                if ahead == Ahead::Targets {
                    list[next].prefetch_targets();
                    // The picked slot's recorder lines were asked for on the previous pick.
                    if first.indirect {
                        first.recorder.prefetch_indirect();
                    }
                }
            }
            return Some(first);
        }
        // Power of two choices: a second, different candidate picked by a multiplicative hash of
        // the cursor; the less loaded of the two wins (ties keep round-robin order).
        let mut j = start.count.wrapping_mul(0x9E37_79B9).rotate_right(7) % (n - 1);
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
        Some(pick)
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

impl Drop for Selector {
    fn drop(&mut self) {
        // The threads' cached snapshots still hold this pool's slots: have them let go.
        RELEASED.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oauth_core::{FailureKind, HealthPolicy};
    use oauth_metrics::NoopRecorder;

    const T0: i64 = 1_800_000_000_000;

    fn slot(id: &str) -> Arc<Slot> {
        let credential =
            Credential::new(id, "access", from_millis(T0).expect("in range")).expect("valid");
        let usage = Arc::new(CredentialMetrics::new(Duration::from_secs(60)));
        Arc::new(Slot::new(credential, 0, 7, usage, Arc::new(NoopRecorder)))
    }

    fn selector(slots: &[Arc<Slot>]) -> Selector {
        Selector::new(Pool::new(slots.to_vec()), T0)
    }

    /// An owned cursor starts each pick where the last one left off, without a division while
    /// the list keeps its length; a shorter list (a snapshot with fewer available slots) wraps
    /// the cursor into it, a longer one continues from where it was, and no index falls outside
    /// the list (nor divides by zero for an empty one).
    #[test]
    fn an_owned_cursor_follows_lists_whose_length_changes() {
        let sel = selector(&[slot("a")]);
        let tag = 7;
        let mut seen = Vec::new();
        for n in [5, 5, 5, 5, 5, 5, 3, 3, 3, 3, 8, 8, 1, 1, 0, 2, 2] {
            let Start { index, count } = sel.advance_cursor(tag, n);
            assert!(index < n.max(1), "index {index} in a list of {n}");
            seen.push((n, index, count));
        }
        let indices: Vec<usize> = seen.iter().map(|&(_, index, _)| index).collect();
        assert_eq!(
            indices,
            [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 0, 0, 0, 0, 1],
            "{seen:?}"
        );
        let counts: Vec<usize> = seen.iter().map(|&(_, _, count)| count).collect();
        assert!(
            counts.windows(2).all(|w| w[1] == w[0] + 1),
            "the count moves by one a pick: {counts:?}"
        );
    }

    /// A pool large enough to prefetch goes round-robin exactly across the end of its list,
    /// with either prefetch (the slots ahead of the pick wrap around too).
    #[test]
    fn a_prefetching_pool_wraps_around_exactly() {
        let slots: Vec<Arc<Slot>> = (0..PREFETCH_FROM + 1)
            .map(|i| slot(&format!("c{i}")))
            .collect();
        let sel = selector(&slots);
        let clock = crate::clock::Timeline::new(Arc::new(oauth_core::SystemClock));
        let index = |s: &Arc<Slot>| slots.iter().position(|x| Arc::ptr_eq(x, s));
        for ahead in [Ahead::Slots, Ahead::Targets] {
            let picks: Vec<usize> = (0..3 * slots.len())
                .filter_map(|_| {
                    sel.select(&Now::new(&clock), true, ahead, |s| index(s))
                        .ok()
                        .flatten()
                })
                .collect();
            assert_eq!(picks.len(), 3 * slots.len());
            for pair in picks.windows(2) {
                assert_eq!(pair[1], (pair[0] + 1) % slots.len());
            }
        }
    }

    /// A tag given back is the next one taken, and a tag is never taken twice while held.
    #[test]
    fn thread_tags_are_reused_once_given_back() {
        let tags = Tags::new();
        let (a, b) = (tags.take(), tags.take());
        assert_ne!(a, b);
        assert!(a != 0 && b != 0);
        tags.give_back(a);
        assert_eq!(tags.take(), a);
        assert_ne!(tags.take(), b);
    }

    /// A thread that picks after the cursors' owners exited inherits a cursor (by their tags).
    /// Other tests' threads may take the tags given back meanwhile, so this only checks that a
    /// later thread can own a cursor at all once every cursor was taken by a thread that exited
    /// (without the give-back, none ever does).
    #[test]
    fn cursors_of_exited_threads_pass_to_new_threads() {
        let slots: Vec<Arc<Slot>> = (0..5).map(|i| slot(&format!("c{i}"))).collect();
        let clock = crate::clock::Timeline::new(Arc::new(oauth_core::SystemClock));
        let sel = selector(&slots);
        let pick = || {
            sel.select(&Now::new(&clock), false, Ahead::Slots, |s| {
                slots.iter().position(|x| Arc::ptr_eq(x, s))
            })
            .ok()
            .flatten()
            .expect("a credential")
        };
        for _ in 0..CURSOR_SHARDS {
            std::thread::scope(|s| {
                s.spawn(pick).join().expect("joins");
            });
        }
        let owned = (0..64).any(|_| {
            std::thread::scope(|s| {
                s.spawn(|| {
                    let tag = thread_tag();
                    pick();
                    sel.owners.iter().any(|o| o.load(Ordering::Relaxed) == tag)
                })
                .join()
                .expect("joins")
            })
        });
        assert!(owned, "no later thread inherited a cursor");
    }

    /// Each of the first [`CURSOR_SHARDS`] threads owns a cursor advanced by plain stores: while
    /// they and the threads beyond them (sharing one more cursor) pick at the same time, each
    /// owner's successive picks still go round-robin exactly (a shared or lost step would show as
    /// a repeat), and every thread gets a credential on every pick.
    #[test]
    fn owned_cursors_go_round_robin_exactly_under_concurrency() {
        let slots: Vec<Arc<Slot>> = (0..5).map(|i| slot(&format!("c{i}"))).collect();
        let clock = crate::clock::Timeline::new(Arc::new(oauth_core::SystemClock));
        let index = |s: &Arc<Slot>| slots.iter().position(|x| Arc::ptr_eq(x, s));
        for threads in [CURSOR_SHARDS, CURSOR_SHARDS + 4] {
            let sel = selector(&slots);
            let barrier = std::sync::Barrier::new(threads);
            let picks: Vec<Vec<usize>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            (0..2_000)
                                .map(|_| {
                                    let now = Now::new(&clock);
                                    sel.select(&now, false, Ahead::Slots, |s| index(s))
                                        .ok()
                                        .flatten()
                                        .expect("a credential on every pick")
                                })
                                .collect()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("joins"))
                    .collect()
            });
            let exact = picks
                .iter()
                .filter(|thread| {
                    thread
                        .windows(2)
                        .all(|pair| pair[1] == (pair[0] + 1) % slots.len())
                })
                .count();
            assert!(
                exact >= threads.min(CURSOR_SHARDS),
                "{exact} of {threads} exact"
            );
        }
    }

    /// Two threads replacing the failover settings at once: the packed copy always ends on the
    /// settings that won (the manager stores the settings in `commit`; the yield widens the gap
    /// between the two steps that an unlocked replacement would interleave: without the lock this
    /// fails in most runs).
    #[test]
    fn the_packed_failover_copy_follows_the_settings_that_won() {
        let sel = selector(&[slot("a")]);
        let settings = Mutex::new(None::<FailoverSettings>);
        let with = |n: u32| FailoverSettings {
            max_attempts: Some(n),
            ..FailoverSettings::default()
        };
        for _ in 0..2000 {
            let barrier = std::sync::Barrier::new(2);
            std::thread::scope(|s| {
                for n in [1, 2] {
                    let (sel, settings, barrier, f) = (&sel, &settings, &barrier, with(n));
                    s.spawn(move || {
                        barrier.wait();
                        sel.replace_failover(&f, || {
                            *settings.lock().expect("lock") = Some(f.clone());
                            std::thread::yield_now();
                        });
                    });
                }
            });
            let won = settings.lock().expect("lock").clone();
            assert_eq!(sel.quick_failover(), won);
        }
    }

    /// Puts `slot` in a transient backoff without telling the selector (as a concurrent caller's
    /// failure does between its publication and its rebuild).
    fn fail_quietly(slot: &Slot) {
        let now = from_millis(T0).expect("in range");
        slot.with_health(now, |h| {
            h.record_failure(FailureKind::Transient, &HealthPolicy::default(), now)
        });
    }

    /// The CI flake of `a_flaky_network_does_not_empty_the_pool`: every slot of the snapshot went
    /// into a transient backoff while another caller held the rebuild lock; the soft pick must
    /// still serve (the slot recovering first), not report "none available".
    #[test]
    fn a_stale_snapshot_during_a_rebuild_does_not_empty_the_pool() {
        let slots = [slot("a"), slot("b"), slot("c")];
        let selector = selector(&slots);
        for s in &slots {
            fail_quietly(s);
        }
        let time = crate::clock::Timeline::new(Arc::new(oauth_core::ManualClock::new(
            from_millis(T0).expect("in range"),
        )));
        let rebuilding = selector.rebuild.lock().expect("not poisoned");
        let picked = selector.select(&Now::new(&time), true, Ahead::Slots, |s| s.id.clone());
        drop(rebuilding);
        assert!(picked.is_ok(), "a transient backoff alone emptied the pool");
        // And with the lock free, the rebuilt snapshot serves the same way.
        let picked = selector.select(&Now::new(&time), true, Ahead::Slots, |s| s.id.clone());
        assert!(picked.is_ok());
        // The strict pick (Go `next_credential`) skips a credential after one failure.
        assert!(
            selector
                .select(&Now::new(&time), false, Ahead::Slots, |s| s.id.clone())
                .is_err()
        );
    }

    /// A thread that runs the closures it is sent, one after another: its cached snapshots
    /// persist between them, as a runtime's worker thread's do between calls.
    fn worker() -> std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>> {
        let (send, jobs) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::spawn(move || {
            for job in jobs {
                job();
            }
        });
        send
    }

    /// Runs `job` on `worker` and waits for its result.
    fn run_on<T: Send + 'static>(
        worker: &std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (send, result) = std::sync::mpsc::channel();
        worker
            .send(Box::new(move || {
                let _ = send.send(job());
            }))
            .expect("the worker runs");
        result.recv().expect("the job ran")
    }

    fn manual_time() -> Arc<crate::clock::Timeline> {
        Arc::new(crate::clock::Timeline::new(Arc::new(
            oauth_core::ManualClock::new(from_millis(T0).expect("in range")),
        )))
    }

    /// A thread's cached snapshot never outlives a change another thread made before telling it:
    /// over 200 rounds of credentials removed, added back, failed and recovered on this thread,
    /// the worker's strict picks (which go round-robin over exactly the available credentials)
    /// see exactly the credentials available after each change.
    #[test]
    fn a_cached_snapshot_follows_every_change_the_thread_has_seen() {
        let time = manual_time();
        let slots: Vec<Arc<Slot>> = (0..4).map(|i| slot(&format!("c{i}"))).collect();
        let sel = Arc::new(selector(&slots));
        let worker = worker();
        let now = from_millis(T0).expect("in range");
        let mut expected: HashSet<String> = slots.iter().map(|s| s.id.to_string()).collect();
        for round in 0..200 {
            let slot = &slots[round % 4];
            match (round / 4) % 4 {
                0 => {
                    sel.remove(&slot.id, T0);
                    expected.remove(slot.id.as_str());
                }
                1 => {
                    sel.insert(Arc::clone(slot), T0);
                    expected.insert(slot.id.to_string());
                }
                2 => {
                    let (_, change) = slot.with_health(now, |h| {
                        h.record_failure(FailureKind::Transient, &HealthPolicy::default(), now)
                    });
                    sel.republished(change, T0);
                    expected.remove(slot.id.as_str());
                }
                _ => {
                    let (_, change) = slot.with_health(now, |h| h.record_success(now));
                    sel.republished(change, T0);
                    expected.insert(slot.id.to_string());
                }
            }
            let (sel, time) = (Arc::clone(&sel), Arc::clone(&time));
            let seen: HashSet<String> = run_on(&worker, move || {
                (0..8)
                    .filter_map(|_| {
                        sel.select(&Now::new(&time), false, Ahead::Slots, |s| s.id.to_string())
                            .ok()
                    })
                    .collect()
            });
            assert_eq!(seen, expected, "round {round}");
        }
    }

    /// A thread's cached snapshots let go of a removed credential's slot and of a dropped pool's
    /// slots at its next pick, even when that pick is from another pool.
    #[test]
    fn cached_snapshots_release_removed_slots_and_dropped_pools() {
        let time = manual_time();
        let worker = worker();
        let pick = |sel: &Arc<Selector>| {
            let (sel, time) = (Arc::clone(sel), Arc::clone(&time));
            // A call's pick: it also keeps the thread's private handles on the small pool's slots.
            run_on(&worker, move || {
                matches!(
                    sel.select_held(&Now::new(&time), false, Ahead::Slots),
                    Ok(Held::Copied(_))
                )
            })
        };
        let unrelated = Arc::new(selector(&[slot("unrelated")]));

        let gone = slot("gone");
        let removed = Arc::downgrade(&gone);
        let sel = Arc::new(selector(&[slot("kept"), gone]));
        for _ in 0..2 {
            assert!(pick(&sel));
        }
        drop(sel.remove(&CredentialId::new("gone").expect("valid"), T0));
        assert!(pick(&unrelated));
        assert!(removed.upgrade().is_none(), "a removed slot was kept alive");

        let other = slot("other");
        let dropped_slot = Arc::downgrade(&other);
        let dropped = Arc::new(selector(&[other]));
        assert!(pick(&dropped));
        drop(dropped);
        assert!(pick(&unrelated));
        assert!(
            dropped_slot.upgrade().is_none(),
            "a dropped pool's slot was kept alive"
        );
    }

    /// A call's pick that finds nothing in the thread's snapshot (its slots went out since it
    /// was built) goes straight to the retry, which rebuilds: the cursor moves once, as a
    /// single pick does, not once more for a second pick from the same stale snapshot.
    #[test]
    fn a_pick_that_finds_nothing_moves_the_cursor_once() {
        let time = manual_time();
        let slots = [slot("a"), slot("b"), slot("c")];
        let sel = selector(&slots);
        let moved = |sel: &Selector| -> usize {
            sel.cursors
                .iter()
                .map(|c| c.count.load(Ordering::Relaxed))
                .sum()
        };
        std::thread::scope(|scope| {
            scope.spawn(|| {
                assert!(matches!(
                    sel.select_held(&Now::new(&time), false, Ahead::Slots),
                    Ok(Held::Copied(_))
                ));
                for s in &slots {
                    s.available_at_ms.store(NEVER, Ordering::Release);
                }
                let before = moved(&sel);
                assert!(
                    sel.select_held(&Now::new(&time), false, Ahead::Slots)
                        .is_err()
                );
                assert_eq!(moved(&sel) - before, 1, "cursor steps for one pick");
            });
        });
    }

    /// A pool that grows past [`COPIED_CREDENTIALS`] takes no more private handles, and a
    /// thread's next pick from it lets go of the copies it kept (nothing would replace them when
    /// their credentials are refreshed).
    #[test]
    fn a_pool_that_outgrows_private_handles_lets_go_of_its_copies() {
        let time = manual_time();
        let worker = worker();
        let sel = Arc::new(selector(&[slot("a"), slot("b"), slot("c")]));
        let pick = |sel: &Arc<Selector>| {
            let (sel, time) = (Arc::clone(sel), Arc::clone(&time));
            run_on(&worker, move || {
                match sel.select_held(&Now::new(&time), false, Ahead::Slots) {
                    Ok(Held::Copied(c)) => {
                        let copy = Arc::downgrade(&c.credential);
                        drop(c);
                        // Checked before the thread picks again (another test's removal
                        // empties every thread's snapshots at its next pick).
                        assert!(copy.upgrade().is_some(), "the thread keeps its copy");
                        Some(copy)
                    }
                    _ => None,
                }
            })
        };
        let copy = pick(&sel).expect("a small pool's pick holds a private handle");
        for i in 0..COPIED_CREDENTIALS {
            sel.insert(slot(&format!("more{i}")), T0);
        }
        assert!(pick(&sel).is_none(), "a large pool's pick shares the slot");
        assert!(
            copy.upgrade().is_none(),
            "a thread kept a copy from a pool that outgrew them"
        );
    }

    /// A thread's private handle on a slot serves its copy of the credential until the slot's
    /// credential is replaced; then the handle a call already holds gives the new credential,
    /// and the thread's next pick makes a new copy (and keeps that one).
    #[test]
    fn a_thread_s_copy_of_a_credential_gives_way_to_its_replacement() {
        let s = slot("c");
        let token = |held: &Held| {
            let (credential, _) = held.credential_and_generation();
            oauth_core::ExposeSecret::expose_secret(&credential.access_token).to_owned()
        };
        let mut copies = Copies::default();
        let first = copies.get(&s);
        assert!(Arc::ptr_eq(&first, &copies.get(&s)), "the copy is kept");
        let held = Held::Copied(Arc::clone(&first));
        assert_eq!(token(&held), "access");
        let (copy, _) = held.credential_and_generation();
        assert!(
            !Arc::ptr_eq(&copy, &s.credential()),
            "the copy is not the shared credential"
        );

        let replaced =
            Credential::new("c", "replaced", from_millis(T0).expect("in range")).expect("valid");
        s.set_credential(replaced);
        assert_eq!(
            token(&held),
            "replaced",
            "a handle held across the replacement"
        );
        let (_, generation) = held.credential_and_generation();
        assert_eq!(generation, s.generation());
        let second = copies.get(&s);
        assert!(
            !Arc::ptr_eq(&first, &second),
            "a new copy after the replacement"
        );
        assert_eq!(token(&Held::Copied(Arc::clone(&second))), "replaced");
        assert!(Arc::ptr_eq(&second, &copies.get(&s)), "and it is kept");
        assert_eq!(
            copies.entries.iter().flatten().count(),
            1,
            "the new copy took the old one's entry"
        );
    }

    /// Under concurrency, no thread's copy serves a credential older than one whose replacement
    /// had finished before the thread asked: a writer replaces the credential 100,000 times
    /// (publishing each version once stored), while two threads take handles from their own
    /// copies and check each token against the version they read first.
    #[test]
    fn no_copy_serves_a_credential_replaced_before_it_was_asked_for() {
        const VERSIONS: u64 = 100_000;
        let s = slot("c");
        let version = |credential: &Credential| -> u64 {
            let token = oauth_core::ExposeSecret::expose_secret(&credential.access_token);
            token
                .strip_prefix('v')
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let stored = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    let mut copies = Copies::default();
                    loop {
                        let before = stored.load(Ordering::SeqCst);
                        if before == VERSIONS {
                            break;
                        }
                        let held = Held::Copied(copies.get(&s));
                        let (credential, _) = held.credential_and_generation();
                        let got = version(&credential);
                        assert!(got >= before, "asked after v{before}, served v{got}");
                    }
                });
            }
            for v in 1..=VERSIONS {
                let next =
                    Credential::new("c", format!("v{v}"), from_millis(T0).expect("in range"))
                        .expect("valid");
                s.set_credential(next);
                stored.store(v, Ordering::SeqCst);
            }
        });
    }

    /// Under concurrency, no thread picks a credential whose removal was visible to it before
    /// the pick: a writer removes the credentials one by one (publishing how many after each
    /// removal), while three threads pick from their cached snapshots and check each pick against
    /// the count they read first.
    #[test]
    fn no_thread_picks_a_credential_removed_before_its_pick() {
        let time = manual_time();
        for _ in 0..10 {
            let slots: Vec<Arc<Slot>> = (0..64).map(|i| slot(&format!("c{i}"))).collect();
            let sel = selector(&slots);
            let removed = AtomicUsize::new(0);
            let index = |s: &Arc<Slot>| slots.iter().position(|x| Arc::ptr_eq(x, s));
            std::thread::scope(|scope| {
                for _ in 0..3 {
                    scope.spawn(|| {
                        loop {
                            let before = removed.load(Ordering::Acquire);
                            if before == slots.len() - 1 {
                                break;
                            }
                            let picked = sel
                                .select(&Now::new(&time), false, Ahead::Slots, index)
                                .ok()
                                .flatten();
                            if let Some(i) = picked {
                                assert!(
                                    i >= before,
                                    "picked c{i} after c0..c{before} were removed"
                                );
                            }
                        }
                    });
                }
                for (k, slot) in slots.iter().enumerate().take(slots.len() - 1) {
                    sel.remove(&slot.id, T0);
                    removed.store(k + 1, Ordering::Release);
                    std::thread::yield_now();
                }
            });
        }
    }

    /// A pick from inside a pick (the caller's closure picks again, as a drop that picks would)
    /// finds the thread's snapshots in use: it picks from the published snapshot, and both serve.
    #[test]
    fn a_pick_inside_a_pick_serves_from_the_published_snapshot() {
        let time = manual_time();
        let slots = [slot("a"), slot("b"), slot("c")];
        let sel = selector(&slots);
        let now = Now::new(&time);
        let picked = sel.select(&now, false, Ahead::Slots, |outer| {
            let inner = sel.select(&now, false, Ahead::Slots, |inner| inner.id.clone());
            (outer.id.clone(), inner.ok())
        });
        let (outer, inner) = picked.expect("the outer pick serves");
        let inner = inner.expect("the inner pick serves");
        assert_ne!(
            outer, inner,
            "the inner pick advanced the same thread's cursor"
        );
    }

    /// A pick while the thread exits, after its thread-local state is gone (a thread-local's
    /// destructor that picks), reads the published snapshot instead of failing or panicking.
    #[test]
    fn a_pick_while_the_thread_exits_still_serves() {
        struct PickOnExit(
            Arc<Selector>,
            Arc<crate::clock::Timeline>,
            std::sync::mpsc::Sender<bool>,
        );
        impl Drop for PickOnExit {
            fn drop(&mut self) {
                let picked = self
                    .0
                    .select(&Now::new(&self.1), false, Ahead::Slots, |_| ())
                    .is_ok();
                let _ = self.2.send(picked);
            }
        }
        thread_local! {
            static ON_EXIT: RefCell<Option<PickOnExit>> = const { RefCell::new(None) };
        }
        let sel = Arc::new(selector(&[slot("a")]));
        let time = manual_time();
        let (send, picked) = std::sync::mpsc::channel();
        let (sel2, time2) = (Arc::clone(&sel), Arc::clone(&time));
        std::thread::spawn(move || {
            // Registered before the selection's thread-local (its first use is the pick below),
            // so destroyed after it: its pick finds the selection's state gone (a pick through
            // `LocalKey::with` there aborts the process).
            ON_EXIT.with(|e| *e.borrow_mut() = Some(PickOnExit(sel2, time2, send)));
            assert!(
                sel.select(&Now::new(&time), false, Ahead::Slots, |_| ())
                    .is_ok()
            );
        })
        .join()
        .expect("the thread exits cleanly");
        assert!(
            picked.recv().expect("the destructor ran"),
            "the exiting pick found nothing"
        );
    }
}
