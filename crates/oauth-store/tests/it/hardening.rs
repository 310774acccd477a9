//! `FileStore` hardening: what it refuses (directories others can write, files of another user,
//! symbolic links, FIFOs), bounded deletion markers, and how a read-only or full file system is
//! reported (`StoreError::is_unavailable`, never contention) while the stored file stays intact.
//!
//! Some cases depend on who runs the suite. Root can give a file to another user (`chown`) and
//! mount a small tmpfs; an ordinary user can do neither, so those tests check instead that the
//! operating system refuses it, and use a directory without write permission where root would
//! use a read-only mount. Nothing is skipped silently.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use oauth_core::CredentialId;
use oauth_store::{CredentialStore, FileStore, RefreshLock, StoreError};
use tempfile::TempDir;

use crate::support::{assert_no_secret, cred, full};

const P: &str = "anthropic";
/// Another user's uid: `nobody` (65534 on Debian and most distributions), or 65533 when the
/// suite itself runs as `nobody`.
fn other_uid() -> u32 {
    if my_uid() == 65534 { 65533 } else { 65534 }
}

fn id(s: &str) -> CredentialId {
    CredentialId::new(s).expect("valid id")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The effective uid: a file this process creates belongs to it.
fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::NamedTempFile::new().expect("probe file");
    probe.as_file().metadata().expect("metadata").uid()
}

fn is_root() -> bool {
    my_uid() == 0
}

/// A store in `<tmp>/state` holding credential `a` at version 1.
async fn store_with_one() -> (TempDir, FileStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FileStore::open(dir.path().join("state")).expect("open");
    store.save(P, &cred("a", 1), None).await.expect("create");
    (dir, store)
}

fn lock_path(store: &FileStore) -> PathBuf {
    store.dir().join(format!("{P}.json.lock"))
}

/// Gives `path` to another user. Only root may; for anyone else the test checks the refusal
/// (the situation it guards against cannot be produced) and returns false.
fn give_away(path: &Path) -> bool {
    match chown(path, Some(other_uid()), None) {
        Ok(()) => {
            assert!(is_root(), "only root can give a file away");
            true
        }
        Err(e) => {
            assert!(!is_root(), "root could not chown {}: {e}", path.display());
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
            false
        }
    }
}

fn assert_wrong_owner(err: &StoreError, path: &Path) {
    let other = other_uid();
    assert!(
        matches!(err, StoreError::WrongOwner { path: p, owner, expected } if p == path && *owner == other && *expected == my_uid()),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("is owned by uid {other}")), "{msg}");
    assert!(msg.contains("run `chown "), "{msg}");
    assert!(err.is_unavailable() && !err.is_retryable() && !err.is_contention());
    assert_no_secret(&format!("{msg} {err:?}"));
}

fn assert_symlink(err: &StoreError, path: &Path) {
    assert!(
        matches!(err, StoreError::Symlink { path: p } if p == path),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(err.is_unavailable() && !err.is_retryable() && !err.is_contention());
}

fn assert_insecure_dir(err: &StoreError, path: &Path, bad: u32) {
    assert!(
        matches!(err, StoreError::InsecureDirectory { path: p, mode } if p == path && *mode == bad),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.ends_with(&format!("run `chmod 700 {}`", path.display())),
        "{msg}"
    );
    assert!(err.is_unavailable() && !err.is_retryable() && !err.is_contention());
}

// ---- directories others can write ----

#[test]
fn a_directory_others_can_write_is_refused_at_open_and_left_as_it_is() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).expect("mkdir");
    for bad in [0o777, 0o1777, 0o770, 0o720, 0o702, 0o2775] {
        chmod(&dir, bad);
        let err = FileStore::open(&dir).expect_err("writable by others");
        assert_insecure_dir(&err, &dir, bad);
        assert_eq!(mode(&dir), bad, "the store does not silently change it");
    }
    // Readable (not writable) by others is fine: the files inside are 0600.
    for ok in [0o700, 0o750, 0o755, 0o711] {
        chmod(&dir, ok);
        FileStore::open(&dir).expect("not writable by others");
    }
}

