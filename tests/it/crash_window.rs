//! The crash window (issue 13, item 7): between the token endpoint's answer and the durable save
//! of the rotated refresh token, a SIGKILL loses that rotation; no client can avoid it. This
//! measures how long the window is with the FileStore (temp file, fsync, rename, directory fsync)
//! and checks every rotated token is the one stored afterwards. The figure goes into
//! `docs/guides/persisting-tokens.md` and the integration table.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use oauth_manager::refresh::{RefreshError, Refresher, TokenSet};
use oauth_manager::store::{CredentialStore, FileStore, StoreError, Version, Versioned};
use oauth_manager::{Credential, CredentialId, ExposeSecret};
use serde_json::json;

use crate::support::{World, report};

/// Notes when the token endpoint's answer arrived.
#[derive(Debug)]
struct Timed {
    inner: Arc<dyn Refresher>,
    answered: Arc<Mutex<Option<Instant>>>,
}

#[async_trait]
impl Refresher for Timed {
    async fn refresh(&self, credential: &Credential) -> Result<TokenSet, RefreshError> {
        let result = self.inner.refresh(credential).await;
        *self.answered.lock().expect("lock") = Some(Instant::now());
        result
    }
}

/// Notes when a save became durable (FileStore returns after the directory fsync).
#[derive(Debug)]
struct TimedStore {
    inner: FileStore,
    answered: Arc<Mutex<Option<Instant>>>,
    windows: Arc<Mutex<Vec<Duration>>>,
}

#[async_trait]
impl CredentialStore for TimedStore {
    async fn load_all(&self, provider: &str) -> Result<Vec<Versioned<Credential>>, StoreError> {
        self.inner.load_all(provider).await
    }

    async fn load(
        &self,
        provider: &str,
        id: &CredentialId,
    ) -> Result<Option<Versioned<Credential>>, StoreError> {
        self.inner.load(provider, id).await
    }

    async fn save(
        &self,
        provider: &str,
        credential: &Credential,
        expected: Option<Version>,
    ) -> Result<Version, StoreError> {
        let version = self.inner.save(provider, credential, expected).await?;
        if let Some(answered) = self.answered.lock().expect("lock").take() {
            self.windows.lock().expect("lock").push(answered.elapsed());
        }
        Ok(version)
    }

    async fn delete(
        &self,
        provider: &str,
        id: &CredentialId,
        expected: Option<Version>,
    ) -> Result<(), StoreError> {
        self.inner.delete(provider, id, expected).await
    }

    async fn versions(
        &self,
        provider: &str,
    ) -> Result<std::collections::BTreeMap<CredentialId, Version>, StoreError> {
        self.inner.versions(provider).await
    }

    fn refresh_lock(&self) -> Option<Arc<dyn oauth_manager::store::RefreshLock>> {
        self.inner.refresh_lock()
    }
}

#[tokio::test]
async fn the_window_between_the_answer_and_the_durable_save_is_short_and_loses_nothing() {
    let world = World::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let answered = Arc::new(Mutex::new(None));
    let windows = Arc::new(Mutex::new(Vec::new()));
    let store = TimedStore {
        inner: FileStore::open(dir.path()).expect("store opens"),
        answered: Arc::clone(&answered),
        windows: Arc::clone(&windows),
    };
    let (a, _) = world.grant("a");
    let pool = world
        .builder(vec![a])
        .refresher(Timed {
            inner: world.refresher(),
            answered,
        })
        .store(store)
        .build()
        .await
        .expect("pool builds");
    let check = FileStore::open(dir.path()).expect("store opens");
    const ROUNDS: usize = 100;
    for _ in 0..ROUNDS {
        let refreshed = pool.refresh_now("a").await.expect("refreshed");
        let stored = check
            .load(crate::support::PROVIDER, &refreshed.id)
            .await
            .expect("readable")
            .expect("stored");
        assert_eq!(
            stored
                .value
                .refresh_token
                .as_ref()
                .map(|t| t.expose_secret()),
            refreshed.refresh_token.as_ref().map(|t| t.expose_secret()),
            "the rotated token is durable before the pool uses it"
        );
    }
    let mut windows = windows.lock().expect("lock").clone();
    assert_eq!(windows.len(), ROUNDS);
    windows.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let stats = world.tokens.stats();
    assert_eq!((stats.reused_refresh_tokens, stats.invalid_grants), (0, 0));
    report(
        module_path!(),
        json!({
            "refreshes": ROUNDS,
            "window_median_ms": ms(windows[ROUNDS / 2]),
            "window_p99_ms": ms(windows[ROUNDS * 99 / 100]),
            "window_max_ms": ms(windows[ROUNDS - 1]),
            "reused_refresh_tokens": stats.reused_refresh_tokens,
        }),
    );
}
