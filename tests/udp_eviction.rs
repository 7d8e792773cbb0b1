//! UDP under flow-table pressure: thousands of one-datagram clients through a table
//! of 100 flows to an echo backend that answers late. Evicted flows must never hand
//! their late replies to another client (through a reused upstream port or socket).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const CLIENTS: usize = 5000;

/// An echo backend that answers each datagram after its own delay of 0-50 ms.
fn late_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind backend");
    let addr = socket.local_addr().expect("addr");
    let sender = socket.try_clone().expect("clone");
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>, SocketAddr)>();
    thread::spawn(move || {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            // xorshift: a different delay for each datagram, the same every run.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let delay = Duration::from_micros(seed % 50_000);
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec(), from))
                .is_err()
            {
                return;
            }
        }
    });
    thread::spawn(move || {
        let mut due: BinaryHeap<Reverse<(Instant, Vec<u8>, SocketAddr)>> = BinaryHeap::new();
        loop {
            let wait = due.peek().map_or(PATIENCE, |Reverse((at, _, _))| {
                at.saturating_duration_since(Instant::now())
            });
            match rx.recv_timeout(wait) {
                Ok(item) => due.push(Reverse(item)),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            while due
                .peek()
                .is_some_and(|Reverse((at, _, _))| *at <= Instant::now())
            {
                let Reverse((_, data, to)) = due.pop().expect("peeked");
                let _ = sender.send_to(&data, to);
            }
        }
    });
    addr
}

/// Raises this process's open-file limit to hold every client socket.
fn room_for_sockets(n: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let want = n + 512;
    if limit.current.is_some_and(|c| c < want) {
        limit.current = Some(limit.maximum.map_or(want, |m| m.min(want)));
        setrlimit(Resource::Nofile, limit).expect("raise the open-file limit");
    }
}

/// Sends one datagram from each of `CLIENTS` sockets and checks every reply that
/// comes back: returns (replies to the right client, replies to a wrong one).
fn flood(proxy: SocketAddr) -> (usize, usize) {
    let clients: Vec<UdpSocket> = (0..CLIENTS)
        .map(|_| {
            let c = UdpSocket::bind("127.0.0.1:0").expect("client socket");
            c.set_nonblocking(true).expect("nonblocking");
            c
        })
        .collect();
    let payload = |i: usize| format!("client {i} asks").into_bytes();
    for (i, c) in clients.iter().enumerate() {
        // Loopback may be briefly out of buffer space; try again rather than skip.
        for _ in 0..1000 {
            match c.send_to(&payload(i), proxy) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::yield_now(),
                other => {
                    other.expect("send");
                    break;
                }
            }
        }
    }
    let (mut right, mut wrong) = (0, 0);
    let mut buf = [0u8; 128];
    // Every answer is due within 50 ms of its datagram reaching the backend; wait
    // until nothing more has arrived for a second.
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(1) {
        let mut got = false;
        for (i, c) in clients.iter().enumerate() {
            while let Ok(n) = c.recv(&mut buf) {
                got = true;
                if buf[..n] == payload(i)[..] {
                    right += 1;
                } else {
                    wrong += 1;
                    eprintln!("client {i} got {:?}", String::from_utf8_lossy(&buf[..n]));
                }
            }
        }
        if got {
            last = Instant::now();
        } else {
            thread::sleep(Duration::from_millis(5));
        }
    }
    (right, wrong)
}

fn no_misdelivery(responses: u32) {
    room_for_sockets(CLIENTS as u64);
    let backend = late_echo();
    let config = config(
        &[quoted(backend)],
        "round-robin",
        &format!(
            "protocol = \"udp\"\nmax_flows = 100\nresponses = {responses}\nflow_idle_timeout = \"500ms\"\naccess_log = false"
        ),
    );
    let f = Fulcrum::run(&config);
    for round in 0..3 {
        let (right, wrong) = flood(f.addr("l"));
        eprintln!("responses = {responses}, round {round}: {right} replies to their own client, {wrong} to another");
        assert_eq!(wrong, 0, "replies reached the wrong client");
        // The table holds 100 flows and 100 evicted ones waiting for replies: at
        // least those answer.
        assert!(right >= 100, "only {right} replies came back");
    }
}

#[test]
fn evicted_flows_never_answer_another_client_with_responses_0() {
    no_misdelivery(0);
}

#[test]
fn evicted_flows_never_answer_another_client_with_responses_1() {
    no_misdelivery(1);
}
