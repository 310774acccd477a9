//! Sharded counters: each thread adds to its own cache line, a scrape sums the lines.
//!
//! Two threads recording on the same credential (or on the same provider-wide histogram) would
//! otherwise bounce one cache line between their cores on every request. Each thread is given a
//! shard number once (round-robin, on its first record); with at least as many shards as cores,
//! threads running at the same time mostly write different lines. The sum is exact: a shard is
//! only ever added to, and a reader adds every shard.
//!
//! A shard has two lines. The first threads to record (one per shard, for as long as they run;
//! claimed from a process-wide bitmap, given back by a thread-local destructor) each own a
//! shard's first line: its only writer, it adds with a plain load and store, where an atomic
//! addition is a locked instruction that waits for the line (a few nanoseconds each, a cache miss
//! over a large pool). The other threads add atomically into the second lines, spread by their
//! round-robin number. A thread that owns a shard keeps it while it runs, busy or idle: with as
//! many shards as cores, a thread that owns none records as fast as every thread did before
//! shards had owners.

// The Prometheus recorder (feature `prometheus`) is the only user of parts of this module.
#![cfg_attr(not(feature = "prometheus"), allow(dead_code))]

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The most shards a sharded value has (a power of two).
pub(crate) const MAX_SHARDS: usize = 16;

/// The default shard count: the machine's parallelism, rounded up to a power of two, at most
/// [`MAX_SHARDS`].
pub(crate) fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, MAX_SHARDS)
        .next_power_of_two()
}

/// A valid shard count for a requested one: a power of two in `1..=MAX_SHARDS`.
pub(crate) fn shard_count(requested: usize) -> usize {
    requested.clamp(1, MAX_SHARDS).next_power_of_two()
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

/// Bit `k` set: a running thread owns the first line of every value's shard `k`.
static OWNERS: AtomicU32 = AtomicU32::new(0);

/// Every ownable shard's bit.
const ALL_OWNED: u32 = if MAX_SHARDS >= 32 {
    u32::MAX
} else {
    (1 << MAX_SHARDS) - 1
};

/// Where the calling thread adds into sharded values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    /// The thread's round-robin number (callers mask it with `shards - 1`).
    spread: usize,
    /// The shard whose first lines this thread alone writes, or [`Place::NOT_OWNED`].
    owned: usize,
}

impl Place {
    const NOT_OWNED: usize = usize::MAX;
    /// Not assigned yet.
    const UNSET: Self = Self {
        spread: usize::MAX,
        owned: Self::NOT_OWNED,
    };

    /// The thread's round-robin number (any `usize`; mask it with `shards - 1`).
    pub(crate) fn spread(self) -> usize {
        self.spread
    }

    /// The shard this thread owns in a value with `mask + 1` shards, if it owns one there.
    #[inline]
    pub(crate) fn owned_in(self, mask: usize) -> Option<usize> {
        (self.owned <= mask).then_some(self.owned)
    }
}

thread_local! {
    static PLACE: Cell<Place> = const { Cell::new(Place::UNSET) };
    /// Gives the thread's owned shard back when the thread exits (registered on the thread's
    /// first call).
    static RELEASE: Release = const { Release };
}

/// See [`RELEASE`].
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let _ = PLACE.try_with(|cell| {
            let place = cell.get();
            if place.owned < MAX_SHARDS {
                // From now on this thread (its later thread-local destructors) adds atomically.
                cell.set(Place {
                    owned: Place::NOT_OWNED,
                    ..place
                });
                // Release: the next owner's claim sees every addition this thread made.
                OWNERS.fetch_and(!(1 << place.owned), Ordering::Release);
            }
        });
    }
}

/// The calling thread's place (assigned on its first call).
#[inline]
pub(crate) fn place() -> Place {
    let place = PLACE.try_with(Cell::get).unwrap_or(Place::UNSET);
    if place.spread == usize::MAX {
        return assign();
    }
    place
}

/// The first call on a thread: its round-robin number, and the lowest free shard to own, if
/// any (none once [`RELEASE`] is destroyed: nothing would give it back).
#[cold]
fn assign() -> Place {
    let spread = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % (MAX_SHARDS * 64);
    let mut owned = Place::NOT_OWNED;
    if RELEASE.try_with(|_| ()).is_ok() {
        let mut current = OWNERS.load(Ordering::Relaxed);
        loop {
            let free = !current & ALL_OWNED;
            if free == 0 {
                break;
            }
            let k = free.trailing_zeros();
            // Acquire: what the shard's previous owner added is seen before this thread adds.
            match OWNERS.compare_exchange_weak(
                current,
                current | (1 << k),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    owned = k as usize;
                    break;
                }
                Err(now) => current = now,
            }
        }
    }
    let place = Place { spread, owned };
    // Unset only when the thread-local is gone, in which case the next call assigns again
    // (owning nothing).
    let _ = PLACE.try_with(|cell| cell.set(place));
    place
}

