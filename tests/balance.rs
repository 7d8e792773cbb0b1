//! Balancing end to end: consistent hashing agrees across fulcrum processes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};

use common::*;

/// Connects from `source` and reads the backend's one-letter name.
fn name_from(source: Ipv4Addr, proxy: SocketAddr) -> char {
    let mut stream = connect_from(source, proxy);
    let mut b = [0u8; 1];
    stream.read_exact(&mut b).expect("read name");
    b[0] as char
}

#[test]
fn two_processes_agree_on_the_backend_for_each_client() {
    let backends = [
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    ];
    let list: Vec<String> = backends.iter().map(|b| quoted(b.addr)).collect();
    let text = config(&list, "hash", "").replace(
        "algorithm = \"hash\"",
        "algorithm = \"hash\"\nhash_key = \"source-ip\"",
    );
    let one = Fulcrum::run(&text);
    let two = Fulcrum::run(&text);
    let mut agree = 0;
    let mut seen = std::collections::HashMap::new();
    for i in 0..1000u32 {
        let source = Ipv4Addr::new(127, 1 + (i / 250) as u8, (i % 250) as u8 + 1, 7);
        let (x, y) = (
            name_from(source, one.addr("l")),
            name_from(source, two.addr("l")),
        );
        agree += usize::from(x == y);
        *seen.entry(x).or_insert(0) += 1;
    }
    assert!(agree >= 990, "only {agree} of 1000 clients agree");
    // And the keys spread over all three backends.
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n > 200), "{seen:?}");
}
