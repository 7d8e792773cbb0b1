//! Connection limits end to end: per-client refusals, and many thousands of
//! concurrent proxied connections held without error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;

use common::*;

fn name_of(stream: &mut TcpStream) -> Option<char> {
    let mut b = [0u8; 1];
    match stream.read(&mut b) {
        Ok(1) => Some(b[0] as char),
        _ => None,
    }
}

#[test]
fn per_client_limit_refuses_politely_and_frees_slots() {
    let backend = Backend::named("a");
    let f = Fulcrum::run(&config(
        &[quoted(backend.addr)],
        "round-robin",
        "max_connections_per_client = 2",
    ));
    let proxy = f.addr("l");
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect_from(one, proxy)).collect();
    for s in &mut held {
        assert_eq!(name_of(s), Some('a'));
    }
    // A third from the same IP is closed at once, before any byte.
    let mut third = connect_from(one, proxy);
    assert_eq!(name_of(&mut third), None);
    // Another client is not affected.
    assert_eq!(
        name_of(&mut connect_from(Ipv4Addr::new(127, 0, 0, 2), proxy)),
        Some('a')
    );
    // Closing one frees its slot (wait for the proxy to have closed it too).
    let mut gone = held.remove(0);
    gone.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    gone.read_to_end(&mut rest).expect("closed");
    assert_eq!(name_of(&mut connect_from(one, proxy)), Some('a'));
}

/// Raises this process's open-file limit to the hard limit, and returns how many
/// connections both this process (client + backend side) and fulcrum can hold.
fn descriptors_for_test() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
    let usable = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20) as usize;
    usable.saturating_sub(500) / 2
}

#[test]
fn holds_nine_thousand_concurrent_connections() {
    // 10k would need 20k descriptors in fulcrum alone, which is this machine's hard
    // open-file limit; 9000 proxied connections use 18k (and as many here, for the
    // clients and the backend). Where the limit is lower, fewer.
    let n = descriptors_for_test().min(9000);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let backend = listener.local_addr().expect("addr");
    let (tx, held_by_backend) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    thread::spawn(move || {
        let mut held = Vec::with_capacity(n);
        for stream in listener.incoming().take(n) {
            let mut stream = stream.expect("accept");
            stream.write_all(b"a").expect("hello");
            held.push(stream);
        }
        let _ = tx.send(held.len());
        // Keep them open until the test lets go.
        let _ = released.recv();
    });
    let mut f = Fulcrum::run(&config(&[quoted(backend)], "round-robin", ""));
    let proxy = f.addr("l");
    let clients: Vec<TcpStream> = (0..n)
        .map(|i| {
            let mut c = connect(proxy);
            assert_eq!(name_of(&mut c), Some('a'), "connection {i}");
            c
        })
        .collect();
    assert_eq!(
        held_by_backend
            .recv_timeout(PATIENCE)
            .expect("backend count"),
        n
    );
    assert_eq!(clients.len(), n);
    f.signal(rustix::process::Signal::TERM);
    f.next_line("shutting down");
    drop(clients);
    drop(release);
    assert!(f.wait().success());
    assert!(f.log().contains("drained"));
    let log = f.log();
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "{}",
        &log[log.len().saturating_sub(2000)..]
    );
}

#[test]
fn running_out_of_descriptors_is_never_a_backends_fault() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let path = scratch("emfile.toml");
    std::fs::write(
        &path,
        format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
            config(&[quoted(a.addr), quoted(b.addr)], "round-robin", "").replace(
                "algorithm = \"round-robin\"",
                "algorithm = \"round-robin\"\neject_after = 1\nfail_open = false"
            )
        ),
    )
    .expect("write config");
    // A hard open-file limit of 64: fulcrum cannot raise it, so a flood of clients
    // runs it out of descriptors between accepting a client and connecting on.
    let mut command = std::process::Command::new("sh");
    command.args([
        "-c",
        &format!(
            "ulimit -n 64 && exec {} run -c {} --workers 1",
            bin(),
            path.display()
        ),
    ]);
    let mut f = Fulcrum::spawn_command(command, 2);
    let proxy = f.addr("l");
    let held: Vec<TcpStream> = (0..60)
        .filter_map(|_| TcpStream::connect(proxy).ok())
        .collect();
    f.saw("out of local resources");
    drop(held);
    // Nothing was held against the backends: both serve at once, none ejected.
    let mut seen = String::new();
    for _ in 0..4 {
        let mut c = connect(proxy);
        seen.extend(name_of(&mut c));
    }
    assert!(
        seen.contains('a') && seen.contains('b'),
        "served by {seen:?}"
    );
    let log = f.log();
    assert!(!log.contains("ejected"), "{log}");
    assert!(!log.contains("backend connect failed"), "{log}");
    let metrics = {
        let mut s = connect(f.addr("admin"));
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .expect("scrape");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("metrics");
        text
    };
    for backend in [a.addr, b.addr] {
        let line =
            format!("fulcrum_backend_connect_errors_total{{pool=\"p\",backend=\"{backend}\"}} 0");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    let local = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fulcrum_local_resource_errors_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("local errors counted");
    assert!(local > 0, "{metrics}");
}
