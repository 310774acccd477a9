//! Health, metrics, exports and alerts: every report reads the same sources, so they agree.
//! Health instants live on the monotonic health timeline; reports show them as wall time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use oauth_core::{
    CredentialHealthInfo, CredentialId, HealthChange, HealthSnapshot, RotationFacts, UsageSnapshot,
};
use oauth_metrics::{GaugeRow, GaugeSource, HealthSummary, PrometheusMetrics};
use oauth_webhooks::{AlertFacts, WebhookEvent};

use crate::clock::{Timeline, shift};
use crate::manager::OAuthKeyManager;
use crate::selection::Slot;

/// A health change's instants as wall time.
pub(crate) fn change_to_wall(change: HealthChange, time: &Timeline) -> HealthChange {
    let skew = time.skew();
    if skew.is_zero() {
        return change;
    }
    let back = |t: DateTime<Utc>| shift(t, -skew);
    match change {
        HealthChange::BackedOff {
            until,
            consecutive_failures,
        } => HealthChange::BackedOff {
            until: back(until),
            consecutive_failures,
        },
        HealthChange::CooledDown { until } => HealthChange::CooledDown { until: back(until) },
        HealthChange::NeedsReauthorization { access_valid_until } => {
            HealthChange::NeedsReauthorization {
                access_valid_until: access_valid_until.map(back),
            }
        }
        HealthChange::Misconfigured { access_valid_until } => HealthChange::Misconfigured {
            access_valid_until: access_valid_until.map(back),
        },
        other => other,
    }
}

/// A snapshot taken on the health timeline, its instants moved to wall time.
fn snapshot_to_wall(mut snap: HealthSnapshot, time: &Timeline) -> HealthSnapshot {
    let skew = time.skew();
    if skew.is_zero() {
        return snap;
    }
    let back = |t: &mut Option<DateTime<Utc>>| *t = t.map(|t| shift(t, -skew));
    back(&mut snap.available_at);
    back(&mut snap.backoff_until);
    back(&mut snap.request_backoff_until);
    back(&mut snap.refresh_backoff_until);
    back(&mut snap.cooldown_until);
    back(&mut snap.needs_reauthorization_since);
    back(&mut snap.access_valid_until);
    back(&mut snap.last_failure);
    back(&mut snap.last_refresh);
    back(&mut snap.last_success);
    snap
}

impl OAuthKeyManager {
    /// One slot's health now, as wall time.
    pub(crate) fn slot_health(&self, slot: &Slot) -> HealthSnapshot {
        let time = &self.inner.time;
        let snap = slot.health_snapshot(&self.settings().health, time.health());
        snapshot_to_wall(snap, time)
    }

    /// The health of one credential (Go `GetCredentialHealth`, readable here).
    pub fn credential_health(&self, id: &str) -> Option<HealthSnapshot> {
        let slot = self.slot(id)?;
        Some(self.slot_health(&slot))
    }

    /// The Go `CredentialHealthInfo` of one credential.
    pub fn credential_health_info(&self, id: &str) -> Option<CredentialHealthInfo> {
        let slot = self.slot(id)?;
        Some(self.health_info(&slot))
    }

    fn health_info(&self, slot: &Slot) -> CredentialHealthInfo {
        let now = self.now();
        let health = self.slot_health(slot);
        let usage = slot.usage().snapshot(now);
        let facts = self.inner.rotation.with_tracker(|t| t.facts(&slot.id));
        CredentialHealthInfo::assemble(
            slot.id.clone(),
            &health,
            &usage,
            slot.credential().expires_at,
            RotationFacts {
                marked_for_rotation: facts.marked_for_rotation,
                decommission_at: facts.decommission_at,
            },
        )
    }

    /// Usage counters of every credential ever recorded, including ids recorded through
    /// [`record_request`](Self::record_request) that are not in the pool (Go `GetAllMetrics`).
    pub fn all_metrics(&self) -> BTreeMap<CredentialId, UsageSnapshot> {
        self.inner.telemetry.usage().snapshots(self.now())
    }

    /// Usage counters of one credential (Go `GetCredentialMetrics`).
    pub fn credential_metrics(&self, id: &str) -> Option<UsageSnapshot> {
        let id = CredentialId::new(id).ok()?;
        self.inner.telemetry.usage().snapshot(&id, self.now())
    }

    /// The health summary of the pool (Go `GetHealthSummary`, typed; serializes to the Go JSON
    /// shape).
    pub fn health_summary(&self) -> HealthSummary {
        let slots = self.inner.selection.slots();
        HealthSummary::from_infos(slots.iter().map(|s| self.health_info(s)))
            .with_store_connected(self.store_connected())
    }

