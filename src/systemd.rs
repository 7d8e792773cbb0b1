//! systemd integration: sd_notify(3) messages — READY=1 once listeners are bound,
//! RELOADING=1/READY=1 around a SIGHUP reload, STOPPING=1 on shutdown. Without
//! NOTIFY_SOCKET (not run by systemd) every call is a no-op.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use rustix::time::{clock_gettime, ClockId};

pub fn ready() {
    send("READY=1");
}

/// Reloading, with the monotonic timestamp `Type=notify-reload` units require.
pub fn reloading() {
    let now = clock_gettime(ClockId::Monotonic);
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

pub fn stopping() {
    send("STOPPING=1");
}

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_to(state, path.as_encoded_bytes()) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

fn send_to(state: &str, path: &[u8]) -> io::Result<()> {
    // A leading '@' names a socket in the abstract namespace.
    let addr = match path.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path))?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}
