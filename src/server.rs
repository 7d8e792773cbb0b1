//! Runs a validated config: builds pools and listeners (TCP, UDP and HTTP), binds every
//! listener once per worker (SO_REUSEPORT shards), runs one single-threaded event loop
//! per worker, reloads on SIGHUP by diffing against the running config, and drains
//! live connections and flows on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener, UdpSocket as StdUdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use fulcrum_l4::health;
use fulcrum_l4::sni::SniRoutes;
use fulcrum_l4::{tcp, udp, Pool};
use fulcrum_l7::route::{self, Router};
use fulcrum_l7::Upstream;
use tokio::runtime::{Builder, Handle};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{Admin, ListenerView, View};
use crate::config::{self, Config, ListenerConfig, Protocol};
use crate::dns::Dns;
use crate::systemd;

/// Runs `config` on `workers` threads until SIGTERM or SIGINT, then drains. With a
/// config `path`, SIGHUP reloads it.
pub fn run(config: &Config, workers: usize, path: Option<&Path>) -> anyhow::Result<()> {
    // Before any thread starts: it edits the environment.
    let activated = systemd::Activated::from_env();
    raise_fd_limit();
    let control = Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the control event loop")?;
    let mut server = Server::start(workers)?;
    let (dns_changes, mut dns_changed) = tokio::sync::mpsc::unbounded_channel();
    let mut dns = Dns::new(dns_changes);
    server.activated = activated;
    let admin_socket = match config.admin {
        Some(addr) => Some(bind_admin(addr)?),
        None => None,
    };
    let (mut term, mut int, mut hup) = {
        // Signal handlers go in before the first listener is announced, so a
        // signal sent at once is handled, not fatal. Health checks spawned by
        // apply run on the control loop, which block_on drives below.
        let _context = control.enter();
        let handlers = (
            signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            signal(SignalKind::hangup()).context("cannot watch SIGHUP")?,
        );
        if let Some(socket) = admin_socket {
            let admin = Admin::new();
            let listener = tokio::net::TcpListener::from_std(socket).context("admin listener")?;
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(listener = "admin", addr = %addr, "listening");
            }
            tokio::spawn(Arc::clone(&admin).serve(listener, server.stop.clone()));
            server.admin = Some(admin);
        }
        server.admin_bind = config.admin;
        let effective = control.block_on(dns.prepare(config.clone()))?;
        server.apply(&effective)?;
        server.activated.warn_unused();
        handlers
    };
    systemd::ready();
    let mut drain_timeout = config.drain_timeout;
    control.block_on(async {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                Some(change) = dns_changed.recv() => {
                    if let Some(config) = dns.changed(change) {
                        if let Err(e) = server.apply(&config) {
                            tracing::error!("dns change not applied: {e:#}");
                        }
                    }
                }
                _ = hup.recv() => match path {
                    Some(path) => {
                        systemd::reloading();
                        if let Some(timeout) = server.reload(path, &mut dns).await {
                            drain_timeout = timeout;
                        }
                        // Ready again, with the new config or the old one kept.
                        systemd::ready();
                    }
                    None => tracing::warn!("SIGHUP: no config file to reload (flag-only mode)"),
                },
            }
        }
        systemd::stopping();
        let live = server.sessions.len();
        tracing::info!(
            live,
            timeout_ms = drain_timeout.as_millis() as u64,
            "shutting down: no new connections, draining live ones"
        );
        server.shutdown.cancel();
        server.sessions.close();
        tokio::select! {
            () = server.sessions.wait() => tracing::info!("drained"),
            () = tokio::time::sleep(drain_timeout) => {
                tracing::warn!(cut = server.sessions.len(), "drain timeout reached; closing remaining connections");
            }
            _ = term.recv() => tracing::warn!(cut = server.sessions.len(), "second signal; closing remaining connections"),
            _ = int.recv() => tracing::warn!(cut = server.sessions.len(), "second signal; closing remaining connections"),
        }
        anyhow::Ok(())
    })?;
    server.stop();
    Ok(())
}

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
    admin_bind: Option<SocketAddr>,
    /// Sockets from systemd socket activation not yet claimed by a listener.
    activated: systemd::Activated,
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
    /// Stops this listener alone (when a reload removes it).
    stop: CancellationToken,
}

#[derive(Clone)]
enum Shared {
    Tcp(Arc<tcp::Listener>),
    Udp(Arc<udp::Listener>),
    Http(Arc<fulcrum_l7::Listener>),
}

/// A listener a reload adds: its sockets are bound before anything changes.
struct Added {
    key: Key,
    listener: Shared,
    /// One per worker.
    shards: Vec<Shard>,
    addr: SocketAddr,
}

