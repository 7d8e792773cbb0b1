//! Health end to end: active checks (tcp, http, udp), passive ejection and
//! fail-open, observed through fulcrum's own log lines and real traffic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;

/// A backend that can be stopped (its port then refuses) and started again on the
/// same port. It says its name on connect, like `Backend::named`.
struct Killable {
    addr: SocketAddr,
    name: &'static str,
    stop: Arc<AtomicBool>,
    /// Connections accepted (health checks and proxied ones alike).
    accepted: Arc<AtomicUsize>,
}

impl Killable {
    fn start(name: &'static str) -> Killable {
        Self::on(SocketAddr::from(([127, 0, 0, 1], 0)), name)
    }

    fn on(addr: SocketAddr, name: &'static str) -> Killable {
        let listener = TcpListener::bind(addr).expect("bind killable backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        let _ = s.write_all(name.as_bytes());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => break,
                }
            }
            // Dropping the listener closes the port: connects are refused.
        });
        Killable {
            addr,
            name,
            stop,
            accepted,
        }
    }

    fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wait until the port really refuses.
        while std::net::TcpStream::connect(self.addr).is_ok() {
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn restart(&self) -> Killable {
        Self::on(self.addr, self.name)
    }
}

/// An HTTP backend answering every request with `status` and its name in a header.
fn http_backend(status: u16, name: &'static str) -> SocketAddr {
    Backend::start(move |mut s| {
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = write!(s, "HTTP/1.1 {status} X\r\nX-Name: {name}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    })
    .addr
}

fn health_config(backends: &[SocketAddr], pool_extra: &str, health: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| quoted(*b)).collect();
    format!(
        "{}{pool_extra}\n[pool.health]\ninterval = \"100ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2\n{health}",
        config(&list, "round-robin", "")
    )
}

#[test]
fn a_killed_backend_is_marked_down_traffic_keeps_flowing_and_it_comes_back() {
    let a = Killable::start("a");
    let b = Killable::start("b");
    let mut f = Fulcrum::run(&health_config(&[a.addr, b.addr], "eject_after = 0", ""));
    a.kill();
    // Until the checks notice, retries carry every connection to `b`.
    for _ in 0..40 {
        assert_eq!(hello(f.addr("l")).1, 'b');
    }
    let down = f.next_line("backend down");
    assert!(
        down.contains(&a.addr.to_string()) && down.contains("failures=2"),
        "{down}"
    );
    assert!(down.contains("refused"), "the reason is logged: {down}");
    let _a = a.restart();
    let up = f.next_line("backend up");
    assert!(
        up.contains(&a.addr.to_string()) && up.contains("successes=2"),
        "{up}"
    );
    let seq: String = (0..4).map(|_| hello(f.addr("l")).1).collect();
    assert!(seq.contains('a') && seq.contains('b'), "{seq}");
}

#[test]
fn http_checks_honour_the_status_range() {
    let ok = http_backend(204, "ok");
    let failing = http_backend(503, "failing");
    let mut f = Fulcrum::run(&health_config(
        &[ok, failing],
        "",
        "kind = \"http\"\npath = \"/healthz\"\nexpect_status = \"200-399\"\n",
    ));
    let down = f.next_line("backend down");
    assert!(
        down.contains(&failing.to_string()) && down.contains("HTTP status 503"),
        "{down}"
    );
    for _ in 0..6 {
        let mut c = connect(f.addr("l"));
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut reply = String::new();
        c.read_to_string(&mut reply).expect("reply");
        assert!(reply.contains("X-Name: ok"), "{reply}");
    }
    let log = f.log();
    let wrongly_down = log
        .lines()
        .any(|l| l.contains("backend down") && l.contains(&format!("backend={ok}")));
    assert!(!wrongly_down, "the 204 backend was marked down:\n{log}");
}

#[test]
fn udp_send_expect_checks_against_real_udp_servers() {
    let server = |answer: &'static [u8]| {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = s.local_addr().expect("addr");
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(answer, from);
            }
        });
        addr
    };
    let (good, bad) = (server(b"+pong"), server(b"nope"));
    let text = health_config(
        &[good, bad],
        "",
        "kind = \"udp\"\nsend = \"ping\"\nexpect = \"pong\"\n",
    )
    .replace("name = \"l\"", "name = \"l\"\nprotocol = \"udp\"");
    let mut f = Fulcrum::run(&text);
    let down = f.next_line("backend down");
    assert!(
        down.contains(&bad.to_string()) && down.contains("expected bytes"),
        "{down}"
    );
    for _ in 0..5 {
        let c = UdpSocket::bind("127.0.0.1:0").expect("client");
        c.set_read_timeout(Some(PATIENCE)).expect("timeout");
        c.send_to(b"ping", f.addr("l")).expect("send");
        let mut buf = [0u8; 16];
        let (n, _) = c.recv_from(&mut buf).expect("reply");
        assert_eq!(
            &buf[..n],
            b"+pong",
            "new flows go to the healthy server only"
        );
    }
}

