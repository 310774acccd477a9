//! Shared helpers: credentials with recognisable secrets, store fixtures, child processes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oauth_core::Credential;
use oauth_store::{CredentialStore, FileStore, MemoryStore};
use tempfile::TempDir;

/// Every secret this suite creates contains this marker, so outputs can be searched for any of them.
pub(crate) const SECRET_MARKER: &str = "SECRETVALUE";

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

/// A credential whose tokens encode `id` and `generation`, all marked secret.
pub(crate) fn cred(id: &str, generation: u64) -> Credential {
    let mut c = Credential::new(id, format!("at-{id}-{generation}-{SECRET_MARKER}"), t0())
        .expect("valid credential")
        .with_refresh_token(format!("rt-{id}-{generation}-{SECRET_MARKER}"))
        .with_client("client-1", Some(format!("cs-{SECRET_MARKER}")))
        .with_expires_at(t0() + TimeDelta::hours(1))
        .with_scopes(["a", "b"]);
    c.refresh_count = generation;
    c
}

/// All fields, secrets included, as JSON: equal iff the credentials are equal.
pub(crate) fn full(c: &Credential) -> serde_json::Value {
    serde_json::to_value(c.persisted()).expect("serializable")
}

pub(crate) fn assert_no_secret(text: &str) {
    assert!(
        !text.contains(SECRET_MARKER),
        "output leaks a secret: {text}"
    );
}

/// A store under test, with whatever must outlive it.
pub(crate) struct Fixture {
    pub(crate) store: Arc<dyn CredentialStore>,
    pub(crate) _dir: Option<TempDir>,
}

pub(crate) fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
    }
}

pub(crate) fn file() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    Fixture {
        store: Arc::new(FileStore::open(dir.path()).expect("open store")),
        _dir: Some(dir),
    }
}

// ---- child processes ----

/// Prefix of the lines a child prints for its parent (libtest prints its own lines too).
pub(crate) const LINE_PREFIX: &str = "@@ ";

/// Runs the ignored test `name` of this binary as a child process with `envs` set.
pub(crate) fn spawn_child(name: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child test process")
}

/// Forwards a child's prefixed stdout lines to a channel (from a thread; ends at EOF).
pub(crate) fn child_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may have printed `test name ... ` on the same line first.
            if let Some(at) = line.find(LINE_PREFIX)
                && tx.send(line[at + LINE_PREFIX.len()..].to_owned()).is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Prints one line for the parent and flushes it at once (children only).
pub(crate) fn tell_parent(msg: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{LINE_PREFIX}{msg}").expect("write to parent");
    out.flush().expect("flush to parent");
}

/// A current-thread tokio runtime for child processes (they run as plain `#[test]`s).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A small deterministic PRNG (xorshift64*), seeded per run and printed for reproduction.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn from_time() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos());
        // Truncation is fine: any non-zero seed will do.
        let seed = (nanos as u64) ^ u64::from(std::process::id()) | 1;
        Self(seed)
    }

    pub(crate) fn seed(&self) -> u64 {
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}
