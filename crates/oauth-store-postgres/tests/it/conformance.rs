//! The `CredentialStore` conformance suite that `MemoryStore` and `FileStore` pass, run against
//! `PostgresStore` (a fresh database per case).

oauth_store::conformance_tests!(crate::support::fixture());

/// The PostgreSQL store keeps published states (table `oauth_credential_states`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_states_keep_the_latest_of_each_aspect() {
    let fixture = crate::support::fixture().await;
    oauth_store::conformance::shared_states_keep_the_latest_of_each_aspect(std::sync::Arc::clone(
        &fixture.store,
    ))
    .await;
}
