//! The rotation policy: when credentials are due, how long the old one keeps serving.

use std::time::Duration;

use oauth_core::PolicyError;

/// When credentials are rotated and how their replacement happens (the Go `RotationPolicy`, with
/// the same defaults; the Go callbacks are the [`RotationHooks`](crate::RotationHooks) trait).
///
/// - `enabled` governs only *scheduled* rotation: [`check_rotation_needed`] lists nothing while it
///   is off. Marking and completing a rotation by hand work either way, as in Go.
/// - `auto_decommission` is independent of `enabled` (as in Go): it also finishes rotations that
///   were started by hand.
///
/// [`check_rotation_needed`]: crate::RotationTracker::check_rotation_needed
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Whether credentials become due for rotation by age. Default `false`.
    pub enabled: bool,
    /// Age (from the credential's persisted creation time) at which a credential is due.
    /// Default 30 days.
    pub rotation_interval: Duration,
    /// How long a credential marked for rotation keeps serving next to its replacement.
    /// Default 7 days. Zero is allowed: the old credential may be decommissioned at once.
    pub grace_period: Duration,
    /// Whether [`auto_decommission_expired`](crate::Rotation::auto_decommission_expired) removes
    /// credentials whose grace period has ended. Default `true`.
    pub auto_decommission: bool,
}

impl RotationPolicy {
    /// The Go default rotation interval: 30 days.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 24 * 60 * 60);
    /// The Go default grace period: 7 days.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

    /// The default policy with scheduled rotation switched on.
    pub fn enabled() -> Self {
        Self {
            enabled: true,
            ..Self::default()
        }
    }

    /// Sets whether scheduled rotation is on.
    #[must_use]
    pub const fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the rotation interval.
    #[must_use]
    pub const fn with_rotation_interval(mut self, interval: Duration) -> Self {
        self.rotation_interval = interval;
        self
    }

    /// Sets the grace period.
    #[must_use]
    pub const fn with_grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// Sets whether expired credentials are decommissioned automatically.
    #[must_use]
    pub const fn with_auto_decommission(mut self, auto: bool) -> Self {
        self.auto_decommission = auto;
        self
    }

    /// Checks that the policy makes sense.
    ///
    /// A zero `rotation_interval` is rejected while the policy is enabled: it would make every
    /// credential due the moment it is added, including each replacement (Go accepted it). A zero
    /// `grace_period` is accepted: it means "decommission as soon as asked", which is a legitimate
    /// choice when the old credential is known to be revoked already.
    ///
    /// # Errors
    /// [`PolicyError::ZeroDuration`] naming `rotation_interval`.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.enabled && self.rotation_interval.is_zero() {
            return Err(PolicyError::ZeroDuration {
                field: "rotation_interval",
            });
        }
        Ok(())
    }
}

impl Default for RotationPolicy {
    /// Go `DefaultRotationPolicy()`: disabled, 30 days, 7 days grace, auto decommission on.
    fn default() -> Self {
        Self {
            enabled: false,
            rotation_interval: Self::DEFAULT_INTERVAL,
            grace_period: Self::DEFAULT_GRACE,
            auto_decommission: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_go_constants() {
        let p = RotationPolicy::default();
        assert!(!p.enabled);
        assert_eq!(p.rotation_interval, Duration::from_secs(2_592_000));
        assert_eq!(p.grace_period, Duration::from_secs(604_800));
        assert!(p.auto_decommission);
        assert_eq!(p.validate(), Ok(()));
        assert!(RotationPolicy::enabled().enabled);
    }

    #[test]
    fn zero_interval_is_rejected_only_when_enabled() {
        let p = RotationPolicy::default().with_rotation_interval(Duration::ZERO);
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(
            p.with_enabled(true).validate(),
            Err(PolicyError::ZeroDuration {
                field: "rotation_interval"
            })
        );
    }

    #[test]
    fn zero_grace_is_accepted() {
        let p = RotationPolicy::enabled().with_grace_period(Duration::ZERO);
        assert_eq!(p.validate(), Ok(()));
    }
}
