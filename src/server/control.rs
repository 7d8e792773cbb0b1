//! Runtime control of the running server: carries out admin API commands (a
//! state flag at once, weights and membership by rebuilding the pools from the
//! last config with the overrides laid over it) and publishes what runs to the
//! admin pages.

use std::sync::Arc;

use hyper::StatusCode;

use super::overrides::Effect;
use super::{Key, Server, Shared};
use crate::admin::api::{Command, Outcome, Refused};
use crate::admin::{ListenerView, View};

impl Server {
    /// Carries out one admin API command; every worker sees it when this returns.
    pub(super) fn command(&mut self, command: &Command) -> Outcome {
        let Some(base) = self.base.clone() else {
            return Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "fulcrum is still starting",
            ));
        };
        let (effect, said) = self.overrides.change(command, &self.pools)?;
        match effect {
            Effect::StateOnly => self.overrides.set_states(&self.pools),
            Effect::Rebuild => {
                let shaped = self.overrides.shape(&base);
                if let Err(e) = self.install(&shaped, false) {
                    return Err(Refused::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("change recorded but not applied: {e:#}"),
                    ));
                }
            }
        }
        self.publish();
        Ok(said)
    }

    /// Gives the admin pages what runs now.
    pub(super) fn publish(&self) {
        let (Some(admin), Some(config)) = (&self.admin, &self.base) else {
            return;
        };
        // In config order, so /metrics and /status list them the same way on
        // every scrape and after every reload.
        let listeners = config
            .listeners
            .iter()
            .filter_map(|l| self.listeners.get(&Key::of(l)))
            .map(|r| match &r.listener {
                Shared::Tcp(l) => ListenerView::Tcp(Arc::clone(l), r.addr),
                Shared::Udp(l) => ListenerView::Udp(Arc::clone(l), r.addr),
                Shared::Http(l) => ListenerView::Http(Arc::clone(l), r.addr),
            })
            .collect();
        let pools = config
            .pools
            .iter()
            .filter_map(|p| self.pools.get(&p.name).cloned())
            .collect();
        admin.set_view(View {
            listeners,
            pools,
            overrides: self.overrides.view(),
        });
    }
}
