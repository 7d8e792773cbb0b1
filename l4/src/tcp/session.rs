//! One client connection: pick backends in the pool's order, connect with retries,
//! then relay until both sides are done.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::limits::ClientSlot;
use super::{connect, relay, Current};
use crate::balance::Context;

/// Serves one accepted client connection to completion. `_slots` hold the
/// listener's and the client's connection slots until the session ends.
pub(crate) async fn run(
    client: TcpStream,
    peer: SocketAddr,
    listener: Arc<Current>,
    _slots: (Option<OwnedSemaphorePermit>, Option<ClientSlot>),
) {
    let settings = &listener.settings;
    let pool = &listener.pool;
    let ctx = Context {
        client: Some(peer),
        key: None,
    };
    let attempts = settings.retries as usize + 1;
    let mut tried = 0;
    for backend in pool.candidates(&ctx).take(attempts) {
        tried += 1;
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
        let end = match &relayed.end {
            Ok(()) => "closed".to_owned(),
            Err(e) => e.to_string(),
        };
        if settings.access_log {
            tracing::info!(
                listener = %settings.name,
                client = %peer,
                backend = %backend.addr(),
                bytes_in = relayed.client_to_backend,
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
