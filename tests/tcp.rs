//! End-to-end TCP tests: the real binary between real clients and real backends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;

use common::*;

const BLOCK: usize = 64 * 1024;

fn echo_proxy(algorithm: &str) -> (Fulcrum, Backend) {
    let backend = Backend::echo();
    let f = Fulcrum::run(&config(&[quoted(backend.addr)], algorithm, ""));
    (f, backend)
}

/// Sends `total` pattern bytes through `addr` to an echo backend and checks every
/// byte that comes back.
fn round_trip(addr: SocketAddr, total: usize) {
    let mut client = connect(addr);
    let mut writer = client.try_clone().expect("clone");
    let sender = thread::spawn(move || {
        let mut pattern = Pattern::new(7);
        let mut buf = vec![0u8; BLOCK];
        let mut left = total;
        while left > 0 {
            let n = left.min(BLOCK);
            pattern.fill(&mut buf[..n]);
            writer.write_all(&buf[..n]).expect("send payload");
            left -= n;
        }
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut expected = Pattern::new(7);
    let mut want = vec![0u8; BLOCK];
    let mut got = vec![0u8; BLOCK];
    let mut received = 0;
    while received < total {
        let n = (total - received).min(BLOCK);
        expected.fill(&mut want[..n]);
        client
            .read_exact(&mut got[..n])
            .unwrap_or_else(|e| panic!("after {received} bytes: {e}"));
        assert!(
            got[..n] == want[..n],
            "payload differs in block at {received}"
        );
        received += n;
    }
    assert_eq!(
        client.read(&mut got).expect("read end"),
        0,
        "extra bytes after payload"
    );
    sender.join().expect("sender");
}

#[test]
fn echo_through_the_proxy() {
    let (f, _backend) = echo_proxy("round-robin");
    let mut c = connect(f.addr("l"));
    c.write_all(b"hello fulcrum").expect("write");
    let mut buf = [0u8; 13];
    c.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"hello fulcrum");
}

#[test]
fn one_megabyte_arrives_intact() {
    let (f, _backend) = echo_proxy("round-robin");
    round_trip(f.addr("l"), 1 << 20);
}

#[test]
fn hundred_megabytes_arrive_intact() {
    let (f, _backend) = echo_proxy("least-conn");
    round_trip(f.addr("l"), 100 << 20);
}

#[test]
fn half_close_still_gets_the_reply() {
    // The backend reads to end of stream, then answers with the byte count.
    let backend = Backend::start(|mut s| {
        let mut all = Vec::new();
        if s.read_to_end(&mut all).is_ok() {
            let _ = s.write_all(format!("got {}", all.len()).as_bytes());
        }
    });
    let f = Fulcrum::run(&config(&[quoted(backend.addr)], "round-robin", ""));
    let mut c = connect(f.addr("l"));
    c.write_all(&[b'x'; 5000]).expect("write");
    c.shutdown(Shutdown::Write).expect("shutdown");
    let mut reply = String::new();
    c.read_to_string(&mut reply).expect("read reply");
    assert_eq!(reply, "got 5000");
}

#[test]
fn a_reply_that_comes_with_the_backends_fin_arrives_whole() {
    // The backend's reply and its FIN reach fulcrum together (sent with MSG_MORE,
    // then shutdown), so fulcrum holds the last bytes back for its own FIN: that
    // FIN must follow, whether the reply fits one read or spans several. The
    // client never half-closes, and reads to end of stream within its patience.
    let backend = Backend::start(|mut s| {
        let mut size = [0u8; 8];
        if s.read_exact(&mut size).is_err() {
            return;
        }
        let reply = vec![b'r'; u64::from_be_bytes(size) as usize];
        let mut sent = 0;
        while sent < reply.len() {
            match rustix::net::send(&s, &reply[sent..], rustix::net::SendFlags::MORE) {
                Ok(n) => sent += n,
                Err(_) => return,
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        let mut sink = [0; 64];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    let f = Fulcrum::run(&config(&[quoted(backend.addr)], "round-robin", ""));
    for size in [5u64, 3000, 16 * 1024, 40_000, 300_000] {
        for _ in 0..5 {
            let mut c = connect(f.addr("l"));
            c.write_all(&size.to_be_bytes()).expect("ask");
            let mut reply = Vec::new();
            c.read_to_end(&mut reply)
                .unwrap_or_else(|e| panic!("{size}-byte reply: {e} after {} bytes", reply.len()));
            assert_eq!(reply.len() as u64, size);
            assert!(reply.iter().all(|&b| b == b'r'));
        }
    }
}

#[test]
fn refused_backend_moves_to_the_next() {
    let dead = dead_addr();
    let live = Backend::named("b");
    let mut f = Fulcrum::run(&config(
        &[quoted(dead), quoted(live.addr)],
        "round-robin",
        "",
    ));
    for _ in 0..4 {
        let (_c, name) = hello(f.addr("l"));
        assert_eq!(name, 'b');
    }
    let warn = f.next_line("backend connect failed");
    assert!(warn.contains(&dead.to_string()), "{warn}");
    assert!(warn.contains("WARN"), "{warn}");
}

#[test]
fn all_backends_down_closes_the_client() {
    let (a, b) = (dead_addr(), dead_addr());
    let mut f = Fulcrum::run(&config(
        &[quoted(a), quoted(b)],
        "round-robin",
        "retries = 5",
    ));
    let mut c = connect(f.addr("l"));
    let mut buf = [0u8; 1];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection to close, got {other:?}"),
    }
    let line = f.next_line("no backend could take the connection");
    assert!(
        line.contains("tried=2"),
        "each backend is tried once: {line}"
    );
}

#[test]
fn round_robin_alternates_over_two() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let f = Fulcrum::run(&config(
        &[quoted(a.addr), quoted(b.addr)],
        "round-robin",
        "",
    ));
    let seq: String = (0..6).map(|_| hello(f.addr("l")).1).collect();
    assert_eq!(seq, "ababab");
}

#[test]
fn round_robin_follows_the_nginx_sequence_for_weights_5_1_1() {
    let (a, b, c) = (
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    );
    let backends = [
        format!("{{ addr = \"{}\", weight = 5 }}", a.addr),
        quoted(b.addr),
        quoted(c.addr),
    ];
    let f = Fulcrum::run(&config(&backends, "round-robin", ""));
    let seq: String = (0..14).map(|_| hello(f.addr("l")).1).collect();
    assert_eq!(seq, "aabacaaaabacaa");
}

#[test]
fn least_conn_sends_to_the_idle_backend() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let f = Fulcrum::run(&config(&[quoted(a.addr), quoted(b.addr)], "least-conn", ""));
    // Four held connections: least-conn splits them two and two.
    let held: Vec<_> = (0..4).map(|_| hello(f.addr("l"))).collect();
    let (on_a, on_b): (Vec<_>, Vec<_>) = held.into_iter().partition(|(_, n)| *n == 'a');
    assert_eq!((on_a.len(), on_b.len()), (2, 2));
    // Close both on `a` and wait until the proxy has closed them too.
    for (mut s, _) in on_a {
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("read to end");
    }
    // `a` is idle, `b` holds two: the next two go to `a`.
    let next: String = (0..2).map(|_| hello(f.addr("l")).1).collect();
    assert_eq!(next, "aa");
    drop(on_b);
}

#[test]
fn idle_connections_are_closed() {
    let backend = Backend::named("a");
    let f = Fulcrum::run(&config(
        &[quoted(backend.addr)],
        "round-robin",
        "idle_timeout = \"300ms\"",
    ));
    let (mut c, _) = hello(f.addr("l"));
    let mut buf = [0u8; 1];
    // Nothing moves, so the proxy closes the connection after the idle timeout.
    assert_eq!(c.read(&mut buf).expect("read"), 0);
}

#[test]
fn sigterm_drains_live_sessions() {
    let backend = Backend::echo();
    let mut f = Fulcrum::run(&config(&[quoted(backend.addr)], "round-robin", ""));
    let addr = f.addr("l");
    let mut live = connect(addr);
    live.write_all(b"before").expect("write");
    let mut buf = [0u8; 6];
    live.read_exact(&mut buf).expect("read");

    f.signal(rustix::process::Signal::TERM);
    f.next_line("shutting down");
    f.next_line("listener closed");
    // New connections are refused once the listener is closed...
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener still accepting after SIGTERM"
    );
    // ...while the live session keeps working until its client is done.
    live.write_all(b"during").expect("write during drain");
    live.read_exact(&mut buf).expect("read during drain");
    assert_eq!(&buf, b"during");
    live.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    live.read_to_end(&mut rest).expect("read to end");
    let status = f.wait();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        f.log()
    );
    assert!(f.log().contains("drained"), "{}", f.log());
}

