//! Several processes writing into one store directory: nobody loses anybody's update.

use std::time::Duration;

use oauth_core::CredentialId;
use oauth_store::{CredentialStore, FileStore};

use crate::support::{child_lines, cred, full, runtime, spawn_child, tell_parent};

const P: &str = "shared";
const DIR_VAR: &str = "OAUTH_STORE_WRITER_DIR";
const MODE_VAR: &str = "OAUTH_STORE_WRITER_MODE";
const ID_VAR: &str = "OAUTH_STORE_WRITER_ID";
const COUNT_VAR: &str = "OAUTH_STORE_WRITER_COUNT";

fn run_writers(dir: &std::path::Path, mode: &str, ids: &[&str], count: u64) -> Vec<String> {
    let children: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut child = spawn_child(
                "multiprocess::child_writer",
                &[
                    (DIR_VAR, dir.display().to_string()),
                    (MODE_VAR, mode.to_owned()),
                    (ID_VAR, (*id).to_owned()),
                    (COUNT_VAR, count.to_string()),
                ],
            );
            let lines = child_lines(child.stdout.take().expect("stdout"));
            (child, lines)
        })
        .collect();
    children
        .into_iter()
        .map(|(mut child, lines)| {
            let report = lines
                .recv_timeout(Duration::from_secs(120))
                .expect("writer reports when done");
            let status = child.wait().expect("wait");
            assert!(status.success(), "writer failed: {status}");
            report
        })
        .collect()
}

#[test]
fn two_processes_saving_1000_times_each_lose_nothing() {
    const SAVES: u64 = 1_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let reports = run_writers(dir.path(), "own", &["writer-a", "writer-b"], SAVES);
    assert_eq!(reports, ["done", "done"]);

    let store = FileStore::open(dir.path()).expect("open");
    let all = runtime().block_on(store.load_all(P)).expect("load");
    assert_eq!(all.len(), 2);
    for (v, id) in all.iter().zip(["writer-a", "writer-b"]) {
        assert_eq!(v.value.id, id);
        assert_eq!(
            full(&v.value),
            full(&cred(id, SAVES)),
            "last write of {id} is there"
        );
        assert_eq!(v.version, SAVES);
    }
}

#[test]
fn four_processes_incrementing_one_credential_lose_no_increment() {
    const EACH: u64 = 50;
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = runtime();
    let store = FileStore::open(dir.path()).expect("open");
    rt.block_on(store.save(P, &cred("counter", 0), None))
        .expect("create");
    let reports = run_writers(dir.path(), "increment", &["p1", "p2", "p3", "p4"], EACH);
    let conflicts: u64 = reports
        .iter()
        .map(|r| {
            r.strip_prefix("conflicts ")
                .and_then(|n| n.parse::<u64>().ok())
                .expect("conflict count")
        })
        .sum();
    let id = CredentialId::new("counter").expect("id");
    let end = rt
        .block_on(store.load(P, &id))
        .expect("load")
        .expect("stored");
    assert_eq!(
        end.value.refresh_count,
        4 * EACH,
        "every increment is there"
    );
    assert_eq!(end.version, 4 * EACH + 1);
    eprintln!("4 processes x {EACH} increments: {conflicts} compare-and-set conflicts retried");
}

/// Child process. Mode `own`: creates its credential, then saves it `count` more times with
/// compare-and-set. Mode `increment`: increments the shared `counter` credential `count` times,
/// re-reading on conflict.
#[test]
#[ignore = "child process of the multi-process tests"]
fn child_writer() {
    let (Ok(dir), Ok(mode), Ok(id), Ok(count)) = (
        std::env::var(DIR_VAR),
        std::env::var(MODE_VAR),
        std::env::var(ID_VAR),
        std::env::var(COUNT_VAR),
    ) else {
        return;
    };
    let count: u64 = count.parse().expect("count");
    runtime().block_on(async {
        let store = FileStore::open(dir).expect("open");
        if mode == "own" {
            let mut version = store.save(P, &cred(&id, 1), None).await.expect("create");
            for generation in 2..=count {
                version = store
                    .save(P, &cred(&id, generation), Some(version))
                    .await
                    .expect("no one else writes this credential");
            }
            tell_parent("done");
        } else {
            let counter = CredentialId::new("counter").expect("id");
            let mut conflicts = 0u64;
            for _ in 0..count {
                loop {
                    let cur = store
                        .load(P, &counter)
                        .await
                        .expect("load")
                        .expect("stored");
                    let next = cred("counter", cur.value.refresh_count + 1);
                    match store.save(P, &next, Some(cur.version)).await {
                        Ok(_) => break,
                        Err(e) if e.is_conflict() => conflicts += 1,
                        Err(e) => panic!("save failed: {e}"),
                    }
                }
            }
            tell_parent(&format!("conflicts {conflicts}"));
        }
    });
}
