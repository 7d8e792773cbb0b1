//! Runs a validated config: builds pools and listeners (TCP, UDP and HTTP), binds every
//! listener once per worker (SO_REUSEPORT shards), runs one single-threaded event loop
//! per worker, reloads on SIGHUP by diffing against the running config, and drains
//! live connections and flows on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use fulcrum_l4::health;
use fulcrum_l4::{Backend, Pool};
use tokio::runtime::{Builder, Handle};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod control;
mod handover;
mod listeners;
mod overrides;
mod resume;
mod run;
mod upgrade;

pub use handover::Upgrade;
pub use run::run;

use handover::Inherited;
use listeners::{bind, update, Added, Shared, Source, Target, Upstreams};
use overrides::Overrides;

use crate::admin::{api::Auth, Admin};
use crate::config::{self, AdminBind, AdminConfig, Config, ListenerConfig, Protocol};
use crate::dns::Dns;
use crate::logging;
use crate::systemd;

/// The running workers and what they serve.
struct Server {
    /// Cancelled to stop accepting everywhere; every listener's own token is a child.
    shutdown: CancellationToken,
    /// Every live client session and UDP flow, across workers and reloads.
    sessions: TaskTracker,
    /// Cancelled to end the worker event loops (and any session still running).
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
    workers: Vec<Handle>,
    /// Running listeners by protocol and configured bind address: a reload keeps
    /// the socket of every listener whose key is unchanged.
    listeners: HashMap<Key, Running>,
    pools: HashMap<String, Arc<Pool>>,
    /// Cancels the health checks of the current pools (replaced on reload).
    health: CancellationToken,
    /// The admin pages, when `[admin]` is configured, and the address asked for.
    admin: Option<Arc<Admin>>,
    admin_bind: Option<AdminBind>,
    /// Sockets from systemd socket activation not yet claimed by a listener.
    activated: systemd::Activated,
    /// Backends removed by a reload whose connections are draining, by pool name
    /// and address, until they are cut.
    draining: HashMap<(String, SocketAddr), Draining>,
    /// The config last applied, before runtime overrides.
    base: Option<Config>,
    /// What the admin API changed; laid over every config applied.
    overrides: Overrides,
    /// A duplicate of the admin socket (`tcp` or `unix`), to hand over on upgrade.
    admin_socket: Option<(String, OwnedFd)>,
    /// Stops the admin listener (once an upgrade handed it over, or at the end).
    admin_stop: CancellationToken,
    /// What the process this one replaced handed over, until the first config
    /// is applied.
    inherited: Option<Inherited>,
    /// An upgrade under way: where idle connections go once the new process
    /// serves, and the thread that passes them on.
    handing: Option<(
        std::sync::mpsc::Sender<fulcrum_l4::handover::Handed>,
        JoinHandle<()>,
    )>,
}

/// A removed backend whose connections end when its drain time is over.
struct Draining {
    backend: Backend,
    /// Cancels the cut (the backend is back in the config).
    cancel: CancellationToken,
}

/// What identifies a listener across reloads: its protocol and configured bind
/// address (and its name when the port is 0, since each such listener gets a port
/// of its own).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    protocol: &'static str,
    bind: SocketAddr,
    name: String,
}

impl Key {
    fn of(l: &ListenerConfig) -> Key {
        Key {
            protocol: l.protocol.name(),
            bind: l.bind,
            name: match l.bind.port() {
                0 => l.name.clone(),
                _ => String::new(),
            },
        }
    }
}

struct Running {
    listener: Shared,
    addr: SocketAddr,
    /// Duplicates of its sockets (one per shard), to hand over on upgrade.
    sockets: Vec<OwnedFd>,
    /// Stops this listener alone (when a reload removes it).
    stop: CancellationToken,
}

