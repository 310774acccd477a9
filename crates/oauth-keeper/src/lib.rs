//! The keeper: a small service that keeps an account directory's OAuth credentials fresh and
//! lets an operator steer it over HTTP.
//!
//! - One [`OAuthKeyManager`](oauth_manager::OAuthKeyManager) pool per provider present in the
//!   directory (an [`oauth_accounts::AccountDir`], watched), each with its maintenance loop
//!   refreshing accounts ahead of expiry and writing the tokens back in each file's format.
//! - `GET /metrics` (Prometheus text or OpenMetrics by `Accept`, gzip by `Accept-Encoding`),
//!   `GET /health`, and a management API: list accounts with their health, disable, enable,
//!   force a refresh, clear a backoff, start a sign-in (answers with the URL or user code at
//!   once; the flow finishes in the background and writes the account file), remove an account.
//! - Security: it listens on `127.0.0.1` by default and refuses a non-loopback address without a
//!   token file; **every** route needs `Authorization: Bearer <token>` (the token read from a
//!   file, compared in constant time as a SHA-256 digest; 401 with an empty body otherwise);
//!   request bodies are limited; no response, log line or error holds a token or secret.
//! - Configuration from a TOML file and `KEEPER_*` variables ([`KeeperConfig`]), typed errors
//!   naming the key and value ([`ConfigError`]).
//!
//! ```
//! use oauth_keeper::{ConfigError, KeeperConfig};
//! use std::path::Path;
//!
//! let file = r#"
//! account_dir = "/var/lib/keeper/accounts"
//! token_file = "/etc/keeper/token"
//! maintenance_interval = "15s"
//! "#;
//! let env = [("KEEPER_LISTEN".to_owned(), "127.0.0.1:9000".to_owned())];
//! let config = KeeperConfig::from_sources(Some((Path::new("keeper.toml"), file)), env)?;
//! assert_eq!(config.listen.port(), 9000); // the environment wins over the file
//!
//! let bad = KeeperConfig::from_sources(Some((Path::new("keeper.toml"), file)),
//!     [("KEEPER_LISTEN".to_owned(), "0.0.0.0".to_owned())]);
//! assert!(matches!(bad, Err(ConfigError::InvalidValue { .. })));
//! # Ok::<(), ConfigError>(())
//! ```
//!
//! # Extending
//! This crate has no trait to implement: it is an application over the library. To keep
//! another provider, give it a refresh preset and a sign-in preset in `oauth-refresh` and
//! `oauth-signin` and a variant in [`ProviderKind`].

mod api;
mod auth;
mod config;
mod error;
mod keeper;
mod login;
mod providers;

pub use auth::{BearerToken, MIN_TOKEN_LEN};
pub use config::{
    ConfigError, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, KeeperConfig, ProviderOverrides,
    parse_duration,
};
pub use error::KeeperError;
pub use keeper::{
    AccountView, CooldownCleared, Keeper, KeeperBuilder, MAX_PENDING_SIGNINS, RunningKeeper,
    SigninStarted, SigninStatus,
};
pub use login::login;
pub use providers::{ProviderKind, UnknownProviderName};
