//! When to refresh a token proactively, clamped to the token's own lifetime.
//!
//! A fixed buffer (the Go package's 5 minutes) is fine for one-hour tokens and wrong for short
//! ones: a 120-second token is inside a 5-minute buffer from the moment it is issued, so every
//! call refreshes it. [`RefreshWindow`] shrinks the buffer to a fraction of the token's lifetime
//! and never refreshes a token it has just received again within a minimum interval.

use std::time::Duration;

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::credential::{Credential, REFRESH_BUFFER, delta};

/// Parts per million of a lifetime: the fraction is stored as an integer so the policy is `Eq`
/// and `Hash`, and the arithmetic is exact.
const PPM: u64 = 1_000_000;

/// When a credential's access token should be refreshed proactively. Pure: it takes `now`.
///
/// The token is due when it expires within the **window**
///
/// ```text
/// window = min(buffer, max(fraction × lifetime, floor))
/// ```
///
/// where `lifetime = expires_at − last_refresh`, the lifetime of a token the pool itself
/// received. A credential that has never been refreshed here (no `last_refresh`: it was
/// supplied, or loaded) has an unknown lifetime and gets the plain `buffer`, as in the Go
/// package; its `created_at` is when it joined a pool, which says nothing about when its token
/// was issued.
///
/// A token the pool received is not refreshed again within the **minimum interval**
///
/// ```text
/// min_interval' = min(min_interval, max(lifetime, floor))
/// ```
///
/// of `last_refresh`, however the window is set and whatever the token claims (a server that
/// issues tokens with `expires_in: 0` gets at most one refresh per `floor`). The exception is a
/// token the provider rejected (HTTP 401): the caller passes `forced` to
/// [`should_refresh`](Self::should_refresh).
///
/// | lifetime | window (defaults) | refreshed at age |
/// |---|---|---|
/// | 1 h | 5 min (the buffer) | 55 min |
/// | 299 s | 149.5 s | 149.5 s |
/// | 120 s | 60 s | 60 s |
/// | 60 s | 30 s | 30 s |
/// | 0 s (or negative) | 10 s (the floor) | 10 s (the minimum interval) |
///
/// Defaults ([`RefreshWindow::default`]): buffer [`REFRESH_BUFFER`] (5 min), fraction 0.5,
/// floor 10 s, minimum interval 30 s. Half the lifetime, because it leaves as much time for
/// retries (a token endpoint down, backoffs) as the token has already lived, while refreshing
/// a token at most twice per lifetime; a larger fraction refreshes sooner and more often
/// (0.8 refreshes a 120-second token every 24 s), a smaller one leaves less room to retry. The
/// floor keeps a few seconds for the refresh itself to complete; the minimum interval bounds the
/// refresh rate of a misbehaving server. For tokens of an hour or more the rule is exactly the Go
/// package's buffer.
///
/// All arithmetic saturates: no expiry, refresh time or setting (`DateTime::MIN_UTC`,
/// `MAX_UTC`, `Duration::MAX`) panics.
///
/// ```
/// use chrono::{TimeDelta, TimeZone, Utc};
/// use oauth_core::{Credential, RefreshWindow, TokenSet};
///
/// let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
/// let window = RefreshWindow::default();
/// let mut cred = Credential::new("short", "at-0", t0)?.with_refresh_token("rt");
/// // The pool refreshed it at t0 and got a 120-second token.
/// cred.apply_tokens(TokenSet::new("at-1").with_expires_at(t0 + TimeDelta::seconds(120)), t0);
/// assert!(!window.needs_refresh(&cred, t0 + TimeDelta::seconds(59)));
/// assert!(window.needs_refresh(&cred, t0 + TimeDelta::seconds(61)));
/// // A 401 forces a refresh whatever the window says.
/// assert!(window.should_refresh(&cred, t0 + TimeDelta::seconds(1), true));
/// # Ok::<(), oauth_core::CredentialError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefreshWindow {
    buffer: Duration,
    fraction_ppm: u32,
    floor: Duration,
    min_interval: Duration,
}

