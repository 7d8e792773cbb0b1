//! One health probe of one backend: TCP connect (with an optional payload
//! exchange), HTTP GET with a status range, a UDP datagram exchange, or a probe
//! made by the caller (`Probe::External`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::{Check, Probe};
use crate::proxy_protocol::{encode_local, Version};

/// Most bytes read while looking for an expected reply or a status line.
const MAX_READ: usize = 16 * 1024;

/// Why a probe failed, for the log line of a health transition.
#[derive(Debug)]
pub enum Failure {
    Timeout(Duration),
    Io(io::Error),
    /// The reply did not contain the expected bytes.
    Mismatch,
    /// HTTP: no parsable status line.
    BadResponse,
    /// HTTP: a status outside the expected range.
    Status(u16),
    /// An external probe's reason.
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout(t) => write!(f, "no answer within {t:?}"),
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Mismatch => f.write_str("reply does not contain the expected bytes"),
            Failure::BadResponse => f.write_str("no HTTP status line in the reply"),
            Failure::Status(s) => write!(f, "HTTP status {s} outside the expected range"),
            Failure::Other(why) => f.write_str(why),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// Probes `addr` once, within the check's timeout.
pub async fn probe(addr: SocketAddr, check: &Check) -> Result<(), Failure> {
    let timeout = check.timeout;
    let local = check.proxy.map(encode_local).unwrap_or_default();
    let run = async {
        match &check.probe {
            Probe::Tcp { send, expect } => {
                tcp(addr, &local, send.as_deref(), expect.as_deref()).await
            }
            Probe::Http { path, host, status } => {
                http(addr, &local, path, host.as_deref(), status).await
            }
            Probe::External(external) => external.0.probe(addr).await.map_err(Failure::Other),
            Probe::Udp { send, expect } => {
                // Datagrams carry version 2 only.
                let local = check
                    .proxy
                    .map(|_| encode_local(Version::V2))
                    .unwrap_or_default();
                udp(addr, &[local.as_slice(), send].concat(), expect.as_deref()).await
            }
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or(Err(Failure::Timeout(timeout)))
}

async fn tcp(
    addr: SocketAddr,
    local: &[u8],
    send: Option<&[u8]>,
    expect: Option<&[u8]>,
) -> Result<(), Failure> {
    let mut stream = TcpStream::connect(addr).await?;
    let first = [local, send.unwrap_or_default()].concat();
    if !first.is_empty() {
        stream.write_all(&first).await?;
    }
    match expect {
        Some(expect) => read_until(&mut stream, |got| contains(got, expect))
            .await
            .map(|_| ()),
        None => Ok(()),
    }
}

async fn http(
    addr: SocketAddr,
    local: &[u8],
    path: &str,
    host: Option<&str>,
    status: &std::ops::RangeInclusive<u16>,
) -> Result<(), Failure> {
    let mut stream = TcpStream::connect(addr).await?;
    let host = host.map_or_else(|| addr.to_string(), str::to_owned);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fulcrum-health\r\nConnection: close\r\n\r\n");
    stream
        .write_all(&[local, request.as_bytes()].concat())
        .await?;
    let head = read_until(&mut stream, |got| got.windows(2).any(|w| w == b"\r\n")).await?;
    let code = status_code(&head).ok_or(Failure::BadResponse)?;
    if status.contains(&code) {
        Ok(())
    } else {
        Err(Failure::Status(code))
    }
}

async fn udp(addr: SocketAddr, send: &[u8], expect: Option<&[u8]>) -> Result<(), Failure> {
    let local: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(addr).await?;
    socket.send(send).await?;
    let mut buf = vec![0u8; 65_536];
    let n = socket.recv(&mut buf).await?;
    match expect {
        Some(expect) if !contains(&buf[..n], expect) => Err(Failure::Mismatch),
        _ => Ok(()),
    }
}

/// Reads until `done` says so, end of stream, or [`MAX_READ`] bytes.
async fn read_until(
    stream: &mut TcpStream,
    done: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, Failure> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 2048];
    while !done(&got) {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || got.len() >= MAX_READ {
            return Err(Failure::Mismatch);
        }
        got.extend_from_slice(&chunk[..n]);
    }
    Ok(got)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The status code of an HTTP/1.x status line: `HTTP/1.1 200 OK`.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    #[test]
    fn contains_finds_needles() {
        assert!(contains(b"+PONG\r\n", b"PONG"));
        assert!(!contains(b"+PON", b"PONG"));
        assert!(contains(b"x", b""));
    }
}
