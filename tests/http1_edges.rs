//! Edges of HTTP/1 exchanges where a backend answers out of the usual order:
//! `Expect: 100-continue` answered before or after the body, and a 101 nobody
//! asked for. On fulcrum's own HTTP/1 path (the default), which passes
//! `Expect` on to the backend; hyper's path answers 100 itself and reads the body
//! ahead (also what RFC 9110 §10.1.1 allows), so the `Expect` cases are the own
//! path's. The 101 and status lines without a readable reason phrase run on both,
//! as do interim answers to HTTP/1.0 clients and malformed answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use common::{Fulcrum, PATIENCE};

/// What the scripted backend does with a request.
#[derive(Clone, Copy)]
enum Script {
    /// Reads the body (Content-Length), then answers 100 and 200.
    ContinueAfterBody,
    /// Answers 401 as soon as it has the head, and never reads a body.
    RefuseBeforeBody,
    /// Answers 101 to anything.
    SwitchUnasked,
    /// Answers 101 to an Upgrade naming h2c (and then echoes: a tunnel), 200
    /// `plain` to anything else.
    SwitchToH2c,
    /// Answers with a body of `BIG` patterned bytes, or (`/short`) says so and
    /// closes halfway.
    Big,
    /// Answers 200 with no reason phrase (`/bare`) or one in obs-text.
    OddReason,
    /// `/interim`: a 102 before its 200; `/099`: a status below 100;
    /// `/bad-chunk`: a chunked body whose first size is no number.
    Odd,
}

/// A body large enough to be spliced.
const BIG: usize = 3 * 1024 * 1024 + 7;

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// A backend that follows `script` and records every request line it reads.
fn backend(script: Script) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&lines);
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let seen = Arc::clone(&seen);
            thread::spawn(move || serve(stream, script, &seen));
        }
    });
    (addr, lines)
}

fn serve(mut s: TcpStream, script: Script, seen: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_until_head(&mut s, &mut buf) else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let line = head.lines().next().unwrap_or("").to_owned();
        seen.lock().unwrap().push(line.clone());
        buf.drain(..end);
        if let Script::Big = script {
            let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
            let len = if line.contains("/short") {
                BIG / 2
            } else {
                BIG
            };
            out.extend((0..len).map(pattern));
            if s.write_all(&out).is_err() || line.contains("/short") {
                return;
            }
            continue;
        }
        let answer: &[u8] = match script {
            Script::ContinueAfterBody => {
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while buf.len() < len {
                    let mut more = [0u8; 4096];
                    match s.read(&mut more) {
                        Ok(n) if n > 0 => buf.extend_from_slice(&more[..n]),
                        _ => return,
                    }
                }
                buf.drain(..len);
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            }
            Script::RefuseBeforeBody => b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
            Script::OddReason if line.contains("/bare") => {
                b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"
            }
            Script::OddReason => b"HTTP/1.1 200 \xe9t\xe9\r\nContent-Length: 2\r\n\r\nok",
            Script::Odd if line.contains("/interim") => {
                b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            }
            Script::Odd if line.contains("/099") => {
                b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n"
            }
            Script::Odd => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
            }
            Script::Big => unreachable!("answered above"),
            Script::SwitchUnasked => {
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
            }
            Script::SwitchToH2c
                if head
                    .lines()
                    .any(|l| l.starts_with("upgrade:") && l.contains("h2c")) =>
            {
                let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n");
                let _ = std::io::copy(&mut s.try_clone().unwrap(), &mut s);
                return;
            }
            Script::SwitchToH2c => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain",
        };
        if s.write_all(answer).is_err() {
            return;
        }
    }
}

/// Reads into `buf` until it holds a whole head; where the head ends.
fn read_until_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut more = [0u8; 4096];
        match s.read(&mut more) {
            Ok(n) if n > 0 => buf.extend_from_slice(&more[..n]),
            _ => return None,
        }
    }
}

fn listener(backend: SocketAddr, engine: &str) -> Fulcrum {
    Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\nbody_read_timeout = \"1s\"\nhttp1_engine = \"{engine}\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [\"{backend}\"]\n"
    ))
}

