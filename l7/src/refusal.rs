//! fulcrum's own answers: why a request was not answered by a backend, and the
//! status, text or gRPC status that says so. A client's fault is never a 5xx.

use std::net::SocketAddr;

use fulcrum_l4::pool::Full;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use bytes::Bytes;

use crate::grpc;
use crate::upstream::ProxyBody;
use crate::vet::Refused;

/// The operator's bodies for fulcrum's own answers, by status (`error_pages`).
pub type ErrorPages = std::collections::HashMap<u16, Page>;

/// One error page, read and checked when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub body: Bytes,
    /// From the file's extension: text/html, application/json or text/plain.
    pub content_type: &'static str,
}

/// Why a request got fulcrum's own answer instead of a backend's.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("no route matches and the listener has no default pool")]
    NoRoute,
    #[error("no backend available in pool `{0}`")]
    NoBackend(String),
    /// `max_connections` on every backend, and the queue full or too slow.
    #[error("pool `{0}`: {1}")]
    Queue(String, Full),
    #[error("backend {0} failed: {1}")]
    Backend(SocketAddr, #[source] hyper::Error),
    #[error("no response within the request timeout")]
    Timeout,
    /// The request itself cannot be forwarded as it is.
    #[error("refused: {}", .0.why)]
    Bad(Refused),
    /// The client's body broke off or was malformed while it was being sent on:
    /// the client's fault, never the backend's.
    #[error("client's request body failed: {0}")]
    ClientBody(#[source] hyper::Error),
    /// gRPC needs HTTP/2 to the backend, and this pool speaks HTTP/1.1.
    #[error("gRPC call routed to pool `{0}`, which speaks HTTP/1.1 to its backends; set http_version = \"2\" (or \"auto\" over TLS) on it")]
    GrpcOverHttp1(String),
    /// The client sent no more of its body for `body_read_timeout`.
    #[error("no request body progress for {0:?}")]
    Stalled(std::time::Duration),
    /// The body is larger than `max_request_body`.
    #[error("request body over max_request_body ({0} bytes)")]
    TooLarge(usize),
    /// The client went away in the middle of its request body (HTTP/1 path).
    #[error("the client closed during its request body")]
    ClientGone,
    /// The client's body broke its own framing (HTTP/1 path): why.
    #[error("malformed request body: {0}")]
    BadBody(&'static str),
    /// A backend failed before its whole response head (HTTP/1 path): how.
    #[error("backend {0}: {1}")]
    BackendBroke(SocketAddr, &'static str),
    /// A redirect route or `https_redirect`: the status and the `Location`.
    #[error("redirected ({0}) to {1:?}")]
    Redirect(StatusCode, HeaderValue),
    /// Over a `rate_limit`.
    #[error("over its rate limit; retry in {:?}", .0.retry_after)]
    RateLimited(crate::limit::Limited),
}

/// nginx's code for a client that went away before its response: never sent,
/// only logged and counted.
const CLIENT_CLOSED: u16 = 499;

impl Refusal {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::NoBackend(_) | Refusal::Queue(..) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Backend(..) | Refusal::BackendBroke(..) | Refusal::GrpcOverHttp1(_) => {
                StatusCode::BAD_GATEWAY
            }
            Refusal::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Bad(r) => r.status,
            Refusal::ClientBody(e) if client_went_away(e) => {
                StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Refusal::ClientGone => {
                StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Refusal::ClientBody(_) | Refusal::BadBody(_) => StatusCode::BAD_REQUEST,
            Refusal::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Redirect(code, _) => *code,
            Refusal::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// `RateLimit-Policy` and `RateLimit` values of a 429.
    pub(crate) fn rate_fields(&self) -> Option<(String, String)> {
        match self {
            Refusal::RateLimited(limited) => Some(limited.fields()),
            _ => None,
        }
    }

    /// Where a redirect sends the client.
    pub(crate) fn location(&self) -> Option<&HeaderValue> {
        match self {
            Refusal::Redirect(_, location) => Some(location),
            _ => None,
        }
    }

    /// A redirect route's answer, or 400 when the request names no host to
    /// build the `Location` from.
    pub(crate) fn redirect(
        redirect: &crate::route::Redirect,
        asked: &crate::route::Asked<'_>,
    ) -> Refusal {
        let location = redirect
            .location(asked)
            .and_then(|l| HeaderValue::from_str(&l).ok());
        let code = StatusCode::from_u16(redirect.code).unwrap_or(StatusCode::FOUND);
        match location {
            Some(location) => Refusal::Redirect(code, location),
            None => Refusal::Bad(Refused {
                status: StatusCode::BAD_REQUEST,
                why: "a redirect needs the request's Host",
            }),
        }
    }

    /// The text of fulcrum's answer (never sent for a client that went away).
    pub(crate) fn body(&self) -> String {
        match self {
            Refusal::NoRoute => "404 not found: no route for this request\n".to_owned(),
            Refusal::NoBackend(_) => {
                "503 service unavailable: no backend could take the request\n".to_owned()
            }
            Refusal::Queue(..) => {
                "503 service unavailable: every backend is busy; try again later\n".to_owned()
            }
            Refusal::Backend(..) | Refusal::BackendBroke(..) => {
                "502 bad gateway: the backend failed\n".to_owned()
            }
            Refusal::GrpcOverHttp1(_) => {
                "502 bad gateway: gRPC needs HTTP/2 to the backend\n".to_owned()
            }
            Refusal::Timeout => {
                "504 gateway timeout: the backend did not answer in time\n".to_owned()
            }
            Refusal::Bad(r) => format!("{} {}\n", r.status, r.why),
            Refusal::ClientBody(_) | Refusal::BadBody(_) => {
                "400 bad request: malformed request body\n".to_owned()
            }
            Refusal::ClientGone => String::new(),
            Refusal::Stalled(_) => {
                "408 request timeout: the request body stopped arriving\n".to_owned()
            }
            Refusal::TooLarge(max) => {
                format!("413 content too large: the request body may have at most {max} bytes\n")
            }
            Refusal::Redirect(code, location) => {
                format!("{code}: {}\n", location.to_str().unwrap_or(""))
            }
            Refusal::RateLimited(limited) => format!(
                "429 too many requests: try again in {} s\n",
                limited.seconds()
            ),
        }
    }

    /// The body and content type of fulcrum's answer: the operator's page for its
    /// status (`error_pages`), else the text that says why.
    pub(crate) fn content(&self, pages: &ErrorPages) -> (Bytes, &'static str) {
        match pages.get(&self.status().as_u16()) {
            Some(page) => (page.body.clone(), page.content_type),
            None => (Bytes::from(self.body()), "text/plain; charset=utf-8"),
        }
    }

    /// fulcrum's answer: plain text (or the operator's page), or for a gRPC call
    /// the gRPC status a client would map this HTTP status to.
    pub(crate) fn response(&self, grpc: bool, pages: &ErrorPages) -> Response<ProxyBody> {
        if grpc {
            let code = grpc::Code::from_http(self.status());
            return grpc::response(code, &self.to_string());
        }
        let (body, content_type) = self.content(pages);
        let mut response = Response::new(ProxyBody::text(body));
        *response.status_mut() = self.status();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(location) = self.location() {
            response
                .headers_mut()
                .insert(header::LOCATION, location.clone());
        }
        if let Some((policy, now)) = self.rate_fields() {
            for (name, value) in [("ratelimit-policy", policy), ("ratelimit", now)] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    response
                        .headers_mut()
                        .insert(http::HeaderName::from_static(name), value);
                }
            }
        }
        if self.closes() {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// RFC 9110 §10.2.3: when to come back after a full queue, in seconds. A wait
    /// as long as the queue's (at least a second), or a second when it overflowed.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::Queue(_, Full::Timeout(t)) => Some(t.as_secs().max(1)),
            Refusal::Queue(_, Full::Overflow) => Some(1),
            Refusal::RateLimited(limited) => Some(limited.seconds()),
            _ => None,
        }
    }

    /// A failure of fulcrum or a backend (logged at warn), not of the client.
    pub(crate) fn is_server_side(&self) -> bool {
        matches!(
            self,
            Refusal::NoBackend(_)
                | Refusal::Queue(..)
                | Refusal::Backend(..)
                | Refusal::BackendBroke(..)
                | Refusal::Timeout
                | Refusal::GrpcOverHttp1(_)
        )
    }

    /// Whether the connection cannot carry another request after this answer:
    /// the client's body was left half read.
    pub(crate) fn closes(&self) -> bool {
        matches!(
            self,
            Refusal::ClientBody(_)
                | Refusal::Stalled(_)
                | Refusal::TooLarge(_)
                | Refusal::ClientGone
                | Refusal::BadBody(_)
        )
    }
}

/// Whether a client body error means the client closed mid-body (rather than
/// sending something malformed).
fn client_went_away(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(inner) = s.downcast_ref::<hyper::Error>() {
            if inner.is_incomplete_message() || inner.is_closed() || inner.is_canceled() {
                return true;
            }
        }
        if s.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            )
        }) {
            return true;
        }
        source = s.source();
    }
    false
}
