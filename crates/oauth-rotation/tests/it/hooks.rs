//! `Rotation`: hooks called with no lock held, vetoes, reports of every failure.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;
use oauth_core::{Clock, CredentialId, EventKind};
use oauth_rotation::{
    HookError, NoopHooks, Rotation, RotationError, RotationHooks, RotationPolicy,
};
use tokio::sync::Notify;

use crate::{clock, id, t0};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Runs `fut` on its own thread and fails the test if it has not finished after 10 s: a deadlock
/// fails instead of hanging the suite. (A liveness bound, not a timing assertion.)
fn finishes<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _ = tx.send(rt.block_on(fut));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("deadlock: the operation did not finish")
}

/// Hooks that call back into the `Rotation` that owns them and record what they saw.
#[derive(Debug, Default)]
struct Reentrant {
    rotation: OnceLock<Weak<Rotation>>,
    seen: Mutex<Vec<String>>,
    veto: Mutex<BTreeSet<CredentialId>>,
}

impl Reentrant {
    fn rotation(&self) -> Arc<Rotation> {
        self.rotation
            .get()
            .and_then(Weak::upgrade)
            .expect("rotation installed")
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("seen").clone()
    }
}

#[async_trait]
impl RotationHooks for Reentrant {
    async fn on_rotation_needed(&self, credential: &CredentialId) -> Result<(), HookError> {
        let r = self.rotation();
        let marked = r.is_marked(credential);
        let replacement = r.state(credential).and_then(|s| s.replacement_id);
        self.seen.lock().expect("seen").push(format!(
            "rotation_needed {credential} marked={marked} replacement={replacement:?}"
        ));
        Ok(())
    }

    async fn on_decommission(&self, credential: &CredentialId) -> Result<(), HookError> {
        let r = self.rotation();
        // Reads, a write, and even a nested completion of the same credential: none may block.
        let still_tracked = r.state(credential).is_some();
        let _ = r.check_rotation_needed(t0());
        let _ = r.track(id(&format!("{credential}-audit")), t0());
        let nested = r
            .complete_rotation(credential, t0() + TimeDelta::days(365), |_| {})
            .await;
        self.seen.lock().expect("seen").push(format!(
            "decommission {credential} tracked={still_tracked} nested={nested:?}"
        ));
        if self.veto.lock().expect("veto").contains(credential) {
            return Err("still referenced by the billing job".into());
        }
        Ok(())
    }
}

fn reentrant(policy: RotationPolicy) -> (Arc<Rotation>, Arc<Reentrant>) {
    let hooks = Arc::new(Reentrant::default());
    let rotation = Arc::new(Rotation::new(policy, hooks.clone()));
    hooks
        .rotation
        .set(Arc::downgrade(&rotation))
        .expect("set once");
    (rotation, hooks)
}

#[test]
fn hooks_that_call_back_into_rotation_do_not_deadlock() {
    let clock = clock();
    let (rotation, hooks) = reentrant(RotationPolicy::default().with_grace_period(DAY));
    rotation.track(id("old"), t0()).expect("track");
    let now = clock.now();

    let r = rotation.clone();
    let outcome =
        finishes(async move { r.mark_for_rotation(&id("old"), id("new"), now, now).await })
            .expect("mark");
    assert_eq!(outcome.hook_result, Ok(()));
    assert!(matches!(
        outcome.event.kind,
        EventKind::RotationStarted { .. }
    ));

    clock.advance(DAY);
    let now = clock.now();
    let r = rotation.clone();
    let pool = Arc::new(Mutex::new(vec![id("old"), id("new")]));
    let p = pool.clone();
    let event = finishes(async move {
        r.complete_rotation(&id("old"), now, |gone| {
            p.lock().expect("pool").retain(|c| c != gone);
        })
        .await
    })
    .expect("complete");
    assert_eq!(
        event.kind,
        EventKind::Decommissioned {
            credential: id("old")
        }
    );
    assert_eq!(*pool.lock().expect("pool"), vec![id("new")]);

    assert_eq!(
        hooks.seen(),
        vec![
            // The hook runs after the mark, and sees it.
            "rotation_needed old marked=true replacement=Some(\"new\")".to_owned(),
            // It runs before the removal, so the state is still there; a nested completion of
            // the same credential is refused instead of asking the hook twice.
            "decommission old tracked=true nested=Err(CompletionInProgress { id: \"old\" })"
                .to_owned(),
        ]
    );
    assert!(rotation.state(&id("old")).is_none());
    assert!(
        rotation.state(&id("old-audit")).is_some(),
        "the hook's write"
    );
}

