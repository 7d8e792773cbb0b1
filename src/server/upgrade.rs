//! The old process's side of a binary upgrade (`fulcrum upgrade`, SIGUSR2):
//! starts the binary at the running executable's path with the same arguments,
//! hands it every listening socket (each worker's SO_REUSEPORT socket, so no
//! queued connection is lost), the admin socket, each backend's live state and
//! the runtime overrides, and reports once the new process serves or why it
//! will not (then this one keeps serving as before).

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use tokio::sync::mpsc;

use fulcrum_l4::handover::Handed;

use super::handover::{
    BackendState, Channel, HandedConn, ListenerFds, Manifest, OverrideState, Said, ENV,
};
use super::Server;

/// How long the new process may take to start serving.
const PATIENCE: Duration = Duration::from_secs(60);

/// What an upgrade comes to: the new process's pid, or why it did not take over.
pub type Outcome = Result<u32, String>;

impl Server {
    /// What this process hands over, and the descriptors (duplicates) that follow.
    fn manifest(&self) -> anyhow::Result<(Manifest, Vec<OwnedFd>)> {
        let mut manifest = Manifest::default();
        let mut fds = Vec::new();
        for (key, running) in &self.listeners {
            manifest.listeners.push(ListenerFds {
                protocol: key.protocol.to_owned(),
                bind: key.bind,
                name: key.name.clone(),
                sockets: running.sockets.len(),
            });
            for socket in &running.sockets {
                fds.push(socket.try_clone().context("dup a listening socket")?);
            }
        }
        if let Some((kind, socket)) = &self.admin_socket {
            manifest.admin = Some(kind.clone());
            fds.push(socket.try_clone().context("dup the admin socket")?);
        }
        for (name, pool) in &self.pools {
            for b in pool.backends() {
                manifest.backends.push(BackendState::of(name, b));
            }
        }
        for ((pool, addr), o) in self.overrides.entries() {
            manifest.overrides.push(OverrideState::of(pool, *addr, o));
        }
        Ok((manifest, fds))
    }

    /// Starts the new process; `done` hears how it went. Once it serves, the
    /// same thread passes it the connections [`Server::hand_over_idle`] lets go.
    pub(super) fn upgrade(&mut self, done: mpsc::UnboundedSender<Outcome>) -> anyhow::Result<u32> {
        let (manifest, fds) = self.manifest()?;
        let (handed_tx, handed) = std::sync::mpsc::channel::<Handed>();
        let exe = executable()?;
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .context("upgrade: socketpair")?;
        // The new process's end survives exec (and only that end).
        rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())
            .context("upgrade: clear close-on-exec")?;
        let child = Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .env(ENV, theirs.as_raw_fd().to_string())
            .spawn()
            .with_context(|| format!("upgrade: cannot start {}", exe.display()))?;
        drop(theirs);
        let pid = child.id();
        let channel = Channel::new(ours);
        channel.set_timeout(PATIENCE)?;
        tracing::info!(binary = %exe.display(), pid, listeners = manifest.listeners.len(), "upgrade: new process started");
        let thread = std::thread::Builder::new()
            .name("fulcrum-upgrade".to_owned())
            .spawn(move || {
                let mut child = child;
                let outcome = converse(&channel, &manifest, &fds, &mut child);
                let served = outcome.is_ok();
                if !served {
                    reap(&mut child);
                }
                let _ = done.send(outcome);
                if served {
                    forward(&channel, handed);
                }
            })
            .context("upgrade: cannot start its thread")?;
        self.handing = Some((handed_tx, thread));
        Ok(pid)
    }

    /// The new process serves: idle connections go to it from now on. Relays
    /// waiting on their sockets are woken to see that.
    pub(super) fn hand_over_idle(&mut self) {
        let Some((sink, _)) = &self.handing else {
            return;
        };
        fulcrum_l4::handover::begin(sink.clone());
        for pool in self.pools.values() {
            pool.backends().iter().for_each(fulcrum_l4::Backend::nudge);
        }
        for draining in self.draining.values() {
            draining.backend.nudge();
        }
    }

    /// Drops the socket duplicates kept for an upgrade (this process stops
    /// listening: they must not keep its sockets open).
    pub(super) fn release_sockets(&mut self) {
        for running in self.listeners.values_mut() {
            running.sockets.clear();
        }
        self.admin_socket = None;
    }

    /// Every connection is handed over or done: the last ones are sent before
    /// this process exits.
    pub(super) async fn finish_handing_over(&mut self) {
        fulcrum_l4::handover::end();
        let Some((sink, thread)) = self.handing.take() else {
            return;
        };
        drop(sink);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !thread.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Sends each handed-over connection to the new process until this one lets go.
fn forward(channel: &Channel, handed: std::sync::mpsc::Receiver<Handed>) {
    let mut sent = 0u64;
    for conn in handed {
        let message = HandedConn {
            listener: conn.listener.to_string(),
            peer: conn.peer,
            backend: conn.backend.as_ref().map(|(addr, _)| *addr),
        };
        let sent_ok = channel.send(&message).and_then(|()| {
            channel.send_fd(conn.client.as_fd())?;
            match &conn.backend {
                Some((_, upstream)) => channel.send_fd(upstream.as_fd()),
                None => Ok(()),
            }
        });
        if let Err(e) = sent_ok {
            tracing::warn!(error = %format!("{e:#}"), client = %conn.peer, "upgrade: a connection could not be handed over; closed");
            continue;
        }
        sent += 1;
    }
    tracing::info!(connections = sent, "upgrade: idle connections handed over");
}

/// Hands everything over once the new process says its config is good; waits
/// until it serves.
fn converse(channel: &Channel, manifest: &Manifest, fds: &[OwnedFd], child: &mut Child) -> Outcome {
    let mut said = |what: &str| -> Result<Said, String> {
        match channel.recv::<Said>() {
            Ok(Some(said)) => Ok(said),
            Ok(None) => Err(format!("the new process exited {what}{}", status(child))),
            Err(e) => Err(format!("the new process did not answer {what}: {e:#}")),
        }
    };
    match said("before checking its config")? {
        Said::Hello(_) => {}
        Said::Error(why) => return Err(why),
        Said::Ready(_) => return Err("the new process skipped its hello".to_owned()),
    }
    channel.send(manifest).map_err(|e| format!("{e:#}"))?;
    for fd in fds {
        channel.send_fd(fd.as_fd()).map_err(|e| format!("{e:#}"))?;
    }
    match said("before it was ready")? {
        Said::Ready(pid) => Ok(pid),
        Said::Error(why) => Err(why),
        Said::Hello(_) => Err("the new process said hello twice".to_owned()),
    }
}

/// The new process gave up: collect its exit (killing it if it lingers).
fn reap(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// ` (exit status 2)`, once the child has exited.
fn status(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return format!(" ({status})");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    String::new()
}

/// The running executable's path: the file now at that path is what starts,
/// even when the running one was replaced (`/proc/self/exe` then says "(deleted)").
fn executable() -> anyhow::Result<PathBuf> {
    let link = std::fs::read_link("/proc/self/exe").context("upgrade: /proc/self/exe")?;
    let text = link.to_string_lossy();
    let path = PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text));
    anyhow::ensure!(
        path.exists(),
        "upgrade: no binary at {} any more",
        path.display()
    );
    Ok(path)
}
