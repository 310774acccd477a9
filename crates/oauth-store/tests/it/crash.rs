//! Crash safety: a child process saves credentials in a loop and is killed with SIGKILL at random
//! moments; after every kill the file loads and holds exactly the last committed state or the one
//! after it (the write in flight committed but was not reported yet) — never a mix, never empty.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use oauth_store::{CredentialStore, FileStore};

use crate::support::{Rng, child_lines, cred, full, runtime, spawn_child, tell_parent};

const P: &str = "crashy";
const IDS: [&str; 3] = ["c0", "c1", "c2"];
const KILLS: usize = 100;
const DIR_VAR: &str = "OAUTH_STORE_CRASH_DIR";

/// Step `s` writes credential `s % 3` with generation `s`. The state after step `m` (`m >= 2`):
/// each credential holds the last step of its own that is `<= m`, at version `step / 3 + 1`.
fn expected_state(m: u64) -> Vec<(u64, u64)> {
    (0..3u64)
        .map(|k| {
            let step = m - (m - k) % 3;
            (step, step / 3 + 1)
        })
        .collect()
}

/// Loads the store and checks it is a whole state; returns its step.
fn check_consistent(dir: &Path, context: &str) -> u64 {
    let all = runtime()
        .block_on(FileStore::open(dir).expect("open").load_all(P))
        .unwrap_or_else(|e| panic!("{context}: the store must load after a crash: {e}"));
    assert_eq!(
        all.len(),
        IDS.len(),
        "{context}: never empty, never partial"
    );
    for v in &all {
        // Tokens, generation and every other field belong to one write.
        assert_eq!(
            full(&v.value),
            full(&cred(v.value.id.as_str(), v.value.refresh_count)),
            "{context}: mixed credential"
        );
    }
    let m = all.iter().map(|v| v.value.refresh_count).max().unwrap_or(0);
    let state: Vec<(u64, u64)> = all
        .iter()
        .map(|v| (v.value.refresh_count, v.version))
        .collect();
    assert_eq!(
        state,
        expected_state(m),
        "{context}: not a state the writer produced"
    );
    m
}

#[test]
fn sigkill_during_saves_never_corrupts_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = runtime();
    let store = FileStore::open(dir.path()).expect("open");
    for (step, id) in IDS.iter().enumerate() {
        rt.block_on(store.save(P, &cred(id, step as u64), None))
            .expect("initial state");
    }
    let mut known = 2u64;
    let mut rng = Rng::from_time();
    let seed = rng.seed();
    let mut committed_after_last_report = 0;
    for round in 0..KILLS {
        let context = format!("round {round} (seed {seed})");
        let mut child = spawn_child(
            "crash::child_saver",
            &[(DIR_VAR, dir.path().display().to_string())],
        );
        let lines = child_lines(child.stdout.take().expect("stdout"));
        // Wait until the child is inside its save loop, then kill it a random moment later.
        let first = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{context}: child never committed: {e}"));
        assert!(first.starts_with("committed "), "{context}: {first}");
        std::thread::sleep(Duration::from_micros(rng.below(8_000)));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert_eq!(
            status.signal(),
            Some(9),
            "{context}: the child must die by SIGKILL"
        );

        let mut last_reported = known;
        let mut line = Some(first);
        loop {
            if let Some(l) = line.take() {
                let step: u64 = l
                    .strip_prefix("committed ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{context}: bad line {l:?}"));
                assert!(step > last_reported, "{context}: steps go forward");
                last_reported = step;
            }
            match lines.recv_timeout(Duration::from_secs(10)) {
                Ok(l) => line = Some(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("{context}: stdout never closed"),
            }
        }

        let m = check_consistent(dir.path(), &context);
        assert!(
            m == last_reported || m == last_reported + 1,
            "{context}: file at step {m}, child last reported {last_reported}"
        );
        if m == last_reported + 1 {
            committed_after_last_report += 1;
        }
        known = m;
    }
    let leftovers = std::fs::read_dir(dir.path())
        .expect("read dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert!(
        leftovers <= 1,
        "stale temporary files are cleaned up: {leftovers}"
    );
    eprintln!(
        "crash test: {KILLS} kills, final step {known}, {committed_after_last_report} kills \
         landed between a commit and its report, seed {seed}"
    );
}

/// Child process: continues the step sequence from what is stored, reporting each commit.
#[test]
#[ignore = "child process of sigkill_during_saves_never_corrupts_the_file"]
fn child_saver() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    runtime().block_on(async {
        let store = FileStore::open(dir).expect("open");
        let all = store.load_all(P).await.expect("load");
        let mut versions: Vec<u64> = all.iter().map(|v| v.version).collect();
        let start = all
            .iter()
            .map(|v| v.value.refresh_count)
            .max()
            .expect("initialized");
        // Bounded, in case the parent dies without killing us.
        for step in start + 1..start + 100_000 {
            let k = usize::try_from(step % 3).expect("small");
            let v = store
                .save(P, &cred(IDS[k], step), Some(versions[k]))
                .await
                .expect("save");
            versions[k] = v;
            tell_parent(&format!("committed {step}"));
        }
    });
}
