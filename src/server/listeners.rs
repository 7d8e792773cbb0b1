//! Building listeners from their config: the settings each kind runs with, what it
//! serves (a pool, SNI routes or HTTP routes), its sockets (bound here, handed
//! over by systemd or by the process a binary upgrade replaced), and applying a
//! reload to one that keeps running.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener, UdpSocket as StdUdpSocket};
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::sync::Arc;

use anyhow::Context as _;
use fulcrum_l4::sni::SniRoutes;
use fulcrum_l4::{tcp, udp, Pool};
use fulcrum_l7::route::{self, Router};
use fulcrum_l7::Upstream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Key;
use crate::config::{self, Config, ListenerConfig, Protocol};
use crate::systemd;

#[derive(Clone)]
pub(super) enum Shared {
    Tcp(Arc<tcp::Listener>),
    Udp(Arc<udp::Listener>),
    Http(Arc<fulcrum_l7::Listener>),
}

/// A listener a reload adds: its sockets are bound before anything changes.
pub(super) struct Added {
    pub key: Key,
    pub listener: Shared,
    /// One per worker.
    pub shards: Vec<Shard>,
    pub addr: SocketAddr,
}

/// One worker's socket of a listener.
pub(super) enum Shard {
    Tcp(StdListener, Arc<tcp::Listener>),
    Udp(StdUdpSocket, Arc<udp::Listener>),
    Http(StdListener, Arc<fulcrum_l7::Listener>),
}

impl Shard {
    pub(super) async fn serve(
        self,
        stop: CancellationToken,
        sessions: TaskTracker,
    ) -> std::io::Result<()> {
        match self {
            Shard::Tcp(socket, listener) => tcp::serve(socket, listener, stop, sessions).await,
            Shard::Udp(socket, listener) => udp::serve(socket, listener, stop, sessions).await,
            Shard::Http(socket, listener) => {
                fulcrum_l7::serve(socket, listener, stop, sessions).await
            }
        }
    }
}

impl Shard {
    /// Its socket, to hand over on an upgrade.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Shard::Tcp(s, _) | Shard::Http(s, _) => s.as_fd(),
            Shard::Udp(s, _) => s.as_fd(),
        }
    }
}

impl Shared {
    pub(super) fn name(&self) -> Arc<str> {
        match self {
            Shared::Tcp(l) => l.name(),
            Shared::Udp(l) => l.name(),
            Shared::Http(l) => l.name(),
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
        access: l.access.clone(),
        rate_limit: l.rate_limit.as_ref().map(|r| Arc::clone(&r.limiter)),
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
        access: l.access.clone(),
        rate_limit: l.rate_limit.as_ref().map(|r| Arc::clone(&r.limiter)),
    }
}

/// What a listener serves: the pool of a tcp or udp listener, the routes of an
/// http one.
pub(super) enum Target {
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
    pub(super) fn new(
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
                            route::Target::Redirect(r) => route::Target::Redirect(Arc::clone(r)),
                        };
                        Ok(route::Route {
                            when: r.when.clone(),
                            target,
                            edit: r.edit.clone(),
                            limit: r.limit.clone(),
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
pub(super) struct Upstreams(HashMap<String, Arc<Upstream>>);

impl Upstreams {
    pub(super) fn new(config: &Config, pools: &HashMap<String, Arc<Pool>>) -> Self {
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
                        p.http_version,
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
        http2_idle_timeout: h.http2_idle_timeout,
        request_timeout: h.request_timeout,
        body_read_timeout: h.body_read_timeout,
        send_timeout: h.send_timeout,
        request_buffer: h.request_buffer,
        max_request_body: h.max_request_body,
        retry_on: h.retry_on,
        try_timeout: h.try_timeout,
        rewrite: h.rewrite.clone(),
        trust_forwarded: h.trust_forwarded,
        normalize_path: h.normalize_path,
        access_log: l.access_log,
        upstream: fulcrum_l7::upstream::Limits {
            idle_timeout: h.upstream_idle_timeout,
            ..Default::default()
        },
        tls: h.tls.clone(),
        accept_proxy: l.accept_proxy_protocol,
        http1_engine: h.http1_engine,
        access: l.access.clone(),
        https_redirect: h.https_redirect,
        rate_limit: l.rate_limit.clone(),
        error_pages: Arc::clone(&h.error_pages),
        compress: h.compress.clone(),
    }
}

/// Where a new listener's sockets come from.
pub(super) enum Source<'a> {
    /// Bound here, unless systemd passed one for the address.
    Bind(&'a mut systemd::Activated),
    /// The sockets the process before an upgrade had (its SO_REUSEPORT set).
    Inherited(Vec<OwnedFd>),
}

/// Binds a new listener's sockets, one per worker (or takes them over).
pub(super) fn bind(
    l: &ListenerConfig,
    target: Target,
    workers: usize,
    source: Source<'_>,
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
            let sockets = tcp_sockets(l.bind, workers, source).with_context(context)?;
            let shards = sockets
                .into_iter()
                .map(|s| Shard::Tcp(s, Arc::clone(&listener)))
                .collect();
            (Shared::Tcp(listener), shards)
        }
        (Protocol::Udp(u), Target::Pool(pool)) => {
            let listener = Arc::new(udp::Listener::new(udp_settings(l, u, workers), pool));
            let sockets = match source {
                Source::Inherited(fds) => inherited(
                    fds,
                    workers,
                    StdUdpSocket::from,
                    |s| s.set_nonblocking(true),
                    |s| s.try_clone(),
                )?,
                Source::Bind(activated) => match activated.take_udp(l.bind) {
                    Some(socket) => shared_socket(
                        socket,
                        workers,
                        |s| s.set_nonblocking(true),
                        |s| s.try_clone(),
                    )?,
                    None => udp::bind(l.bind, workers).with_context(context)?,
                },
            };
            let shards = sockets
                .into_iter()
                .map(|s| Shard::Udp(s, Arc::clone(&listener)))
                .collect();
            (Shared::Udp(listener), shards)
        }
        (Protocol::Http(h), Target::Routes(router)) => {
            let listener = Arc::new(fulcrum_l7::Listener::new(http_settings(l, h), router));
            let sockets = tcp_sockets(l.bind, workers, source).with_context(context)?;
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
    source: Source<'_>,
) -> anyhow::Result<Vec<StdListener>> {
    let activated = match source {
        Source::Inherited(fds) => {
            return inherited(
                fds,
                workers,
                StdListener::from,
                |s| s.set_nonblocking(true),
                |s| s.try_clone(),
            )
        }
        Source::Bind(activated) => activated,
    };
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

/// Sockets an upgrade handed over: every one is kept (a socket left behind would
/// take its queued connections with it), and when this process runs more workers
/// than the old one, the extra workers share duplicates.
fn inherited<S>(
    fds: Vec<OwnedFd>,
    workers: usize,
    from: impl Fn(OwnedFd) -> S,
    nonblocking: impl Fn(&S) -> std::io::Result<()>,
    dup: impl Fn(&S) -> std::io::Result<S>,
) -> anyhow::Result<Vec<S>> {
    let mut all: Vec<S> = fds.into_iter().map(from).collect();
    anyhow::ensure!(!all.is_empty(), "the old process handed over no socket");
    for s in &all {
        nonblocking(s).context("inherited socket")?;
    }
    let handed = all.len();
    for i in handed..workers.max(1) {
        let copy = dup(&all[i % handed]).context("inherited socket: dup")?;
        all.push(copy);
    }
    Ok(all)
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
pub(super) fn update(listener: &Shared, l: &ListenerConfig, target: Target, workers: usize) {
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
