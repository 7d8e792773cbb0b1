//! The PROXY protocol (HAProxy, "The PROXY protocol, versions 1 & 2",
//! haproxy.org/download/2.6/doc/proxy-protocol.txt): headers that tell a backend
//! who the real client is, written in front of a connection (or a UDP flow's first
//! datagram), and read from a load balancer in front of fulcrum. Pure and bounded.

use std::net::{IpAddr, SocketAddr};

mod accept;

pub use accept::{read_header, HEADER_TIMEOUT};

/// The v2 signature, §2.2.
const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// A v1 header is at most 107 bytes, CRLF included (§2.1).
pub const MAX_V1: usize = 107;
/// Largest v2 header accepted: the fixed 16 bytes and up to this much of addresses
/// and TLVs. The format allows 64 KiB; nothing real sends more than a few hundred.
pub const MAX_V2_BODY: usize = 2048;
/// Most bytes that may be needed to see a whole header.
pub const MAX_HEADER: usize = 16 + MAX_V2_BODY;

/// Which version to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" => Ok(Version::V1),
            "v2" => Ok(Version::V2),
            other => Err(format!(
                "unknown PROXY protocol version `{other}` (expected \"v1\" or \"v2\")"
            )),
        }
    }
}

/// What is being proxied, for the v2 family byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Stream,
    Datagram,
}

/// The header for a connection from `client` to `local` (fulcrum's address the
/// client reached). Addresses of mixed families are sent as IPv6 (mapped).
pub fn encode(version: Version, client: SocketAddr, local: SocketAddr, t: Transport) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    match version {
        Version::V1 => {
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                client.ip(),
                local.ip(),
                client.port(),
                local.port()
            )
            .into_bytes()
        }
        Version::V2 => {
            let mut out = SIGNATURE.to_vec();
            out.push(0x21); // version 2, PROXY
            let (family, body) = match (client.ip(), local.ip()) {
                (IpAddr::V4(c), IpAddr::V4(l)) => {
                    let mut body = c.octets().to_vec();
                    body.extend_from_slice(&l.octets());
                    (0x10, body)
                }
                (c, l) => {
                    let mut body = v6(c).to_vec();
                    body.extend_from_slice(&v6(l));
                    (0x20, body)
                }
            };
            let proto = match t {
                Transport::Stream => 0x01,
                Transport::Datagram => 0x02,
            };
            out.push(family | proto);
            let len = body.len() + 4;
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend_from_slice(&body);
            out.extend_from_slice(&client.port().to_be_bytes());
            out.extend_from_slice(&local.port().to_be_bytes());
            out
        }
    }
}

/// A header that says "this connection is the proxy's own" (health checks).
pub fn encode_local(version: Version) -> Vec<u8> {
    match version {
        Version::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        Version::V2 => {
            let mut out = SIGNATURE.to_vec();
            out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
            out
        }
    }
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a.is_ipv4() == b.is_ipv4() {
        return (a, b);
    }
    let map =
        |s: SocketAddr| SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::from(v6(s.ip()))), s.port());
    (map(a), map(b))
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Could still become a header: read more.
    NeedMore,
    /// A header of `len` bytes; `client` is the real client, `None` for LOCAL and
    /// UNKNOWN (the proxy's own connection: use the connection's address).
    Header {
        len: usize,
        client: Option<SocketAddr>,
    },
}

/// Why the bytes are not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadHeader {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// Reads a v1 or v2 header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, BadHeader> {
    let v2_prefix = buf.len().min(SIGNATURE.len());
    if buf[..v2_prefix] == SIGNATURE[..v2_prefix] && !buf.is_empty() {
        return parse_v2(buf);
    }
    let v1_prefix = buf.len().min(6);
    if buf[..v1_prefix] == b"PROXY "[..v1_prefix] {
        return parse_v1(buf);
    }
    Err(BadHeader::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, BadHeader> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_V1 || buf.contains(&b'\n') {
            return Err(BadHeader::Malformed(
                "v1 header without CRLF within 107 bytes",
            ));
        }
        return Ok(Parsed::NeedMore);
    };
    if end + 2 > MAX_V1 {
        return Err(BadHeader::Malformed("v1 header longer than 107 bytes"));
    }
    let line = std::str::from_utf8(&buf[6..end])
        .map_err(|_| BadHeader::Malformed("v1 header is not text"))?;
    let mut words = line.split(' ');
    let family = words.next().ok_or(BadHeader::Malformed("v1 family"))?;
    if family == "UNKNOWN" {
        return Ok(Parsed::Header {
            len: end + 2,
            client: None,
        });
    }
    let parts: Vec<&str> = words.collect();
    let [src, _dst, sport, _dport] = parts[..] else {
        return Err(BadHeader::Malformed(
            "v1 header needs 4 fields after the family",
        ));
    };
    let ip: IpAddr = src
        .parse()
        .map_err(|_| BadHeader::Malformed("v1 source address"))?;
    let port: u16 = sport
        .parse()
        .map_err(|_| BadHeader::Malformed("v1 source port"))?;
    match (family, ip) {
        ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => {}
        _ => return Err(BadHeader::Malformed("v1 family does not match the address")),
    }
    Ok(Parsed::Header {
        len: end + 2,
        client: Some(SocketAddr::new(ip, port)),
    })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, BadHeader> {
    if buf.len() < 16 {
        return Ok(Parsed::NeedMore);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(BadHeader::Malformed("v2 version"));
    }
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if body_len > MAX_V2_BODY {
        return Err(BadHeader::Malformed("v2 header too long"));
    }
    let len = 16 + body_len;
    let Some(body) = buf.get(16..len) else {
        return Ok(Parsed::NeedMore);
    };
    match ver_cmd & 0x0F {
        0x0 => return Ok(Parsed::Header { len, client: None }), // LOCAL
        0x1 => {}
        _ => return Err(BadHeader::Malformed("v2 command")),
    }
    let client = match buf[13] >> 4 {
        0x0 => None, // AF_UNSPEC: keep the connection's address
        0x1 => {
            let a = body
                .get(..12)
                .ok_or(BadHeader::Malformed("v2 IPv4 addresses"))?;
            let ip: [u8; 4] = [a[0], a[1], a[2], a[3]];
            Some(SocketAddr::from((ip, u16::from_be_bytes([a[8], a[9]]))))
        }
        0x2 => {
            let a = body
                .get(..36)
                .ok_or(BadHeader::Malformed("v2 IPv6 addresses"))?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            Some(SocketAddr::from((ip, u16::from_be_bytes([a[32], a[33]]))))
        }
        // AF_UNIX: no IP to use.
        0x3 => None,
        _ => return Err(BadHeader::Malformed("v2 address family")),
    };
    Ok(Parsed::Header { len, client })
}

#[cfg(test)]
mod tests;
