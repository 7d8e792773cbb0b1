//! What a request head must pass before it is routed, and the one authority it is
//! routed and forwarded by: whatever the client sent, routing and the backend see
//! the same host (RFC 9112 §3.2 and §3.2.2, RFC 9113 §8.3.1), and a message whose
//! framing fulcrum cannot forward unchanged is refused, not rewritten.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};

/// A request fulcrum answers itself: the status and why, for the body and log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub why: &'static str,
}

const fn refuse(status: StatusCode, why: &'static str) -> Refused {
    Refused { status, why }
}

/// RFC 9112 §3.2.4: the asterisk form of a request target is a server-wide
/// OPTIONS request, and nothing else.
pub const ASTERISK: &str = "the request target * is for OPTIONS only";

/// Whether an Upgrade field value asks for HTTP/2 (`h2c`, or `h2`, in any case,
/// with or without a version). Such an upgrade is never passed on: after the
/// backend's 101 the client would speak HTTP/2 to that backend directly, every
/// request on it past fulcrum's routing, rules and limits ("h2c smuggling"). RFC
/// 9113 §3.1 deprecates the h2c upgrade, and `h2` was never one (RFC 7540 §3.3);
/// the request is served as plain HTTP/1.1, which RFC 9110 §7.8 allows.
pub fn upgrades_to_http2(protocols: &[u8]) -> bool {
    protocols.split(|&b| b == b',').any(|p| {
        let p = p.trim_ascii();
        let name = p.split(|&b| b == b'/').next().unwrap_or(p).trim_ascii();
        name.eq_ignore_ascii_case(b"h2c") || name.eq_ignore_ascii_case(b"h2")
    })
}

/// Checks the head of `parts` and settles its authority: the request target's
/// authority when it has one (absolute form, or HTTP/2 `:authority`), which then
/// replaces any Host header; else the one Host header. Returns `None` only for a
/// request that may lack both (HTTP/1.0, HTTP/2 without `:authority`).
pub fn authority(parts: &mut http::request::Parts) -> Result<Option<HeaderValue>, Refused> {
    if parts.method == Method::CONNECT {
        // A tunnel to wherever the client names is not what a reverse proxy does.
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not served here",
        ));
    }
    // RFC 9112 §3.2, RFC 3986 §2: a target is ASCII, anything else
    // percent-encoded; the http crate lets 8-bit bytes through, a backend may read
    // them its own way.
    if parts
        .uri
        .path_and_query()
        .is_some_and(|p| !p.as_str().is_ascii())
    {
        return Err(refuse(StatusCode::BAD_REQUEST, "invalid request target"));
    }
    if parts.uri.path() == "*" && parts.method != Method::OPTIONS {
        return Err(refuse(StatusCode::BAD_REQUEST, ASTERISK));
    }
    framing(&parts.headers)?;
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(refuse(StatusCode::BAD_REQUEST, "more than one Host header"));
    }
    if let Some(target) = parts.uri.authority() {
        // Only the absolute form and HTTP/2 get here: one copy into a header value.
        let value = HeaderValue::from_str(target.as_str())
            .map_err(|_| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid host in the request target",
                )
            })
            .and_then(|v| valid_authority(&v))?;
        // RFC 9112 §3.2.2: the target's authority wins over Host; RFC 9113 §8.3.1:
        // the :authority is what an intermediary forwards as Host.
        parts.headers.insert(header::HOST, value.clone());
        return Ok(Some(value));
    }
    match host {
        Some(h) => valid_authority(&h).map(Some),
        // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
        None if parts.version == Version::HTTP_11 => Err(refuse(
            StatusCode::BAD_REQUEST,
            "HTTP/1.1 request without a Host header",
        )),
        None => Ok(None),
    }
}

/// `uri-host [ ":" port ]`, nothing else: no userinfo, no path, not empty. Checked
/// in place, byte by byte (RFC 3986 §3.2: unreserved, sub-delims, `%`, `:` and the
/// brackets of an IP literal), as it runs on every request; the value is the one
/// received, not a copy.
fn valid_authority(value: &HeaderValue) -> Result<HeaderValue, Refused> {
    if !valid_host(value.as_bytes()) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid host in Host or the request target",
        ));
    }
    Ok(value.clone())
}

