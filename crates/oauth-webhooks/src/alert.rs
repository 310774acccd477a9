//! Alert rules (the Go `CheckAlerts`): pure functions of snapshots, configuration and `now`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::{
    Credential, CredentialId, Event, EventKind, HealthSnapshot, UsageSnapshot, after, delta,
};
use serde_json::{Map, json};

use crate::config::{MonitoringConfig, WebhookEventType};
use crate::event::{
    WebhookEvent, details, expiry_details, failure_rate_details, go_duration_minutes, json_time,
    misconfigured_message, reauth_message,
};

/// What the rules look at for one credential.
///
/// Built with [`AlertFacts::new`] and the `with_*` setters (the struct is `#[non_exhaustive]`, so
/// new facts can be added without breaking callers):
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// # use oauth_core::{CredentialHealth, CredentialId, HealthPolicy, UsageSnapshot};
/// # use oauth_webhooks::AlertFacts;
/// # let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
/// # let id = CredentialId::new("team").unwrap();
/// # let health = CredentialHealth::default().snapshot(&HealthPolicy::default(), now);
/// # let usage = UsageSnapshot::default();
/// let facts = AlertFacts::new(&id, &health, &usage)
///     .with_access_token_expiry(Some(now + chrono::TimeDelta::hours(1)))
///     .with_refresh_token_expiry(None)
///     .with_refreshable(true);
/// assert!(facts.access_token_renewed());
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AlertFacts<'a> {
    /// The credential.
    pub id: &'a CredentialId,
    /// Its health at `now`.
    pub health: &'a HealthSnapshot,
    /// Its usage counters.
    pub usage: &'a UsageSnapshot,
    /// Its access token's expiry, if known.
    pub access_token_expires_at: Option<DateTime<Utc>>,
    /// Its refresh token's (the grant's) expiry, if the provider said.
    pub refresh_token_expires_at: Option<DateTime<Utc>>,
    /// The pool renews the access token before it expires: a refresher is configured
    /// (`Refresher::is_configured`) and the credential holds a refresh token. `false` (the value
    /// [`new`](Self::new) starts with) makes the access token's expiry worth a warning, as in Go.
    pub refreshable: bool,
}

impl<'a> AlertFacts<'a> {
    /// Facts with no expiry known and no refresher (set them with the `with_*` methods).
    pub const fn new(
        id: &'a CredentialId,
        health: &'a HealthSnapshot,
        usage: &'a UsageSnapshot,
    ) -> Self {
        Self {
            id,
            health,
            usage,
            access_token_expires_at: None,
            refresh_token_expires_at: None,
            refreshable: false,
        }
    }

    /// The facts of a pool credential: its id, both expiries, and `refreshable` when the pool has
    /// a working refresher (`refresher_configured`, i.e. `Refresher::is_configured`) and the
    /// credential holds a refresh token.
    pub fn for_credential(
        credential: &'a Credential,
        health: &'a HealthSnapshot,
        usage: &'a UsageSnapshot,
        refresher_configured: bool,
    ) -> Self {
        Self::new(&credential.id, health, usage)
            .with_access_token_expiry(credential.expires_at)
            .with_refresh_token_expiry(credential.refresh_token_expires_at)
            .with_refreshable(refresher_configured && credential.refresh_token.is_some())
    }

    /// Sets the access token's expiry.
    #[must_use]
    pub const fn with_access_token_expiry(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.access_token_expires_at = at;
        self
    }

    /// Sets the refresh token's (grant's) expiry.
    #[must_use]
    pub const fn with_refresh_token_expiry(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.refresh_token_expires_at = at;
        self
    }

    /// Says whether the pool renews the access token (see [`refreshable`](Self::refreshable)).
    #[must_use]
    pub const fn with_refreshable(mut self, refreshable: bool) -> Self {
        self.refreshable = refreshable;
        self
    }

