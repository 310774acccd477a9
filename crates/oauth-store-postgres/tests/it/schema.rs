//! Embedded migrations, payload encoding, and rows that cannot be read.

use chrono::Utc;
use oauth_core::{CredentialMetadata, SecretString};
use oauth_store::CredentialStore;
use oauth_store::conformance::{SECRET_MARKER, assert_no_secret, credential, full};
use oauth_store_postgres::{PostgresError, PostgresStore, SCHEMA_VERSION, postgres_error};

use crate::support::{P, config, connect, id, raw, shared};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_twice_is_a_no_op() {
    let url = shared().fresh_database().await;
    let first = connect(config(&url, "a")).await;
    assert_eq!(
        first.schema_version().await.expect("version"),
        SCHEMA_VERSION
    );
    first
        .save(P, &credential("a", 0), None)
        .await
        .expect("save");
    assert_eq!(
        first.migrate().await.expect("migrate again"),
        0,
        "nothing to do"
    );
    // A second replica starting on the migrated database changes nothing either.
    let second = connect(config(&url, "b")).await;
    assert_eq!(second.migrate().await.expect("migrate"), 0);
    let rows = raw(&url)
        .await
        .query("SELECT version FROM oauth_pool_schema_version", &[])
        .await
        .expect("query");
    assert_eq!(
        rows.len(),
        usize::try_from(SCHEMA_VERSION).expect("small"),
        "one row per applied migration"
    );
    assert_eq!(
        second
            .load(P, &id("a"))
            .await
            .expect("load")
            .map(|v| v.version),
        Some(1),
        "data kept"
    );
}

/// A database a replica of the previous release migrated (schema 1, no table of shared states)
/// is brought to the current schema by the next replica that starts, its credentials kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_1_database_is_migrated_forward_keeping_its_data() {
    let url = shared().fresh_database().await;
    let first = connect(config(&url, "a")).await;
    first
        .save(P, &credential("a", 0), None)
        .await
        .expect("save");
    drop(first);
    // Back to what schema 1 left: migration 2's objects and its row removed.
    raw(&url)
        .await
        .batch_execute(
            "DROP TABLE oauth_credential_states; DROP SEQUENCE oauth_credential_state_seq;
             DELETE FROM oauth_pool_schema_version WHERE version = 2;",
        )
        .await
        .expect("back to schema 1");
    let upgraded = connect(config(&url, "b")).await;
    assert_eq!(upgraded.schema_version().await.expect("version"), 2);
    assert_eq!(upgraded.migrate().await.expect("current"), 0);
    upgraded
        .publish_state(P, &id("a"), oauth_store::SharedState::Disabled, None)
        .await
        .expect("the new table works");
    assert_eq!(upgraded.shared_states(P).await.expect("read").len(), 1);
    assert_eq!(
        upgraded
            .load(P, &id("a"))
            .await
            .expect("load")
            .map(|v| v.version),
        Some(1),
        "data kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_at_once_serialize() {
    let url = shared().fresh_database().await;
    let stores = connect_four_at_once(&url).await;
    for s in &stores {
        assert_eq!(s.schema_version().await.expect("version"), SCHEMA_VERSION);
    }
}

async fn connect_four_at_once(url: &str) -> Vec<PostgresStore> {
    let mut tasks = Vec::new();
    for i in 0..4 {
        let c = config(url, &format!("r{i}"));
        tasks.push(tokio::spawn(PostgresStore::connect(c)));
    }
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(
            t.await
                .expect("task")
                .expect("concurrent connect and migrate"),
        );
    }
    stores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_with_a_typed_error() {
    let url = shared().fresh_database().await;
    let store = connect(config(&url, "a")).await;
    raw(&url)
        .await
        .execute(
            "INSERT INTO oauth_pool_schema_version (version) VALUES ($1)",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .expect("pretend a newer replica migrated");
    let err = PostgresStore::connect(config(&url, "old"))
        .await
        .expect_err("newer schema");
    assert!(
        matches!(err, PostgresError::UnsupportedSchema { found, supported }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert!(!err.is_unavailable());
    assert!(err.to_string().contains("upgrade this replica"), "{err}");
    let again = store.migrate().await.expect_err("still newer");
    assert!(matches!(again, PostgresError::UnsupportedSchema { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_is_the_persisted_form_with_metadata() {
    let url = shared().fresh_database().await;
    let store = connect(config(&url, "a")).await;
    let mut cred = credential("m", 3);
    let mut meta = CredentialMetadata::default();
    meta.account_id = Some("acct-42".into());
    meta.id_token = Some(SecretString::from(format!("idt-{SECRET_MARKER}")));
    meta.extra.insert("region".into(), "eu".into());
    cred.metadata = meta;
    store.save(P, &cred, None).await.expect("save");
    let loaded = store
        .load(P, &id("m"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(
        full(&loaded.value),
        full(&cred),
        "round trip, metadata included"
    );
    assert_eq!(loaded.value.metadata.account_id.as_deref(), Some("acct-42"));

    // The row holds exactly `Credential::persisted()`'s JSON, and the other columns no secret.
    let row = raw(&url)
        .await
        .query_one(
            "SELECT payload, expires_at, updated_by, provider, credential_id
               FROM oauth_credentials WHERE credential_id = 'm'",
            &[],
        )
        .await
        .expect("row");
    let payload: Vec<u8> = row.get(0);
    let stored: serde_json::Value = serde_json::from_slice(&payload).expect("json payload");
    assert_eq!(stored, full(&cred));
    let expires: Option<chrono::DateTime<Utc>> = row.get(1);
    assert_eq!(expires, cred.expires_at);
    let others: Vec<String> = (2..5).map(|i| row.get::<_, String>(i)).collect();
    assert_no_secret(&others.join(" "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_row_is_typed_and_quotes_nothing() {
    let url = shared().fresh_database().await;
    let store = connect(config(&url, "a")).await;
    store
        .save(P, &credential("bad", 0), None)
        .await
        .expect("save");
    raw(&url)
        .await
        .execute(
            "UPDATE oauth_credentials SET payload = convert_to($1, 'UTF8')
              WHERE credential_id = 'bad'",
            &[&format!(
                r#"{{"id":"bad","access_token":7,"refresh_token":"rt-{SECRET_MARKER}"}}"#
            )],
        )
        .await
        .expect("corrupt the row");
    for err in [
        store.load(P, &id("bad")).await.expect_err("corrupt"),
        store.load_all(P).await.expect_err("corrupt"),
    ] {
        assert!(
            matches!(postgres_error(&err), Some(PostgresError::CorruptRow { id, .. }) if id == "bad"),
            "{err:?}"
        );
        assert!(!err.is_retryable() && !err.is_conflict());
        assert!(!oauth_store_postgres::is_unavailable(&err));
        assert_no_secret(&format!("{err} {err:?}"));
    }
    // Other rows and the version list are still readable; the bad row is left as it is.
    assert_eq!(store.versions(P).await.expect("versions").len(), 1);
}
