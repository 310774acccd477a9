//! The embedded, versioned schema migrations.

use tokio_postgres::Client;

use crate::PostgresError;

/// The newest schema version this crate migrates to (and the only one it reads and writes).
pub const SCHEMA_VERSION: i64 = 2;

/// The table recording which migrations ran, one row per version.
pub(crate) const VERSION_TABLE: &str = "oauth_pool_schema_version";

/// Serializes migrations of replicas starting at the same time (`pg_advisory_xact_lock` key).
const MIGRATION_LOCK: i64 = 0x6f61_7574_685f_6d67; // "oauth_mg"

/// Migration `n` brings the schema from version `n - 1` to `n`; never edit a published one, add a
/// new one.
const MIGRATIONS: [(i64, &str); 2] = [(1, V1), (2, V2)];

const V1: &str = "
CREATE TABLE oauth_credentials (
    provider      text        NOT NULL,
    credential_id text        NOT NULL,
    version       bigint      NOT NULL,
    -- The credential as serialized by Credential::persisted() (JSON bytes); NULL once deleted:
    -- the row keeps the version a re-created credential continues from.
    payload       bytea,
    expires_at    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text        NOT NULL,
    PRIMARY KEY (provider, credential_id)
);
CREATE TABLE oauth_refresh_leases (
    provider      text        NOT NULL,
    credential_id text        NOT NULL,
    owner         text,
    fence         bigint      NOT NULL,
    expires_at    timestamptz,
    PRIMARY KEY (provider, credential_id)
);
CREATE TABLE oauth_cooldowns (
    provider      text        NOT NULL,
    credential_id text        NOT NULL,
    until         timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text        NOT NULL,
    PRIMARY KEY (provider, credential_id)
);
";

/// Shared credential states (`CredentialStore::publish_state`): the latest of each aspect
/// (`enablement`: disabled/enabled; `grant`: needs re-authorization) per credential, so a replica
/// that was not listening when one was published re-reads it (on reconnect, at its maintenance
/// tick). `seq` orders them as published.
const V2: &str = "
CREATE SEQUENCE oauth_credential_state_seq;
CREATE TABLE oauth_credential_states (
    provider        text        NOT NULL,
    credential_id   text        NOT NULL,
    aspect          text        NOT NULL,
    state           text        NOT NULL,
    decided_version bigint,
    seq             bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text        NOT NULL,
    PRIMARY KEY (provider, credential_id, aspect)
);
";

/// Brings the database to [`SCHEMA_VERSION`] in one transaction; returns how many migrations ran
/// (0 when it was current already).
pub(crate) async fn migrate(client: &mut Client) -> Result<usize, PostgresError> {
    let op = "migrate";
    let pg = |e: tokio_postgres::Error| PostgresError::from_pg(op, &e);
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
             version    bigint      PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )"
    ))
    .await
    .map_err(pg)?;
    let current: i64 = tx
        .query_one(
            &format!("SELECT COALESCE(max(version), 0) FROM {VERSION_TABLE}"),
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(PostgresError::UnsupportedSchema {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    let mut applied = 0;
    for (version, sql) in MIGRATIONS {
        if version <= current {
            continue;
        }
        tx.batch_execute(sql).await.map_err(pg)?;
        tx.execute(
            &format!("INSERT INTO {VERSION_TABLE} (version) VALUES ($1)"),
            &[&version],
        )
        .await
        .map_err(pg)?;
        applied += 1;
    }
    tx.commit().await.map_err(pg)?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_up_to_the_schema_version() {
        for (i, (version, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i64::try_from(i).expect("small") + 1);
            assert!(!sql.trim().is_empty());
        }
        assert_eq!(
            MIGRATIONS.last().map(|m| m.0),
            Some(SCHEMA_VERSION),
            "the last migration reaches SCHEMA_VERSION"
        );
    }
}
