//! The keeper's configuration: a TOML file, then environment variables over it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::providers::ProviderKind;

/// The address the keeper listens on unless told otherwise (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8317";
/// The largest request body the management API reads, unless told otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;

/// Why the configuration cannot be used. Names the key (and, for a value that does not parse,
/// the value; no key holds a secret: the bearer token and client secrets are read from files).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape (unknown key, wrong type).
    #[error("the configuration file {path} is not valid: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (it names the key and line).
        message: String,
    },
    /// A key's value does not parse or is out of range.
    #[error("{key} = {value:?}: {reason}")]
    InvalidValue {
        /// The key (`listen`, `KEEPER_LISTEN`, `providers.gemini.token_url`...).
        key: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A required key has no value.
    #[error("{key} is required")]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// A file named by the configuration (token file, client secret file) is unusable.
    #[error("{key}: {reason}: {path}")]
    BadFile {
        /// The key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The keeper would listen beyond loopback without a token file.
    #[error(
        "refusing to listen on {listen}: it is not a loopback address and no token_file is set \
         (set token_file, or listen on 127.0.0.1)"
    )]
    NonLoopbackWithoutToken {
        /// The address.
        listen: SocketAddr,
    },
}

/// The file's shape (every key optional; environment variables may supply them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    account_dir: Option<String>,
    token_file: Option<String>,
    max_body_bytes: Option<u64>,
    maintenance_interval: Option<String>,
    refresh_ahead: Option<String>,
    refresh_buffer: Option<String>,
    refresh_floor: Option<String>,
    refresh_min_interval: Option<String>,
    signin_timeout: Option<String>,
    #[serde(default)]
    providers: BTreeMap<String, FileProvider>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct FileProvider {
    token_url: Option<String>,
    signin_token_url: Option<String>,
    authorize_url: Option<String>,
    device_authorization_url: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<String>,
}

/// Endpoint and client overrides for one provider (`[providers.<name>]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderOverrides {
    /// Token endpoint for refreshes (and sign-in exchanges unless `signin_token_url` is set).
    pub token_url: Option<String>,
    /// Token endpoint for sign-in code exchanges and device polling, when not `token_url`.
    pub signin_token_url: Option<String>,
    /// Authorization endpoint of the authorization-code flow.
    pub authorize_url: Option<String>,
    /// Device authorization endpoint of the device flow.
    pub device_authorization_url: Option<String>,
    /// Client id for sign-ins and refreshes.
    pub client_id: Option<String>,
    /// File holding the client secret (never the secret itself in the configuration).
    pub client_secret_file: Option<PathBuf>,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KeeperConfig {
    /// Where to listen (default [`DEFAULT_LISTEN`]).
    pub listen: SocketAddr,
    /// The account directory (required).
    pub account_dir: PathBuf,
    /// The file holding the management API's bearer token.
    pub token_file: Option<PathBuf>,
    /// Largest request body read (default [`DEFAULT_MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// Maintenance tick (default 15 s).
    pub maintenance_interval: Duration,
    /// How far ahead of the refresh buffer idle accounts are refreshed (default 10 min).
    pub refresh_ahead: Duration,
    /// Refresh buffer before expiry (default 5 min; clamped to the token's lifetime by the pool).
    pub refresh_buffer: Duration,
    /// Time kept for a refresh to complete before expiry (default 10 s).
    pub refresh_floor: Duration,
    /// Shortest time between two refreshes of one account (default 30 s).
    pub refresh_min_interval: Duration,
    /// How long a sign-in waits for the browser or the device approval (default 5 min).
    pub signin_timeout: Duration,
    /// Per-provider overrides.
    pub providers: BTreeMap<ProviderKind, ProviderOverrides>,
}

