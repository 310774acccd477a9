//! Every state change the pool reports, as one enum.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::failure::FailureKind;
use crate::health::HealthChange;
use crate::id::CredentialId;

/// Something that happened to a credential or the pool, at a time.
///
/// Events carry credential ids, times, counts and classified reasons: never a token, a secret, or a
/// raw response body. They serialize with a `type` tag (`{"type":"refreshed","at":...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// An event of `kind` at `at`.
    pub const fn new(at: DateTime<Utc>, kind: EventKind) -> Self {
        Self { at, kind }
    }

    /// The event for a health transition of `credential`.
    pub fn from_health(credential: CredentialId, change: HealthChange, at: DateTime<Utc>) -> Self {
        let kind = match change {
            HealthChange::BackedOff {
                until,
                consecutive_failures,
            } => EventKind::BackedOff {
                credential,
                until,
                consecutive_failures,
            },
            HealthChange::CooledDown { until } => EventKind::CooledDown { credential, until },
            HealthChange::BecameUnhealthy => EventKind::BecameUnhealthy { credential },
            HealthChange::NeedsReauthorization { access_valid_until } => {
                EventKind::NeedsReauthorization {
                    credential,
                    access_valid_until,
                }
            }
            HealthChange::Misconfigured { access_valid_until } => EventKind::Misconfigured {
                credential,
                access_valid_until,
            },
            HealthChange::Recovered => EventKind::Recovered { credential },
        };
        Self { at, kind }
    }

    /// The credential concerned, if the event is about one.
    pub fn credential(&self) -> Option<&CredentialId> {
        self.kind.credential()
    }
}

/// What happened. `#[non_exhaustive]`: new kinds will be added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A token refresh succeeded.
    Refreshed {
        /// The credential.
        credential: CredentialId,
        /// The new access token's expiry.
        expires_at: Option<DateTime<Utc>>,
        /// Whether the provider rotated the refresh token.
        refresh_token_rotated: bool,
    },
    /// A token refresh failed.
    RefreshFailed {
        /// The credential.
        credential: CredentialId,
        /// What the failure means.
        reason: FailureKind,
        /// Consecutive refresh failures so far.
        consecutive_failures: u32,
    },
    /// A failure started a backoff.
    BackedOff {
        /// The credential.
        credential: CredentialId,
        /// Backoff end.
        until: DateTime<Utc>,
        /// Consecutive failures so far.
        consecutive_failures: u32,
    },
    /// A rate limit started a cooldown.
    CooledDown {
        /// The credential.
        credential: CredentialId,
        /// Cooldown end.
        until: DateTime<Utc>,
    },
    /// The credential crossed a failure threshold.
    BecameUnhealthy {
        /// The credential.
        credential: CredentialId,
    },
    /// The credential succeeded again after failures.
    Recovered {
        /// The credential.
        credential: CredentialId,
    },
    /// The grant is dead: a human must re-authorize the credential.
    NeedsReauthorization {
        /// The credential.
        credential: CredentialId,
        /// Until when its access token still works, if at all.
        access_valid_until: Option<DateTime<Utc>>,
    },
    /// An operator disabled the credential.
    Disabled {
        /// The credential.
        credential: CredentialId,
    },
    /// An operator enabled the credential.
    Enabled {
        /// The credential.
        credential: CredentialId,
    },
    /// The credential is older than the rotation interval.
    RotationDue {
        /// The credential.
        credential: CredentialId,
        /// Its age.
        #[serde(with = "secs")]
        age: Duration,
    },
    /// Rotation started: `replacement` is preferred, `credential` serves until `decommission_at`.
    RotationStarted {
        /// The credential being replaced.
        credential: CredentialId,
        /// Its replacement.
        replacement: CredentialId,
        /// End of the grace period.
        decommission_at: DateTime<Utc>,
    },
    /// The credential was removed after its grace period.
    Decommissioned {
        /// The credential.
        credential: CredentialId,
    },
    /// A decommission was refused (by the hook) and the credential stays.
    DecommissionFailed {
        /// The credential.
        credential: CredentialId,
        /// Why (the hook's own message; hooks must not put secrets in it).
        reason: String,
    },
    /// A rotation hook failed; what it guards went ahead (an `on_rotation_needed` failure does not
    /// undo the mark).
    RotationHookFailed {
        /// The credential.
        credential: CredentialId,
        /// The hook (`on_rotation_needed`).
        hook: String,
        /// Why (the hook's own message; hooks must not put secrets in it).
        reason: String,
    },
    /// The access token expires within the warning window.
    ExpiryWarning {
        /// The credential.
        credential: CredentialId,
        /// Expiry.
        expires_at: DateTime<Utc>,
    },
    /// The access token has expired and was not refreshed.
    Expired {
        /// The credential.
        credential: CredentialId,
        /// Expiry.
        expired_at: DateTime<Utc>,
    },
    /// The recent failure rate crossed the alert threshold.
    HighFailureRate {
        /// The credential.
        credential: CredentialId,
        /// Failures / requests in the window.
        failure_rate: f64,
        /// Requests in the window.
        requests: u64,
        /// Failures in the window.
        failures: u64,
    },
    /// A refreshed credential could not be persisted; it will be retried. Until it is, a restart
    /// would lose the rotated refresh token.
    PersistenceFailed {
        /// The credential.
        credential: CredentialId,
        /// The store's error, classified (never a token).
        reason: String,
        /// Attempts so far.
        attempts: u32,
    },
    /// A credential changed outside this process (another process refreshed it, a CLI re-authorized
    /// it) and was adopted.
    ExternallyUpdated {
        /// The credential.
        credential: CredentialId,
    },
    /// The credential's OAuth client configuration is wrong (`invalid_client`, a missing client
    /// id): fix the configuration (no sign-in is needed).
    Misconfigured {
        /// The credential.
        credential: CredentialId,
        /// Until when its access token still works, if at all.
        access_valid_until: Option<DateTime<Utc>>,
    },
    /// A token response had oddities that were tolerated (its tokens were kept).
    TokenResponseQuirk {
        /// The credential.
        credential: CredentialId,
        /// What was odd.
        quirk: crate::tokens::TokenQuirk,
    },
    /// A credential's store could not be used; the pool kept serving and refreshing in memory.
    StoreUnavailable {
        /// The credential.
        credential: CredentialId,
        /// The store's error, classified (never a token).
        reason: String,
    },
    /// The pool's store became unreachable (its database connection was lost), as the store
    /// reports it (`CredentialStore::connection_status` in oauth-store). The pool keeps serving
    /// the tokens it holds; a pool that fails closed on store outages (the default for stores
    /// shared between processes) refreshes nothing until the store is back, so credentials drop
    /// out as their tokens expire.
    StoreDisconnected {
        /// The provider of the pool.
        provider: String,
    },
    /// The store is reachable again after a [`StoreDisconnected`](Self::StoreDisconnected).
    StoreReconnected {
        /// The provider of the pool.
        provider: String,
        /// When the outage was reported (the `StoreDisconnected` event's time).
        disconnected_at: DateTime<Utc>,
    },
    /// No credential could serve a request.
    PoolExhausted {
        /// The provider.
        provider: String,
        /// When the first credential will be available again, if ever.
        next_available_at: Option<DateTime<Utc>>,
    },
}