    /// Will the pool renew the access token before it expires? Only when it is
    /// [`refreshable`](Self::refreshable) and its refreshes are not failing for good (a dead grant
    /// or a misconfigured client). A transient refresh failure does not count: it has its own
    /// `failure` alert, and the token is reported `expired` if it lapses meanwhile.
    pub fn access_token_renewed(&self) -> bool {
        self.refreshable
            && !self.health.needs_reauthorization
            && !self.health.misconfigured
            && !self
                .health
                .last_refresh_failure
                .is_some_and(|k| k.is_permanent())
    }

    /// Why the access token will not be renewed (a `details.reason` word), or `None` if it will.
    fn not_renewed_because(&self) -> Option<&'static str> {
        if self.health.needs_reauthorization {
            Some("needs_reauthorization")
        } else if self.health.misconfigured {
            Some("misconfigured")
        } else if self
            .health
            .last_refresh_failure
            .is_some_and(|k| k.is_permanent())
        {
            Some("refresh_failing")
        } else if !self.refreshable {
            Some("not_refreshable")
        } else {
            None
        }
    }
}

/// The alert input of earlier releases (the Go `CheckAlerts` view): it does not say whether the
/// pool renews the access token, so [`check_alerts`] treats the token as one that is **not**
/// renewed and warns of its expiry as Go did (every hour for 1-hour tokens). Prefer
/// [`AlertFacts`], which knows better; this converts into it with `refreshable: false`.
#[derive(Debug, Clone, Copy)]
pub struct AlertInput<'a> {
    /// The credential.
    pub id: &'a CredentialId,
    /// Its health at `now`.
    pub health: &'a HealthSnapshot,
    /// Its usage counters.
    pub usage: &'a UsageSnapshot,
    /// Its access token's expiry, if known.
    pub expires_at: Option<DateTime<Utc>>,
}

impl<'a> From<AlertInput<'a>> for AlertFacts<'a> {
    fn from(input: AlertInput<'a>) -> Self {
        AlertFacts::new(input.id, input.health, input.usage)
            .with_access_token_expiry(input.expires_at)
    }
}
/// When each alert key was last raised, for the per-key cooldown.
///
/// Entries older than the cooldown are pruned on every check, so the map holds at most the keys
/// raised within one cooldown window (Go's map was never pruned).
#[derive(Debug, Clone, Default)]
pub struct AlertState {
    last: HashMap<String, DateTime<Utc>>,
}

impl AlertState {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Nothing remembered?
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// When `key` (e.g. `failure:team`) was last raised, if within memory.
    pub fn last_raised(&self, key: &str) -> Option<DateTime<Utc>> {
        self.last.get(key).copied()
    }

    /// Records that an event already told the operator what an alert rule would repeat (a refresh
    /// failure, a credential needing re-authorization or misconfigured, the pool exhausted), so [`check_alerts`] does
    /// not send it again within the cooldown. Other events are ignored.
    pub fn note_event(&mut self, event: &Event) {
        let key = match &event.kind {
            EventKind::RefreshFailed { credential, .. } => format!("refresh_failure:{credential}"),
            EventKind::NeedsReauthorization { credential, .. } => {
                format!("needs_reauthorization:{credential}")
            }
            EventKind::Misconfigured { credential, .. } => format!("misconfigured:{credential}"),
            EventKind::PoolExhausted { .. } => "pool_exhausted".to_owned(),
            _ => return,
        };
        self.last.insert(key, event.at);
    }

    /// Forgets every key (e.g. after an operator acknowledged the alerts).
    pub fn clear(&mut self) {
        self.last.clear();
    }

    /// Raises `key` unless it was raised within `cooldown` before `now`; records it if raised.
    /// A clock that went backwards suppresses until it passes the recorded time plus `cooldown`.
    fn admit(&mut self, key: String, cooldown: Duration, now: DateTime<Utc>) -> bool {
        if let Some(last) = self.last.get(&key)
            && now < after(*last, cooldown)
        {
            return false;
        }
        self.last.insert(key, now);
        true
    }

