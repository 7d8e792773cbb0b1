//! Raw HTTP/1 peers for hostile-input tests: a backend that records exactly the
//! bytes of each request it receives (framed by Content-Length or chunked, as a
//! strict origin server would) and answers `200 ok`, and a client that writes any
//! bytes and reads back the status of what comes back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub raw: Vec<u8>,
    /// The head's lines after the request line, as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    pub request_line: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A backend that records every complete request; `incomplete` counts
/// connections that closed in the middle of one.
pub struct Recorder {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Received>>>,
    pub incomplete: Arc<Mutex<usize>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let incomplete = Arc::new(Mutex::new(0));
        let (r, i) = (Arc::clone(&requests), Arc::clone(&incomplete));
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (r, i) = (Arc::clone(&r), Arc::clone(&i));
                thread::spawn(move || serve(stream, &r, &i));
            }
        });
        Recorder {
            addr,
            requests,
            incomplete,
        }
    }

    /// A recorder that serves at most `workers` connections at a time, as a
    /// backend with a fixed worker pool (PHP-FPM, a small NGINX) does: further
    /// connections wait, unread, until a worker is free.
    pub fn limited(workers: usize) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let incomplete = Arc::new(Mutex::new(0));
        let (tx, rx) = std::sync::mpsc::channel::<TcpStream>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..workers {
            let (r, i, rx) = (
                Arc::clone(&requests),
                Arc::clone(&incomplete),
                Arc::clone(&rx),
            );
            thread::spawn(move || loop {
                let next = rx.lock().expect("queue").recv();
                match next {
                    Ok(stream) => serve(stream, &r, &i),
                    Err(_) => return,
                }
            });
        }
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                if tx.send(stream).is_err() {
                    return;
                }
            }
        });
        Recorder {
            addr,
            requests,
            incomplete,
        }
    }

    pub fn taken(&self) -> Vec<Received> {
        std::mem::take(&mut *self.requests.lock().expect("requests"))
    }
}

fn serve(mut s: TcpStream, requests: &Mutex<Vec<Received>>, incomplete: &Mutex<usize>) {
    let mut buf = Vec::new();
    loop {
        match read_request(&mut s, &mut buf) {
            Ok(Some(req)) => {
                requests.lock().expect("requests").push(req);
                if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => return,
            Err(()) => {
                *incomplete.lock().expect("incomplete") += 1;
                return;
            }
        }
    }
}

/// Reads one request; `Ok(None)` on a clean close between requests, `Err` when
/// the connection ends (or is malformed) in the middle of one.
fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Received>, ()> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(s, buf)? {
            return if buf.is_empty() { Ok(None) } else { Err(()) };
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            (n.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut at = head_end;
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        loop {
            let size_end = line_end(s, buf, at)?;
            let line = String::from_utf8_lossy(&buf[at..size_end]).into_owned();
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| ())?;
            at = size_end + 2;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let end = line_end(s, buf, at)?;
                    let empty = end == at;
                    at = end + 2;
                    if empty {
                        break;
                    }
                }
                break;
            }
            while buf.len() < at + size + 2 {
                if !fill(s, buf)? {
                    return Err(());
                }
            }
            body.extend_from_slice(&buf[at..at + size]);
            if &buf[at + size..at + size + 2] != b"\r\n" {
                return Err(());
            }
            at += size + 2;
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| ())?;
        while buf.len() < at + len {
            if !fill(s, buf)? {
                return Err(());
            }
        }
        body.extend_from_slice(&buf[at..at + len]);
        at += len;
    }
    let raw: Vec<u8> = buf.drain(..at).collect();
    Ok(Some(Received {
        raw,
        headers,
        request_line,
        body,
    }))
}

/// Where the line starting at `at` ends (its CRLF), reading more as needed.
fn line_end(s: &mut TcpStream, buf: &mut Vec<u8>, at: usize) -> Result<usize, ()> {
    loop {
        if let Some(i) = find(&buf[at..], b"\r\n") {
            return Ok(at + i);
        }
        if !fill(s, buf)? {
            return Err(());
        }
    }
}

fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<bool, ()> {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(_) => Err(()),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes `bytes` to `addr` and returns the status of the first response (and
/// the whole of what came back), or `None` when the connection closed without one.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> (Option<u16>, String) {
    let mut s = TcpStream::connect(addr).expect("connect to fulcrum");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let deadline = Instant::now() + super::PATIENCE;
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // A whole response is in: enough (the connection may stay open).
                if complete(&got) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok());
    (status, text)
}

fn complete(got: &[u8]) -> bool {
    let Some(end) = find(got, b"\r\n\r\n") else {
        return false;
    };
    got.len() >= end + 4 + content_length(&String::from_utf8_lossy(&got[..end]))
}

/// The body length a message head declares by Content-Length (0 without one).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// The types of the HTTP/2 frames `bytes` holds (RFC 9113 §4.1), and how many
/// of its bytes whole frames took.
pub fn h2_frame_types(bytes: &[u8]) -> (Vec<u8>, usize) {
    let (mut at, mut types) = (0, Vec::new());
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        types.push(bytes[at + 3]);
        at += 9 + len;
    }
    (types, at)
}
