//! The UDP relay: one flow per client address, each with its own connected upstream
//! socket, over the same pools and balancers as TCP.
//!
//! [`flow`] is the pure flow table; [`relay`] is the I/O shell around it.

pub mod flow;
mod relay;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};

use crate::net::{bind_shards, BindError, Kind};
use crate::pool::Pool;

pub use relay::serve;

/// A flow with no datagram either way for this long ends.
pub const DEFAULT_FLOW_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Share of the open-file limit that flows may use by default (sozu uses ~70%).
pub const DEFAULT_MAX_FLOWS_SHARE: f64 = 0.7;

/// How one UDP listener treats its flows.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: Arc<str>,
    pub flow_idle_timeout: Duration,
    /// End a flow once each of its datagrams got this many replies (0 = never; 1 suits DNS).
    pub responses: u32,
    /// Most active flows per worker; the least recently active is evicted beyond
    /// and lingers for its late replies (up to as many again), then new flows are
    /// refused.
    pub max_flows: usize,
    /// One info line per flow when it ends.
    pub access_log: bool,
    /// Put a PROXY v2 header in front of each flow's first datagram.
    pub send_proxy: bool,
    /// `allow`/`deny`: whose datagrams start a flow.
    pub access: crate::access::Access,
    /// New flows per client address.
    pub rate_limit: Option<Arc<crate::ratelimit::Limiter>>,
}

/// Counters for one UDP listener, summed over its workers.
#[derive(Debug, Default)]
pub struct Stats {
    pub flows_created: AtomicU64,
    pub flows_evicted: AtomicU64,
    pub flows_expired: AtomicU64,
    /// Flows ended for any reason; created minus ended are live.
    pub flows_ended: AtomicU64,
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Datagrams dropped (no backend, a full flow table, or a socket error).
    pub dropped: AtomicU64,
    /// New flows refused because the table and the room for evicted flows to
    /// linger were both full.
    pub flows_refused: AtomicU64,
    /// Datagrams dropped by `allow`/`deny`.
    pub denied: AtomicU64,
    /// Datagrams that would have started a flow over `rate_limit`, dropped.
    pub rate_limited: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What a listener's new flows use: swapped whole on reload; live flows keep the
/// backend they have.
#[derive(Debug)]
pub struct Current {
    pub settings: Settings,
    pub pool: Arc<Pool>,
}

/// Everything a UDP listener's workers share.
#[derive(Debug)]
pub struct Listener {
    current: ArcSwap<Current>,
    /// Counters survive reloads.
    pub stats: Stats,
}

impl Listener {
    pub fn new(settings: Settings, pool: Arc<Pool>) -> Self {
        Listener {
            current: ArcSwap::from_pointee(Current { settings, pool }),
            stats: Stats::default(),
        }
    }

    pub fn current(&self) -> Arc<Current> {
        self.current.load_full()
    }

    /// Flows live now, over all workers.
    pub fn active_flows(&self) -> u64 {
        let created = Stats::get(&self.stats.flows_created);
        created.saturating_sub(Stats::get(&self.stats.flows_ended))
    }

    pub fn name(&self) -> Arc<str> {
        Arc::clone(&self.current.load().settings.name)
    }

    /// Applies a reloaded config to new flows (and the flow limits to all flows).
    pub fn update(&self, settings: Settings, pool: Arc<Pool>) {
        self.current.store(Arc::new(Current { settings, pool }));
    }
}

/// The default `max_flows` for one worker: a share of the open-file limit.
pub fn default_max_flows(workers: usize) -> usize {
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20);
    let share = (nofile as f64 * DEFAULT_MAX_FLOWS_SHARE) as usize;
    (share / workers.max(1)).max(1)
}

/// Binds `shards` UDP sockets to `addr`, one per worker (see
/// [`crate::net::bind_shards`]).
pub fn bind(addr: SocketAddr, shards: usize) -> Result<Vec<UdpSocket>, BindError> {
    Ok(bind_shards(addr, shards, Kind::Udp)?
        .into_iter()
        .map(UdpSocket::from)
        .collect())
}

/// A connected, non-blocking upstream socket for one flow: socket and connect, two
/// syscalls (connect binds an ephemeral port itself).
fn upstream(backend: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(backend),
        Type::DGRAM.nonblocking(),
        Some(Protocol::UDP),
    )?;
    socket.connect(&backend.into())?;
    Ok(socket.into())
}
