//! Runs a validated config: builds pools and listeners (TCP and UDP), binds every
//! listener once per worker (SO_REUSEPORT shards), runs one single-threaded event loop
//! per worker, and drains live connections and flows on SIGTERM/SIGINT.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use fulcrum_l4::health::{self, Check};
use fulcrum_l4::Pool;
use fulcrum_l4::{tcp, udp};
use tokio::runtime::{Builder, Runtime};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Protocol};

/// Runs `config` on `workers` threads until SIGTERM or SIGINT, then drains.
pub fn run(config: &Config, workers: usize) -> anyhow::Result<()> {
    raise_fd_limit();
    let control = Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the control event loop")?;
    let server = Server::start(config, workers)?;
    for (name, protocol, addr) in &server.bound {
        tracing::info!(listener = %name, protocol, addr = %addr, workers, "listening");
    }
    control.block_on(async {
        for (pool, check) in &server.health_checks {
            health::spawn(pool, Arc::clone(check), server.shutdown.clone());
        }
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => tracing::warn!("SIGHUP: reload is not yet supported by this build; restart to apply config changes"),
            }
        }
        let live = server.sessions.len();
        tracing::info!(live, timeout_ms = config.drain_timeout.as_millis() as u64, "shutting down: no new connections, draining live ones");
        server.shutdown.cancel();
        server.sessions.close();
        tokio::select! {
            () = server.sessions.wait() => tracing::info!("drained"),
            () = tokio::time::sleep(config.drain_timeout) => {
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
    /// Cancelled to stop accepting.
    shutdown: CancellationToken,
    /// Every live client session, across workers.
    sessions: TaskTracker,
    /// Cancelled to end the worker event loops (and any session still running).
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
    /// Each listener's name, protocol and the address it actually bound.
    bound: Vec<(String, &'static str, SocketAddr)>,
    /// Pools with active health checks, run on the control event loop.
    health_checks: Vec<(Arc<Pool>, Arc<Check>)>,
}

/// One worker's share of one listener: its bound socket and the listener state.
enum Shard {
    Tcp(StdListener, Arc<tcp::Listener>),
    Udp(StdUdpSocket, Arc<udp::Listener>),
}

impl Server {
    fn start(config: &Config, workers: usize) -> anyhow::Result<Server> {
        let workers = workers.max(1);
        let pools: HashMap<&str, Arc<Pool>> = config
            .pools
            .iter()
            .map(|p| {
                let pool = Pool::new(&p.name, p.algorithm, &p.backends).with_policy(p.policy);
                (p.name.as_str(), Arc::new(pool))
            })
            .collect();
        let health_checks = config
            .pools
            .iter()
            .filter_map(|p| {
                Some((
                    Arc::clone(pools.get(p.name.as_str())?),
                    Arc::new(p.health.clone()?),
                ))
            })
            .collect();
        let mut shards: Vec<Vec<Shard>> = (0..workers).map(|_| Vec::new()).collect();
        let mut bound = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let pool = pools.get(l.pool.as_str()).cloned().with_context(|| {
                format!("listener `{}` refers to unknown pool `{}`", l.name, l.pool)
            })?;
            let name = Arc::from(l.name.as_str());
            let context = || format!("listener `{}`", l.name);
            let (addr, sockets): (_, Vec<Shard>) = match &l.protocol {
                Protocol::Tcp(t) => {
                    let settings = tcp::Settings {
                        name,
                        connect_timeout: t.connect_timeout,
                        idle_timeout: t.idle_timeout,
                        retries: t.retries,
                    };
                    let listener = Arc::new(tcp::Listener::new(settings, pool, t.max_connections));
                    let sockets = tcp::bind(l.bind, workers).with_context(context)?;
                    let addr = sockets
                        .first()
                        .map(StdListener::local_addr)
                        .transpose()
                        .with_context(context)?;
                    let per_worker = sockets
                        .into_iter()
                        .map(|s| Shard::Tcp(s, Arc::clone(&listener)))
                        .collect();
                    (addr, per_worker)
                }
                Protocol::Udp(u) => {
                    let settings = udp::Settings {
                        name,
                        flow_idle_timeout: u.flow_idle_timeout,
                        responses: u.responses,
                        max_flows: u
                            .max_flows
                            .unwrap_or_else(|| udp::default_max_flows(workers)),
                    };
                    let listener = Arc::new(udp::Listener::new(settings, pool));
                    let sockets = udp::bind(l.bind, workers).with_context(context)?;
                    let addr = sockets
                        .first()
                        .map(StdUdpSocket::local_addr)
                        .transpose()
                        .with_context(context)?;
                    let per_worker = sockets
                        .into_iter()
                        .map(|s| Shard::Udp(s, Arc::clone(&listener)))
                        .collect();
                    (addr, per_worker)
                }
            };
            bound.push((l.name.clone(), l.protocol.name(), addr.unwrap_or(l.bind)));
            for (shard, socket) in shards.iter_mut().zip(sockets) {
                shard.push(socket);
            }
        }

        let shutdown = CancellationToken::new();
        let stop = CancellationToken::new();
        let sessions = TaskTracker::new();
        let mut threads = Vec::with_capacity(workers);
        for (w, shard) in shards.into_iter().enumerate() {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a worker event loop")?;
            let (shutdown, stop, sessions) = (shutdown.clone(), stop.clone(), sessions.clone());
            let thread = std::thread::Builder::new()
                .name(format!("fulcrum-w{w}"))
                .spawn(move || worker(runtime, shard, shutdown, stop, sessions))
                .context("cannot start a worker thread")?;
            threads.push(thread);
        }
        Ok(Server {
            shutdown,
            sessions,
            stop,
            threads,
            bound,
            health_checks,
        })
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

fn worker(
    runtime: Runtime,
    shards: Vec<Shard>,
    shutdown: CancellationToken,
    stop: CancellationToken,
    sessions: TaskTracker,
) {
    runtime.block_on(async move {
        for shard in shards {
            let (shutdown, sessions) = (shutdown.clone(), sessions.clone());
            tokio::spawn(async move {
                let (name, result) = match shard {
                    Shard::Tcp(socket, listener) => {
                        let name = Arc::clone(&listener.settings.name);
                        (name, tcp::serve(socket, listener, shutdown, sessions).await)
                    }
                    Shard::Udp(socket, listener) => {
                        let name = Arc::clone(&listener.settings.name);
                        (name, udp::serve(socket, listener, shutdown, sessions).await)
                    }
                };
                if let Err(e) = result {
                    tracing::error!(listener = %name, error = %e, "listener stopped");
                }
            });
        }
        stop.cancelled().await;
    });
    // Dropping the runtime here closes whatever sessions outlived the drain.
    drop(runtime);
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
