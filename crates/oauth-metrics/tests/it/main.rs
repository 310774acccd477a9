//! Integration tests of oauth-metrics: the in-memory recorder against the Go vectors, the
//! Prometheus exposition parsed back (counters at zero, gauges read at scrape time, the
//! granularities), content negotiation, `promtool`, the export shapes, and agreement between the
//! views.

mod export;
mod memory;
#[cfg(feature = "prometheus")]
mod openmetrics;
#[cfg(feature = "prometheus")]
mod pool;
#[cfg(feature = "prometheus")]
mod prometheus;
#[cfg(feature = "prometheus")]
mod scrape;
mod usage_model;

use chrono::{DateTime, TimeZone, Utc};
use oauth_core::CredentialId;

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

pub(crate) fn id(s: &str) -> CredentialId {
    CredentialId::new(s).expect("valid id")
}
