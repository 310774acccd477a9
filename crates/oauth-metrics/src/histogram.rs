//! Latency histograms: validated bucket bounds and a lock-free, optionally sharded histogram of
//! durations.

// The Prometheus recorder (feature `prometheus`) is the only user of parts of this module.
#![cfg_attr(not(feature = "prometheus"), allow(dead_code))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::shard::{self, place, shard_count};

/// Default histogram bucket upper bounds, in seconds, for request and refresh durations: from
/// 10 ms (a cached answer, a local token endpoint) to 10 minutes (a long generation), about 2.5×
/// apart. With the implicit `+Inf` bucket, `_sum` and `_count`, a histogram is
/// `DURATION_BUCKETS.len() + 3` = 19 series.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The most bucket bounds a histogram may have.
pub const MAX_BUCKETS: usize = 64;

/// Why bucket bounds were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BucketsError {
    /// No bound was given.
    #[error("a histogram needs at least one bucket bound")]
    Empty,
    /// More than [`MAX_BUCKETS`] bounds.
    #[error("{count} bucket bounds given, at most {MAX_BUCKETS} are allowed")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A bound is not a finite number of seconds greater than zero.
    #[error("bucket bound {index} is not a finite number of seconds above zero")]
    NotPositive {
        /// Its position.
        index: usize,
    },
    /// A bound is not greater than the one before it.
    #[error("bucket bound {index} is not greater than the bound before it")]
    NotIncreasing {
        /// Its position.
        index: usize,
    },
}

/// Validated histogram bucket upper bounds, in seconds: finite, above zero, strictly increasing,
/// at most [`MAX_BUCKETS`] of them (the `+Inf` bucket is implicit). The default is
/// [`DURATION_BUCKETS`].
///
/// ```
/// use oauth_metrics::{Buckets, BucketsError};
///
/// let b = Buckets::new([0.005, 0.05, 0.5, 5.0, 50.0])?;
/// assert_eq!(b.bounds().len(), 5);
/// assert_eq!(Buckets::exponential(0.01, 2.0, 4)?.bounds(), &[0.01, 0.02, 0.04, 0.08]);
/// assert_eq!(Buckets::new([1.0, 1.0]), Err(BucketsError::NotIncreasing { index: 1 }));
/// # Ok::<(), BucketsError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    seconds: Arc<[f64]>,
    /// The same bounds in nanoseconds, for observing without floating point.
    nanos: Arc<[u64]>,
}

impl Default for Buckets {
    fn default() -> Self {
        Self::new(DURATION_BUCKETS).unwrap_or_else(|_| Self::single())
    }
}

impl Buckets {
    /// Bounds from `seconds`.
    ///
    /// # Errors
    /// When they are empty, too many, not finite and positive, or not strictly increasing.
    pub fn new(seconds: impl IntoIterator<Item = f64>) -> Result<Self, BucketsError> {
        let seconds: Vec<f64> = seconds.into_iter().collect();
        if seconds.is_empty() {
            return Err(BucketsError::Empty);
        }
        if seconds.len() > MAX_BUCKETS {
            return Err(BucketsError::TooMany {
                count: seconds.len(),
            });
        }
        for (index, s) in seconds.iter().enumerate() {
            // Below a nanosecond or beyond u64 nanoseconds (584 years) cannot be observed.
            if !s.is_finite() || *s < 1e-9 || *s > 1.8e10 {
                return Err(BucketsError::NotPositive { index });
            }
            if index > 0 && seconds[index - 1] >= *s {
                return Err(BucketsError::NotIncreasing { index });
            }
        }
        let nanos: Vec<u64> = seconds
            .iter()
            .map(|s| Duration::from_secs_f64(*s).as_nanos())
            .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
            .collect();
        if nanos.windows(2).any(|w| w[0] >= w[1]) {
            // Distinct in seconds but equal once rounded to nanoseconds.
            let index = nanos.windows(2).position(|w| w[0] >= w[1]).unwrap_or(0) + 1;
            return Err(BucketsError::NotIncreasing { index });
        }
        Ok(Self {
            seconds: seconds.into(),
            nanos: nanos.into(),
        })
    }

