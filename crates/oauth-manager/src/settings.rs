//! Settings the manager copies in (never aliases) and hands out as copies.

use std::time::Duration;

use oauth_core::HealthPolicy;
use oauth_refresh::RefreshStrategy;

use crate::error::SettingsError;

/// The longest `deadline` or `wait_for_available` accepted: a call waiting longer than a day is a
/// configuration mistake, and timer arithmetic must stay far from overflow.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// How the next credential is chosen among the available ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Selection {
    /// Fair round-robin (the Go behaviour, without its unfairness around skipped credentials).
    #[default]
    RoundRobin,
    /// Power of two choices on requests in flight: of two candidates, the one running fewer
    /// requests (spreads load when some calls are much slower than others).
    LeastInFlight,
    /// Power of two choices on in-flight requests weighted by each credential's recent latency
    /// (an exponentially weighted average), as Envoy and Finagle's P2C balancers do.
    LatencyAware,
}

/// How [`execute_with_failover`](crate::OAuthKeyManager::execute_with_failover) tries credentials.
///
/// `wait_for_available` and `deadline` use tokio timers: the runtime must have its time driver
/// enabled (`#[tokio::main]` and `Runtime::new` do; a hand-built runtime needs `enable_time`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FailoverSettings {
    /// How the next credential is chosen (default: round-robin).
    pub selection: Selection,
    /// Attempts per call; `None` means `min(credentials, 3)`, as in Go.
    pub max_attempts: Option<u32>,
    /// When no credential is available, wait up to this long for the first to come back instead of
    /// failing at once. `None`: fail at once (Go).
    pub wait_for_available: Option<Duration>,
    /// Deadline for a whole call, attempts and refreshes included. `None`: only the caller's own
    /// cancellation (dropping the future) bounds it.
    pub deadline: Option<Duration>,
}

impl FailoverSettings {
    /// Sets [`selection`](Self::selection).
    #[must_use]
    pub const fn with_selection(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    #[must_use]
    pub const fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Sets [`wait_for_available`](Self::wait_for_available).
    #[must_use]
    pub const fn with_wait_for_available(mut self, d: Duration) -> Self {
        self.wait_for_available = Some(d);
        self
    }

    /// Sets [`deadline`](Self::deadline).
    #[must_use]
    pub const fn with_deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        if self.max_attempts == Some(0) {
            return Err(SettingsError::Failover("max_attempts must be at least 1"));
        }
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return Err(SettingsError::Failover(
                "deadline must be greater than zero",
            ));
        }
        for (d, what) in [
            (self.deadline, "deadline must be at most a day"),
            (
                self.wait_for_available,
                "wait_for_available must be at most a day",
            ),
        ] {
            if d.is_some_and(|d| d > MAX_WAIT) {
                return Err(SettingsError::Failover(what));
            }
        }
        Ok(())
    }
}

/// All settings read on the hot path, swapped as one immutable value.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) strategy: RefreshStrategy,
    pub(crate) health: HealthPolicy,
    pub(crate) failover: FailoverSettings,
}

impl Settings {
    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        self.health.validate()?;
        self.strategy.validate()?;
        self.failover.validate()
    }
}