#[test]
fn decommission_veto_keeps_the_credential_and_is_reported() {
    let clock = clock();
    let (rotation, hooks) = reentrant(RotationPolicy::default().with_grace_period(DAY));
    rotation.track(id("old"), t0()).expect("track");
    hooks.veto.lock().expect("veto").insert(id("old"));
    let now = clock.now();
    let r = rotation.clone();
    finishes(async move { r.mark_for_rotation(&id("old"), id("new"), now, now).await })
        .expect("mark");
    clock.advance(DAY);
    let now = clock.now();
    let r = rotation.clone();
    let removed = Arc::new(Mutex::new(Vec::new()));
    let rm = removed.clone();
    let err = finishes(async move {
        r.complete_rotation(&id("old"), now, |c| rm.lock().expect("rm").push(c.clone()))
            .await
    })
    .expect_err("vetoed");
    assert_eq!(
        err,
        RotationError::HookRejected {
            id: id("old"),
            message: "still referenced by the billing job".to_owned()
        }
    );
    assert!(err.is_retryable());
    let event = err.decommission_failed_event(now).expect("event");
    assert_eq!(
        event.kind,
        EventKind::DecommissionFailed {
            credential: id("old"),
            reason: "still referenced by the billing job".to_owned()
        }
    );
    assert!(removed.lock().expect("rm").is_empty(), "remove not called");
    assert!(
        rotation.is_marked(&id("old")),
        "credential stays, still marked"
    );

    // Once the hook agrees, the same call succeeds (the claim was released after the veto).
    hooks.veto.lock().expect("veto").clear();
    let r = rotation.clone();
    finishes(async move { r.complete_rotation(&id("old"), now, |_| {}).await })
        .expect("complete after veto lifted");
    assert!(rotation.state(&id("old")).is_none());
}

#[derive(Debug)]
struct FailingRotationHook;

#[async_trait]
impl RotationHooks for FailingRotationHook {
    async fn on_rotation_needed(&self, _: &CredentialId) -> Result<(), HookError> {
        Err(HookError::from(String::from(
            "revocation endpoint unreachable",
        )))
    }
}

#[tokio::test]
async fn rotation_hook_error_is_reported_and_does_not_undo_the_mark() {
    let rotation = Rotation::new(RotationPolicy::default(), Arc::new(FailingRotationHook));
    rotation.track(id("old"), t0()).expect("track");
    let outcome = rotation
        .mark_for_rotation(&id("old"), id("new"), t0(), t0())
        .await
        .expect("mark");
    assert_eq!(
        outcome.hook_result,
        Err(HookError::new("revocation endpoint unreachable"))
    );
    assert!(rotation.is_marked(&id("old")));
    assert!(rotation.state(&id("new")).is_some());
}

/// Counts hook calls so a test can see which ones happened.
#[derive(Debug, Default)]
struct Counting {
    rotation_needed: Mutex<Vec<CredentialId>>,
}

#[async_trait]
impl RotationHooks for Counting {
    async fn on_rotation_needed(&self, c: &CredentialId) -> Result<(), HookError> {
        self.rotation_needed.lock().expect("calls").push(c.clone());
        Ok(())
    }
}

