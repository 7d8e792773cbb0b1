//! Backends under many slow clients: bodies within `request_buffer` are read
//! before a backend is chosen, so slow uploaders hold no backend connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;

use common::{Backend, Fulcrum};

/// A keep-alive backend answering `200 ok` to requests with a body of
/// `Content-Length` bytes.
fn counting_backend() -> Backend {
    Backend::start(|mut s: TcpStream| {
        let mut buf = Vec::new();
        let mut chunk = [0; 4096];
        loop {
            let head_end = loop {
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap_or(0));
            while buf.len() < head_end + len {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..head_end + len);
            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    })
}

#[test]
fn slow_uploaders_hold_no_backend_connection_while_they_upload() {
    let backend = counting_backend();
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n",
        backend.addr
    ));
    // 500 clients send a head and 10 of their 100 body bytes, then wait.
    let mut uploads: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(f.addr("web")).unwrap();
            s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
                .unwrap();
            s
        })
        .collect();
    // A request from someone else goes through on one backend connection.
    let r = common::http::get(f.addr("web"), "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        backend.accepted.load(Ordering::SeqCst),
        1,
        "uploads took backend connections"
    );
    // The uploads complete: now they are sent on, each answered.
    for s in &mut uploads {
        s.write_all(&[b'x'; 90]).unwrap();
    }
    for s in &mut uploads {
        s.set_read_timeout(Some(common::PATIENCE)).unwrap();
        let mut got = [0; 12];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"HTTP/1.1 200");
    }
    assert!(backend.accepted.load(Ordering::SeqCst) > 1);
}
