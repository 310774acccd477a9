//! `Monitor` against real receivers on 127.0.0.1: webhooks from the monitoring configuration, and
//! every part of it changed at run time (URL, secrets, filter, retries, timeout).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use oauth_core::{CredentialId, Event, EventKind, FailureKind};
use oauth_testkit::webhook_receiver::{Fault, VerifyFn, WebhookReceiver};
use oauth_webhooks::{
    DEFAULT_TOLERANCE, DeliveryStats, DeliveryStatus, HEADER_SIGNATURE, MemoryNotifier, Monitor,
    MonitoringConfig, Notifier, WebhookEventType, WebhookNotifier, WebhookSecret, verify,
};

use crate::support::{OTHER_SECRET, SPEC_SECRET, config, fast_retry, receiver, secret};

const WAIT: Duration = Duration::from_secs(10);

fn id() -> CredentialId {
    CredentialId::new("team").expect("valid id")
}

fn refresh_failed(n: u32) -> Event {
    Event::new(
        Utc::now(),
        EventKind::RefreshFailed {
            credential: id(),
            reason: FailureKind::Transient,
            consecutive_failures: n,
        },
    )
}

fn refreshed() -> Event {
    Event::new(
        Utc::now(),
        EventKind::Refreshed {
            credential: id(),
            expires_at: Some(Utc::now() + chrono::TimeDelta::hours(1)),
            refresh_token_rotated: true,
        },
    )
}

fn stats(monitor: &Monitor) -> DeliveryStats {
    monitor.delivery_stats().expect("the built-in notifier")
}

/// Waits (real time, bounded) until `done(stats)` holds.
async fn wait_for(monitor: &Monitor, done: impl Fn(&DeliveryStats) -> bool) -> DeliveryStats {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = stats(monitor);
        if done(&s) || tokio::time::Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn webhook_ids(rx: &WebhookReceiver) -> Vec<String> {
    rx.requests()
        .iter()
        .filter_map(|r| r.webhook_id().map(str::to_owned))
        .collect()
}

/// The Go sequence: set a monitoring configuration with a URL (Go's defaults), a refresh happens,
/// wait: a signed POST of type `refresh` for the credential arrives. With the Rust default filter
/// the same refresh posts nothing (routine refreshes are opt-in).
#[tokio::test]
async fn the_go_sequence_receives_a_signed_refresh_post() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    let monitor = Monitor::new(None).expect("valid");
    assert_eq!(monitor.status(), DeliveryStatus::MonitoringOff);
    monitor
        .reconfigure(Some(MonitoringConfig {
            webhook_url: Some(rx.url()),
            signing_secrets: vec![secret(SPEC_SECRET)],
            ..MonitoringConfig::go_default()
        }))
        .expect("valid");
    assert!(monitor.notify_event(&refreshed()));
    assert!(rx.wait_for_accepted(1, WAIT).await);
    let got = rx.accepted();
    assert_eq!(got.len(), 1);
    let body = got[0].json().expect("json body");
    assert_eq!(body["type"], "refresh");
    assert_eq!(body["credential_id"], "team");
    assert_eq!(body["message"], "Token successfully refreshed");
    assert_eq!(body["details"]["success"], true);
    assert!(got[0].verification.is_ok());
    assert!(got[0].header(HEADER_SIGNATURE).is_some());
    // The official library agrees.
    standardwebhooks::Webhook::new(SPEC_SECRET)
        .expect("reference accepts the secret")
        .verify(&got[0].body, &got[0].headers)
        .expect("the reference library verifies the delivery");

    // The Rust default: the refresh is filtered out, a failure still goes.
    monitor
        .reconfigure(Some(config(rx.url(), vec![secret(SPEC_SECRET)])))
        .expect("valid");
    assert!(!monitor.notify_event(&refreshed()));
    assert!(monitor.notify_event(&refresh_failed(1)));
    assert!(rx.wait_for_accepted(2, WAIT).await);
    let types: Vec<String> = rx
        .accepted_events()
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(types, ["refresh", "failure"]);
}