    /// `count` bounds starting at `start` seconds, each `factor` times the one before.
    ///
    /// # Errors
    /// As [`new`](Self::new) (a `factor` of at most 1 gives [`BucketsError::NotIncreasing`]).
    pub fn exponential(start: f64, factor: f64, count: usize) -> Result<Self, BucketsError> {
        if count > MAX_BUCKETS {
            return Err(BucketsError::TooMany { count });
        }
        let mut b = Vec::with_capacity(count);
        let mut v = start;
        for _ in 0..count {
            b.push(v);
            v *= factor;
        }
        Self::new(b)
    }

    /// One bound of 1 s (only a fallback that never happens: the default bounds are valid).
    fn single() -> Self {
        Self {
            seconds: Arc::new([1.0]),
            nanos: Arc::new([1_000_000_000]),
        }
    }

    /// The upper bounds in seconds, without the implicit `+Inf`.
    pub fn bounds(&self) -> &[f64] {
        &self.seconds
    }

    /// The index of the bucket counting `nanos` (the first bound at or above it; the `+Inf` bucket
    /// is index `bounds().len()`).
    #[inline]
    fn index(&self, nanos: u64) -> usize {
        self.nanos.partition_point(|b| *b < nanos)
    }
}

/// A histogram of durations: per bucket a count, and the sum in nanoseconds, all atomics, in
/// `shards` copies (1 for a per-credential histogram, more for one shared by a provider's
/// credentials). Observing is two additions on the calling thread's shard: plain ones into the
/// row of the shard the thread owns (see the `shard` module), atomic ones into a shared row.
#[derive(Debug)]
pub(crate) struct DurationHistogram {
    buckets: Buckets,
    /// `shards` owned rows (sharded only), then `shards` shared rows, of `stride` counters:
    /// `bounds + 1` bucket counts, then the sum.
    cells: Box<[AtomicU64]>,
    stride: usize,
    mask: usize,
    /// Whether there are owned rows (a histogram of one shard has only its shared row).
    owned_rows: bool,
}

/// A snapshot for encoding: sum in seconds, count, and per-bucket (not cumulative) counts with
/// their upper bounds, `+Inf` last.
pub(crate) struct HistogramSnapshot {
    pub(crate) sum: f64,
    pub(crate) count: u64,
    pub(crate) buckets: Vec<(f64, u64)>,
}

impl DurationHistogram {
    pub(crate) fn new(buckets: &Buckets, shards: usize) -> Self {
        let shards = shard_count(shards);
        let used = row_len(buckets);
        // Rows of whole 64-byte lines plus a line of padding when sharded, so two rows never
        // share a line whatever the alignment of the allocation.
        let (stride, rows) = if shards > 1 {
            (used.div_ceil(8) * 8 + 8, 2 * shards)
        } else {
            (used, 1)
        };
        Self {
            buckets: buckets.clone(),
            cells: (0..stride * rows).map(|_| AtomicU64::new(0)).collect(),
            stride,
            mask: shards - 1,
            owned_rows: shards > 1,
        }
    }

    #[inline]
    pub(crate) fn observe(&self, d: Duration) {
        let place = place();
        let (row, owned) = match place.owned_in(self.mask).filter(|_| self.owned_rows) {
            Some(k) => (k, true),
            None => {
                let shared = if self.owned_rows { self.mask + 1 } else { 0 };
                (shared + (place.spread() & self.mask), false)
            }
        };
        if let Some(row) = self.cells.get(row * self.stride..) {
            observe_row(&self.buckets, row, d, owned);
        }
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        snapshot_rows(&self.buckets, self.cells.chunks(self.stride))
    }
}

/// The cells one row of a histogram over `buckets` uses: a count per bucket (`+Inf` included),
/// then the sum in nanoseconds.
pub(crate) fn row_len(buckets: &Buckets) -> usize {
    buckets.bounds().len() + 2
}

/// Observes `d` into `row`, a histogram row over `buckets` (see [`row_len`]; cells beyond it are
/// not touched): two relaxed additions, plain ones if the calling thread is the row's only
/// writer (`owned`).
#[inline]
pub(crate) fn observe_row(buckets: &Buckets, row: &[AtomicU64], d: Duration, owned: bool) {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    if let Some(c) = row.get(buckets.index(nanos)) {
        shard::add(c, 1, owned);
    }
    if let Some(c) = row.get(buckets.bounds().len() + 1) {
        shard::add(c, nanos, owned);
    }
}

