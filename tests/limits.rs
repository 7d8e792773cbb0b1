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
