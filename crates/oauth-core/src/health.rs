//! The per-credential health state machine: pure, taking `now`.
//!
//! Independent reasons keep a credential out of rotation, and availability is decided by the
//! latest of them (the Go package let a short request backoff overwrite a long refresh backoff):
//!
//! | reason | set by | ends | empties the pool? |
//! |---|---|---|---|
//! | request backoff | consecutive transient failures: 1, 2, 4, 8, 16, 32, 60, 60... s | time, or a success | no: see below |
//! | refresh backoff | failed refreshes; from the 5th in a row 60, 120, 240, 480 s | time, or a successful refresh | only once the access token stopped working |
//! | cooldown | a rate limit, for Retry-After or the provider's reset hint, clamped | time | yes |
//! | needs re-authorization | a dead grant (`invalid_grant`, revoked grant) | a human: [`CredentialHealth::mark_reauthorized`] | yes, once the access token expires |
//! | misconfigured | a configuration error (`invalid_client`, a missing client id) | a configuration fix: [`CredentialHealth::clear_misconfigured`] | yes, once the access token expires |
//!
//! plus a manual [`disable`](CredentialHealth::disable).
//!
//! A refresh backoff gates refresh *attempts*, never the use of an access token that still works:
//! [`refresh_allowed`](CredentialHealth::refresh_allowed) says when the next attempt may be made,
//! and availability counts the refresh backoff only from the moment the access token stops working.
//!
//! A transient request backoff is *soft*: [`hard_availability`](CredentialHealth::hard_availability)
//! ignores it, so a pool whose every credential is in transient backoff can still send a call to
//! the one that recovers first instead of failing (Envoy's panic threshold does the same).
//!
//! All instants are on one timeline that the caller supplies as `now`. The manager feeds it
//! monotonic time (mapped onto wall-clock-like instants), so a wall-clock step never stretches a
//! backoff.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::credential::after;
use crate::error::PolicyError;
use crate::failure::FailureKind;

/// Thresholds and schedules of the health state machine. The defaults are the Go constants.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// Consecutive request failures after which a credential is reported unhealthy (Go: 3).
    pub unhealthy_after: u32,
    /// First request backoff (Go: 1 s); doubles per consecutive failure.
    pub backoff_base: Duration,
    /// Request backoff cap (Go: 60 s).
    pub backoff_cap: Duration,
    /// Consecutive refresh failures from which the long refresh backoff applies and the credential is
    /// unhealthy (Go: 5). Below it, refresh failures back off on the request schedule.
    pub refresh_unhealthy_after: u32,
    /// First long refresh backoff (Go: 60 s).
    pub refresh_backoff_base: Duration,
    /// Refresh backoff cap (Go: 480 s).
    pub refresh_backoff_cap: Duration,
    /// Cooldown after a rate limit that named no time (not in Go: it had no rate-limit handling).
    pub default_cooldown: Duration,
    /// Longest cooldown accepted from a Retry-After or reset hint (default 25 hours: daily
    /// quotas). Providers enforce per-day quotas (Gemini's requests per day reset at midnight
    /// Pacific time) and name a reset up to a day ahead; a shorter clamp (it was 1 hour) sends
    /// calls back to an exhausted account before its quota resets, only to be refused again. The
    /// extra hour covers a local day lengthened by a daylight-saving change. Longer hints (a
    /// weekly limit) are clamped and the account is tried again after 25 hours.
    pub max_cooldown: Duration,
    /// Fraction (0.0..=1.0) by which a backoff may be randomly shortened, so that credentials failing
    /// together do not all return at the same instant. 0 disables jitter (the default, as in Go).
    pub jitter: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            unhealthy_after: 3,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            refresh_unhealthy_after: 5,
            refresh_backoff_base: Duration::from_secs(60),
            refresh_backoff_cap: Duration::from_secs(480),
            default_cooldown: Duration::from_secs(60),
            max_cooldown: Duration::from_secs(25 * 3600),
            jitter: 0.0,
        }
    }
}

