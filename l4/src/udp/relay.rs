//! The UDP I/O shell: reads client datagrams, keeps the flow table, opens one
//! connected upstream socket per flow, and relays replies back from the listener's
//! address. Idle, finished and evicted flows close their socket at once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::flow::{EndReason, Ended, FlowId, FlowTable, Limits};
use super::{upstream, Listener, Stats};
use crate::balance::Context;
use crate::net::{count_local_error, local_shortage};
use crate::pool::{ActiveGuard, Pool};
use crate::proxy_protocol::{self, Transport, Version};

/// Receive buffer size: holds the largest UDP payload there is (65527 bytes over
/// IPv6, 65507 over IPv4), so no datagram is cut.
const MAX_DATAGRAM: usize = 65_536;
/// Spare upstream sockets kept per backend and worker.
const MAX_SPARE: usize = 256;

thread_local! {
    /// Reply buffer shared by every flow of this worker: a waiting flow holds none.
    static REPLY_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; MAX_DATAGRAM].into_boxed_slice());
}

/// What the shell keeps per flow; dropping it ends the flow's I/O.
#[derive(Debug)]
struct FlowIo {
    upstream: Arc<UdpSocket>,
    reader: AbortHandle,
    /// The pool snapshot the flow was opened from, and its backend.
    pool: Arc<Pool>,
    backend: SocketAddr,
    /// Payload bytes from the client and back to it, for the access log.
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    _active: ActiveGuard,
}

impl Drop for FlowIo {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Spare upstream sockets by backend, each with the time it was put back.
type Spares = HashMap<SocketAddr, Vec<(u64, Arc<UdpSocket>)>>;

struct Shared {
    listener: Arc<Listener>,
    socket: Arc<UdpSocket>,
    table: Mutex<FlowTable<FlowIo>>,
    /// Upstream sockets of flows that completed (every datagram answered), by
    /// backend, ready for the next flow: DNS-like traffic, where each query is a
    /// new flow, then costs no socket set-up and teardown. Unused ones close after
    /// the idle timeout.
    spare: Mutex<Spares>,
    epoch: Instant,
}

impl Shared {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn table(&self) -> MutexGuard<'_, FlowTable<FlowIo>> {
        // A panic while holding the lock cannot leave the table half-updated in a
        // way that matters more than stopping the relay would.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spare(&self) -> MutexGuard<'_, Spares> {
        self.spare
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps the socket of a completed flow for reuse, after discarding anything
    /// that arrived on it since its last expected reply.
    fn recycle(&self, backend: SocketAddr, socket: Arc<UdpSocket>) {
        let mut scratch = [0u8; 1];
        while socket.try_recv(&mut scratch).is_ok() {}
        let mut spare = self.spare();
        let list = spare.entry(backend).or_default();
        if list.len() < MAX_SPARE {
            list.push((self.now(), socket));
        }
    }

    fn ended(&self, ended: Ended<FlowIo>) {
        let stats = &self.listener.stats;
        Stats::add(&stats.flows_ended, 1);
        match ended.why {
            EndReason::Evicted => Stats::add(&stats.flows_evicted, 1),
            EndReason::Idle => Stats::add(&stats.flows_expired, 1),
            EndReason::Responses | EndReason::Removed => {}
        }
        let io = &ended.value;
        if let Some(b) = io.pool.backends().iter().find(|b| b.addr() == io.backend) {
            b.add_bytes(
                io.bytes_in.load(Ordering::Relaxed),
                io.bytes_out.load(Ordering::Relaxed),
            );
        }
        let current = self.listener.current();
        if current.settings.access_log {
            tracing::info!(
                listener = %current.settings.name,
                client = %ended.client,
                backend = %ended.value.backend,
                datagrams_in = ended.requests,
                datagrams_out = ended.replies,
                bytes_in = ended.value.bytes_in.load(Ordering::Relaxed),
                bytes_out = ended.value.bytes_out.load(Ordering::Relaxed),
                ms = self.now().saturating_sub(ended.started) / 1_000_000,
                end = %ended.why,
                "udp flow ended"
            );
        }
    }
}

/// Relays datagrams on `socket` until `shutdown`, then lets live flows finish
/// (reply limit or idle timeout) before returning.
pub async fn serve(
    socket: StdUdpSocket,
    listener: Arc<Listener>,
    shutdown: CancellationToken,
    flows: TaskTracker,
) -> io::Result<()> {
    let current = listener.current();
    let settings = &current.settings;
    let limits = limits(settings);
    let shared = Arc::new(Shared {
        socket: Arc::new(UdpSocket::from_std(socket)?),
        table: Mutex::new(FlowTable::new(limits)),
        spare: Mutex::default(),
        listener: Arc::clone(&listener),
        epoch: Instant::now(),
    });
    let mut buf = vec![0u8; MAX_DATAGRAM].into_boxed_slice();
    let mut next_expiry = Instant::now() + settings.flow_idle_timeout;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(next_expiry) => {
                next_expiry = expire(&shared);
            }
            received = shared.socket.recv_from(&mut buf) => match received {
                Ok((n, client)) => forward(&shared, &flows, client, &buf[..n]).await,
                Err(e) => {
                    // ICMP errors for replies we sent to clients surface here too;
                    // they concern one client, not the listener.
                    tracing::debug!(listener = %listener.name(), error = %e, "udp receive failed");
                }
            },
        }
    }
    // Shutdown: no new datagrams are read; live flows end by reply limit or idle.
    while !shared.table().is_empty() {
        tokio::time::sleep_until(expire(&shared)).await;
    }
    Ok(())
}

