//! The new process's side of connection handover: once it serves, the old
//! process sends the connections it holds idle (TCP relays with both sockets,
//! HTTP/1 keep-alive clients); each is served on the next worker in turn, by
//! its listener of the same name, as if it had never moved.

use std::collections::HashMap;
use std::sync::Arc;

use fulcrum_l4::tcp;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handover::Upgrade;
use super::{Server, Shared};

/// Where handed-over connections go.
struct Dispatch {
    workers: Vec<Handle>,
    /// Listeners by name, with the token that stops each.
    listeners: HashMap<String, (Shared, CancellationToken)>,
    sessions: TaskTracker,
}

impl Server {
    /// Takes the connections the old process hands over, on a thread of its own,
    /// until it lets go.
    pub(super) fn take_connections(&self, upgrade: Upgrade) {
        let dispatch = Dispatch {
            workers: self.workers.clone(),
            listeners: self
                .listeners
                .values()
                .map(|r| {
                    (
                        r.listener.name().to_string(),
                        (r.listener.clone(), r.stop.clone()),
                    )
                })
                .collect(),
            sessions: self.sessions.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("fulcrum-resume".to_owned())
            .spawn(move || receive(&upgrade, &dispatch));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "upgrade: cannot take over connections");
        }
    }
}

fn receive(upgrade: &Upgrade, dispatch: &Dispatch) {
    let mut taken = 0u64;
    let mut next = 0usize;
    loop {
        let (conn, client, upstream) = match upgrade.next_conn() {
            Ok(Some(received)) => received,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "upgrade: handover of connections ended early");
                break;
            }
        };
        let Some((listener, stop)) = dispatch.listeners.get(&conn.listener) else {
            tracing::warn!(listener = %conn.listener, client = %conn.peer, "upgrade: a connection for a listener this config lacks; closed");
            continue;
        };
        let Some(worker) = dispatch.workers.get(next % dispatch.workers.len().max(1)) else {
            break;
        };
        next += 1;
        let client = std::net::TcpStream::from(client);
        match (listener, conn.backend.zip(upstream)) {
            (Shared::Tcp(l), Some((backend, upstream))) => {
                let upstream = std::net::TcpStream::from(upstream);
                let session = tcp::resume(client, upstream, conn.peer, backend, Arc::clone(l));
                worker.spawn(dispatch.sessions.track_future(session));
            }
            (Shared::Http(l), None) => {
                let session = fulcrum_l7::resume(
                    client,
                    conn.peer,
                    Arc::clone(l),
                    dispatch.sessions.clone(),
                    stop.clone(),
                );
                worker.spawn(dispatch.sessions.track_future(session));
            }
            _ => {
                tracing::warn!(listener = %conn.listener, client = %conn.peer, "upgrade: a connection of another kind than its listener; closed");
                continue;
            }
        }
        taken += 1;
    }
    tracing::info!(
        connections = taken,
        "upgrade: connections taken over from the old process"
    );
}
