//! `FileStore` specifics: file modes, permission and corruption errors (typed, naming the file,
//! never quoting a secret), and two store handles sharing one directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use oauth_core::CredentialId;
use oauth_store::{CredentialStore, FileStore, SCHEMA_VERSION, StoreError};

use crate::support::{SECRET_MARKER, assert_no_secret, cred, full};

const P: &str = "anthropic";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

async fn store_with_one() -> (tempfile::TempDir, FileStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FileStore::open(dir.path().join("state")).expect("open");
    store.save(P, &cred("a", 1), None).await.expect("create");
    (dir, store)
}

#[tokio::test]
async fn files_are_private_json_with_deliberately_persisted_secrets() {
    let (_dir, store) = store_with_one().await;
    let path = store.file_path(P);
    assert_eq!(path, store.dir().join("anthropic.json"));
    assert_eq!(mode(store.dir()), 0o700, "directory created 0700");
    assert_eq!(mode(&path), 0o600, "file created 0600");
    store.save(P, &cred("a", 2), Some(1)).await.expect("cas");
    assert_eq!(mode(&path), 0o600, "still 0600 after a rewrite");

    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("read")).expect("valid JSON");
    assert_eq!(json["schema"], SCHEMA_VERSION);
    assert_eq!(json["provider"], P);
    assert_eq!(json["credentials"]["a"]["version"], 2);
    assert_eq!(
        json["credentials"]["a"]["credential"]["refresh_token"],
        format!("rt-a-2-{SECRET_MARKER}"),
        "the store persists the secret on purpose"
    );
    let leftovers: Vec<_> = fs::read_dir(store.dir())
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test]
async fn readable_by_others_is_refused_with_a_clear_error() {
    let (_dir, store) = store_with_one().await;
    let path = store.file_path(P);
    for bad in [0o644, 0o640, 0o604, 0o660] {
        chmod(&path, bad);
        let err = store.load_all(P).await.expect_err("insecure");
        assert!(
            matches!(&err, StoreError::InsecurePermissions { path: p, mode } if p == &path && *mode == bad),
            "{err:?}"
        );
        let msg = err.to_string();
        assert_eq!(
            msg,
            format!(
                "credential store file {} is accessible by group or others (mode {bad:04o}); \
                 it holds secrets: run `chmod 600` on it",
                path.display()
            )
        );
        assert_no_secret(&format!("{msg} {err:?}"));
        assert!(!err.is_retryable());
        // Writes refuse too, and leave the file alone.
        let err = store
            .save(P, &cred("b", 1), None)
            .await
            .expect_err("insecure");
        assert!(
            matches!(err, StoreError::InsecurePermissions { .. }),
            "{err:?}"
        );
        assert_eq!(mode(&path), bad);
    }
    chmod(&path, 0o600);
    assert_eq!(store.load_all(P).await.expect("fixed").len(), 1);
}

/// Replaces the file's content, then checks reads and writes both fail with `Corrupt` naming the
/// file, that the message holds no secret, and that the file is left byte for byte as it was.
async fn assert_corrupt(content: &[u8], detail_starts: &str) {
    let (_dir, store) = store_with_one().await;
    let path = store.file_path(P);
    fs::write(&path, content).expect("overwrite");
    for err in [
        store.load_all(P).await.expect_err("corrupt"),
        store.versions(P).await.expect_err("corrupt"),
        store
            .save(P, &cred("b", 1), None)
            .await
            .expect_err("corrupt"),
    ] {
        let StoreError::Corrupt { path: p, detail } = &err else {
            panic!("expected Corrupt, got {err:?}");
        };
        assert_eq!(p, &path);
        assert!(detail.starts_with(detail_starts), "detail: {detail}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "corrupt credential store file {}: ",
                path.display()
            )),
            "{msg}"
        );
        assert_no_secret(&format!("{msg} {err:?}"));
        assert!(!err.is_retryable());
    }
    assert_eq!(fs::read(&path).expect("read"), content, "never replaced");
}

#[tokio::test]
async fn truncated_file_is_corrupt() {
    let (_dir, store) = store_with_one().await;
    let bytes = fs::read(store.file_path(P)).expect("read");
    // Cut inside the refresh token, so a careless message would quote part of it.
    let text = String::from_utf8(bytes).expect("utf-8");
    let cut = text.find(SECRET_MARKER).expect("secret present") + 4;
    assert_corrupt(
        &text.as_bytes()[..cut],
        "unexpected end of data (truncated file?) at line",
    )
    .await;
}

