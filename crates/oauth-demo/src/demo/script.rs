//! The cast (one credential per scripted situation) and the script of faults, timed as fractions
//! of the run so that `--duration 8` tells the same story as the default 20 s.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use oauth_manager::{Credential, OAuthKeyManager, REFRESH_BUFFER};
use oauth_testkit::provider::{FakeProvider, ProviderFault};
use oauth_testkit::token_server::{FamilyId, TokenServer};

use super::console::{Console, Source};

/// What a credential is there to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Its access token enters the refresh window during the run.
    Expiring,
    /// The provider rate-limits it.
    RateLimited,
    /// Its grant is revoked at the token endpoint.
    Revoked,
    /// It is rotated out in favour of a replacement.
    RotatedOut,
    /// The replacement of the rotated credential.
    Replacement,
    /// Ordinary traffic (possibly with request-scoped 400s, 5xx or slow answers).
    Steady,
}

/// One OAuth account of the demo.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) id: String,
    pub(crate) role: Role,
    /// What the report's "role" column says.
    pub(crate) label: String,
    /// Its token family at the fake token server (and provider).
    pub(crate) family: FamilyId,
}

/// A scripted action.
#[derive(Debug)]
pub(crate) enum Action {
    /// Nothing to do: time itself acts (the expiring token).
    Narrate,
    RateLimit {
        wait: Duration,
        in_body: bool,
    },
    Revoke,
    Rotate {
        replacement: Box<Credential>,
    },
    BadRequests(u32),
    Slow {
        delay: Duration,
        times: u32,
    },
    ServerErrors {
        status: u16,
        times: u32,
    },
}

/// One step of the script.
#[derive(Debug)]
pub(crate) struct Step {
    /// Time from the start of traffic.
    pub(crate) at: Duration,
    /// Index into the accounts.
    pub(crate) account: usize,
    pub(crate) action: Action,
    /// The line announcing it in the header.
    pub(crate) plan: String,
    /// The line logged when it happens.
    pub(crate) now: String,
}

/// Indices of the cast in [`Cast::accounts`].
pub(crate) const EXPIRING: usize = 0;
pub(crate) const RATE_LIMITED: usize = 1;
pub(crate) const REVOKED: usize = 2;
pub(crate) const ROTATED: usize = 3;

/// The accounts, the initial credentials and the script.
#[derive(Debug)]
pub(crate) struct Cast {
    pub(crate) accounts: Vec<Account>,
    pub(crate) credentials: Vec<Credential>,
    pub(crate) steps: Vec<Step>,
    /// Index of the replacement in `accounts`.
    pub(crate) replacement: usize,
    /// Retry-After of the first 429, and the reset hint of the second.
    pub(crate) retry_after: Duration,
    pub(crate) reset_hint: Duration,
    /// Rotation grace period.
    pub(crate) grace: Duration,
    /// Request-scoped 400s injected, on which account, and when.
    pub(crate) bad_requests: u32,
    pub(crate) noisy: usize,
    pub(crate) bad_requests_at: Duration,
    /// When the 503s are injected on the same account.
    pub(crate) server_errors_at: Duration,
}

fn secs(d: Duration, min: f64, max: f64) -> Duration {
    Duration::from_secs_f64(d.as_secs_f64().clamp(min, max))
}

fn whole_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().round().max(1.0) as u64)
}

fn credential(
    id: &str,
    tokens: &TokenServer,
    now: DateTime<Utc>,
    expires_in: Duration,
) -> Result<(Credential, FamilyId), String> {
    let grant = tokens.issue_grant(id);
    let expires_in = TimeDelta::from_std(expires_in).map_err(|e| e.to_string())?;
    let credential = Credential::new(id, grant.access_token, now)
        .map_err(|e| e.to_string())?
        .with_client(id, None)
        .with_refresh_token(grant.refresh_token)
        .with_expires_at(now + expires_in);
    Ok((credential, grant.family))
}

impl Cast {
    /// Issues a grant per account at `tokens` and writes the script for a run of `duration`.
    pub(crate) fn new(
        tokens: &TokenServer,
        n: usize,
        duration: Duration,
        now: DateTime<Utc>,
    ) -> Result<Self, String> {
        let at = |fraction: f64| duration.mul_f64(fraction);
        let hour = Duration::from_secs(3600);
        let expiry_due = at(0.15);
        let retry_after = whole_secs(secs(duration.mul_f64(0.2), 2.0, 4.0));
        let reset_hint = Duration::from_secs(2);
        let grace = whole_secs(secs(duration.mul_f64(0.2), 2.0, 5.0));
        let slow = secs(duration.mul_f64(0.1), 0.6, 1.5);
        let bad_requests = 3;

        let mut accounts = Vec::with_capacity(n + 1);
        let mut credentials = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("acct-{}", i + 1);
            let (role, label, expires_in) = match i {
                EXPIRING => (Role::Expiring, "expires soon", REFRESH_BUFFER + expiry_due),
                RATE_LIMITED => (Role::RateLimited, "rate-limited", hour),
                REVOKED => (Role::Revoked, "grant revoked", hour),
                ROTATED => (Role::RotatedOut, "rotated out", hour),
                _ => (Role::Steady, "steady", hour),
            };
            let (cred, family) = credential(&id, tokens, now, expires_in)?;
            credentials.push(cred);
            accounts.push(Account {
                id,
                role,
                label: label.to_owned(),
                family,
            });
        }
        let replacement_id = format!("{}-new", accounts[ROTATED].id);
        let (replacement, family) = credential(&replacement_id, tokens, now, hour)?;
        let replacement_index = accounts.len();
        accounts.push(Account {
            id: replacement_id.clone(),
            role: Role::Replacement,
            label: "replacement".to_owned(),
            family,
        });
        // Request-level faults go to ordinary credentials when there are any.
        let noisy = if n > 4 { 4 } else { EXPIRING };
        let slowed = if n > 5 { 5 } else { noisy };
        for (index, tag) in [(noisy, "400s, 503s"), (slowed, "slow answers")] {
            let account = &mut accounts[index];
            account.label = if account.label == "steady" {
                tag.to_owned()
            } else {
                format!("{}, {tag}", account.label)
            };
        }