/// URL A to B at run time: the delivery in flight to A (a slow answer) finishes there, with A's
/// secret; the next delivery goes to B, signed with B's secret.
#[tokio::test]
async fn reconfigured_url_takes_the_next_delivery_while_the_one_in_flight_finishes() {
    let a = receiver(vec![secret(SPEC_SECRET)]).await;
    let b = receiver(vec![secret(OTHER_SECRET)]).await;
    a.fail_next(1, Fault::Slow(Duration::from_secs(3)));
    let monitor = Monitor::new(Some(config(a.url(), vec![secret(SPEC_SECRET)]))).expect("valid");
    assert_eq!(
        monitor.status(),
        DeliveryStatus::Webhook {
            endpoint: format!("http://{}/…", a.addr())
        }
    );

    assert!(monitor.notify_event(&refresh_failed(1)));
    assert!(
        a.wait_for_requests(1, WAIT).await,
        "the first delivery reached A"
    );

    monitor
        .reconfigure(Some(config(b.url(), vec![secret(OTHER_SECRET)])))
        .expect("valid");
    assert!(
        !a.requests()[0].answered,
        "reconfigured while A was still answering"
    );
    assert!(monitor.notify_event(&refresh_failed(2)));
    assert!(b.wait_for_accepted(1, WAIT).await);
    assert!(a.wait_for_accepted(1, WAIT).await, "A's delivery finished");

    let s = wait_for(&monitor, |s| s.delivered == 2).await;
    assert_eq!((s.delivered, s.retried, s.failed), (2, 0, 0), "{s:?}");
    assert_eq!(s.reconfigured, 1);
    // One delivery each, each verified with its own endpoint's secret (a delivery signed with the
    // wrong one would have been answered 401 and retried).
    assert_eq!(a.requests().len(), 1);
    assert_eq!(b.requests().len(), 1);
    assert_eq!(a.accepted_events()[0]["details"]["consecutive_failures"], 1);
    assert_eq!(b.accepted_events()[0]["details"]["consecutive_failures"], 2);
    assert!(a.rejections().is_empty() && b.rejections().is_empty());
}

/// A receiver whose accepted secrets can be changed while it runs, as a receiving service rotates.
fn rotating_receiver_verify(accepted: Arc<Mutex<Vec<WebhookSecret>>>) -> VerifyFn {
    Arc::new(move |headers, body| {
        let secrets = accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        verify(&secrets, headers, body, Utc::now(), DEFAULT_TOLERANCE).map_err(|e| e.to_string())
    })
}

/// Secret rotation without downtime: sign with the old secret; then with both while the receiver
/// switches to the new one; then with the new one alone, which a receiver of the old one refuses.
#[tokio::test]
async fn secrets_rotate_at_run_time_without_a_rejected_delivery() {
    let accepted = Arc::new(Mutex::new(vec![secret(SPEC_SECRET)]));
    let rx = WebhookReceiver::start(rotating_receiver_verify(Arc::clone(&accepted)))
        .await
        .expect("binds");
    let monitor = Monitor::new(Some(config(rx.url(), vec![secret(SPEC_SECRET)]))).expect("valid");

    assert!(monitor.notify_event(&refresh_failed(1)));
    assert!(rx.wait_for_accepted(1, WAIT).await);

    monitor
        .reconfigure(Some(config(
            rx.url(),
            vec![secret(OTHER_SECRET), secret(SPEC_SECRET)],
        )))
        .expect("valid");
    *accepted.lock().unwrap_or_else(PoisonError::into_inner) = vec![secret(OTHER_SECRET)];
    assert!(monitor.notify_event(&refresh_failed(2)));
    assert!(rx.wait_for_accepted(2, WAIT).await);

    monitor
        .reconfigure(Some(config(rx.url(), vec![secret(OTHER_SECRET)])))
        .expect("valid");
    assert!(monitor.notify_event(&refresh_failed(3)));
    assert!(rx.wait_for_accepted(3, WAIT).await);

    let all = rx.requests();
    assert_eq!(all.len(), 3, "no delivery was rejected and retried");
    let signatures: Vec<usize> = all
        .iter()
        .map(|r| {
            r.header(HEADER_SIGNATURE)
                .map_or(0, |v| v.split(' ').count())
        })
        .collect();
    assert_eq!(signatures, [1, 2, 1]);
    // The last delivery is not signed with the retired secret.
    let last = &all[2];
    assert!(
        verify(
            &[secret(SPEC_SECRET)],
            &last.headers,
            &last.body,
            Utc::now(),
            DEFAULT_TOLERANCE
        )
        .is_err()
    );
    standardwebhooks::Webhook::new(OTHER_SECRET)
        .expect("reference accepts the secret")
        .verify(&last.body, &last.headers)
        .expect("the reference library verifies the rotated delivery");
}

