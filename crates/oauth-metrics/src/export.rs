//! The Go export shapes as typed serde structs: the health summary (`GetHealthSummary`,
//! `ExportJSON`) and the per-credential counter maps (`ExportPrometheus`).

use std::collections::BTreeMap;
use std::time::Duration;

use oauth_core::{CredentialHealthInfo, CredentialId, UsageSnapshot};
use serde::{Deserialize, Serialize};

/// The Go health summary, with its JSON key names. Fields are declared in alphabetical order, so
/// [`export_json`] prints the keys in the order Go's `ExportJSON` did (it marshalled a map).
///
/// All figures come from the same [`CredentialHealthInfo`]s, so the totals always agree with the
/// per-credential entries. Build it with [`HealthSummary::from_infos`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthSummary {
    /// Per-credential reports, by id.
    pub credentials: BTreeMap<CredentialId, CredentialHealthInfo>,
    /// Credentials whose backoff or cooldown has not ended (`backoff_until` is set).
    pub credentials_in_backoff: usize,
    /// Credentials reported healthy.
    pub healthy_credentials: usize,
    /// Whether the pool's store is reachable now, for a store that can tell (a database);
    /// absent for the others, so the Go shape is unchanged for them. Set with
    /// [`with_store_connected`](Self::with_store_connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_connected: Option<bool>,
    /// Successes / requests over all credentials; 1.0 without requests.
    pub success_rate: f64,
    /// Credentials in the report.
    pub total_credentials: usize,
    /// Requests over all credentials.
    pub total_requests: u64,
    /// Credentials reported unhealthy.
    pub unhealthy_credentials: usize,
}

impl HealthSummary {
    /// Computes the totals from per-credential reports (a repeated id keeps its last report).
    ///
    /// The success rate is total successes / total requests, where each credential's successes
    /// are recovered exactly from its `success_rate * request_count` (both come from integer
    /// counts, so rounding the product gives the count back).
    pub fn from_infos(infos: impl IntoIterator<Item = CredentialHealthInfo>) -> Self {
        let credentials: BTreeMap<CredentialId, CredentialHealthInfo> =
            infos.into_iter().map(|i| (i.id.clone(), i)).collect();
        let healthy = credentials.values().filter(|i| i.is_healthy).count();
        let in_backoff = credentials
            .values()
            .filter(|i| i.backoff_until.is_some())
            .count();
        let total_requests: u64 = credentials.values().map(|i| i.request_count).sum();
        #[allow(clippy::cast_precision_loss)]
        let successes: f64 = credentials
            .values()
            .map(|i| (i.success_rate * i.request_count as f64).round())
            .sum();
        #[allow(clippy::cast_precision_loss)]
        let success_rate = if total_requests == 0 {
            1.0
        } else {
            successes / total_requests as f64
        };
        Self {
            credentials_in_backoff: in_backoff,
            healthy_credentials: healthy,
            store_connected: None,
            success_rate,
            total_credentials: credentials.len(),
            total_requests,
            unhealthy_credentials: credentials.len() - healthy,
            credentials,
        }
    }

    /// The summary with [`store_connected`](Self::store_connected) set.
    #[must_use]
    pub fn with_store_connected(mut self, connected: Option<bool>) -> Self {
        self.store_connected = connected;
        self
    }
}

/// The Go `ExportJSON`: the summary as pretty JSON, indented by two spaces like Go's
/// `json.MarshalIndent(v, "", "  ")`. Holds ids, counts and times, never a token.
///
/// # Errors
/// Only if serialization fails, which these types do not do in practice.
pub fn export_json(summary: &HealthSummary) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(summary)
}

/// The Go `ExportPrometheus` result: per-credential counters, keyed by id. JSON keys are the Go
/// field names (`RequestsTotal`, ...).
///
/// Differences from Go, deliberate: `RefreshesTotal` is the same successful-refresh count every
/// other report uses (Go mixed two sources), `RefreshFailuresTotal` is added, and the Go
/// `LatencyHistogram` (which held one value, the average) is `AverageLatency`, in nanoseconds in
/// JSON and present only for credentials with a non-zero average, as in Go. Real latency
/// histograms are the [`PrometheusRecorder`](crate::PrometheusRecorder)'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct PrometheusMetrics {
    /// Requests per credential.
    pub requests_total: BTreeMap<CredentialId, u64>,
    /// Successful requests per credential.
    pub success_total: BTreeMap<CredentialId, u64>,
    /// Failed requests per credential.
    pub errors_total: BTreeMap<CredentialId, u64>,
    /// Tokens consumed per credential.
    pub tokens_used_total: BTreeMap<CredentialId, u64>,
    /// Successful refreshes per credential.
    pub refreshes_total: BTreeMap<CredentialId, u64>,
    /// Failed refreshes per credential.
    pub refresh_failures_total: BTreeMap<CredentialId, u64>,
    /// Average request latency, for credentials where it is above zero.
    #[serde(with = "nanos_map")]
    pub average_latency: BTreeMap<CredentialId, Duration>,
}

impl PrometheusMetrics {
    /// Builds the maps from usage snapshots (every credential appears in every counter map).
    pub fn from_snapshots(snapshots: &BTreeMap<CredentialId, UsageSnapshot>) -> Self {
        let mut out = Self::default();
        for (id, s) in snapshots {
            out.requests_total.insert(id.clone(), s.request_count);
            out.success_total.insert(id.clone(), s.success_count);
            out.errors_total.insert(id.clone(), s.error_count);
            out.tokens_used_total.insert(id.clone(), s.tokens_used);
            out.refreshes_total.insert(id.clone(), s.refresh_count);
            out.refresh_failures_total
                .insert(id.clone(), s.refresh_failures);
            let avg = s.average_latency();
            if !avg.is_zero() {
                out.average_latency.insert(id.clone(), avg);
            }
        }
        out
    }
}

mod nanos_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use oauth_core::CredentialId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<CredentialId, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(
            map.iter()
                .map(|(k, d)| (k, u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))),
        )
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<CredentialId, Duration>, D::Error> {
        let raw = BTreeMap::<CredentialId, u64>::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|(k, n)| (k, Duration::from_nanos(n)))
            .collect())
    }
}
