//! One client connection: pick backends in the pool's order, connect with retries,
//! then relay until both sides are done.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::{connect, relay, Current, Listener, HELLO_TIMEOUT};
use crate::balance::{fnv1a, Context};
use crate::proxy_protocol::{self, Transport};
use crate::sni::{self, Peek, MAX_PEEK};

/// Serves one accepted client connection to completion. `_permit` holds the
/// listener's connection slot until the session ends.
pub(crate) async fn run(
    client: TcpStream,
    peer: SocketAddr,
    shared: Arc<Listener>,
    listener: Arc<Current>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let settings = &listener.settings;
    // Behind another proxy, the PROXY header names the real client.
    let peer = match settings.accept_proxy {
        false => peer,
        // Boxed, as the hello read below: a session future that never reads a
        // header must not carry the space for doing so (memory per connection).
        true => match Box::pin(proxy_protocol::read_header(&client)).await {
            Ok(real) => real.unwrap_or(peer),
            Err(why) => {
                tracing::debug!(listener = %settings.name, client = %peer, why = %why, "bad PROXY header; closed");
                return;
            }
        },
    };
    let _slot = match settings.max_connections_per_client {
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
                return;
            }
        },
    };
    // A tls listener reads the ClientHello first; it is replayed to the backend.
    let mut hello = Vec::new();
    let (pool, key) = match &settings.sni {
        None => (&listener.pool, None),
        Some(routes) => {
            let sni = match Box::pin(read_hello(&client, &mut hello)).await {
                Ok(sni) => sni,
                Err(why) => {
                    tracing::debug!(listener = %settings.name, client = %peer, why = %why, "not a TLS ClientHello; closed");
                    return;
                }
            };
            match routes.find(sni.as_deref()) {
                Some(pool) => (pool, sni.map(|name| fnv1a(name.as_bytes()))),
                None => {
                    tracing::debug!(listener = %settings.name, client = %peer, sni = sni.as_deref().unwrap_or("-"), "no route for this server name; closed");
                    return;
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
            return;
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
    for backend in pool.candidates(&ctx).take(attempts) {
        tried += 1;
        if tried > 1 {
            shared.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let _active = backend.track();
        let connect_start = Instant::now();
        let upstream = match connect(backend.addr(), settings.connect_timeout).await {
            Ok(upstream) => upstream,
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
            return;
        }
        let started = Instant::now();
        let relayed = tokio::select! {
            relayed = relay(&client, &upstream, settings.idle_timeout) => relayed,
            () = backend.retired() => {
                tracing::info!(
                    listener = %settings.name,
                    client = %peer,
                    backend = %backend.addr(),
                    "connection cut: its backend was removed by a reload and the drain time is over"
                );
                return;
            }
        };
        backend.add_bytes(
            relayed.client_to_backend + prelude.len() as u64,
            relayed.backend_to_client,
        );
        let end = match &relayed.end {
            Ok(()) => "closed".to_owned(),
            Err(e) => e.to_string(),
        };
        if settings.access_log {
            tracing::info!(
                listener = %settings.name,
                client = %peer,
                backend = %backend.addr(),
                bytes_in = relayed.client_to_backend + hello.len() as u64,
                bytes_out = relayed.backend_to_client,
                ms = started.elapsed().as_millis() as u64,
                end = %end,
                "tcp connection ended"
            );
        }
        return;
    }
    tracing::warn!(
        listener = %settings.name,
        client = %peer,
        pool = pool.name(),
        tried,
        "no backend could take the connection; closing it"
    );
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