        let f1 = |d: Duration| format!("{:.0}", d.as_secs_f64());
        let steps = vec![
            Step {
                at: expiry_due,
                account: EXPIRING,
                action: Action::Narrate,
                plan: "its token enters the 5-minute refresh window: refreshed exactly once, \
                       however many callers want it"
                    .to_owned(),
                now: "token is now within 5 minutes of expiry".to_owned(),
            },
            Step {
                at: at(0.20),
                account: noisy,
                action: Action::BadRequests(bad_requests),
                plan: format!(
                    "{bad_requests} requests rejected with 400: the request's fault, returned at \
                     once, nobody penalized"
                ),
                now: format!("provider will answer the next {bad_requests} requests with 400"),
            },
            Step {
                at: at(0.25),
                account: RATE_LIMITED,
                action: Action::RateLimit {
                    wait: retry_after,
                    in_body: false,
                },
                plan: format!(
                    "429 with Retry-After: {} s: it cools down exactly that long, traffic moves on",
                    f1(retry_after)
                ),
                now: format!(
                    "provider will answer 429, Retry-After: {} s",
                    f1(retry_after)
                ),
            },
            Step {
                at: at(0.40),
                account: REVOKED,
                action: Action::Revoke,
                plan: "grant revoked at the token endpoint: refresh gets invalid_grant, \
                       re-authorization needed, webhook"
                    .to_owned(),
                now: "grant revoked at the token endpoint".to_owned(),
            },
            Step {
                at: at(0.45),
                account: slowed,
                action: Action::Slow {
                    delay: slow,
                    times: 2,
                },
                plan: format!("two slow answers ({:.1} s each)", slow.as_secs_f64()),
                now: format!(
                    "provider will answer the next 2 requests after {:.1} s",
                    slow.as_secs_f64()
                ),
            },
            Step {
                at: at(0.50),
                account: ROTATED,
                action: Action::Rotate {
                    replacement: Box::new(replacement),
                },
                plan: format!(
                    "rotated to {replacement_id} with a {} s grace period, then decommissioned by \
                     maintenance",
                    f1(grace)
                ),
                now: format!("marked for rotation, replacement {replacement_id}"),
            },
            Step {
                at: at(0.60),
                account: noisy,
                action: Action::ServerErrors {
                    status: 503,
                    times: 2,
                },
                plan: "two 503 answers: a brief backoff, the requests fail over".to_owned(),
                now: "provider will answer the next 2 requests with 503".to_owned(),
            },
            Step {
                at: at(0.70),
                account: RATE_LIMITED,
                action: Action::RateLimit {
                    wait: reset_hint,
                    in_body: true,
                },
                plan: format!(
                    "429 again, with a reset hint in the body ({} s) instead of Retry-After",
                    f1(reset_hint)
                ),
                now: format!(
                    "provider will answer 429 with a {} s reset hint in the body",
                    f1(reset_hint)
                ),
            },
        ];
        Ok(Self {
            accounts,
            credentials,
            steps,
            replacement: replacement_index,
            retry_after,
            reset_hint,
            grace,
            bad_requests,
            noisy,
            bad_requests_at: at(0.20),
            server_errors_at: at(0.60),
        })
    }
}

/// Plays the script against the running servers and pool; returns the steps that failed.
pub(crate) async fn play(
    steps: Vec<Step>,
    accounts: Vec<Account>,
    tokens: &TokenServer,
    provider: &FakeProvider,
    pool: &OAuthKeyManager,
    console: &Console,
) -> Vec<String> {
    let mut failures = Vec::new();
    for step in steps {
        tokio::time::sleep_until(console.start() + step.at).await;
        let account = &accounts[step.account];
        let family = account.family;
        // Time itself acts on the expiring token; the pool's own event tells when.
        if !matches!(step.action, Action::Narrate) {
            console.event(Source::Script, &account.id, &step.now);
        }
        match step.action {
            Action::Narrate => {}
            Action::RateLimit { wait, in_body } => provider.inject_times(
                family,
                ProviderFault::RateLimited {
                    retry_after: Some(wait),
                    reset_hint_in_body: in_body,
                },
                1,
            ),
            Action::Revoke => tokens.revoke_family(family),
            Action::Rotate { replacement } => {
                if let Err(e) = pool.mark_for_rotation(&account.id, *replacement).await {
                    failures.push(format!("rotating {}: {e}", account.id));
                }
            }
            Action::BadRequests(n) => provider.inject_times(family, ProviderFault::BadRequest, n),
            Action::Slow { delay, times } => {
                provider.inject_times(family, ProviderFault::Slow(delay), times);
            }
            Action::ServerErrors { status, times } => {
                provider.inject_times(family, ProviderFault::ServerError(status), times);
            }
        }
    }
    failures
}
