//! The stores: compare-and-set on the file's content, malformed files never overwritten, the
//! file's mode kept, account directories with mixed formats, secrets kept out of outputs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::TimeDelta;
use oauth_accounts::{AccountDir, CliFile, providers};
use oauth_core::{CredentialId, ExposeSecret, TokenSet};
use oauth_store::{CredentialStore, StoreError};

use crate::support::{
    SECRET_MARKER, assert_no_secret, codex_auth_json, fixture, read_json, replace_like_cli, t0,
};

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("meta").permissions().mode() & 0o777
}

fn rt(c: &oauth_core::Credential) -> &str {
    c.refresh_token
        .as_ref()
        .map(ExposeSecret::expose_secret)
        .unwrap_or_default()
}

fn rotate(c: &oauth_core::Credential, tag: &str) -> oauth_core::Credential {
    let mut c = c.clone();
    let mut t = TokenSet::new(format!("at-{tag}-{SECRET_MARKER}"))
        .with_refresh_token(format!("rt-{tag}-{SECRET_MARKER}"));
    t.expires_at = Some(t0() + TimeDelta::hours(1));
    c.apply_tokens(t, t0());
    c
}

#[tokio::test]
async fn cli_file_compare_and_set_refuses_a_write_based_on_older_content() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("oauth_creds.json");
    fs::write(&path, fixture("gemini_oauth_creds.json")).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
    let store = CliFile::gemini(&path).expect("open");
    let (p, id) = (providers::GEMINI, store.id().clone());
    assert_eq!(id, "gemini-cli");

    let v1 = store.load(p, &id).await.expect("load").expect("stored");
    assert_eq!(v1.version, 1);
    let v2 = store
        .save(p, &rotate(&v1.value, "pool"), Some(v1.version))
        .await
        .expect("save");
    assert_eq!(v2, 2);
    assert_eq!(mode(&path), 0o640, "the file's mode is kept");
    let on_disk = read_json(&path);
    assert_eq!(on_disk["refresh_token"], format!("rt-pool-{SECRET_MARKER}"));
    assert_eq!(on_disk["future_field"]["flag"], true, "unknown fields kept");

    // A stale version is refused; the file is untouched.
    let before = fs::read(&path).expect("read");
    let err = store
        .save(p, &rotate(&v1.value, "stale"), Some(v1.version))
        .await
        .expect_err("stale");
    assert!(err.is_conflict(), "{err}");
    assert_no_secret(&err.to_string());
    assert_eq!(fs::read(&path).expect("read"), before);

    // The CLI refreshes between our read and our write: our write is refused, its tokens stay.
    let ours = store.load(p, &id).await.expect("load").expect("stored");
    assert_eq!(ours.version, 2);
    let mut cli = read_json(&path);
    cli["refresh_token"] = format!("rt-cli-{SECRET_MARKER}").into();
    cli["access_token"] = format!("at-cli-{SECRET_MARKER}").into();
    replace_like_cli(&path, cli.to_string().as_bytes());
    let err = store
        .save(p, &rotate(&ours.value, "late"), Some(ours.version))
        .await
        .expect_err("the CLI wrote first");
    match &err {
        StoreError::Conflict {
            expected, actual, ..
        } => {
            assert_eq!(*expected, Some(2));
            assert_eq!(*actual, Some(3), "the CLI's content is version 3");
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(
        read_json(&path)["refresh_token"],
        format!("rt-cli-{SECRET_MARKER}")
    );
    let adopted = store.load(p, &id).await.expect("load").expect("stored");
    assert_eq!(adopted.version, 3);
    assert_eq!(rt(&adopted.value), format!("rt-cli-{SECRET_MARKER}"));
    assert_no_secret(&format!("{store:?} {adopted:?}"));

    // Versions are the cheap poll; the single-file store holds only its own account.
    let versions = store.versions(p).await.expect("versions");
    assert_eq!(versions.get(&id), Some(&3));
    assert!(
        store
            .versions(providers::OPENAI)
            .await
            .expect("v")
            .is_empty()
    );
    let other = rotate(&adopted.value, "x");
    let mut other = other;
    other.id = CredentialId::new("someone-else").expect("id");
    assert!(store.save(p, &other, None).await.is_err());
}

#[tokio::test]
async fn a_missing_cli_file_is_created_in_the_cli_format_with_mode_0600() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join(".codex").join("auth.json");
    let store = CliFile::codex(&path).expect("open creates the directory");
    let (p, id) = (providers::OPENAI, store.id().clone());
    assert!(store.load(p, &id).await.expect("load").is_none());
    let mut cred = oauth_core::Credential::new(id.as_str(), format!("at-{SECRET_MARKER}"), t0())
        .expect("cred")
        .with_refresh_token(format!("rt-{SECRET_MARKER}"));
    cred.metadata.account_id = Some("acct-1".into());
    assert!(
        store
            .save(p, &cred, Some(1))
            .await
            .expect_err("nothing stored")
            .is_conflict()
    );
    assert_eq!(store.save(p, &cred, None).await.expect("create"), 1);
    assert_eq!(mode(&path), 0o600);
    let v = read_json(&path);
    assert_eq!(v["tokens"]["account_id"], "acct-1");
    assert!(v["OPENAI_API_KEY"].is_null());
    assert!(
        store
            .save(p, &cred, None)
            .await
            .expect_err("exists")
            .is_conflict()
    );
    // No temporary or stray files besides the lock file.
    let names: Vec<String> = fs::read_dir(path.parent().expect("parent"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n == "auth.json" || n.ends_with(".lock")),
        "{names:?}"
    );

    store.delete(p, &id, Some(1)).await.expect("delete");
    assert!(!path.exists());
    assert!(matches!(
        store.delete(p, &id, None).await,
        Err(StoreError::NotFound { .. })
    ));
    // Created again, it continues from the deleted version.
    assert_eq!(store.save(p, &cred, None).await.expect("create"), 2);
}

