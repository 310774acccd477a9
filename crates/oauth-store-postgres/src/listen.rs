//! Change propagation: NOTIFY payloads written with each change, and the task that LISTENs,
//! turns notifications into [`StoreChange`]s, pings the connection and re-establishes it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::DateTime;
use oauth_core::CredentialId;
use oauth_store::{SharedState, StoreChange};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, Socket};

use crate::PostgresConfig;
use crate::store::{Shared, state_record};

/// The NOTIFY channel every store of a database shares.
pub(crate) const CHANNEL: &str = "oauth_pool_changes";

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; longer names announce a resync.
const MAX_PAYLOAD: usize = 7900;

/// One change announced to other replicas.
pub(crate) enum Notice<'a> {
    Changed { provider: &'a str, id: &'a str },
    Removed { provider: &'a str, id: &'a str },
    Released { provider: &'a str, id: &'a str },
}

fn json(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

impl Notice<'_> {
    /// The JSON payload, sent as coming from `instance`.
    pub(crate) fn payload(&self, instance: &str) -> String {
        let (kind, provider, id) = match self {
            Self::Changed { provider, id } => ("c", provider, id),
            Self::Removed { provider, id } => ("r", provider, id),
            Self::Released { provider, id } => ("l", provider, id),
        };
        let text = format!(
            "{{\"o\":{},\"k\":\"{kind}\",\"p\":{},\"i\":{}}}",
            json(instance),
            json(provider),
            json(id)
        );
        if text.len() <= MAX_PAYLOAD {
            text
        } else {
            everything(instance)
        }
    }
}

fn everything(instance: &str) -> String {
    format!("{{\"o\":{},\"k\":\"x\"}}", json(instance))
}

/// The cooldown payload is assembled in SQL as `prefix || until_micros || suffix`, so it carries
/// the cooldown actually in force after the upsert.
pub(crate) fn cooldown_prefix(instance: &str) -> String {
    format!("{{\"o\":{},\"k\":\"d\",\"u\":", json(instance))
}

/// See [`cooldown_prefix`]. Names too long for a payload turn it into a resync announcement.
pub(crate) fn cooldown_suffix(provider: &str, id: &str) -> String {
    let suffix = format!(",\"p\":{},\"i\":{}}}", json(provider), json(id));
    if suffix.len() + 200 <= MAX_PAYLOAD {
        suffix
    } else {
        // `{"o":..,"k":"d","u":123}` without names reads as "resync everything".
        "}".to_owned()
    }
}

/// The payload announcing a shared credential state (`None` when the names are too long for a
/// payload: the caller then announces nothing, receivers keep their own view).
pub(crate) fn state_payload(
    instance: &str,
    provider: &str,
    id: &str,
    state: SharedState,
    version: Option<u64>,
) -> Option<String> {
    let version = version.map_or_else(|| "null".to_owned(), |v| v.to_string());
    let text = format!(
        "{{\"o\":{},\"k\":\"s\",\"s\":{},\"v\":{version},\"p\":{},\"i\":{}}}",
        json(instance),
        json(state.as_str()),
        json(provider),
        json(id)
    );
    (text.len() <= MAX_PAYLOAD).then_some(text)
}

#[derive(Deserialize)]
struct Wire {
    o: String,
    k: String,
    #[serde(default)]
    p: Option<String>,
    #[serde(default)]
    i: Option<String>,
    #[serde(default)]
    u: Option<i64>,
    #[serde(default)]
    s: Option<String>,
    #[serde(default)]
    v: Option<u64>,
}