fn limits(settings: &super::Settings) -> Limits {
    Limits {
        idle_ns: settings.flow_idle_timeout.as_nanos() as u64,
        responses: settings.responses,
        max_flows: settings.max_flows,
    }
}

/// Ends idle flows and returns when to look again.
fn expire(shared: &Shared) -> Instant {
    let now = shared.now();
    let (ended, next) = {
        let mut table = shared.table();
        // A reload may have changed the limits; they apply from this sweep on.
        table.set_limits(limits(&shared.listener.current().settings));
        let ended = table.expire(now);
        (ended, table.next_expiry())
    };
    for e in ended {
        shared.ended(e);
    }
    let current = shared.listener.current();
    let idle = current.settings.flow_idle_timeout;
    let idle_ns = idle.as_nanos() as u64;
    shared.spare().retain(|_, list| {
        list.retain(|(since, _)| now.saturating_sub(*since) < idle_ns);
        !list.is_empty()
    });
    let wait = next.map_or(idle, |at| Duration::from_nanos(at.saturating_sub(now)));
    Instant::now() + wait.max(Duration::from_millis(1))
}

/// Sends one client datagram upstream on the client's flow, opening it if needed.
async fn forward(shared: &Arc<Shared>, flows: &TaskTracker, client: SocketAddr, datagram: &[u8]) {
    let stats = &shared.listener.stats;
    Stats::add(&stats.datagrams_in, 1);
    Stats::add(&stats.bytes_in, datagram.len() as u64);
    let now = shared.now();
    let existing = shared.table().touch_client(client, now).map(|(id, io)| {
        io.bytes_in
            .fetch_add(datagram.len() as u64, Ordering::Relaxed);
        (id, Arc::clone(&io.upstream))
    });
    let mut with_header = Vec::new();
    let (id, upstream) = match existing {
        Some(flow) => flow,
        None => match open(shared, flows, client, now, datagram.len()) {
            Some(flow) => {
                // A new flow's first datagram carries the PROXY v2 header when the
                // listener sends one (the spec's UDP form, §2.2).
                let sends = shared.listener.current().settings.send_proxy;
                if let Some(Ok(local)) = sends.then(|| shared.socket.local_addr()) {
                    with_header =
                        proxy_protocol::encode(Version::V2, client, local, Transport::Datagram);
                    with_header.extend_from_slice(datagram);
                }
                flow
            }
            None => {
                Stats::add(&stats.dropped, 1);
                return;
            }
        },
    };
    let datagram = if with_header.is_empty() {
        datagram
    } else {
        &with_header
    };
    let sent = match upstream.try_send(datagram) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => upstream.send(datagram).await,
        other => other,
    };
    if let Err(e) = sent {
        // ECONNREFUSED here is the ICMP answer to an earlier datagram: the backend
        // is not listening. End the flow so the next datagram picks again.
        Stats::add(&stats.dropped, 1);
        failed(shared, id, &e);
    }
}