/// This thread's shard number (any `usize`; callers mask it with `shards - 1`).
#[inline]
pub(crate) fn thread_shard() -> usize {
    place().spread
}

/// Adds `v` to `c`: a plain load and store where the calling thread is the counter's only
/// writer (`owned`), an atomic addition otherwise. Both wrap.
#[inline]
pub(crate) fn add(c: &AtomicU64, v: u64, owned: bool) {
    if owned {
        c.store(c.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
    } else {
        c.fetch_add(v, Ordering::Relaxed);
    }
}

/// `N` counters on one cache line (64 bytes for `N = 8`).
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct Line<const N: usize>(pub(crate) [AtomicU64; N]);

impl<const N: usize> Default for Line<N> {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// A line of counters the calling thread adds to (see [`Sharded::mine_masked`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mine<'a, const N: usize> {
    line: &'a [AtomicU64; N],
    owned: bool,
}

impl<const N: usize> Mine<'_, N> {
    /// Adds `v` to counter `i` (no counter beyond `N`).
    #[inline]
    pub(crate) fn add(self, i: usize, v: u64) {
        if let Some(c) = self.line.get(i) {
            add(c, v, self.owned);
        }
    }
}

/// A shard's two lines: its owner's, and the one the threads that own no shard share.
#[derive(Debug, Default)]
struct Pair<const N: usize> {
    owned: Line<N>,
    shared: Line<N>,
}

/// `N` counters, sharded: per shard, its owner's line and a line the other threads share (see
/// the module doc). The first two shards are inline (in the owner's own allocation, so a
/// credential's counters and the rest of its series are one block of memory, which measured
/// twice as fast as a separate allocation over 10,000 credentials, whichever line a thread adds
/// to); further shards are in a separate allocation.
#[derive(Debug)]
pub(crate) struct Sharded<const N: usize> {
    inline: [Pair<N>; 2],
    rest: Box<[Pair<N>]>,
    mask: usize,
}

impl<const N: usize> Sharded<N> {
    /// `N` zero counters in `shards` shards (a power of two, see [`shard_count`]).
    pub(crate) fn new(shards: usize) -> Self {
        let shards = shard_count(shards);
        Self {
            inline: [Pair::default(), Pair::default()],
            rest: (2..shards.max(2)).map(|_| Pair::default()).collect(),
            mask: shards - 1,
        }
    }

    /// Every line, both inline shards' included even with one shard (unused ones stay zero
    /// unless a caller's mask sent a thread there: see [`mine_masked`](Self::mine_masked)).
    fn lines(&self) -> impl Iterator<Item = &Line<N>> {
        self.inline
            .iter()
            .chain(self.rest.iter())
            .flat_map(|p| [&p.owned, &p.shared])
    }

    /// Shard `i`, if there is one.
    #[inline]
    fn pair(&self, i: usize) -> Option<&Pair<N>> {
        match self.inline.get(i) {
            Some(pair) => Some(pair),
            None => self.rest.get(i - 2),
        }
    }

    /// Asks for the line the calling thread adds to in one of the two inline shards, to be
    /// written soon (see `oauth_core::hint`). The address follows from `self` and the thread's
    /// place alone, so the hint does not wait for a load of the shard mask: it is the line the
    /// thread adds to with a mask of one or two shards, a wasted hint (never a wrong one) with
    /// more.
    #[inline]
    pub(crate) fn prefetch(&self) {
        let place = place();
        let line = match place.owned_in(1) {
            Some(k) => self.inline.get(k).map(|p| &p.owned),
            None => self.inline.get(place.spread() & 1).map(|p| &p.shared),
        };
        if let Some(line) = line {
            oauth_core::hint::prefetch_write(line);
        }
    }

