//! Metric families, all in one place (Prometheus conventions: `_total` counters),
//! each with the HELP text `/metrics` prints; [`ALL`] is the order they are
//! written in.

use super::metrics::{Family, Kind};

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family { name, kind, help }
}

pub const BACKEND_UP: Family = family(
    "fulcrum_backend_up",
    Kind::Gauge,
    "1 while the backend takes new traffic: health checks pass and it is not ejected.",
);
pub const BACKEND_HEALTHY: Family = family(
    "fulcrum_backend_healthy",
    Kind::Gauge,
    "1 while active health checks pass (up also needs the backend not ejected).",
);
pub const BACKEND_ACTIVE: Family = family(
    "fulcrum_backend_active_connections",
    Kind::Gauge,
    "Connections and flows to the backend now.",
);
pub const BACKEND_CONNECTIONS: Family = family(
    "fulcrum_backend_connections_total",
    Kind::Counter,
    "Connections established to the backend.",
);
pub const BACKEND_CONNECT_ERRORS: Family = family(
    "fulcrum_backend_connect_errors_total",
    Kind::Counter,
    "Failed connects to the backend (refused, unreachable, timed out).",
);
pub const BACKEND_EJECTIONS: Family = family(
    "fulcrum_backend_ejections_total",
    Kind::Counter,
    "Times passive outlier detection ejected the backend.",
);
pub const BACKEND_SENT_BYTES: Family = family(
    "fulcrum_backend_sent_bytes_total",
    Kind::Counter,
    "Bytes from clients to the backend, counted as connections and flows end.",
);
pub const BACKEND_RECEIVED_BYTES: Family = family(
    "fulcrum_backend_received_bytes_total",
    Kind::Counter,
    "Bytes from the backend to clients, counted as connections and flows end.",
);
pub const BACKEND_CONNECT_SECONDS: Family = family(
    "fulcrum_backend_connect_seconds",
    Kind::Histogram,
    "Time to establish a connection to the backend.",
);
pub const POOL_QUEUE_DEPTH: Family = family(
    "fulcrum_pool_queue_depth",
    Kind::Gauge,
    "Connections or requests waiting now for a backend under max_connections.",
);
pub const POOL_QUEUED: Family = family(
    "fulcrum_pool_queued_total",
    Kind::Counter,
    "Connections or requests that waited in the pool's queue.",
);
pub const POOL_QUEUE_OVERFLOWS: Family = family(
    "fulcrum_pool_queue_overflows_total",
    Kind::Counter,
    "Refused at once: every backend at max_connections and max_queue waiting.",
);
pub const POOL_QUEUE_TIMEOUTS: Family = family(
    "fulcrum_pool_queue_timeouts_total",
    Kind::Counter,
    "Refused after waiting queue_timeout without a backend slot.",
);
pub const POOL_QUEUE_SECONDS: Family = family(
    "fulcrum_pool_queue_seconds",
    Kind::Histogram,
    "Time queued work waited before a backend slot freed up.",
);
pub const LISTENER_ACCEPTED: Family = family(
    "fulcrum_listener_connections_total",
    Kind::Counter,
    "Client connections accepted (TCP, TLS and HTTP listeners).",
);
pub const LISTENER_REFUSED_PER_CLIENT: Family = family(
    "fulcrum_listener_refused_per_client_total",
    Kind::Counter,
    "Connections closed at once for max_connections_per_client.",
);
pub const LISTENER_DENIED: Family = family(
    "fulcrum_listener_denied_total",
    Kind::Counter,
    "Connections closed (TCP), requests answered 403 (HTTP) or datagrams dropped (UDP) by allow/deny.",
);
pub const LISTENER_RATE_LIMITED: Family = family(
    "fulcrum_listener_rate_limited_total",
    Kind::Counter,
    "Connections closed (TCP), requests answered 429 (HTTP) or new flows dropped (UDP) by rate_limit.",
);
pub const LISTENER_PAUSED_AT_LIMIT: Family = family(
    "fulcrum_listener_accept_paused_total",
    Kind::Counter,
    "Times accepting paused at max_connections.",
);
pub const LISTENER_RETRIES: Family = family(
    "fulcrum_listener_retries_total",
    Kind::Counter,
    "Attempts on a further backend after a connect failed.",
);
pub const HTTP_RESPONSES: Family = family(
    "fulcrum_http_responses_total",
    Kind::Counter,
    "Responses sent by HTTP listeners, by status class.",
);
pub const GRPC_RESPONSES: Family = family(
    "fulcrum_grpc_responses_total",
    Kind::Counter,
    "gRPC calls through HTTP listeners, by the grpc-status they ended with.",
);
/// gRPC status codes 0-16 by name (grpc/doc/statuscodes.md), for the `code` label.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
pub const HTTP_REQUEST_SECONDS: Family = family(
    "fulcrum_http_request_seconds",
    Kind::Histogram,
    "Time from a request's head to its response's head.",
);
pub const UDP_FLOWS_ACTIVE: Family = family(
    "fulcrum_udp_flows_active",
    Kind::Gauge,
    "UDP flows live now, lingering evicted ones included.",
);
pub const UDP_FLOWS_CREATED: Family = family(
    "fulcrum_udp_flows_created_total",
    Kind::Counter,
    "UDP flows started.",
);
pub const UDP_FLOWS_EXPIRED: Family = family(
    "fulcrum_udp_flows_expired_total",
    Kind::Counter,
    "UDP flows ended by flow_idle_timeout.",
);
pub const UDP_FLOWS_EVICTED: Family = family(
    "fulcrum_udp_flows_evicted_total",
    Kind::Counter,
    "UDP flows evicted from a full table that then idled out while lingering.",
);
pub const UDP_FLOWS_REFUSED: Family = family(
    "fulcrum_udp_flows_refused_total",
    Kind::Counter,
    "New UDP flows refused: the table and the room for evicted flows were full.",
);
pub const UDP_DATAGRAMS_IN: Family = family(
    "fulcrum_udp_datagrams_in_total",
    Kind::Counter,
    "Datagrams from clients.",
);
pub const UDP_DATAGRAMS_OUT: Family = family(
    "fulcrum_udp_datagrams_out_total",
    Kind::Counter,
    "Datagrams to clients.",
);
pub const UDP_DATAGRAMS_DROPPED: Family = family(
    "fulcrum_udp_datagrams_dropped_total",
    Kind::Counter,
    "Datagrams dropped: no backend, a full flow table, or a socket error.",
);
pub const UDP_BYTES_IN: Family = family(
    "fulcrum_udp_bytes_in_total",
    Kind::Counter,
    "Payload bytes from clients.",
);
pub const UDP_BYTES_OUT: Family = family(
    "fulcrum_udp_bytes_out_total",
    Kind::Counter,
    "Payload bytes to clients.",
);
pub const LOCAL_ERRORS: Family = family(
    "fulcrum_local_resource_errors_total",
    Kind::Counter,
    "Connects and sockets that failed for lack of local resources (descriptors, memory, ports); never counted against a backend.",
);

