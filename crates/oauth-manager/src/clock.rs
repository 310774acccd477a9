//! Clocks the manager adds to `oauth_core`'s: a cheap default for the hot path, and one that
//! follows tokio's (pausable) time for tests of time-driven behaviour.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use oauth_core::{Clock, SystemClock, after};

/// The manager's default clock: the system clock for wall time, and for
/// [`monotonic`](Clock::monotonic), which selection reads on every pick that has a backoff to
/// compare, `CLOCK_MONOTONIC_COARSE` on Linux: a few nanoseconds instead of a full `Instant::now()`,
/// at the resolution of one kernel tick (a few milliseconds), which is all that deciding whether a
/// backoff of a second or more has ended needs. [`now`](Clock::now) stays precise.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseClock;

impl Clock for CoarseClock {
    fn now(&self) -> DateTime<Utc> {
        SystemClock.now()
    }

    fn now_millis(&self) -> i64 {
        Self::wall_ms()
    }

    #[cfg(target_os = "linux")]
    fn monotonic(&self) -> Duration {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
        let secs = u64::try_from(t.tv_sec).unwrap_or(0);
        let nanos = u32::try_from(t.tv_nsec).unwrap_or(0);
        Duration::new(secs, nanos.min(999_999_999))
    }
}

impl CoarseClock {
    /// A coarse clock's reading in milliseconds.
    #[cfg(target_os = "linux")]
    #[inline]
    fn read_ms(clock: rustix::time::ClockId) -> i64 {
        let t = rustix::time::clock_gettime(clock);
        t.tv_sec
            .saturating_mul(1000)
            .saturating_add(t.tv_nsec / 1_000_000)
    }

    /// [`now_millis`](Clock::now_millis): `CLOCK_REALTIME_COARSE` on Linux.
    #[cfg(target_os = "linux")]
    #[inline]
    fn wall_ms() -> i64 {
        Self::read_ms(rustix::time::ClockId::RealtimeCoarse)
    }

    #[cfg(not(target_os = "linux"))]
    fn wall_ms() -> i64 {
        SystemClock.now_millis()
    }

    /// [`monotonic`](Clock::monotonic) in milliseconds, without the `Duration` in between.
    #[cfg(target_os = "linux")]
    #[inline]
    fn monotonic_ms() -> i64 {
        Self::read_ms(rustix::time::ClockId::MonotonicCoarse)
    }

    #[cfg(not(target_os = "linux"))]
    fn monotonic_ms() -> i64 {
        mono_ms(CoarseClock.monotonic())
    }
}

/// A [`Clock`] that reads tokio's clock: under `#[tokio::test(start_paused = true)]` (or
/// `tokio::time::pause()`), time only moves when tokio auto-advances over a sleep or a test calls
/// `tokio::time::advance`, so waits for a backoff take no wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base` now, then moving with tokio's time.
    pub fn new(base: DateTime<Utc>) -> Self {
        Self {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        after(self.base, self.start.elapsed())
    }

    fn monotonic(&self) -> Duration {
        self.start.elapsed()
    }
}

/// The manager's two readings of its [`Clock`]:
/// - wall time ([`wall`](Self::wall)) for token expiry and reports;
/// - the health timeline ([`health`](Self::health)): monotonic time mapped onto wall-clock-like
///   instants, anchored at the wall time of the manager's construction. Backoffs, cooldowns and
///   the selection's comparisons run on it, so a wall-clock step (NTP, an operator) never
///   stretches or shortens a backoff.
///
/// Reports convert health instants back to wall time ([`to_wall`](Self::to_wall)), so while the
/// wall clock does not step the two agree.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    clock: Arc<dyn Clock>,
    /// The clock is the default [`CoarseClock`]: its hot-path readings are made directly (no
    /// dynamic dispatch, no `Duration`), which measured 4 ns a pick less than through `clock`.
    coarse: bool,
    anchor_wall_ms: i64,
    anchor_mono_ms: i64,
    /// Request latency: the CPU's time-stamp counter where it is usable (a few nanoseconds a
    /// reading, where `Instant::now()` costs about 25), `Instant` elsewhere. Latency is a measured
    /// duration, not a time of the pool's schedule, so it does not come from the injected clock.
    ticks: quanta::Clock,
}

