//! Shared helpers: fixtures with recognisable secrets, JWTs, child processes, a small PRNG.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;

use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

/// Every secret in the fixtures and tests contains this marker, so outputs can be searched for
/// any of them.
pub(crate) const SECRET_MARKER: &str = "SECRETVALUE";

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

pub(crate) fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).expect("fixture")
}

/// An unsigned JWT with these claims (the signature part carries the secret marker).
pub(crate) fn jwt(claims: &Value) -> String {
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.sig-{SECRET_MARKER}",
        enc.encode(br#"{"alg":"RS256"}"#),
        enc.encode(claims.to_string())
    )
}

/// A Codex `auth.json` as codex-rs writes it (pretty, two-space indent), with an id token whose
/// claims hold the e-mail, plan and account id, and an access token whose `exp` is the expiry.
pub(crate) fn codex_auth_json() -> Vec<u8> {
    let id_token = jwt(&json!({
        "email": "coder@example.com",
        "https://api.openai.com/auth": {
            "chatgpt_plan_type": "pro",
            "chatgpt_account_id": "acct-from-claims",
            "chatgpt_user_id": "user-1"
        },
        "exp": 1_767_225_600
    }));
    let access_token = jwt(&json!({"exp": 1_767_225_600, "scp": ["openid"]}));
    let mut out = serde_json::to_vec_pretty(&json!({
        "OPENAI_API_KEY": null,
        "tokens": {
            "id_token": id_token,
            "access_token": access_token,
            "refresh_token": format!("rt-codex-{SECRET_MARKER}"),
            "account_id": "acct-in-file"
        },
        "last_refresh": "2025-12-31T12:00:00.123456Z",
        "agent_identity": {"kept": "as is"}
    }))
    .expect("json");
    out.push(b'\n');
    out
}

pub(crate) fn assert_no_secret(text: &str) {
    assert!(
        !text.contains(SECRET_MARKER),
        "output leaks a secret: {text}"
    );
}

pub(crate) fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

/// Replaces a file the way the CLIs do (write a temporary file, rename it over).
pub(crate) fn replace_like_cli(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("cli-tmp");
    std::fs::write(&tmp, bytes).expect("write tmp");
    std::fs::rename(&tmp, path).expect("rename");
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

/// A small deterministic PRNG (xorshift64*), seeded per run and printed for reproduction.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn from_time() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos());
        #[allow(clippy::cast_possible_truncation)] // any non-zero seed will do
        Self::new((nanos as u64) ^ u64::from(std::process::id()))
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
