//! `send_timeout`: a client that asks for a large answer and stops reading is
//! closed once a write to it has waited that long, on both HTTP/1 paths and for
//! spliced and copied bodies alike, and what it held (its task, its backend
//! connection's slot) is let go.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::http::HttpBackend;
use common::{connect, status_json, Fulcrum};

fn config(engine: &str, backend: &HttpBackend) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"web\"\n\
         http1_engine = \"{engine}\"\nsend_timeout = \"1s\"\n\n\
         [[pool]]\nname = \"web\"\nbackends = [\"{}\"]\n",
        backend.addr
    )
}

fn active(f: &Fulcrum) -> u64 {
    status_json(f.addr("admin"))["pools"][0]["backends"][0]["active"]
        .as_u64()
        .unwrap()
}

/// Asks for `len` bytes and reads none until fulcrum let the backend go (polled
/// on `/status`, at most 30 s); then what is left to read ends short of `len`.
fn stalls_then_is_cut(engine: &str, len: usize) {
    let web = HttpBackend::start("web");
    let f = Fulcrum::run(&config(engine, &web));
    let mut client = connect(f.addr("web"));
    // A small receive buffer, so the answer backs up into fulcrum soon.
    socket2::SockRef::from(&client)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    write!(client, "GET /bytes/{len} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut seen_active = false;
    let mut released = false;
    for _ in 0..300 {
        let now = active(&f);
        seen_active |= now > 0;
        if seen_active && now == 0 {
            released = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen_active && released,
        "{engine}: the stalled answer was let go"
    );
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match client.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(
        got < len,
        "{engine}: {got} of {len} bytes: the answer was cut off"
    );
}

#[test]
fn a_client_that_stops_reading_is_closed_after_send_timeout_on_the_own_path() {
    // 200 MB: a Content-Length body, spliced past its first 64 KiB.
    stalls_then_is_cut("fulcrum", 200_000_000);
}

#[test]
fn a_client_that_stops_reading_is_closed_after_send_timeout_on_hyper_s_path() {
    stalls_then_is_cut("hyper", 200_000_000);
}
