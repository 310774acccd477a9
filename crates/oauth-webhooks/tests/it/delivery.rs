//! Delivery under failure: retries with a stable id, Retry-After, 410, timeouts, an endpoint that
//! goes down, the queue bound, filtering and shutdown.

use std::collections::BTreeSet;
use std::time::Duration;

use oauth_testkit::webhook_receiver::Fault;
use oauth_webhooks::{
    HEADER_TIMESTAMP, MonitoringConfig, Notifier, RetrySchedule, WebhookEventType, WebhookNotifier,
};

use crate::support::{SPEC_SECRET, config, event, fast_retry, receiver, secret, wait_stats};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn two_500s_then_200_is_accepted_on_the_third_attempt_with_one_webhook_id() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    rx.fail_next(2, Fault::Status(500));
    let notifier =
        WebhookNotifier::new(&config(rx.url(), vec![secret(SPEC_SECRET)])).expect("valid config");
    let ev = event(1);
    notifier.notify(ev.clone()).await;
    assert!(rx.wait_for_accepted(1, WAIT).await);

    let all = rx.requests();
    let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert!(all.iter().all(|r| r.webhook_id() == Some(ev.id.as_str())));
    assert_eq!(rx.attempts(&ev.id), 3);
    // Every attempt is signed afresh and verified.
    assert!(all.iter().all(|r| r.verification.is_ok()));
    assert!(all.iter().all(|r| r.header(HEADER_TIMESTAMP).is_some()));
    let stats = wait_stats(&notifier, |s| s.delivered == 1).await;
    assert_eq!((stats.delivered, stats.retried, stats.failed), (1, 2, 0));
}

#[tokio::test]
async fn gives_up_after_the_last_attempt_and_counts_a_failure() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    rx.fail_next(10, Fault::Status(503));
    let cfg = MonitoringConfig {
        retry: fast_retry(3),
        ..config(rx.url(), vec![secret(SPEC_SECRET)])
    };
    let notifier = WebhookNotifier::new(&cfg).expect("valid config");
    let ev = event(1);
    notifier.notify(ev.clone()).await;
    let stats = wait_stats(&notifier, |s| s.failed == 1).await;
    assert_eq!((stats.failed, stats.retried, stats.delivered), (1, 2, 0));
    assert_eq!(rx.attempts(&ev.id), 3);
}

#[tokio::test]
async fn retry_after_of_a_429_lengthens_the_wait() {
    // The backoff alone would wait 10 ms; Retry-After asks 120 s, clamped to max_delay (300 ms).
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    rx.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after: "120".into(),
        },
    );
    let cfg = MonitoringConfig {
        retry: RetrySchedule {
            max_delay: Duration::from_millis(300),
            ..fast_retry(3)
        },
        ..config(rx.url(), vec![secret(SPEC_SECRET)])
    };
    let notifier = WebhookNotifier::new(&cfg).expect("valid config");
    notifier.notify(event(1)).await;
    assert!(rx.wait_for_accepted(1, WAIT).await);
    let all = rx.requests();
    assert_eq!(all.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let gap = all[1].at - all[0].at;
    assert!(gap >= Duration::from_millis(300), "waited only {gap:?}");
}

#[tokio::test]
async fn gone_disables_the_endpoint() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    rx.fail_next(1, Fault::Gone);
    let notifier =
        WebhookNotifier::new(&config(rx.url(), vec![secret(SPEC_SECRET)])).expect("valid config");
    notifier.notify(event(1)).await;
    let stats = wait_stats(&notifier, |s| s.endpoint_disabled).await;
    assert!(stats.endpoint_disabled);
    assert_eq!((stats.failed, stats.retried), (1, 0));

    notifier.notify(event(2)).await;
    notifier.notify(event(3)).await;
    let report = notifier.shutdown(WAIT).await;
    assert!(!report.timed_out);
    assert_eq!(notifier.stats().discarded, 2);
    assert_eq!(rx.requests().len(), 1, "nothing is sent after a 410");
}

#[tokio::test]
async fn a_slow_endpoint_times_out_and_the_retry_succeeds() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    // The slow answer takes 20 s; a 1 s timeout ends that attempt, and leaves a loaded machine
    // plenty of time for the retry's quick answer.
    rx.fail_next(1, Fault::Slow(Duration::from_secs(20)));
    let cfg = MonitoringConfig {
        timeout: Duration::from_secs(1),
        ..config(rx.url(), vec![secret(SPEC_SECRET)])
    };
    let notifier = WebhookNotifier::new(&cfg).expect("valid config");
    let ev = event(1);
    notifier.notify(ev.clone()).await;
    let stats = wait_stats(&notifier, |s| s.delivered == 1).await;
    assert_eq!((stats.delivered, stats.retried), (1, 1));
    assert_eq!(rx.attempts(&ev.id), 2);
}

#[tokio::test]
async fn endpoint_down_shorter_than_the_retry_schedule_loses_nothing() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    let cfg = MonitoringConfig {
        // 10 ms doubling to 50 ms over 200 attempts: about 10 s of retrying.
        retry: fast_retry(200),
        queue_capacity: 64,
        ..config(rx.url(), vec![secret(SPEC_SECRET)])
    };
    let notifier = WebhookNotifier::new(&cfg).expect("valid config");

    rx.go_down().await;
    let sent: Vec<_> = (0..20).map(event).collect();
    for ev in &sent {
        notifier.notify(ev.clone()).await;
    }
    // Down for a stretch: attempts are being refused and retried meanwhile.
    wait_stats(&notifier, |s| s.retried >= 8).await;
    assert_eq!(rx.requests().len(), 0);
    rx.come_back().await.expect("same port again");

    assert!(rx.wait_for_accepted(20, WAIT).await);
    let got: BTreeSet<String> = rx
        .accepted()
        .iter()
        .filter_map(|r| r.webhook_id().map(str::to_owned))
        .collect();
    let want: BTreeSet<String> = sent.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, want);
    let stats = wait_stats(&notifier, |s| s.delivered == 20).await;
    assert_eq!((stats.delivered, stats.dropped, stats.failed), (20, 0, 0));
    assert!(stats.retried >= 8);
}

