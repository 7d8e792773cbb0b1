//! `rate_limit` on listeners and routes: a token bucket per client address,
//! header or cookie. HTTP answers 429 with Retry-After and RateLimit fields; TCP
//! closes; the rate let through matches the configured one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::io::Read;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::http::{HttpBackend, HttpClient};
use common::raw::exchange;
use common::*;

fn http_config(backend: std::net::SocketAddr, listener_extra: &str, route_extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"w\"\n{listener_extra}\n\n\
         [[listener.route]]\npath_prefix = \"/api/\"\npool = \"w\"\n{route_extra}\n\n\
         [[pool]]\nname = \"w\"\nbackends = [{}]\n",
        quoted(backend)
    )
}

#[test]
fn the_rate_let_through_is_the_configured_one_within_two_percent() {
    let web = HttpBackend::start("web");
    let text = http_config(
        web.addr,
        "access_log = false",
        "rate_limit = { rate = \"100/s\", burst = 10 }",
    );
    let f = Fulcrum::run(&text);
    let mut client = HttpClient::connect(f.addr("h"));
    let (mut allowed, mut refused) = (0u64, 0u64);
    let started = Instant::now();
    let mut last = started;
    while started.elapsed() < Duration::from_secs(5) {
        let reply = client.get("/api/x", &[]);
        match reply.status {
            200 => allowed += 1,
            429 => {
                refused += 1;
                let retry: u64 = reply.headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(
                    retry, 1,
                    "a token comes back within 10 ms: Retry-After rounds up to 1"
                );
                assert_eq!(reply.headers["ratelimit-policy"], "\"fulcrum\";q=10;w=1");
                assert_eq!(reply.headers["ratelimit"], "\"fulcrum\";r=0;t=1");
            }
            other => panic!("status {other}"),
        }
        last = Instant::now();
    }
    let elapsed = last.duration_since(started).as_secs_f64();
    // The burst, then 100 per second.
    let expected = 10.0 + 100.0 * elapsed;
    let error = (allowed as f64 - expected).abs() / expected;
    eprintln!("{allowed} allowed, {refused} refused in {elapsed:.3} s (expected {expected:.0}, {:.2}% off)", error * 100.0);
    assert!(
        refused > allowed,
        "the client did not go past the rate ({allowed} allowed, {refused} refused)"
    );
    assert!(
        error <= 0.02,
        "{allowed} allowed in {elapsed:.3} s: {:.1}% off {expected:.0}",
        error * 100.0
    );
    // Outside the limited route nothing is refused.
    for _ in 0..50 {
        assert_eq!(client.get("/other", &[]).status, 200);
    }
}

#[test]
fn retry_after_says_when_a_slow_bucket_has_a_token_again() {
    let web = HttpBackend::start("web");
    let text = http_config(web.addr, "rate_limit = { rate = \"6/m\", burst = 1 }", "");
    for engine in ["fulcrum", "hyper"] {
        let text = text.replacen(
            "pool = \"w\"\n",
            &format!("pool = \"w\"\nhttp1_engine = \"{engine}\"\n"),
            1,
        );
        let f = Fulcrum::run(&text);
        let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(exchange(f.addr("h"), request).0, Some(200), "{engine}");
        let (status, reply) = exchange(f.addr("h"), request);
        assert_eq!(status, Some(429), "{engine}: {reply}");
        let retry: u64 = reply
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("retry-after: ")
                    .map(str::to_owned)
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        // One token per 10 s.
        assert!((9..=10).contains(&retry), "{engine}: Retry-After {retry}");
        assert!(
            reply
                .to_ascii_lowercase()
                .contains("ratelimit-policy: \"fulcrum\";q=1;w=10"),
            "{reply}"
        );
    }
}

#[test]
fn each_header_value_has_its_own_bucket_and_requests_without_one_share_the_address() {
    let web = HttpBackend::start("web");
    let text = http_config(
        web.addr,
        "",
        "rate_limit = { rate = \"1/m\", burst = 2, key = \"header:x-api-key\" }",
    );
    let f = Fulcrum::run(&text);
    let mut client = HttpClient::connect(f.addr("h"));
    let status = |c: &mut HttpClient, key: Option<&str>| {
        let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
        c.get("/api/x", &headers).status
    };
    assert_eq!(
        [
            status(&mut client, Some("alice")),
            status(&mut client, Some("alice"))
        ],
        [200, 200]
    );
    assert_eq!(status(&mut client, Some("alice")), 429);
    assert_eq!(status(&mut client, Some("bob")), 200);
    assert_eq!(
        [status(&mut client, None), status(&mut client, None)],
        [200, 200]
    );
    assert_eq!(status(&mut client, None), 429);
    // Another address without a key has its own bucket.
    let (code, _) = {
        let s = connect_from(Ipv4Addr::new(127, 0, 0, 9), f.addr("h"));
        use std::io::Write;
        let mut s = s;
        s.write_all(b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        (reply.split(' ').nth(1).map(str::to_owned), reply)
    };
    assert_eq!(code.as_deref(), Some("200"));
}

#[test]
fn tcp_listeners_close_new_connections_over_the_rate() {
    let a = Backend::named("a");
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        config(
            &[quoted(a.addr)],
            "round-robin",
            "rate_limit = { rate = \"1/m\", burst = 2 }"
        )
    );
    let f = Fulcrum::run(&text);
    let proxy = f.addr("l");
    let reached = |source: Ipv4Addr| {
        let mut s = connect_from(source, proxy);
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(1))
    };
    let client = Ipv4Addr::new(127, 0, 0, 2);
    assert_eq!(
        [reached(client), reached(client), reached(client)],
        [true, true, false]
    );
    assert!(
        reached(Ipv4Addr::new(127, 0, 0, 3)),
        "another client has its own bucket"
    );
    assert_eq!(a.accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    let mut s = connect(f.addr("admin"));
    use std::io::Write;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).unwrap();
    assert!(
        metrics.contains("fulcrum_listener_rate_limited_total{listener=\"l\"} 1"),
        "{metrics}"
    );
}

#[test]
fn bad_rate_limits_are_config_errors() {
    for (extra, needle) in [
        ("rate_limit = { rate = \"100\" }", "count per s, m or h"),
        ("rate_limit = { rate = \"0/s\" }", "count per s, m or h"),
        ("rate_limit = { rate = \"10/s\", burst = 0 }", "at least 1"),
        (
            "rate_limit = { rate = \"10/s\", key = \"header:x-key\" }",
            "only (header and cookie keys are http)",
        ),
        (
            "rate_limit = { rate = \"10/s\", key = \"user\" }",
            "unknown rate_limit key",
        ),
    ] {
        let (code, err) = check(
            &config(&[quoted(dead_addr())], "round-robin", extra),
            "limit.toml",
        );
        assert_eq!(code, Some(2), "{extra}: {err}");
        assert!(
            err.contains(needle) && err.contains("limit.toml:5:"),
            "{extra}: {err}"
        );
    }
}
