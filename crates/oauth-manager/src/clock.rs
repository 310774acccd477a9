//! A clock that follows tokio's (pausable) time, for tests of time-driven behaviour.

use chrono::{DateTime, Utc};
use oauth_core::{Clock, delta};

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
        self.base + delta(self.start.elapsed())
    }
}
