//! A throwaway PostgreSQL cluster for the tests, fresh databases in it, and stores on them.
//!
//! The server binaries come from `pg_config --bindir` (or `/usr/lib/postgresql/*/bin`). PostgreSQL
//! refuses to run as root, so as root the cluster belongs to the `postgres` user (`runuser`). Each
//! cluster lives in a temporary directory and is stopped and removed by its `Drop` guard; a
//! watchdog process also stops and removes it once this test process is gone, which covers the
//! cluster shared by the whole binary (a static, never dropped) and a test binary that was killed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use oauth_store::conformance::Fixture;
use oauth_store_postgres::{PostgresConfig, PostgresStore};
use tempfile::TempDir;

pub(crate) const P: &str = "anthropic";

pub(crate) fn id(s: &str) -> oauth_core::CredentialId {
    oauth_core::CredentialId::new(s).expect("valid id")
}

/// A running PostgreSQL cluster in a temporary directory.
pub(crate) struct Cluster {
    dir: TempDir,
    port: u16,
    bindir: PathBuf,
    as_postgres: bool,
    watchdog: Option<Child>,
}

fn bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect(
        "PostgreSQL server binaries not found (pg_config --bindir, /usr/lib/postgresql/*/bin): \
         install the `postgresql` package (.ci/run does)",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Cluster {
    /// initdb + start; panics (failing the test) with the server log when it cannot.
    pub(crate) fn start() -> Self {
        let bindir = bindir();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("oauth-pg-")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod temp dir");
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown postgres {}", dir.path().display());
        }
        let mut cluster = Self {
            dir,
            port: 0,
            bindir,
            as_postgres,
            watchdog: None,
        };
        let data = cluster.data();
        let out = cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "pool",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.watchdog = Some(cluster.spawn_watchdog());
        for attempt in 0..3 {
            cluster.port = free_port();
            if cluster.pg_ctl_start() {
                return cluster;
            }
            eprintln!(
                "postgres did not start on port {} (attempt {attempt})",
                cluster.port
            );
        }
        panic!("postgres did not start; log:\n{}", cluster.log());
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bindir.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn pg_ctl_start(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options, "-l"])
            .arg(self.log_path())
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the stopped cluster again on the same port.
    pub(crate) fn start_again(&self) {
        assert!(self.pg_ctl_start(), "restart failed; log:\n{}", self.log());
    }

    /// Stops the server (fast shutdown: sessions are terminated).
    pub(crate) fn stop(&self) {
        let ok = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pg_ctl stop failed; log:\n{}", self.log());
    }

    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgres://pool@127.0.0.1:{}/{db}", self.port)
    }

    /// A shell loop that stops the cluster and removes its directory once this process is gone.
    fn spawn_watchdog(&self) -> Child {
        let pg_ctl = self.bindir.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data().display()
            )
        } else {
            format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data().display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = shell_quote(self.dir.path()),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn watchdog")
    }

    /// A new, empty database; returns its URL.
    pub(crate) async fn fresh_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("admin connection");
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create database");
        drop(client);
        let _ = driver.await;
        self.url(&name)
    }
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        // The TempDir removes the directory.
    }
}

/// The cluster shared by every test of this binary that does not stop its server.
pub(crate) fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

/// Settings for tests: short timeouts (2 s connect, 3 s per operation, a ping every 0.5 s) so
/// outages show within seconds, with room for a loaded machine.
pub(crate) fn config(url: &str, replica: &str) -> PostgresConfig {
    PostgresConfig::from_url(url)
        .expect("url")
        .replica_id(replica)
        .pool_size(4)
        .connect_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(3))
        .health_interval(Duration::from_millis(500))
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(500))
}

pub(crate) async fn connect(config: PostgresConfig) -> PostgresStore {
    PostgresStore::connect(config).await.expect("connect")
}

/// A store on a fresh database of the shared cluster (for the conformance suite).
pub(crate) async fn fixture() -> Fixture {
    let url = shared().fresh_database().await;
    Fixture::new(std::sync::Arc::new(
        connect(config(&url, "conformance")).await,
    ))
}

/// A raw client for poking at the tables.
pub(crate) async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(connection);
    client
}

/// Polls `f` every 20 ms until it returns true or `within` passes.
pub(crate) async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
