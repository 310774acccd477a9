//! Shared helpers: secrets, a verifying receiver, fast retry schedules.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use oauth_testkit::webhook_receiver::{VerifyFn, WebhookReceiver};
use oauth_webhooks::{
    DEFAULT_TOLERANCE, DeliveryStats, MonitoringConfig, RetrySchedule, WebhookEvent,
    WebhookEventType, WebhookNotifier, WebhookSecret, verify,
};
use serde_json::Map;

/// The Standard Webhooks specification's example secret.
pub(crate) const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Another valid secret (32 bytes of 0x2a).
pub(crate) const OTHER_SECRET: &str = "whsec_KioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

pub(crate) fn secret(text: &str) -> WebhookSecret {
    WebhookSecret::new(text).expect("valid test secret")
}

/// A verify function for the receiver: `oauth_webhooks::verify` with `secrets`, the wall clock and
/// the default 5-minute tolerance.
pub(crate) fn verifier(secrets: Vec<WebhookSecret>) -> VerifyFn {
    Arc::new(move |headers, body| {
        verify(&secrets, headers, body, Utc::now(), DEFAULT_TOLERANCE).map_err(|e| e.to_string())
    })
}

pub(crate) async fn receiver(secrets: Vec<WebhookSecret>) -> Arc<WebhookReceiver> {
    Arc::new(
        WebhookReceiver::start(verifier(secrets))
            .await
            .expect("receiver binds 127.0.0.1"),
    )
}

/// A schedule for tests: 10 ms doubling up to 50 ms, no jitter, `attempts` attempts.
pub(crate) fn fast_retry(attempts: u32) -> RetrySchedule {
    RetrySchedule {
        max_attempts: attempts,
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        jitter: 0.0,
    }
}

pub(crate) fn config(url: String, secrets: Vec<WebhookSecret>) -> MonitoringConfig {
    MonitoringConfig {
        webhook_url: Some(url),
        signing_secrets: secrets,
        timeout: Duration::from_secs(5),
        retry: fast_retry(5),
        ..MonitoringConfig::default()
    }
}

pub(crate) fn event(n: usize) -> WebhookEvent {
    WebhookEvent::new(
        WebhookEventType::Failure,
        None,
        Utc::now(),
        format!("event {n}"),
        Map::new(),
    )
}

/// Waits (real time, bounded) until `done(stats)` holds; returns the last stats.
pub(crate) async fn wait_stats(
    notifier: &WebhookNotifier,
    done: impl Fn(&DeliveryStats) -> bool,
) -> DeliveryStats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = notifier.stats();
        if done(&stats) || tokio::time::Instant::now() >= deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Lets spawned tasks run (yielding, never sleeping) until `done` holds, at most 10,000 times.
pub(crate) async fn settle_until(done: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
}
