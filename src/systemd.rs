//! systemd integration: sd_notify(3) messages — READY=1 once listeners are bound,
//! RELOADING=1/READY=1 around a SIGHUP reload, STOPPING=1 on shutdown — and socket
//! activation (LISTEN_FDS). Without NOTIFY_SOCKET or LISTEN_FDS (not run by
//! systemd) none of it does anything.

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

/// Any sd_notify message, e.g. `MAINPID=..` when an upgrade hands over.
pub fn notify(state: &str) {
    send(state);
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

/// Sockets handed over by systemd socket activation (`LISTEN_FDS`, see
/// sd_listen_fds(3)), by transport and the address they are bound to; a listener
/// whose `bind` matches one uses it instead of binding its own.
#[derive(Debug, Default)]
pub struct Activated {
    tcp: Vec<std::net::TcpListener>,
    udp: Vec<std::net::UdpSocket>,
    /// Descriptors passed that are neither (logged once logging is up).
    skipped: Vec<usize>,
    passed: usize,
}

impl Activated {
    /// Takes the inherited sockets; must run before any other thread starts (it
    /// clears LISTEN_FDS/LISTEN_PID so that children do not see them).
    pub fn from_env() -> Activated {
        let mut fds = listenfd::ListenFd::from_env();
        let mut found = Activated {
            passed: fds.len(),
            ..Activated::default()
        };
        for i in 0..fds.len() {
            if let Ok(Some(l)) = fds.take_tcp_listener(i) {
                found.tcp.push(l);
            } else if let Ok(Some(s)) = fds.take_udp_socket(i) {
                found.udp.push(s);
            } else {
                found.skipped.push(i + 3);
            }
        }
        found
    }

    /// Says what was received (once logging is set up).
    pub fn log(&self) {
        for fd in &self.skipped {
            tracing::warn!(fd, "LISTEN_FDS: not a TCP or UDP socket; ignored");
        }
        if self.passed > 0 {
            tracing::info!(
                tcp = self.tcp.len(),
                udp = self.udp.len(),
                "socket activation: sockets received"
            );
        }
    }

    /// The inherited TCP socket bound to `addr`, if systemd passed one.
    pub fn take_tcp(&mut self, addr: std::net::SocketAddr) -> Option<std::net::TcpListener> {
        let i = self
            .tcp
            .iter()
            .position(|l| l.local_addr().ok() == Some(addr))?;
        Some(self.tcp.swap_remove(i))
    }

    pub fn take_udp(&mut self, addr: std::net::SocketAddr) -> Option<std::net::UdpSocket> {
        let i = self
            .udp
            .iter()
            .position(|s| s.local_addr().ok() == Some(addr))?;
        Some(self.udp.swap_remove(i))
    }

    /// Warns about inherited sockets no listener asked for.
    pub fn warn_unused(&self) {
        for l in &self.tcp {
            tracing::warn!(addr = ?l.local_addr().ok(), "socket activation: no tcp/http listener binds this address; ignored");
        }
        for s in &self.udp {
            tracing::warn!(addr = ?s.local_addr().ok(), "socket activation: no udp listener binds this address; ignored");
        }
    }
}