impl HealthPolicy {
    /// Checks that the policy makes sense.
    ///
    /// # Errors
    /// [`PolicyError`] naming the first field that does not.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (field, v) in [
            ("backoff_base", self.backoff_base),
            ("refresh_backoff_base", self.refresh_backoff_base),
            ("default_cooldown", self.default_cooldown),
            ("max_cooldown", self.max_cooldown),
        ] {
            if v.is_zero() {
                return Err(PolicyError::ZeroDuration { field });
            }
        }
        for (field, value, lower_field, lower) in [
            (
                "backoff_cap",
                self.backoff_cap,
                "backoff_base",
                self.backoff_base,
            ),
            (
                "refresh_backoff_cap",
                self.refresh_backoff_cap,
                "refresh_backoff_base",
                self.refresh_backoff_base,
            ),
            (
                "max_cooldown",
                self.max_cooldown,
                "default_cooldown",
                self.default_cooldown,
            ),
        ] {
            if value < lower {
                return Err(PolicyError::BoundBelowBase {
                    field,
                    value,
                    lower_field,
                    lower,
                });
            }
        }
        if self.unhealthy_after == 0 {
            return Err(PolicyError::ZeroThreshold {
                field: "unhealthy_after",
            });
        }
        if self.refresh_unhealthy_after == 0 {
            return Err(PolicyError::ZeroThreshold {
                field: "refresh_unhealthy_after",
            });
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(PolicyError::FractionOutOfRange {
                field: "jitter",
                value: self.jitter,
            });
        }
        Ok(())
    }

    /// The request backoff after `failures` consecutive failures, before jitter: 0 for none, then
    /// `base * 2^(failures-1)` capped (Go: 1, 2, 4, 8, 16, 32, 60, 60... s).
    pub fn request_backoff(&self, failures: u32) -> Duration {
        exp_backoff(self.backoff_base, self.backoff_cap, failures.checked_sub(1))
    }

    /// The refresh backoff after `failures` consecutive refresh failures, before jitter: the request
    /// schedule below [`refresh_unhealthy_after`](Self::refresh_unhealthy_after), then
    /// `refresh_base * 2^(failures-threshold)` capped (Go: 60, 120, 240, 480 s from the 5th).
    pub fn refresh_backoff(&self, failures: u32) -> Duration {
        match failures.checked_sub(self.refresh_unhealthy_after) {
            Some(over) => exp_backoff(
                self.refresh_backoff_base,
                self.refresh_backoff_cap,
                Some(over),
            ),
            None => self.request_backoff(failures),
        }
    }

    /// Clamps a provider-requested cooldown to `max_cooldown`, using `default_cooldown` when the
    /// provider named none.
    pub fn cooldown(&self, requested: Option<Duration>) -> Duration {
        requested
            .unwrap_or(self.default_cooldown)
            .min(self.max_cooldown)
    }
}

fn exp_backoff(base: Duration, cap: Duration, exponent: Option<u32>) -> Duration {
    let Some(exp) = exponent else {
        return Duration::ZERO;
    };
    let factor = 1u32.checked_shl(exp.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// A small seedable random source (SplitMix64) for backoff jitter: deterministic in tests, cheap, and
/// with no dependency.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A source seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next value in `0.0..1.0`.
    pub fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 random bits into [0, 1).
        #[allow(clippy::cast_precision_loss)]
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        unit
    }

    /// Shortens `d` by up to `fraction` of itself; never lengthens it.
    pub fn apply(&mut self, d: Duration, fraction: f64) -> Duration {
        if fraction <= 0.0 || d.is_zero() {
            return d;
        }
        d.mul_f64(1.0 - fraction.min(1.0) * self.next_unit())
    }
}

