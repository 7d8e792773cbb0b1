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
        self.value(headers).map(fnv1a)
    }

    /// The key's value in this request, when the request has the key.
    pub fn value<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        match self {
            RequestKey::Header(name) => headers.get(name).map(HeaderValue::as_bytes),
            RequestKey::Cookie(name) => cookie(headers, name).map(str::as_bytes),
        }
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
mod tests;
