//! When to refresh: the Go `RefreshStrategy`, with continuous requests-per-hour.

use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::{Credential, RefreshWindow, UsageSnapshot};

use crate::error::StrategyError;

/// When a credential should be refreshed: a buffer before expiry, optionally adapted to the
/// credential's latency, traffic and error rate, and optionally doubled for busy credentials.
///
/// The formulas are the Go package's (`refresh_strategy.go`), including its truncation of each
/// adaptive term to whole seconds. The one deliberate difference is requests per hour, which comes
/// from [`UsageSnapshot::requests_per_hour`]: `requests / max(hours since first use, 1)`, continuous
/// in time. Go divided by the elapsed time once 36 s had passed, so 100 requests counted as 100/h
/// at 35 s and 10,000/h at 36 s, and the buffer jumped to its maximum. Go also measured from the
/// manager's creation instead of the first request.
///
/// The buffer is then applied through a [`RefreshWindow`] (`window`), which clamps it to the
/// token's lifetime and never refreshes a token the pool just received again within a minimum
/// interval: with short-lived tokens (120 s) the Go rule refreshed on every call. For tokens of
/// an hour or more, and for credentials the pool has not refreshed yet (unknown lifetime), the
/// decision is exactly Go's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshStrategy {
    /// The base buffer before expiry.
    pub buffer_time: Duration,
    /// Adapt the buffer to latency, traffic and success rate.
    pub adaptive_buffer: bool,
    /// Lower clamp of the adaptive buffer (zero: none).
    pub min_buffer: Duration,
    /// Upper clamp of the adaptive buffer and of the preemptive buffer (zero: none).
    pub max_buffer: Duration,
    /// Double the buffer for credentials at or above `high_traffic_threshold` requests per hour.
    pub preemptive_refresh: bool,
    /// Requests per hour from which a credential counts as high traffic.
    pub high_traffic_threshold: u64,
    /// How the buffer computed here is clamped to the token's lifetime, and the minimum interval
    /// between refreshes. Its own buffer is replaced by the one this strategy computes.
    pub window: RefreshWindow,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Default for RefreshStrategy {
    /// Go `DefaultRefreshStrategy`: 5 min buffer, not adaptive, 1–15 min bounds, not preemptive,
    /// threshold 100 req/h.
    fn default() -> Self {
        Self {
            buffer_time: 5 * MINUTE,
            adaptive_buffer: false,
            min_buffer: MINUTE,
            max_buffer: 15 * MINUTE,
            preemptive_refresh: false,
            high_traffic_threshold: 100,
            window: RefreshWindow::default(),
        }
    }
}

impl RefreshStrategy {
    /// Go `AdaptiveRefreshStrategy`: the default, adaptive and preemptive.
    pub fn adaptive() -> Self {
        Self {
            adaptive_buffer: true,
            preemptive_refresh: true,
            ..Self::default()
        }
    }

    /// Go `ConservativeRefreshStrategy`: 15 min buffer, 10–30 min bounds, preemptive from
    /// 50 req/h, not adaptive.
    pub fn conservative() -> Self {
        Self {
            buffer_time: 15 * MINUTE,
            adaptive_buffer: false,
            min_buffer: 10 * MINUTE,
            max_buffer: 30 * MINUTE,
            preemptive_refresh: true,
            high_traffic_threshold: 50,
            window: RefreshWindow::default(),
        }
    }

    /// Checks the values make sense (Go accepted anything).
    ///
    /// # Errors
    /// [`StrategyError`] when `max_buffer` is set below `min_buffer`, or preemptive refresh is on
    /// with a zero threshold.
    pub fn validate(&self) -> Result<(), StrategyError> {
        if !self.max_buffer.is_zero() && self.max_buffer < self.min_buffer {
            return Err(StrategyError::MaxBelowMin {
                min: self.min_buffer,
                max: self.max_buffer,
            });
        }
        if self.preemptive_refresh && self.high_traffic_threshold == 0 {
            return Err(StrategyError::ZeroHighTrafficThreshold);
        }
        Ok(())
    }

    /// Go `CalculateBufferTime`: `buffer_time`, plus, when adaptive and usage is known,
    /// +30 s per 100 ms of average latency, +30 s per 10 req/h above 10, +60 s per 0.1 of success
    /// rate below 0.95 (each term truncated to whole seconds, as in Go), clamped to
    /// `min_buffer..=max_buffer` (a zero bound is no bound).
    pub fn calculate_buffer_time(
        &self,
        usage: Option<&UsageSnapshot>,
        now: DateTime<Utc>,
    ) -> Duration {
        let Some(usage) = usage.filter(|_| self.adaptive_buffer) else {
            return self.buffer_time;
        };
        let mut buffer = self.buffer_time;
        let latency = usage.average_latency();
        if !latency.is_zero() {
            buffer = buffer.saturating_add(whole_seconds((latency.as_secs_f64() / 0.1) * 30.0));
        }
        let rph = usage.requests_per_hour(now);
        if rph > 10.0 {
            buffer = buffer.saturating_add(whole_seconds(((rph - 10.0) / 10.0) * 30.0));
        }
        let success_rate = usage.success_rate();
        if success_rate < 0.95 {
            buffer = buffer.saturating_add(whole_seconds(((0.95 - success_rate) * 10.0) * 60.0));
        }
        if !self.min_buffer.is_zero() && buffer < self.min_buffer {
            buffer = self.min_buffer;
        }
        if !self.max_buffer.is_zero() && buffer > self.max_buffer {
            buffer = self.max_buffer;
        }
        buffer
    }