#[test]
fn max_connections_pauses_accepting() {
    let backend = Backend::named("a");
    let f = Fulcrum::run(&config(
        &[quoted(backend.addr)],
        "round-robin",
        "max_connections = 1",
    ));
    let (mut first, _) = hello(f.addr("l"));
    let mut second = connect(f.addr("l"));
    second
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .expect("timeout");
    let mut b = [0u8; 1];
    let early = second.read(&mut b);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "second connection served while the first holds the only slot: {early:?}"
    );
    first.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).expect("drain first");
    second.set_read_timeout(Some(PATIENCE)).expect("timeout");
    second
        .read_exact(&mut b)
        .expect("second served after the first closed");
    assert_eq!(&b, b"a");
}

#[test]
fn flag_only_mode_balances() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let (a_arg, b_arg) = (a.addr.to_string(), format!("{},weight=2", b.addr));
    let f = Fulcrum::spawn(
        &[
            "tcp",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &a_arg,
            "--backend",
            &b_arg,
            "--workers",
            "1",
        ],
        1,
    );
    let seq: String = (0..6).map(|_| hello(f.addr("tcp")).1).collect();
    assert_eq!(seq, "babbab");
}

#[test]
fn ipv6_listener_and_backend() {
    let listener = std::net::TcpListener::bind("[::1]:0").expect("bind [::1]");
    let backend = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            let _ = s.write_all(b"6");
        }
    });
    let f = Fulcrum::run(
        &config(&[quoted(backend)], "round-robin", "").replace("127.0.0.1:0", "[::1]:0"),
    );
    assert!(f.addr("l").is_ipv6());
    assert_eq!(hello(f.addr("l")).1, '6');
}

