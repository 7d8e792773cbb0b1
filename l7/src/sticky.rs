//! Request keys: reading a cookie or header for `hash_key` and `sticky_cookie`, and
//! the opaque backend id a sticky cookie carries.

use std::net::SocketAddr;

use fulcrum_l4::balance::fnv1a;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// What a `hash` pool hashes in L7 mode, instead of the client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKey {
    Header(HeaderName),
    Cookie(String),
}

impl RequestKey {
    /// Parses `header:NAME` or `cookie:NAME`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Result<RequestKey, String>> {
        if let Some(name) = text.strip_prefix("header:") {
            return Some(
                HeaderName::from_bytes(name.trim().as_bytes())
                    .map(RequestKey::Header)
                    .map_err(|_| format!("invalid header name `{name}` in hash_key")),
            );
        }
        let name = text.strip_prefix("cookie:")?.trim();
        Some(if is_cookie_name(name) {
            Ok(RequestKey::Cookie(name.to_owned()))
        } else {
            Err(format!("invalid cookie name `{name}` in hash_key"))
        })
    }

    /// The key's hash in this request, when the request has the key.
    pub fn hash(&self, headers: &HeaderMap) -> Option<u64> {
        let value = match self {
            RequestKey::Header(name) => headers.get(name).map(HeaderValue::as_bytes),
            RequestKey::Cookie(name) => cookie(headers, name).map(str::as_bytes),
        }?;
        Some(fnv1a(value))
    }

    pub fn describe(&self) -> String {
        match self {
            RequestKey::Header(h) => format!("header:{h}"),
            RequestKey::Cookie(c) => format!("cookie:{c}"),
        }
    }
}

/// A cookie name as RFC 6265 §4.1.1 allows it (an HTTP token).
pub fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

/// The id a sticky cookie stores for a backend: a hash of its address, so the
/// cookie neither reveals the address nor changes when the pool is reordered.
pub fn backend_id(addr: SocketAddr) -> String {
    format!("{:016x}", fnv1a(addr.to_string().as_bytes()))
}

/// The `Set-Cookie` that pins a client to a backend for the browser session.
pub fn set_cookie(name: &str, addr: SocketAddr) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={}; Path=/; HttpOnly; SameSite=Lax",
        backend_id(addr)
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; FULCRUM=abc"));
        h.append(header::COOKIE, HeaderValue::from_static("b=\"2\""));
        assert_eq!(cookie(&h, "FULCRUM"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "FULC"), None);
    }

    #[test]
    fn keys_parse_and_hash() {
        let key = RequestKey::parse("header:X-User").unwrap().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(key.hash(&h), None);
        h.insert("x-user", HeaderValue::from_static("alice"));
        assert_eq!(key.hash(&h), key.hash(&h.clone()));
        assert!(RequestKey::parse("cookie:a b").unwrap().is_err());
        assert!(RequestKey::parse("source-ip").is_none());
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:9002".parse().unwrap();
        assert_eq!(backend_id(a), backend_id(a));
        assert_ne!(backend_id(a), backend_id(b));
        assert_eq!(backend_id(a).len(), 16);
    }
}
