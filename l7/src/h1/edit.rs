//! The heads fulcrum's own HTTP/1 path sends on: the received field lines copied
//! through as bytes, hop-by-hop fields dropped (RFC 9110 §7.6.1), and the
//! forwarding fields and the operator's `[listener.headers]` spliced in; no map.

use http::header::HeaderName;
use httparse::Header;

use super::head::{trim, Field, Fields};
use crate::rewrite::{is_token_byte, Rewrite};

/// What the forwarding fields say about a request's client.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The client's IP, as X-Forwarded-For carries it.
    pub ip: &'a [u8],
    /// `for=...` as the Forwarded element carries the client (RFC 7239 §6).
    pub node: &'a [u8],
    pub proto: &'static str,
    /// Keep (and append to) the client's chain.
    pub trust: bool,
}

/// A request head as the backend gets it.
#[derive(Debug)]
pub struct RequestEdit<'a> {
    pub method: &'a str,
    /// Origin form: path and query.
    pub path: &'a str,
    /// The one authority the request was routed by, sent as Host (and named in
    /// the forwarding fields).
    pub host: Option<&'a [u8]>,
    /// A route's `set_host`: sent as Host instead.
    pub set_host: Option<&'a [u8]>,
    pub forwarding: Forwarding<'a>,
    /// The protocol an Upgrade request asks for.
    pub upgrade: Option<&'a [u8]>,
    /// The client said `TE: trailers`: so does fulcrum, which carries them.
    pub trailers: bool,
    pub rewrite: &'a Rewrite,
    /// Which fields the client's head has.
    pub fields: Fields,
}

/// The options a head's `Connection` lines list, found once per head rather than
/// once per field: the first few kept, the rest looked up again if ever needed.
struct Listed<'h> {
    first: [&'h [u8]; 4],
    len: usize,
    headers: Option<&'h [Header<'h>]>,
}

impl<'h> Listed<'h> {
    fn new(headers: &'h [Header<'h>], fields: Fields) -> Listed<'h> {
        let mut listed = Listed {
            first: [&[]; 4],
            len: 0,
            headers: None,
        };
        if !fields.has(Field::Connection) {
            return listed;
        }
        for option in connection_options(headers) {
            match listed.first.get_mut(listed.len) {
                Some(slot) => {
                    *slot = option;
                    listed.len += 1;
                }
                None => {
                    listed.headers = Some(headers);
                    break;
                }
            }
        }
        listed
    }

    fn contains(&self, name: &str) -> bool {
        let name = name.as_bytes();
        self.first[..self.len]
            .iter()
            .any(|o| o.eq_ignore_ascii_case(name))
            || self
                .headers
                .is_some_and(|h| connection_options(h).any(|o| o.eq_ignore_ascii_case(name)))
    }
}

/// Whether a field is hop-by-hop, or one that `Connection` lists.
fn hop_by_hop(name: &str, field: Field, listed: &Listed<'_>) -> bool {
    field.hop_by_hop() || listed.contains(name)
}