/// What a credential is doing now, for reporting (a metric gauge, a health endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CredentialState {
    /// Serving traffic.
    Active,
    /// Waiting out a failure backoff (request or refresh).
    BackingOff,
    /// Waiting out a rate limit.
    CoolingDown,
    /// Needs a human to re-authorize it.
    NeedsReauthorization,
    /// Disabled by an operator.
    Disabled,
    /// The OAuth client configuration is wrong (`invalid_client`, a missing client id): a
    /// configuration fix, not a sign-in, clears it.
    Misconfigured,
}

impl CredentialState {
    /// Every state, in gauge order.
    pub const ALL: [Self; 6] = [
        Self::Active,
        Self::BackingOff,
        Self::CoolingDown,
        Self::NeedsReauthorization,
        Self::Disabled,
        Self::Misconfigured,
    ];

    /// The state's snake_case name.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::BackingOff => "backing_off",
            Self::CoolingDown => "cooling_down",
            Self::NeedsReauthorization => "needs_reauthorization",
            Self::Disabled => "disabled",
            Self::Misconfigured => "misconfigured",
        }
    }
}

/// When a credential can take traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Now.
    Now,
    /// From this instant on (a backoff or cooldown ends then).
    At(DateTime<Utc>),
    /// Not until someone acts (re-authorization, or enabling a disabled credential).
    Never,
}

impl Availability {
    /// True for [`Availability::Now`].
    pub const fn is_now(&self) -> bool {
        matches!(self, Self::Now)
    }
}

/// A noteworthy change caused by a health transition; the manager turns these into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthChange {
    /// A failure started (or extended) a backoff.
    BackedOff {
        /// Backoff end.
        until: DateTime<Utc>,
        /// Consecutive failures so far.
        consecutive_failures: u32,
    },
    /// A rate limit started a cooldown.
    CooledDown {
        /// Cooldown end.
        until: DateTime<Utc>,
    },
    /// The credential became unhealthy (crossed a failure threshold).
    BecameUnhealthy,
    /// The credential needs re-authorization.
    NeedsReauthorization {
        /// Until when its access token still works, if at all.
        access_valid_until: Option<DateTime<Utc>>,
    },
    /// The credential's client configuration is wrong; a configuration fix clears it.
    Misconfigured {
        /// Until when its access token still works, if at all.
        access_valid_until: Option<DateTime<Utc>>,
    },
    /// A success after being unhealthy or in backoff.
    Recovered,
}

/// The request- and refresh-failure history of one credential, and what follows from it.
#[derive(Debug, Clone)]
pub struct CredentialHealth {
    consecutive_failures: u32,
    refresh_failures: u32,
    request_backoff_until: Option<DateTime<Utc>>,
    refresh_backoff_until: Option<DateTime<Utc>>,
    /// From when the refresh backoff also keeps the credential out (its access token stops
    /// working then): `None` while no refresh backoff is in force.
    refresh_gates_use_from: Option<DateTime<Utc>>,
    cooldown_until: Option<DateTime<Utc>>,
    reauth: Option<Reauth>,
    misconfigured: Option<Reauth>,
    disabled: bool,
    last_success: Option<DateTime<Utc>>,
    last_failure: Option<DateTime<Utc>>,
    last_failure_kind: Option<FailureKind>,
    last_refresh: Option<DateTime<Utc>>,
    last_refresh_failure: Option<FailureKind>,
    jitter: Jitter,
}

#[derive(Debug, Clone, Copy)]
struct Reauth {
    since: DateTime<Utc>,
    access_valid_until: Option<DateTime<Utc>>,
}

impl Default for CredentialHealth {
    fn default() -> Self {
        Self::new(0)
    }
}

impl CredentialHealth {
    /// A healthy credential with no history; `seed` seeds its jitter source.
    pub const fn new(seed: u64) -> Self {
        Self {
            consecutive_failures: 0,
            refresh_failures: 0,
            request_backoff_until: None,
            refresh_backoff_until: None,
            refresh_gates_use_from: None,
            cooldown_until: None,
            reauth: None,
            misconfigured: None,
            disabled: false,
            last_success: None,
            last_failure: None,
            last_failure_kind: None,
            last_refresh: None,
            last_refresh_failure: None,
            jitter: Jitter::new(seed),
        }
    }

