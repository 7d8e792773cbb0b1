//! Header rewriting between client and backend: hop-by-hop headers removed (RFC
//! 9110 §7.6.1), the X-Forwarded-* and Forwarded (RFC 7239) headers set, and the
//! operator's add/remove lists applied.

use std::net::{IpAddr, SocketAddr};

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
/// forwarded. `upgrade` is handled by the caller for Upgrade requests.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the hop-by-hop headers, including any that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What the proxy knows of the client side of a request.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub client: SocketAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The host the client asked for, port included, if it named one.
    pub host: Option<&'a str>,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sets X-Forwarded-For/-Proto/-Host and Forwarded. With `trust` the client's
/// chain is kept and the client appended to it (the client is a proxy we trust);
/// without, whatever the client sent is replaced, so it cannot forge a source.
pub fn forwarded(headers: &mut HeaderMap, origin: &Origin<'_>, trust: bool) {
    let ip = origin.client.ip();
    let ip_text = ip.to_string();
    // RFC 7239 §6: IPv6 addresses are bracketed and the value quoted.
    let node = match ip {
        IpAddr::V4(_) => ip_text.clone(),
        IpAddr::V6(_) => format!("\"[{ip_text}]\""),
    };
    let mut element = format!("for={node};proto={}", origin.proto);
    if let Some(host) = origin.host.filter(|h| is_token_safe(h)) {
        element.push_str(";host=");
        element.push_str(host);
    }
    let chain = |existing: Option<String>, ours: &str| match existing {
        Some(before) if trust && !before.trim().is_empty() => format!("{before}, {ours}"),
        _ => ours.to_owned(),
    };
    let joined = |headers: &HeaderMap, name: &HeaderName| -> Option<String> {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let xff = chain(joined(headers, &X_FORWARDED_FOR), &ip_text);
    let fwd = chain(joined(headers, &header::FORWARDED), &element);
    set(headers, X_FORWARDED_FOR, &xff);
    set(headers, header::FORWARDED, &fwd);
    let keep = |headers: &HeaderMap, name: &HeaderName| trust && headers.contains_key(name);
    if !keep(headers, &X_FORWARDED_PROTO) {
        set(headers, X_FORWARDED_PROTO, origin.proto);
    }
    if !keep(headers, &X_FORWARDED_HOST) {
        match origin.host {
            Some(host) => set(headers, X_FORWARDED_HOST, host),
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        // Only reachable with a client value that was not valid to begin with.
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// A host that can go into `Forwarded` unquoted.
fn is_token_safe(host: &str) -> bool {
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
}

/// Whether a request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn origin(client: &str) -> Origin<'static> {
        Origin {
            client: client.parse().unwrap(),
            proto: "http",
            host: Some("example.com:8080"),
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn untrusted_chain_is_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        forwarded(&mut h, &origin("10.0.0.1:5000"), false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com:8080");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.1;proto=http;host=example.com:8080"
        );
    }

    #[test]
    fn trusted_chain_is_appended() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
        ]);
        forwarded(&mut h, &origin("[::1]:5000"), true);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, ::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";proto=http;host=example.com:8080"
        );
    }

    #[test]
    fn upgrade_detection() {
        assert!(is_upgrade(&map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn operator_lists_apply() {
        let rw = Rewrite {
            request_add: vec![(
                HeaderName::from_static("x-via"),
                HeaderValue::from_static("fulcrum"),
            )],
            request_remove: vec![HeaderName::from_static("x-debug")],
            ..Rewrite::default()
        };
        let mut h = map(&[("x-debug", "1"), ("x-via", "other")]);
        rw.request(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-via"], "fulcrum");
    }
}