#[tokio::test]
async fn a_malformed_file_is_a_typed_error_and_never_overwritten() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join(".credentials.json");
    let garbage = format!(r#"{{"claudeAiOauth": {{"accessToken": "sk-{SECRET_MARKER}""#);
    fs::write(&path, &garbage).expect("write");
    let store = CliFile::claude(&path).expect("open");
    let (p, id) = (providers::ANTHROPIC, store.id().clone());
    let err = store.load(p, &id).await.expect_err("malformed");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(".credentials.json"), "{text}");
    assert_no_secret(&text);
    assert_no_secret(&format!("{err:?}"));
    let problem = store.problem().expect("a problem is reported");
    assert_no_secret(&problem.detail);

    let cred = oauth_core::Credential::new(id.as_str(), "at", t0()).expect("cred");
    for expected in [None, Some(1)] {
        let err = store.save(p, &cred, expected).await.expect_err("refused");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
    assert!(store.delete(p, &id, None).await.is_err());
    assert_eq!(
        fs::read_to_string(&path).expect("read"),
        garbage,
        "never overwritten"
    );
    assert!(store.load_all(p).await.expect("load_all").is_empty());

    // Repaired, it is read again.
    fs::write(&path, fixture("claude_credentials.json")).expect("repair");
    let v = store.load(p, &id).await.expect("load").expect("stored");
    assert_eq!(v.value.metadata.plan.as_deref(), Some("max"));
    assert!(store.problem().is_none());
}