#[tokio::test]
async fn mark_errors_do_not_call_the_hook() {
    let hooks = Arc::new(Counting::default());
    let rotation = Rotation::new(RotationPolicy::default(), hooks.clone());
    rotation.track(id("a"), t0()).expect("track");
    let err = rotation
        .mark_for_rotation(&id("ghost"), id("n"), t0(), t0())
        .await
        .expect_err("unknown");
    assert_eq!(err, RotationError::UnknownCredential { id: id("ghost") });
    rotation
        .mark_for_rotation(&id("a"), id("b"), t0(), t0())
        .await
        .expect("mark");
    let err = rotation
        .mark_for_rotation(&id("a"), id("c"), t0(), t0())
        .await
        .expect_err("already marked");
    assert_eq!(err, RotationError::AlreadyMarked { id: id("a") });
    assert_eq!(*hooks.rotation_needed.lock().expect("calls"), vec![id("a")]);
}

#[tokio::test]
async fn complete_rotation_errors_before_the_hook() {
    let clock = clock();
    let rotation = Rotation::without_hooks(RotationPolicy::default().with_grace_period(DAY));
    rotation.track(id("a"), t0()).expect("track");
    let never = |_: &CredentialId| panic!("remove must not be called on error");
    assert_eq!(
        rotation
            .complete_rotation(&id("ghost"), clock.now(), never)
            .await,
        Err(RotationError::UnknownCredential { id: id("ghost") })
    );
    assert_eq!(
        rotation
            .complete_rotation(&id("a"), clock.now(), never)
            .await,
        Err(RotationError::NotMarked { id: id("a") })
    );
    rotation
        .mark_for_rotation(&id("a"), id("b"), clock.now(), clock.now())
        .await
        .expect("mark");
    let err = rotation
        .complete_rotation(&id("a"), clock.now(), never)
        .await
        .expect_err("grace");
    assert_eq!(err.retry_at(), Some(clock.now() + TimeDelta::days(1)));
}

#[tokio::test]
async fn go_case_auto_decommission_returns_exactly_the_expired_and_nothing_once_off() {
    let clock = clock();
    let rotation = Rotation::new(
        RotationPolicy::default().with_grace_period(DAY),
        Arc::new(NoopHooks),
    );
    for name in ["c", "b", "a", "fresh"] {
        rotation.track(id(name), t0()).expect("track");
    }
    for name in ["c", "a"] {
        rotation
            .mark_for_rotation(&id(name), id(&format!("{name}2")), clock.now(), clock.now())
            .await
            .expect("mark");
    }
    clock.advance(DAY / 2);
    rotation
        .mark_for_rotation(&id("b"), id("b2"), clock.now(), clock.now())
        .await
        .expect("mark");
    clock.advance(DAY / 2 + Duration::from_secs(1));

    // Switched off: nothing happens.
    rotation.set_policy(rotation.policy().with_auto_decommission(false));
    let never = |_: &CredentialId| panic!("nothing is due while auto decommission is off");
    let report = rotation.auto_decommission_expired(clock.now(), never).await;
    assert!(report.is_empty() && report.events.is_empty());
    assert!(rotation.is_marked(&id("a")) && rotation.is_marked(&id("c")));

    rotation.set_policy(rotation.policy().with_auto_decommission(true));
    let removed = Mutex::new(Vec::new());
    let report = rotation
        .auto_decommission_expired(clock.now(), |c| {
            removed.lock().expect("removed").push(c.clone());
        })
        .await;
    assert_eq!(report.decommissioned, vec![id("a"), id("c")]);
    assert!(report.failures.is_empty());
    assert_eq!(*removed.lock().expect("removed"), vec![id("a"), id("c")]);
    let kinds: Vec<_> = report.events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Decommissioned {
                credential: id("a")
            },
            EventKind::Decommissioned {
                credential: id("c")
            }
        ]
    );
    assert!(rotation.is_marked(&id("b")), "its grace has not ended");
    assert!(rotation.state(&id("fresh")).is_some());
    // Nothing left to do.
    assert!(
        rotation
            .auto_decommission_expired(clock.now(), never)
            .await
            .is_empty()
    );
}

