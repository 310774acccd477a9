//! The `CredentialStore` conformance suite (`oauth_store::conformance`, feature `conformance`) run
//! against both stores of this crate: one test per case and store.

mod memory_store {
    oauth_store::conformance_tests!(async {
        oauth_store::conformance::Fixture::new(crate::support::memory().store)
    });

    /// The memory store keeps published states (its replica views play a shared database).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_states_keep_the_latest_of_each_aspect() {
        oauth_store::conformance::shared_states_keep_the_latest_of_each_aspect(
            crate::support::memory().store,
        )
        .await;
    }
}

mod file_store {
    oauth_store::conformance_tests!(async {
        let f = crate::support::file();
        oauth_store::conformance::Fixture::new(f.store).keeping(f._dir)
    });
}

/// `run_all` drives every case, as a store without per-case tests would use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_covers_every_case_on_the_memory_store() {
    let mut made = 0;
    oauth_store::conformance::run_all(|| {
        made += 1;
        async { oauth_store::conformance::Fixture::new(crate::support::memory().store) }
    })
    .await;
    assert_eq!(made, oauth_store::conformance::CASES.len());
}
