//! Health, metrics, exports and alerts: every report reads the same sources, so they agree.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use oauth_core::{
    CredentialHealthInfo, CredentialId, HealthSnapshot, RotationFacts, UsageSnapshot,
};
use oauth_metrics::{HealthSummary, PrometheusMetrics};
use oauth_webhooks::{AlertInput, WebhookEvent, check_alerts};

use crate::manager::OAuthKeyManager;
use crate::pool::Slot;

impl OAuthKeyManager {
    /// The health of one credential (Go `GetCredentialHealth`, readable here).
    pub fn credential_health(&self, id: &str) -> Option<HealthSnapshot> {
        let slot = self.slot(id)?;
        Some(slot.health_snapshot(&self.settings().health, self.now()))
    }

    /// The Go `CredentialHealthInfo` of one credential.
    pub fn credential_health_info(&self, id: &str) -> Option<CredentialHealthInfo> {
        let slot = self.slot(id)?;
        Some(self.health_info(&slot))
    }

    fn health_info(&self, slot: &Slot) -> CredentialHealthInfo {
        let now = self.now();
        let health = slot.health_snapshot(&self.settings().health, now);
        let usage = slot.usage.snapshot(now);
        let facts = self.inner.rotation.with_tracker(|t| t.facts(&slot.id));
        CredentialHealthInfo::assemble(
            slot.id.clone(),
            &health,
            &usage,
            slot.credential().expires_at,
            RotationFacts {
                marked_for_rotation: facts.marked_for_rotation
                    || slot.marked.load(Ordering::Acquire),
                decommission_at: facts.decommission_at,
            },
        )
    }

    /// Usage counters of every credential ever recorded, including ids recorded through
    /// [`record_request`](Self::record_request) that are not in the pool (Go `GetAllMetrics`).
    pub fn all_metrics(&self) -> BTreeMap<CredentialId, UsageSnapshot> {
        self.inner.usage.snapshots(self.now())
    }

    /// Usage counters of one credential (Go `GetCredentialMetrics`).
    pub fn credential_metrics(&self, id: &str) -> Option<UsageSnapshot> {
        let id = CredentialId::new(id).ok()?;
        self.inner.usage.snapshot(&id, self.now())
    }

    /// The health summary of the pool (Go `GetHealthSummary`, typed; serializes to the Go JSON
    /// shape).
    pub fn health_summary(&self) -> HealthSummary {
        let pool = self.inner.selector.pool();
        HealthSummary::from_infos(pool.slots.iter().map(|s| self.health_info(s)))
    }

    /// The health summary as pretty JSON (Go `ExportJSON`). Holds no secret.
    ///
    /// # Errors
    /// Serialization errors (none are expected).
    pub fn export_json(&self) -> Result<String, serde_json::Error> {
        oauth_metrics::export_json(&self.health_summary())
    }

    /// Per-credential counters in the shape of the Go `ExportPrometheus` result. For a real
    /// Prometheus exposition, register a `PrometheusRecorder` with
    /// [`OAuthKeyManagerBuilder::metrics`](crate::OAuthKeyManagerBuilder::metrics).
    pub fn export_prometheus(&self) -> PrometheusMetrics {
        PrometheusMetrics::from_snapshots(&self.all_metrics())
    }

    /// Evaluates the alert rules (Go `CheckAlerts`), sends each alert through the notifier, and
    /// returns them in a deterministic order. Empty while monitoring is off.
    pub fn check_alerts(&self) -> Vec<WebhookEvent> {
        let settings = self.settings();
        let Some(config) = settings.monitoring.as_ref() else {
            return Vec::new();
        };
        let now = self.now();
        let pool = self.inner.selector.pool();
        let rows: Vec<(
            CredentialId,
            HealthSnapshot,
            UsageSnapshot,
            Option<chrono::DateTime<chrono::Utc>>,
        )> = pool
            .slots
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    s.health_snapshot(&settings.health, now),
                    s.usage.snapshot(now),
                    s.credential().expires_at,
                )
            })
            .collect();
        let inputs: Vec<AlertInput<'_>> = rows
            .iter()
            .map(|(id, health, usage, expires_at)| AlertInput {
                id,
                health,
                usage,
                expires_at: *expires_at,
            })
            .collect();
        let alerts = {
            let mut state = self
                .inner
                .alerts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            check_alerts(config, &inputs, &mut state, now)
        };
        for alert in &alerts {
            if config.wants(alert.event_type) {
                self.send_notification(alert.clone());
            }
        }
        alerts
    }
}