#[test]
fn fail_open_keeps_serving_when_every_check_fails() {
    // The backends speak no HTTP, so every http check fails; they still serve.
    let backend = Backend::named("a");
    let mut f = Fulcrum::run(&health_config(&[backend.addr], "", "kind = \"http\"\n"));
    f.next_line("backend down");
    assert_eq!(hello(f.addr("l")).1, 'a');
    let warn = f.next_line("failing open");
    assert!(warn.contains("WARN"), "{warn}");
}

#[test]
fn fail_closed_refuses_when_every_check_fails() {
    let backend = Backend::named("a");
    let mut f = Fulcrum::run(&health_config(
        &[backend.addr],
        "fail_open = false",
        "kind = \"http\"\n",
    ));
    f.next_line("backend down");
    let mut c = connect(f.addr("l"));
    let mut buf = [0u8; 1];
    assert!(
        matches!(c.read(&mut buf), Ok(0) | Err(_)),
        "no backend should serve"
    );
    f.next_line("no backend could take the connection");
}

#[test]
fn connect_failures_in_a_row_eject_a_backend() {
    let dead = dead_addr();
    let live = Backend::named("b");
    let mut f = Fulcrum::run(
        &config(&[quoted(dead), quoted(live.addr)], "round-robin", "").replace(
            "algorithm = \"round-robin\"",
            "algorithm = \"round-robin\"\neject_after = 2\neject_time = \"1m\"",
        ),
    );
    for _ in 0..20 {
        assert_eq!(hello(f.addr("l")).1, 'b');
    }
    let ejected = f.next_line("backend ejected");
    assert!(ejected.contains(&dead.to_string()), "{ejected}");
    f.signal(rustix::process::Signal::TERM);
    assert!(f.wait().success());
    // Two failures ejected it; after that no connection tried it again.
    let failures = f.log().matches("backend connect failed").count();
    assert_eq!(failures, 2, "{}", f.log());
}

#[test]
fn a_backend_down_by_checks_returns_only_after_rise_passes_even_if_ejected() {
    let a = Killable::start("a");
    let b = Killable::start("b");
    let mut f = Fulcrum::run(
        &health_config(
            &[a.addr, b.addr],
            "eject_after = 1\neject_time = \"1h\"",
            "",
        )
        .replace("rise = 2", "rise = 4")
        .replace("interval = \"100ms\"", "interval = \"300ms\""),
    );
    a.kill();
    // A failed connect ejects `a` (round robin tries it within two connections, long
    // before two checks fail; the retry serves the client from `b`)...
    for _ in 0..4 {
        assert_eq!(hello(f.addr("l")).1, 'b');
    }
    let ejected = f.next_line("backend ejected");
    assert!(ejected.contains(&a.addr.to_string()), "{ejected}");
    // ...and the checks mark it down.
    let down = f.next_line("backend down");
    assert!(down.contains(&a.addr.to_string()), "{down}");
    let a = a.restart();
    // Until 4 checks in a row pass, no client reaches `a`: the first one that does
    // finds at least 4 check connections accepted before its own.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "`a` never came back\n{}",
            f.log()
        );
        let (_c, name) = hello(f.addr("l"));
        if name == 'a' {
            let before = a.accepted.load(Ordering::SeqCst) - 1;
            assert!(
                before >= 4,
                "a client reached `a` after only {before} checks\n{}",
                f.log()
            );
            break;
        }
    }
    let up = f.saw("backend up");
    assert!(up.contains("successes=4"), "{up}");
}
