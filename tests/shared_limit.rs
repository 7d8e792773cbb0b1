//! Rate limits shared through a real Redis: two fulcrum processes with one
//! limit of 100/s let 100/s through in total, not 200/s; Redis stopped mid-test
//! switches to `on_redis_failure` without a single 5xx; Redis back restores the
//! shared limit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::http::{HttpBackend, HttpClient};
use common::*;

/// A redis-server of this test's own on `port`; killed on drop.
struct RedisServer(Child);

impl RedisServer {
    fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        // Ready once it accepts.
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
        RedisServer(child)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Requests to each of `proxies` from one keep-alive client each, for `secs`:
/// (200s, 429s, anything else).
fn hammer(proxies: &[SocketAddr], secs: f64) -> (u64, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = proxies
        .iter()
        .map(|&addr| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut client = HttpClient::connect(addr);
                let mut counts = (0u64, 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    match client.get("/", &[]).status {
                        200 => counts.0 += 1,
                        429 => counts.1 += 1,
                        _ => counts.2 += 1,
                    }
                }
                counts
            })
        })
        .collect();
    thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

#[test]
fn two_instances_share_one_limit_through_redis() {
    if !have("redis-server") {
        return;
    }
    let port = dead_addr().port();
    let redis = RedisServer::start(port);
    let web = HttpBackend::start("web");
    let text = format!(
        "[rate_limit]\nredis = \"redis://127.0.0.1:{port}\"\non_redis_failure = \"local\"\n\n\
         [[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"w\"\n\
         access_log = false\nrate_limit = {{ rate = \"100/s\", burst = 10 }}\n\n\
         [[pool]]\nname = \"w\"\nbackends = [{}]\n",
        quoted(web.addr)
    );
    let mut a = Fulcrum::run(&text);
    let mut b = Fulcrum::run(&text);
    let proxies = [a.addr("h"), b.addr("h")];

    let secs = 5.0;
    let (ok, limited, other) = hammer(&proxies, secs);
    eprintln!("shared: {ok} allowed, {limited} refused, {other} other in {secs} s");
    assert_eq!(other, 0);
    let expected = 100.0 * secs + 10.0;
    let off = (ok as f64 - expected).abs() / expected;
    assert!(
        off <= 0.10,
        "{ok} allowed in {secs} s by two instances: {:.0}% off {expected}",
        off * 100.0
    );

    // Redis gone: each instance falls back to its own limit, and no request fails.
    drop(redis);
    let (ok, limited, other) = hammer(&proxies, 2.0);
    eprintln!("redis down: {ok} allowed, {limited} refused, {other} other");
    assert_eq!(other, 0, "a request failed while redis was down");
    assert!(ok > 0);
    a.saw("redis failed");
    b.saw("redis failed");

    // Redis back: the limit is shared again.
    let _redis = RedisServer::start(port);
    let _ = hammer(&proxies, 1.5);
    a.saw("redis answers again");
    b.saw("redis answers again");
    let (ok, _, other) = hammer(&proxies, 3.0);
    eprintln!("redis back: {ok} allowed in 3 s");
    assert_eq!(other, 0);
    let expected = 100.0 * 3.0 + 10.0;
    let off = (ok as f64 - expected).abs() / expected;
    assert!(
        off <= 0.10,
        "{ok} allowed in 3 s after redis came back: {:.0}% off {expected}",
        off * 100.0
    );
}

#[test]
fn deny_and_allow_modes_answer_without_redis() {
    let web = HttpBackend::start("web");
    let dead = dead_addr();
    for (mode, want) in [("deny", 429), ("allow", 200)] {
        let text = format!(
            "[rate_limit]\nredis = \"redis://{dead}\"\non_redis_failure = \"{mode}\"\n\n\
             [[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"w\"\n\
             rate_limit = {{ rate = \"1/m\", burst = 1 }}\n\n\
             [[pool]]\nname = \"w\"\nbackends = [{}]\n",
            quoted(web.addr)
        );
        let mut f = Fulcrum::run(&text);
        let mut client = HttpClient::connect(f.addr("h"));
        for _ in 0..3 {
            assert_eq!(client.get("/", &[]).status, want, "{mode}");
        }
        f.saw("redis failed");
    }
}

#[test]
fn a_bad_redis_address_is_a_config_error() {
    let (code, err) = check(
        &format!(
            "[rate_limit]\nredis = \"http://nope\"\n\n{}",
            config(&[quoted(dead_addr())], "round-robin", "")
        ),
        "redis.toml",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("redis.toml:2:9: invalid redis address"),
        "{err}"
    );
}