    /// A request succeeded: failures reset, the request backoff clears.
    pub fn record_success(&mut self, now: DateTime<Utc>) -> Option<HealthChange> {
        let was_failing = self.consecutive_failures > 0;
        self.last_success = Some(now);
        self.consecutive_failures = 0;
        self.request_backoff_until = None;
        (was_failing && self.reauth.is_none() && self.misconfigured.is_none())
            .then_some(HealthChange::Recovered)
    }

    /// A request failed with `kind`. Returns the most significant change.
    pub fn record_failure(
        &mut self,
        kind: FailureKind,
        policy: &HealthPolicy,
        now: DateTime<Utc>,
    ) -> Option<HealthChange> {
        self.record_failure_since(kind, now, policy, now)
    }

    /// A request that started at `started` failed with `kind` at `now`.
    ///
    /// Requests already in flight when an earlier failure was recorded fail together with it (the
    /// same outage); they do not count as further consecutive failures, so a burst of concurrent
    /// requests does not push the backoff from 1 s straight to a minute. Rate limits and permanent
    /// failures apply whatever the start time.
    pub fn record_failure_since(
        &mut self,
        kind: FailureKind,
        started: DateTime<Utc>,
        policy: &HealthPolicy,
        now: DateTime<Utc>,
    ) -> Option<HealthChange> {
        let counted = matches!(kind, FailureKind::Unauthorized | FailureKind::Transient);
        if counted && self.last_failure.is_some_and(|last| started < last) {
            self.note_failure(kind, now);
            return None;
        }
        match kind {
            FailureKind::RequestScoped => None,
            // The provider's trouble, not the account's: noted, never held against it.
            FailureKind::Overloaded { .. } => {
                self.note_failure(kind, now);
                None
            }
            FailureKind::RateLimited { retry_after } => {
                self.note_failure(kind, now);
                Some(self.cool_down_for(policy.cooldown(retry_after), now))
            }
            FailureKind::PermanentAuth => {
                self.note_failure(kind, now);
                self.require_reauthorization(None, now)
            }
            FailureKind::Misconfigured => {
                self.note_failure(kind, now);
                self.require_configuration(None, now)
            }
            FailureKind::Unauthorized | FailureKind::Transient => {
                self.note_failure(kind, now);
                let was_healthy = self.is_healthy(policy);
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                let backoff = self.jitter.apply(
                    policy.request_backoff(self.consecutive_failures),
                    policy.jitter,
                );
                let until = after(now, backoff);
                self.request_backoff_until = Some(until);
                Some(if was_healthy && !self.is_healthy(policy) {
                    HealthChange::BecameUnhealthy
                } else {
                    HealthChange::BackedOff {
                        until,
                        consecutive_failures: self.consecutive_failures,
                    }
                })
            }
        }
    }

    /// A refresh succeeded: refresh failures and the refresh backoff clear, and a re-authorization
    /// or misconfiguration requirement ends (the grant and the client evidently work).
    pub fn record_refresh_success(&mut self, now: DateTime<Utc>) -> Option<HealthChange> {
        let was_failing =
            self.refresh_failures > 0 || self.reauth.is_some() || self.misconfigured.is_some();
        self.last_refresh = Some(now);
        self.refresh_failures = 0;
        self.refresh_backoff_until = None;
        self.refresh_gates_use_from = None;
        self.last_refresh_failure = None;
        self.reauth = None;
        self.misconfigured = None;
        was_failing.then_some(HealthChange::Recovered)
    }