    fn prune(&mut self, cooldown: Duration, now: DateTime<Utc>) {
        self.last.retain(|_, last| now < after(*last, cooldown));
    }
}

/// Evaluates every enabled alert rule at `now` and returns the alerts not suppressed by the
/// cooldown, in a deterministic order: by rule (high failure rate, refresh failure, needs
/// re-authorization, misconfigured, expiry warning / expired, pool exhausted), then by credential
/// id.
///
/// `inputs` are [`AlertFacts`] (or the older [`AlertInput`], read as facts with no refresher).
///
/// Rules, each enabled by its `alert_on_*` flag:
/// - **failure** (`failure:<id>`): the failure rate over the usage snapshot's recent window is
///   strictly above `failure_rate_threshold`, with at least `min_requests_for_failure_rate`
///   requests in the window. A snapshot without a window (`recent_window` zero) is judged on its
///   lifetime counters, as in Go.
/// - **failure** (`refresh_failure:<id>`): the latest refresh failed (`refresh_fail_count > 0`), unless
///   the credential needs re-authorization, which has its own alert.
/// - **needs_reauthorization** (`needs_reauthorization:<id>`), with the time its access token stops
///   working.
/// - **misconfigured** (`misconfigured:<id>`, `alert_on_misconfigured`): the OAuth client
///   configuration is wrong; a configuration fix clears it, no sign-in is needed.
/// - **expiry_warning** / **expired** (`alert_on_expiry_soon`), only for something that will really
///   expire, never for an access token the pool is about to refresh:
///   - the refresh token, i.e. the grant (`refresh_token_expiry_warning:<id>`,
///     `refresh_token_expired:<id>`; `details.token = "refresh_token"`): within the warning time
///     (zero means 24 h), or past;
///   - the access token (`expiry_warning:<id>`, `expired:<id>`; `details.token = "access_token"`)
///     when it is not renewed ([`AlertFacts::access_token_renewed`]: no refresher or refresh
///     token, a dead grant, which warns of its remaining validity, or a misconfigured client);
///     `details.reason` says which;
///   - a renewed access token only once it has **expired while its refreshes fail** (`expired`,
///     reason `refresh_failing`): an idle credential whose token lapsed is refreshed on its next
///     use and raises nothing.
/// - **pool_exhausted** (`pool_exhausted`): no credential is available; details say when the first
///   one will be again.
///
/// The returned events are not filtered by `webhook_events`: [`Monitor::check_alerts`] delivers the
/// ones the filter wants, and the caller still sees every alert.
///
/// [`Monitor::check_alerts`]: crate::Monitor::check_alerts
pub fn check_alerts<'a, I>(
    config: &MonitoringConfig,
    inputs: &[I],
    state: &mut AlertState,
    now: DateTime<Utc>,
) -> Vec<WebhookEvent>
where
    I: Copy + Into<AlertFacts<'a>>,
{
    let cooldown = config.alert_cooldown;
    state.prune(cooldown, now);
    let mut sorted: Vec<AlertFacts<'a>> = inputs.iter().map(|i| (*i).into()).collect();
    sorted.sort_by(|a, b| a.id.cmp(b.id));

    let mut out = Vec::new();
    let mut raise = |key: String, event: WebhookEvent, state: &mut AlertState| {
        if state.admit(key, cooldown, now) {
            out.push(event);
        }
    };

    if config.alert_on_high_failure_rate {
        for input in &sorted {
            if let Some(event) = high_failure_rate(config, input, now) {
                raise(format!("failure:{}", input.id), event, state);
            }
        }
    }
    if config.alert_on_refresh_failure {
        for input in &sorted {
            let h = input.health;
            if h.refresh_fail_count > 0 && !h.needs_reauthorization && !h.misconfigured {
                let reason = h.last_refresh_failure.map_or("unknown", |k| k.as_str());
                let event = WebhookEvent::new(
                    WebhookEventType::Failure,
                    Some(input.id.clone()),
                    now,
                    "Token refresh failed",
                    details([
                        ("error", json!(reason)),
                        ("consecutive_failures", json!(h.refresh_fail_count)),
                        ("refresh_backoff_until", json_time(h.refresh_backoff_until)),
                    ]),
                );
                raise(format!("refresh_failure:{}", input.id), event, state);
            }
        }
    }
    if config.alert_on_needs_reauthorization {
        for input in &sorted {
            let h = input.health;
            if h.needs_reauthorization {
                let event = WebhookEvent::new(
                    WebhookEventType::NeedsReauthorization,
                    Some(input.id.clone()),
                    now,
                    reauth_message(h.access_valid_until, now),
                    details([
                        ("access_valid_until", json_time(h.access_valid_until)),
                        ("since", json_time(h.needs_reauthorization_since)),
                    ]),
                );
                raise(format!("needs_reauthorization:{}", input.id), event, state);
            }
        }
    }
    if config.alert_on_misconfigured {
        for input in &sorted {
            let h = input.health;
            if h.misconfigured {
                let valid = h.access_valid_until.or(input.access_token_expires_at);
                let event = WebhookEvent::new(
                    WebhookEventType::Misconfigured,
                    Some(input.id.clone()),
                    now,
                    misconfigured_message(valid, now),
                    details([("access_valid_until", json_time(valid))]),
                );
                raise(format!("misconfigured:{}", input.id), event, state);
            }
        }
    }
    if config.alert_on_expiry_soon {
        let warning = delta(config.effective_expiry_warning());
        for input in &sorted {
            for alert in expiry_alerts(input, warning, now) {
                raise(alert.key, alert.event, state);
            }
        }
    }
    if config.alert_on_pool_exhausted
        && !sorted.is_empty()
        && sorted.iter().all(|i| !i.health.is_available)
    {
        let next = sorted.iter().filter_map(|i| i.health.available_at).min();
        let mut d = Map::new();
        d.insert("credentials".into(), json!(sorted.len()));
        if let Some(next) = next {
            d.insert("next_available_at".into(), json_time(Some(next)));
        }
        let event = WebhookEvent::new(
            WebhookEventType::PoolExhausted,
            None,
            now,
            format!("No credential is available ({} configured)", sorted.len()),
            d,
        );
        raise("pool_exhausted".to_owned(), event, state);
    }
    out
}