/// One worker's socket of a listener.
enum Shard {
    Tcp(StdListener, Arc<tcp::Listener>),
    Udp(StdUdpSocket, Arc<udp::Listener>),
    Http(StdListener, Arc<fulcrum_l7::Listener>),
}

impl Shard {
    async fn serve(self, stop: CancellationToken, sessions: TaskTracker) -> std::io::Result<()> {
        match self {
            Shard::Tcp(socket, listener) => tcp::serve(socket, listener, stop, sessions).await,
            Shard::Udp(socket, listener) => udp::serve(socket, listener, stop, sessions).await,
            Shard::Http(socket, listener) => {
                fulcrum_l7::serve(socket, listener, stop, sessions).await
            }
        }
    }
}

impl Shared {
    fn name(&self) -> Arc<str> {
        match self {
            Shared::Tcp(l) => l.name(),
            Shared::Udp(l) => l.name(),
            Shared::Http(l) => l.name(),
        }
    }
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
                .build()
                .context("cannot start a worker event loop")?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("fulcrum-w{w}"))
                .spawn(move || {
                    runtime.block_on(stop.cancelled());
                    // Dropping the runtime closes whatever sessions outlived the drain.
                    drop(runtime);
                })
                .context("cannot start a worker thread")?;
            threads.push(thread);
        }
        let shutdown = CancellationToken::new();
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
        if config.admin != self.admin_bind {
            tracing::warn!("[admin] changed: the admin listener keeps its address until a restart");
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
    /// stop accepting while their connections finish.
    fn apply(&mut self, config: &Config) -> anyhow::Result<()> {
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
                (p.name.clone(), Arc::new(pool))
            })
            .collect();

        let mut added = Vec::new();
        let mut updates = Vec::new();
        let upstreams = Upstreams::new(config, &pools);
        for l in &config.listeners {
            let target = Target::new(l, &pools, &upstreams)?;
            let key = Key::of(l);
            match self.listeners.get(&key) {
                Some(running) => updates.push((running.listener.clone(), l, target)),
                None => added.push(bind(l, target, workers, &mut self.activated)?),
            }
        }

        // Nothing below can fail: the new config takes effect as a whole.
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
        for (name, old) in &self.pools {
            for backend in old.removed_in(pools.get(name).map(Arc::as_ref)) {
                let (backend, drain) = (backend.clone(), config.drain_timeout);
                tokio::spawn(async move {
                    tokio::time::sleep(drain).await;
                    backend.retire();
                });
            }
        }
        if !self.pools.is_empty() {
            tracing::info!(
                kept,
                added = fresh,
                removed = removed.len(),
                pools = pools.len(),
                "reloaded"
            );
        }
        self.pools = pools;
        if let Some(admin) = &self.admin {
            admin.set_view(View {
                listeners: self
                    .listeners
                    .values()
                    .map(|r| match &r.listener {
                        Shared::Tcp(l) => ListenerView::Tcp(Arc::clone(l), r.addr),
                        Shared::Udp(l) => ListenerView::Udp(Arc::clone(l), r.addr),
                        Shared::Http(l) => ListenerView::Http(Arc::clone(l), r.addr),
                    })
                    .collect(),
                pools: self.pools.values().cloned().collect(),
            });
        }
        Ok(())
    }

    /// Runs a newly bound listener on every worker.
    fn launch(&mut self, added: Added) {
        let stop = self.shutdown.child_token();
        let name = added.listener.name();
        for (worker, shard) in self.workers.iter().zip(added.shards) {
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

fn tcp_settings(
    l: &ListenerConfig,
    t: &config::TcpOptions,
    sni: Option<Arc<SniRoutes>>,
) -> tcp::Settings {
    tcp::Settings {
        name: Arc::from(l.name.as_str()),
        connect_timeout: t.connect_timeout,
        idle_timeout: t.idle_timeout,
        retries: t.retries,
        max_connections_per_client: t.max_connections_per_client,
        access_log: l.access_log,
        sni,
        send_proxy: l.proxy_protocol,
        accept_proxy: l.accept_proxy_protocol,
    }
}

fn udp_settings(l: &ListenerConfig, u: &config::UdpOptions, workers: usize) -> udp::Settings {
    udp::Settings {
        name: Arc::from(l.name.as_str()),
        flow_idle_timeout: u.flow_idle_timeout,
        responses: u.responses,
        max_flows: u
            .max_flows
            .unwrap_or_else(|| udp::default_max_flows(workers)),
        access_log: l.access_log,
        send_proxy: l.proxy_protocol.is_some(),
    }
}

/// What a listener serves: the pool of a tcp or udp listener, the routes of an
/// http one.
enum Target {
    Pool(Arc<Pool>),
    /// A tls listener: the pool shown for it, and its SNI routes.
    Sni(Arc<Pool>, Arc<SniRoutes>),
    Routes(Router<Arc<Upstream>>),
}

impl Target {
    /// A tcp or tls listener's pool and SNI routes.
    fn tcp(self) -> Option<(Arc<Pool>, Option<Arc<SniRoutes>>)> {
        match self {
            Target::Pool(pool) => Some((pool, None)),
            Target::Sni(pool, routes) => Some((pool, Some(routes))),
            Target::Routes(_) => None,
        }
    }
}

impl Target {
    fn new(
        l: &ListenerConfig,
        pools: &HashMap<String, Arc<Pool>>,
        upstreams: &Upstreams,
    ) -> anyhow::Result<Target> {
        let unknown =
            |name: &str| anyhow::anyhow!("listener `{}` refers to unknown pool `{name}`", l.name);
        match &l.protocol {
            Protocol::Http(h) => {
                let find =
                    |name: &String| upstreams.0.get(name).cloned().ok_or_else(|| unknown(name));
                let routes = h
                    .routes
                    .iter()
                    .map(|r| {
                        let target = match &r.target {
                            route::Target::Pool(p) => route::Target::Pool(find(p)?),
                            route::Target::Split(split) => route::Target::Split(
                                split
                                    .iter()
                                    .map(|(p, w)| Ok((find(p)?, *w)))
                                    .collect::<anyhow::Result<_>>()?,
                            ),
                        };
                        Ok(route::Route {
                            when: r.when.clone(),
                            target,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let fallback = l
                    .pool
                    .as_ref()
                    .map(find)
                    .transpose()?
                    .map(route::Target::Pool);
                Ok(Target::Routes(Router::new(routes, fallback)))
            }
            Protocol::Tcp(config::TcpOptions {
                sni_routes: Some(routes),
                ..
            }) => {
                let find = |name: &str| pools.get(name).cloned().ok_or_else(|| unknown(name));
                let routes = routes
                    .iter()
                    .map(|(pattern, name)| Ok((pattern.clone(), find(name)?)))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let fallback = l.pool.as_deref().map(find).transpose()?;
                // The pool /status shows for the listener: its default, else its
                // first route's.
                let shown = fallback
                    .clone()
                    .or_else(|| routes.first().map(|(_, p)| Arc::clone(p)))
                    .ok_or_else(|| anyhow::anyhow!("listener `{}` has no pool", l.name))?;
                Ok(Target::Sni(
                    shown,
                    Arc::new(SniRoutes::new(routes, fallback)),
                ))
            }
            _ => {
                let name = l.pool.as_deref().unwrap_or_default();
                pools
                    .get(name)
                    .cloned()
                    .map(Target::Pool)
                    .ok_or_else(|| unknown(name))
            }
        }
    }
}

/// The pools as HTTP routes use them (with sticky cookie and hash key), by name.
struct Upstreams(HashMap<String, Arc<Upstream>>);

impl Upstreams {
    fn new(config: &Config, pools: &HashMap<String, Arc<Pool>>) -> Self {
        Upstreams(
            config
                .pools
                .iter()
                .filter_map(|p| {
                    let pool = pools.get(&p.name)?;
                    let upstream = Upstream::new(
                        Arc::clone(pool),
                        p.sticky_cookie.clone(),
                        p.request_key.clone(),
                        p.tls.as_ref().map(|(_, loaded)| loaded.clone()),
                    );
                    Some((p.name.clone(), Arc::new(upstream)))
                })
                .collect(),
        )
    }
}

fn http_settings(l: &ListenerConfig, h: &config::HttpOptions) -> fulcrum_l7::Settings {
    fulcrum_l7::Settings {
        name: Arc::from(l.name.as_str()),
        connect_timeout: h.connect_timeout,
        retries: h.retries,
        header_read_timeout: h.header_read_timeout,
        request_timeout: h.request_timeout,
        rewrite: h.rewrite.clone(),
        trust_forwarded: h.trust_forwarded,
        access_log: l.access_log,
        upstream: Default::default(),
        tls: h.tls.clone(),
        accept_proxy: l.accept_proxy_protocol,
    }
}

/// Binds a new listener's sockets, one per worker.
fn bind(
    l: &ListenerConfig,
    target: Target,
    workers: usize,
    activated: &mut systemd::Activated,
) -> anyhow::Result<Added> {
    let context = || format!("listener `{}`", l.name);
    let (listener, shards): (Shared, Vec<Shard>) = match (&l.protocol, target) {
        (Protocol::Tcp(t), target @ (Target::Pool(_) | Target::Sni(..))) => {
            let Some((pool, sni)) = target.tcp() else {
                anyhow::bail!("listener `{}`: protocol and target disagree", l.name);
            };
            let listener = Arc::new(tcp::Listener::new(
                tcp_settings(l, t, sni),
                pool,
                t.max_connections,
            ));
            let sockets = tcp_sockets(l.bind, workers, activated).with_context(context)?;
            let shards = sockets
                .into_iter()
                .map(|s| Shard::Tcp(s, Arc::clone(&listener)))
                .collect();
            (Shared::Tcp(listener), shards)
        }
        (Protocol::Udp(u), Target::Pool(pool)) => {
            let listener = Arc::new(udp::Listener::new(udp_settings(l, u, workers), pool));
            let sockets = match activated.take_udp(l.bind) {
                Some(socket) => shared_socket(
                    socket,
                    workers,
                    |s| s.set_nonblocking(true),
                    |s| s.try_clone(),
                )?,
                None => udp::bind(l.bind, workers).with_context(context)?,
            };
            let shards = sockets
                .into_iter()
                .map(|s| Shard::Udp(s, Arc::clone(&listener)))
                .collect();
            (Shared::Udp(listener), shards)
        }
        (Protocol::Http(h), Target::Routes(router)) => {
            let listener = Arc::new(fulcrum_l7::Listener::new(http_settings(l, h), router));
            let sockets = tcp_sockets(l.bind, workers, activated).with_context(context)?;
            let shards = sockets
                .into_iter()
                .map(|s| Shard::Http(s, Arc::clone(&listener)))
                .collect();
            (Shared::Http(listener), shards)
        }
        _ => anyhow::bail!("listener `{}`: protocol and target disagree", l.name),
    };
    let addr = match shards.first() {
        Some(Shard::Tcp(s, _) | Shard::Http(s, _)) => s.local_addr(),
        Some(Shard::Udp(s, _)) => s.local_addr(),
        None => Ok(l.bind),
    }
    .with_context(context)?;
    Ok(Added {
        key: Key::of(l),
        listener,
        shards,
        addr,
    })
}

/// A TCP listener's sockets, one per worker: systemd's, when it passed one for
/// this address, else bound here with SO_REUSEPORT.
fn tcp_sockets(
    addr: SocketAddr,
    workers: usize,
    activated: &mut systemd::Activated,
) -> anyhow::Result<Vec<StdListener>> {
    match activated.take_tcp(addr) {
        Some(socket) => shared_socket(
            socket,
            workers,
            |s| s.set_nonblocking(true),
            |s| s.try_clone(),
        ),
        None => Ok(tcp::bind(addr, workers)?),
    }
}

/// One inherited socket shared by every worker (each gets a duplicate descriptor
/// of it: the kernel hands each connection or datagram to one of them).
fn shared_socket<S>(
    socket: S,
    workers: usize,
    nonblocking: impl Fn(&S) -> std::io::Result<()>,
    dup: impl Fn(&S) -> std::io::Result<S>,
) -> anyhow::Result<Vec<S>> {
    nonblocking(&socket).context("activated socket")?;
    let mut all = Vec::with_capacity(workers.max(1));
    for _ in 1..workers.max(1) {
        all.push(dup(&socket).context("activated socket: dup")?);
    }
    all.push(socket);
    Ok(all)
}

/// Points a kept listener at its new settings and pool or routes.
fn update(listener: &Shared, l: &ListenerConfig, target: Target, workers: usize) {
    match (listener, &l.protocol, target) {
        (Shared::Tcp(listener), Protocol::Tcp(t), target) => {
            if let Some((pool, sni)) = target.tcp() {
                listener.update(tcp_settings(l, t, sni), pool, t.max_connections)
            }
        }
        (Shared::Udp(listener), Protocol::Udp(u), Target::Pool(pool)) => {
            listener.update(udp_settings(l, u, workers), pool)
        }
        (Shared::Http(listener), Protocol::Http(h), Target::Routes(router)) => {
            listener.update(http_settings(l, h), router)
        }
        // Listeners are keyed by protocol, so the kinds always match.
        _ => {}
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

/// Binds the admin listener (plain TCP, never SO_REUSEPORT: one process owns it).
fn bind_admin(addr: SocketAddr) -> anyhow::Result<StdListener> {
    let socket =
        StdListener::bind(addr).with_context(|| format!("admin listener: cannot bind {addr}"))?;
    socket
        .set_nonblocking(true)
        .with_context(|| format!("admin listener {addr}"))?;
    Ok(socket)
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
