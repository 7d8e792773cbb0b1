//! End-to-end UDP tests: the real binary between real UDP clients and backends,
//! and a real DNS server (dnsmasq) behind it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::dns::{dns_answer, dns_query, dnsmasq};
use common::*;

/// A UDP backend thread: `reply` maps each datagram to the answer (or none).
fn udp_backend(reply: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp backend");
    let addr = socket.local_addr().expect("addr");
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if let Some(answer) = reply(&buf[..n]) {
                let _ = socket.send_to(&answer, from);
            }
        }
    });
    addr
}

fn named(name: u8) -> SocketAddr {
    udp_backend(move |_| Some(vec![name]))
}

fn echo() -> SocketAddr {
    udp_backend(|d| Some(d.to_vec()))
}

fn udp_config(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| quoted(*b)).collect();
    config(
        &list,
        "round-robin",
        &format!("protocol = \"udp\"\n{extra}"),
    )
}

fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    c.set_read_timeout(Some(PATIENCE)).expect("timeout");
    c
}

fn ask(c: &UdpSocket, proxy: SocketAddr, payload: &[u8]) -> Vec<u8> {
    c.send_to(payload, proxy).expect("send");
    let mut buf = vec![0u8; 65_536];
    let (n, from) = c.recv_from(&mut buf).expect("reply");
    assert_eq!(from, proxy, "replies come from the listener's address");
    buf.truncate(n);
    buf
}

#[test]
fn a_client_keeps_its_backend_within_a_flow() {
    let (a, b) = (named(b'a'), named(b'b'));
    let f = Fulcrum::run(&udp_config(&[a, b], ""));
    let c = client();
    let first = ask(&c, f.addr("l"), b"x");
    for _ in 0..20 {
        assert_eq!(ask(&c, f.addr("l"), b"x"), first);
    }
    // A second client is a second flow: round robin moves it on.
    assert_ne!(ask(&client(), f.addr("l"), b"x"), first);
}

#[test]
fn thousand_clients_spread_over_three_backends() {
    let backends = [named(b'a'), named(b'b'), named(b'c')];
    let f = Fulcrum::run(&udp_config(&backends, ""));
    let mut counts = [0u32; 3];
    let clients: Vec<UdpSocket> = (0..1000).map(|_| client()).collect();
    for c in &clients {
        let name = ask(c, f.addr("l"), b"q");
        counts[(name[0] - b'a') as usize] += 1;
    }
    let mut sorted = counts;
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [333, 333, 334],
        "round robin over flows: {counts:?}"
    );
}

#[test]
fn idle_flows_expire() {
    let (a, b) = (named(b'a'), named(b'b'));
    let mut f = Fulcrum::run(&udp_config(&[a, b], "flow_idle_timeout = \"200ms\""));
    let c = client();
    let first = ask(&c, f.addr("l"), b"x");
    let line = f.next_line("udp flow ended");
    assert!(line.contains("end=idle"), "{line}");
    // The same client now starts a new flow, and round robin moves it on.
    assert_ne!(ask(&c, f.addr("l"), b"x"), first);
}

#[test]
fn responses_1_ends_the_flow_after_the_answer() {
    let (a, b) = (named(b'a'), named(b'b'));
    let mut f = Fulcrum::run(&udp_config(&[a, b], "responses = 1"));
    let c = client();
    let first = ask(&c, f.addr("l"), b"x");
    let line = f.next_line("udp flow ended");
    assert!(line.contains("end=responses"), "{line}");
    assert_ne!(ask(&c, f.addr("l"), b"x"), first);
}

#[test]
fn one_way_traffic_needs_no_replies() {
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = udp_backend(move |d| {
        let _ = tx.send(d.to_vec());
        None
    });
    let f = Fulcrum::run(&udp_config(&[sink], ""));
    let c = client();
    for i in 0..50u8 {
        c.send_to(&[i], f.addr("l")).expect("send");
    }
    let got: Vec<u8> = (0..50)
        .map(|_| rx.recv_timeout(PATIENCE).expect("datagram")[0])
        .collect();
    assert_eq!(got, (0..50).collect::<Vec<u8>>());
}