/// A [`RefreshWindow`] was given values that make no sense.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
#[non_exhaustive]
pub enum RefreshWindowError {
    /// The fraction of the lifetime is not a number in `(0, 1]`.
    #[error("the refresh window's fraction of the token lifetime must be in (0, 1], got {0}")]
    FractionOutOfRange(f64),
    /// The floor is larger than the buffer (the window could never be as small as the floor
    /// says it must be).
    #[error("the refresh window's floor ({floor:?}) must not exceed its buffer ({buffer:?})")]
    FloorAboveBuffer {
        /// The floor.
        floor: Duration,
        /// The buffer.
        buffer: Duration,
    },
}

impl Default for RefreshWindow {
    /// Buffer 5 min, fraction 0.5, floor 10 s, minimum interval 30 s (see the type's docs).
    fn default() -> Self {
        Self {
            buffer: REFRESH_BUFFER,
            fraction_ppm: 500_000,
            floor: Self::DEFAULT_FLOOR,
            min_interval: Self::DEFAULT_MIN_INTERVAL,
        }
    }
}

impl RefreshWindow {
    /// The default fraction of the lifetime (one half).
    pub const DEFAULT_FRACTION: f64 = 0.5;
    /// The default floor of the window.
    pub const DEFAULT_FLOOR: Duration = Duration::from_secs(10);
    /// The default minimum interval between two refreshes of a token the pool received.
    pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(30);