fn mono_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Timeline {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with(clock, false)
    }

    /// The timeline of the default [`CoarseClock`].
    pub(crate) fn coarse() -> Self {
        Self::with(Arc::new(CoarseClock), true)
    }

    fn with(clock: Arc<dyn Clock>, coarse: bool) -> Self {
        let anchor_wall_ms = clock.now().timestamp_millis();
        let anchor_mono_ms = mono_ms(clock.monotonic());
        Self {
            clock,
            coarse,
            anchor_wall_ms,
            anchor_mono_ms,
            ticks: quanta::Clock::new(),
        }
    }

    /// A reading of the latency counter (see [`elapsed`](Self::elapsed)).
    pub(crate) fn ticks(&self) -> u64 {
        self.ticks.raw()
    }

    /// The time between two [`ticks`](Self::ticks) readings (zero if they are out of order).
    pub(crate) fn elapsed(&self, start: u64, end: u64) -> Duration {
        self.ticks.delta(start, end)
    }

    /// Wall time.
    pub(crate) fn wall(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The health timeline now, in milliseconds (the hot path's one clock read).
    #[inline]
    pub(crate) fn now_ms(&self) -> i64 {
        let mono = if self.coarse {
            CoarseClock::monotonic_ms()
        } else {
            mono_ms(self.clock.monotonic())
        };
        let elapsed = mono.saturating_sub(self.anchor_mono_ms);
        self.anchor_wall_ms.saturating_add(elapsed.max(0))
    }

    /// The health timeline now.
    pub(crate) fn health(&self) -> DateTime<Utc> {
        from_ms(self.now_ms())
    }

    /// How far the health timeline is ahead of wall time now (zero while the wall clock has not
    /// stepped).
    pub(crate) fn skew(&self) -> TimeDelta {
        // Millisecond readings (the clock's cheap ones): no calendar arithmetic on this path.
        TimeDelta::milliseconds(self.now_ms().saturating_sub(self.wall_ms()))
    }

    /// Wall time as milliseconds since the epoch, from the clock's cheap reading.
    pub(crate) fn wall_ms(&self) -> i64 {
        if self.coarse {
            CoarseClock::wall_ms()
        } else {
            self.clock.now_millis()
        }
    }

    /// A health-timeline instant as wall time.
    pub(crate) fn to_wall(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        shift(t, -self.skew())
    }

    /// A wall-time instant (a token's expiry) on the health timeline.
    pub(crate) fn on_timeline(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        shift(t, self.skew())
    }
}

/// `t + by`, saturating at the representable range.
pub(crate) fn shift(t: DateTime<Utc>, by: TimeDelta) -> DateTime<Utc> {
    if by.is_zero() {
        return t;
    }
    t.checked_add_signed(by)
        .unwrap_or(if by > TimeDelta::zero() {
            DateTime::<Utc>::MAX_UTC
        } else {
            DateTime::<Utc>::MIN_UTC
        })
}

/// The earliest and the latest millisecond a `DateTime<Utc>` holds (chrono's `MIN_UTC` and
/// `MAX_UTC` in milliseconds; a test checks them against chrono).
pub(crate) const MS_RANGE: std::ops::RangeInclusive<i64> =
    -8_334_601_228_800_000..=8_210_266_876_799_999;

/// `ms` saturated to [`MS_RANGE`]: `from_ms(clamp_ms(ms)).timestamp_millis() == clamp_ms(ms)`.
pub(crate) fn clamp_ms(ms: i64) -> i64 {
    ms.clamp(*MS_RANGE.start(), *MS_RANGE.end())
}

/// Milliseconds since the epoch as an instant, saturating.
///
/// The same value as `DateTime::from_timestamp_millis`, without its calendar arithmetic on the
/// hot path: the date of the last day converted is remembered per thread, so a call converting
/// an instant of the same day only builds the time of day (the calendar conversion was 7% of a
/// healthy `execute_with_failover`), and one of the same millisecond as the last is returned as
/// it was (the time of day was still 4%).
#[inline]
pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    thread_local! {
        /// The last millisecond converted on this thread, and its instant: calls finishing in
        /// the same millisecond convert nothing.
        static LAST: std::cell::Cell<Option<(i64, DateTime<Utc>)>> =
            const { std::cell::Cell::new(None) };
    }
    if let Some((last, t)) = LAST.with(std::cell::Cell::get)
        && last == ms
    {
        return t;
    }
    let t = convert_ms(ms);
    LAST.with(|c| c.set(Some((ms, t))));
    t
}

