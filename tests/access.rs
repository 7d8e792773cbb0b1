//! `allow` and `deny` address ranges on tcp, http and udp listeners: checked on
//! the real client (after a PROXY header), before any backend is touched;
//! reloadable; counted in /metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;

use common::http::HttpBackend;
use common::*;

/// What a client from `source` gets on connect: the backend's name, or nothing
/// (closed by fulcrum).
fn reached(source: Ipv4Addr, proxy: SocketAddr) -> Option<char> {
    let mut s = connect_from(source, proxy);
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1) => Some(b[0] as char),
        _ => None,
    }
}

/// One request with `prefix` (a PROXY header, say) before it; the status code.
fn status_of(mut s: TcpStream, prefix: &str) -> u16 {
    write!(
        s,
        "{prefix}GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn metric(admin: SocketAddr, line_start: &str) -> Option<u64> {
    let mut s = connect(admin);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
}

#[test]
fn tcp_listeners_close_clients_outside_allow_or_inside_deny() {
    let a = Backend::named("a");
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        config(
            &[quoted(a.addr)],
            "round-robin",
            "allow = [\"127.0.0.0/29\"]\ndeny = [\"127.0.0.3\"]"
        )
    );
    let mut f = Fulcrum::run(&text);
    let proxy = f.addr("l");
    assert_eq!(reached(Ipv4Addr::new(127, 0, 0, 2), proxy), Some('a'));
    assert_eq!(reached(Ipv4Addr::new(127, 0, 0, 3), proxy), None);
    assert_eq!(reached(Ipv4Addr::new(127, 0, 0, 9), proxy), None);
    assert_eq!(
        a.accepted.load(Ordering::SeqCst),
        1,
        "a denied client reached the backend"
    );
    assert_eq!(
        metric(
            f.addr("admin"),
            "fulcrum_listener_denied_total{listener=\"l\"}"
        ),
        Some(2)
    );
    // A reload changes the lists for new connections.
    let line = f.reload(&text.replace("deny = [\"127.0.0.3\"]", "deny = []"));
    assert!(line.contains("reloaded"), "{line}");
    assert_eq!(reached(Ipv4Addr::new(127, 0, 0, 3), proxy), Some('a'));
}

#[test]
fn the_real_client_behind_a_proxy_header_is_the_one_checked() {
    let a = Backend::named("a");
    let web = HttpBackend::start("web");
    let text = format!(
        "{}\n\
         [[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"w\"\n\
         accept_proxy_protocol = true\ndeny = [\"203.0.113.0/24\", \"2001:db8::/32\"]\n\n\
         [[pool]]\nname = \"w\"\nbackends = [{}]\n",
        config(
            &[quoted(a.addr)],
            "round-robin",
            "accept_proxy_protocol = true\ndeny = [\"203.0.113.0/24\"]"
        ),
        quoted(web.addr)
    );
    let f = Fulcrum::run(&text);
    let (tcp, http) = (f.addr("l"), f.addr("h"));
    let mut denied = connect(tcp);
    denied
        .write_all(b"PROXY TCP4 203.0.113.5 127.0.0.1 4000 80\r\n")
        .unwrap();
    let mut b = [0u8; 1];
    assert!(
        matches!(denied.read(&mut b), Ok(0) | Err(_)),
        "denied behind PROXY"
    );
    let mut allowed = connect(tcp);
    allowed
        .write_all(b"PROXY TCP4 198.51.100.1 127.0.0.1 4000 80\r\n")
        .unwrap();
    allowed.read_exact(&mut b).unwrap();
    assert_eq!(b[0], b'a');

    assert_eq!(
        status_of(
            connect(http),
            "PROXY TCP4 203.0.113.9 127.0.0.1 4000 80\r\n"
        ),
        403
    );
    assert_eq!(
        status_of(connect(http), "PROXY TCP6 2001:db8::7 ::1 4000 80\r\n"),
        403
    );
    assert_eq!(web.hits(), 0, "a denied request reached the backend");
    assert_eq!(
        status_of(connect(http), "PROXY TCP6 2001:db9::7 ::1 4000 80\r\n"),
        200
    );
}

#[test]
fn http_listeners_answer_403_on_both_http1_paths_and_ipv6() {
    let web = HttpBackend::start("web");
    for engine in ["fulcrum", "hyper"] {
        let text = format!(
            "[[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"w\"\n\
             http1_engine = \"{engine}\"\ndeny = [\"127.0.0.5\"]\n\n\
             [[listener]]\nname = \"v6\"\nprotocol = \"http\"\nbind = \"[::1]:0\"\npool = \"w\"\n\
             http1_engine = \"{engine}\"\nallow = [\"2001:db8::/32\"]\n\n\
             [[pool]]\nname = \"w\"\nbackends = [{}]\n",
            quoted(web.addr)
        );
        let f = Fulcrum::run(&text);
        let before = web.hits();
        assert_eq!(
            status_of(connect_from(Ipv4Addr::new(127, 0, 0, 5), f.addr("h")), ""),
            403,
            "{engine}"
        );
        // ::1 is not in the allow list.
        assert_eq!(status_of(connect(f.addr("v6")), ""), 403, "{engine}");
        assert_eq!(
            web.hits(),
            before,
            "{engine}: a denied request reached the backend"
        );
        assert_eq!(
            status_of(connect_from(Ipv4Addr::new(127, 0, 0, 6), f.addr("h")), ""),
            200
        );
    }
}

#[test]
fn udp_listeners_drop_datagrams_of_denied_clients() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let backend = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"u\"\nprotocol = \"udp\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\
         deny = [\"127.0.0.7\"]\n\n[[pool]]\nname = \"p\"\nbackends = [{}]\n",
        quoted(backend)
    );
    let f = Fulcrum::run(&text);
    let (proxy, admin) = (f.addr("u"), f.addr("admin"));
    let denied = UdpSocket::bind("127.0.0.7:0").unwrap();
    denied.send_to(b"let me in", proxy).unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while metric(admin, "fulcrum_listener_denied_total{listener=\"u\"}") != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the datagram was not denied"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let allowed = UdpSocket::bind("127.0.0.8:0").unwrap();
    allowed.set_read_timeout(Some(PATIENCE)).unwrap();
    allowed.send_to(b"hello", proxy).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = allowed.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(
        metric(admin, "fulcrum_udp_flows_created_total{listener=\"u\"}"),
        Some(1)
    );
}

#[test]
fn bad_ranges_are_config_errors_that_say_what_to_write() {
    let (code, err) = check(
        &config(
            &[quoted(dead_addr())],
            "round-robin",
            "allow = [\"10.0.0.1/8\"]",
        ),
        "access.toml",
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains(":5:10: `allow`: `10.0.0.1/8` has host bits set"),
        "{err}"
    );
    assert!(err.contains("write 10.0.0.0/8"), "{err}");
}