    /// A refresh failed with `kind`. `access_valid_until` is until when the current access token
    /// may still be used (`None`: not at all, e.g. the provider just rejected it; pass
    /// `DateTime::<Utc>::MAX_UTC` for a token that does not expire).
    ///
    /// - A dead grant needs re-authorization and a configuration error needs a configuration fix;
    ///   either way the credential stays usable until `access_valid_until`.
    /// - A transient failure starts a refresh backoff. It gates the next refresh *attempt*
    ///   ([`refresh_allowed`](Self::refresh_allowed)) and keeps the credential out of rotation only
    ///   from `access_valid_until` on, when there is no working token to serve with.
    ///
    /// Every failure but a request-scoped one or a provider overload counts in the consecutive
    /// refresh failures.
    pub fn record_refresh_failure(
        &mut self,
        kind: FailureKind,
        access_valid_until: Option<DateTime<Utc>>,
        policy: &HealthPolicy,
        now: DateTime<Utc>,
    ) -> Option<HealthChange> {
        self.last_refresh_failure = Some(kind);
        self.last_failure = Some(now);
        self.last_failure_kind = Some(kind);
        if matches!(
            kind,
            FailureKind::RequestScoped | FailureKind::Overloaded { .. }
        ) {
            return None;
        }
        if kind.is_permanent() {
            self.refresh_failures = self.refresh_failures.saturating_add(1);
            return if kind == FailureKind::Misconfigured {
                self.require_configuration(access_valid_until, now)
            } else {
                self.require_reauthorization(access_valid_until, now)
            };
        }
        let was_healthy = self.is_healthy(policy);
        self.refresh_failures = self.refresh_failures.saturating_add(1);
        let mut backoff = self
            .jitter
            .apply(policy.refresh_backoff(self.refresh_failures), policy.jitter);
        if let FailureKind::RateLimited { retry_after } = kind {
            backoff = backoff.max(policy.cooldown(retry_after));
        }
        let until = after(now, backoff);
        self.refresh_backoff_until =
            Some(self.refresh_backoff_until.map_or(until, |t| t.max(until)));
        // The earliest moment the token is known to stop working wins: a later failure that
        // learned the token is rejected (None) tightens it to now.
        let gate = access_valid_until.unwrap_or(now).max(now);
        self.refresh_gates_use_from =
            Some(self.refresh_gates_use_from.map_or(gate, |g| g.min(gate)));
        Some(if was_healthy && !self.is_healthy(policy) {
            HealthChange::BecameUnhealthy
        } else {
            HealthChange::BackedOff {
                until,
                consecutive_failures: self.refresh_failures,
            }
        })
    }

    /// Cools the credential down until `until` (a provider's reset hint), clamped to the policy's
    /// maximum from `now`.
    pub fn cool_down_until(
        &mut self,
        until: DateTime<Utc>,
        policy: &HealthPolicy,
        now: DateTime<Utc>,
    ) -> HealthChange {
        let requested = (until - now).to_std().unwrap_or(Duration::ZERO);
        self.cool_down_for(policy.cooldown(Some(requested)), now)
    }

    fn cool_down_for(&mut self, d: Duration, now: DateTime<Utc>) -> HealthChange {
        let until = after(now, d);
        let until = self.cooldown_until.map_or(until, |t| t.max(until));
        self.cooldown_until = Some(until);
        HealthChange::CooledDown { until }
    }

