//! Replicas across a PostgreSQL restart: two replica processes (see `replicas`) share three
//! accounts with 6 s tokens; PostgreSQL is stopped (fast shutdown: every session terminated) a
//! third into the run and started again 2 s later on the same port. The replicas keep serving
//! with the tokens they hold (every call served), refresh nothing without a lease while it is
//! down (`StoreOutage::FailClosed`), reconnect by themselves and refresh again once it is back:
//! 0 invalid_grant, 0 reused refresh tokens, at most 1.1 refreshes per expiry.

use std::time::Duration;

use crate::replicas::{Midway, run_scenario};

#[test]
fn replicas_ride_out_a_postgres_restart() {
    run_scenario(
        module_path!(),
        2,
        Duration::from_secs(14),
        Midway::RestartPostgres,
    );
}