    /// The calling thread's line.
    #[inline]
    pub(crate) fn mine(&self) -> Mine<'_, N> {
        self.mine_masked(self.mask)
    }

    /// The calling thread's line, with the shard mask (the shard count minus one) known to the
    /// caller: a series of a pool over many credentials then reads one cache line of its
    /// counters, not also the line holding its own mask. Any mask is safe: every line it can
    /// pick is summed (a shard beyond the last falls back to the first), and a thread adds
    /// without a locked instruction only to the owned line of the shard it owns.
    #[inline]
    pub(crate) fn mine_masked(&self, mask: usize) -> Mine<'_, N> {
        let place = place();
        if let Some(pair) = place.owned_in(mask).and_then(|k| self.pair(k)) {
            return Mine {
                line: &pair.owned.0,
                owned: true,
            };
        }
        let pair = self.pair(place.spread() & mask).unwrap_or(&self.inline[0]);
        Mine {
            line: &pair.shared.0,
            owned: false,
        }
    }

    /// Adds `v` to counter `i` on the calling thread's shard.
    #[cfg(test)]
    pub(crate) fn add(&self, i: usize, v: u64) {
        self.mine().add(i, v);
    }

    /// The sum of counter `i` over every shard.
    pub(crate) fn get(&self, i: usize) -> u64 {
        self.lines()
            .filter_map(|l| l.0.get(i))
            .fold(0u64, |acc, c| acc.wrapping_add(c.load(Ordering::Relaxed)))
    }

    /// Every counter summed over the shards.
    pub(crate) fn totals(&self) -> [u64; N] {
        let mut out = [0u64; N];
        for line in self.lines() {
            for (o, c) in out.iter_mut().zip(&line.0) {
                *o = o.wrapping_add(c.load(Ordering::Relaxed));
            }
        }
        out
    }

    /// The number of shards.
    #[cfg(test)]
    pub(crate) fn shards(&self) -> usize {
        self.inline.len() + self.rest.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn shard_counts_are_powers_of_two_within_bounds() {
        assert_eq!(shard_count(0), 1);
        assert_eq!(shard_count(3), 4);
        assert_eq!(shard_count(1000), MAX_SHARDS);
        assert!(default_shards().is_power_of_two());
        assert_eq!(std::mem::size_of::<Line<8>>(), 64);
    }

    #[test]
    fn threads_get_different_shards() {
        let a = std::thread::spawn(thread_shard).join().expect("thread");
        let b = std::thread::spawn(thread_shard).join().expect("thread");
        assert_ne!(a, b);
        // Stable within a thread.
        assert_eq!(thread_shard(), thread_shard());
    }

    /// Serializes the tests below that need a free owned shard (or take them all).
    pub(crate) static OWNERSHIP: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Holds [`OWNERSHIP`] for the caller's test.
    pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
        OWNERSHIP
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` in one of the calling thread's thread-local destructors, the ones registered
    /// before this call running after it (destructors run in reverse order).
    fn on_exit(f: impl FnOnce() + 'static) {
        struct OnExit(Option<Box<dyn FnOnce()>>);
        impl Drop for OnExit {
            fn drop(&mut self) {
                if let Some(f) = self.0.take() {
                    f();
                }
            }
        }
        thread_local! {
            static ON_EXIT: std::cell::RefCell<Vec<OnExit>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        ON_EXIT.with(|e| e.borrow_mut().push(OnExit(Some(Box::new(f)))));
    }

    /// More threads than shards add at once into values of 1, 2 and 16 shards: the owners with
    /// plain additions, the others atomically. Every addition is counted: no two threads ever
    /// write one line without a locked instruction (with every thread owning shard 0, this test
    /// lost additions in each of ten runs).
    #[test]
    fn owners_and_sharing_threads_together_lose_no_addition() {
        let _serial = serial();
        const THREADS: u64 = 3 * MAX_SHARDS as u64;
        const ADDS: u64 = 20_000;
        for shards in [1, 2, MAX_SHARDS] {
            let counters = Sharded::<2>::new(shards);
            let owners = AtomicUsize::new(0);
            let start = std::sync::Barrier::new(THREADS as usize);
            std::thread::scope(|s| {
                let threads: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let (counters, owners, start) = (&counters, &owners, &start);
                        s.spawn(move || {
                            // Every thread takes its place before any adds, so that they all
                            // add at the same time.
                            if place().owned_in(shards - 1).is_some() {
                                owners.fetch_add(1, Ordering::Relaxed);
                            }
                            start.wait();
                            for _ in 0..ADDS {
                                counters.add(0, 1);
                                counters.add(1, t);
                            }
                        })
                    })
                    .collect();
                // Joined one by one: a join waits for the thread's thread-local destructors
                // (the scope's own wait does not), so the next round finds the shards free.
                for t in threads {
                    t.join().expect("thread");
                }
            });
            // With every shard ownable, some of the threads own one (other tests' threads may
            // hold a few shards, never all of them; with fewer shards, they may hold those).
            if shards == MAX_SHARDS {
                assert!(
                    owners.load(Ordering::Relaxed) >= 1,
                    "no thread owns a shard"
                );
            }
            assert_eq!(counters.get(0), THREADS * ADDS, "{shards} shards");
            assert_eq!(
                counters.get(1),
                ADDS * THREADS * (THREADS - 1) / 2,
                "{shards} shards"
            );
        }
    }

    /// A thread gives its shard back when it exits: one thread after another, many more than
    /// there are shards, each owns one.
    #[test]
    fn an_exiting_thread_gives_its_shard_back() {
        let _serial = serial();
        let counters = Sharded::<1>::new(MAX_SHARDS);
        for i in 0..4 * MAX_SHARDS {
            let owned = std::thread::scope(|s| {
                s.spawn(|| {
                    counters.add(0, 1);
                    place().owned_in(MAX_SHARDS - 1)
                })
                .join()
                .expect("thread")
            });
            assert!(owned.is_some(), "thread {i} found every shard taken");
        }
        assert_eq!(counters.get(0), 4 * MAX_SHARDS as u64);
    }

    /// A thread still adds from its thread-local destructors, after its shard went back: into
    /// the shared lines (it owns nothing any more), counted like any other addition.
    #[test]
    fn additions_from_thread_local_destructors_are_counted() {
        let _serial = serial();
        static OWNED_AT_EXIT: AtomicUsize = AtomicUsize::new(0);
        let counters = Arc::new(Sharded::<1>::new(MAX_SHARDS));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let counters = Arc::clone(&counters);
                std::thread::spawn(move || {
                    // Registered before the shard's release (which the first addition
                    // registers), so run after it.
                    let at_exit = Arc::clone(&counters);
                    on_exit(move || {
                        if place().owned_in(MAX_SHARDS - 1).is_some() {
                            OWNED_AT_EXIT.fetch_add(1, Ordering::Relaxed);
                        }
                        for _ in 0..1000 {
                            at_exit.add(0, 1);
                        }
                    });
                    counters.add(0, 1);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(counters.get(0), 8 * 1001);
        assert_eq!(
            OWNED_AT_EXIT.load(Ordering::Relaxed),
            0,
            "a shard given back is not used"
        );
    }

    /// A thread whose first record comes from a thread-local destructor may claim a shard then
    /// (the release registers late); it still gives it back: threads doing so one after another,
    /// many more than there are shards, leave the shards free.
    #[test]
    fn a_first_record_from_a_thread_local_destructor_gives_its_shard_back() {
        let _serial = serial();
        let counters = Arc::new(Sharded::<1>::new(MAX_SHARDS));
        for _ in 0..4 * MAX_SHARDS {
            let counters = Arc::clone(&counters);
            std::thread::spawn(move || on_exit(move || counters.add(0, 1)))
                .join()
                .expect("thread");
        }
        assert_eq!(counters.get(0), 4 * MAX_SHARDS as u64);
        let owned = std::thread::spawn(|| place().owned_in(MAX_SHARDS - 1))
            .join()
            .expect("thread");
        assert!(owned.is_some(), "the shards claimed on exit were kept");
    }

    proptest! {
        /// Several threads adding concurrently into sharded counters: every counter sums to the
        /// total of what was added, whatever the shard count and thread count.
        #[test]
        fn sharded_counters_sum_to_the_total(
            shards in 1usize..=16,
            foreign_mask in 0usize..64,
            work in proptest::collection::vec(
                proptest::collection::vec((0usize..4, 0u64..1000), 0..200), 1..6),
        ) {
            let _serial = serial();
            let counters = Arc::new(Sharded::<4>::new(shards));
            prop_assert!(counters.shards().is_power_of_two());
            let mut want = [0u64; 4];
            for ops in &work {
                for (i, v) in ops {
                    want[*i] += v;
                }
            }
            std::thread::scope(|s| {
                for ops in &work {
                    let counters = &counters;
                    s.spawn(move || {
                        for (i, v) in ops {
                            counters.add(*i, *v);
                        }
                    });
                }
            });
            prop_assert_eq!(counters.totals(), want);
            // Adding through the caller's mask (the Prometheus series' path) lands in the same
            // shards: the totals grow by exactly what was added.
            let mask = counters.shards() - 1;
            for (i, v) in work.iter().flatten() {
                counters.mine_masked(mask).add(*i, *v);
                want[*i] += v;
            }
            prop_assert_eq!(counters.totals(), want);
            // Any mask, from threads of their own (each its own shard): nothing is lost.
            std::thread::scope(|s| {
                for ops in &work {
                    let counters = &counters;
                    s.spawn(move || {
                        for (i, v) in ops {
                            counters.mine_masked(foreign_mask).add(*i, *v);
                        }
                    });
                }
            });
            for (i, v) in work.iter().flatten() {
                want[*i] += v;
            }
            prop_assert_eq!(counters.totals(), want);
            for (i, w) in want.iter().enumerate() {
                prop_assert_eq!(counters.get(i), *w);
            }
        }
    }
}
