//! oauth-rotation's integration tests: the public API as a user sees it, time driven by
//! `ManualClock`.

mod hooks;
mod persistence;
mod tracker;

use chrono::{DateTime, TimeZone, Utc};
use oauth_core::{CredentialId, ManualClock};

/// A credential id from a literal.
pub(crate) fn id(s: &str) -> CredentialId {
    CredentialId::new(s).expect("valid test id")
}

/// The start of every test's clock.
pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid date")
}

/// A manual clock stopped at [`t0`].
pub(crate) fn clock() -> ManualClock {
    ManualClock::new(t0())
}