/// `uri-host [ ":" port ]` as bytes (see `valid_authority`).
pub fn valid_host(bytes: &[u8]) -> bool {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(b);
    !bytes.is_empty() && bytes[0] != b':' && bytes.iter().all(allowed)
}

/// Transfer codings fulcrum can forward: `chunked` alone, never beside a
/// Content-Length (RFC 9112 §6.1, §6.3).
fn framing(headers: &HeaderMap) -> Result<(), Refused> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_none() {
        return Ok(());
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        // §6.3: a sign of smuggling; refused rather than one length picked.
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "both Transfer-Encoding and Content-Length",
        ));
    }
    let mut chunked = 0;
    for value in codings {
        let Ok(text) = value.to_str() else {
            return Err(refuse(StatusCode::BAD_REQUEST, "invalid Transfer-Encoding"));
        };
        for coding in text.split(',').map(str::trim) {
            if coding.eq_ignore_ascii_case("chunked") {
                chunked += 1;
            } else {
                // §6.1: a coding the server does not understand is answered 501;
                // dropping it would forward a body the backend cannot read.
                return Err(refuse(
                    StatusCode::NOT_IMPLEMENTED,
                    "transfer codings other than chunked are not supported",
                ));
            }
        }
    }
    if chunked != 1 {
        return Err(refuse(StatusCode::BAD_REQUEST, "invalid Transfer-Encoding"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(build: http::request::Builder) -> http::request::Parts {
        build.body(()).expect("request").into_parts().0 // ok: test helper
    }

    #[test]
    fn http2_is_found_among_upgrade_protocols() {
        for asks in ["h2c", "H2C", " websocket , h2c/1.0", "h2", "foo, H2 / 2"] {
            assert!(upgrades_to_http2(asks.as_bytes()), "{asks}");
        }
        for other in ["websocket", "h2cx", "xh2c", "", "TLS/1.2, websocket"] {
            assert!(!upgrades_to_http2(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn the_target_authority_replaces_host() {
        let mut p = parts(
            Request::get("http://public.test/x")
                .header("host", "admin.test")
                .version(Version::HTTP_11),
        );
        assert_eq!(
            authority(&mut p),
            Ok(Some(HeaderValue::from_static("public.test")))
        );
        assert_eq!(p.headers.get_all("host").iter().count(), 1);
        assert_eq!(p.headers["host"], "public.test");
    }

    #[test]
    fn refuses_what_has_no_single_authority() {
        let two = parts(Request::get("/").header("host", "a").header("host", "b"));
        let none = parts(Request::get("/").version(Version::HTTP_11));
        let userinfo = parts(Request::get("/").header("host", "u@a"));
        let empty = parts(Request::get("/").header("host", ""));
        for mut p in [two, none, userinfo, empty] {
            assert_eq!(
                authority(&mut p).map_err(|r| r.status),
                Err(StatusCode::BAD_REQUEST)
            );
        }
        let mut old = parts(Request::get("/").version(Version::HTTP_10));
        assert_eq!(authority(&mut old), Ok(None));
    }

    #[test]
    fn refuses_framing_it_cannot_forward_and_connect() {
        let status = |b: http::request::Builder| {
            authority(&mut parts(b.header("host", "a"))).map_err(|r| r.status)
        };
        assert_eq!(
            status(Request::post("/").header("transfer-encoding", "gzip, chunked")),
            Err(StatusCode::NOT_IMPLEMENTED)
        );
        assert_eq!(
            status(
                Request::post("/")
                    .header("transfer-encoding", "chunked")
                    .header("content-length", "5")
            ),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(Request::post("/").header("transfer-encoding", "chunked, chunked")),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status(Request::post("/").header("transfer-encoding", "identity, chunked")),
            Err(StatusCode::NOT_IMPLEMENTED)
        );
        assert!(status(Request::post("/").header("transfer-encoding", "Chunked")).is_ok());
        assert_eq!(
            status(Request::builder().method("CONNECT").uri("a:443")),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            status(Request::builder().method("PRI").uri("*")),
            Err(StatusCode::BAD_REQUEST)
        );
        assert!(status(Request::builder().method("OPTIONS").uri("*")).is_ok());
    }
}
