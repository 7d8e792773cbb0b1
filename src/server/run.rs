//! The control loop: starts the server from a config (taking over the sockets
//! and state an upgrading process hands over, when it is one), answers signals,
//! admin commands, DNS changes and upgrades, then drains: on SIGTERM/SIGINT, or
//! once a new process took over.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::runtime::Builder;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use super::handover::Upgrade;
use super::upgrade::Outcome as Upgraded;
use super::{auth, overrides, raise_fd_limit, Server};
use crate::admin::api::{Outcome, Refused, Write};
use crate::admin::{self, Admin};
use crate::config::Config;
use crate::dns::Dns;
use crate::systemd;

/// Runs `config` on `workers` threads until SIGTERM or SIGINT, or until a new
/// binary took over; then drains. With a config `path`, SIGHUP reloads it.
/// `upgrade`: this process replaces a running one, which hands over its sockets.
pub fn run(
    config: &Config,
    workers: usize,
    path: Option<&Path>,
    activated: systemd::Activated,
    upgrade: Option<Upgrade>,
) -> anyhow::Result<()> {
    activated.log();
    raise_fd_limit();
    crate::memory::start_trimming();
    let control = Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the control event loop")?;
    let mut server = Server::start(workers)?;
    let (dns_changes, mut dns_changed) = mpsc::unbounded_channel();
    let mut dns = Dns::new(dns_changes);
    server.activated = activated;
    let (commands, mut requests) = mpsc::unbounded_channel();
    let started = {
        // Signal handlers go in before the first listener is announced, so a
        // signal sent at once is handled, not fatal. Health checks spawned by
        // apply run on the control loop, which block_on drives below.
        let _context = control.enter();
        let started = (|| {
            let handlers = (
                signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
                signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
                signal(SignalKind::hangup()).context("cannot watch SIGHUP")?,
                signal(SignalKind::user_defined2()).context("cannot watch SIGUSR2")?,
            );
            if let Some(upgrade) = &upgrade {
                let mut inherited = upgrade.receive()?;
                inherited.take_overrides(&mut server.overrides);
                server.inherited = Some(inherited);
            }
            if let Some(at) = &config.admin {
                let handed = server.inherited.as_mut().and_then(|i| i.admin.take());
                let socket = match handed {
                    Some((kind, fd)) => admin::adopt(&at.bind, &kind, fd)?,
                    None => admin::bind(&at.bind)?,
                };
                tracing::info!(listener = "admin", addr = %socket.describe(&at.bind), "listening");
                server.admin_socket = Some(socket.handover()?);
                let admin = Admin::new(auth(at), commands.clone());
                tokio::spawn(Arc::clone(&admin).serve(socket, server.admin_stop.clone()));
                server.admin = Some(admin);
            }
            server.admin_bind = config.admin.as_ref().map(|a| a.bind.clone());
            let effective = control.block_on(dns.prepare(config.clone()))?;
            server.apply(&effective)?;
            server.activated.warn_unused();
            if let Some(inherited) = server.inherited.take() {
                for (protocol, bind, _) in inherited.leftovers() {
                    tracing::warn!(protocol, %bind, "upgrade: the old process's listener is not in this config; its socket closes");
                }
            }
            anyhow::Ok(handlers)
        })();
        started
    };
    let (mut term, mut int, mut hup, mut usr2) = match started {
        Ok(handlers) => handlers,
        Err(e) => {
            if let Some(upgrade) = &upgrade {
                upgrade.refuse(&format!("{e:#}"));
            }
            return Err(e);
        }
    };
    match upgrade {
        Some(upgrade) => {
            // systemd hears of the new main process before the old one can
            // exit (NotifyAccess=all: this process is not the main one yet).
            systemd::notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
            upgrade.ready();
            tracing::info!(
                pid = std::process::id(),
                "upgrade: serving; the old process drains"
            );
            server.take_connections(upgrade);
        }
        None => systemd::ready(),
    }
    let mut drain_timeout = config.drain_timeout;
    let (upgraded_tx, mut upgraded) = mpsc::unbounded_channel::<Upgraded>();
    // Who asked for the upgrade in flight (SIGUSR2 asks nobody back).
    let mut upgrading: Option<Vec<oneshot::Sender<Outcome>>> = None;
    control.block_on(async {
        let successor = loop {
            tokio::select! {
                _ = term.recv() => break None,
                _ = int.recv() => break None,
                Some((write, reply)) = requests.recv() => match write {
                    Write::Backend(command) => {
                        let outcome = server.command(&command);
                        overrides::log(&command, &outcome);
                        // The asker may have gone; the change stands either way.
                        let _ = reply.send(outcome);
                    }
                    Write::Upgrade => begin(&mut server, &mut upgrading, Some(reply), &upgraded_tx),
                },
                _ = usr2.recv() => {
                    tracing::info!("SIGUSR2: upgrading the binary");
                    begin(&mut server, &mut upgrading, None, &upgraded_tx);
                }
                Some(outcome) = upgraded.recv() => {
                    let askers = upgrading.take().unwrap_or_default();
                    match outcome {
                        Ok(pid) => {
                            for reply in askers {
                                let _ = reply.send(Ok(format!(
                                    "pid {pid} serves now; pid {} drains and exits",
                                    std::process::id()
                                )));
                            }
                            break Some(pid);
                        }
                        Err(why) => {
                            server.handing = None;
                            tracing::error!(reason = %why, "upgrade failed; this process keeps serving");
                            for reply in askers {
                                let _ = reply.send(Err(Refused::new(
                                    hyper::StatusCode::UNPROCESSABLE_ENTITY,
                                    format!("upgrade failed, the running process keeps serving: {why}"),
                                )));
                            }
                        }
                    }
                }
                Some(change) = dns_changed.recv() => {
                    if let Some(config) = dns.changed(change) {
                        if let Err(e) = server.apply(&config) {
                            tracing::error!("dns change not applied: {e:#}");
                        }
                    }
                }
                _ = hup.recv() => match path {
                    Some(path) => {
                        systemd::reloading();
                        if let Some(timeout) = server.reload(path, &mut dns).await {
                            drain_timeout = timeout;
                        }
                        // Ready again, with the new config or the old one kept.
                        systemd::ready();
                    }
                    None => tracing::warn!("SIGHUP: no config file to reload (flag-only mode)"),
                },
            }
        };
        let live = server.sessions.len();
        match successor {
            Some(pid) => {
                // systemd follows MAINPID to the new process; nothing to say.
                server.admin_stop.cancel();
                server.hand_over_idle();
                tracing::info!(
                    new_pid = pid,
                    live,
                    timeout_ms = drain_timeout.as_millis() as u64,
                    "upgraded: the new process accepts now; draining live connections"
                );
            }
            None => {
                systemd::stopping();
                tracing::info!(
                    live,
                    timeout_ms = drain_timeout.as_millis() as u64,
                    "shutting down: no new connections, draining live ones"
                );
            }
        }
        // First: the duplicates kept for an upgrade would keep the listeners'
        // sockets accepting into their queues once the workers close theirs.
        server.release_sockets();
        server.shutdown.cancel();
        server.sessions.close();
        tokio::select! {
            () = server.sessions.wait() => tracing::info!("drained"),
            () = tokio::time::sleep(drain_timeout) => {
                tracing::warn!(cut = server.sessions.len(), "drain timeout reached; closing remaining connections");
            }
            _ = term.recv() => tracing::warn!(cut = server.sessions.len(), "second signal; closing remaining connections"),
            _ = int.recv() => tracing::warn!(cut = server.sessions.len(), "second signal; closing remaining connections"),
        }
        server.finish_handing_over().await;
        server.admin_stop.cancel();
        if let Some(admin) = &server.admin {
            admin.finish().await;
        }
        anyhow::Ok(())
    })?;
    server.stop();
    Ok(())
}

/// Starts an upgrade unless one is under way (then `reply` waits for that one).
fn begin(
    server: &mut Server,
    upgrading: &mut Option<Vec<oneshot::Sender<Outcome>>>,
    reply: Option<oneshot::Sender<Outcome>>,
    done: &mpsc::UnboundedSender<Upgraded>,
) {
    if let Some(askers) = upgrading {
        askers.extend(reply);
        return;
    }
    match server.upgrade(done.clone()) {
        Ok(_) => *upgrading = Some(reply.into_iter().collect()),
        Err(e) => {
            tracing::error!("upgrade not started: {e:#}");
            if let Some(reply) = reply {
                let _ = reply.send(Err(Refused::new(
                    hyper::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("upgrade not started: {e:#}"),
                )));
            }
        }
    }
}
