//! Pipes for splice(2), pooled per worker thread so that a connection holds a pipe
//! only while bytes sit in it and an idle connection holds none.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, PipeFlags};

/// Pipe capacity asked for. With the pipe filled before each write-out, 256 KiB
/// moved more than 64 KiB and no less than 1 MiB on loopback iperf3; the default
/// fs.pipe-max-size (1 MiB) allows it without privileges.
const PIPE_SIZE: usize = 256 * 1024;
/// Idle pipes kept per thread; more are closed when returned.
const MAX_IDLE: usize = 64;

thread_local! {
    static IDLE: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// An empty pipe: bytes are spliced into `write` and out of `read`.
#[derive(Debug)]
pub(crate) struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
    /// What one splice into the pipe can hold.
    pub capacity: usize,
}

/// An empty pipe from this thread's pool, or a new one.
pub(crate) fn take() -> io::Result<Pipe> {
    if let Some(pipe) = IDLE.with(|idle| idle.borrow_mut().pop()) {
        return Ok(pipe);
    }
    let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    // A smaller pipe still works: per-user pipe limits can refuse the resize.
    let _ = fcntl_setpipe_size(&write, PIPE_SIZE);
    let capacity = fcntl_getpipe_size(&write)?;
    Ok(Pipe {
        read,
        write,
        capacity,
    })
}

/// Returns a pipe to the pool. The caller guarantees it is empty.
pub(crate) fn put(pipe: Pipe) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        if idle.len() < MAX_IDLE {
            idle.push(pipe);
        }
    });
}
