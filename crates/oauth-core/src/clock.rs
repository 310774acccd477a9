//! Injected time.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

/// The source of "now". Only the manager and schedulers read it; pure logic takes `now` as an
/// argument, so every time-driven behaviour can be tested without sleeping.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// The current time in milliseconds since the Unix epoch: what a hot path that only compares
    /// instants needs. Implementations may override it with something cheaper than [`now`](Self::now).
    fn now_millis(&self) -> i64 {
        self.now().timestamp_millis()
    }
}

/// The wall clock.
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
}

#[cfg(any(test, feature = "test-util"))]
pub use manual::ManualClock;

#[cfg(any(test, feature = "test-util"))]
mod manual {
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use chrono::{DateTime, Utc};

    use super::Clock;
    use crate::credential::delta;

    /// A clock that moves only when told to. Clones share the same time.
    #[derive(Debug, Clone)]
    pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

    impl ManualClock {
        /// A clock stopped at `start`.
        pub fn new(start: DateTime<Utc>) -> Self {
            Self(Arc::new(Mutex::new(start)))
        }

        /// Moves the clock forward by `by`.
        pub fn advance(&self, by: Duration) {
            let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            *now += delta(by);
        }

        /// Sets the clock to `to` (it may go backwards, as a wall clock can).
        pub fn set(&self, to: DateTime<Utc>) {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = to;
        }
    }

    impl Default for ManualClock {
        fn default() -> Self {
            Self::new(DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000))
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner)
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
        c2.set(t0);
        assert_eq!(c.now(), t0);
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