/// The sum of histogram rows over `buckets` (see [`row_len`]; cells beyond it are ignored).
pub(crate) fn snapshot_rows<'a>(
    buckets: &Buckets,
    rows: impl IntoIterator<Item = &'a [AtomicU64]>,
) -> HistogramSnapshot {
    let n = buckets.bounds().len() + 1;
    let mut counts = vec![0u64; n];
    let mut sum_nanos: u128 = 0;
    for row in rows {
        for (c, cell) in counts.iter_mut().zip(row) {
            *c = c.wrapping_add(cell.load(Ordering::Relaxed));
        }
        if let Some(s) = row.get(n) {
            sum_nanos += u128::from(s.load(Ordering::Relaxed));
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let sum = sum_nanos as f64 / 1e9;
    let count = counts.iter().sum();
    let buckets = buckets
        .bounds()
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(counts)
        .collect();
    HistogramSnapshot {
        sum,
        count,
        buckets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_buckets_go_from_10ms_to_10min() {
        let b = Buckets::default();
        assert_eq!(b.bounds(), DURATION_BUCKETS);
        assert_eq!(b.bounds().first(), Some(&0.01));
        assert_eq!(b.bounds().last(), Some(&600.0));
    }

    #[test]
    fn bad_bounds_are_typed_errors() {
        assert_eq!(Buckets::new([]), Err(BucketsError::Empty));
        assert_eq!(
            Buckets::new([0.1, f64::NAN]),
            Err(BucketsError::NotPositive { index: 1 })
        );
        assert_eq!(
            Buckets::new([-1.0]),
            Err(BucketsError::NotPositive { index: 0 })
        );
        assert_eq!(
            Buckets::new([f64::INFINITY]),
            Err(BucketsError::NotPositive { index: 0 })
        );
        assert_eq!(
            Buckets::new([2.0, 1.0]),
            Err(BucketsError::NotIncreasing { index: 1 })
        );
        assert_eq!(
            Buckets::new([1.0, 1.0 + 1e-12]),
            Err(BucketsError::NotIncreasing { index: 1 })
        );
        assert_eq!(
            Buckets::new((1..=65).map(f64::from)),
            Err(BucketsError::TooMany { count: 65 })
        );
        assert!(matches!(
            Buckets::exponential(0.1, 1.0, 3),
            Err(BucketsError::NotIncreasing { index: 1 })
        ));
    }

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let b = Buckets::new([0.01, 0.1, 1.0]).expect("valid");
        for shards in [1, 4] {
            let h = DurationHistogram::new(&b, shards);
            for ms in [5, 10, 11, 100, 999, 1000, 1001, 700_000] {
                h.observe(Duration::from_millis(ms));
            }
            let s = h.snapshot();
            assert_eq!(s.count, 8);
            let counts: Vec<u64> = s.buckets.iter().map(|(_, c)| *c).collect();
            assert_eq!(counts, [2, 2, 2, 2], "le=0.01 holds 5 and 10 ms exactly");
            assert_eq!(s.buckets.last().map(|(b, _)| *b), Some(f64::INFINITY));
            assert!((s.sum - 703.126).abs() < 1e-9, "{}", s.sum);
        }
    }

    /// More threads than shards observe at once (the owners of a shard with plain additions,
    /// the others atomically): the count and the sum hold every observation.
    #[test]
    fn concurrent_observations_are_all_counted() {
        let _serial = crate::shard::tests::serial();
        const THREADS: u64 = 40;
        const OBSERVES: u64 = 5_000;
        let b = Buckets::new([0.01, 0.1, 1.0]).expect("valid");
        for shards in [1, 2, 16] {
            let h = DurationHistogram::new(&b, shards);
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let h = &h;
                    s.spawn(move || {
                        for _ in 0..OBSERVES {
                            h.observe(Duration::from_millis(t * 50));
                        }
                    });
                }
            });
            let snap = h.snapshot();
            assert_eq!(snap.count, THREADS * OBSERVES, "{shards} shards");
            let want_ms = OBSERVES * THREADS * (THREADS - 1) / 2 * 50;
            #[allow(clippy::cast_precision_loss)]
            let want = want_ms as f64 / 1000.0;
            assert!(
                (snap.sum - want).abs() < 1e-6,
                "{shards} shards: {} != {want}",
                snap.sum
            );
        }
    }
}