    /// Enters (or tightens) the needs-reauthorization state. Reports a change only when the
    /// credential enters it or its access token's validity shrinks, so concurrent requests that all
    /// learn the grant is dead raise one event, not one each. A later failure never extends the
    /// validity it already has.
    fn require_reauthorization(
        &mut self,
        access_valid_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<HealthChange> {
        let (since, valid) = match self.reauth {
            None => (now, access_valid_until),
            Some(r) => {
                let tighter = match (r.access_valid_until, access_valid_until) {
                    (Some(old), Some(new)) => Some(old.min(new)),
                    _ => None,
                };
                if tighter == r.access_valid_until {
                    return None;
                }
                (r.since, tighter)
            }
        };
        self.reauth = Some(Reauth {
            since,
            access_valid_until: valid,
        });
        Some(HealthChange::NeedsReauthorization {
            access_valid_until: valid,
        })
    }

    /// Enters (or tightens) the misconfigured state, with the same reporting rules as
    /// re-authorization.
    fn require_configuration(
        &mut self,
        access_valid_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<HealthChange> {
        let (since, valid) = match self.misconfigured {
            None => (now, access_valid_until),
            Some(r) => {
                let tighter = match (r.access_valid_until, access_valid_until) {
                    (Some(old), Some(new)) => Some(old.min(new)),
                    _ => None,
                };
                if tighter == r.access_valid_until {
                    return None;
                }
                (r.since, tighter)
            }
        };
        self.misconfigured = Some(Reauth {
            since,
            access_valid_until: valid,
        });
        Some(HealthChange::Misconfigured {
            access_valid_until: valid,
        })
    }

    /// The configuration was fixed (a new refresher or client settings): the misconfigured state
    /// ends, and so do the refresh failures it caused. Returns whether it was misconfigured.
    pub fn clear_misconfigured(&mut self) -> bool {
        let was = self.misconfigured.take().is_some();
        if was {
            self.refresh_failures = 0;
            self.refresh_backoff_until = None;
            self.refresh_gates_use_from = None;
            self.last_refresh_failure = None;
        }
        was
    }

    /// True while the credential's client configuration is known to be wrong.
    pub const fn is_misconfigured(&self) -> bool {
        self.misconfigured.is_some()
    }

    /// True when a refresh may be attempted at `now`: no refresh backoff is in force. A refresh
    /// the provider asked for (its access token was rejected) still waits for the backoff: at most
    /// one attempt per backoff step, whatever the call rate.
    pub fn refresh_allowed(&self, now: DateTime<Utc>) -> bool {
        self.refresh_backoff_until.is_none_or(|t| t <= now)
    }

    /// When the next refresh may be attempted, if a refresh backoff is in force at `now`.
    pub fn refresh_backoff_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.refresh_backoff_until.filter(|t| *t > now)
    }

    /// The access token stopped working (the provider rejected it, or it expired) while a refresh
    /// backoff is in force: from `now` on the backoff also keeps the credential out.
    pub fn note_token_unusable(&mut self, now: DateTime<Utc>) {
        if self.refresh_backoff_until.is_some() {
            self.refresh_gates_use_from =
                Some(self.refresh_gates_use_from.map_or(now, |g| g.min(now)));
        }
    }

    fn note_failure(&mut self, kind: FailureKind, now: DateTime<Utc>) {
        self.last_failure = Some(now);
        self.last_failure_kind = Some(kind);
    }

    /// A human re-authorized the credential (new tokens stored): the requirement ends, and so do
    /// the failures and backoffs the old tokens caused. A rate-limit cooldown stays: it belongs to
    /// the account, not to its tokens.
    pub fn mark_reauthorized(&mut self) {
        self.reauth = None;
        self.misconfigured = None;
        self.refresh_failures = 0;
        self.refresh_backoff_until = None;
        self.refresh_gates_use_from = None;
        self.consecutive_failures = 0;
        self.request_backoff_until = None;
    }

    /// An operator cleared the credential's timers: the rate-limit cooldown, the request backoff
    /// and the refresh backoff end now (the failure counts too). A dead grant, a
    /// misconfiguration or disabling stays: they are not timers. Returns whether anything was
    /// cleared.
    pub fn clear_cooldown(&mut self, now: DateTime<Utc>) -> bool {
        let had = [
            self.cooldown_until,
            self.request_backoff_until,
            self.refresh_backoff_until,
        ]
        .into_iter()
        .flatten()
        .any(|t| t > now);
        self.cooldown_until = None;
        self.request_backoff_until = None;
        self.refresh_backoff_until = None;
        self.refresh_gates_use_from = None;
        self.consecutive_failures = 0;
        had
    }

    /// Takes the credential out of rotation until [`enable`](Self::enable).
    pub fn disable(&mut self) {
        self.disabled = true;
    }

    /// Undoes [`disable`](Self::disable).
    pub fn enable(&mut self) {
        self.disabled = false;
    }

    /// When the credential can take traffic: the latest of its backoffs and cooldown, or never while
    /// disabled or needing re-authorization (unless its access token is still valid).
    pub fn availability(&self, now: DateTime<Utc>) -> Availability {
        self.availability_with(now, self.request_backoff_until)
    }

    /// Availability ignoring the transient request backoff: rate limits, a refresh backoff with no
    /// working token, a dead grant, misconfiguration and disabling count; a transient backoff does
    /// not. When no credential is [available](Self::availability), a pool may still send a call to
    /// one that is hard-available, the one that recovers first.
    pub fn hard_availability(&self, now: DateTime<Utc>) -> Availability {
        self.availability_with(now, None)
    }

    fn availability_with(
        &self,
        now: DateTime<Utc>,
        request_backoff: Option<DateTime<Utc>>,
    ) -> Availability {
        if self.disabled {
            return Availability::Never;
        }
        for r in [self.reauth, self.misconfigured].into_iter().flatten() {
            match r.access_valid_until {
                Some(t) if t > now => {}
                _ => return Availability::Never,
            }
        }
        let refresh_gate = match (self.refresh_backoff_until, self.refresh_gates_use_from) {
            (Some(until), Some(from)) if from <= now => Some(until),
            _ => None,
        };
        match [request_backoff, refresh_gate, self.cooldown_until]
            .into_iter()
            .flatten()
            .max()
        {
            Some(t) if t > now => Availability::At(t),
            _ => Availability::Now,
        }
    }

    /// Until when the credential may be used before its availability must be computed again: the
    /// access token's expiry when it needs re-authorization or a configuration fix (it is
    /// unusable after), or when a refresh backoff will then keep it out. `None` when no such limit
    /// applies.
    pub fn available_until(&self) -> Option<DateTime<Utc>> {
        let gate = match (self.refresh_backoff_until, self.refresh_gates_use_from) {
            (Some(until), Some(from)) if from < until => Some(from),
            _ => None,
        };
        [self.reauth, self.misconfigured]
            .into_iter()
            .flatten()
            .filter_map(|r| r.access_valid_until)
            .chain(gate)
            .min()
    }

    /// The latest of the request backoff, refresh backoff and cooldown ends.
    pub fn blocked_until(&self) -> Option<DateTime<Utc>> {
        [
            self.request_backoff_until,
            self.refresh_backoff_until,
            self.cooldown_until,
        ]
        .into_iter()
        .flatten()
        .max()
    }

    /// True when the credential can take traffic at `now`.
    pub fn is_available(&self, now: DateTime<Utc>) -> bool {
        self.availability(now).is_now()
    }

    /// True unless failure thresholds were crossed, it needs re-authorization, or it is disabled.
    pub fn is_healthy(&self, policy: &HealthPolicy) -> bool {
        self.reauth.is_none()
            && self.misconfigured.is_none()
            && !self.disabled
            && self.consecutive_failures < policy.unhealthy_after
            && self.refresh_failures < policy.refresh_unhealthy_after
    }

    /// True while a human must re-authorize the credential.
    pub const fn needs_reauthorization(&self) -> bool {
        self.reauth.is_some()
    }

    /// Consecutive request failures.
    pub const fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Consecutive refresh failures.
    pub const fn refresh_failures(&self) -> u32 {
        self.refresh_failures
    }

    /// The current state, for reporting.
    pub fn state(&self, now: DateTime<Utc>) -> CredentialState {
        if self.disabled {
            CredentialState::Disabled
        } else if self.reauth.is_some() {
            CredentialState::NeedsReauthorization
        } else if self.misconfigured.is_some() {
            CredentialState::Misconfigured
        } else if self.cooldown_until.is_some_and(|t| t > now)
            && self.cooldown_until >= self.request_backoff_until.max(self.refresh_backoff_until)
        {
            CredentialState::CoolingDown
        } else if matches!(self.availability(now), Availability::At(_)) {
            CredentialState::BackingOff
        } else {
            CredentialState::Active
        }
    }

    /// A serializable copy of the health at `now`.
    pub fn snapshot(&self, policy: &HealthPolicy, now: DateTime<Utc>) -> HealthSnapshot {
        let availability = self.availability(now);
        HealthSnapshot {
            state: self.state(now),
            is_healthy: self.is_healthy(policy),
            is_available: availability.is_now(),
            available_at: match availability {
                Availability::Now => Some(now),
                Availability::At(t) => Some(t),
                Availability::Never => None,
            },
            failure_count: self.consecutive_failures,
            refresh_fail_count: self.refresh_failures,
            backoff_until: self.blocked_until().filter(|t| *t > now),
            request_backoff_until: self.request_backoff_until.filter(|t| *t > now),
            refresh_backoff_until: self.refresh_backoff_until.filter(|t| *t > now),
            cooldown_until: self.cooldown_until.filter(|t| *t > now),
            needs_reauthorization: self.reauth.is_some(),
            needs_reauthorization_since: self.reauth.map(|r| r.since),
            access_valid_until: self
                .reauth
                .or(self.misconfigured)
                .and_then(|r| r.access_valid_until),
            misconfigured: self.misconfigured.is_some(),
            disabled: self.disabled,
            last_success: self.last_success,
            last_failure: self.last_failure,
            last_failure_kind: self.last_failure_kind,
            last_refresh: self.last_refresh,
            last_refresh_failure: self.last_refresh_failure,
        }
    }
}

/// A serializable copy of one credential's health. Holds no secret material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthSnapshot {
    /// What the credential is doing.
    pub state: CredentialState,
    /// Go `is_healthy`.
    pub is_healthy: bool,
    /// Go `is_available`: can take traffic now.
    pub is_available: bool,
    /// When it can take traffic (now when available; `None` for never).
    pub available_at: Option<DateTime<Utc>>,
    /// Go `failure_count`: consecutive request failures.
    pub failure_count: u32,
    /// Go `refresh_fail_count`: consecutive refresh failures.
    pub refresh_fail_count: u32,
    /// Go `backoff_until`: the latest of all backoffs and the cooldown, when in the future.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub backoff_until: Option<DateTime<Utc>>,
    /// Request-failure backoff end.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_backoff_until: Option<DateTime<Utc>>,
    /// Refresh-failure backoff end.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refresh_backoff_until: Option<DateTime<Utc>>,
    /// Rate-limit cooldown end.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cooldown_until: Option<DateTime<Utc>>,
    /// Needs a human to re-authorize it.
    pub needs_reauthorization: bool,
    /// Since when.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub needs_reauthorization_since: Option<DateTime<Utc>>,
    /// Until when its access token still works while it needs re-authorization.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub access_valid_until: Option<DateTime<Utc>>,
    /// The client configuration is wrong (a configuration fix clears it).
    #[serde(default)]
    pub misconfigured: bool,
    /// Disabled by an operator.
    pub disabled: bool,
    /// Go `last_success`.
    pub last_success: Option<DateTime<Utc>>,
    /// Go `last_failure`.
    pub last_failure: Option<DateTime<Utc>>,
    /// Classification of the last failure.
    pub last_failure_kind: Option<FailureKind>,
    /// Go `last_refresh`.
    pub last_refresh: Option<DateTime<Utc>>,
    /// Classification of the last refresh failure, until a refresh succeeds.
    pub last_refresh_failure: Option<FailureKind>,
}