    /// Go `ShouldRefresh`: true when the access token expires within the buffer (strictly after
    /// `expires_at - buffer`), or, with preemptive refresh and usage at or above the high-traffic
    /// threshold, within twice the buffer (capped at `max_buffer`). Never true without an expiry.
    ///
    /// The buffer goes through [`window`](Self::window): it is clamped to the token's lifetime,
    /// and a token the pool received less than the minimum interval ago is not due. (A token the
    /// provider rejected is refreshed whatever this says: see
    /// [`RefreshWindow::should_refresh`].) Saturating: no expiry or setting panics.
    pub fn should_refresh(
        &self,
        credential: &Credential,
        usage: Option<&UsageSnapshot>,
        now: DateTime<Utc>,
    ) -> bool {
        if credential.expires_at.is_none() {
            return false;
        }
        let mut buffer = self.calculate_buffer_time(usage, now);
        if self.preemptive_refresh
            && let Some(usage) = usage
        {
            #[allow(clippy::cast_precision_loss)]
            let threshold = self.high_traffic_threshold as f64;
            if usage.requests_per_hour(now) >= threshold {
                let mut preemptive = buffer.saturating_mul(2);
                if !self.max_buffer.is_zero() && preemptive > self.max_buffer {
                    preemptive = self.max_buffer;
                }
                buffer = preemptive;
            }
        }
        self.window
            .with_buffer(buffer)
            .needs_refresh(credential, now)
    }
}

impl RefreshStrategy {
    /// An instant before which [`should_refresh`](Self::should_refresh) is false for this
    /// credential whatever the usage snapshot and however early the clock (see
    /// [`RefreshWindow::quiet_until`]): the pool compares one number on its hot path instead of
    /// deciding on every call. `None` when no bound is known: an adaptive buffer without a
    /// `max_buffer` can grow without limit.
    pub fn quiet_until(&self, credential: &Credential) -> Option<DateTime<Utc>> {
        if !self.adaptive_buffer && !self.preemptive_refresh {
            // The buffer is fixed: the window's own (exact) bound.
            return Some(
                self.window
                    .with_buffer(self.buffer_time)
                    .quiet_until(credential),
            );
        }
        // The usage moves the buffer, up to this much (without a usage snapshot it is the plain
        // `buffer_time`, unclamped).
        let most = if self.adaptive_buffer {
            if self.max_buffer.is_zero() {
                return None;
            }
            self.max_buffer.max(self.buffer_time)
        } else {
            let doubled = self.buffer_time.saturating_mul(2);
            let preemptive = if self.max_buffer.is_zero() {
                doubled
            } else {
                doubled.min(self.max_buffer)
            };
            preemptive.max(self.buffer_time)
        };
        // The window grows with the buffer, so the widest one bounds them all. (The minimum
        // interval grows with it too, so that part is left out: conservative.)
        let Some(expires_at) = credential.expires_at else {
            return Some(DateTime::<Utc>::MAX_UTC);
        };
        let window = self
            .window
            .with_buffer(most)
            .window_for(RefreshWindow::lifetime(credential));
        Some(
            chrono::TimeDelta::from_std(window)
                .ok()
                .and_then(|w| expires_at.checked_sub_signed(w))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        )
    }
}

/// Go's `time.Duration(x) * time.Second`: truncation toward zero to whole seconds (negative and NaN
/// give zero, which Go would not produce from these non-negative terms either).
fn whole_seconds(secs: f64) -> Duration {
    if secs.is_finite() && secs > 0.0 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = secs.trunc().min(u64::MAX as f64) as u64;
        Duration::from_secs(whole)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_match_go() {
        let d = RefreshStrategy::default();
        assert_eq!(
            (d.buffer_time, d.min_buffer, d.max_buffer),
            (5 * MINUTE, MINUTE, 15 * MINUTE)
        );
        assert!(!d.adaptive_buffer && !d.preemptive_refresh);
        assert_eq!(d.high_traffic_threshold, 100);
        let a = RefreshStrategy::adaptive();
        assert!(a.adaptive_buffer && a.preemptive_refresh);
        let c = RefreshStrategy::conservative();
        assert_eq!(
            (c.buffer_time, c.min_buffer, c.max_buffer),
            (15 * MINUTE, 10 * MINUTE, 30 * MINUTE)
        );
        assert!(!c.adaptive_buffer && c.preemptive_refresh);
        assert_eq!(c.high_traffic_threshold, 50);
        for s in [d, a, c] {
            assert_eq!(s.validate(), Ok(()));
        }
    }

    #[test]
    fn validate_rejects_nonsense() {
        let s = RefreshStrategy {
            min_buffer: 10 * MINUTE,
            max_buffer: MINUTE,
            ..RefreshStrategy::default()
        };
        assert!(matches!(
            s.validate(),
            Err(StrategyError::MaxBelowMin { .. })
        ));
        let s = RefreshStrategy {
            preemptive_refresh: true,
            high_traffic_threshold: 0,
            ..RefreshStrategy::default()
        };
        assert_eq!(s.validate(), Err(StrategyError::ZeroHighTrafficThreshold));
    }

    #[test]
    fn whole_seconds_truncates_like_go() {
        assert_eq!(whole_seconds(2.999_999), Duration::from_secs(2));
        assert_eq!(whole_seconds(-1.0), Duration::ZERO);
        assert_eq!(whole_seconds(f64::NAN), Duration::ZERO);
    }
}