/// What came back until a final response of the scripted backend ended, the
/// connection closed, or PATIENCE passed.
fn responses(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = Vec::new();
    let mut more = [0u8; 4096];
    loop {
        match s.read(&mut more) {
            Ok(n) if n > 0 => got.extend_from_slice(&more[..n]),
            _ => break,
        }
        let text = String::from_utf8_lossy(&got);
        if text.contains("\r\n\r\nok") || text.contains("Content-Length: 0\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn expect_100_continue_with_the_body_already_sent_is_answered_at_once() {
    let (addr, _) = backend(Script::ContinueAfterBody);
    let f = listener(addr, "fulcrum");
    // The body comes with the head, as clients do that do not wait for the 100.
    let mut c = TcpStream::connect(f.addr("web")).unwrap();
    c.write_all(
        b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    let text = responses(&mut c);
    assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
    assert!(!text.contains("408"), "{text}");
}

#[test]
fn a_final_answer_before_100_continue_closes_and_the_unsent_body_is_never_a_request() {
    let (addr, lines) = backend(Script::RefuseBeforeBody);
    let f = listener(addr, "fulcrum");
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    );
    let mut c = TcpStream::connect(f.addr("web")).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    let text = responses(&mut c);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    // The client sends its body anyway: it must not become a request.
    let _ = c.write_all(smuggled);
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    // A request through a new connection proves fulcrum is done with the first.
    let mut d = TcpStream::connect(f.addr("web")).unwrap();
    d.write_all(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let _ = responses(&mut d);
    let seen = lines.lock().unwrap().clone();
    assert!(
        seen.iter().all(|l| !l.contains("/smuggled")),
        "the body reached the backend as a request: {seen:?}"
    );
    assert!(seen.iter().any(|l| l.contains("/after")), "{seen:?}");
}

/// httparse gives no place in the head for an absent reason phrase or one in
/// obs-text: both are relayed with an empty one, and the worker goes on.
#[test]
fn a_status_line_without_a_readable_reason_is_relayed() {
    let (addr, _) = backend(Script::OddReason);
    for engine in ["fulcrum", "hyper"] {
        let f = listener(addr, engine);
        let mut c = TcpStream::connect(f.addr("web")).unwrap();
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut pending = Vec::new();
        for path in ["/bare", "/latin1", "/bare"] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
            c.write_all(request.as_bytes()).unwrap();
            let text = one_response(&mut c, &mut pending);
            assert!(text.starts_with("HTTP/1.1 200"), "{engine} {path}: {text}");
            assert!(text.ends_with("\r\n\r\nok"), "{engine} {path}: {text}");
        }
    }
}

#[test]
fn an_upgrade_to_h2c_is_never_passed_on() {
    // After a 101 the client would speak HTTP/2 to that backend directly, each
    // request past routing and rules ("h2c smuggling"): the request is served as
    // plain HTTP/1.1 instead, on a connection that stays usable.
    let (addr, _) = backend(Script::SwitchToH2c);
    for engine in ["fulcrum", "hyper"] {
        let f = listener(addr, engine);
        let mut c = TcpStream::connect(f.addr("web")).unwrap();
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        for upgrade in ["h2c", "websocket, H2C/1.0", "h2"] {
            let ask = format!(
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                 Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            );
            c.write_all(ask.as_bytes()).unwrap();
            let mut got = Vec::new();
            let mut more = [0u8; 4096];
            while !got.ends_with(b"plain") {
                match c.read(&mut more) {
                    Ok(n @ 1..) => got.extend_from_slice(&more[..n]),
                    _ => break,
                }
            }
            let text = String::from_utf8_lossy(&got);
            assert!(
                text.starts_with("HTTP/1.1 200") && text.ends_with("plain"),
                "{engine}, Upgrade: {upgrade}: {text}"
            );
        }
    }
}

#[test]
fn a_101_nobody_asked_for_is_a_bad_gateway() {
    let (addr, _) = backend(Script::SwitchUnasked);
    for engine in ["fulcrum", "hyper"] {
        let f = listener(addr, engine);
        let mut c = TcpStream::connect(f.addr("web")).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = Vec::new();
        let mut more = [0u8; 4096];
        while let Ok(n @ 1..) = c.read(&mut more) {
            got.extend_from_slice(&more[..n]);
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 502"), "{engine}: {text}");
    }
}

#[test]
fn a_large_body_of_known_length_arrives_intact_and_one_cut_short_is_not_passed_off_as_whole() {
    let (addr, _) = backend(Script::Big);
    let f = listener(addr, "fulcrum");
    let mut c = TcpStream::connect(f.addr("web")).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    // Twice on one connection: the backend's connection is clean after each.
    for _ in 0..2 {
        c.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut more = vec![0u8; 1 << 16];
        let body_at = loop {
            let n = c.read(&mut more).unwrap();
            assert!(n > 0, "closed before the head");
            got.extend_from_slice(&more[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        while got.len() < body_at + BIG {
            let n = c.read(&mut more).unwrap();
            assert!(n > 0, "closed after {} bytes", got.len() - body_at);
            got.extend_from_slice(&more[..n]);
        }
        let body = &got[body_at..];
        assert_eq!(body.len(), BIG, "bytes past the body");
        assert!(
            body.iter().enumerate().all(|(i, &b)| b == pattern(i)),
            "body corrupted"
        );
    }
    // Cut short by the backend: the client's connection closes, it does not wait.
    let mut d = TcpStream::connect(f.addr("web")).unwrap();
    d.set_read_timeout(Some(PATIENCE)).unwrap();
    d.write_all(b"GET /short HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let ended = d.read_to_end(&mut got);
    assert!(ended.is_ok(), "{ended:?}");
    assert!(got.len() < BIG, "{} bytes", got.len());
}

/// Reads one Content-Length response off `c` into text, keeping what follows it.
fn one_response(c: &mut TcpStream, pending: &mut Vec<u8>) -> String {
    let mut more = vec![0u8; 1 << 16];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if pending.len() >= end + 4 + len {
                let whole: Vec<u8> = pending.drain(..end + 4 + len).collect();
                return String::from_utf8_lossy(&whole).into_owned();
            }
        }
        let n = c.read(&mut more).unwrap();
        assert!(n > 0, "closed mid-response");
        pending.extend_from_slice(&more[..n]);
    }
}

/// An upload of known length past the splice threshold, with a request
/// pipelined right behind it: the backend gets exactly the body (never the
/// next request's bytes), and the next request is served after it; an upload
/// that stops is answered 408 after `body_read_timeout`.
#[test]
fn a_large_upload_is_relayed_exactly_and_one_that_stops_is_a_408() {
    let web = common::http::HttpBackend::start("web");
    for engine in ["fulcrum", "hyper"] {
        let f = listener(web.addr, engine);
        let mut c = TcpStream::connect(f.addr("web")).unwrap();
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let body: String = (0..1_000_003)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        let mut sent = format!(
            "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        sent.push_str("GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
        c.write_all(sent.as_bytes()).unwrap();
        let mut pending = Vec::new();
        let first = one_response(&mut c, &mut pending);
        assert!(
            first.starts_with("HTTP/1.1 200"),
            "{engine}: {}",
            &first[..60.min(first.len())]
        );
        assert!(
            first.contains(&format!("\nbody={body}\n")),
            "{engine}: the body arrived exactly"
        );
        let second = one_response(&mut c, &mut pending);
        assert!(second.contains("path=/after\n"), "{engine}: {second}");

        // 100 KB of a 1 MB body, then nothing.
        let mut d = TcpStream::connect(f.addr("web")).unwrap();
        d.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(
            d,
            "POST /stall HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n"
        )
        .unwrap();
        d.write_all(&[b'x'; 100_000]).unwrap();
        let mut answer = String::new();
        let _ = d.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{engine}: {answer}");
    }
}

/// One request on a new connection, and all that came back until it closed.
fn ask_once(addr: SocketAddr, request: &str) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn an_interim_answer_reaches_an_http_1_1_client_but_never_an_http_1_0_one() {
    // RFC 9110 §15.2: a proxy passes 1xx on, except to an HTTP/1.0 client, which
    // would take it for the answer.
    let (addr, _) = backend(Script::Odd);
    for engine in ["fulcrum", "hyper"] {
        let f = listener(addr, engine);
        let old = ask_once(f.addr("web"), "GET /interim HTTP/1.0\r\n\r\n");
        // (hyper answers in the client's version, fulcrum in its own: both may.)
        assert!(
            old.starts_with("HTTP/1.") && old[8..].starts_with(" 200 OK\r\n"),
            "{engine}: {old}"
        );
        assert!(old.ends_with("\r\n\r\nok"), "{engine}: {old}");
    }
    // hyper's client keeps 1xx to itself; fulcrum's own path passes them on.
    let f = listener(addr, "fulcrum");
    let new = ask_once(
        f.addr("web"),
        "GET /interim HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        new.starts_with("HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{new}"
    );
}

#[test]
fn a_status_below_100_or_a_body_malformed_from_its_start_is_a_bad_gateway() {
    let (addr, _) = backend(Script::Odd);
    for engine in ["fulcrum", "hyper"] {
        let f = listener(addr, engine);
        let got = ask_once(
            f.addr("web"),
            "GET /099 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert!(got.starts_with("HTTP/1.1 502"), "{engine}: {got}");
    }
    // hyper's path has sent the head when the body turns out malformed; the own
    // path, holding both, answers instead of closing without a word.
    let f = listener(addr, "fulcrum");
    let got = ask_once(
        f.addr("web"),
        "GET /bad-chunk HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(got.starts_with("HTTP/1.1 502"), "{got}");
}