#[tokio::test]
async fn past_the_queue_bound_the_drop_count_says_how_many_were_lost() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    let cfg = MonitoringConfig {
        retry: fast_retry(200),
        queue_capacity: 5,
        max_concurrent_deliveries: 1,
        ..config(rx.url(), vec![secret(SPEC_SECRET)])
    };
    let notifier = WebhookNotifier::new(&cfg).expect("valid config");

    rx.go_down().await;
    let sent: Vec<_> = (0..20).map(event).collect();
    for ev in &sent {
        notifier.notify(ev.clone()).await;
    }
    wait_stats(&notifier, |s| s.retried >= 3).await;
    rx.come_back().await.expect("same port again");

    let stats = wait_stats(&notifier, |s| {
        s.queued == 0 && s.in_flight == 0 && s.delivered + s.dropped == 20
    })
    .await;
    assert_eq!(stats.delivered + stats.dropped, 20, "{stats:?}");
    // At most the queue (5) plus the one delivery in flight survive.
    assert!(stats.dropped >= 14, "{stats:?}");
    assert_eq!(stats.failed, 0);
    let got: BTreeSet<String> = rx
        .accepted()
        .iter()
        .filter_map(|r| r.webhook_id().map(str::to_owned))
        .collect();
    assert_eq!(got.len() as u64, stats.delivered);
    // The oldest are dropped: the five newest all arrived.
    for ev in &sent[15..] {
        assert!(got.contains(&ev.id), "newest event {} lost", ev.message);
    }
}

#[tokio::test]
async fn events_outside_the_filter_are_not_sent() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    let cfg = MonitoringConfig {
        webhook_events: [WebhookEventType::Refresh].into_iter().collect(),
        ..config(rx.url(), vec![secret(SPEC_SECRET)])
    };
    let notifier = WebhookNotifier::new(&cfg).expect("valid config");
    notifier.notify(event(1)).await; // a `failure`
    let mut refresh = event(2);
    refresh.event_type = WebhookEventType::Refresh;
    notifier.notify(refresh.clone()).await;
    assert!(rx.wait_for_accepted(1, WAIT).await);
    let report = notifier.shutdown(WAIT).await;
    assert!(!report.timed_out);
    assert_eq!(notifier.stats().filtered, 1);
    let ids: Vec<String> = rx
        .requests()
        .iter()
        .filter_map(|r| r.webhook_id().map(str::to_owned))
        .collect();
    assert_eq!(ids, [refresh.id]);
}

#[tokio::test]
async fn shutdown_flushes_the_queue() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    let notifier =
        WebhookNotifier::new(&config(rx.url(), vec![secret(SPEC_SECRET)])).expect("valid config");
    for n in 0..10 {
        notifier.notify(event(n)).await;
    }
    let report = notifier.shutdown(WAIT).await;
    assert_eq!((report.abandoned, report.timed_out), (0, false));
    assert_eq!(rx.accepted().len(), 10);
    // After shutdown nothing more is taken.
    notifier.notify(event(11)).await;
    assert_eq!(notifier.stats().discarded, 1);
}

#[tokio::test]
async fn shutdown_gives_up_at_its_deadline_and_reports_what_was_abandoned() {
    let rx = receiver(vec![secret(SPEC_SECRET)]).await;
    rx.go_down().await;
    let cfg = MonitoringConfig {
        retry: fast_retry(10_000),
        ..config(rx.url(), vec![secret(SPEC_SECRET)])
    };
    let notifier = WebhookNotifier::new(&cfg).expect("valid config");
    for n in 0..6 {
        notifier.notify(event(n)).await;
    }
    let report = notifier.shutdown(Duration::from_millis(200)).await;
    assert!(report.timed_out);
    assert_eq!(report.abandoned, 6);
    assert_eq!(notifier.stats().discarded, 6);
}

#[tokio::test]
async fn construction_errors() {
    let no_url = MonitoringConfig::default();
    assert!(matches!(
        WebhookNotifier::new(&no_url),
        Err(oauth_webhooks::ConfigError::MissingUrl)
    ));
    let bad = MonitoringConfig {
        webhook_url: Some("http://exa mple.com/x".into()),
        ..MonitoringConfig::default()
    };
    assert!(WebhookNotifier::new(&bad).is_err());
}

/// Constructing needs no runtime and spawns nothing; the first event queued inside a runtime
/// starts the delivery task.
#[test]
fn built_outside_a_runtime_it_spawns_nothing_until_the_first_delivery() {
    let cfg = config("http://127.0.0.1:9/webhook".into(), vec![]);
    let notifier = WebhookNotifier::new(&cfg).expect("no runtime needed to build");
    assert_eq!(notifier.stats().in_flight, 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let rx = receiver(vec![secret(SPEC_SECRET)]).await;
        let cfg = config(rx.url(), vec![secret(SPEC_SECRET)]);
        notifier.reconfigure(&cfg).expect("valid config");
        notifier.notify(event(1)).await;
        assert!(rx.wait_for_accepted(1, WAIT).await);
        let report = notifier.shutdown(WAIT).await;
        assert!(!report.timed_out);
        assert_eq!(notifier.stats().delivered, 1);
    });
}
