//! One client connection: pick backends in the pool's order, connect with retries,
//! then relay until both sides are done.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::limits::ClientSlot;
use super::{connect, relay, Current, Listener, RelayError, HELLO_TIMEOUT};
use crate::balance::{fnv1a, Context};
use crate::net::{count_local_error, local_shortage};
use crate::pool::{ActiveGuard, Backend};
use crate::proxy_protocol::{self, Transport};
use crate::sni::{self, Peek, MAX_PEEK};

/// Serves one accepted client connection to completion. `_permit` holds the
/// listener's connection slot until the session ends.
///
/// A plain fn returning an `async move` block, not an `async fn`: an async fn keeps
/// its arguments twice in the task (as captured and as locals), and the task of
/// every idle connection would carry the copy.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
pub(crate) fn run(
    client: TcpStream,
    mut peer: SocketAddr,
    shared: Arc<Listener>,
    listener: Arc<Current>,
    permit: Option<OwnedSemaphorePermit>,
    resumed: Option<Box<Resumed>>,
) -> impl Future<Output = ()> + Send {
    async move {
        // Moved in, so the slot is held until the session ends.
        let _ = &permit;
        // Setting up is boxed: its state (PROXY header and hello reads, the backend
        // order, connect attempts) is freed once the relay starts, so the task of a
        // long-lived idle connection holds only what relaying needs (memory per
        // connection).
        let opening = open(&client, &mut peer, &shared, &listener, resumed);
        let Some(opened) = Box::pin(opening).await else {
            return;
        };
        let started = Instant::now();
        // (No local references held across the await: each would be stored in the
        // task of every idle connection.)
        let relayed = tokio::select! {
            relayed = relay(&client, &opened.upstream, listener.settings.idle_timeout) => relayed,
            () = opened.backend.retired() => {
                tracing::info!(
                    listener = %listener.settings.name,
                    client = %peer,
                    backend = %opened.backend.addr(),
                    end = %"cut",
                    "connection cut: its backend was removed by a reload and the drain time is over"
                );
                return;
            }
        };
        let (settings, backend) = (&listener.settings, opened.backend);
        backend.add_bytes(
            relayed.client_to_backend + u64::from(opened.prelude),
            relayed.backend_to_client,
        );
        if matches!(relayed.end, Err(RelayError::HandedOver)) {
            hand_over(client, opened, peer, &settings.name);
            return;
        }
        if settings.access_log {
            // `end` is one lower-case word (closed, idle, client-error,
            // backend-error); `error` says more when there is more to say.
            let (end, error) = match &relayed.end {
                Ok(()) => ("closed", None),
                Err(e) => (e.end(), Some(e)),
            };
            tracing::info!(
                listener = %settings.name,
                client = %peer,
                backend = %backend.addr(),
                bytes_in = relayed.client_to_backend + u64::from(opened.hello),
                bytes_out = relayed.backend_to_client,
                ms = started.elapsed().as_millis() as u64,
                end = %end,
                error = error.map(tracing::field::display),
                "tcp connection ended"
            );
        }
    }
}

/// A client connection whose backend is connected and has its prelude.
struct Opened<'a> {
    upstream: TcpStream,
    backend: &'a Backend,
    /// Counts the connection against the backend (least-conn) while it lives.
    _active: ActiveGuard,
    /// The client's place under `max_connections_per_client`.
    _slot: Option<ClientSlot>,
    /// Bytes sent to the backend before the relay: PROXY header and ClientHello
    /// (at most a few hundred and MAX_PEEK).
    prelude: u32,
    /// Bytes of the ClientHello among them (the client sent those).
    hello: u32,
}

