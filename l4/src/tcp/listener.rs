//! The accept loop: takes connections off one bound socket until shutdown, honours
//! `max_connections`, and backs off instead of spinning when out of descriptors.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustix::io::Errno;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{session, Listener};

/// First pause after running out of descriptors or memory; doubles up to the max.
const BACKOFF_START: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts on `socket` (bound, non-blocking) until `shutdown` is cancelled, running
/// each connection as a task tracked by `sessions` so that shutdown can drain them.
///
/// Returns when shutdown is asked for; the socket is closed on return, so new
/// connections are refused (or go to another worker's shard) from then on.
pub async fn serve(
    socket: StdListener,
    listener: Arc<Listener>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) -> io::Result<()> {
    let name = listener.name();
    accept_loop(Acceptor::new(socket)?, listener, shutdown, sessions).await;
    // The socket is closed by now: the kernel refuses new connections to this shard.
    tracing::debug!(listener = %name, "listener closed");
    Ok(())
}

async fn accept_loop(
    mut socket: Acceptor,
    listener: Arc<Listener>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) {
    let mut stop = pin!(shutdown.cancelled());
    // For accept errors' logs only (looked up once, not per connection).
    let name = listener.name();
    loop {
        let permit = match &listener.current().limit {
            Some(limit) => {
                let permit = match Arc::clone(limit).try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        listener
                            .stats
                            .paused_at_limit
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(listener = %listener.name(), "max_connections reached; accepting paused");
                        tokio::select! {
                            biased;
                            () = &mut stop => return,
                            permit = Arc::clone(limit).acquire_owned() => match permit {
                                Ok(permit) => permit,
                                Err(_) => continue,
                            },
                        }
                    }
                };
                Some(permit)
            }
            None => None,
        };
        let Some((stream, peer)) = socket.accept(stop.as_mut(), &name).await else {
            return;
        };
        listener.stats.accepted.fetch_add(1, Ordering::Relaxed);
        // The snapshot as of now: a reload while we waited applies.
        let current = listener.current();
        let session = session::run(stream, peer, Arc::clone(&listener), current, permit, None);
        sessions.spawn(session);
    }
}

/// Takes connections off a listening socket, pausing with a growing backoff when
/// the process or system is out of descriptors or memory instead of spinning.
#[derive(Debug)]
pub struct Acceptor {
    socket: TcpListener,
    backoff: Duration,
}

impl Acceptor {
    pub fn new(socket: StdListener) -> io::Result<Acceptor> {
        Ok(Acceptor {
            socket: TcpListener::from_std(socket)?,
            backoff: BACKOFF_START,
        })
    }

    /// The next connection; `None` once `stop` completes. `name` is the
    /// listener's, for logs.
    pub async fn accept(
        &mut self,
        mut stop: Pin<&mut impl Future<Output = ()>>,
        name: &str,
    ) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut stop => return None,
                accepted = self.socket.accept() => accepted,
            };
            match accepted {
                Ok(conn) => {
                    self.backoff = BACKOFF_START;
                    return Some(conn);
                }
                Err(e) if out_of_resources(&e) => {
                    tracing::warn!(
                        listener = %name,
                        error = %e,
                        pause_ms = self.backoff.as_millis() as u64,
                        "accept failed: out of resources; pausing"
                    );
                    tokio::select! {
                        biased;
                        () = &mut stop => return None,
                        () = tokio::time::sleep(self.backoff) => {}
                    }
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
                // The client gave up before we took it (ECONNABORTED) and the
                // like: nothing for this listener to do.
                Err(e) => tracing::debug!(listener = %name, error = %e, "accept failed"),
            }
        }
    }
}

/// Errors that mean "the process or system is out of something": retrying at once
/// would spin, so the loop pauses instead.
fn out_of_resources(e: &io::Error) -> bool {
    [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}
