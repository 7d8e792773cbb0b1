//! The admin listener: `/metrics` (Prometheus text), `/status` (JSON) and `/` (an
//! HTML status page) over what the server runs now, and the runtime write API
//! under `/api/`; the server swaps in a new [`View`] on every (re)load.

pub mod api;
mod metrics;
pub mod names;
mod page;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::AdminBind;
use arc_swap::ArcSwap;
use fulcrum_l4::{tcp, udp, Pool};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

/// One running listener, as the admin pages show it.
#[derive(Debug, Clone)]
pub enum ListenerView {
    Tcp(Arc<tcp::Listener>, SocketAddr),
    Udp(Arc<udp::Listener>, SocketAddr),
    Http(Arc<fulcrum_l7::Listener>, SocketAddr),
}

/// What runs now.
#[derive(Debug, Default)]
pub struct View {
    pub listeners: Vec<ListenerView>,
    pub pools: Vec<Arc<Pool>>,
    /// Runtime overrides, in pool then address order.
    pub overrides: Vec<Overridden>,
}

/// One backend the operator changed at runtime.
#[derive(Debug, Clone)]
pub struct Overridden {
    pub pool: String,
    pub addr: SocketAddr,
    /// What was changed, for people: `state=drain weight=5`.
    pub what: String,
    /// The backend is removed from its pool at runtime.
    pub removed: bool,
}

/// Where the admin listener accepts.
#[derive(Debug)]
pub enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Shared between the server (which updates the view) and the admin listener.
#[derive(Debug)]
pub struct Admin {
    view: ArcSwap<View>,
    auth: ArcSwap<api::Auth>,
    commands: api::Commands,
    /// Open admin connections: an answer in flight is written before exit.
    connections: tokio_util::task::TaskTracker,
}

impl Admin {
    pub fn new(auth: api::Auth, commands: api::Commands) -> Arc<Admin> {
        Arc::new(Admin {
            view: ArcSwap::from_pointee(View::default()),
            auth: ArcSwap::from_pointee(auth),
            commands,
            connections: tokio_util::task::TaskTracker::new(),
        })
    }

    pub fn set_view(&self, view: View) {
        self.view.store(Arc::new(view));
    }

    /// Waits (a little at most) for answers still being written, such as the
    /// one that tells `fulcrum upgrade` it worked.
    pub async fn finish(&self) {
        self.connections.close();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(2), self.connections.wait()).await;
    }

    /// A reload may change the token.
    pub fn set_auth(&self, auth: api::Auth) {
        self.auth.store(Arc::new(auth));
    }

    /// Serves the admin pages on `socket` until `shutdown`.
    pub async fn serve(self: Arc<Self>, socket: Socket, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = socket.accept() => accepted,
            };
            match accepted {
                Ok(Stream::Tcp(stream)) => self.connection(stream, shutdown.clone()),
                Ok(Stream::Unix(stream)) => self.connection(stream, shutdown.clone()),
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    // Out of descriptors, most likely: give it a moment.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Serves one admin connection; once `shutdown`, an answer in flight is
    /// finished and the connection closed.
    fn connection<S>(self: &Arc<Self>, stream: S, shutdown: CancellationToken)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let admin = Arc::clone(self);
        self.connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(admin.respond(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(std::time::Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "admin connection failed");
            }
        });
    }

    async fn respond(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path().starts_with("/api/") {
            let auth = self.auth.load_full();
            let outcome = match api::read(req, &auth).await {
                Ok(write) => api::carry_out(&self.commands, write).await,
                Err(refused) => Err(refused),
            };
            let (status, body) = match outcome {
                Ok(done) => (StatusCode::OK, serde_json::json!({ "ok": done })),
                Err(r) => (r.status, serde_json::json!({ "error": r.message })),
            };
            let mut response = reply(status, "application/json", format!("{body}\n"));
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Bearer"),
                );
            }
            return response;
        }
        let (status, kind, body) = match (req.method().as_str(), req.uri().path()) {
            ("GET", "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", self.metrics()),
            ("GET", "/status") => (StatusCode::OK, "application/json", self.status()),
            ("GET", "/") => (StatusCode::OK, "text/html; charset=utf-8", self.page()),
            ("GET", _) => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /, /metrics or /status\n".to_owned(),
            ),
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "only GET here; writes go to /api/\n".to_owned(),
            ),
        };
        reply(status, kind, body)
    }
}

fn reply(status: StatusCode, kind: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = kind.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// One accepted admin connection.
enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Socket {
    async fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Socket::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
            Socket::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
        }
    }
}

/// Binds the admin listener (never SO_REUSEPORT: one process owns it). A stale
/// unix socket left by an earlier run is replaced; the socket is made 0660 so
/// that the service's group may use `fulcrum ctl`. Call inside a runtime.
pub fn bind(at: &AdminBind) -> anyhow::Result<Socket> {
    use anyhow::Context as _;
    match at {
        AdminBind::Tcp(addr) => {
            let socket = std::net::TcpListener::bind(addr)
                .with_context(|| format!("admin listener: cannot bind {addr}"))?;
            socket.set_nonblocking(true)?;
            Ok(Socket::Tcp(TcpListener::from_std(socket)?))
        }
        AdminBind::Unix(path) => {
            use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    anyhow::bail!(
                        "admin listener: {} exists and is not a socket; remove it or bind elsewhere",
                        path.display()
                    );
                }
                // Another fulcrum still listening there keeps it.
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    anyhow::bail!(
                        "admin listener: {} is in use by a running process",
                        path.display()
                    );
                }
                std::fs::remove_file(path).with_context(|| {
                    format!("admin listener: cannot replace {}", path.display())
                })?;
            }
            let socket = std::os::unix::net::UnixListener::bind(path)
                .with_context(|| format!("admin listener: cannot bind {}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                .with_context(|| format!("admin listener: cannot chmod {}", path.display()))?;
            socket.set_nonblocking(true)?;
            Ok(Socket::Unix(UnixListener::from_std(socket)?))
        }
    }
}

/// Takes over the admin socket an upgrade handed over (`kind`: tcp or unix),
/// when the config still asks for that kind; else binds anew.
pub fn adopt(at: &AdminBind, kind: &str, fd: std::os::fd::OwnedFd) -> anyhow::Result<Socket> {
    match (at, kind) {
        (AdminBind::Tcp(_), "tcp") => {
            let socket = std::net::TcpListener::from(fd);
            socket.set_nonblocking(true)?;
            Ok(Socket::Tcp(TcpListener::from_std(socket)?))
        }
        (AdminBind::Unix(_), "unix") => {
            let socket = std::os::unix::net::UnixListener::from(fd);
            socket.set_nonblocking(true)?;
            Ok(Socket::Unix(UnixListener::from_std(socket)?))
        }
        _ => bind(at),
    }
}

impl Socket {
    /// Where it listens, for the log: the bound port when the config said 0.
    pub fn describe(&self, at: &AdminBind) -> String {
        match self {
            Socket::Tcp(l) => l.local_addr().map_or(at.to_string(), |a| a.to_string()),
            Socket::Unix(_) => at.to_string(),
        }
    }

    /// Its kind and a duplicate of its descriptor, to hand over on upgrade.
    pub fn handover(&self) -> anyhow::Result<(String, std::os::fd::OwnedFd)> {
        use std::os::fd::AsFd as _;
        Ok(match self {
            Socket::Tcp(l) => ("tcp".to_owned(), l.as_fd().try_clone_to_owned()?),
            Socket::Unix(l) => ("unix".to_owned(), l.as_fd().try_clone_to_owned()?),
        })
    }
}