#[test]
fn largest_datagrams_arrive_whole() {
    let f = Fulcrum::run(&udp_config(&[echo()], ""));
    let c = client();
    let mut payload = vec![0u8; 65_507];
    Pattern::new(3).fill(&mut payload);
    assert!(
        ask(&c, f.addr("l"), &payload) == payload,
        "65507-byte datagram changed in transit"
    );
    assert_eq!(ask(&c, f.addr("l"), b"small"), b"small");
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn descriptors_return_to_baseline_after_10k_one_shot_clients() {
    let config = udp_config(
        &[named(b'a')],
        "responses = 1\nflow_idle_timeout = \"300ms\"",
    );
    let f = Fulcrum::run(&config);
    let baseline = open_fds(f.pid());
    for _ in 0..10_000 {
        assert_eq!(ask(&client(), f.addr("l"), b"q"), b"a");
    }
    // Each answered flow hands its socket to the next: one socket, not 10k.
    assert!(
        open_fds(f.pid()) <= baseline + 2,
        "{} fds, baseline {baseline}",
        open_fds(f.pid())
    );
    // And the spare socket closes once it has been unused for the idle timeout.
    let deadline = Instant::now() + PATIENCE;
    while open_fds(f.pid()) > baseline && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(open_fds(f.pid()), baseline, "descriptors leaked");
}

#[test]
fn refused_backend_moves_the_next_datagram_elsewhere() {
    let dead = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port");
    let live = named(b'b');
    let mut f = Fulcrum::run(&udp_config(&[dead, live], ""));
    let c = client();
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let mut answer = None;
    // The first flow goes to the dead backend; its ICMP ends the flow, and a resend
    // (as any UDP client does) starts a new flow on the live one.
    for _ in 0..50 {
        c.send_to(b"x", f.addr("l")).expect("send");
        if let Ok((n, _)) = c.recv_from(&mut buf) {
            answer = Some(buf[..n].to_vec());
            break;
        }
    }
    assert_eq!(answer.as_deref(), Some(&b"b"[..]));
    let line = f.next_line("udp backend failed");
    assert!(line.contains(&dead.to_string()), "{line}");
}

#[test]
fn flag_only_udp_mode() {
    let backend = named(b'z');
    let b = backend.to_string();
    let f = Fulcrum::spawn(
        &[
            "udp",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &b,
            "--responses",
            "1",
            "--workers",
            "1",
        ],
        1,
    );
    assert_eq!(ask(&client(), f.addr("udp"), b"q"), b"z");
}

// --- a real DNS server behind fulcrum ------------------------------------------------

#[test]
fn dns_queries_get_correct_answers_from_a_real_dns_server() {
    let Some((_dns, server)) = dnsmasq("fulcrum.test", "192.0.2.53") else {
        return;
    };
    let f = Fulcrum::run(&udp_config(&[server], "responses = 1"));
    let c = client();
    // dnsmasq may still be starting: the first query is retried until it answers.
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let query = dns_query(1, "fulcrum.test");
    let mut buf = [0u8; 512];
    let mut first = None;
    for _ in 0..100 {
        c.send_to(&query, f.addr("l")).expect("send");
        if let Ok((n, _)) = c.recv_from(&mut buf) {
            first = Some(buf[..n].to_vec());
            break;
        }
    }
    let first = first.expect("no DNS answer through fulcrum");
    assert_eq!(dns_answer(&first, query.len()), (1, Some([192, 0, 2, 53])));
    c.set_read_timeout(Some(PATIENCE)).expect("timeout");
    for id in 2..200u16 {
        let q = dns_query(id, "fulcrum.test");
        let r = ask(&c, f.addr("l"), &q);
        assert_eq!(dns_answer(&r, q.len()), (id, Some([192, 0, 2, 53])));
    }
}

#[test]
fn ipv6_flows_work() {
    let backend = UdpSocket::bind("[::1]:0").expect("bind [::1]");
    let addr = backend.local_addr().expect("addr");
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = backend.recv_from(&mut buf) {
            let _ = backend.send_to(&buf[..n], from);
        }
    });
    let text = udp_config(&[addr], "").replace("127.0.0.1:0", "[::1]:0");
    let f = Fulcrum::run(&text);
    assert!(f.addr("l").is_ipv6());
    let c = UdpSocket::bind("[::1]:0").expect("client");
    c.set_read_timeout(Some(PATIENCE)).expect("timeout");
    c.send_to(b"over v6", f.addr("l")).expect("send");
    let mut buf = [0u8; 64];
    let (n, from) = c.recv_from(&mut buf).expect("reply");
    assert_eq!((&buf[..n], from), (&b"over v6"[..], f.addr("l")));
}

#[test]
fn access_log_has_one_line_per_flow() {
    let mut f = Fulcrum::run(&udp_config(&[echo()], "responses = 1"));
    let c = client();
    assert_eq!(ask(&c, f.addr("l"), b"12345"), b"12345");
    let line = f.next_line("udp flow ended");
    for field in [
        "datagrams_in=1",
        "datagrams_out=1",
        "bytes_in=5",
        "bytes_out=5",
        "end=responses",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(
        line.contains(&format!("client={}", c.local_addr().expect("addr"))),
        "{line}"
    );
}