/// Every family, in the order `/metrics` writes them.
pub const ALL: &[Family] = &[
    BACKEND_UP,
    BACKEND_HEALTHY,
    BACKEND_ACTIVE,
    BACKEND_CONNECTIONS,
    BACKEND_CONNECT_ERRORS,
    BACKEND_EJECTIONS,
    BACKEND_SENT_BYTES,
    BACKEND_RECEIVED_BYTES,
    BACKEND_CONNECT_SECONDS,
    POOL_QUEUE_DEPTH,
    POOL_QUEUED,
    POOL_QUEUE_OVERFLOWS,
    POOL_QUEUE_TIMEOUTS,
    POOL_QUEUE_SECONDS,
    LISTENER_ACCEPTED,
    LISTENER_REFUSED_PER_CLIENT,
    LISTENER_DENIED,
    LISTENER_RATE_LIMITED,
    LISTENER_PAUSED_AT_LIMIT,
    LISTENER_RETRIES,
    HTTP_RESPONSES,
    GRPC_RESPONSES,
    HTTP_REQUEST_SECONDS,
    UDP_FLOWS_ACTIVE,
    UDP_FLOWS_CREATED,
    UDP_FLOWS_EXPIRED,
    UDP_FLOWS_EVICTED,
    UDP_FLOWS_REFUSED,
    UDP_DATAGRAMS_IN,
    UDP_DATAGRAMS_OUT,
    UDP_DATAGRAMS_DROPPED,
    UDP_BYTES_IN,
    UDP_BYTES_OUT,
    LOCAL_ERRORS,
];
