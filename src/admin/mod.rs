//! The admin listener: `/metrics` (Prometheus text), `/status` (JSON) and `/` (an
//! HTML status page) over what the server runs now; the server swaps in a new
//! [`View`] on every (re)load.

mod metrics;
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
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Metric names, all in one place (Prometheus conventions: `_total` counters).
pub mod names {
    pub const BACKEND_UP: &str = "fulcrum_backend_up";
    pub const BACKEND_ACTIVE: &str = "fulcrum_backend_active_connections";
    pub const BACKEND_CONNECTIONS: &str = "fulcrum_backend_connections_total";
    pub const BACKEND_CONNECT_ERRORS: &str = "fulcrum_backend_connect_errors_total";
    /// 1 while active health checks pass (`up` also needs the backend not ejected).
    pub const BACKEND_HEALTHY: &str = "fulcrum_backend_healthy";
    pub const BACKEND_EJECTIONS: &str = "fulcrum_backend_ejections_total";
    /// Bytes from clients to the backend, counted as connections and flows end.
    pub const BACKEND_SENT_BYTES: &str = "fulcrum_backend_sent_bytes_total";
    pub const BACKEND_RECEIVED_BYTES: &str = "fulcrum_backend_received_bytes_total";
    /// Histogram of connect times.
    pub const BACKEND_CONNECT_SECONDS: &str = "fulcrum_backend_connect_seconds";
    /// Attempts on a further backend after a connect failed.
    pub const LISTENER_RETRIES: &str = "fulcrum_listener_retries_total";
    /// Histogram of the time from request head to response head.
    pub const HTTP_REQUEST_SECONDS: &str = "fulcrum_http_request_seconds";
    pub const UDP_FLOWS_ACTIVE: &str = "fulcrum_udp_flows_active";
    pub const TCP_ACCEPTED: &str = "fulcrum_listener_connections_total";
    pub const TCP_REFUSED_PER_CLIENT: &str = "fulcrum_listener_refused_per_client_total";
    pub const TCP_PAUSED_AT_LIMIT: &str = "fulcrum_listener_accept_paused_total";
    /// HTTP listeners count their connections under the same name as TCP ones.
    pub const HTTP_ACCEPTED: &str = TCP_ACCEPTED;
    /// Responses sent by HTTP listeners, labelled by status `class` (2xx...).
    pub const HTTP_RESPONSES: &str = "fulcrum_http_responses_total";
    pub const UDP_FLOWS_CREATED: &str = "fulcrum_udp_flows_created_total";
    pub const UDP_FLOWS_EVICTED: &str = "fulcrum_udp_flows_evicted_total";
    pub const UDP_FLOWS_EXPIRED: &str = "fulcrum_udp_flows_expired_total";
    pub const UDP_DATAGRAMS_IN: &str = "fulcrum_udp_datagrams_in_total";
    pub const UDP_DATAGRAMS_OUT: &str = "fulcrum_udp_datagrams_out_total";
    pub const UDP_BYTES_IN: &str = "fulcrum_udp_bytes_in_total";
    pub const UDP_BYTES_OUT: &str = "fulcrum_udp_bytes_out_total";
}

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
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Admin {
    pub fn new() -> Arc<Admin> {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Arc::new(Admin {
            view: ArcSwap::from_pointee(View::default()),
            recorder,
            handle,
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