#[test]
fn auto_decommission_reports_every_failure_not_only_the_last() {
    let clock = clock();
    let (rotation, hooks) = reentrant(RotationPolicy::default().with_grace_period(Duration::ZERO));
    for name in ["a", "b", "c"] {
        rotation.track(id(name), t0()).expect("track");
    }
    {
        let mut veto = hooks.veto.lock().expect("veto");
        veto.insert(id("a"));
        veto.insert(id("c"));
    }
    let now = clock.now();
    let r = rotation.clone();
    let report = finishes(async move {
        for name in ["a", "b", "c"] {
            r.mark_for_rotation(&id(name), id(&format!("{name}2")), now, now)
                .await
                .expect("mark");
        }
        r.auto_decommission_expired(now + TimeDelta::seconds(1), |_| {})
            .await
    });
    assert_eq!(report.decommissioned, vec![id("b")]);
    let failed: Vec<_> = report.failures.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(failed, vec![id("a"), id("c")]);
    assert!(
        report
            .failures
            .iter()
            .all(|(_, e)| matches!(e, RotationError::HookRejected { .. }))
    );
    let kinds: Vec<_> = report.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        kinds,
        vec![
            "decommission_failed",
            "decommissioned",
            "decommission_failed"
        ]
    );
    assert!(rotation.is_marked(&id("a")) && rotation.is_marked(&id("c")));
}

/// A decommission hook that waits until the test lets it go.
#[derive(Debug, Default)]
struct Gate {
    entered: Notify,
    release: Notify,
}

#[async_trait]
impl RotationHooks for Gate {
    async fn on_decommission(&self, _: &CredentialId) -> Result<(), HookError> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_decommission_at_a_time_and_a_dropped_one_releases_its_claim() {
    let gate = Arc::new(Gate::default());
    let rotation = Arc::new(Rotation::new(
        RotationPolicy::default().with_grace_period(Duration::ZERO),
        gate.clone(),
    ));
    rotation.track(id("a"), t0()).expect("track");
    rotation
        .mark_for_rotation(&id("a"), id("b"), t0(), t0())
        .await
        .expect("mark");

    // First completion parks in the hook.
    let r = rotation.clone();
    let first = tokio::spawn(async move { r.complete_rotation(&id("a"), t0(), |_| {}).await });
    gate.entered.notified().await;
    assert_eq!(
        rotation.complete_rotation(&id("a"), t0(), |_| {}).await,
        Err(RotationError::CompletionInProgress { id: id("a") })
    );
    // Cancel it mid-hook: the credential stays and can be completed again.
    first.abort();
    assert!(first.await.is_err_and(|e| e.is_cancelled()));
    assert!(rotation.is_marked(&id("a")));

    let r = rotation.clone();
    let second = tokio::spawn(async move { r.complete_rotation(&id("a"), t0(), |_| {}).await });
    gate.entered.notified().await;
    gate.release.notify_one();
    let event = second.await.expect("join").expect("completed");
    assert_eq!(
        event.kind,
        EventKind::Decommissioned {
            credential: id("a")
        }
    );
    assert!(rotation.state(&id("a")).is_none());
}

#[tokio::test]
async fn noop_hooks_and_hook_error_conversions() {
    assert_eq!(NoopHooks.on_rotation_needed(&id("a")).await, Ok(()));
    assert_eq!(NoopHooks.on_decommission(&id("a")).await, Ok(()));
    let e: HookError = "no".into();
    assert_eq!(e.message(), "no");
    assert_eq!(e.to_string(), "no");
    assert_eq!(HookError::from(String::from("no")), HookError::new("no"));
    assert_eq!(format!("{e:?}"), "HookError(\"no\")");
}

#[test]
fn rotation_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let rotation = Rotation::without_hooks(RotationPolicy::default());
    assert_send(&rotation.complete_rotation(&id("a"), t0(), |_| {}));
    assert_send(&rotation.auto_decommission_expired(t0(), |_| {}));
    assert_send(&rotation.mark_for_rotation(&id("a"), id("b"), t0(), t0()));
}
