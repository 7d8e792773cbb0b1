//! The admin listener: `/metrics` (Prometheus text), `/status` (JSON) and `/` (an
//! HTML status page) over what the server runs now; the server swaps in a new
//! [`View`] on every (re)load.

mod metrics;
pub mod names;
mod page;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use fulcrum_l4::{tcp, udp, Pool};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
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
}

/// Shared between the server (which updates the view) and the admin listener.
#[derive(Debug)]
pub struct Admin {
    view: ArcSwap<View>,
}

impl Admin {
    pub fn new() -> Arc<Admin> {
        Arc::new(Admin {
            view: ArcSwap::from_pointee(View::default()),
        })
    }

    pub fn set_view(&self, view: View) {
        self.view.store(Arc::new(view));
    }

    /// Serves the admin pages on `listener` until `shutdown`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let admin = Arc::clone(&self);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let admin = Arc::clone(&admin);
                    async move { Ok::<_, Infallible>(admin.respond(&req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "admin connection failed");
                }
            });
        }
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
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
                "only GET\n".to_owned(),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = kind.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    }
}
