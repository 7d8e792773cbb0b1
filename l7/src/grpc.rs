//! gRPC as a proxy sees it (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md):
//! telling a gRPC request by its content type, its `grpc-timeout`, and fulcrum's
//! own failures answered as gRPC statuses (HTTP 200, Trailers-Only) rather than
//! text bodies a gRPC client cannot read.

use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::upstream::ProxyBody;

/// gRPC status codes fulcrum answers with (grpc/doc/statuscodes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unknown = 2,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Code {
    /// The gRPC code for an HTTP status a proxy answered with, as gRPC clients map
    /// them (grpc/doc/http-grpc-status-mapping.md).
    pub fn from_http(status: StatusCode) -> Code {
        match status.as_u16() {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            408 | 504 => Code::DeadlineExceeded,
            429 | 502 | 503 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// Whether a request is a gRPC call: `content-type: application/grpc` or
/// `application/grpc+FORMAT` (gRPC-Web is plain HTTP and is not one).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes) else {
        return false;
    };
    value.len() >= 16
        && value[..16].eq_ignore_ascii_case(b"application/grpc")
        && matches!(value.get(16), None | Some(b'+' | b';'))
}

/// The call's deadline from `grpc-timeout: 1*8DIGIT UNIT` (H, M, S, m, u, n); a
/// malformed one is ignored, as gRPC servers do.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `grpc-status` and `grpc-message` (percent-encoded, as the spec asks).
pub fn status_trailers(code: Code, message: &str) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(2);
    map.insert("grpc-status", HeaderValue::from(code as u16));
    if let Ok(message) = HeaderValue::from_str(&percent_encode(message)) {
        map.insert("grpc-message", message);
    }
    map
}

/// fulcrum's own answer to a gRPC call: Trailers-Only (HTTP 200, the status in
/// the headers, no body).
pub fn response(code: Code, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::text(""));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.extend(status_trailers(code, message));
    response
}

/// The `grpc-status` of a response or trailers, if it has one.
pub fn status_of(headers: &HeaderMap) -> Option<u16> {
    std::str::from_utf8(headers.get("grpc-status")?.as_bytes())
        .ok()?
        .parse()
        .ok()
}

/// Percent-encodes what is not printable ASCII, and `%` itself.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_static(value));
        map
    }

    #[test]
    fn grpc_requests_are_told_by_content_type() {
        assert!(is_grpc(&headers("content-type", "application/grpc")));
        assert!(is_grpc(&headers("content-type", "application/grpc+proto")));
        assert!(is_grpc(&headers("content-type", "Application/GRPC")));
        assert!(!is_grpc(&headers("content-type", "application/grpc-web")));
        assert!(!is_grpc(&headers("content-type", "application/json")));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn timeouts_parse_every_unit_and_refuse_malformed_ones() {
        let t = |v| timeout(&headers("grpc-timeout", v));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(t("123456789S"), None);
        assert_eq!(t("S"), None);
        assert_eq!(t("10x"), None);
        assert_eq!(t("-1S"), None);
    }

    #[test]
    fn own_answers_are_trailers_only() {
        let r = response(Code::Unavailable, "no backend: 100% down");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(status_of(r.headers()), Some(14));
        assert_eq!(r.headers()["grpc-message"], "no backend: 100%25 down");
    }
}
