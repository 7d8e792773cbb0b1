//! The wire between an old fulcrum and the new one a binary upgrade starts: a
//! SOCK_SEQPACKET socketpair carrying JSON messages (in chunks) and descriptors
//! (SCM_RIGHTS, one per packet), what the old process hands over (the
//! [`Manifest`]), and the new process's end of it ([`Upgrade`], [`Inherited`]).
//!
//! New -> old: `{"hello":PID}` once its config is valid (or `{"error":..}`).
//! Old -> new: the manifest, then every descriptor it lists, in order.
//! New -> old: `{"ready":PID}` once it serves (or `{"error":..}`).

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd as _, OwnedFd};
use std::time::Duration;

use anyhow::{bail, Context as _};
use fulcrum_l4::pool::{AdminState, Carried};
use fulcrum_l4::Pool;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use super::overrides::{Override, Overrides};
use super::Key;

/// The environment variable naming the new process's end of the socketpair.
pub const ENV: &str = "FULCRUM_UPGRADE_FD";

/// Largest JSON chunk in one packet (well under the socket buffer).
const CHUNK: usize = 32 * 1024;

/// Largest JSON message accepted.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

const MORE: u8 = b'j';
const LAST: u8 = b'J';
const FD: u8 = b'f';

/// One end of the upgrade socketpair.
#[derive(Debug)]
pub struct Channel(OwnedFd);

impl Channel {
    pub fn new(fd: OwnedFd) -> Channel {
        Channel(fd)
    }

    /// Receives give up after `timeout` (the peer hung).
    pub fn set_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        rustix::net::sockopt::set_socket_timeout(
            &self.0,
            rustix::net::sockopt::Timeout::Recv,
            Some(timeout),
        )?;
        Ok(())
    }

    pub fn send<T: Serialize>(&self, message: &T) -> anyhow::Result<()> {
        let text = serde_json::to_vec(message)?;
        let mut chunks = text.chunks(CHUNK).peekable();
        if chunks.peek().is_none() {
            return self.packet(LAST, &[], None);
        }
        while let Some(chunk) = chunks.next() {
            let tag = if chunks.peek().is_some() { MORE } else { LAST };
            self.packet(tag, chunk, None)?;
        }
        Ok(())
    }

    pub fn send_fd(&self, fd: BorrowedFd<'_>) -> anyhow::Result<()> {
        self.packet(FD, &[], Some(fd))
    }

    fn packet(&self, tag: u8, body: &[u8], fd: Option<BorrowedFd<'_>>) -> anyhow::Result<()> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds;
        if let Some(fd) = fd {
            fds = [fd];
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                bail!("upgrade channel: no room for a descriptor");
            }
        }
        let tag = [tag];
        let iov = [IoSlice::new(&tag), IoSlice::new(body)];
        sendmsg(&self.0, &iov, &mut control, SendFlags::NOSIGNAL)
            .context("upgrade channel: send")?;
        Ok(())
    }

    /// The next JSON message; `None` when the peer closed its end.
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> anyhow::Result<Option<T>> {
        let mut text = Vec::new();
        loop {
            let Some((tag, body, fd)) = self.next_packet()? else {
                return Ok(None);
            };
            drop(fd);
            match tag {
                MORE | LAST => text.extend_from_slice(&body),
                other => bail!("upgrade channel: a message was expected, got packet {other:#x}"),
            }
            if text.len() > MAX_MESSAGE {
                bail!("upgrade channel: message over {MAX_MESSAGE} bytes");
            }
            if tag == LAST {
                return Ok(Some(
                    serde_json::from_slice(&text).context("upgrade channel: bad message")?,
                ));
            }
        }
    }

    pub fn recv_fd(&self) -> anyhow::Result<OwnedFd> {
        match self.next_packet()? {
            Some((FD, _, Some(fd))) => Ok(fd),
            Some(_) => bail!("upgrade channel: a descriptor was expected"),
            None => bail!("upgrade channel: closed before every descriptor came"),
        }
    }

    fn next_packet(&self) -> anyhow::Result<Option<Packet>> {
        let mut buf = vec![0u8; CHUNK + 1];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let got = loop {
            match recvmsg(&self.0, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other.context("upgrade channel: receive")?,
            }
        };
        let mut fd = None;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for received in fds {
                    // More than one would be a confused peer: keep the first.
                    fd.get_or_insert(received);
                }
            }
        }
        if got.bytes == 0 {
            return Ok(None);
        }
        let tag = buf[0];
        buf.truncate(got.bytes);
        buf.remove(0);
        Ok(Some((tag, buf, fd)))
    }
}