/// The LISTEN task: runs sessions for as long as the store lives (it is aborted when the last
/// handle drops).
pub(crate) async fn run<T>(
    shared: Arc<Shared>,
    pg: tokio_postgres::Config,
    tls: T,
    config: PostgresConfig,
) where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync + 'static,
    T::TlsConnect: Send + Sync,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut sessions: u64 = 0;
    let mut delay = config.reconnect_delay;
    loop {
        let established = session(&shared, &pg, tls.clone(), &config, sessions > 0).await;
        shared.connected.send_replace(false);
        if established {
            sessions += 1;
            delay = config.reconnect_delay;
            tracing::warn!(
                target: "oauth_store_postgres",
                "LISTEN connection to PostgreSQL lost; reconnecting"
            );
        } else {
            delay = delay.saturating_mul(2).min(config.max_reconnect_delay);
        }
        tokio::time::sleep(delay).await;
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection's life; returns whether LISTEN was established at all.
async fn session<T>(
    shared: &Shared,
    pg: &tokio_postgres::Config,
    tls: T,
    config: &PostgresConfig,
    resync: bool,
) -> bool
where
    T: MakeTlsConnect<Socket> + Send,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = match tokio::time::timeout(
        config.connect_timeout,
        pg.connect(tls),
    )
    .await
    {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            tracing::debug!(target: "oauth_store_postgres", error = %e, "LISTEN connect failed");
            return false;
        }
        Err(_) => return false,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let _driver = AbortOnDrop(tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                // The connection ended: dropping `tx` ends the session.
                Some(Err(_)) | None => return,
            }
        }
    }));
    let bound = config.operation_timeout;
    let sql = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&sql);
    if !matches!(tokio::time::timeout(bound, listen).await, Ok(Ok(()))) {
        return false;
    }
    if resync {
        if !announce_resync(shared, &client, config).await {
            return false;
        }
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    shared.connected.send_replace(true);
    // Waiters for a lease released while we were away poll again now.
    shared.lease_released.notify_waiters();

    let mut ping = tokio::time::interval(config.health_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(payload) => {
                    if !dispatch(shared, &client, config, &payload).await {
                        return true;
                    }
                }
                None => return true,
            },
            _ = ping.tick() => {
                let ok = tokio::time::timeout(bound, client.simple_query("SELECT 1")).await;
                if !matches!(ok, Ok(Ok(_))) {
                    return true;
                }
            }
        }
    }
}

/// Sends a [`StoreChange::Resync`] for every provider the database knows, then a
/// [`StoreChange::CooledDown`] for every cooldown still in force and a
/// [`StoreChange::StateChanged`] for every kept shared state, in publication order (a resync
/// re-reads credentials; this way cooldowns and states published meanwhile are not lost either).
/// False when a query failed (the session is then abandoned).
async fn announce_resync(shared: &Shared, client: &Client, config: &PostgresConfig) -> bool {
    let queries = async {
        let providers = client
            .query(
                "SELECT provider FROM oauth_credentials UNION SELECT provider FROM oauth_cooldowns",
                &[],
            )
            .await?;
        let cooldowns = client
            .query(
                "SELECT provider, credential_id, until FROM oauth_cooldowns WHERE until > now()",
                &[],
            )
            .await?;
        let states = client
            .query(
                "SELECT s.provider, s.credential_id, s.state, s.decided_version
                   FROM oauth_credential_states s
                   JOIN oauth_credentials c USING (provider, credential_id)
                  WHERE c.payload IS NOT NULL
                  ORDER BY s.seq",
                &[],
            )
            .await?;
        Ok::<_, tokio_postgres::Error>((providers, cooldowns, states))
    };
    let Ok(Ok((providers, cooldowns, states))) =
        tokio::time::timeout(config.operation_timeout, queries).await
    else {
        return false;
    };
    for row in providers {
        let provider: String = row.get(0);
        let _ = shared.changes.send(StoreChange::Resync { provider });
    }
    for row in cooldowns {
        let provider: String = row.get(0);
        let Ok(id) = CredentialId::new(row.get::<_, String>(1)) else {
            continue;
        };
        let until = row.get(2);
        let _ = shared.changes.send(StoreChange::CooledDown {
            provider,
            id,
            until,
        });
    }
    for row in states {
        let provider: String = row.get(0);
        if let Some(record) = state_record(&provider, row.get(1), row.get(2), row.get(3)) {
            let _ = shared.changes.send(StoreChange::StateChanged {
                provider,
                id: record.id,
                state: record.state,
                version: record.version,
            });
        }
    }
    true
}

