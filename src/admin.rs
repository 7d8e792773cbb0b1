//! The admin listener: `/metrics` (Prometheus text) and `/status` (JSON) over what
//! the server runs now; the server swaps in a new [`View`] on every (re)load.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use fulcrum_l4::{tcp, udp, Pool};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Metric names, all in one place (Prometheus conventions: `_total` counters).
pub mod names {
    pub const BACKEND_UP: &str = "fulcrum_backend_up";
    pub const BACKEND_ACTIVE: &str = "fulcrum_backend_active_connections";
    pub const BACKEND_CONNECTIONS: &str = "fulcrum_backend_connections_total";
    pub const BACKEND_CONNECT_ERRORS: &str = "fulcrum_backend_connect_errors_total";
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
            ("GET", _) => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /metrics or /status\n".to_owned(),
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

    /// The Prometheus text: live counters are copied into the registry at scrape
    /// time, so the data path pays nothing for metrics.
    fn metrics(&self) -> String {
        let view = self.view.load();
        metrics::with_local_recorder(&self.recorder, || {
            for pool in &view.pools {
                for b in pool.backends() {
                    let labels = [
                        ("pool", pool.name().to_owned()),
                        ("backend", b.addr().to_string()),
                    ];
                    metrics::gauge!(names::BACKEND_UP, &labels).set(f64::from(u8::from(b.is_up())));
                    metrics::gauge!(names::BACKEND_ACTIVE, &labels).set(f64::from(b.active()));
                    metrics::counter!(names::BACKEND_CONNECTIONS, &labels).absolute(b.total());
                    metrics::counter!(names::BACKEND_CONNECT_ERRORS, &labels)
                        .absolute(b.connect_errors());
                }
            }
            for listener in &view.listeners {
                match listener {
                    ListenerView::Tcp(l, _) => {
                        let labels = [("listener", l.name().to_string())];
                        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
                        metrics::counter!(names::TCP_ACCEPTED, &labels)
                            .absolute(count(&l.stats.accepted));
                        metrics::counter!(names::TCP_REFUSED_PER_CLIENT, &labels)
                            .absolute(count(&l.stats.refused_per_client));
                        metrics::counter!(names::TCP_PAUSED_AT_LIMIT, &labels)
                            .absolute(count(&l.stats.paused_at_limit));
                    }
                    ListenerView::Http(l, _) => {
                        let name = l.name().to_string();
                        metrics::counter!(names::HTTP_ACCEPTED, "listener" => name.clone())
                            .absolute(l.stats.accepted.load(Ordering::Relaxed));
                        for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"]
                            .into_iter()
                            .zip(&l.stats.responses)
                        {
                            metrics::counter!(names::HTTP_RESPONSES, "listener" => name.clone(), "class" => class)
                                .absolute(n.load(Ordering::Relaxed));
                        }
                    }
                    ListenerView::Udp(l, _) => {
                        let labels = [("listener", l.name().to_string())];
                        let s = &l.stats;
                        for (name, value) in [
                            (names::UDP_FLOWS_CREATED, &s.flows_created),
                            (names::UDP_FLOWS_EVICTED, &s.flows_evicted),
                            (names::UDP_FLOWS_EXPIRED, &s.flows_expired),
                            (names::UDP_DATAGRAMS_IN, &s.datagrams_in),
                            (names::UDP_DATAGRAMS_OUT, &s.datagrams_out),
                            (names::UDP_BYTES_IN, &s.bytes_in),
                            (names::UDP_BYTES_OUT, &s.bytes_out),
                        ] {
                            metrics::counter!(name, &labels).absolute(udp::Stats::get(value));
                        }
                    }
                }
            }
        });
        self.handle.render()
    }

    fn status(&self) -> String {
        let view = self.view.load();
        let listeners: Vec<_> = view
            .listeners
            .iter()
            .map(|l| match l {
                ListenerView::Tcp(l, addr) => {
                    let current = l.current();
                    json!({
                        "name": &*current.settings.name, "protocol": "tcp", "addr": addr.to_string(),
                        "pool": current.pool.name(),
                        "connections": l.stats.accepted.load(Ordering::Relaxed),
                    })
                }
                ListenerView::Http(l, addr) => {
                    let responses: u64 = l.stats.responses.iter().map(|n| n.load(Ordering::Relaxed)).sum();
                    json!({
                        "name": &*l.name(), "protocol": "http", "addr": addr.to_string(),
                        "connections": l.stats.accepted.load(Ordering::Relaxed),
                        "requests": responses,
                    })
                }
                ListenerView::Udp(l, addr) => {
                    let current = l.current();
                    json!({
                        "name": &*current.settings.name, "protocol": "udp", "addr": addr.to_string(),
                        "pool": current.pool.name(),
                        "flows": udp::Stats::get(&l.stats.flows_created),
                    })
                }
            })
            .collect();
        let pools: Vec<_> = view
            .pools
            .iter()
            .map(|p| {
                let backends: Vec<_> = p
                    .backends()
                    .iter()
                    .map(|b| {
                        json!({
                            "addr": b.addr().to_string(), "weight": b.weight(), "up": b.is_up(),
                            "healthy": b.is_healthy(), "ejected": b.is_ejected(), "active": b.active(),
                            "connections": b.total(), "connect_errors": b.connect_errors(),
                        })
                    })
                    .collect();
                json!({ "name": p.name(), "algorithm": p.algorithm().to_string(), "backends": backends })
            })
            .collect();
        let mut text = json!({ "listeners": listeners, "pools": pools }).to_string();
        text.push('\n');
        text
    }
}