#[tokio::test]
async fn an_account_directory_holds_every_format_and_skips_bad_files() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    fs::write(
        d.join("work-gemini.json"),
        fixture("gemini_oauth_creds.json"),
    )
    .expect("w");
    fs::write(
        d.join("claude-someone@example.com.json"),
        fixture("cliproxy_claude.json"),
    )
    .expect("w");
    fs::write(d.join("codex-main.json"), codex_auth_json()).expect("w");
    fs::write(d.join("qwen-1.json"), fixture("qwen_oauth_creds.json")).expect("w");
    fs::write(d.join("proxy-gemini.json"), fixture("cliproxy_gemini.json")).expect("w");
    fs::write(d.join("personal.json"), fixture("claude_credentials.json")).expect("w");
    fs::write(
        d.join("broken.json"),
        format!("{{\"type\":\"codex\",\"access_token\":\"{SECRET_MARKER}"),
    )
    .expect("w");
    fs::write(d.join("notes.txt"), "not an account").expect("w");
    fs::write(d.join(".hidden.json"), fixture("qwen_oauth_creds.json")).expect("w");

    let store = AccountDir::open(d).expect("open");
    let ids = |all: Vec<oauth_store::Versioned<oauth_core::Credential>>| {
        all.into_iter()
            .map(|v| v.value.id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.load_all(providers::GEMINI).await.expect("gemini")),
        ["proxy-gemini", "work-gemini"]
    );
    let claude = ids(store.load_all(providers::ANTHROPIC).await.expect("claude"));
    assert_eq!(claude.len(), 2);
    assert!(claude.contains(&"personal".to_owned()));
    let hashed = claude.iter().find(|i| *i != "personal").expect("hashed id");
    assert!(
        hashed.starts_with("anthropic-") && !hashed.contains('@'),
        "{hashed}"
    );
    assert_eq!(
        store.path_of(
            providers::ANTHROPIC,
            &CredentialId::new(hashed).expect("id")
        ),
        Some(d.join("claude-someone@example.com.json"))
    );
    assert_eq!(
        ids(store.load_all(providers::OPENAI).await.expect("openai")),
        ["codex-main"]
    );
    let qwen = store.load_all(providers::QWEN).await.expect("qwen");
    assert_eq!(qwen.len(), 1);
    assert_eq!(
        qwen[0].value.metadata.resource_url.as_deref(),
        Some("portal.qwen.ai")
    );

    let problems = store.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, d.join("broken.json"));
    assert_no_secret(&format!("{problems:?} {store:?}"));

    // A new account is created in the CLIProxyAPI shape.
    let cred = oauth_core::Credential::new("team-3", format!("at-{SECRET_MARKER}"), t0())
        .expect("cred")
        .with_refresh_token(format!("rt-{SECRET_MARKER}"));
    assert_eq!(
        store
            .save(providers::ANTHROPIC, &cred, None)
            .await
            .expect("create"),
        1
    );
    let v = read_json(&d.join("team-3.json"));
    assert_eq!(v["type"], "claude");
    assert_eq!(mode(&d.join("team-3.json")), 0o600);
    let unsafe_id = oauth_core::Credential::new("a@b", "at", t0()).expect("cred");
    assert!(
        store
            .save(providers::ANTHROPIC, &unsafe_id, None)
            .await
            .is_err()
    );

    // Write-back into a CLI-format file in the directory keeps its format.
    let codex = store
        .load(
            providers::OPENAI,
            &CredentialId::new("codex-main").expect("id"),
        )
        .await
        .expect("load")
        .expect("stored");
    store
        .save(
            providers::OPENAI,
            &rotate(&codex.value, "dir"),
            Some(codex.version),
        )
        .await
        .expect("save");
    let v = read_json(&d.join("codex-main.json"));
    assert_eq!(
        v["tokens"]["refresh_token"],
        format!("rt-dir-{SECRET_MARKER}")
    );
    assert_eq!(v["agent_identity"]["kept"], "as is");
}

#[tokio::test]
async fn every_successful_write_is_a_new_version_even_with_the_same_content() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("oauth_creds.json");
    fs::write(&path, fixture("qwen_oauth_creds.json")).expect("write");
    let store =
        CliFile::open_unwatched(oauth_accounts::Format::QwenCode, &path, "q").expect("open");
    assert!(!store.is_watching());
    let id = store.id().clone();
    let v = store
        .load(providers::QWEN, &id)
        .await
        .expect("load")
        .expect("stored");
    let before = fs::read(&path).expect("read");
    let v2 = store
        .save(providers::QWEN, &v.value, Some(v.version))
        .await
        .expect("same content");
    assert_eq!(v2, v.version + 1);
    assert_eq!(
        fs::read(&path).expect("read"),
        before,
        "nothing of the file changed"
    );
    assert!(
        store
            .save(providers::QWEN, &v.value, Some(v.version))
            .await
            .expect_err("old version")
            .is_conflict()
    );
    // Without a watcher, a read sees an outside change.
    let mut cli = read_json(&path);
    cli["refresh_token"] = "rt-outside".into();
    replace_like_cli(&path, cli.to_string().as_bytes());
    let v3 = store.versions(providers::QWEN).await.expect("versions");
    assert_eq!(v3.get(&id), Some(&(v2 + 1)));
}