#[tokio::test]
async fn a_directory_made_writable_after_open_is_refused_by_every_operation() {
    let (_tmp, store) = store_with_one().await;
    let before = fs::read(store.file_path(P)).expect("read");
    chmod(store.dir(), 0o777);
    let lock = store.refresh_lock().expect("file store has a refresh lock");
    let errors = [
        store.load_all(P).await.expect_err("load_all"),
        store.load(P, &id("a")).await.expect_err("load"),
        store.versions(P).await.expect_err("versions"),
        store
            .save(P, &cred("a", 2), Some(1))
            .await
            .expect_err("save"),
        store.delete(P, &id("a"), None).await.expect_err("delete"),
        lock.acquire(P, &id("a"), Duration::from_secs(1))
            .await
            .expect_err("refresh lock"),
    ];
    for err in &errors {
        assert_insecure_dir(err, store.dir(), 0o777);
    }
    assert_eq!(fs::read(store.file_path(P)).expect("read"), before);
    chmod(store.dir(), 0o700);
    assert_eq!(
        store.save(P, &cred("a", 2), Some(1)).await.expect("fixed"),
        2
    );
}

#[tokio::test]
async fn a_locks_directory_others_can_write_is_refused() {
    let (_tmp, store) = store_with_one().await;
    let lock = store.refresh_lock().expect("refresh lock");
    drop(
        lock.acquire(P, &id("a"), Duration::from_secs(1))
            .await
            .expect("first"),
    );
    let locks = store.dir().join("locks");
    chmod(&locks, 0o757);
    let err = lock
        .acquire(P, &id("a"), Duration::from_secs(1))
        .await
        .expect_err("writable by others");
    assert_insecure_dir(&err, &locks, 0o757);
}

// ---- files and directories of another user ----

#[tokio::test]
async fn a_store_file_of_another_user_is_refused() {
    let (_tmp, store) = store_with_one().await;
    let path = store.file_path(P);
    let before = fs::read(&path).expect("read");
    if !give_away(&path) {
        return;
    }
    assert_wrong_owner(&store.load_all(P).await.expect_err("load_all"), &path);
    assert_wrong_owner(&store.versions(P).await.expect_err("versions"), &path);
    assert_wrong_owner(
        &store
            .save(P, &cred("a", 2), Some(1))
            .await
            .expect_err("save"),
        &path,
    );
    assert_eq!(fs::read(&path).expect("read"), before, "left alone");
    chown(&path, Some(my_uid()), None).expect("chown back");
    assert_eq!(store.load_all(P).await.expect("ours again").len(), 1);
}

#[tokio::test]
async fn a_store_lock_file_of_another_user_is_refused() {
    let (_tmp, store) = store_with_one().await;
    let lock = lock_path(&store);
    if !give_away(&lock) {
        return;
    }
    let err = store
        .save(P, &cred("a", 2), Some(1))
        .await
        .expect_err("save");
    assert_wrong_owner(&err, &lock);
    // Reads take no lock.
    assert_eq!(store.load_all(P).await.expect("read").len(), 1);
    assert_eq!(store.versions(P).await.expect("versions")[&id("a")], 1);
}

#[tokio::test]
async fn a_refresh_lock_file_of_another_user_is_refused() {
    let (_tmp, store) = store_with_one().await;
    let refresh = oauth_store::FileRefreshLock::new(store.dir());
    drop(
        refresh
            .acquire(P, &id("a"), Duration::from_secs(1))
            .await
            .expect("first"),
    );
    let path = refresh.lock_path(P, &id("a"));
    if !give_away(&path) {
        return;
    }
    let err = refresh
        .acquire(P, &id("a"), Duration::from_secs(1))
        .await
        .expect_err("foreign lock file");
    assert_wrong_owner(&err, &path);
    // Another credential's lock is unaffected.
    drop(
        refresh
            .acquire(P, &id("b"), Duration::from_secs(1))
            .await
            .expect("other id"),
    );
}

#[test]
fn a_store_directory_of_another_user_is_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).expect("mkdir");
    chmod(&dir, 0o700);
    if !give_away(&dir) {
        return;
    }
    assert_wrong_owner(&FileStore::open(&dir).expect_err("foreign directory"), &dir);
}

// ---- symbolic links ----

#[tokio::test]
async fn a_symlinked_store_lock_file_is_refused_and_creates_nothing_outside() {
    let (tmp, store) = store_with_one().await;
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    let target = outside.join("planted");
    let lock = lock_path(&store);
    fs::remove_file(&lock).expect("remove lock file");
    symlink(&target, &lock).expect("symlink");

    let err = store
        .save(P, &cred("a", 2), Some(1))
        .await
        .expect_err("link");
    assert_symlink(&err, &lock);
    assert!(!target.exists(), "no file created outside the store");

    // A link to an existing file: the file is neither locked through nor changed.
    fs::write(&target, b"someone else's file").expect("write");
    chmod(&target, 0o644);
    let err = store.delete(P, &id("a"), None).await.expect_err("link");
    assert_symlink(&err, &lock);
    assert_eq!(fs::read(&target).expect("read"), b"someone else's file");
    assert_eq!(mode(&target), 0o644);
    assert_eq!(store.versions(P).await.expect("versions")[&id("a")], 1);
}

