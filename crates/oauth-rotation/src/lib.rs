//! Credential rotation for an OAuth credential pool: a policy, a pure state machine with grace
//! periods, and hooks that are never called under a lock.
//!
//! - [`RotationPolicy`]: the Go policy and defaults (disabled, 30-day interval, 7-day grace,
//!   auto decommission on).
//! - [`RotationTracker`]: the rotation state ([`RotationState`]) of every credential and its
//!   transitions, pure and synchronous, taking `now`: [`check_rotation_needed`], [`mark_for_rotation`],
//!   a two-phase completion ([`begin_completion`] / [`finish_completion`]) and
//!   [`expired_for_decommission`]. Each transition returns an [`oauth_core::Event`].
//! - [`RotationHooks`] (with [`NoopHooks`]): the Go `OnRotationNeeded` / `OnDecommission`
//!   callbacks as an async trait; the decommission hook can veto.
//! - [`Rotation`]: a tracker behind a mutex plus the hooks, running the whole protocol.
//!
//! Rotation age is measured from the credential's persisted
//! [`created_at`](oauth_core::Credential::created_at), so a restart does not reset it (in Go it did).
//! During the grace period both credentials serve, and the replacement is preferred:
//! [`RotationTracker::is_preferred`] tells selection which credentials to try first.
//!
//! ```
//! use std::time::Duration;
//! use chrono::{TimeDelta, TimeZone, Utc};
//! use oauth_core::{CredentialId, EventKind};
//! use oauth_rotation::{Rotation, RotationPolicy};
//!
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
//! let old = CredentialId::new("team-2025")?;
//! let new = CredentialId::new("team-2026")?;
//! let rotation = Rotation::without_hooks(
//!     RotationPolicy::enabled().with_grace_period(Duration::from_secs(24 * 3600)),
//! );
//! rotation.track(old.clone(), t0)?;
//!
//! let later = t0 + TimeDelta::days(30);
//! assert_eq!(rotation.check_rotation_needed(later), vec![old.clone()]);
//!
//! let marked = rotation.mark_for_rotation(&old, new.clone(), later, later).await?;
//! assert!(matches!(marked.event.kind, EventKind::RotationStarted { .. }));
//! assert!(!rotation.is_preferred(&old) && rotation.is_preferred(&new));
//!
//! // Too early: the old credential keeps serving until the grace period ends.
//! let err = rotation.complete_rotation(&old, later, |_| {}).await.unwrap_err();
//! assert_eq!(err.retry_at(), Some(later + TimeDelta::days(1)));
//!
//! let mut removed = Vec::new();
//! let report = rotation
//!     .auto_decommission_expired(later + TimeDelta::days(2), |id| removed.push(id.clone()))
//!     .await;
//! assert_eq!(report.decommissioned, vec![old.clone()]);
//! assert!(rotation.state(&old).is_none() && rotation.state(&new).is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Hooks never run under a lock
//!
//! The Go package called `OnDecommission` while holding the manager's write lock, so a callback
//! that touched the manager deadlocked. Here:
//!
//! - [`RotationTracker`] never calls a hook: it only changes state and returns events. Anything
//!   that involves a hook is two-phase: [`begin_completion`] checks and returns a
//!   [`CompletionTicket`] without changing anything; the owner releases its lock and awaits the
//!   hook; [`finish_completion`] takes the ticket under the lock again, re-checks (the state may
//!   have changed while the hook ran: [`RotationError::StateChanged`] if it was re-marked) and
//!   removes the state. Marking changes state first and the hook runs afterwards, unlocked.
//! - [`Rotation`] follows that protocol with its own `std` mutex, which it never holds across an
//!   `.await` or while calling a hook or the caller's `remove` closure. A hook may therefore call
//!   any method of the same `Rotation` or of a manager built on it; the tests do exactly that.
//!   It also allows one decommission of a credential at a time
//!   ([`RotationError::CompletionInProgress`]), so a hook is not asked twice concurrently.
//!
//! A manager that keeps its own lock over a [`RotationTracker`] gets the same guarantee by calling
//! hooks only between the phases, never with its guard alive.
//!
//! # Implementing [`RotationHooks`]
//!
//! Implement either method (both default to `Ok(())`) on a `Debug + Send + Sync` type, annotate
//! the impl with `#[async_trait]`, and hand it over as `Arc<dyn RotationHooks>`. Return a
//! [`HookError`] from `on_decommission` to veto a removal; its message appears in errors and events,
//! so never put a secret in it. See the trait's example.
//!
//! [`check_rotation_needed`]: RotationTracker::check_rotation_needed
//! [`mark_for_rotation`]: RotationTracker::mark_for_rotation
//! [`begin_completion`]: RotationTracker::begin_completion
//! [`finish_completion`]: RotationTracker::finish_completion
//! [`expired_for_decommission`]: RotationTracker::expired_for_decommission

mod error;
mod hooks;
mod policy;
mod rotation;
mod state;
mod tracker;

pub use error::RotationError;
pub use hooks::{HookError, NoopHooks, RotationHooks};
pub use policy::RotationPolicy;
pub use rotation::{AutoDecommissionReport, MarkOutcome, Rotation};
pub use state::RotationState;
pub use tracker::{CompletionTicket, RotationTracker};