#[tokio::test]
async fn garbage_is_corrupt() {
    assert_corrupt(b"\x00\x01garbage SECRETVALUE {", "invalid JSON at line 1").await;
}

#[tokio::test]
async fn empty_file_is_corrupt_not_an_empty_store() {
    assert_corrupt(b"", "the file is empty").await;
}

#[tokio::test]
async fn wrong_types_are_corrupt_without_quoting_values() {
    // serde_json's own message would quote the string; ours must not.
    let body = format!(
        r#"{{"schema":1,"provider":"anthropic","credentials":{{"a":{{"version":1,"credential":
        {{"id":"a","access_token":"at","refresh_count":"{SECRET_MARKER}-rt","created_at":"2026-01-01T00:00:00Z"}}}}}}}}"#
    );
    assert_corrupt(body.as_bytes(), "unexpected content").await;
}

#[tokio::test]
async fn entry_under_the_wrong_id_is_corrupt() {
    let (_dir, store) = store_with_one().await;
    let text = fs::read_to_string(store.file_path(P)).expect("read");
    let swapped = text.replacen("\"a\": {", "\"b\": {", 1);
    assert_ne!(text, swapped);
    assert_corrupt(swapped.as_bytes(), "entry b holds credential a").await;
}

#[tokio::test]
async fn file_of_another_provider_is_refused() {
    let (_dir, store) = store_with_one().await;
    fs::copy(store.file_path(P), store.file_path("openai")).expect("copy");
    let err = store.load_all("openai").await.expect_err("wrong provider");
    assert!(
        err.to_string()
            .ends_with("the file belongs to provider \"anthropic\", not \"openai\""),
        "{err}"
    );
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let (_dir, store) = store_with_one().await;
    let path = store.file_path(P);
    let text = fs::read_to_string(&path).expect("read");
    fs::write(&path, text.replacen("\"schema\": 1", "\"schema\": 2", 1)).expect("write");
    let err = store.load_all(P).await.expect_err("schema");
    assert!(
        matches!(
            err,
            StoreError::UnsupportedSchema {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "credential store file {} has schema version 2; this version reads schema 1",
            path.display()
        )
    );
}

#[tokio::test]
async fn two_handles_on_one_directory_see_and_respect_each_other() {
    let (dir, one) = store_with_one().await;
    let two = FileStore::open(dir.path().join("state")).expect("open again");
    let a = CredentialId::new("a").expect("id");
    let seen = two.load(P, &a).await.expect("load").expect("stored");
    assert_eq!(full(&seen.value), full(&cred("a", 1)));
    two.save(P, &cred("a", 2), Some(seen.version))
        .await
        .expect("cas");
    let err = one
        .save(P, &cred("a", 3), Some(1))
        .await
        .expect_err("stale");
    assert!(err.is_conflict());
    assert_eq!(one.versions(P).await.expect("versions")[&a], 2);
}

#[test]
fn open_refuses_a_file_as_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("f");
    fs::write(&file, b"x").expect("write");
    let err = FileStore::open(&file).expect_err("not a directory");
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn a_writer_waits_for_the_store_lock_and_times_out_with_a_typed_error() {
    let (_dir, store) = store_with_one().await;
    let store = store.with_lock_timeout(std::time::Duration::from_millis(80));
    // Another process in the middle of a write holds `<provider>.json.lock`.
    let lock_path = store.dir().join("anthropic.json.lock");
    let held = fs::File::open(&lock_path).expect("lock file exists after a write");
    held.lock().expect("lock");
    let err = store
        .save(P, &cred("b", 1), None)
        .await
        .expect_err("locked");
    assert!(
        matches!(
            &err,
            StoreError::LockTimeout {
                what: "store",
                id: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(
        err.to_string().starts_with("timed out after ")
            && err
                .to_string()
                .ends_with("waiting for the store lock of provider \"anthropic\""),
        "{err}"
    );
    // Reads do not need the lock.
    assert_eq!(store.load_all(P).await.expect("read while locked").len(), 1);
    held.unlock().expect("unlock");
    assert_eq!(store.save(P, &cred("b", 1), None).await.expect("write"), 1);
}
