//! Usage counters and the combined per-credential report: plain types the concern crates exchange.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::health::{CredentialState, HealthSnapshot};
use crate::id::CredentialId;

/// A consistent copy of one credential's usage counters (what the Go `CredentialMetrics` holds,
/// plus a recent window).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageSnapshot {
    /// Requests made.
    pub request_count: u64,
    /// Requests that succeeded.
    pub success_count: u64,
    /// Requests that failed.
    pub error_count: u64,
    /// Tokens consumed.
    pub tokens_used: u64,
    /// Sum of request latencies.
    #[serde(with = "nanos")]
    pub total_latency: Duration,
    /// The first request (not the time the pool was built).
    pub first_used: Option<DateTime<Utc>>,
    /// The latest request.
    pub last_used: Option<DateTime<Utc>>,
    /// Successful refreshes performed by this process.
    pub refresh_count: u64,
    /// Failed refreshes performed by this process.
    pub refresh_failures: u64,
    /// The latest successful refresh.
    pub last_refresh: Option<DateTime<Utc>>,
    /// Requests in the recent window.
    pub recent_requests: u64,
    /// Failures in the recent window.
    pub recent_failures: u64,
    /// Length of the recent window.
    #[serde(with = "nanos")]
    pub recent_window: Duration,
}

impl UsageSnapshot {
    /// Go `AverageLatency`: total latency / requests (zero without requests).
    pub fn average_latency(&self) -> Duration {
        u32::try_from(self.request_count)
            .ok()
            .filter(|n| *n > 0)
            .map_or_else(
                || {
                    if self.request_count == 0 {
                        Duration::ZERO
                    } else {
                        #[allow(clippy::cast_precision_loss)]
                        let n = self.request_count as f64;
                        Duration::from_secs_f64(self.total_latency.as_secs_f64() / n)
                    }
                },
                |n| self.total_latency / n,
            )
    }

    /// Go `GetSuccessRate`: successes / requests, 1.0 with no requests.
    pub fn success_rate(&self) -> f64 {
        if self.request_count == 0 {
            1.0
        } else {
            #[allow(clippy::cast_precision_loss)]
            let r = self.success_count as f64 / self.request_count as f64;
            r
        }
    }

    /// Requests per hour since the first request, continuous in time: requests / max(hours since
    /// first use, 1). During the first hour this is the count so far (the Go version divided by the
    /// elapsed time after 36 s, jumping from 100 to 10,000 for 100 requests).
    pub fn requests_per_hour(&self, now: DateTime<Utc>) -> f64 {
        let Some(first) = self.first_used else {
            return 0.0;
        };
        if self.request_count == 0 {
            return 0.0;
        }
        let hours = (now - first)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
            / 3600.0;
        #[allow(clippy::cast_precision_loss)]
        let n = self.request_count as f64;
        n / hours.max(1.0)
    }

    /// Failures / requests in the recent window (0.0 without requests).
    pub fn recent_failure_rate(&self) -> f64 {
        if self.recent_requests == 0 {
            0.0
        } else {
            #[allow(clippy::cast_precision_loss)]
            let r = self.recent_failures as f64 / self.recent_requests as f64;
            r
        }
    }
}

/// The Go `CredentialHealthInfo` (same JSON names), extended with the state, cooldown and
/// re-authorization fields. Holds no secret material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CredentialHealthInfo {
    /// Credential id.
    pub id: CredentialId,
    /// Not failing past thresholds, not needing re-authorization, not disabled.
    pub is_healthy: bool,
    /// Can take traffic now.
    pub is_available: bool,
    /// Consecutive request failures.
    pub failure_count: u32,
    /// Successes / requests (1.0 with none).
    pub success_rate: f64,
    /// Requests made.
    pub request_count: u64,
    /// Tokens consumed.
    pub tokens_used: u64,
    /// Average latency in nanoseconds (as the Go JSON).
    pub average_latency: u64,
    /// Latest request.
    pub last_used: Option<DateTime<Utc>>,
    /// Latest success.
    pub last_success: Option<DateTime<Utc>>,
    /// Latest failure.
    pub last_failure: Option<DateTime<Utc>>,
    /// End of the latest backoff or cooldown, when in the future (omitted otherwise; Go's `omitempty`
    /// did not work on times).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub backoff_until: Option<DateTime<Utc>>,
    /// Successful refreshes (the same figure every report uses).
    pub refresh_count: u64,
    /// Latest successful refresh.
    pub last_refresh: Option<DateTime<Utc>>,
    /// Consecutive refresh failures.
    pub refresh_fail_count: u32,
    /// Access token expiry.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Being replaced by a rotation.
    pub marked_for_rotation: bool,
    /// End of its rotation grace period.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decommission_at: Option<DateTime<Utc>>,
    /// What the credential is doing.
    pub state: CredentialState,
    /// Needs a human to re-authorize it.
    pub needs_reauthorization: bool,
    /// Rate-limit cooldown end, when in the future.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cooldown_until: Option<DateTime<Utc>>,
}

/// Rotation facts that [`CredentialHealthInfo`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationFacts {
    /// Being replaced.
    pub marked_for_rotation: bool,
    /// End of the grace period.
    pub decommission_at: Option<DateTime<Utc>>,
}

impl CredentialHealthInfo {
    /// Assembles the report from the health, usage and rotation facts of one credential.
    pub fn assemble(
        id: CredentialId,
        health: &HealthSnapshot,
        usage: &UsageSnapshot,
        expires_at: Option<DateTime<Utc>>,
        rotation: RotationFacts,
    ) -> Self {
        Self {
            id,
            is_healthy: health.is_healthy,
            is_available: health.is_available,
            failure_count: health.failure_count,
            success_rate: usage.success_rate(),
            request_count: usage.request_count,
            tokens_used: usage.tokens_used,
            average_latency: u64::try_from(usage.average_latency().as_nanos()).unwrap_or(u64::MAX),
            last_used: usage.last_used,
            last_success: health.last_success,
            last_failure: health.last_failure,
            backoff_until: health.backoff_until,
            refresh_count: usage.refresh_count,
            last_refresh: health.last_refresh.or(usage.last_refresh),
            refresh_fail_count: health.refresh_fail_count,
            expires_at,
            marked_for_rotation: rotation.marked_for_rotation,
            decommission_at: rotation.decommission_at,
            state: health.state,
            needs_reauthorization: health.needs_reauthorization,
            cooldown_until: health.cooldown_until,
        }
    }
}

mod nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_nanos)
    }
}