    /// A window with these settings.
    ///
    /// # Errors
    /// [`RefreshWindowError::FractionOutOfRange`] unless `0 < fraction <= 1`;
    /// [`RefreshWindowError::FloorAboveBuffer`] when `floor > buffer`. Any duration is accepted
    /// otherwise (`Duration::MAX` saturates).
    pub fn new(
        buffer: Duration,
        fraction: f64,
        floor: Duration,
        min_interval: Duration,
    ) -> Result<Self, RefreshWindowError> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(RefreshWindowError::FractionOutOfRange(fraction));
        }
        if floor > buffer {
            return Err(RefreshWindowError::FloorAboveBuffer { floor, buffer });
        }
        // In (0, 1] the product is in (0, 1e6]; at least 1 ppm so it stays positive.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let fraction_ppm = ((fraction * 1e6).round() as u32).clamp(1, 1_000_000);
        Ok(Self {
            buffer,
            fraction_ppm,
            floor,
            min_interval,
        })
    }

    /// The same window with another buffer; the floor is lowered to the buffer if it was
    /// above it (so this cannot fail). `RefreshStrategy` uses it to apply its adaptive buffer.
    #[must_use]
    pub fn with_buffer(self, buffer: Duration) -> Self {
        Self {
            buffer,
            floor: self.floor.min(buffer),
            ..self
        }
    }

    /// The upper bound of the window.
    pub const fn buffer(&self) -> Duration {
        self.buffer
    }

    /// The fraction of the lifetime.
    pub fn fraction(&self) -> f64 {
        f64::from(self.fraction_ppm) / 1e6
    }

    /// The lower bound of the window (and of the minimum interval).
    pub const fn floor(&self) -> Duration {
        self.floor
    }

    /// The minimum interval between two refreshes of a token the pool received.
    pub const fn min_interval(&self) -> Duration {
        self.min_interval
    }

    /// The lifetime of the credential's access token, when known: `expires_at − last_refresh`
    /// (zero when the expiry is at or before the refresh). `None` without an expiry or without
    /// a refresh by the pool.
    pub fn lifetime(credential: &Credential) -> Option<Duration> {
        let (expires_at, issued) = (credential.expires_at?, credential.last_refresh?);
        // Both are within chrono's range, so the difference fits a `TimeDelta`.
        Some(
            expires_at
                .signed_duration_since(issued)
                .to_std()
                .unwrap_or(Duration::ZERO),
        )
    }

    /// The window for a token of this lifetime (`None`: unknown, the plain buffer).
    pub fn window_for(&self, lifetime: Option<Duration>) -> Duration {
        match lifetime {
            None => self.buffer,
            Some(lifetime) => self.buffer.min(self.fraction_of(lifetime).max(self.floor)),
        }
    }

    /// The minimum interval for a token of this lifetime.
    pub fn min_interval_for(&self, lifetime: Duration) -> Duration {
        self.min_interval.min(lifetime.max(self.floor))
    }

    /// When the credential's token becomes due for a proactive refresh: the later of
    /// `expires_at − window` and `last_refresh + minimum interval`. `None` without an expiry
    /// (a token that does not expire is never refreshed proactively). A refresh is due strictly
    /// after this instant (the Go rule).
    pub fn refresh_at(&self, credential: &Credential) -> Option<DateTime<Utc>> {
        let expires_at = credential.expires_at?;
        let lifetime = Self::lifetime(credential);
        let due = sub(expires_at, self.window_for(lifetime));
        Some(match (credential.last_refresh, lifetime) {
            (Some(issued), Some(lifetime)) => due.max(add(issued, self.min_interval_for(lifetime))),
            _ => due,
        })
    }

    /// Should the token be refreshed now, proactively? True when it expires within the window,
    /// and the pool did not receive it less than the minimum interval ago. A wall clock stepped
    /// back before `last_refresh` lifts the minimum interval (it must not freeze refreshing).
    pub fn needs_refresh(&self, credential: &Credential, now: DateTime<Utc>) -> bool {
        let Some(expires_at) = credential.expires_at else {
            return false;
        };
        let lifetime = Self::lifetime(credential);
        if now <= sub(expires_at, self.window_for(lifetime)) {
            return false;
        }
        match (credential.last_refresh, lifetime) {
            (Some(issued), Some(lifetime)) if now >= issued => {
                now > add(issued, self.min_interval_for(lifetime))
            }
            _ => true,
        }
    }

    /// An instant before which [`needs_refresh`](Self::needs_refresh) is false at every time,
    /// however early (a wall clock stepped back included): the hot path compares one number
    /// instead of re-deciding on every call. `MAX_UTC` for a token without an expiry.
    ///
    /// Usually [`refresh_at`](Self::refresh_at). When the minimum interval ends after the window
    /// opens and the token was received after that (a lifetime shorter than the floor), the quiet
    /// times are two intervals; only the first is returned, so the answer stays conservative.
    pub fn quiet_until(&self, credential: &Credential) -> DateTime<Utc> {
        let Some(expires_at) = credential.expires_at else {
            return DateTime::<Utc>::MAX_UTC;
        };
        let lifetime = Self::lifetime(credential);
        let due = sub(expires_at, self.window_for(lifetime));
        match (credential.last_refresh, lifetime) {
            (Some(issued), Some(lifetime)) if issued <= due => {
                due.max(add(issued, self.min_interval_for(lifetime)))
            }
            _ => due,
        }
    }

    /// [`needs_refresh`](Self::needs_refresh), or `forced`: the provider rejected the access
    /// token (HTTP 401), which no window or minimum interval holds back.
    pub fn should_refresh(
        &self,
        credential: &Credential,
        now: DateTime<Utc>,
        forced: bool,
    ) -> bool {
        forced || self.needs_refresh(credential, now)
    }

    /// `fraction × lifetime`, exact to the nanosecond and saturating.
    fn fraction_of(&self, lifetime: Duration) -> Duration {
        let nanos = lifetime.as_nanos() * u128::from(self.fraction_ppm) / u128::from(PPM);
        let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
        #[allow(clippy::cast_possible_truncation)] // below 1e9
        let sub_nanos = (nanos % 1_000_000_000) as u32;
        if secs == u64::MAX {
            Duration::MAX
        } else {
            Duration::new(secs, sub_nanos)
        }
    }
}

