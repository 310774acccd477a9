//! Sharded counters: each thread adds to its own cache line, a scrape sums the lines.
//!
//! Two threads recording on the same credential (or on the same provider-wide histogram) would
//! otherwise bounce one cache line between their cores on every request. Each thread is given a
//! shard number once (round-robin, on its first record); with at least as many shards as cores,
//! threads running at the same time mostly write different lines. The sum is exact: a shard is
//! only ever added to, and a reader adds every shard.

// The Prometheus recorder (feature `prometheus`) is the only user of parts of this module.
#![cfg_attr(not(feature = "prometheus"), allow(dead_code))]

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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

thread_local! {
    static THREAD_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard number (any `usize`; callers mask it with `shards - 1`).
#[inline]
pub(crate) fn thread_shard() -> usize {
    THREAD_SHARD.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % (MAX_SHARDS * 64);
        s.set(v);
        v
    })
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

/// `N` counters, sharded: `shards` lines of `N` counters each. The first two lines are inline
/// (in the owner's own allocation, so a credential's counters and the rest of its series are one
/// block of memory, which measured twice as fast as a separate allocation over 10,000
/// credentials); further shards are in a separate allocation.
#[derive(Debug)]
pub(crate) struct Sharded<const N: usize> {
    inline: [Line<N>; 2],
    rest: Box<[Line<N>]>,
    mask: usize,
}

impl<const N: usize> Sharded<N> {
    /// `N` zero counters in `shards` shards (a power of two, see [`shard_count`]).
    pub(crate) fn new(shards: usize) -> Self {
        let shards = shard_count(shards);
        Self {
            inline: [Line::default(), Line::default()],
            rest: (2..shards.max(2)).map(|_| Line::default()).collect(),
            mask: shards - 1,
        }
    }

    /// Every line, both inline ones included even with one shard (the unused one stays zero
    /// unless a caller's mask sent a thread there: see [`mine_masked`](Self::mine_masked)).
    fn lines(&self) -> impl Iterator<Item = &Line<N>> {
        self.inline.iter().chain(self.rest.iter())
    }

    /// Asks for the two inline lines (shards 0 and 1), to be written soon (see
    /// `oauth_core::hint`): their addresses follow from `self` alone, so the hint does not wait
    /// for a load of the shard mask. A thread recording into a further shard gets no hint.
    #[inline]
    pub(crate) fn prefetch(&self) {
        for line in &self.inline {
            oauth_core::hint::prefetch_write(line);
        }
    }

    /// The calling thread's line.
    #[inline]
    pub(crate) fn mine(&self) -> &[AtomicU64; N] {
        self.mine_masked(self.mask)
    }

    /// The calling thread's line, with the shard mask (the shard count minus one) known to the
    /// caller: a series of a pool over many credentials then reads one cache line of its
    /// counters, not also the line holding its own mask. Any mask is safe: every line it can
    /// pick is summed (a shard beyond the last falls back to the first).
    #[inline]
    pub(crate) fn mine_masked(&self, mask: usize) -> &[AtomicU64; N] {
        let i = thread_shard() & mask;
        match self.inline.get(i) {
            Some(line) => &line.0,
            None => &self.rest.get(i - 2).unwrap_or(&self.inline[0]).0,
        }
    }

    /// Adds `v` to counter `i` on the calling thread's shard.
    #[cfg(test)]
    pub(crate) fn add(&self, i: usize, v: u64) {
        if let Some(c) = self.mine().get(i) {
            c.fetch_add(v, Ordering::Relaxed);
        }
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
        self.lines().count()
    }
}

#[cfg(test)]
mod tests {
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
                if let Some(c) = counters.mine_masked(mask).get(*i) {
                    c.fetch_add(*v, std::sync::atomic::Ordering::Relaxed);
                }
                want[*i] += v;
            }
            prop_assert_eq!(counters.totals(), want);
            // Any mask, from threads of their own (each its own shard): nothing is lost.
            std::thread::scope(|s| {
                for ops in &work {
                    let counters = &counters;
                    s.spawn(move || {
                        for (i, v) in ops {
                            if let Some(c) = counters.mine_masked(foreign_mask).get(*i) {
                                c.fetch_add(*v, std::sync::atomic::Ordering::Relaxed);
                            }
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
