//! The backend error of the PostgreSQL store and how it maps onto [`StoreError`].

use std::time::Duration;

use oauth_store::StoreError;
use thiserror::Error;

/// What went wrong talking to PostgreSQL.
///
/// Inside a [`CredentialStore`](oauth_store::CredentialStore) call it arrives wrapped in
/// [`StoreError::Backend`], with `retryable` set exactly when [`is_unavailable`](Self::is_unavailable)
/// holds; [`PostgresStore::connect`](crate::PostgresStore::connect) returns it as is. Messages name
/// operations, SQLSTATE codes, providers and credential ids, never a token, a payload or a
/// password.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The database cannot be reached or dropped the connection (refused, reset, shutting down,
    /// starting up, too many connections). Retry later; nothing was written.
    #[error("PostgreSQL is unavailable ({operation}): {detail}")]
    Unavailable {
        /// The store operation that failed.
        operation: &'static str,
        /// The client's or server's description (no secrets).
        detail: String,
    },
    /// The database did not answer within the configured bound (connect or operation timeout).
    /// Whether a write that timed out was applied is unknown: re-read before deciding.
    #[error("PostgreSQL did not answer {operation} within {after:?}")]
    Timeout {
        /// The store operation that timed out.
        operation: &'static str,
        /// The bound that passed.
        after: Duration,
    },
    /// The database's credential-store schema is newer than this crate understands (another
    /// replica runs a newer version). Nothing is read or written until this replica is upgraded.
    #[error(
        "the database has credential-store schema version {found}; this version of \
         oauth-store-postgres knows versions up to {supported}: upgrade this replica"
    )]
    UnsupportedSchema {
        /// The version recorded in the database.
        found: i64,
        /// The newest version this crate migrates to.
        supported: i64,
    },
    /// A stored row cannot be read back (not a credential, or a different id inside). The row is
    /// left as it is.
    #[error("stored credential {id:?} of provider {provider:?} cannot be read: {detail}")]
    CorruptRow {
        /// The row's provider.
        provider: String,
        /// The row's credential id, as stored.
        id: String,
        /// What is wrong and where (never the content).
        detail: String,
    },
    /// The database refused a statement for another reason (permissions, a constraint, a name it
    /// cannot store). Retrying as is will not help.
    #[error("PostgreSQL refused {operation}: SQLSTATE {code}: {message}")]
    Database {
        /// The store operation that failed.
        operation: &'static str,
        /// The SQLSTATE error code.
        code: String,
        /// The server's primary message (without detail lines, which may quote values).
        message: String,
    },
    /// The connection settings are invalid.
    #[error("invalid PostgreSQL store configuration: {detail}")]
    Config {
        /// What is wrong (an option name, never a password).
        detail: String,
    },
}

impl PostgresError {
    /// True when the database is down or unreachable right now ([`Unavailable`](Self::Unavailable)
    /// or [`Timeout`](Self::Timeout)): the operation may succeed later, and a caller holding a good
    /// token should keep serving it and refresh nothing.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout { .. })
    }

    /// This error as a [`StoreError::Backend`] (retryable when unavailable).
    pub fn into_store_error(self) -> StoreError {
        StoreError::Backend {
            retryable: self.is_unavailable(),
            source: Box::new(self),
        }
    }

    pub(crate) fn from_pg(operation: &'static str, e: &tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code().to_owned();
            let message = db.message().to_owned();
            if unavailable_sqlstate(&code) {
                return Self::Unavailable {
                    operation,
                    detail: format!("SQLSTATE {code}: {message}"),
                };
            }
            return Self::Database {
                operation,
                code,
                message,
            };
        }
        // Not a server error: the connection failed, closed, or timed out. tokio-postgres'
        // descriptions of these name the failure only (refused, reset, closed), never values.
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        Self::Unavailable { operation, detail }
    }

    pub(crate) fn from_pool(
        operation: &'static str,
        e: &deadpool_postgres::PoolError,
        waited: Duration,
    ) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Backend(e) => Self::from_pg(operation, e),
            PoolError::Timeout(_) => Self::Timeout {
                operation,
                after: waited,
            },
            other => Self::Unavailable {
                operation,
                detail: other.to_string(),
            },
        }
    }
}

/// Server errors that mean "the server cannot serve now" rather than "this statement is wrong".
fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (too many connections, disk full)
        || matches!(
            code,
            "57P01" // admin_shutdown
            | "57P02" // crash_shutdown
            | "57P03" // cannot_connect_now (starting up, shutting down)
            | "57P05" // idle_session_timeout
            | "25006" // read_only_sql_transaction (a standby after a failover)
        )
}

/// True when `err` is a PostgreSQL store failure meaning the database is unreachable right now
/// (see [`PostgresError::is_unavailable`]). Conflicts, lock timeouts and caller mistakes are not.
pub fn is_unavailable(err: &StoreError) -> bool {
    postgres_error(err).is_some_and(PostgresError::is_unavailable)
}

/// The [`PostgresError`] inside `err`, when `err` came from a [`PostgresStore`](crate::PostgresStore)
/// backend failure.
pub fn postgres_error(err: &StoreError) -> Option<&PostgresError> {
    match err {
        StoreError::Backend { source, .. } => source.downcast_ref::<PostgresError>(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_and_wrapping() {
        let down = PostgresError::Unavailable {
            operation: "load",
            detail: "connection refused".into(),
        };
        assert!(down.is_unavailable());
        let wrapped = down.into_store_error();
        assert!(wrapped.is_retryable());
        assert!(!wrapped.is_conflict());
        assert!(is_unavailable(&wrapped));
        assert_eq!(
            wrapped.to_string(),
            "credential store backend error: PostgreSQL is unavailable (load): connection refused"
        );

        let schema = PostgresError::UnsupportedSchema {
            found: 9,
            supported: 1,
        }
        .into_store_error();
        assert!(!schema.is_retryable());
        assert!(!is_unavailable(&schema));
        assert!(matches!(
            postgres_error(&schema),
            Some(PostgresError::UnsupportedSchema { found: 9, .. })
        ));

        let timeout = PostgresError::Timeout {
            operation: "save",
            after: Duration::from_secs(2),
        };
        assert!(timeout.is_unavailable());
        assert_eq!(
            timeout.to_string(),
            "PostgreSQL did not answer save within 2s"
        );
        let conflict = StoreError::LockTimeout {
            what: "refresh",
            provider: "p".into(),
            id: None,
            waited: Duration::ZERO,
        };
        assert!(!is_unavailable(&conflict));
    }

    #[test]
    fn sqlstates() {
        for code in ["08006", "57P01", "57P03", "53300"] {
            assert!(unavailable_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "22021", "42501"] {
            assert!(!unavailable_sqlstate(code), "{code}");
        }
    }
}
