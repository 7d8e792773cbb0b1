//! The HTTP listener's accept loop: each client connection (after its PROXY
//! header and TLS handshake, if any) goes to fulcrum's own HTTP/1 path or to
//! hyper's, as the listener's settings and the client's protocol say.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fulcrum_l4::tcp::Acceptor;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::Conn;
use crate::h1::client::Client;
use crate::hyper_conn::{serve_http, Speaks};
use crate::settings::{Http1Engine, Listener};

/// Accepts on `socket` (bound, non-blocking) until `shutdown`; each connection is
/// a task tracked by `sessions`. On shutdown, open connections finish the request
/// in flight and close.
pub async fn serve(
    socket: StdListener,
    listener: Arc<Listener>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) -> io::Result<()> {
    let mut socket = Acceptor::new(socket)?;
    let mut stop = pin!(shutdown.cancelled());
    let name = listener.name();
    while let Some((stream, peer)) = socket.accept(stop.as_mut(), &name).await {
        listener.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let (listener, tracker) = (Arc::clone(&listener), sessions.clone());
        // A borrow of the config (no reference count taken) to pick the path.
        let own_path = {
            let current = listener.current.load();
            let settings = &current.settings;
            settings.http1_engine == Http1Engine::Fulcrum
                && settings.tls.is_none()
                && !settings.accept_proxy
        };
        if own_path {
            // Nothing to do before the first request: fulcrum's HTTP/1 path is
            // the connection's task itself, the smallest it can be.
            let conn = Arc::new(Conn::new(peer, listener, tracker));
            let client = Client::Plain(stream);
            sessions.spawn(crate::h1::engine::serve(client, conn, shutdown.clone()));
            continue;
        }
        sessions.spawn(connection(
            stream,
            peer,
            listener,
            tracker,
            shutdown.clone(),
        ));
    }
    Ok(())
}

/// Serves a keep-alive connection the process before an upgrade handed over
/// (between requests, nothing read). Run it as a task on the worker that is to
/// serve it.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice, for the connection's life"
)]
pub fn resume(
    client: std::net::TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    sessions: TaskTracker,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let Ok(stream) = TcpStream::from_std(client) else {
            return;
        };
        let current = listener.current();
        if current.settings.tls.is_some() {
            // Plain HTTP was handed over; this listener now wants TLS.
            return;
        }
        let conn = Arc::new(Conn::new(peer, listener, sessions));
        match current.settings.http1_engine {
            Http1Engine::Fulcrum => {
                Box::pin(crate::h1::engine::serve(
                    Client::Plain(stream),
                    conn,
                    shutdown,
                ))
                .await
            }
            _ => Box::pin(serve_http(stream, conn, shutdown, Speaks::Either)).await,
        }
    }
}

/// Serves one client connection until it closes, or until shutdown lets its
/// current request finish. On an https listener the TLS handshake comes first,
/// within `header_read_timeout`.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    sessions: TaskTracker,
    shutdown: CancellationToken,
) {
    let current = listener.current();
    // Behind another proxy, the PROXY header names the real client.
    let peer = match current.settings.accept_proxy {
        false => peer,
        true => match Box::pin(fulcrum_l4::proxy_protocol::read_header(&stream)).await {
            Ok(real) => real.unwrap_or(peer),
            Err(why) => {
                tracing::debug!(listener = %current.settings.name, client = %peer, why = %why, "bad PROXY header; closed");
                return;
            }
        },
    };
    let conn = Arc::new(Conn::new(peer, listener, sessions));
    // Each path boxed: a connection's task holds the state of its own path only
    // (an idle one on fulcrum's HTTP/1 path: a few hundred bytes).
    match &current.settings.tls {
        Some(tls) => Box::pin(serve_tls(stream, conn, tls, shutdown)).await,
        None if current.settings.http1_engine == Http1Engine::Fulcrum => {
            Box::pin(crate::h1::engine::serve(
                Client::Plain(stream),
                conn,
                shutdown,
            ))
            .await
        }
        None => {
            let speaks = Speaks::Either;
            Box::pin(serve_http(stream, conn, shutdown, speaks)).await
        }
    }
}

/// An https listener's connection: the TLS handshake within
/// `header_read_timeout`, then HTTP as ALPN chose.
async fn serve_tls(
    stream: TcpStream,
    conn: Arc<Conn>,
    tls: &Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    let settings = &conn.listener.current().settings;
    let handshake = tokio::time::timeout(settings.header_read_timeout, tls_accept(stream, tls));
    match handshake.await {
        Ok(Ok(stream)) => {
            // ALPN decides, not the first bytes: after `h2` a bad preface is an
            // HTTP/2 connection error (GOAWAY), not an HTTP/1.1 400.
            let speaks = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Speaks::H2,
                _ if settings.http1_engine == Http1Engine::Fulcrum => {
                    let client = Client::Tls(Box::new(stream));
                    return Box::pin(crate::h1::engine::serve(client, conn, shutdown)).await;
                }
                _ => Speaks::H1,
            };
            Box::pin(serve_http(stream, conn, shutdown, speaks)).await
        }
        Ok(Err(e)) => {
            tracing::debug!(listener = %settings.name, client = %conn.peer, error = %e, "tls handshake failed")
        }
        Err(_) => {
            tracing::debug!(listener = %settings.name, client = %conn.peer, "tls handshake timed out")
        }
    }
}

/// The TLS handshake. A client offering ALPN protocols but none fulcrum speaks
/// (`curl --http1.0` offers only `http/1.0`) is served HTTP/1.x without ALPN, as
/// HAProxy and NGINX do, rather than refused with a fatal alert.
async fn tls_accept(
    stream: TcpStream,
    tls: &Arc<rustls::ServerConfig>,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let hello = start.client_hello();
    let speaks_one = hello.alpn().is_none_or(|mut offered| {
        offered.any(|p| tls.alpn_protocols.iter().any(|ours| ours.as_slice() == p))
    });
    let config = match speaks_one {
        true => Arc::clone(tls),
        false => {
            let mut plain = (**tls).clone();
            plain.alpn_protocols.clear();
            Arc::new(plain)
        }
    };
    start.into_stream(config).await
}
