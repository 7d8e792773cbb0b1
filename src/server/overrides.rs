//! Runtime overrides set through the admin API: a backend's state and weight, and
//! backends added to or removed from a pool. Kept by pool and backend address
//! until cleared, so every reload (SIGHUP, DNS) lays them over the new config.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use fulcrum_l4::pool::AdminState;
use fulcrum_l4::{BackendSpec, Pool};
use hyper::StatusCode;

use crate::admin::api::{Change, Command, Outcome, Refused};
use crate::admin::Overridden;
use crate::config::Config;

/// What the operator changed of one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Override {
    pub state: Option<AdminState>,
    pub weight: Option<NonZeroU32>,
    /// Added at runtime (not in the config).
    pub added: bool,
    /// Removed at runtime (the config has it).
    pub removed: bool,
}

impl Override {
    fn is_empty(&self) -> bool {
        *self == Override::default()
    }

    fn describe(&self) -> String {
        let mut out = String::new();
        if self.added {
            out.push_str("added ");
        }
        if self.removed {
            out.push_str("removed ");
        }
        if let Some(state) = self.state {
            let _ = write!(out, "state={state} ");
        }
        if let Some(weight) = self.weight {
            let _ = write!(out, "weight={weight} ");
        }
        out.trim_end().to_owned()
    }
}

/// Every override, by pool and backend address.
#[derive(Debug, Default)]
pub struct Overrides {
    by_backend: BTreeMap<(String, SocketAddr), Override>,
}

/// Whether a change needs the pools rebuilt (weights, membership) or only sets a
/// state flag that every worker sees at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    StateOnly,
    Rebuild,
}

impl Overrides {
    /// `config` with the overrides laid over its pools.
    pub fn shape(&self, config: &Config) -> Config {
        let mut config = config.clone();
        if self.by_backend.is_empty() {
            return config;
        }
        for pool in &mut config.pools {
            let mine = |addr: SocketAddr| self.by_backend.get(&(pool.name.clone(), addr)).copied();
            let mut backends: Vec<BackendSpec> = pool
                .backends
                .iter()
                .filter(|b| !mine(b.addr).is_some_and(|o| o.removed))
                .map(|b| BackendSpec {
                    addr: b.addr,
                    weight: mine(b.addr).and_then(|o| o.weight).unwrap_or(b.weight),
                })
                .collect();
            for ((name, addr), o) in &self.by_backend {
                if *name == pool.name && o.added && !backends.iter().any(|b| b.addr == *addr) {
                    backends.push(BackendSpec {
                        addr: *addr,
                        weight: o.weight.unwrap_or(NonZeroU32::MIN),
                    });
                }
            }
            pool.backends = backends;
        }
        config
    }

    /// Sets every backend's state flag from the overrides (ready where none).
    pub fn set_states(&self, pools: &HashMap<String, Arc<Pool>>) {
        for (name, pool) in pools {
            for b in pool.backends() {
                let state = self
                    .by_backend
                    .get(&(name.clone(), b.addr()))
                    .and_then(|o| o.state)
                    .unwrap_or_default();
                b.set_admin_state(state);
            }
        }
    }

    /// Records `command` if the running `pools` allow it.
    pub fn change(
        &mut self,
        command: &Command,
        pools: &HashMap<String, Arc<Pool>>,
    ) -> Result<(Effect, String), Refused> {
        let Command { pool, addr, change } = command;
        let Some(running) = pools.get(pool) else {
            let mut names: Vec<&str> = pools.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(Refused::new(
                StatusCode::NOT_FOUND,
                format!("no pool `{pool}` (pools: {})", names.join(", ")),
            ));
        };
        let present = running.backends().iter().any(|b| b.addr() == *addr);
        let key = (pool.clone(), *addr);
        let mut entry = self.by_backend.get(&key).copied().unwrap_or_default();
        let missing = || {
            Refused::new(
                StatusCode::NOT_FOUND,
                format!("pool `{pool}` has no backend {addr}"),
            )
        };
        let (effect, said) = match *change {
            Change::Set { state, weight } => {
                if !present {
                    return Err(missing());
                }
                let mut said = Vec::new();
                if let Some(state) = state {
                    // Ready is what the config means: no override left.
                    entry.state = (state != AdminState::Ready).then_some(state);
                    said.push(format!("state {state}"));
                }
                let mut effect = Effect::StateOnly;
                if let Some(weight) = weight {
                    entry.weight = Some(weight);
                    effect = Effect::Rebuild;
                    said.push(format!("weight {weight}"));
                }
                (effect, said.join(", "))
            }
            Change::Add { weight } => {
                if present {
                    return Err(Refused::new(
                        StatusCode::CONFLICT,
                        format!("pool `{pool}` already has {addr}; change it with PUT"),
                    ));
                }
                if entry.removed {
                    entry.removed = false;
                } else {
                    entry.added = true;
                }
                entry.weight = weight.or(entry.weight);
                (Effect::Rebuild, "added".to_owned())
            }
            Change::Remove => {
                if !present {
                    return Err(missing());
                }
                if running.backends().len() == 1 {
                    return Err(Refused::new(
                        StatusCode::CONFLICT,
                        format!("{addr} is the last backend of `{pool}`; drain it instead"),
                    ));
                }
                if entry.added {
                    entry = Override::default();
                } else {
                    entry = Override {
                        removed: true,
                        ..Override::default()
                    };
                }
                (Effect::Rebuild, "removed; its connections drain".to_owned())
            }
            Change::Clear => {
                if entry.is_empty() {
                    return Err(Refused::new(
                        StatusCode::NOT_FOUND,
                        format!("{addr} of `{pool}` has no runtime override"),
                    ));
                }
                entry = Override::default();
                (Effect::Rebuild, "overrides cleared".to_owned())
            }
        };
        if entry.is_empty() {
            self.by_backend.remove(&key);
        } else {
            self.by_backend.insert(key, entry);
        }
        Ok((effect, said))
    }

    /// The overrides as the admin pages show them.
    pub fn view(&self) -> Vec<Overridden> {
        self.by_backend
            .iter()
            .map(|((pool, addr), o)| Overridden {
                pool: pool.clone(),
                addr: *addr,
                what: o.describe(),
                removed: o.removed,
            })
            .collect()
    }
}

impl Overrides {
    /// Every override, for the process an upgrade starts.
    pub fn entries(&self) -> impl Iterator<Item = (&(String, SocketAddr), &Override)> {
        self.by_backend.iter()
    }

    /// Takes over an override handed over by the process being upgraded.
    pub fn insert(&mut self, pool: String, addr: SocketAddr, o: Override) {
        if !o.is_empty() {
            self.by_backend.insert((pool, addr), o);
        }
    }
}

/// The line the log gets for a change.
pub fn log(command: &Command, outcome: &Outcome) {
    match outcome {
        Ok(said) => {
            tracing::info!(pool = %command.pool, backend = %command.addr, change = %said, "runtime change")
        }
        Err(r) => {
            tracing::warn!(pool = %command.pool, backend = %command.addr, status = r.status.as_u16(), reason = %r.message, "runtime change refused")
        }
    }
}
