//! Clients that make fulcrum's own HTTP/1 path wait at each step, and what they
//! must see: a head in two pieces, a pause before the next request, a large
//! upload spliced from the socket after its head came alone, silence, and a
//! client that leaves before saying anything; and clean closes (a FIN, never a
//! reset) after `Connection: close`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::http::HttpBackend;
use common::{Fulcrum, PATIENCE};

/// A slow client's pause between the pieces of what it sends.
const PAUSE: Duration = Duration::from_millis(150);

fn start() -> (HttpBackend, Fulcrum) {
    let web = HttpBackend::start("web");
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"web\"\n\
         header_read_timeout = \"1s\"\n\n\
         [[pool]]\nname = \"web\"\nbackends = [\"{}\"]\n",
        web.addr
    ));
    (web, f)
}

fn connect(f: &Fulcrum) -> TcpStream {
    let s = TcpStream::connect(f.addr("web")).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// One Content-Length-framed response: its status line and its body.
fn response(s: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed inside a head");
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap();
    let length = common::raw::content_length(&head);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    let status = head.lines().next().unwrap().to_owned();
    (status, String::from_utf8(body).unwrap())
}

/// Reads until the connection ends: a clean close (FIN), not a reset.
fn closed_cleanly(s: &mut TcpStream) {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "bytes after the end: {rest:?}"),
        Err(e) => panic!("not a clean close: {e}"),
    }
}

#[test]
fn a_slow_client_is_served_across_waits_and_closed_cleanly() {
    let (web, f) = start();
    let mut s = connect(&f);
    // A head in two pieces: the first read at once finds only its start.
    s.write_all(b"GET /one HTTP/1.1\r\nHo").unwrap();
    std::thread::sleep(PAUSE);
    s.write_all(b"st: site.test\r\n\r\n").unwrap();
    let (status, body) = response(&mut s);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("path=/one\n"), "{body}");
    // Idle for a while, then the next request: the connection waited for it.
    std::thread::sleep(PAUSE);
    s.write_all(b"GET /two HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .unwrap();
    let (status, body) = response(&mut s);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("path=/two\n"), "{body}");
    // The last one asks to close: answered, then a clean close.
    s.write_all(b"GET /three HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (status, body) = response(&mut s);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("path=/three\n"), "{body}");
    closed_cleanly(&mut s);
    assert_eq!(web.hits(), 3);
}

#[test]
fn a_close_request_answered_at_once_closes_cleanly() {
    let (web, f) = start();
    for i in 0..50 {
        let mut s = connect(&f);
        let req = format!("GET /n{i} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let (status, body) = response(&mut s);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains(&format!("path=/n{i}\n")), "{body}");
        closed_cleanly(&mut s);
    }
    assert_eq!(web.hits(), 50);
}

#[test]
fn a_large_upload_from_a_fresh_connection_arrives_whole() {
    let (_web, f) = start();
    let mut s = connect(&f);
    let upload = vec![b'u'; 3 << 20];
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: site.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        upload.len()
    );
    // The head alone first: the rest of the body is spliced from the socket.
    s.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(PAUSE);
    s.write_all(&upload).unwrap();
    let (status, body) = response(&mut s);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let got = body.lines().find_map(|l| l.strip_prefix("body=")).unwrap();
    assert_eq!(got.len(), upload.len());
    assert!(got.bytes().all(|b| b == b'u'));
    closed_cleanly(&mut s);
}

#[test]
fn a_silent_client_is_closed_after_header_read_timeout() {
    let (web, f) = start();
    let mut s = connect(&f);
    let started = Instant::now();
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("fulcrum said something to a client that sent nothing"),
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
            panic!("never closed")
        }
        Err(e) => panic!("{e}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(web.hits(), 0);
}

#[test]
fn a_client_gone_before_a_word_leaves_the_listener_serving() {
    let (_web, f) = start();
    for _ in 0..20 {
        let s = connect(&f);
        s.shutdown(std::net::Shutdown::Both).unwrap();
    }
    let mut s = connect(&f);
    s.write_all(b"GET /after HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (status, body) = response(&mut s);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("path=/after\n"), "{body}");
}