/// Handles one notification; false when the connection failed while doing so.
async fn dispatch(
    shared: &Shared,
    client: &Client,
    config: &PostgresConfig,
    payload: &str,
) -> bool {
    shared.notifications.fetch_add(1, Ordering::Relaxed);
    let Ok(wire) = serde_json::from_str::<Wire>(payload) else {
        tracing::debug!(target: "oauth_store_postgres", "ignored a malformed notification");
        return true;
    };
    if wire.k == "l" {
        shared.lease_released.notify_waiters();
        return true;
    }
    if wire.o == shared.instance {
        return true; // our own change: this process knows it already
    }
    let named = match (wire.p, wire.i.as_deref().map(CredentialId::new)) {
        (Some(provider), Some(Ok(id))) => Some((provider, id)),
        _ => None,
    };
    let change = match (wire.k.as_str(), named) {
        ("c", Some((provider, id))) => StoreChange::Changed { provider, id },
        ("r", Some((provider, id))) => StoreChange::Removed { provider, id },
        ("d", Some((provider, id))) => {
            let Some(until) = wire.u.and_then(DateTime::from_timestamp_micros) else {
                return true;
            };
            StoreChange::CooledDown {
                provider,
                id,
                until,
            }
        }
        ("s", Some((provider, id))) => {
            // A state this version does not know is ignored, not a reason to resync.
            let Some(state) = wire.s.as_deref().and_then(SharedState::parse) else {
                return true;
            };
            StoreChange::StateChanged {
                provider,
                id,
                state,
                version: wire.v,
            }
        }
        _ => return announce_resync(shared, client, config).await,
    };
    let _ = shared.changes.send(change);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_json_and_long_names_degrade_to_resync() {
        let p = Notice::Changed {
            provider: "a\"b",
            id: "x/y",
        }
        .payload("r1#1");
        let w: Wire = serde_json::from_str(&p).expect("json");
        assert_eq!((w.o.as_str(), w.k.as_str()), ("r1#1", "c"));
        assert_eq!(w.p.as_deref(), Some("a\"b"));
        assert_eq!(w.i.as_deref(), Some("x/y"));

        let long = "p".repeat(9000);
        let p = Notice::Removed {
            provider: &long,
            id: "a",
        }
        .payload("r1");
        let w: Wire = serde_json::from_str(&p).expect("json");
        assert_eq!(w.k, "x");

        let cooldown = format!(
            "{}{}{}",
            cooldown_prefix("r"),
            17,
            cooldown_suffix("p", "i")
        );
        let w: Wire = serde_json::from_str(&cooldown).expect("json");
        assert_eq!((w.k.as_str(), w.u), ("d", Some(17)));
        let cooldown = format!(
            "{}{}{}",
            cooldown_prefix("r"),
            17,
            cooldown_suffix(&long, "i")
        );
        let w: Wire = serde_json::from_str(&cooldown).expect("json");
        assert!(w.p.is_none(), "degrades to a resync");

        let state = state_payload("r", "p\"", "i", SharedState::NeedsReauthorization, Some(7))
            .expect("fits");
        let w: Wire = serde_json::from_str(&state).expect("json");
        assert_eq!((w.k.as_str(), w.v), ("s", Some(7)));
        assert_eq!(
            w.s.as_deref().and_then(SharedState::parse),
            Some(SharedState::NeedsReauthorization)
        );
        assert_eq!(w.p.as_deref(), Some("p\""));
        let w: Wire = serde_json::from_str(
            &state_payload("r", "p", "i", SharedState::Disabled, None).expect("fits"),
        )
        .expect("json");
        assert_eq!((w.s.as_deref(), w.v), (Some("disabled"), None));
        assert!(state_payload("r", &long, "i", SharedState::Enabled, None).is_none());
    }
}
