//! Injected time.

use std::fmt::Debug;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// The source of "now", in two readings. Only the manager and schedulers read it; pure logic takes
/// `now` as an argument, so every time-driven behaviour can be tested without sleeping.
///
/// - [`now`](Self::now) is wall time: token expiry (a server's absolute instant) and reports.
/// - [`monotonic`](Self::monotonic) never goes back and ignores wall-clock steps: backoffs,
///   cooldowns and schedules run on it, so stepping the wall clock back an hour cannot freeze a
///   pool for an hour.
pub trait Clock: Send + Sync + Debug {
    /// The current wall time.
    fn now(&self) -> DateTime<Utc>;

    /// Time elapsed since this clock's fixed origin, monotonically non-decreasing. The default is
    /// the process's monotonic clock ([`Instant`]) since its first reading.
    fn monotonic(&self) -> Duration {
        process_monotonic()
    }

    /// The current time in milliseconds since the Unix epoch: what a hot path that only compares
    /// instants needs. Implementations may override it with something cheaper than [`now`](Self::now).
    fn now_millis(&self) -> i64 {
        self.now().timestamp_millis()
    }
}

/// The process-wide monotonic reading the default [`Clock::monotonic`] returns: time since the
/// first call in this process.
pub fn process_monotonic() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// The wall clock and the process's monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn now_millis(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }

    fn now_millis(&self) -> i64 {
        (**self).now_millis()
    }

    fn monotonic(&self) -> Duration {
        (**self).monotonic()
    }
}

#[cfg(any(test, feature = "test-util"))]
pub use manual::ManualClock;

#[cfg(any(test, feature = "test-util"))]
mod manual {
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use chrono::{DateTime, Utc};

    use super::Clock;
    use crate::credential::after;

    #[derive(Debug, Clone, Copy)]
    struct Readings {
        wall: DateTime<Utc>,
        monotonic: Duration,
    }

    /// A clock that moves only when told to. Clones share the same time.
    ///
    /// [`advance`](Self::advance) moves both readings, as real time passing does;
    /// [`set`](Self::set) moves only the wall reading, as an NTP step or an operator does.
    #[derive(Debug, Clone)]
    pub struct ManualClock(Arc<Mutex<Readings>>);

    impl ManualClock {
        /// A clock stopped at `start`.
        pub fn new(start: DateTime<Utc>) -> Self {
            Self(Arc::new(Mutex::new(Readings {
                wall: start,
                monotonic: Duration::ZERO,
            })))
        }

        /// Lets `by` pass: both readings move forward (saturating).
        pub fn advance(&self, by: Duration) {
            let mut r = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            r.wall = after(r.wall, by);
            r.monotonic = r.monotonic.saturating_add(by);
        }

        /// Steps the wall reading to `to` (backwards too, as a wall clock can); the monotonic
        /// reading does not move.
        pub fn set(&self, to: DateTime<Utc>) {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).wall = to;
        }
    }

    impl Default for ManualClock {
        fn default() -> Self {
            Self::new(DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000))
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).wall
        }

        fn monotonic(&self) -> Duration {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .monotonic
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn manual_clock_advances_and_clones_share_time() {
        let c = ManualClock::default();
        let t0 = c.now();
        let c2 = c.clone();
        c.advance(Duration::from_secs(90));
        assert_eq!((c2.now() - t0).num_seconds(), 90);
        assert_eq!(c.monotonic(), Duration::from_secs(90));
        c2.set(t0);
        assert_eq!(c.now(), t0);
        assert_eq!(
            c.monotonic(),
            Duration::from_secs(90),
            "a wall step leaves monotonic time"
        );
        c.advance(Duration::MAX);
        assert_eq!(c.now(), DateTime::<Utc>::MAX_UTC, "advance saturates");
    }

    #[test]
    fn system_clock_moves_and_its_millis_agree() {
        let a = SystemClock.now();
        assert!(SystemClock.now() >= a);
        let ms = SystemClock.now_millis();
        assert!((ms - a.timestamp_millis()).abs() < 60_000, "{ms} vs {a}");
        let m = ManualClock::new(a);
        assert_eq!(m.now_millis(), a.timestamp_millis());
    }
}