/// Reads what comes before relaying (a PROXY header, a ClientHello), picks backends
/// in the pool's order and connects with retries; `None` once the client has been
/// refused or no backend could take it (each case logged). A PROXY header's
/// client replaces `peer`.
async fn open<'a>(
    client: &TcpStream,
    peer: &mut SocketAddr,
    shared: &Listener,
    listener: &'a Current,
    resumed: Option<Box<Resumed>>,
) -> Option<Opened<'a>> {
    let settings = &listener.settings;
    if let Some(resumed) = resumed {
        return reopen(*resumed, *peer, listener);
    }
    // Behind another proxy, the PROXY header names the real client.
    *peer = match settings.accept_proxy {
        false => *peer,
        // Boxed, as the hello read below: a connection that never reads a header
        // must not carry the space for doing so.
        true => match Box::pin(proxy_protocol::read_header(client)).await {
            Ok(real) => real.unwrap_or(*peer),
            Err(why) => {
                tracing::debug!(listener = %settings.name, client = %peer, why = %why, "bad PROXY header; closed");
                return None;
            }
        },
    };
    let peer = *peer;
    if !settings.access.permits(peer.ip()) {
        shared.stats.denied.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(listener = %settings.name, client = %peer, "client not allowed by allow/deny; closed");
        return None;
    }
    if let Some(limiter) = &settings.rate_limit {
        if let crate::ratelimit::Verdict::Deny { .. } = limiter.check(limiter.key(&peer.ip())) {
            shared.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(listener = %settings.name, client = %peer, "over rate_limit; closed");
            return None;
        }
    }
    let slot = match settings.max_connections_per_client {
        0 => None,
        limit => match shared.per_client.acquire(peer.ip(), limit) {
            Some(slot) => Some(slot),
            None => {
                // Refused politely: closed at once, before any byte is relayed.
                shared
                    .stats
                    .refused_per_client
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = %settings.name, client = %peer, limit, "too many connections from this client; closed");
                return None;
            }
        },
    };
    // A tls listener reads the ClientHello first; it is replayed to the backend.
    let mut hello = Vec::new();
    let (pool, key) = match &settings.sni {
        None => (&listener.pool, None),
        Some(routes) => {
            let sni = match Box::pin(read_hello(client, &mut hello)).await {
                Ok(sni) => sni,
                Err(why) => {
                    tracing::debug!(listener = %settings.name, client = %peer, why = %why, "not a TLS ClientHello; closed");
                    return None;
                }
            };
            match routes.find(sni.as_deref()) {
                Some(pool) => (pool, sni.map(|name| fnv1a(name.as_bytes()))),
                None => {
                    tracing::debug!(listener = %settings.name, client = %peer, sni = sni.as_deref().unwrap_or("-"), "no route for this server name; closed");
                    return None;
                }
            }
        }
    };
    // What the backend gets before the client's bytes: a PROXY header naming the
    // client, then the ClientHello already read.
    // (getsockname only when a header is sent: nothing extra per connection else.)
    let mut prelude = match settings.send_proxy.map(|v| (v, client.local_addr())) {
        Some((version, Ok(local))) => {
            proxy_protocol::encode(version, peer, local, Transport::Stream)
        }
        Some((_, Err(e))) => {
            tracing::warn!(listener = %settings.name, client = %peer, error = %e, "no local address for the PROXY header; closed");
            return None;
        }
        None => Vec::new(),
    };
    prelude.extend_from_slice(&hello);
    let ctx = Context {
        client: Some(peer),
        key,
    };
    let attempts = settings.retries as usize + 1;
    let mut tried = 0;
    let mut candidates = pool.candidates(&ctx);
    // Under `max_connections` this may wait in the pool's queue.
    let first = match pool.first_slot(&mut candidates).await {
        Ok(first) => first,
        Err(full) => {
            tracing::warn!(listener = %settings.name, client = %peer, pool = pool.name(), why = %full, "no backend slot; closing");
            return None;
        }
    };
    let first_backend = first.as_ref().map(|(b, _)| *b);
    let rest = candidates
        .filter(|b| !first_backend.is_some_and(|f| std::ptr::eq(f, *b)))
        .filter_map(|b| pool.slot(b).map(|slot| (b, slot)));
    for (backend, active) in first.into_iter().chain(rest).take(attempts) {
        tried += 1;
        if tried > 1 {
            shared.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let connect_start = Instant::now();
        let upstream = match connect(backend.addr(), settings.connect_timeout).await {
            Ok(upstream) => upstream,
            Err(e) if local_shortage(&e) => {
                // Ours, not the backend's: no ejection, no connect error, and no
                // point trying another backend with the same shortage.
                count_local_error();
                tracing::warn!(
                    listener = %settings.name,
                    client = %peer,
                    backend = %backend.addr(),
                    error = %e,
                    "cannot connect to a backend: out of local resources (not the backend's fault); closing"
                );
                return None;
            }
            Err(e) => {
                pool.record_connect_error(backend);
                tracing::warn!(
                    listener = %settings.name,
                    backend = %backend.addr(),
                    error = %e,
                    "backend connect failed"
                );
                continue;
            }
        };
        pool.record_connected(backend, connect_start.elapsed());
        if let Err(e) = send_all(&upstream, &prelude).await {
            tracing::warn!(listener = %settings.name, backend = %backend.addr(), error = %e, "backend closed before the first bytes were passed on");
            return None;
        }
        return Some(Opened {
            upstream,
            backend,
            _active: active,
            _slot: slot,
            prelude: prelude.len() as u32,
            hello: hello.len() as u32,
        });
    }
    tracing::warn!(
        listener = %settings.name,
        client = %peer,
        pool = pool.name(),
        tried,
        "no backend could take the connection; closing it"
    );
    None
}

/// A relay the process before an upgrade handed over: its backend side.
#[derive(Debug)]
pub struct Resumed {
    upstream: std::net::TcpStream,
    backend: SocketAddr,
}