/// `t − d`, saturating at the earliest representable time.
fn sub(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_sub_signed(delta(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `t + d`, saturating at the latest representable time.
fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(delta(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;
    use crate::tokens::TokenSet;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    fn secs(n: i64) -> TimeDelta {
        TimeDelta::seconds(n)
    }

    fn refreshed_with_lifetime(lifetime: i64) -> Credential {
        let mut cred = Credential::new("w", "at-0", t0() - secs(86_400))
            .expect("valid")
            .with_refresh_token("rt");
        cred.apply_tokens(
            TokenSet::new("at-1").with_expires_at(t0() + secs(lifetime)),
            t0(),
        );
        cred
    }

    #[test]
    fn validation_rejects_nonsense() {
        let s = Duration::from_secs;
        for bad in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                RefreshWindow::new(s(300), bad, s(10), s(30)),
                Err(RefreshWindowError::FractionOutOfRange(_))
            ));
        }
        assert_eq!(
            RefreshWindow::new(s(5), 0.5, s(10), s(30)),
            Err(RefreshWindowError::FloorAboveBuffer {
                floor: s(10),
                buffer: s(5)
            })
        );
        let w = RefreshWindow::new(Duration::MAX, 1.0, Duration::ZERO, Duration::MAX)
            .expect("extreme but meaningful");
        assert!((w.fraction() - 1.0).abs() < f64::EPSILON);
        assert_eq!(
            RefreshWindow::new(s(300), 0.5, s(10), s(30)),
            Ok(RefreshWindow::default())
        );
    }

    #[test]
    fn the_window_follows_the_lifetime() {
        let w = RefreshWindow::default();
        let cases = [
            (3600, Duration::from_secs(300)),
            (299, Duration::from_millis(149_500)),
            (120, Duration::from_secs(60)),
            (60, Duration::from_secs(30)),
            (0, Duration::from_secs(10)),
            (-50, Duration::from_secs(10)),
        ];
        for (lifetime, want) in cases {
            let cred = refreshed_with_lifetime(lifetime);
            assert_eq!(
                w.window_for(RefreshWindow::lifetime(&cred)),
                want,
                "lifetime {lifetime}"
            );
        }
        // Unknown lifetime (never refreshed by the pool): the plain buffer, as in Go.
        let supplied = Credential::new("s", "at", t0())
            .expect("valid")
            .with_expires_at(t0() + secs(120));
        assert!(w.needs_refresh(&supplied, t0()));
        assert_eq!(RefreshWindow::lifetime(&supplied), None);
    }

    #[test]
    fn short_lifetimes_refresh_at_half_life_and_degenerate_ones_at_most_once_per_floor() {
        let w = RefreshWindow::default();
        let ms = TimeDelta::milliseconds;
        for (lifetime, due_ms) in [
            (120, 60_000),
            (60, 30_000),
            (299, 149_500),
            (3600, 3_300_000),
        ] {
            let cred = refreshed_with_lifetime(lifetime);
            let due = t0() + ms(due_ms);
            assert_eq!(w.refresh_at(&cred), Some(due), "lifetime {lifetime}");
            assert!(!w.needs_refresh(&cred, due), "lifetime {lifetime}: strict");
            assert!(w.needs_refresh(&cred, due + ms(1)), "lifetime {lifetime}");
        }
        // `expires_in: 0`: due at once by the window, held back by the minimum interval.
        let zero = refreshed_with_lifetime(0);
        assert!(!w.needs_refresh(&zero, t0()));
        assert!(!w.needs_refresh(&zero, t0() + secs(10)));
        assert!(w.needs_refresh(&zero, t0() + secs(10) + ms(1)));
        assert_eq!(w.refresh_at(&zero), Some(t0() + secs(10)));
        // ... unless the provider rejected it.
        assert!(w.should_refresh(&zero, t0(), true));
    }

    /// Drives `calls` calls `every` apart on a manual clock through `decide`, refreshing (a new
    /// token of `lifetime` seconds, applied at the clock's time) whenever it says so; returns the
    /// number of refreshes. The credential starts as supplied: never refreshed by the pool, its
    /// token expiring `lifetime` seconds from the start.
    fn simulate(
        lifetime: i64,
        calls: u32,
        every: Duration,
        decide: impl Fn(&Credential, DateTime<Utc>) -> bool,
    ) -> u32 {
        use crate::clock::{Clock, ManualClock};
        let clock = ManualClock::new(t0());
        let mut cred = Credential::new("sim", "at-0", t0())
            .expect("valid")
            .with_refresh_token("rt-0")
            .with_expires_at(t0() + secs(lifetime));
        let mut refreshes = 0;
        for _ in 0..calls {
            let now = clock.now();
            if decide(&cred, now) {
                refreshes += 1;
                cred.apply_tokens(
                    TokenSet::new(format!("at-{refreshes}"))
                        .with_refresh_token(format!("rt-{refreshes}"))
                        .with_expires_at(now + secs(lifetime)),
                    now,
                );
            }
            clock.advance(every);
        }
        refreshes
    }

    #[test]
    fn short_lived_tokens_refresh_once_per_half_life_not_on_every_call() {
        let w = RefreshWindow::default();
        let window = |c: &Credential, now| w.needs_refresh(c, now);
        let go_buffer = |c: &Credential, now| c.needs_refresh(now);
        let ms = Duration::from_millis;
        // 1,000 calls over one second with 120-second tokens: one refresh (the first call's),
        // where the plain 5-minute buffer refreshes on every call.
        assert_eq!(simulate(120, 1_000, ms(1), window), 1);
        assert_eq!(simulate(120, 1_000, ms(1), go_buffer), 1_000);
        // expires_in 0, 60 and 299: likewise one refresh in that second.
        for lifetime in [0, 60, 299] {
            assert_eq!(simulate(lifetime, 1_000, ms(1), window), 1, "{lifetime}");
        }
        // Ten minutes of calls 100 ms apart: a 120-second token is refreshed every 60 s
        // (10 refreshes), a 60-second one every 30 s (20), a 0-second one at most once per floor
        // (10 s: 60), a one-hour token not at all.
        let ten_minutes = 6_000;
        assert_eq!(simulate(120, ten_minutes, ms(100), window), 10);
        assert_eq!(simulate(60, ten_minutes, ms(100), window), 20);
        assert_eq!(simulate(0, ten_minutes, ms(100), window), 60);
        assert_eq!(simulate(3600, ten_minutes, ms(100), window), 0);
    }

    #[test]
    fn a_clock_stepped_back_does_not_freeze_refreshing() {
        // Refreshed "at t0" by a clock that has since been stepped back an hour; the token it
        // got had expired two hours before that (a degenerate server).
        let w = RefreshWindow::default();
        let stale = refreshed_with_lifetime(-7200);
        assert!(w.needs_refresh(&stale, t0() - secs(3600)));
    }

    #[test]
    fn a_token_without_expiry_is_never_due() {
        let w = RefreshWindow::default();
        let cred = Credential::new("n", "at", t0()).expect("valid");
        assert!(!w.needs_refresh(&cred, DateTime::<Utc>::MAX_UTC));
        assert_eq!(w.refresh_at(&cred), None);
    }

    #[test]
    fn extremes_saturate() {
        let w =
            RefreshWindow::new(Duration::MAX, 1.0, Duration::MAX, Duration::MAX).expect("valid");
        for at in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            for issued in [
                None,
                Some(DateTime::<Utc>::MIN_UTC),
                Some(DateTime::<Utc>::MAX_UTC),
            ] {
                let mut cred = Credential::new("x", "at", t0())
                    .expect("valid")
                    .with_expires_at(at);
                cred.last_refresh = issued;
                for now in [DateTime::<Utc>::MIN_UTC, t0(), DateTime::<Utc>::MAX_UTC] {
                    let _ = w.needs_refresh(&cred, now);
                    let _ = RefreshWindow::default().needs_refresh(&cred, now);
                    let _ = w.refresh_at(&cred);
                }
            }
        }
        assert_eq!(w.with_buffer(Duration::ZERO).floor(), Duration::ZERO);
    }
}