/// Opens a flow to the first backend that takes a socket.
fn open(
    shared: &Arc<Shared>,
    flows: &TaskTracker,
    client: SocketAddr,
    now: u64,
    first_datagram: usize,
) -> Option<(FlowId, Arc<UdpSocket>)> {
    let listener = &shared.listener;
    let current = listener.current();
    let (pool, name) = (&current.pool, &current.settings.name);
    if !current.settings.access.permits(client.ip()) {
        Stats::add(&listener.stats.denied, 1);
        tracing::debug!(listener = %name, client = %client, "client not allowed by allow/deny; dropping datagram");
        return None;
    }
    if let Some(limiter) = &current.settings.rate_limit {
        if let crate::ratelimit::Verdict::Deny { .. } = limiter.check(limiter.key(&client.ip())) {
            Stats::add(&listener.stats.rate_limited, 1);
            return None;
        }
    }
    let ctx = Context {
        client: Some(client),
        key: None,
    };
    if shared.table().is_full() {
        // Every slot is taken and every evicted flow still lingers for its replies:
        // cutting one would let its port, and its late replies, go to this client.
        Stats::add(&listener.stats.flows_refused, 1);
        tracing::debug!(listener = %name, client = %client, "udp flow table full; dropping datagram");
        return None;
    }
    for backend in pool.candidates(&ctx) {
        let spare = shared
            .spare()
            .get_mut(&backend.addr())
            .and_then(Vec::pop)
            .map(|(_, s)| s);
        let socket = match spare.map_or_else(
            || {
                upstream(backend.addr())
                    .and_then(UdpSocket::from_std)
                    .map(Arc::new)
            },
            Ok,
        ) {
            Ok(socket) => socket,
            Err(e) if local_shortage(&e) => {
                count_local_error();
                tracing::warn!(listener = %name, backend = %backend.addr(), error = %e, "cannot open an upstream udp socket: out of local resources (not the backend's fault); dropping datagram");
                return None;
            }
            Err(e) => {
                pool.record_connect_error(backend);
                tracing::warn!(listener = %name, backend = %backend.addr(), error = %e, "cannot open upstream udp socket");
                continue;
            }
        };
        let active = backend.track();
        pool.record_connected(backend, Duration::ZERO);
        // The reader needs the flow id, which exists once the flow is in the table.
        let (id_tx, id_rx) = oneshot::channel();
        let reader = flows.spawn(read_replies(Arc::clone(shared), Arc::clone(&socket), id_rx));
        let io = FlowIo {
            upstream: Arc::clone(&socket),
            reader: reader.abort_handle(),
            pool: Arc::clone(pool),
            backend: backend.addr(),
            bytes_in: AtomicU64::new(first_datagram as u64),
            bytes_out: AtomicU64::new(0),
            _active: active,
        };
        // The worker's flows are only inserted here, one datagram at a time, so
        // the room checked above is still there.
        let Ok(id) = shared.table().insert(client, io, now) else {
            Stats::add(&listener.stats.flows_refused, 1);
            return None;
        };
        Stats::add(&listener.stats.flows_created, 1);
        let _ = id_tx.send(id);
        return Some((id, socket));
    }
    tracing::warn!(listener = %name, client = %client, "no backend could take the udp flow; dropping datagram");
    None
}

/// Ends a flow whose upstream failed.
fn failed(shared: &Shared, id: FlowId, error: &io::Error) {
    let ended = shared.table().remove(id);
    if let Some(ended) = ended {
        tracing::warn!(
            listener = %shared.listener.name(),
            backend = %ended.value.backend,
            client = %ended.client,
            error = %error,
            "udp backend failed; ending the flow"
        );
        let pool = &ended.value.pool;
        if let Some(backend) = pool
            .backends()
            .iter()
            .find(|b| b.addr() == ended.value.backend)
        {
            pool.record_connect_error(backend);
        }
        shared.ended(ended);
    }
}

/// Relays replies from one flow's upstream socket back to its client until the
/// flow ends (the table then aborts this task) or the reply limit is reached.
async fn read_replies(
    shared: Arc<Shared>,
    upstream: Arc<UdpSocket>,
    id: oneshot::Receiver<FlowId>,
) {
    let Ok(id) = id.await else { return };
    loop {
        if let Err(e) = upstream.readable().await {
            return failed(&shared, id, &e);
        }
        // Copy the reply out of the shared buffer only if the client's socket is
        // full and the send has to wait. A flow that the reply ended is kept until
        // the reply is out: dropping it aborts this task.
        let mut ended = None;
        let step = REPLY_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let n = match upstream.try_recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Again,
                Err(e) => return Step::Failed(e),
            };
            let (client, end) = {
                let mut table = shared.table();
                let Some((client, end)) = table.reply(id, shared.now()) else {
                    return Step::Done;
                };
                // The flow is either still in the table or handed back, ended.
                let io = end.as_ref().map(|e| &e.value).or_else(|| table.get(id));
                if let Some(io) = io {
                    io.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                }
                (client, end)
            };
            ended = end;
            let stats = &shared.listener.stats;
            Stats::add(&stats.datagrams_out, 1);
            Stats::add(&stats.bytes_out, n as u64);
            match shared.socket.try_send_to(&buf[..n], client) {
                Ok(_) => Step::Again,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    Step::Wait(buf[..n].to_vec(), client)
                }
                Err(e) => {
                    // The client is gone (ICMP); its flow idles out.
                    tracing::debug!(client = %client, error = %e, "udp reply not delivered");
                    Stats::add(&stats.dropped, 1);
                    Step::Again
                }
            }
        });
        match step {
            Step::Again => {}
            Step::Done => return,
            Step::Failed(e) => return failed(&shared, id, &e),
            Step::Wait(datagram, client) => {
                if let Err(e) = shared.socket.send_to(&datagram, client).await {
                    tracing::debug!(client = %client, error = %e, "udp reply not delivered");
                }
            }
        }
        if let Some(ended) = ended {
            // Every datagram of the flow got its replies: the socket is clean.
            let backend = ended.value.backend;
            shared.ended(ended);
            return shared.recycle(backend, upstream);
        }
    }
}

enum Step {
    Again,
    Done,
    Failed(io::Error),
    /// The listener socket is full: send this copy when it drains.
    Wait(Vec<u8>, SocketAddr),
}
