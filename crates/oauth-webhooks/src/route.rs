//! What an oauth-core [`Event`] becomes: the one place that knows which `alert_on_*` switch gates
//! which event, and which events the `webhook_events` filter lets through.

use oauth_core::{Event, EventKind};

use crate::config::MonitoringConfig;
use crate::event::WebhookEvent;

/// The `alert_on_*` switch that gates an event kind, by name, or `None` for kinds that only the
/// `webhook_events` filter decides.
///
/// | event | switch |
/// |---|---|
/// | `RefreshFailed` | `alert_on_refresh_failure` |
/// | `NeedsReauthorization` | `alert_on_needs_reauthorization` |
/// | `Misconfigured` | `alert_on_misconfigured` |
/// | `PoolExhausted` | `alert_on_pool_exhausted` |
/// | `HighFailureRate` | `alert_on_high_failure_rate` |
/// | `ExpiryWarning`, `Expired` | `alert_on_expiry_soon` |
pub fn gating_switch(kind: &EventKind) -> Option<&'static str> {
    Some(match kind {
        EventKind::RefreshFailed { .. } => "alert_on_refresh_failure",
        EventKind::NeedsReauthorization { .. } => "alert_on_needs_reauthorization",
        EventKind::Misconfigured { .. } => "alert_on_misconfigured",
        EventKind::PoolExhausted { .. } => "alert_on_pool_exhausted",
        EventKind::HighFailureRate { .. } => "alert_on_high_failure_rate",
        EventKind::ExpiryWarning { .. } | EventKind::Expired { .. } => "alert_on_expiry_soon",
        _ => return None,
    })
}

/// Is the switch gating `kind` on in `config` (true for kinds no switch gates)?
fn switched_on(config: &MonitoringConfig, kind: &EventKind) -> bool {
    match kind {
        EventKind::RefreshFailed { .. } => config.alert_on_refresh_failure,
        EventKind::NeedsReauthorization { .. } => config.alert_on_needs_reauthorization,
        EventKind::Misconfigured { .. } => config.alert_on_misconfigured,
        EventKind::PoolExhausted { .. } => config.alert_on_pool_exhausted,
        EventKind::HighFailureRate { .. } => config.alert_on_high_failure_rate,
        EventKind::ExpiryWarning { .. } | EventKind::Expired { .. } => config.alert_on_expiry_soon,
        _ => true,
    }
}

/// The webhook an event becomes under `config`, or `None` when it becomes none: its kind is
/// not worth a webhook ([`WebhookEvent::from_event`]), its `alert_on_*` switch
/// ([`gating_switch`]) is off, or its type is not in `webhook_events`.
///
/// Routine `refresh` events pass only when `webhook_events` lists
/// [`Refresh`](crate::WebhookEventType::Refresh), which [`MonitoringConfig::default`] does not
/// and [`MonitoringConfig::go_default`] does.
///
/// ```
/// use chrono::Utc;
/// use oauth_core::{CredentialId, Event, EventKind, FailureKind};
/// use oauth_webhooks::{MonitoringConfig, WebhookEventType, route_event};
///
/// let id = CredentialId::new("team")?;
/// let failed = Event::new(Utc::now(), EventKind::RefreshFailed {
///     credential: id.clone(),
///     reason: FailureKind::Transient,
///     consecutive_failures: 1,
/// });
/// let config = MonitoringConfig::default();
/// let hook = route_event(&config, &failed).expect("refresh failures alert by default");
/// assert_eq!(hook.event_type, WebhookEventType::Failure);
///
/// let off = MonitoringConfig { alert_on_refresh_failure: false, ..MonitoringConfig::default() };
/// assert!(route_event(&off, &failed).is_none());
///
/// let refreshed = Event::new(Utc::now(), EventKind::Refreshed {
///     credential: id,
///     expires_at: None,
///     refresh_token_rotated: false,
/// });
/// assert!(route_event(&MonitoringConfig::default(), &refreshed).is_none(), "opt-in");
/// assert!(route_event(&MonitoringConfig::go_default(), &refreshed).is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn route_event(config: &MonitoringConfig, event: &Event) -> Option<WebhookEvent> {
    if !switched_on(config, &event.kind) {
        return None;
    }
    WebhookEvent::from_event(event).filter(|w| config.wants(w.event_type))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use oauth_core::{CredentialId, FailureKind};

    use super::*;

    fn id() -> CredentialId {
        CredentialId::new("c").expect("valid id")
    }

    /// Every gated kind with its switch turned off routes to nothing, and with it on routes to a
    /// webhook; the switch names match the fields they read.
    #[test]
    fn each_switch_gates_its_kinds() {
        let now = Utc::now();
        type Off = fn(&mut MonitoringConfig);
        let cases: [(EventKind, Off); 7] = [
            (
                EventKind::Misconfigured {
                    credential: id(),
                    access_valid_until: None,
                },
                |c| c.alert_on_misconfigured = false,
            ),
            (
                EventKind::RefreshFailed {
                    credential: id(),
                    reason: FailureKind::Transient,
                    consecutive_failures: 1,
                },
                |c| c.alert_on_refresh_failure = false,
            ),
            (
                EventKind::NeedsReauthorization {
                    credential: id(),
                    access_valid_until: None,
                },
                |c| c.alert_on_needs_reauthorization = false,
            ),
            (
                EventKind::PoolExhausted {
                    provider: "p".into(),
                    next_available_at: None,
                },
                |c| c.alert_on_pool_exhausted = false,
            ),
            (
                EventKind::HighFailureRate {
                    credential: id(),
                    failure_rate: 0.9,
                    requests: 10,
                    failures: 9,
                },
                |c| c.alert_on_high_failure_rate = false,
            ),
            (
                EventKind::ExpiryWarning {
                    credential: id(),
                    expires_at: now,
                },
                |c| c.alert_on_expiry_soon = false,
            ),
            (
                EventKind::Expired {
                    credential: id(),
                    expired_at: now,
                },
                |c| c.alert_on_expiry_soon = false,
            ),
        ];
        for (kind, turn_off) in cases {
            let event = Event::new(now, kind);
            let on = MonitoringConfig::default();
            assert!(route_event(&on, &event).is_some(), "{event:?}");
            let mut off = MonitoringConfig::default();
            turn_off(&mut off);
            assert!(route_event(&off, &event).is_none(), "{event:?}");
            assert!(gating_switch(&event.kind).is_some());
        }
    }

    #[test]
    fn the_filter_decides_the_rest() {
        let now = Utc::now();
        let due = Event::new(
            now,
            EventKind::RotationDue {
                credential: id(),
                age: std::time::Duration::from_secs(1),
            },
        );
        assert!(gating_switch(&due.kind).is_none());
        assert!(route_event(&MonitoringConfig::default(), &due).is_some());
        let mut no_rotation = MonitoringConfig::default();
        no_rotation
            .webhook_events
            .remove(&crate::WebhookEventType::Rotation);
        assert!(route_event(&no_rotation, &due).is_none());
        // Noise never becomes a webhook, whatever the filter.
        let disabled = Event::new(now, EventKind::Disabled { credential: id() });
        let all = MonitoringConfig {
            webhook_events: crate::WebhookEventType::ALL.into_iter().collect(),
            ..MonitoringConfig::default()
        };
        assert!(route_event(&all, &disabled).is_none());
    }
}