#[tokio::test]
async fn a_symlinked_cli_file_stays_a_link() {
    let dir = tempfile::tempdir().expect("dir");
    let real_dir = dir.path().join("synced");
    fs::create_dir(&real_dir).expect("mkdir");
    let real = real_dir.join("gemini.json");
    fs::write(&real, fixture("gemini_oauth_creds.json")).expect("write");
    let cli_dir = dir.path().join(".gemini");
    fs::create_dir(&cli_dir).expect("mkdir");
    let link = cli_dir.join("oauth_creds.json");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");

    let store = CliFile::gemini(&link).expect("open");
    let id = store.id().clone();
    let v = store
        .load(providers::GEMINI, &id)
        .await
        .expect("load")
        .expect("stored");
    store
        .save(
            providers::GEMINI,
            &rotate(&v.value, "linked"),
            Some(v.version),
        )
        .await
        .expect("save");
    assert!(
        fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        read_json(&real)["refresh_token"],
        format!("rt-linked-{SECRET_MARKER}")
    );
}

#[tokio::test]
async fn store_contract_edge_cases_and_no_secret_in_any_output() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    fs::write(d.join("b.json"), fixture("cliproxy_claude.json")).expect("w");
    fs::write(d.join("a.json"), fixture("claude_credentials.json")).expect("w");
    let store = AccountDir::open_unwatched(d).expect("open");
    let mut changes = store.changes().expect("feed");
    let p = providers::ANTHROPIC;
    let mut outputs = vec![format!("{store:?}")];

    assert!(matches!(
        store.load_all("").await,
        Err(StoreError::InvalidProvider { .. })
    ));
    let all = store.load_all(p).await.expect("all");
    let ids: Vec<_> = all.iter().map(|v| v.value.id.to_string()).collect();
    assert_eq!(ids, ["a", "b"], "sorted by id");
    outputs.push(format!("{all:?}"));

    let a = CredentialId::new("a").expect("id");
    let err = store
        .delete(p, &a, Some(7))
        .await
        .expect_err("wrong version");
    assert!(err.is_conflict());
    outputs.push(format!("{err} {err:?}"));
    let err = store
        .delete(p, &CredentialId::new("nope").expect("id"), None)
        .await
        .expect_err("missing");
    assert!(matches!(err, StoreError::NotFound { .. }));
    store.delete(p, &a, Some(1)).await.expect("delete");
    assert!(!d.join("a.json").exists());
    assert!(store.load(p, &a).await.expect("load").is_none());

    // An outside change is announced by the read that finds it, even without a watcher.
    let mut v = read_json(&d.join("b.json"));
    v["refresh_token"] = format!("rt-outside-{SECRET_MARKER}").into();
    replace_like_cli(&d.join("b.json"), v.to_string().as_bytes());
    let versions = store.versions(p).await.expect("versions");
    assert_eq!(versions.len(), 1);
    let change = changes.try_recv().expect("announced");
    assert!(matches!(change, oauth_store::StoreChange::Changed { .. }));
    outputs.push(format!("{change:?} {versions:?}"));
    let lock = store.refresh_lock().expect("lock");
    let guard = lock
        .acquire(
            p,
            &CredentialId::new("b").expect("id"),
            std::time::Duration::from_secs(1),
        )
        .await
        .expect("acquire");
    outputs.push(format!("{lock:?} {guard:?}"));
    for o in outputs {
        assert_no_secret(&o);
    }
}
