//! A small pool for the scrape-time gauges: oauth-core's real health state machine and a manual
//! clock, read through [`GaugeSource`] the way the manager's pool is.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth_core::{Clock, CredentialHealth, CredentialId, HealthPolicy, ManualClock};
use oauth_metrics::{GaugeRow, GaugeSource};

/// Credentials with their health and token expiry; every [`visit`](GaugeSource::visit) reads
/// the clock once and takes every row at that instant.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) clock: ManualClock,
    pub(crate) policy: HealthPolicy,
    members: Mutex<Vec<Member>>,
}

#[derive(Debug)]
struct Member {
    id: CredentialId,
    health: CredentialHealth,
    expires_at: Option<DateTime<Utc>>,
}

impl Pool {
    pub(crate) fn new(start: DateTime<Utc>) -> Self {
        Self {
            clock: ManualClock::new(start),
            policy: HealthPolicy::default(),
            members: Mutex::default(),
        }
    }

    pub(crate) fn add(&self, id: &CredentialId, expires_in: Option<Duration>) {
        let now = self.clock.now();
        self.members.lock().expect("lock").push(Member {
            id: id.clone(),
            health: CredentialHealth::new(7),
            expires_at: expires_in.map(|d| now + d),
        });
    }

    pub(crate) fn remove(&self, id: &CredentialId) {
        self.members.lock().expect("lock").retain(|m| &m.id != id);
    }

    /// Runs `f` on the health of `id` at the current time.
    pub(crate) fn with_health(
        &self,
        id: &CredentialId,
        f: impl FnOnce(&mut CredentialHealth, &HealthPolicy, DateTime<Utc>),
    ) {
        let now = self.clock.now();
        let mut members = self.members.lock().expect("lock");
        let m = members.iter_mut().find(|m| &m.id == id).expect("member");
        f(&mut m.health, &self.policy, now);
    }
}

impl GaugeSource for Pool {
    fn visit(&self, f: &mut dyn FnMut(GaugeRow<'_>)) {
        let now = self.clock.now();
        for m in self.members.lock().expect("lock").iter() {
            let snap = m.health.snapshot(&self.policy, now);
            f(GaugeRow::from_health(&m.id, &snap, m.expires_at, now));
        }
    }
}