/// Retries: with one attempt a 500 is given up at once; reconfigured to three, the next event
/// survives two 500s.
#[tokio::test]
async fn a_new_retry_schedule_applies_to_the_next_delivery() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    let once = MonitoringConfig {
        retry: fast_retry(1),
        ..config(rx.url(), vec![secret(SPEC_SECRET)])
    };
    let monitor = Monitor::new(Some(once.clone())).expect("valid");
    rx.fail_next(1, Fault::Status(500));
    assert!(monitor.notify_event(&refresh_failed(1)));
    let s = wait_for(&monitor, |s| s.failed == 1).await;
    assert_eq!((s.failed, s.retried, s.delivered), (1, 0, 0), "{s:?}");

    monitor
        .reconfigure(Some(MonitoringConfig {
            retry: fast_retry(3),
            ..once
        }))
        .expect("valid");
    rx.fail_next(2, Fault::Status(500));
    assert!(monitor.notify_event(&refresh_failed(2)));
    let s = wait_for(&monitor, |s| s.delivered == 1).await;
    assert_eq!((s.failed, s.retried, s.delivered), (1, 2, 1), "{s:?}");
    let statuses: Vec<u16> = rx.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
}

/// Timeout: built with 30 s and reconfigured to 1 s before the delivery, a 20 s answer is
/// abandoned after 1 s and retried (under 30 s it would have been waited for, and accepted).
#[tokio::test]
async fn a_new_timeout_applies_to_the_next_delivery() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    let patient = MonitoringConfig {
        timeout: Duration::from_secs(30),
        retry: fast_retry(3),
        ..config(rx.url(), vec![secret(SPEC_SECRET)])
    };
    let monitor = Monitor::new(Some(patient.clone())).expect("valid");
    monitor
        .reconfigure(Some(MonitoringConfig {
            timeout: Duration::from_secs(1),
            ..patient
        }))
        .expect("valid");
    rx.fail_next(1, Fault::Slow(Duration::from_secs(20)));
    assert!(monitor.notify_event(&refresh_failed(1)));
    let s = wait_for(&monitor, |s| s.delivered == 1).await;
    assert_eq!((s.delivered, s.retried), (1, 1), "{s:?}");
    let all = rx.requests();
    assert_eq!(all.len(), 2);
    let gap = all[1].at - all[0].at;
    assert!(
        gap < Duration::from_secs(10),
        "the retry came after {gap:?}: the 30 s timeout was still in force"
    );
}

/// No URL: nothing is sent, the status says so, and it is counted; a URL set later delivers, and
/// removing it stops delivery again.
#[tokio::test]
async fn without_a_url_nothing_is_sent_and_the_status_says_so() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    let no_url = MonitoringConfig {
        signing_secrets: vec![secret(SPEC_SECRET)],
        ..MonitoringConfig::default()
    };
    let monitor = Monitor::new(Some(no_url.clone())).expect("valid");
    let status = monitor.status();
    assert_eq!(status, DeliveryStatus::NoWebhookUrl);
    assert!(!status.is_delivering());
    assert!(status.to_string().contains("no webhook_url"), "{status}");
    assert!(monitor.notify_event(&refresh_failed(1)), "routed");
    let s = stats(&monitor);
    assert_eq!((s.no_url, s.queued, s.in_flight), (1, 0, 0), "{s:?}");

    monitor
        .reconfigure(Some(config(rx.url(), vec![secret(SPEC_SECRET)])))
        .expect("valid");
    assert!(monitor.status().is_delivering());
    assert!(monitor.notify_event(&refresh_failed(2)));
    assert!(rx.wait_for_accepted(1, WAIT).await);

    monitor.reconfigure(Some(no_url)).expect("valid");
    assert!(monitor.notify_event(&refresh_failed(3)));
    let report = monitor.shutdown(WAIT).await;
    assert!(!report.timed_out);
    assert_eq!(rx.requests().len(), 1, "nothing after the URL was removed");
    assert_eq!(stats(&monitor).no_url, 2);
    assert_eq!(monitor.status(), DeliveryStatus::ShutDown);
}

/// An invalid configuration is refused whole: the old one stays in force.
#[tokio::test]
async fn an_invalid_reconfiguration_changes_nothing() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    let monitor = Monitor::new(Some(config(rx.url(), vec![secret(SPEC_SECRET)]))).expect("valid");
    let bad = [
        MonitoringConfig {
            webhook_url: Some("http://exa mple.com/x".into()),
            ..MonitoringConfig::default()
        },
        MonitoringConfig {
            queue_capacity: 0,
            ..config(rx.url(), vec![])
        },
    ];
    for c in bad {
        assert!(monitor.reconfigure(Some(c)).is_err());
    }
    assert_eq!(
        monitor.config().and_then(|c| c.webhook_url.clone()),
        Some(rx.url())
    );
    assert!(monitor.notify_event(&refresh_failed(1)));
    assert!(rx.wait_for_accepted(1, WAIT).await);
    assert_eq!(stats(&monitor).reconfigured, 0);
}

