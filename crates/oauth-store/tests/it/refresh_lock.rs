//! The file store's refresh lock across processes and store handles.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use oauth_core::CredentialId;
use oauth_store::{CredentialStore, FileStore, StoreError};

use crate::support::{child_lines, runtime, spawn_child, tell_parent};

const P: &str = "anthropic";
const DIR_VAR: &str = "OAUTH_STORE_LOCK_DIR";
const MODE_VAR: &str = "OAUTH_STORE_LOCK_MODE";

fn id(s: &str) -> CredentialId {
    CredentialId::new(s).expect("valid id")
}

fn try_acquire(dir: &Path, cred: &str, timeout: Duration) -> Result<(), StoreError> {
    let store = FileStore::open(dir).expect("open");
    let lock = store.refresh_lock().expect("file store has a refresh lock");
    runtime()
        .block_on(lock.acquire(P, &id(cred), timeout))
        .map(drop)
}

#[test]
fn a_lock_held_by_another_process_excludes_until_released() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = spawn_child(
        "refresh_lock::child_lock_holder",
        &[
            (DIR_VAR, dir.path().display().to_string()),
            (MODE_VAR, "hold".to_owned()),
        ],
    );
    let lines = child_lines(child.stdout.take().expect("stdout"));
    assert_eq!(
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("child locks"),
        "locked"
    );
    let err = try_acquire(dir.path(), "a", Duration::from_millis(100)).expect_err("held");
    assert!(matches!(err, StoreError::LockTimeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "timed out after {:?} waiting for the refresh lock of provider \"anthropic\", credential a",
            match &err {
                StoreError::LockTimeout { waited, .. } => *waited,
                _ => Duration::ZERO,
            }
        )
    );
    try_acquire(dir.path(), "b", Duration::from_millis(100)).expect("other credential is free");

    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "release").expect("tell child");
    stdin.flush().expect("flush");
    assert_eq!(
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("child releases"),
        "released"
    );
    try_acquire(dir.path(), "a", Duration::from_secs(5)).expect("released on drop");
    drop(stdin);
    assert!(child.wait().expect("wait").success());
}

#[test]
fn a_killed_holder_releases_its_lock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = spawn_child(
        "refresh_lock::child_lock_holder",
        &[
            (DIR_VAR, dir.path().display().to_string()),
            (MODE_VAR, "hold".to_owned()),
        ],
    );
    let lines = child_lines(child.stdout.take().expect("stdout"));
    assert_eq!(
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("child locks"),
        "locked"
    );
    try_acquire(dir.path(), "a", Duration::from_millis(100)).expect_err("held");
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    try_acquire(dir.path(), "a", Duration::from_secs(5)).expect("the kernel released it");
}

/// Two processes increment a plain counter file under the lock, with a pause between read and
/// write: without mutual exclusion, increments would be lost.
#[test]
fn two_processes_never_hold_the_lock_at_once() {
    const EACH: u64 = 40;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("counter"), "0").expect("counter");
    let children: Vec<_> = (0..2)
        .map(|_| {
            let mut child = spawn_child(
                "refresh_lock::child_lock_holder",
                &[
                    (DIR_VAR, dir.path().display().to_string()),
                    (MODE_VAR, format!("count {EACH}")),
                ],
            );
            let lines = child_lines(child.stdout.take().expect("stdout"));
            (child, lines)
        })
        .collect();
    for (mut child, lines) in children {
        assert_eq!(
            lines.recv_timeout(Duration::from_secs(60)).expect("done"),
            "counted"
        );
        assert!(child.wait().expect("wait").success());
    }
    let n = std::fs::read_to_string(dir.path().join("counter")).expect("counter");
    assert_eq!(n, (2 * EACH).to_string(), "no increment lost");
}

#[tokio::test]
async fn two_store_handles_in_one_process_exclude_each_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let one = FileStore::open(dir.path()).expect("open");
    let two = FileStore::open(dir.path()).expect("open");
    let (l1, l2) = (
        one.refresh_lock().expect("lock"),
        two.refresh_lock().expect("lock"),
    );
    let odd = id("team/a b.c");
    let held = l1
        .acquire(P, &odd, Duration::from_secs(1))
        .await
        .expect("free");
    assert!(
        l2.acquire(P, &odd, Duration::from_millis(60))
            .await
            .is_err_and(|e| matches!(e, StoreError::LockTimeout { .. }))
    );
    drop(held);
    let _held = l2
        .acquire(P, &odd, Duration::from_secs(1))
        .await
        .expect("released");
    let files: Vec<String> = std::fs::read_dir(dir.path().join("locks"))
        .expect("locks dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["anthropic.team%2Fa%20b%2Ec.lock"]);
}

/// Child process. Mode `hold`: takes the lock of `a`, reports, waits for `release` on stdin, drops
/// the guard, reports, waits for stdin to close. Mode `count N`: N times, takes the lock of `a`
/// and increments the `counter` file slowly.
#[test]
#[ignore = "child process of the refresh-lock tests"]
fn child_lock_holder() {
    let (Ok(dir), Ok(mode)) = (std::env::var(DIR_VAR), std::env::var(MODE_VAR)) else {
        return;
    };
    runtime().block_on(async {
        let store = FileStore::open(&dir).expect("open");
        let lock = store.refresh_lock().expect("lock");
        if mode == "hold" {
            let guard = lock
                .acquire(P, &id("a"), Duration::from_secs(10))
                .await
                .expect("lock");
            tell_parent("locked");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).expect("stdin");
            assert_eq!(line.trim(), "release");
            drop(guard);
            tell_parent("released");
            line.clear();
            std::io::stdin().read_line(&mut line).expect("stdin");
        } else {
            let n: u64 = mode
                .strip_prefix("count ")
                .and_then(|n| n.parse().ok())
                .expect("count");
            let counter = Path::new(&dir).join("counter");
            for _ in 0..n {
                let _guard = lock
                    .acquire(P, &id("a"), Duration::from_secs(30))
                    .await
                    .expect("lock");
                let value: u64 = std::fs::read_to_string(&counter)
                    .expect("read")
                    .parse()
                    .expect("number");
                tokio::time::sleep(Duration::from_millis(2)).await;
                std::fs::write(&counter, (value + 1).to_string()).expect("write");
            }
            tell_parent("counted");
        }
    });
}