/// The options every `Connection` line lists, trimmed.
pub fn connection_options<'h>(headers: &'h [Header<'_>]) -> impl Iterator<Item = &'h [u8]> {
    headers
        .iter()
        .filter(|h| Field::of(h.name) == Field::Connection)
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(trim)
}

fn named(names: &[HeaderName], name: &str) -> bool {
    names.iter().any(|n| name.eq_ignore_ascii_case(n.as_str()))
}

fn added(add: &[(HeaderName, http::HeaderValue)], name: &str) -> bool {
    add.iter()
        .any(|(n, _)| name.eq_ignore_ascii_case(n.as_str()))
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Starts a forwarding field: its name, then each element of the chain kept from
/// the client followed by ", "; the caller appends this hop's own.
fn chain_start(out: &mut Vec<u8>, name: &[u8], earlier: &[&[u8]]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    for element in earlier {
        out.extend_from_slice(element);
        out.extend_from_slice(b", ");
    }
}

/// Writes the request head for the backend to `out`.
pub fn request_head(out: &mut Vec<u8>, edit: &RequestEdit<'_>, headers: &[Header<'_>]) {
    let fw = &edit.forwarding;
    out.extend_from_slice(edit.method.as_bytes());
    out.push(b' ');
    if edit.path.starts_with('?') {
        out.push(b'/');
    }
    out.extend_from_slice(edit.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = edit.set_host.or(edit.host) {
        line(out, b"host", host);
    }
    // With `trust`, the chains the client sent are kept and appended to.
    let mut chain_xff: Vec<&[u8]> = Vec::new();
    let mut chain_fwd: Vec<&[u8]> = Vec::new();
    let (mut kept_proto, mut kept_host) = (false, false);
    let listed = Listed::new(headers, edit.fields);
    for h in headers {
        let name = h.name;
        let field = Field::of(name);
        let forwarding = match field {
            Field::XForwardedFor | Field::Forwarded => {
                let chain = match field {
                    Field::XForwardedFor => &mut chain_xff,
                    _ => &mut chain_fwd,
                };
                if fw.trust && !trim(h.value).is_empty() {
                    chain.push(trim(h.value));
                }
                true
            }
            Field::XForwardedProto => {
                kept_proto |= fw.trust;
                !fw.trust
            }
            Field::XForwardedHost => {
                kept_host |= fw.trust;
                !fw.trust
            }
            _ => false,
        };
        if forwarding
            || field == Field::Host
            || hop_by_hop(name, field, &listed)
            || named(&edit.rewrite.request_remove, name)
            || added(&edit.rewrite.request_add, name)
        {
            continue;
        }
        line(out, name.as_bytes(), h.value);
    }
    if edit.trailers {
        line(out, b"te", b"trailers");
    }
    if let Some(protocol) = edit.upgrade {
        line(out, b"connection", b"upgrade");
        line(out, b"upgrade", protocol);
    }
    chain_start(out, b"x-forwarded-for", &chain_xff);
    out.extend_from_slice(fw.ip);
    out.extend_from_slice(b"\r\n");
    // Written in place each time: nothing is kept per connection for it.
    chain_start(out, b"forwarded", &chain_fwd);
    out.extend_from_slice(fw.node);
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(fw.proto.as_bytes());
    // A host that is not a plain token would need quoting; it is left out.
    if let Some(host) = edit.host.filter(|h| h.iter().all(|&b| is_token_byte(b))) {
        out.extend_from_slice(b";host=");
        out.extend_from_slice(host);
    }
    out.extend_from_slice(b"\r\n");
    if !kept_proto {
        line(out, b"x-forwarded-proto", fw.proto.as_bytes());
    }
    if let (false, Some(host)) = (kept_host, edit.host) {
        line(out, b"x-forwarded-host", host);
    }
    for (name, value) in &edit.rewrite.request_add {
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// A response head as the client gets it.
#[derive(Debug)]
pub struct ResponseEdit<'a> {
    pub status: u16,
    pub reason: &'a [u8],
    /// The connection closes after this response: say so.
    pub close: bool,
    /// An HTTP/1.0 client kept alive: say so, or it takes the response as the last.
    pub keep_alive: bool,
    /// The body goes out decoded (chunked to an HTTP/1.0 client): no
    /// Transfer-Encoding.
    pub decoded: bool,
    /// A 101 to an Upgrade request: its Upgrade and `Connection: upgrade` stay.
    pub upgraded: bool,
    /// A sticky cookie that pins the client to the backend that answered.
    pub set_cookie: Option<&'a [u8]>,
    pub rewrite: &'a Rewrite,
    /// Which fields the backend's head has.
    pub fields: Fields,
}

/// Writes the response head for the client to `out`.
pub fn response_head(out: &mut Vec<u8>, edit: &ResponseEdit<'_>, headers: &[Header<'_>]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let status = edit.status;
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(edit.reason);
    out.extend_from_slice(b"\r\n");
    let listed = Listed::new(headers, edit.fields);
    for h in headers {
        let name = h.name;
        let field = Field::of(name);
        let upgrade_field = edit.upgraded && field == Field::Upgrade;
        if edit.decoded && field == Field::TransferEncoding {
            continue;
        }
        if !upgrade_field
            && (hop_by_hop(name, field, &listed)
                || named(&edit.rewrite.response_remove, name)
                || added(&edit.rewrite.response_add, name))
        {
            continue;
        }
        line(out, name.as_bytes(), h.value);
    }
    if edit.upgraded {
        line(out, b"connection", b"upgrade");
    } else if edit.close {
        line(out, b"connection", b"close");
    } else if edit.keep_alive {
        line(out, b"connection", b"keep-alive");
    }
    if let Some(cookie) = edit.set_cookie {
        line(out, b"set-cookie", cookie);
    }
    for (name, value) in &edit.rewrite.response_add {
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}