/// One packet: its tag, its body and the descriptor it carried.
type Packet = (u8, Vec<u8>, Option<OwnedFd>);

/// One connection handed over after the new process serves; its client socket
/// follows, then (a TCP relay) its backend socket.
#[derive(Debug, Serialize, Deserialize)]
pub struct HandedConn {
    pub listener: String,
    pub peer: SocketAddr,
    pub backend: Option<SocketAddr>,
}

/// What the new process says.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Said {
    Hello(u32),
    Ready(u32),
    Error(String),
}

/// What the old process hands over; the descriptors follow in this order:
/// every listener's sockets, then the admin socket.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub listeners: Vec<ListenerFds>,
    /// `tcp` or `unix`, when an admin socket follows.
    pub admin: Option<String>,
    pub backends: Vec<BackendState>,
    pub overrides: Vec<OverrideState>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ListenerFds {
    pub protocol: String,
    pub bind: SocketAddr,
    pub name: String,
    pub sockets: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BackendState {
    pub pool: String,
    pub addr: SocketAddr,
    pub healthy: bool,
    pub ejected_until: Option<u64>,
    pub ejections: u32,
    pub up_since: u64,
    pub ewma: (u64, u64),
    pub total: u64,
    pub connect_errors: u64,
    pub bytes: (u64, u64),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OverrideState {
    pub pool: String,
    pub addr: SocketAddr,
    pub state: Option<String>,
    pub weight: Option<u32>,
    pub added: bool,
    pub removed: bool,
}

impl BackendState {
    pub fn of(pool: &str, b: &fulcrum_l4::Backend) -> BackendState {
        let c = b.carried();
        BackendState {
            pool: pool.to_owned(),
            addr: b.addr(),
            healthy: c.healthy,
            ejected_until: c.ejected_until,
            ejections: c.ejections,
            up_since: c.up_since,
            ewma: c.ewma,
            total: c.total,
            connect_errors: c.connect_errors,
            bytes: c.bytes,
        }
    }

    fn carried(&self) -> Carried {
        Carried {
            healthy: self.healthy,
            ejected_until: self.ejected_until,
            ejections: self.ejections,
            up_since: self.up_since,
            ewma: self.ewma,
            total: self.total,
            connect_errors: self.connect_errors,
            bytes: self.bytes,
        }
    }
}

impl OverrideState {
    pub fn of(pool: &str, addr: SocketAddr, o: &Override) -> OverrideState {
        OverrideState {
            pool: pool.to_owned(),
            addr,
            state: o.state.map(|s| s.as_str().to_owned()),
            weight: o.weight.map(|w| w.get()),
            added: o.added,
            removed: o.removed,
        }
    }
}

/// The new process's end: taken from the environment at start-up.
#[derive(Debug)]
pub struct Upgrade {
    channel: Channel,
}

impl Upgrade {
    /// The channel the old process passed, if this process is an upgrade. Must
    /// run before any thread starts (it edits the environment).
    #[allow(unsafe_code)]
    pub fn from_env() -> Option<Upgrade> {
        let value = std::env::var(ENV).ok()?;
        std::env::remove_var(ENV);
        let raw: i32 = value.parse().ok().filter(|fd| *fd > 2)?;
        // SAFETY: `raw` is only borrowed for this check, while no other code runs.
        let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
        let stat = rustix::fs::fstat(borrowed).ok()?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
            return None;
        }
        // SAFETY: an open socket the old process passed across exec for us (its
        // number named by FULCRUM_UPGRADE_FD, now removed); nothing else in this
        // process knows of it, so this is its one owner.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Not for our own children.
        let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
        let channel = Channel::new(fd);
        let _ = channel.set_timeout(Duration::from_secs(60));
        Some(Upgrade { channel })
    }

    /// Tells the old process why this one will not take over.
    pub fn refuse(&self, why: &str) {
        let _ = self.channel.send(&Said::Error(why.to_owned()));
    }

    /// Says hello and receives what the old process hands over.
    pub fn receive(&self) -> anyhow::Result<Inherited> {
        self.channel.send(&Said::Hello(std::process::id()))?;
        let manifest: Manifest = self
            .channel
            .recv()?
            .context("the old process closed the upgrade channel")?;
        let mut listeners = HashMap::new();
        for l in &manifest.listeners {
            let fds = (0..l.sockets)
                .map(|_| self.channel.recv_fd())
                .collect::<anyhow::Result<Vec<_>>>()?;
            listeners.insert((l.protocol.clone(), l.bind, l.name.clone()), fds);
        }
        let admin = match &manifest.admin {
            Some(kind) => Some((kind.clone(), self.channel.recv_fd()?)),
            None => None,
        };
        Ok(Inherited {
            listeners,
            admin,
            backends: manifest.backends,
            overrides: manifest.overrides,
        })
    }

    /// Tells the old process that this one serves now.
    pub fn ready(&self) {
        if let Err(e) = self.channel.send(&Said::Ready(std::process::id())) {
            tracing::warn!(error = %e, "upgrade: cannot tell the old process we are ready");
        }
    }

    /// The next connection the old process hands over: what it is, the client's
    /// socket and (a TCP relay) the backend's; `None` once it let go.
    pub fn next_conn(&self) -> anyhow::Result<Option<(HandedConn, OwnedFd, Option<OwnedFd>)>> {
        // The old process sends nothing while its connections are busy.
        let _ = self.channel.set_timeout(Duration::from_secs(24 * 3600));
        let Some(conn) = self.channel.recv::<HandedConn>()? else {
            return Ok(None);
        };
        let client = self.channel.recv_fd()?;
        let upstream = match conn.backend {
            Some(_) => Some(self.channel.recv_fd()?),
            None => None,
        };
        Ok(Some((conn, client, upstream)))
    }
}

/// What the new process took over.
#[derive(Debug, Default)]
pub struct Inherited {
    listeners: HashMap<(String, SocketAddr, String), Vec<OwnedFd>>,
    pub admin: Option<(String, OwnedFd)>,
    backends: Vec<BackendState>,
    overrides: Vec<OverrideState>,
}

impl Inherited {
    /// The sockets of the listener `key`, if the old process had it.
    pub(super) fn take(&mut self, key: &Key) -> Option<Vec<OwnedFd>> {
        self.listeners
            .remove(&(key.protocol.to_owned(), key.bind, key.name.clone()))
    }

    /// Moves the handed-over overrides into `overrides`.
    pub fn take_overrides(&mut self, overrides: &mut Overrides) {
        for o in self.overrides.drain(..) {
            let state = o
                .state
                .as_deref()
                .and_then(|s| s.parse::<AdminState>().ok());
            let weight = o.weight.and_then(std::num::NonZeroU32::new);
            overrides.insert(
                o.pool,
                o.addr,
                Override {
                    state,
                    weight,
                    added: o.added,
                    removed: o.removed,
                },
            );
        }
    }

    /// Gives each backend of `pools` the state the old process had for it.
    pub fn restore(&mut self, pools: &HashMap<String, std::sync::Arc<Pool>>) {
        for state in self.backends.drain(..) {
            let Some(pool) = pools.get(&state.pool) else {
                continue;
            };
            if let Some(b) = pool.backends().iter().find(|b| b.addr() == state.addr) {
                pool.restore(b, &state.carried());
            }
        }
    }

    /// Listeners the new config no longer has: their sockets close here.
    pub fn leftovers(&self) -> impl Iterator<Item = &(String, SocketAddr, String)> {
        self.listeners.keys()
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
