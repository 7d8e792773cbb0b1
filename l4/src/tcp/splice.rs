//! Moving a known number of bytes from one socket to another through a pipe
//! (splice(2)): a proxy's large bodies of known length, never copied to user space.

use std::io;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::pipe::{self, Pipe};
use super::relay::{splice_in, splice_out, splice_unsupported};

/// Bytes spliced in before they are spliced out: what a slow reader can leave in
/// the kernel's pipe, as much as the copy path holds for it in user space.
const FILL: usize = 64 * 1024;

/// Why [`splice_exact`] stopped before its last byte.
#[derive(Debug)]
pub enum SpliceError {
    /// splice(2) cannot move bytes between these sockets; nothing was moved, so the
    /// caller can copy instead.
    Unsupported,
    /// `src` ended early, a socket failed, or one side made no progress for the
    /// idle time; `moved` bytes reached `dst`. `reading`: on `src`'s side.
    Failed {
        moved: u64,
        error: io::Error,
        reading: bool,
    },
}

/// Moves exactly `len` bytes from `src` to `dst` (never more from `src`), through a
/// pipe from this worker's pool. Each wait for `src` to send is bounded by
/// `idle.0`, each wait for `dst` to take bytes by `idle.1`.
pub async fn splice_exact(
    src: &TcpStream,
    dst: &TcpStream,
    len: u64,
    idle: (Duration, Duration),
) -> Result<(), SpliceError> {
    let mut pipe = pipe::take().map_err(|_| SpliceError::Unsupported)?;
    let mut moved = 0u64;
    let failed = |moved, error, reading| SpliceError::Failed {
        moved,
        error,
        reading,
    };
    while moved < len {
        let want = usize::try_from(len - moved).map_or(FILL, |left| left.min(FILL));
        let filled = match wait(src, Interest::READABLE, idle.0, || {
            splice_in(src, &mut pipe, want)
        })
        .await
        {
            Ok(0) => {
                let early = io::Error::from(io::ErrorKind::UnexpectedEof);
                return Err(failed(moved, early, true));
            }
            Ok(n) => n,
            Err(e) if moved == 0 && splice_unsupported(&e) => {
                pipe::put(pipe);
                return Err(SpliceError::Unsupported);
            }
            Err(e) => return Err(failed(moved, e, true)),
        };
        if let Err(e) = drain(&pipe, dst, filled, idle.1).await {
            // The pipe may still hold bytes: it is dropped, not pooled.
            return Err(failed(moved, e, false));
        }
        moved += filled as u64;
    }
    pipe::put(pipe);
    Ok(())
}

/// Splices all `len` bytes in the pipe out to `dst`.
async fn drain(pipe: &Pipe, dst: &TcpStream, mut len: usize, idle: Duration) -> io::Result<()> {
    while len > 0 {
        len -= wait(dst, Interest::WRITABLE, idle, || splice_out(pipe, dst, len)).await?;
    }
    Ok(())
}

/// Runs `op` on `socket` once it is ready for `interest`, within `idle`.
async fn wait<R>(
    socket: &TcpStream,
    interest: Interest,
    idle: Duration,
    mut op: impl FnMut() -> io::Result<R>,
) -> io::Result<R> {
    loop {
        match tokio::time::timeout(idle, socket.ready(interest)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        }
        match socket.try_io(interest, &mut op) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return done,
        }
    }
}
