//! Header rewriting between client and backend: hop-by-hop headers removed (RFC
//! 9110 §7.6.1), the X-Forwarded-* and Forwarded (RFC 7239) headers set, and the
//! operator's add/remove lists applied.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The operator's `[listener.headers]`.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    pub request_add: Vec<(HeaderName, HeaderValue)>,
    pub request_remove: Vec<HeaderName>,
    pub response_add: Vec<(HeaderName, HeaderValue)>,
    pub response_remove: Vec<HeaderName>,
}

impl Rewrite {
    pub fn request(&self, headers: &mut HeaderMap) {
        apply(headers, &self.request_remove, &self.request_add);
    }

    pub fn response(&self, headers: &mut HeaderMap) {
        apply(headers, &self.response_remove, &self.response_add);
    }
}

fn apply(headers: &mut HeaderMap, remove: &[HeaderName], add: &[(HeaderName, HeaderValue)]) {
    for name in remove {
        headers.remove(name);
    }
    for (name, value) in add {
        headers.insert(name.clone(), value.clone());
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1): never
/// forwarded. `upgrade` is handled by the caller for Upgrade requests. `Trailer`
/// is not among them: it names the message's trailer fields, end to end (RFC 9110
/// §6.6.2), and hyper sends on only the trailer fields it names.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether the client's `TE` says it accepts trailers (RFC 9110 §10.1.4): then
/// fulcrum, which passes trailers on, says the same to the backend.
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// Removes the hop-by-hop headers, including any that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (standard ones compare as small integers) finds
    // which are present: most messages carry none, or only `Connection`, and a
    // hashed removal of each absent name would cost more than the pass.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // HOP_BY_HOP[0] is `Connection`: the names it lists go too.
    if present & 1 != 0 {
        let named: Vec<HeaderName> = connection_options(headers)
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .filter(|name| !HOP_BY_HOP.contains(name))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// What the forwarding headers say about one client, worked out once per
/// connection rather than per request.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client's IP, as X-Forwarded-For carries it.
    ip: HeaderValue,
    /// `for=...` as Forwarded carries it (RFC 7239 §6: IPv6 bracketed and quoted).
    node: String,
    /// The Forwarded element of the connection's first request, by the proto and
    /// host it had: the requests after it on a keep-alive connection nearly always name
    /// the same one.
    element: OnceLock<(&'static str, Option<HeaderValue>, HeaderValue)>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        // Once per connection, so by hand for IPv4: `Display` took as long as
        // the rest of a short request's own work.
        let (text, node) = match addr.ip() {
            IpAddr::V4(v4) => {
                let mut text = String::with_capacity(15);
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push('.');
                    }
                    push_decimal(&mut text, octet);
                }
                let node = ["for=", &text].concat();
                (text, node)
            }
            IpAddr::V6(v6) => {
                let text = v6.to_string();
                let node = ["for=\"[", &text, "]\""].concat();
                (text, node)
            }
        };
        Client {
            ip: HeaderValue::from_str(&text)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            node,
            element: OnceLock::new(),
        }
    }

    /// The client's IP as X-Forwarded-For carries it.
    pub(crate) fn ip(&self) -> &[u8] {
        self.ip.as_bytes()
    }

    /// `for=...` as the Forwarded element carries the client.
    pub(crate) fn node(&self) -> &[u8] {
        self.node.as_bytes()
    }

    /// `for=...;proto=...;host=...` for a request from this client.
    fn element(&self, proto: &'static str, host: Option<&HeaderValue>) -> Option<HeaderValue> {
        if let Some((for_proto, for_host, value)) = self.element.get() {
            if *for_proto == proto && for_host.as_ref() == host {
                return Some(value.clone());
            }
        }
        let mut element = String::with_capacity(64);
        element.push_str(&self.node);
        element.push_str(";proto=");
        element.push_str(proto);
        // A host that is not a plain token would need quoting; it is left out.
        let host = host.filter(|h| h.as_bytes().iter().all(|&b| is_token_byte(b)));
        if let Some(host) = host.and_then(|h| h.to_str().ok()) {
            element.push_str(";host=");
            element.push_str(host);
        }
        let value = HeaderValue::from_maybe_shared(Bytes::from(element)).ok()?;
        let _ = self.element.set((proto, host.cloned(), value.clone()));
        Some(value)
    }
}

/// Appends `n` in decimal.
fn push_decimal(text: &mut String, n: u8) {
    if n >= 100 {
        text.push(char::from(b'0' + n / 100));
    }
    if n >= 10 {
        text.push(char::from(b'0' + n / 10 % 10));
    }
    text.push(char::from(b'0' + n % 10));
}

/// What the proxy knows of the client side of a request.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub client: &'a Client,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The host the client asked for, port included, if it named one.
    pub host: Option<&'a HeaderValue>,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sets X-Forwarded-For/-Proto/-Host and Forwarded. With `trust` the client's
/// chain is kept and the client appended to it (the client is a proxy we trust);
/// without, whatever the client sent is replaced, so it cannot forge a source.
pub fn forwarded(headers: &mut HeaderMap, origin: &Origin<'_>, trust: bool) {
    let element = origin.client.element(origin.proto, origin.host);
    let joined = |headers: &HeaderMap, name: &HeaderName| -> Option<String> {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let earlier =
        |headers: &HeaderMap, name: &HeaderName| trust.then(|| joined(headers, name)).flatten();
    match earlier(headers, &X_FORWARDED_FOR) {
        Some(before) => {
            let ip = origin.client.ip.to_str().unwrap_or("unknown");
            set(headers, X_FORWARDED_FOR, format!("{before}, {ip}"));
        }
        None => {
            headers.insert(X_FORWARDED_FOR, origin.client.ip.clone());
        }
    }
    match (earlier(headers, &header::FORWARDED), element) {
        (Some(before), Some(element)) => {
            let element = element.to_str().unwrap_or_default();
            set(headers, header::FORWARDED, format!("{before}, {element}"));
        }
        (None, Some(element)) => {
            headers.insert(header::FORWARDED, element);
        }
        (_, None) => {
            headers.remove(header::FORWARDED);
        }
    }
    let keep = |headers: &HeaderMap, name: &HeaderName| trust && headers.contains_key(name);
    if !keep(headers, &X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(origin.proto));
    }
    if !keep(headers, &X_FORWARDED_HOST) {
        match origin.host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host.clone());
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }
}

/// Sets a header to a value built here (no copy); drops it if the value is not a
/// valid header value, which only a malformed client value can cause.
fn set(headers: &mut HeaderMap, name: HeaderName, value: String) {
    match HeaderValue::from_maybe_shared(Bytes::from(value)) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// A byte of a host that can go into `Forwarded` unquoted.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._:".contains(&b)
}

/// Whether a request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_options(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The options every `Connection` line lists (RFC 9110 §7.6.1), trimmed.
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

#[cfg(test)]
mod tests;