/// [`from_ms`] without the last instant: the date of the last day converted is remembered.
#[inline(never)]
fn convert_ms(ms: i64) -> DateTime<Utc> {
    const MS_PER_DAY: i64 = 86_400_000;
    thread_local! {
        /// The day (since the epoch) and date of the last conversion on this thread.
        static DAY: std::cell::Cell<Option<(i64, chrono::NaiveDate)>> =
            const { std::cell::Cell::new(None) };
    }
    let day = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let date = match DAY.with(std::cell::Cell::get) {
        Some((d, date)) if d == day => Some(date),
        _ => {
            let date = DateTime::from_timestamp_millis(ms).map(|t| t.date_naive());
            if let Some(date) = date {
                DAY.with(|c| c.set(Some((day, date))));
            }
            date
        }
    };
    // `in_day` is below 86,400,000: the seconds and nanoseconds of the time of day are in range.
    let secs = u32::try_from(in_day / 1000).unwrap_or(0);
    let nanos = u32::try_from(in_day % 1000).unwrap_or(0) * 1_000_000;
    date.zip(chrono::NaiveTime::from_num_seconds_from_midnight_opt(
        secs, nanos,
    ))
    .map(|(date, time)| date.and_time(time).and_utc())
    .unwrap_or(if ms > 0 {
        DateTime::<Utc>::MAX_UTC
    } else {
        DateTime::<Utc>::MIN_UTC
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_millisecond_range_is_chronos() {
        assert_eq!(
            MS_RANGE,
            DateTime::<Utc>::MIN_UTC.timestamp_millis()
                ..=DateTime::<Utc>::MAX_UTC.timestamp_millis()
        );
        for ms in [i64::MIN, -1, 0, i64::MAX] {
            assert_eq!(from_ms(clamp_ms(ms)).timestamp_millis(), clamp_ms(ms));
        }
    }

    proptest::proptest! {
        /// The per-thread day cache gives what chrono's conversion gives, for any millisecond
        /// (in range or saturated), whatever was converted before it on the thread.
        #[test]
        fn from_ms_agrees_with_chrono(
            ms in proptest::prelude::any::<i64>(),
            near in -200_000_000i64..200_000_000,
            before in proptest::prelude::any::<i64>(),
        ) {
            let reference = |ms: i64| {
                DateTime::from_timestamp_millis(ms).unwrap_or(if ms > 0 {
                    DateTime::<Utc>::MAX_UTC
                } else {
                    DateTime::<Utc>::MIN_UTC
                })
            };
            let near = 1_800_000_000_000i64 + near;
            for t in [before, ms, ms, near, near, near + 1, near - 86_400_000, ms, near] {
                proptest::prop_assert_eq!(from_ms(t), reference(t));
            }
        }

        /// The same over chrono's whole range (before 1970 included), after a conversion of
        /// the same day or of another.
        #[test]
        fn from_ms_agrees_with_chrono_over_its_range(
            ms in -8_210_266_876_800_000i64..8_210_298_412_800_000,
            offset in -86_400_000i64..86_400_000,
        ) {
            let reference = |ms: i64| DateTime::from_timestamp_millis(ms);
            for t in [ms, ms.saturating_add(offset), ms] {
                if let Some(want) = reference(t) {
                    proptest::prop_assert_eq!(from_ms(t), want);
                }
            }
        }
    }

    /// The edges: the epoch's neighbours, chrono's first and last millisecond, the extremes.
    #[test]
    fn from_ms_at_the_edges() {
        let (min, max) = (
            DateTime::<Utc>::MIN_UTC.timestamp_millis(),
            DateTime::<Utc>::MAX_UTC.timestamp_millis(),
        );
        let cases = [
            0,
            -1,
            1,
            -86_400_000,
            -86_400_001,
            86_399_999,
            min,
            min + 1,
            max,
            max - 1,
        ];
        for warm in cases {
            for t in cases {
                let _ = from_ms(warm);
                assert_eq!(
                    from_ms(t),
                    DateTime::from_timestamp_millis(t).expect("in range"),
                    "{t} after {warm}"
                );
            }
        }
        assert_eq!(from_ms(i64::MIN), DateTime::<Utc>::MIN_UTC);
        assert_eq!(from_ms(i64::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(from_ms(min - 1), DateTime::<Utc>::MIN_UTC);
        assert_eq!(from_ms(max + 1), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn the_default_timeline_reads_the_coarse_clock_directly_in_the_same_units() {
        let before = mono_ms(CoarseClock.monotonic());
        let direct = CoarseClock::monotonic_ms();
        let after = mono_ms(CoarseClock.monotonic());
        assert!(
            before <= direct && direct <= after,
            "{before} {direct} {after}"
        );
        let before = CoarseClock.now().timestamp_millis();
        let direct = CoarseClock::wall_ms();
        assert!((direct - before).abs() < 1_000, "{before} {direct}");

        let (fast, dispatched) = (Timeline::coarse(), Timeline::new(Arc::new(CoarseClock)));
        assert!(fast.coarse && !dispatched.coarse);
        for (a, b) in [
            (fast.now_ms(), dispatched.now_ms()),
            (fast.wall_ms(), dispatched.wall_ms()),
        ] {
            assert!((a - b).abs() < 1_000, "{a} {b}");
        }
    }

    #[test]
    fn the_coarse_clock_agrees_with_the_system_clock_within_a_tick() {
        let before = SystemClock.now_millis();
        let coarse = CoarseClock.now_millis();
        let after = SystemClock.now_millis();
        // Coarse time lags by about one kernel tick; allow a loaded machine a generous margin.
        assert!(
            coarse <= after && coarse + 1_000 >= before,
            "{before} {coarse} {after}"
        );
        assert!(
            (CoarseClock.now() - SystemClock.now())
                .num_milliseconds()
                .abs()
                < 1000
        );
    }
}