/// Picks up a relay the process before an upgrade handed over: the backend's
/// connection is the same socket, so it goes on where it stopped. Run it as a
/// task on the worker that is to serve it.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
pub fn resume(
    client: std::net::TcpStream,
    upstream: std::net::TcpStream,
    peer: SocketAddr,
    backend: SocketAddr,
    shared: Arc<Listener>,
) -> impl Future<Output = ()> + Send {
    async move {
        let client = match TcpStream::from_std(client) {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(listener = %shared.name(), client = %peer, error = %e, "handed-over connection lost");
                return;
            }
        };
        let current = shared.current();
        let resumed = Box::new(Resumed { upstream, backend });
        run(
            client,
            peer,
            Arc::clone(&shared),
            current,
            None,
            Some(resumed),
        )
        .await;
    }
}

/// The opened state of a handed-over relay, when its backend is in this config.
fn reopen(resumed: Resumed, peer: SocketAddr, listener: &Current) -> Option<Opened<'_>> {
    let name = &listener.settings.name;
    let Some(backend) = listener
        .pool
        .backends()
        .iter()
        .find(|b| b.addr() == resumed.backend)
    else {
        tracing::warn!(listener = %name, client = %peer, backend = %resumed.backend, "handed-over connection closed: its backend is not in this config");
        return None;
    };
    let upstream = match TcpStream::from_std(resumed.upstream) {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::warn!(listener = %name, client = %peer, error = %e, "handed-over connection lost");
            return None;
        }
    };
    Some(Opened {
        upstream,
        backend,
        _active: backend.track(),
        _slot: None,
        prelude: 0,
        hello: 0,
    })
}

/// Gives an idle relay's sockets to the next process; closes them if none takes them.
fn hand_over(client: TcpStream, opened: Opened<'_>, peer: SocketAddr, listener: &Arc<str>) {
    let backend = opened.backend.addr();
    let (Ok(client), Ok(upstream)) = (client.into_std(), opened.upstream.into_std()) else {
        return;
    };
    let handed = crate::handover::Handed {
        listener: Arc::clone(listener),
        peer,
        client,
        backend: Some((backend, upstream)),
    };
    if crate::handover::hand(handed).is_err() {
        tracing::debug!(listener = %listener, client = %peer, "no process to hand the connection to; closed");
    }
}

/// Reads the client's first bytes until they hold a whole ClientHello (within
/// [`HELLO_TIMEOUT`] and [`MAX_PEEK`] bytes); returns its server name.
async fn read_hello(client: &TcpStream, buf: &mut Vec<u8>) -> Result<Option<String>, String> {
    let reading = async {
        let mut chunk = [0u8; 4096];
        loop {
            match sni::peek(buf).map_err(|e| e.to_string())? {
                Peek::Hello { sni } => return Ok(sni),
                Peek::NeedMore if buf.len() >= MAX_PEEK => {
                    return Err("ClientHello too large".to_owned())
                }
                Peek::NeedMore => {}
            }
            client.readable().await.map_err(|e| e.to_string())?;
            let room = (MAX_PEEK - buf.len()).min(chunk.len());
            match client.try_read(&mut chunk[..room]) {
                Ok(0) => return Err("closed before its ClientHello".to_owned()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::time::timeout(HELLO_TIMEOUT, reading)
        .await
        .unwrap_or_else(|_| Err("no ClientHello in time".to_owned()))
}

/// Writes all of `buf` to a non-blocking stream.
async fn send_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::net::{TcpListener, TcpStream};

    use crate::balance::Algorithm;
    use crate::pool::Pool;
    use crate::tcp::{Listener, Settings};

    #[tokio::test]
    async fn the_task_of_a_session_stays_small() -> std::io::Result<()> {
        // Each live connection holds its session's task (this future plus about
        // 100 bytes of tokio's, rounded up to 128): the bulk of the memory of an
        // idle proxied connection. 896 bytes a task at this size; keep it there.
        let server = TcpListener::bind("127.0.0.1:0").await?;
        let client = TcpStream::connect(server.local_addr()?).await?;
        let settings = Settings {
            name: "t".into(),
            connect_timeout: crate::tcp::DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: crate::tcp::DEFAULT_IDLE_TIMEOUT,
            retries: 0,
            max_connections_per_client: 0,
            access_log: false,
            sni: None,
            send_proxy: None,
            accept_proxy: false,
            access: crate::access::Access::default(),
            rate_limit: None,
        };
        let pool = Arc::new(Pool::new("p", Algorithm::RoundRobin, &[]));
        let listener = Arc::new(Listener::new(settings, pool, None));
        let peer = client.local_addr()?;
        let session = super::run(
            client,
            peer,
            Arc::clone(&listener),
            listener.current(),
            None,
            None,
        );
        let size = std::mem::size_of_val(&session);
        // Unoptimized builds keep a few more locals in the future. (+8 for the
        // pointer a relay handed over by an upgrade comes in.)
        let limit = if cfg!(debug_assertions) { 800 } else { 784 };
        assert!(size <= limit, "a session's future grew to {size} bytes");
        Ok(())
    }
}
