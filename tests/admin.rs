//! The admin listener: /status JSON and /metrics Prometheus text agree with a known
//! workload.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;

use common::*;

/// A plain HTTP/1.1 GET; returns the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("response");
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn status_and_metrics_match_a_known_workload() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        config(&[quoted(a.addr), quoted(b.addr)], "round-robin", "")
    );
    let f = Fulcrum::run(&text);
    for _ in 0..6 {
        let (mut c, _) = hello(f.addr("l"));
        c.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).expect("closed");
    }
    let admin = f.addr("admin");

    let (code, body) = get(admin, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(status["listeners"][0]["name"], "l");
    assert_eq!(status["listeners"][0]["addr"], f.addr("l").to_string());
    assert_eq!(status["listeners"][0]["connections"], 6);
    let backends = status["pools"][0]["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 2);
    for backend in backends {
        assert_eq!(backend["connections"], 3, "{backend}");
        assert_eq!(backend["up"], true);
        assert_eq!(backend["active"], 0);
    }
    assert_eq!(status["pools"][0]["algorithm"], "round-robin");

    let (code, metrics) = get(admin, "/metrics");
    assert_eq!(code, 200);
    for backend in [a.addr, b.addr] {
        let series =
            format!("fulcrum_backend_connections_total{{pool=\"p\",backend=\"{backend}\"}} 3");
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} missing:\n{metrics}"
        );
        let up = format!("fulcrum_backend_up{{pool=\"p\",backend=\"{backend}\"}} 1");
        assert!(metrics.lines().any(|l| l == up), "{up} missing:\n{metrics}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l == "fulcrum_listener_connections_total{listener=\"l\"} 6"),
        "{metrics}"
    );
    for zero in [
        "fulcrum_listener_refused_per_client_total",
        "fulcrum_listener_accept_paused_total",
    ] {
        let series = format!("{zero}{{listener=\"l\"}} 0");
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} missing:\n{metrics}"
        );
    }
    // Every sample line is `name{labels} value` with a numeric value.
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "bad sample: {line}");
        assert!(line.starts_with("fulcrum_"), "{line}");
    }

    assert_eq!(get(admin, "/nope").0, 404);
}
