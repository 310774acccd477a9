//! A PostgreSQL [`CredentialStore`](oauth_store::CredentialStore) for a credential pool run as
//! several replicas on several hosts that share the same accounts.
//!
//! - [`PostgresStore`]: credentials in one table, every write a single compare-and-set statement
//!   on a `version` column (so a stale writer gets a conflict, never overwrites a rotated token),
//!   secrets serialized only through [`Credential::persisted`](oauth_core::Credential::persisted).
//!   Schema migrations are embedded and versioned ([`SCHEMA_VERSION`]): connecting migrates,
//!   migrating twice changes nothing, and a database migrated by a newer replica is refused with
//!   [`PostgresError::UnsupportedSchema`].
//! - [`PostgresRefreshLock`] / [`Lease`]: a refresh lease per credential (owner, fence counter,
//!   expiry on the database clock). Only the holder refreshes; a lease whose holder died expires
//!   by itself and the next holder's fence is higher.
//! - Change propagation with LISTEN/NOTIFY: [`changes`](oauth_store::CredentialStore::changes)
//!   delivers other replicas' writes, deletes, shared cooldowns
//!   ([`publish_cooldown`](oauth_store::CredentialStore::publish_cooldown)) and shared states
//!   ([`publish_state`](oauth_store::CredentialStore::publish_state)), and a
//!   [`Resync`](oauth_store::StoreChange::Resync) per provider after the connection came back,
//!   followed by the cooldowns in force and the kept states. Cooldowns and states are kept in
//!   tables, so a replica that missed them reads them back
//!   ([`active_cooldowns`](oauth_store::CredentialStore::active_cooldowns),
//!   [`shared_states`](oauth_store::CredentialStore::shared_states)).
//! - Outages: with the database down every call fails within the configured bounds with an error
//!   for which [`is_unavailable`] holds (never a conflict); the store reconnects by itself and
//!   reports its state ([`PostgresStore::is_connected`], [`PostgresStore::connection_status`]).
//!
//! ```no_run
//! use chrono::{Duration, Utc};
//! use oauth_core::Credential;
//! use oauth_store::{CredentialStore, StoreChange};
//! use oauth_store_postgres::{PostgresConfig, PostgresStore};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = PostgresConfig::from_url("postgres://pool@db.internal:5432/oauth")?
//!     .replica_id("gateway-1")
//!     .lease_ttl(std::time::Duration::from_secs(30));
//! let store = PostgresStore::connect(config).await?; // migrates, starts LISTEN
//! let mut feed = store.changes().expect("the PostgreSQL store has a change feed");
//!
//! let cred = Credential::new("team", "access-1", Utc::now())?.with_refresh_token("refresh-1");
//! let v1 = store.save("anthropic", &cred, None).await?;
//!
//! // Refresh under the lease; the write-back is a compare-and-set against the version read.
//! let lease = store.leases().acquire_lease("anthropic", &cred.id, std::time::Duration::from_secs(5)).await?;
//! println!("refreshing with fence {}", lease.fence());
//! let rotated = cred.clone().with_refresh_token("refresh-2");
//! store.save("anthropic", &rotated, Some(v1)).await?;
//! lease.release().await?;
//!
//! // Another replica's 429 cools the account here too.
//! store.publish_cooldown("anthropic", &cred.id, Utc::now() + Duration::seconds(30)).await?;
//! if let Ok(StoreChange::Changed { provider, id }) = feed.recv().await {
//!     println!("{provider}/{id} changed elsewhere: reload it");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Tests in this crate run against a real PostgreSQL: a throwaway cluster created with the
//! server binaries found through `pg_config --bindir`.

mod config;
mod error;
mod lease;
mod listen;
mod schema;
mod store;
#[cfg(feature = "test-cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-cluster")))]
pub mod test_cluster;

pub use config::PostgresConfig;
pub use error::{PostgresError, is_unavailable, postgres_error};
pub use lease::{Lease, LeaseState, PostgresRefreshLock};
pub use schema::SCHEMA_VERSION;
pub use store::PostgresStore;