/// An alert with its cooldown key.
struct Keyed {
    key: String,
    event: WebhookEvent,
}

/// Which token an expiry alert is about.
#[derive(Clone, Copy)]
enum Token {
    Access,
    Refresh,
}

impl Token {
    const fn detail(self) -> &'static str {
        match self {
            Self::Access => "access_token",
            Self::Refresh => "refresh_token",
        }
    }

    const fn key_prefix(self) -> &'static str {
        match self {
            Self::Access => "",
            Self::Refresh => "refresh_token_",
        }
    }
}

/// The expiry rules for one credential (see [`check_alerts`]): refresh token first, then access
/// token.
fn expiry_alerts(
    facts: &AlertFacts<'_>,
    warning: chrono::TimeDelta,
    now: DateTime<Utc>,
) -> Vec<Keyed> {
    let mut out = Vec::new();
    if let Some(at) = facts.refresh_token_expires_at {
        out.extend(expiry_alert(facts, Token::Refresh, at, None, warning, now));
    }
    // A dead grant's access token works until `access_valid_until` (when the health knows it).
    let access = if facts.health.needs_reauthorization || facts.health.misconfigured {
        facts
            .health
            .access_valid_until
            .or(facts.access_token_expires_at)
    } else {
        facts.access_token_expires_at
    };
    if let Some(at) = access {
        match facts.not_renewed_because() {
            Some(reason) => out.extend(expiry_alert(
                facts,
                Token::Access,
                at,
                Some(reason),
                warning,
                now,
            )),
            // Renewed: only an expiry the refreshes failed to prevent is news.
            None if at <= now && facts.health.refresh_fail_count > 0 => out.extend(expiry_alert(
                facts,
                Token::Access,
                at,
                Some("refresh_failing"),
                warning,
                now,
            )),
            None => {}
        }
    }
    out
}

