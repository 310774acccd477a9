//! The `CredentialStore` conformance suite that `MemoryStore` and `FileStore` pass, run against
//! `PostgresStore` (a fresh database per case).

oauth_store::conformance_tests!(crate::support::fixture());