#[tokio::test]
async fn a_symlinked_store_file_is_not_read_through() {
    let (tmp, store) = store_with_one().await;
    // A valid store file elsewhere, of the same provider, with other tokens.
    let elsewhere = FileStore::open(tmp.path().join("elsewhere")).expect("open");
    elsewhere
        .save(P, &cred("planted", 7), None)
        .await
        .expect("save");
    let path = store.file_path(P);
    fs::remove_file(&path).expect("remove");
    symlink(elsewhere.file_path(P), &path).expect("symlink");

    assert_symlink(&store.load_all(P).await.expect_err("load_all"), &path);
    assert_symlink(
        &store.load(P, &id("planted")).await.expect_err("load"),
        &path,
    );
    assert_symlink(
        &store
            .save(P, &cred("planted", 8), Some(1))
            .await
            .expect_err("save"),
        &path,
    );
    let kept = elsewhere
        .load_all(P)
        .await
        .expect("the target is untouched");
    assert_eq!(kept.len(), 1);
    assert_eq!(full(&kept[0].value), full(&cred("planted", 7)));
    assert!(
        fs::symlink_metadata(&path)
            .expect("lstat")
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
async fn a_symlinked_refresh_lock_file_or_locks_directory_is_refused() {
    let (tmp, store) = store_with_one().await;
    let refresh = oauth_store::FileRefreshLock::new(store.dir());
    drop(
        refresh
            .acquire(P, &id("a"), Duration::from_secs(1))
            .await
            .expect("first"),
    );
    let path = refresh.lock_path(P, &id("a"));
    let target = tmp.path().join("planted.lock");
    fs::remove_file(&path).expect("remove");
    symlink(&target, &path).expect("symlink");
    let err = refresh
        .acquire(P, &id("a"), Duration::from_secs(1))
        .await
        .expect_err("link");
    assert_symlink(&err, &path);
    assert!(!target.exists(), "no file created outside the store");

    // The whole `locks` directory replaced by a link to a directory elsewhere.
    let locks = store.dir().join("locks");
    let other = tmp.path().join("other-locks");
    fs::rename(&locks, &other).expect("move locks away");
    symlink(&other, &locks).expect("symlink");
    let err = refresh
        .acquire(P, &id("b"), Duration::from_secs(1))
        .await
        .expect_err("link");
    assert_symlink(&err, &locks);
    assert!(
        !other
            .join(refresh.lock_path(P, &id("b")).file_name().expect("name"))
            .exists(),
        "no lock file created through the link"
    );
}

#[tokio::test]
async fn the_store_directory_itself_may_be_a_link_the_operator_chose() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let real = tmp.path().join("real");
    let link = tmp.path().join("link");
    let store = FileStore::open(&real).expect("open");
    store.save(P, &cred("a", 1), None).await.expect("create");
    symlink(&real, &link).expect("symlink");
    let via_link = FileStore::open(&link).expect("a linked store directory is accepted");
    let seen = via_link
        .load(P, &id("a"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(full(&seen.value), full(&cred("a", 1)));
    assert_eq!(
        via_link
            .save(P, &cred("a", 2), Some(1))
            .await
            .expect("save"),
        2
    );
    let lock = via_link.refresh_lock().expect("refresh lock");
    drop(
        lock.acquire(P, &id("a"), Duration::from_secs(1))
            .await
            .expect("lock"),
    );
    // The link's own mode (0777 on Linux) does not matter; the directory's does.
    chmod(&real, 0o777);
    let err = via_link
        .load_all(P)
        .await
        .expect_err("target writable by others");
    assert_insecure_dir(&err, &link, 0o777);
}

#[tokio::test]
async fn a_fifo_in_place_of_the_store_file_is_refused_without_hanging() {
    let (_tmp, store) = store_with_one().await;
    let path = store.file_path(P);
    fs::remove_file(&path).expect("remove");
    let made = Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&path)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let outcome = tokio::time::timeout(Duration::from_secs(5), store.load_all(P)).await;
    let Ok(result) = outcome else {
        // Release the blocked reader (a writer's open completes its open), then fail.
        #[allow(clippy::cast_possible_wrap)]
        let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
        drop(
            fs::OpenOptions::new()
                .write(true)
                .custom_flags(nonblock)
                .open(&path),
        );
        panic!("opening a FIFO in place of the store file blocked");
    };
    let err = result.expect_err("fifo");
    assert!(
        matches!(&err, StoreError::Corrupt { path: p, detail } if p == &path && detail == "not a regular file"),
        "{err:?}"
    );
}

// ---- deletion markers ----

#[tokio::test]
async fn deletion_markers_stay_bounded_over_a_thousand_add_remove_cycles() {
    const CYCLES: u64 = 1000;
    let (_tmp, store) = store_with_one().await;
    let path = store.file_path(P);
    let start = fs::metadata(&path).expect("metadata").len();
    let mut deleted_at = Vec::new();
    for i in 0..CYCLES {
        let name = format!("churn-{i}");
        let v = store.save(P, &cred(&name, i), None).await.expect("add");
        store.delete(P, &id(&name), Some(v)).await.expect("remove");
        deleted_at.push(v);
    }
    let end = fs::metadata(&path).expect("metadata").len();
    eprintln!("store file: {start} B before, {end} B after {CYCLES} add/remove cycles");
    assert!(
        end < 1024,
        "file grew from {start} B to {end} B over {CYCLES} add/remove cycles"
    );
    assert!(end <= start + 64, "file grew from {start} B to {end} B");

    // The version rule still holds for every deleted id: a re-created one starts above the last
    // version its predecessor had, so a writer holding any version of that one cannot match it.
    for i in [0, CYCLES / 2, CYCLES - 1] {
        let name = format!("churn-{i}");
        let old = deleted_at[usize::try_from(i).expect("index")];
        let v = store
            .save(P, &cred(&name, 0), None)
            .await
            .expect("re-create");
        assert!(
            v > old,
            "{name} deleted at version {old}, re-created at {v}"
        );
        for stale in [1, old / 2 + 1, old] {
            let err = store
                .save(P, &cred(&name, 1), Some(stale))
                .await
                .expect_err("stale writer");
            assert!(err.is_conflict(), "{err:?}");
        }
    }
    // The untouched credential kept its version.
    assert_eq!(store.versions(P).await.expect("versions")[&id("a")], 1);
}

#[tokio::test]
async fn per_id_markers_of_older_files_are_folded_into_one_high_water_mark() {
    let (_tmp, store) = store_with_one().await;
    let path = store.file_path(P);
    // The format earlier versions wrote: one marker per deleted id.
    let mut json: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
    json.as_object_mut()
        .expect("object")
        .remove("retired_high_water");
    json["retired"] = serde_json::json!({"gone": 7, "older": 3});
    fs::write(&path, serde_json::to_vec(&json).expect("json")).expect("write");

    assert_eq!(
        store
            .save(P, &cred("gone", 0), None)
            .await
            .expect("re-create"),
        8
    );
    assert_eq!(
        store
            .save(P, &cred("older", 0), None)
            .await
            .expect("re-create"),
        8
    );
    let rewritten: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
    assert!(rewritten.get("retired").is_none(), "{rewritten}");
    assert_eq!(rewritten["retired_high_water"], 7);
}

// ---- read-only and full file systems ----

/// A tmpfs mounted on a fresh directory for the life of the guard (root only); unmounted on drop,
/// also when the test fails.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size`, or says why it could not. Root is expected to succeed: a refusal
    /// then fails the test instead of passing it quietly.
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .expect("run mount");
        if out.status.success() {
            return Ok(Self { dir });
        }
        let why = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !is_root(),
            "mount -t tmpfs refused although running as root: {why}"
        );
        Err(why)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, how: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(self.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount {how}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Busy (a file still open): detach it now, the kernel frees it when closed.
            drop(
                Command::new("umount")
                    .arg("-l")
                    .arg(self.dir.path())
                    .status(),
            );
        }
    }
}

