//! DNS discovery: a pool backend given as `HOST:PORT` follows what a real (tiny,
//! in-test) DNS server answers, and keeps its last answer when lookups fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;

use common::*;

/// What the test DNS server says about every A query.
#[derive(Clone, Default)]
struct Answer(Arc<Mutex<Option<Vec<Ipv4Addr>>>>);

impl Answer {
    /// `Some(ips)`: these records; `None`: SERVFAIL.
    fn set(&self, ips: Option<&[Ipv4Addr]>) {
        *self.0.lock().unwrap() = ips.map(<[Ipv4Addr]>::to_vec);
    }
}

/// A DNS server on 127.0.0.1:0 answering A queries from `answer` with TTL 0
/// (RFC 1035 §4.1), and AAAA queries with no records.
fn dns_server(answer: Answer) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let query = &buf[..n];
            // The question ends after the name's labels, then QTYPE and QCLASS.
            let mut end = 12;
            while end < n && query[end] != 0 {
                end += usize::from(query[end]) + 1;
            }
            let question_end = end + 5;
            if question_end > n {
                continue;
            }
            let qtype = u16::from_be_bytes([query[end + 1], query[end + 2]]);
            let mut reply = query[..question_end].to_vec();
            reply[2] = 0x81; // response, recursion desired
            reply[3] = 0x80; // recursion available, NOERROR
            reply[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
            match answer.0.lock().unwrap().clone() {
                None => reply[3] = 0x82, // SERVFAIL
                Some(ips) if qtype == 1 => {
                    reply[7] = ips.len() as u8;
                    for ip in ips {
                        reply.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
                        reply.extend_from_slice(&ip.octets());
                    }
                }
                Some(_) => {}
            }
            let _ = socket.send_to(&reply, from);
        }
    });
    addr
}

/// A backend on `listener` that says `name` on connect.
fn named_on(listener: TcpListener, name: &'static str) {
    thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            let _ = s.write_all(name.as_bytes());
        }
    });
}

fn name_of(proxy: SocketAddr) -> String {
    let mut s = connect(proxy);
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    (b[0] as char).to_string()
}

#[test]
fn pool_follows_the_dns_answer_and_survives_failures() {
    let (a, b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    // One port on both addresses, kept from the moment it is found (a port
    // given back in between can be taken by a test running beside this one).
    let (on_a, on_b) = loop {
        let on_a = TcpListener::bind((a, 0)).unwrap();
        let port = on_a.local_addr().unwrap().port();
        if let Ok(on_b) = TcpListener::bind((b, port)) {
            break (on_a, on_b);
        }
    };
    let port = on_a.local_addr().unwrap().port();
    named_on(on_a, "a");
    named_on(on_b, "b");
    let answer = Answer::default();
    answer.set(Some(&[a]));
    let server = dns_server(answer.clone());
    let config = format!(
        "[resolver]\nnameservers = [\"{server}\"]\n\n\
         [[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{{ addr = \"svc.test:{port}\", resolve = \"200ms\" }}]\n"
    );
    let mut f = Fulcrum::run(&config);
    f.saw("dns: resolved");
    assert_eq!(name_of(f.addr("l")), "a");

    // The answer moves to b: the pool follows.
    answer.set(Some(&[b]));
    f.next_line("dns: answer changed");
    f.next_line("reloaded");
    for _ in 0..5 {
        assert_eq!(name_of(f.addr("l")), "b");
    }

    // The server fails: the last answer stays.
    answer.set(None);
    f.next_line("dns: lookup failed");
    assert_eq!(name_of(f.addr("l")), "b");

    // Both: connections spread over both.
    answer.set(Some(&[a, b]));
    f.next_line("dns: answer changed");
    f.next_line("reloaded");
    let seen: std::collections::HashSet<String> = (0..6).map(|_| name_of(f.addr("l"))).collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn dns_backends_check_and_show() {
    let text = "[resolver]\nnameservers = [\"127.0.0.1:53\"]\n\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:80\", { addr = \"api.internal:8080\", weight = 2, resolve = \"5s\" }]\n";
    let path = scratch("dns.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("api.internal:8080"), "{stdout}");
    assert!(stdout.contains("re-resolved every 5s"), "{stdout}");
    for (bad, needle) in [
        ("\"api internal:80\"", "invalid backend address"),
        (
            "{ addr = \"10.0.0.1:80\", resolve = \"5s\" }",
            "`resolve` applies to backends given by DNS name",
        ),
        (
            "{ addr = \"a.b:80\", resolve = \"0s\" }",
            "`resolve` must be greater than zero",
        ),
        ("\"a.b:0\"", "invalid backend address"),
    ] {
        let text = text.replace("\"10.0.0.1:80\"", bad);
        std::fs::write(&path, &text).unwrap();
        let out = std::process::Command::new(bin())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains(needle), "{bad}: {stderr}");
    }
}