fn expiry_alert(
    facts: &AlertFacts<'_>,
    token: Token,
    expires_at: DateTime<Utc>,
    reason: Option<&'static str>,
    warning: chrono::TimeDelta,
    now: DateTime<Utc>,
) -> Option<Keyed> {
    let id = facts.id;
    let (event_type, key, message, mut d) = if expires_at <= now {
        let ago = go_duration_minutes((now - expires_at).to_std().unwrap_or_default());
        let message = match token {
            Token::Access => format!("Credential access token expired {ago} ago"),
            Token::Refresh => {
                format!("Credential refresh token expired {ago} ago; sign in again")
            }
        };
        (
            WebhookEventType::Expired,
            format!("{}expired:{id}", token.key_prefix()),
            message,
            details([("expires_at", json_time(Some(expires_at)))]),
        )
    } else if expires_at - now <= warning {
        let left = (expires_at - now).to_std().unwrap_or_default();
        let message = match token {
            Token::Access => format!("Credential expires in {}", go_duration_minutes(left)),
            Token::Refresh => format!(
                "Credential refresh token expires in {}; sign in again before then",
                go_duration_minutes(left)
            ),
        };
        (
            WebhookEventType::ExpiryWarning,
            format!("{}expiry_warning:{id}", token.key_prefix()),
            message,
            expiry_details(expires_at, left),
        )
    } else {
        return None;
    };
    d.insert("token".into(), json!(token.detail()));
    if let Some(reason) = reason {
        d.insert("reason".into(), json!(reason));
    }
    Some(Keyed {
        key,
        event: WebhookEvent::new(event_type, Some(id.clone()), now, message, d),
    })
}

fn high_failure_rate(
    config: &MonitoringConfig,
    input: &AlertFacts<'_>,
    now: DateTime<Utc>,
) -> Option<WebhookEvent> {
    let u = input.usage;
    let (requests, failures) = if u.recent_window.is_zero() {
        (u.request_count, u.error_count)
    } else {
        (u.recent_requests, u.recent_failures)
    };
    if requests == 0 || requests < config.min_requests_for_failure_rate {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = failures as f64 / requests as f64;
    if rate <= config.failure_rate_threshold {
        return None;
    }
    let mut d = failure_rate_details(rate, requests, failures);
    d.insert("window_secs".into(), json!(u.recent_window.as_secs()));
    Some(WebhookEvent::new(
        WebhookEventType::Failure,
        Some(input.id.clone()),
        now,
        format!("High failure rate detected: {:.1}%", rate * 100.0),
        d,
    ))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use oauth_core::{CredentialHealth, HealthPolicy};

    use super::*;

    #[test]
    fn facts_of_a_credential_are_refreshable_only_with_a_refresher_and_a_refresh_token() {
        let now = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("valid date");
        let health = CredentialHealth::default().snapshot(&HealthPolicy::default(), now);
        let usage = UsageSnapshot::default();
        let mut bare = Credential::new("c", "at", now).expect("valid");
        bare.expires_at = Some(now + chrono::TimeDelta::hours(1));
        bare.refresh_token_expires_at = Some(now + chrono::TimeDelta::days(30));
        let with_rt = bare.clone().with_refresh_token("rt");
        for (cred, configured, refreshable) in [
            (&bare, true, false),
            (&with_rt, false, false),
            (&with_rt, true, true),
        ] {
            let f = AlertFacts::for_credential(cred, &health, &usage, configured);
            assert_eq!(f.refreshable, refreshable);
            assert_eq!(f.access_token_renewed(), refreshable);
            assert_eq!(f.access_token_expires_at, cred.expires_at);
            assert_eq!(f.refresh_token_expires_at, cred.refresh_token_expires_at);
            assert_eq!(f.id, &cred.id);
        }
    }
}