impl Server {
    /// Starts `workers` idle worker threads; [`Server::apply`] gives them listeners.
    fn start(workers: usize) -> anyhow::Result<Server> {
        let stop = CancellationToken::new();
        let mut threads = Vec::with_capacity(workers.max(1));
        let mut handles = Vec::with_capacity(workers.max(1));
        for w in 0..workers.max(1) {
            let runtime = Builder::new_current_thread()
                .enable_all()
                // Log lines of one turn of the loop go out together before it sleeps.
                .on_thread_park(logging::flush)
                .build()
                .context("cannot start a worker event loop")?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("fulcrum-w{w}"))
                .spawn(move || {
                    logging::batch_this_thread();
                    runtime.block_on(async {
                        // A loop too busy to sleep still writes its lines this often.
                        let mut every = tokio::time::interval(logging::FLUSH_EVERY);
                        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        let flushing = async {
                            loop {
                                every.tick().await;
                                logging::flush();
                            }
                        };
                        tokio::select! {
                            () = stop.cancelled() => {}
                            () = flushing => {}
                        }
                    });
                    // Dropping the runtime closes whatever sessions outlived the drain.
                    drop(runtime);
                })
                .context("cannot start a worker thread")?;
            threads.push(thread);
        }
        let shutdown = CancellationToken::new();
        let admin_stop = stop.child_token();
        Ok(Server {
            health: shutdown.child_token(),
            shutdown,
            sessions: TaskTracker::new(),
            stop,
            threads,
            workers: handles,
            listeners: HashMap::new(),
            pools: HashMap::new(),
            admin: None,
            admin_bind: None,
            activated: systemd::Activated::default(),
            draining: HashMap::new(),
            base: None,
            overrides: Overrides::default(),
            admin_socket: None,
            admin_stop,
            inherited: None,
            handing: None,
        })
    }

    /// Re-reads the config at `path` (resolving its DNS backends) and applies it;
    /// a bad file or a failed bind leaves the running config in place. Returns the
    /// new drain timeout.
    async fn reload(&mut self, path: &Path, dns: &mut Dns) -> Option<std::time::Duration> {
        tracing::info!(config = %path.display(), "SIGHUP: reloading");
        let config = match config::load(path) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!("reload failed, keeping the running config: {e}");
                return None;
            }
        };
        if config.admin.as_ref().map(|a| &a.bind) != self.admin_bind.as_ref() {
            tracing::warn!(
                "[admin] bind changed: the admin listener keeps its address until a restart"
            );
        }
        if let (Some(admin), Some(at)) = (&self.admin, &config.admin) {
            admin.set_auth(auth(at));
        }
        let applied = match dns.prepare(config).await {
            Ok(config) => self.apply(&config).map(|()| config.drain_timeout),
            Err(e) => Err(e),
        };
        match applied {
            Ok(timeout) => Some(timeout),
            Err(e) => {
                tracing::error!("reload failed, keeping the running config: {e:#}");
                None
            }
        }
    }

    /// Makes `config` the running config. Pools are rebuilt and inherit their
    /// backends' live state by address; listeners with an unchanged protocol and
    /// bind keep their sockets and switch to the new settings for new connections;
    /// new listeners are bound first (any failure changes nothing); removed ones
    /// stop accepting while their connections finish. Runtime overrides are laid
    /// over it.
    fn apply(&mut self, config: &Config) -> anyhow::Result<()> {
        let shaped = self.overrides.shape(config);
        self.install(&shaped, true)?;
        self.base = Some(config.clone());
        self.publish();
        Ok(())
    }

    /// Runs `config` as it is (overrides already laid over it); `announce` logs
    /// the reload line.
    fn install(&mut self, config: &Config, announce: bool) -> anyhow::Result<()> {
        let workers = self.workers.len();
        let pools: HashMap<String, Arc<Pool>> = config
            .pools
            .iter()
            .map(|p| {
                let mut pool = Pool::new(&p.name, p.algorithm, &p.backends).with_policy(p.policy);
                if let Some(old) = self.pools.get(&p.name) {
                    pool = pool.inherit(old);
                    log_carried(&pool);
                }
                // A backend an earlier reload removed, back before its drain ended:
                // its connections count against it again (its cut is cancelled
                // below, once this config is sure to take effect).
                let addrs: Vec<SocketAddr> = pool.backends().iter().map(Backend::addr).collect();
                for addr in addrs {
                    if let Some(draining) = self.draining.get(&(p.name.clone(), addr)) {
                        pool = pool.adopt(&draining.backend);
                    }
                }
                (p.name.clone(), Arc::new(pool))
            })
            .collect();
        self.overrides.set_states(&pools);
        if let Some(inherited) = &mut self.inherited {
            inherited.restore(&pools);
        }

        let mut added = Vec::new();
        let mut updates = Vec::new();
        let upstreams = Upstreams::new(config, &pools);
        for l in &config.listeners {
            let target = Target::new(l, &pools, &upstreams)?;
            let key = Key::of(l);
            match self.listeners.get(&key) {
                Some(running) => updates.push((running.listener.clone(), l, target)),
                None => {
                    let handed = self.inherited.as_mut().and_then(|i| i.take(&key));
                    let source = match handed {
                        Some(fds) => Source::Inherited(fds),
                        None => Source::Bind(&mut self.activated),
                    };
                    added.push(bind(l, target, workers, source)?);
                }
            }
        }

        // Nothing below can fail: the new config takes effect as a whole.
        self.draining.retain(|(pool, addr), draining| {
            let back = pools
                .get(pool)
                .is_some_and(|p| p.backends().iter().any(|b| b.addr() == *addr));
            if back {
                draining.cancel.cancel();
                tracing::info!(pool = %pool, backend = %addr, "backend back before its drain ended; its connections are kept");
            }
            !back
        });
        for (listener, l, target) in updates {
            update(&listener, l, target, workers);
        }
        let wanted: Vec<_> = config.listeners.iter().map(Key::of).collect();
        let removed: Vec<_> = self
            .listeners
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for key in &removed {
            if let Some(running) = self.listeners.remove(key) {
                tracing::info!(protocol = key.protocol, bind = %key.bind, "listener removed; its connections finish");
                running.stop.cancel();
            }
        }
        let kept = config.listeners.len() - added.len();
        let fresh = added.len();
        for a in added {
            self.launch(a);
        }

        self.health.cancel();
        self.health = self.shutdown.child_token();
        for p in &config.pools {
            if let (Some(check), Some(pool)) = (&p.health, pools.get(&p.name)) {
                let check = health::Check {
                    proxy: speaks_proxy(config, &p.name),
                    ..check.clone()
                };
                health::spawn(pool, Arc::new(check), self.health.clone());
            }
        }
        // Connections to backends the new pools no longer have may finish within the
        // drain timeout; then they are cut.
        // A later reload that brings a backend back cancels its cut.
        self.draining.retain(|_, d| !d.backend.is_retired());
        for (name, old) in &self.pools {
            for backend in old.removed_in(pools.get(name).map(Arc::as_ref)) {
                let (backend, drain) = (backend.clone(), config.drain_timeout);
                let cancel = CancellationToken::new();
                self.draining.insert(
                    (name.clone(), backend.addr()),
                    Draining {
                        backend: backend.clone(),
                        cancel: cancel.clone(),
                    },
                );
                tokio::spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = tokio::time::sleep(drain) => backend.retire(),
                    }
                });
            }
        }
        if announce && !self.pools.is_empty() {
            tracing::info!(
                kept,
                added = fresh,
                removed = removed.len(),
                pools = pools.len(),
                "reloaded"
            );
        }
        self.pools = pools;
        Ok(())
    }

    /// Runs a newly bound listener on every worker.
    fn launch(&mut self, added: Added) {
        let stop = self.shutdown.child_token();
        let name = added.listener.name();
        let sockets = added
            .shards
            .iter()
            .filter_map(|s| s.fd().try_clone_to_owned().ok())
            .collect();
        // Round robin: an upgrade may hand over more sockets than there are
        // workers, and every one must be served.
        let workers = self.workers.iter().cycle();
        for (worker, shard) in workers.zip(added.shards) {
            let (stop, sessions, name) = (stop.clone(), self.sessions.clone(), Arc::clone(&name));
            worker.spawn(async move {
                if let Err(e) = shard.serve(stop, sessions).await {
                    tracing::error!(listener = %name, error = %e, "listener stopped");
                }
            });
        }
        tracing::info!(listener = %name, protocol = added.key.protocol, addr = %added.addr, workers = self.workers.len(), "listening");
        self.listeners.insert(
            added.key,
            Running {
                listener: added.listener,
                addr: added.addr,
                sockets,
                stop,
            },
        );
    }

    /// Ends the workers; sessions still running are closed.
    fn stop(self) {
        self.shutdown.cancel();
        self.stop.cancel();
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

/// The PROXY version a pool's backends are sent, by any listener that uses it
/// (as its default pool or in a route): health checks then open with LOCAL.
fn speaks_proxy(config: &Config, pool: &str) -> Option<fulcrum_l4::proxy_protocol::Version> {
    config.listeners.iter().find_map(|l| {
        let routed = match &l.protocol {
            Protocol::Tcp(t) => t.sni_routes.iter().flatten().any(|(_, p)| p == pool),
            _ => false,
        };
        let uses = l.pool.as_deref() == Some(pool) || routed;
        l.proxy_protocol.filter(|_| uses)
    })
}

/// The reload hook tests read: each backend's carried-over state.
fn log_carried(pool: &Pool) {
    for b in pool.backends() {
        tracing::debug!(
            pool = pool.name(),
            backend = %b.addr(),
            total = b.total(),
            active = b.active(),
            healthy = b.is_healthy(),
            "backend state after reload"
        );
    }
}

/// Raises the soft open-file limit to the hard limit: each proxied connection needs
/// two descriptors, and the common soft default of 1024 is far too low.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let before = limit.current;
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => tracing::debug!(?before, now = ?limit.current, "raised RLIMIT_NOFILE"),
            Err(e) => tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
        }
    }
}

/// Who may write to the admin API under `at`.
fn auth(at: &AdminConfig) -> Auth {
    Auth {
        local: at.bind.is_local(),
        token: at.token.clone(),
    }
}