#[test]
fn access_log_has_one_line_per_connection() {
    let (mut f, backend) = echo_proxy("round-robin");
    let mut c = connect(f.addr("l"));
    c.write_all(&[7u8; 1000]).expect("write");
    c.shutdown(Shutdown::Write).expect("shutdown");
    let mut back = Vec::new();
    c.read_to_end(&mut back).expect("read");
    let line = f.next_line("tcp connection ended");
    assert!(line.contains(" INFO "), "{line}");
    for field in [
        "listener=l",
        "bytes_in=1000",
        "bytes_out=1000",
        "end=closed",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(
        line.contains(&format!("backend={}", backend.addr)),
        "{line}"
    );
    assert!(
        line.contains(&format!("client={}", c.local_addr().expect("addr"))),
        "{line}"
    );
}

#[test]
fn access_log_can_be_turned_off() {
    let backend = Backend::named("a");
    let mut f = Fulcrum::run(&config(
        &[quoted(backend.addr)],
        "round-robin",
        "access_log = false",
    ));
    drop(hello(f.addr("l")));
    f.signal(rustix::process::Signal::TERM);
    assert!(f.wait().success());
    assert!(!f.log().contains("tcp connection ended"), "{}", f.log());
}

/// Runs `fulcrum MODE --listen ADDR ...` expecting it to refuse at once: returns
/// its exit code and what it printed.
fn refused_start(mode: &str, listen: SocketAddr, backend: SocketAddr) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(bin())
        .args([
            mode,
            "--listen",
            &listen.to_string(),
            "--backend",
            &backend.to_string(),
            "--workers",
            "2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a second fulcrum");
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut err = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    (status.and_then(|s| s.code()), err)
}

#[test]
fn a_second_process_cannot_share_a_served_port() {
    let a = Backend::named("a");
    for mode in ["tcp", "udp"] {
        let first = Fulcrum::spawn(
            &[
                mode,
                "--listen",
                "127.0.0.1:0",
                "--backend",
                &a.addr.to_string(),
                "--workers",
                "2",
            ],
            1,
        );
        let (code, err) = refused_start(mode, first.addr(mode), a.addr);
        assert_eq!(
            code,
            Some(1),
            "{mode}: the second fulcrum did not exit 1: {err}"
        );
        assert!(err.contains("in use"), "{mode}: {err}");
    }
}

#[test]
fn flag_mode_takes_host_names() {
    let a = Backend::named("a");
    let host = format!("localhost:{}", a.addr.port());
    let f = Fulcrum::spawn(
        &[
            "tcp",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &host,
            "--workers",
            "1",
        ],
        1,
    );
    // localhost may also resolve to ::1, where nothing listens: the retry moves on.
    for _ in 0..4 {
        assert_eq!(hello(f.addr("tcp")).1, 'a');
    }
}