impl EventKind {
    /// The credential concerned, if the event is about one.
    pub fn credential(&self) -> Option<&CredentialId> {
        match self {
            Self::Refreshed { credential, .. }
            | Self::RefreshFailed { credential, .. }
            | Self::BackedOff { credential, .. }
            | Self::CooledDown { credential, .. }
            | Self::BecameUnhealthy { credential }
            | Self::Recovered { credential }
            | Self::NeedsReauthorization { credential, .. }
            | Self::Disabled { credential }
            | Self::Enabled { credential }
            | Self::RotationDue { credential, .. }
            | Self::RotationStarted { credential, .. }
            | Self::Decommissioned { credential }
            | Self::DecommissionFailed { credential, .. }
            | Self::RotationHookFailed { credential, .. }
            | Self::ExpiryWarning { credential, .. }
            | Self::Expired { credential, .. }
            | Self::HighFailureRate { credential, .. }
            | Self::PersistenceFailed { credential, .. }
            | Self::ExternallyUpdated { credential }
            | Self::Misconfigured { credential, .. }
            | Self::TokenResponseQuirk { credential, .. }
            | Self::StoreUnavailable { credential, .. } => Some(credential),
            Self::PoolExhausted { .. }
            | Self::StoreDisconnected { .. }
            | Self::StoreReconnected { .. } => None,
        }
    }

    /// The snake_case name of the kind (the serialized `type`).
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Refreshed { .. } => "refreshed",
            Self::RefreshFailed { .. } => "refresh_failed",
            Self::BackedOff { .. } => "backed_off",
            Self::CooledDown { .. } => "cooled_down",
            Self::BecameUnhealthy { .. } => "became_unhealthy",
            Self::Recovered { .. } => "recovered",
            Self::NeedsReauthorization { .. } => "needs_reauthorization",
            Self::Disabled { .. } => "disabled",
            Self::Enabled { .. } => "enabled",
            Self::RotationDue { .. } => "rotation_due",
            Self::RotationStarted { .. } => "rotation_started",
            Self::Decommissioned { .. } => "decommissioned",
            Self::DecommissionFailed { .. } => "decommission_failed",
            Self::RotationHookFailed { .. } => "rotation_hook_failed",
            Self::ExpiryWarning { .. } => "expiry_warning",
            Self::Expired { .. } => "expired",
            Self::HighFailureRate { .. } => "high_failure_rate",
            Self::PersistenceFailed { .. } => "persistence_failed",
            Self::ExternallyUpdated { .. } => "externally_updated",
            Self::Misconfigured { .. } => "misconfigured",
            Self::TokenResponseQuirk { .. } => "token_response_quirk",
            Self::StoreUnavailable { .. } => "store_unavailable",
            Self::PoolExhausted { .. } => "pool_exhausted",
            Self::StoreDisconnected { .. } => "store_disconnected",
            Self::StoreReconnected { .. } => "store_reconnected",
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn store_outage_events_are_pool_wide_and_serialize_with_their_names() {
        let at = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 5)
            .single()
            .expect("date");
        let down_at = at - chrono::TimeDelta::seconds(5);
        let down = Event::new(
            down_at,
            EventKind::StoreDisconnected {
                provider: "gemini".into(),
            },
        );
        let up = Event::new(
            at,
            EventKind::StoreReconnected {
                provider: "gemini".into(),
                disconnected_at: down_at,
            },
        );
        for (event, name) in [(&down, "store_disconnected"), (&up, "store_reconnected")] {
            assert_eq!(event.kind.name(), name);
            assert!(event.credential().is_none());
            let v = serde_json::to_value(event).expect("serializes");
            assert_eq!(
                (v["type"].as_str(), v["provider"].as_str()),
                (Some(name), Some("gemini"))
            );
            let back: Event = serde_json::from_value(v).expect("round trip");
            assert_eq!(&back, event);
        }
        let v = serde_json::to_value(&up).expect("serializes");
        assert_eq!(v["disconnected_at"], "2026-01-01T00:00:00Z");
    }
}