fn io_kind(err: &StoreError) -> io::ErrorKind {
    match err {
        StoreError::Io { source, .. } => source.kind(),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

/// The classification the manager relies on: the store is unavailable (go on with the token in
/// memory), it is no contention (nobody else is writing), a later retry may succeed.
fn assert_unavailable(err: &StoreError, kind: io::ErrorKind) {
    assert_eq!(io_kind(err), kind, "{err:?}");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!err.is_contention() && !err.is_conflict(), "{err:?}");
    assert!(err.is_retryable(), "{err:?}");
    assert_no_secret(&format!("{err} {err:?}"));
}

fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[tokio::test]
async fn on_a_read_only_file_system_saves_are_unavailable_and_the_stored_file_stays_loadable() {
    let fs_ = match Tmpfs::mount("1m") {
        Ok(fs_) => fs_,
        Err(why) => {
            // No mount for an ordinary user: a directory it may not write gives the same picture.
            eprintln!(
                "read-only mount refused for a non-root user ({why}); using a 0500 directory"
            );
            let (_tmp, store) = store_with_one().await;
            chmod(store.dir(), 0o500);
            let err = store
                .save(P, &cred("a", 2), Some(1))
                .await
                .expect_err("read-only dir");
            chmod(store.dir(), 0o700);
            assert_unavailable(&err, io::ErrorKind::PermissionDenied);
            let kept = store
                .load(P, &id("a"))
                .await
                .expect("load")
                .expect("stored");
            assert_eq!((kept.version, full(&kept.value)), (1, full(&cred("a", 1))));
            return;
        }
    };
    let store = FileStore::open(fs_.path().join("state")).expect("open");
    store.save(P, &cred("a", 1), None).await.expect("create");
    let lock = store.refresh_lock().expect("refresh lock");
    drop(
        lock.acquire(P, &id("a"), Duration::from_secs(1))
            .await
            .expect("lock"),
    );
    let before = fs::read(store.file_path(P)).expect("read");

    fs_.remount("ro");
    let errors = [
        store
            .save(P, &cred("a", 2), Some(1))
            .await
            .expect_err("save"),
        store
            .save(P, &cred("b", 1), None)
            .await
            .expect_err("create"),
        store.delete(P, &id("a"), None).await.expect_err("delete"),
        lock.acquire(P, &id("a"), Duration::from_secs(1))
            .await
            .expect_err("refresh lock"),
    ];
    for err in &errors {
        assert_unavailable(err, io::ErrorKind::ReadOnlyFilesystem);
    }
    let kept = store
        .load(P, &id("a"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!((kept.version, full(&kept.value)), (1, full(&cred("a", 1))));
    assert_eq!(fs::read(store.file_path(P)).expect("read"), before);

    // Writable again: the next save goes through on top of the intact file.
    fs_.remount("rw");
    assert_eq!(
        store
            .save(P, &cred("a", 2), Some(1))
            .await
            .expect("recovered"),
        2
    );
}

#[tokio::test]
async fn on_a_full_file_system_saves_are_unavailable_and_the_stored_file_stays_intact() {
    // An ordinary user cannot mount a small file system: `mount` asserts that only a non-root
    // user is refused, and the refusal is printed rather than passed over quietly.
    let fs_ = match Tmpfs::mount("64k") {
        Ok(fs_) => fs_,
        Err(why) => {
            eprintln!("full file system not tested: mount refused for a non-root user: {why}");
            return;
        }
    };
    let store = FileStore::open(fs_.path().join("state")).expect("open");
    store.save(P, &cred("a", 1), None).await.expect("create");
    let path = store.file_path(P);
    let before = fs::read(&path).expect("read");

    // Fill every remaining block.
    let filler_path = fs_.path().join("filler");
    let mut filler = fs::File::create(&filler_path).expect("filler");
    let chunk = vec![0u8; 4096];
    let full_err = loop {
        if let Err(e) = filler.write_all(&chunk) {
            break e;
        }
    };
    assert_eq!(full_err.kind(), io::ErrorKind::StorageFull, "{full_err}");
    drop(filler);

    for err in [
        store
            .save(P, &cred("a", 2), Some(1))
            .await
            .expect_err("save"),
        store
            .save(P, &cred("b", 1), None)
            .await
            .expect_err("create"),
    ] {
        assert_unavailable(&err, io::ErrorKind::StorageFull);
        assert!(
            matches!(&err, StoreError::Io { path: p, .. } if p == &path),
            "{err:?}"
        );
    }
    assert_eq!(fs::read(&path).expect("read"), before, "byte for byte");
    let kept = store
        .load(P, &id("a"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!((kept.version, full(&kept.value)), (1, full(&cred("a", 1))));
    assert!(
        temp_files(store.dir()).is_empty(),
        "{:?}",
        temp_files(store.dir())
    );

    // Space again: the pending save goes through.
    fs::remove_file(&filler_path).expect("free space");
    assert_eq!(
        store
            .save(P, &cred("a", 2), Some(1))
            .await
            .expect("recovered"),
        2
    );
    let now = store
        .load(P, &id("a"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(full(&now.value), full(&cred("a", 2)));
}
