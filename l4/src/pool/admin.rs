//! A backend's administrative state, set by the operator at runtime: in service,
//! draining (no new connections or requests; live ones finish) or in maintenance
//! (drained, and its health checks paused). HAProxy's `set server state
//! ready|drain|maint` names the same three.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::Ordering;

use super::Backend;

/// What the operator wants of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminState {
    /// In service (the default).
    #[default]
    Ready,
    /// Takes no new connections or requests; live ones finish.
    Drain,
    /// As drain, and its health checks pause.
    Maint,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            AdminState::Ready => 0,
            AdminState::Drain => 1,
            AdminState::Maint => 2,
        }
    }

    fn from_u8(n: u8) -> AdminState {
        match n {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AdminState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ready" => Ok(AdminState::Ready),
            "drain" => Ok(AdminState::Drain),
            "maint" => Ok(AdminState::Maint),
            other => Err(format!(
                "unknown state {other:?}: write ready, drain or maint"
            )),
        }
    }
}

impl Backend {
    /// The operator's state for this backend (shared by every snapshot that holds
    /// its address, so it takes effect in every worker at once).
    pub fn admin_state(&self) -> AdminState {
        AdminState::from_u8(self.stats.admin.load(Ordering::Relaxed))
    }

    pub fn set_admin_state(&self, state: AdminState) {
        self.stats.admin.store(state.to_u8(), Ordering::Relaxed);
    }

    /// Whether the operator has it in service (neither draining nor in maintenance).
    pub fn in_service(&self) -> bool {
        self.stats.admin.load(Ordering::Relaxed) == 0
    }

    /// Whether its health checks are paused.
    pub fn in_maintenance(&self) -> bool {
        self.admin_state() == AdminState::Maint
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::num::NonZeroU32;

    use super::AdminState;
    use crate::balance::{Algorithm, Context};
    use crate::pool::{BackendSpec, Pool};

    fn pool(n: u16) -> Pool {
        let specs: Vec<BackendSpec> = (0..n)
            .map(|i| BackendSpec {
                addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i)),
                weight: NonZeroU32::MIN,
            })
            .collect();
        Pool::new("p", Algorithm::RoundRobin, &specs)
    }

    #[test]
    fn a_drained_backend_is_never_offered_even_when_the_pool_fails_open() {
        let pool = pool(2);
        pool.backends()[0].set_admin_state(AdminState::Drain);
        let ctx = Context::default();
        for _ in 0..10 {
            let offered: Vec<_> = pool.candidates(&ctx).map(|b| b.addr().port()).collect();
            assert_eq!(offered, vec![9001]);
        }
        // The other one fails its checks: failing open still leaves the drained one out.
        pool.set_healthy(&pool.backends()[1], false);
        for _ in 0..10 {
            let offered: Vec<_> = pool.candidates(&ctx).map(|b| b.addr().port()).collect();
            assert_eq!(offered, vec![9001]);
        }
        // Every backend out of service: nothing to offer.
        pool.backends()[1].set_admin_state(AdminState::Maint);
        assert_eq!(pool.candidates(&ctx).count(), 0);
        pool.backends()[0].set_admin_state(AdminState::Ready);
        assert_eq!(pool.candidates(&ctx).count(), 1);
    }

    #[test]
    fn states_parse_from_their_names_only() {
        for s in [AdminState::Ready, AdminState::Drain, AdminState::Maint] {
            assert_eq!(s.as_str().parse::<AdminState>(), Ok(s));
        }
        assert!("down".parse::<AdminState>().is_err());
    }
}