impl KeeperConfig {
    /// A configuration with defaults for everything but the account directory.
    pub fn new(account_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8317))),
            account_dir: account_dir.into(),
            token_file: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            maintenance_interval: Duration::from_secs(15),
            refresh_ahead: Duration::from_secs(600),
            refresh_buffer: Duration::from_secs(300),
            refresh_floor: Duration::from_secs(10),
            refresh_min_interval: Duration::from_secs(30),
            signin_timeout: Duration::from_secs(300),
            providers: BTreeMap::new(),
        }
    }

    /// Reads `path` (when given) and then the process environment (`KEEPER_*`).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, key or value.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => {
                Some(
                    std::fs::read_to_string(p).map_err(|source| ConfigError::ReadFile {
                        path: p.to_path_buf(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Self::from_sources(
            text.as_deref().map(|t| (path.unwrap_or(Path::new("")), t)),
            // Not `std::env::vars()`, which panics on a value that is not Unicode: such a value
            // is kept lossily and then refused as a typed error by its key's parser.
            std::env::vars_os().filter_map(|(k, v)| {
                let k = k.into_string().ok()?;
                k.starts_with("KEEPER_")
                    .then(|| (k, v.to_string_lossy().into_owned()))
            }),
        )
    }

    /// Builds the configuration from a file's text (with its path, for messages) and environment
    /// variables, which override the file: `KEEPER_LISTEN`, `KEEPER_ACCOUNT_DIR`,
    /// `KEEPER_TOKEN_FILE`, `KEEPER_MAX_BODY_BYTES`, `KEEPER_MAINTENANCE_INTERVAL`,
    /// `KEEPER_REFRESH_AHEAD`, `KEEPER_REFRESH_BUFFER`, `KEEPER_REFRESH_FLOOR`,
    /// `KEEPER_REFRESH_MIN_INTERVAL`, `KEEPER_SIGNIN_TIMEOUT`, and per provider
    /// `KEEPER_<PROVIDER>_TOKEN_URL` (`GEMINI`, `CLAUDE`, `CODEX`, `QWEN`). Other `KEEPER_*`
    /// variables are refused (a typo would otherwise be silently ignored).
    ///
    /// # Errors
    /// [`ConfigError`] naming the key and value.
    pub fn from_sources(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut f = match file {
            Some((path, text)) => {
                toml::from_str::<FileConfig>(text).map_err(|e| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.message().to_owned(),
                })?
            }
            None => FileConfig::default(),
        };
        let mut env_keys: BTreeMap<&'static str, String> = BTreeMap::new();
        for (k, v) in env {
            let slot: &mut Option<String> = match k.as_str() {
                "KEEPER_LISTEN" => &mut f.listen,
                "KEEPER_ACCOUNT_DIR" => &mut f.account_dir,
                "KEEPER_TOKEN_FILE" => &mut f.token_file,
                "KEEPER_MAINTENANCE_INTERVAL" => &mut f.maintenance_interval,
                "KEEPER_REFRESH_AHEAD" => &mut f.refresh_ahead,
                "KEEPER_REFRESH_BUFFER" => &mut f.refresh_buffer,
                "KEEPER_REFRESH_FLOOR" => &mut f.refresh_floor,
                "KEEPER_REFRESH_MIN_INTERVAL" => &mut f.refresh_min_interval,
                "KEEPER_SIGNIN_TIMEOUT" => &mut f.signin_timeout,
                "KEEPER_MAX_BODY_BYTES" => {
                    f.max_body_bytes =
                        Some(v.trim().parse().map_err(|_| ConfigError::InvalidValue {
                            key: k.clone(),
                            value: v.clone(),
                            reason: "not a whole number of bytes",
                        })?);
                    continue;
                }
                other => {
                    let provider = other
                        .strip_prefix("KEEPER_")
                        .and_then(|rest| rest.strip_suffix("_TOKEN_URL"))
                        .and_then(|p| p.to_ascii_lowercase().parse::<ProviderKind>().ok());
                    match provider {
                        Some(p) => {
                            f.providers
                                .entry(p.config_name().to_owned())
                                .or_default()
                                .token_url = Some(v);
                            continue;
                        }
                        None => {
                            return Err(ConfigError::InvalidValue {
                                key: k.clone(),
                                value: v,
                                reason: "unknown KEEPER_ variable",
                            });
                        }
                    }
                }
            };
            *slot = Some(v);
            if let Some(name) = env_name_to_key(&k) {
                env_keys.insert(name, k.clone());
            }
        }
        let key = |name: &'static str| env_keys.get(name).cloned().unwrap_or_else(|| name.into());

        for (name, v) in [
            ("account_dir", &f.account_dir),
            ("token_file", &f.token_file),
        ] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(ConfigError::InvalidValue {
                    key: key(name),
                    value: String::new(),
                    reason: "must not be empty",
                });
            }
        }
        let account_dir = f
            .account_dir
            .map(PathBuf::from)
            .ok_or(ConfigError::Missing { key: "account_dir" })?;
        let mut c = Self::new(account_dir);
        if let Some(v) = f.listen {
            c.listen = v.trim().parse().map_err(|_| ConfigError::InvalidValue {
                key: key("listen"),
                value: v.clone(),
                reason: "not an IP address and port (such as 127.0.0.1:8317)",
            })?;
        }
        c.token_file = f.token_file.map(PathBuf::from);
        if let Some(n) = f.max_body_bytes {
            if !(64..=16 * 1024 * 1024).contains(&n) {
                return Err(ConfigError::InvalidValue {
                    key: key("max_body_bytes"),
                    value: n.to_string(),
                    reason: "must be between 64 bytes and 16 MiB",
                });
            }
            c.max_body_bytes = usize::try_from(n).unwrap_or(DEFAULT_MAX_BODY_BYTES);
        }
        let dur = |name: &'static str, v: Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(v) => parse_duration(&v).ok_or_else(|| ConfigError::InvalidValue {
                key: key(name),
                value: v.clone(),
                reason: "not a duration (such as 250ms, 15s, 10m, 1h)",
            }),
        };
        c.maintenance_interval = dur(
            "maintenance_interval",
            f.maintenance_interval,
            c.maintenance_interval,
        )?;
        if c.maintenance_interval < Duration::from_millis(10)
            || c.maintenance_interval > Duration::from_secs(86_400)
        {
            return Err(ConfigError::InvalidValue {
                key: key("maintenance_interval"),
                value: format!("{:?}", c.maintenance_interval),
                reason: "must be between 10ms and a day",
            });
        }
        c.refresh_ahead = dur("refresh_ahead", f.refresh_ahead, c.refresh_ahead)?;
        c.refresh_buffer = dur("refresh_buffer", f.refresh_buffer, c.refresh_buffer)?;
        c.refresh_floor = dur("refresh_floor", f.refresh_floor, c.refresh_floor)?;
        if c.refresh_floor > c.refresh_buffer {
            return Err(ConfigError::InvalidValue {
                key: key("refresh_floor"),
                value: format!("{:?}", c.refresh_floor),
                reason: "must not exceed refresh_buffer",
            });
        }
        c.refresh_min_interval = dur(
            "refresh_min_interval",
            f.refresh_min_interval,
            c.refresh_min_interval,
        )?;
        c.signin_timeout = dur("signin_timeout", f.signin_timeout, c.signin_timeout)?;
        if c.signin_timeout.is_zero() {
            return Err(ConfigError::InvalidValue {
                key: key("signin_timeout"),
                value: "0".into(),
                reason: "must be positive",
            });
        }
        for (name, p) in f.providers {
            let kind = name
                .parse::<ProviderKind>()
                .map_err(|_| ConfigError::InvalidValue {
                    key: format!("providers.{name}"),
                    value: name.clone(),
                    reason: "unknown provider (gemini, claude, codex, qwen)",
                })?;
            let base = format!("providers.{}", kind.config_name());
            for (field, url) in [
                ("token_url", &p.token_url),
                ("signin_token_url", &p.signin_token_url),
                ("authorize_url", &p.authorize_url),
                ("device_authorization_url", &p.device_authorization_url),
            ] {
                if let Some(url) = url {
                    let ok = url.starts_with("https://")
                        || url.starts_with("http://127.0.0.1")
                        || url.starts_with("http://localhost")
                        || url.starts_with("http://[::1]");
                    if !ok {
                        return Err(ConfigError::InvalidValue {
                            key: format!("{base}.{field}"),
                            value: url.clone(),
                            reason: "must be an https:// URL (plain http only on loopback)",
                        });
                    }
                }
            }
            c.providers.insert(
                kind,
                ProviderOverrides {
                    token_url: p.token_url,
                    signin_token_url: p.signin_token_url,
                    authorize_url: p.authorize_url,
                    device_authorization_url: p.device_authorization_url,
                    client_id: p.client_id,
                    client_secret_file: p.client_secret_file.map(PathBuf::from),
                },
            );
        }
        c.check_listen()?;
        Ok(c)
    }

    /// Refuses a non-loopback address without a token file.
    ///
    /// # Errors
    /// [`ConfigError::NonLoopbackWithoutToken`].
    pub fn check_listen(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() && self.token_file.is_none() {
            return Err(ConfigError::NonLoopbackWithoutToken {
                listen: self.listen,
            });
        }
        Ok(())
    }
}