/// A custom notifier plugs in and receives what the configuration routes; a `WebhookNotifier`
/// built for URL A and handed in follows a configuration that says URL B.
#[tokio::test]
async fn a_custom_notifier_plugs_in_and_a_webhook_notifier_follows_the_configuration() {
    let memory = Arc::new(MemoryNotifier::new());
    let monitor = Monitor::with_notifier(
        Some(MonitoringConfig {
            alert_on_refresh_failure: false,
            ..MonitoringConfig::default()
        }),
        Arc::clone(&memory) as Arc<dyn Notifier>,
    )
    .expect("valid");
    assert_eq!(monitor.status(), DeliveryStatus::Custom);
    assert!(!monitor.notify_event(&refresh_failed(1)), "switched off");
    let reauth = Event::new(
        Utc::now(),
        EventKind::NeedsReauthorization {
            credential: id(),
            access_valid_until: None,
        },
    );
    assert!(monitor.notify_event(&reauth));
    crate::support::settle_until(|| memory.events().len() == 1).await;
    assert_eq!(
        memory.events()[0].event_type,
        WebhookEventType::NeedsReauthorization
    );

    let a = receiver(vec![secret(SPEC_SECRET)]).await;
    let b = receiver(vec![secret(SPEC_SECRET)]).await;
    let built_for_a =
        Arc::new(WebhookNotifier::new(&config(a.url(), vec![secret(SPEC_SECRET)])).expect("valid"));
    // Handed in without a configuration: it keeps posting to A.
    let monitor =
        Monitor::with_notifier(None, Arc::clone(&built_for_a) as Arc<dyn Notifier>).expect("valid");
    assert!(monitor.notify_event(&refresh_failed(1)));
    assert!(a.wait_for_accepted(1, WAIT).await);
    // The configuration says B: B it is.
    monitor
        .reconfigure(Some(config(b.url(), vec![secret(SPEC_SECRET)])))
        .expect("valid");
    assert!(monitor.notify_event(&refresh_failed(2)));
    assert!(b.wait_for_accepted(1, WAIT).await);
    assert_eq!(webhook_ids(&a).len(), 1);
    assert_eq!(
        monitor.status(),
        DeliveryStatus::Webhook {
            endpoint: format!("http://{}/…", b.addr())
        }
    );
}

/// A delivery waiting to retry when the URL changes keeps its retries at the old URL, with the old
/// secret; only new deliveries go to the new one.
#[tokio::test]
async fn a_delivery_waiting_to_retry_keeps_its_url_and_secret() {
    let a = receiver(vec![secret(SPEC_SECRET)]).await;
    let b = receiver(vec![secret(OTHER_SECRET)]).await;
    a.fail_next(1, Fault::Status(503));
    let slow_retry = MonitoringConfig {
        retry: oauth_webhooks::RetrySchedule {
            initial_delay: Duration::from_millis(400),
            max_delay: Duration::from_millis(400),
            ..fast_retry(3)
        },
        ..config(a.url(), vec![secret(SPEC_SECRET)])
    };
    let monitor = Monitor::new(Some(slow_retry)).expect("valid");
    assert!(monitor.notify_event(&refresh_failed(1)));
    assert!(a.wait_for_requests(1, WAIT).await);
    let first = a.requests()[0].webhook_id().map(str::to_owned);

    monitor
        .reconfigure(Some(config(b.url(), vec![secret(OTHER_SECRET)])))
        .expect("valid");
    assert!(monitor.notify_event(&refresh_failed(2)));
    assert!(b.wait_for_accepted(1, WAIT).await);
    assert!(a.wait_for_accepted(1, WAIT).await, "the retry went to A");

    assert_eq!(a.attempts(first.as_deref().unwrap_or_default()), 2);
    assert_eq!(
        b.attempts(first.as_deref().unwrap_or_default()),
        0,
        "no retry of the first event at B"
    );
    assert!(a.rejections().is_empty() && b.rejections().is_empty());
    let s = wait_for(&monitor, |s| s.delivered == 2).await;
    assert_eq!((s.delivered, s.retried), (2, 1), "{s:?}");
}
