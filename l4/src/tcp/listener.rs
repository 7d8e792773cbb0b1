//! The accept loop: takes connections off one bound socket until shutdown, honours
//! `max_connections`, and backs off instead of spinning when out of descriptors.

use std::io;
use std::net::TcpListener as StdListener;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustix::io::Errno;
use tokio::net::TcpListener;
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
    accept_loop(TcpListener::from_std(socket)?, listener, shutdown, sessions).await;
    // The socket is closed by now: the kernel refuses new connections to this shard.
    tracing::debug!(listener = %name, "listener closed");
    Ok(())
}

async fn accept_loop(
    socket: TcpListener,
    listener: Arc<Listener>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
) {
    let mut stop = pin!(shutdown.cancelled());
    let mut backoff = BACKOFF_START;
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
        let accepted = tokio::select! {
            biased;
            () = &mut stop => return,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = BACKOFF_START;
                listener.stats.accepted.fetch_add(1, Ordering::Relaxed);
                // The snapshot as of now: a reload while we waited applies.
                let current = listener.current();
                let session = session::run(stream, peer, Arc::clone(&listener), current, permit);
                sessions.spawn(session);
            }
            Err(e) if out_of_resources(&e) => {
                tracing::warn!(
                    listener = %listener.name(),
                    error = %e,
                    pause_ms = backoff.as_millis() as u64,
                    "accept failed: out of resources; pausing"
                );
                tokio::select! {
                    biased;
                    () = &mut stop => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            // The client gave up before we took it (ECONNABORTED) and the like:
            // nothing for this listener to do.
            Err(e) => {
                tracing::debug!(listener = %listener.name(), error = %e, "accept failed")
            }
        }
    }
}

/// Errors that mean "the process or system is out of something": retrying at once
/// would spin, so the loop pauses instead.
pub fn out_of_resources(e: &io::Error) -> bool {
    [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}