fn env_name_to_key(env: &str) -> Option<&'static str> {
    Some(match env {
        "KEEPER_LISTEN" => "listen",
        "KEEPER_ACCOUNT_DIR" => "account_dir",
        "KEEPER_TOKEN_FILE" => "token_file",
        "KEEPER_MAINTENANCE_INTERVAL" => "maintenance_interval",
        "KEEPER_REFRESH_AHEAD" => "refresh_ahead",
        "KEEPER_REFRESH_BUFFER" => "refresh_buffer",
        "KEEPER_REFRESH_FLOOR" => "refresh_floor",
        "KEEPER_REFRESH_MIN_INTERVAL" => "refresh_min_interval",
        "KEEPER_SIGNIN_TIMEOUT" => "signin_timeout",
        _ => return None,
    })
}

/// Parses `250ms`, `15s`, `10m`, `1h` (a whole number and a unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn env_overrides_file() -> Result<(), ConfigError> {
        let file =
            "account_dir = \"/a\"\nlisten = \"127.0.0.1:1\"\nmaintenance_interval = \"2s\"\n";
        let c = KeeperConfig::from_sources(
            Some((Path::new("k.toml"), file)),
            env(&[
                ("KEEPER_LISTEN", "127.0.0.1:2"),
                ("KEEPER_QWEN_TOKEN_URL", "http://127.0.0.1:9/t"),
            ]),
        )?;
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.maintenance_interval, Duration::from_secs(2));
        assert_eq!(c.account_dir, PathBuf::from("/a"));
        assert_eq!(
            c.providers[&ProviderKind::Qwen].token_url.as_deref(),
            Some("http://127.0.0.1:9/t")
        );
        Ok(())
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let e = KeeperConfig::from_sources(
            None,
            env(&[("KEEPER_ACCOUNT_DIR", "/a"), ("KEEPER_LISTEN", "nowhere")]),
        )
        .expect_err("bad listen");
        let msg = e.to_string();
        assert!(
            msg.contains("KEEPER_LISTEN") && msg.contains("nowhere"),
            "{msg}"
        );

        let e = KeeperConfig::from_sources(
            Some((
                Path::new("k.toml"),
                "account_dir = \"/a\"\nrefresh_ahead = \"soon\"",
            )),
            [],
        )
        .expect_err("bad duration");
        assert!(e.to_string().contains("refresh_ahead") && e.to_string().contains("soon"));

        let e = KeeperConfig::from_sources(Some((Path::new("k.toml"), "acount_dir = 1")), [])
            .expect_err("unknown key");
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        assert!(e.to_string().contains("acount_dir"), "{e}");

        let e = KeeperConfig::from_sources(
            None,
            env(&[("KEEPER_ACCOUNT_DIR", "/a"), ("KEEPER_LISTN", "x")]),
        )
        .expect_err("unknown env");
        assert!(e.to_string().contains("KEEPER_LISTN"));

        let e = KeeperConfig::from_sources(None, []).expect_err("missing dir");
        assert!(matches!(e, ConfigError::Missing { key: "account_dir" }));

        let e = KeeperConfig::from_sources(
            Some((
                Path::new("k.toml"),
                "account_dir = \"/a\"\n[providers.qwen]\ntoken_url = \"http://example.com/t\"",
            )),
            [],
        )
        .expect_err("plain http");
        assert!(e.to_string().contains("providers.qwen.token_url"), "{e}");
    }

    #[test]
    fn non_loopback_needs_a_token_file() {
        let e = KeeperConfig::from_sources(
            None,
            env(&[
                ("KEEPER_ACCOUNT_DIR", "/a"),
                ("KEEPER_LISTEN", "0.0.0.0:8317"),
            ]),
        )
        .expect_err("refused");
        assert!(matches!(e, ConfigError::NonLoopbackWithoutToken { .. }));
        assert!(
            KeeperConfig::from_sources(
                None,
                env(&[
                    ("KEEPER_ACCOUNT_DIR", "/a"),
                    ("KEEPER_LISTEN", "0.0.0.0:8317"),
                    ("KEEPER_TOKEN_FILE", "/t"),
                ]),
            )
            .is_ok()
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("x1s"), None);
    }
}