    /// Whether the pool's store is reachable now, for a store that can tell (the PostgreSQL
    /// store follows its connection); `None` for the others. Also in
    /// [`health_summary`](Self::health_summary) (`store_connected`) and, through the gauge
    /// source, the `store_connected` gauge. While it is `false` the pool serves the tokens it
    /// holds and, failing closed, refreshes nothing.
    pub fn store_connected(&self) -> Option<bool> {
        self.inner.refreshing.store_connected()
    }

    /// The health summary as pretty JSON (Go `ExportJSON`). Holds no secret.
    ///
    /// # Errors
    /// Serialization errors (none are expected).
    pub fn export_json(&self) -> Result<String, serde_json::Error> {
        oauth_metrics::export_json(&self.health_summary())
    }

    /// Per-credential counters **in the shape of the Go `ExportPrometheus` result** (a JSON-able
    /// struct, not an exposition). For a real Prometheus `/metrics`, register a
    /// `PrometheusRecorder` with [`OAuthKeyManagerBuilder::metrics`](crate::OAuthKeyManagerBuilder::metrics).
    pub fn export_prometheus(&self) -> PrometheusMetrics {
        PrometheusMetrics::from_snapshots(&self.all_metrics())
    }

    /// Evaluates the alert rules (Go `CheckAlerts`) and returns the alerts in a deterministic
    /// order. **Like Go's, it also sends them**: each alert the monitoring configuration's
    /// `webhook_events` wants is delivered. Empty while monitoring is off.
    pub fn check_alerts(&self) -> Vec<WebhookEvent> {
        let monitor = self.inner.telemetry.monitor();
        if monitor.config().is_none() {
            return Vec::new();
        }
        let now = self.now();
        let refreshable = self.inner.refreshing.is_configured();
        let rows: Vec<(CredentialId, HealthSnapshot, UsageSnapshot, Slot2)> = self
            .inner
            .selection
            .slots()
            .iter()
            .map(|s| {
                let cred = s.credential();
                (
                    s.id.clone(),
                    self.slot_health(s),
                    s.usage().snapshot(now),
                    Slot2 {
                        expires_at: cred.expires_at,
                        refresh_expires_at: cred.refresh_token_expires_at,
                        refreshable: refreshable && cred.refresh_token.is_some(),
                    },
                )
            })
            .collect();
        let inputs: Vec<AlertFacts<'_>> = rows
            .iter()
            .map(|(id, health, usage, t)| {
                AlertFacts::new(id, health, usage)
                    .with_access_token_expiry(t.expires_at)
                    .with_refresh_token_expiry(t.refresh_expires_at)
                    .with_refreshable(t.refreshable)
            })
            .collect();
        monitor.check_alerts(&inputs, now)
    }

    /// The scrape-time view of the pool's gauges (what a `PrometheusRecorder` reads when scraped:
    /// state, token expiry, cooldown left, computed at that moment). The pool hands it to its
    /// recorder when it is built; a recorder keeps only a weak reference.
    pub fn gauge_source(&self) -> std::sync::Arc<dyn GaugeSource> {
        std::sync::Arc::new(PoolGauges(std::sync::Arc::downgrade(&self.inner)))
    }
}

/// What the alert rules need of a credential's tokens.
struct Slot2 {
    expires_at: Option<DateTime<Utc>>,
    refresh_expires_at: Option<DateTime<Utc>>,
    refreshable: bool,
}

/// The pool as a [`GaugeSource`]: every gauge is read from the pool when scraped. Weak, so the
/// recorder it is attached to does not keep the pool alive.
struct PoolGauges(std::sync::Weak<crate::manager::Inner>);

impl std::fmt::Debug for PoolGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolGauges").finish_non_exhaustive()
    }
}

impl GaugeSource for PoolGauges {
    fn visit(&self, f: &mut dyn FnMut(GaugeRow<'_>)) {
        let Some(inner) = self.0.upgrade() else {
            return; // the pool is gone: no gauges
        };
        let manager = OAuthKeyManager { inner };
        let now = manager.now();
        for slot in manager.inner.selection.slots().iter() {
            let health = manager.slot_health(slot);
            let expires_at = slot.credential().expires_at;
            f(GaugeRow::from_health(&slot.id, &health, expires_at, now));
        }
    }

    fn store_connected(&self) -> Option<bool> {
        self.0.upgrade()?.refreshing.store_connected()
    }
}
