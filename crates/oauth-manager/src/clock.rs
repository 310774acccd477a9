//! Clocks the manager adds to `oauth_core`'s: a cheap default for the hot path, and one that
//! follows tokio's (pausable) time for tests of time-driven behaviour.

use chrono::{DateTime, Utc};
use oauth_core::{Clock, SystemClock, after};

/// The manager's default clock: the system clock, with
/// [`now_millis`](Clock::now_millis), which selection reads on every pick that has a backoff to
/// compare, taken from `CLOCK_REALTIME_COARSE` on Linux: a few nanoseconds instead of a full
/// clock read, at the resolution of one kernel tick (a few milliseconds), which is all that deciding
/// whether a backoff of a second or more has ended needs. [`now`](Clock::now) stays precise.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseClock;

impl Clock for CoarseClock {
    fn now(&self) -> DateTime<Utc> {
        SystemClock.now()
    }

    #[cfg(target_os = "linux")]
    fn now_millis(&self) -> i64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        t.tv_sec.saturating_mul(1000) + t.tv_nsec / 1_000_000
    }

    #[cfg(not(target_os = "linux"))]
    fn now_millis(&self) -> i64 {
        SystemClock.now_millis()
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
