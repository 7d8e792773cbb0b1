//! L7 upstream connections end to end: keep-alive connections to backends are
//! closed once idle for `upstream_idle_timeout`, even when no request comes again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::http::get;
use common::{Backend, Fulcrum, PATIENCE};

/// A keep-alive HTTP backend: answers every request with 200, and reports on
/// `closed` how long after its last response each connection was closed by fulcrum.
fn keepalive_backend(closed: mpsc::Sender<Duration>) -> Backend {
    let closed = Mutex::new(closed);
    Backend::start(move |mut s| {
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        let mut last = Instant::now();
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                got.drain(..end + 4);
                if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
                last = Instant::now();
            }
        }
        let _ = closed.lock().unwrap().send(last.elapsed());
    })
}

#[test]
fn idle_upstream_connections_close_after_upstream_idle_timeout() {
    let (tx, closed) = mpsc::channel();
    let backend = keepalive_backend(tx);
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\nupstream_idle_timeout = \"1s\"\n\n[[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n",
        backend.addr
    ));
    for _ in 0..3 {
        assert_eq!(get(f.addr("web"), "/", &[]).status, 200);
    }
    // One pooled connection carried all three; nothing is sent again, so only
    // fulcrum's own sweep can close it.
    assert_eq!(
        backend.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let idle = closed
        .recv_timeout(PATIENCE)
        .expect("the idle upstream connection was never closed");
    assert!(
        idle >= Duration::from_millis(900),
        "closed after {idle:?} idle, before upstream_idle_timeout"
    );
}
