//! The admin listener: /status JSON, /metrics Prometheus text and the HTML page
//! agree with a known workload.

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

/// The samples of a scrape, parsed by a Prometheus text parser.
fn scrape(admin: SocketAddr) -> prometheus_parse::Scrape {
    let (code, text) = get(admin, "/metrics");
    assert_eq!(code, 200);
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text")
}

/// The value of one series; panics when it is missing.
fn value(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {metric} {labels:?}"));
    match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(buckets) => {
            buckets.iter().map(|b| b.count).fold(0.0, f64::max)
        }
        other => panic!("{metric}: unexpected {other:?}"),
    }
}

#[test]
fn metrics_parse_and_count_a_mixed_workload() {
    let (echo, dead) = (Backend::echo(), dead_addr());
    let web = common::http::HttpBackend::start("web");
    let udp_backend = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"t\"\nbind = \"127.0.0.1:0\"\npool = \"tcp\"\nretries = 1\n\n\
         [[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\n\n\
         [[listener.route]]\npath_prefix = \"/ok\"\npool = \"web\"\n\n\
         [[listener]]\nname = \"u\"\nprotocol = \"udp\"\nbind = \"127.0.0.1:0\"\npool = \"udp\"\n\n\
         [[pool]]\nname = \"tcp\"\neject_after = 0\nbackends = [\"{dead}\", \"{}\"]\n\n\
         [[pool]]\nname = \"web\"\nbackends = [\"{}\"]\n\n\
         [[pool]]\nname = \"udp\"\nbackends = [\"{}\"]\n",
        echo.addr,
        web.addr,
        udp_backend.local_addr().unwrap()
    );
    let f = Fulcrum::run(&text);
    // TCP: 4 connections of 1000 bytes each way; round robin sends two of them to
    // the dead backend first, which fail over (2 connect errors, 2 retries).
    for _ in 0..4 {
        let mut c = connect(f.addr("t"));
        c.write_all(&[7u8; 1000]).unwrap();
        let mut back = [0u8; 1000];
        c.read_exact(&mut back).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
    }
    // HTTP: 3 answered requests and 2 without a route.
    let mut client = common::http::HttpClient::connect(f.addr("h"));
    for path in ["/ok/1", "/ok/2", "/ok/3", "/nope", "/nope"] {
        client.get(path, &[]);
    }
    // UDP: 2 clients, one datagram each.
    for _ in 0..2 {
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"x", f.addr("u")).unwrap();
    }
    let mut buf = [0u8; 16];
    udp_backend.set_read_timeout(Some(PATIENCE)).unwrap();
    for _ in 0..2 {
        udp_backend.recv(&mut buf).unwrap();
    }

    let s = scrape(f.addr("admin"));
    let (echo_addr, dead_addr) = (echo.addr.to_string(), dead.to_string());
    let echo_l = [("pool", "tcp"), ("backend", echo_addr.as_str())];
    let dead_l = [("pool", "tcp"), ("backend", dead_addr.as_str())];
    assert_eq!(value(&s, "fulcrum_backend_connections_total", &echo_l), 4.0);
    assert_eq!(
        value(&s, "fulcrum_backend_connect_errors_total", &dead_l),
        2.0
    );
    assert_eq!(
        value(&s, "fulcrum_listener_retries_total", &[("listener", "t")]),
        2.0
    );
    assert_eq!(
        value(&s, "fulcrum_backend_sent_bytes_total", &echo_l),
        4000.0
    );
    assert_eq!(
        value(&s, "fulcrum_backend_received_bytes_total", &echo_l),
        4000.0
    );
    assert_eq!(value(&s, "fulcrum_backend_healthy", &dead_l), 1.0);
    assert_eq!(value(&s, "fulcrum_backend_connect_seconds", &echo_l), 4.0);
    assert_eq!(
        value(&s, "fulcrum_backend_connect_seconds_count", &echo_l),
        4.0
    );
    let h = [("listener", "h")];
    assert_eq!(
        value(
            &s,
            "fulcrum_http_responses_total",
            &[("listener", "h"), ("class", "2xx")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &s,
            "fulcrum_http_responses_total",
            &[("listener", "h"), ("class", "4xx")]
        ),
        2.0
    );
    assert_eq!(value(&s, "fulcrum_http_request_seconds_count", &h), 5.0);
    assert_eq!(value(&s, "fulcrum_listener_connections_total", &h), 1.0);
    let u = [("listener", "u")];
    assert_eq!(value(&s, "fulcrum_udp_flows_created_total", &u), 2.0);
    assert_eq!(value(&s, "fulcrum_udp_flows_active", &u), 2.0);
    assert_eq!(value(&s, "fulcrum_udp_datagrams_in_total", &u), 2.0);
}

#[test]
fn html_page_lists_listeners_and_backends() {
    let (a, dead) = (Backend::named("a"), dead_addr());
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        config(&[quoted(a.addr), quoted(dead)], "round-robin", "")
    );
    let f = Fulcrum::run(&text);
    // One connection fails over from the dead backend: it is still up (one
    // failure does not eject) but has a connect error to show.
    let _ = hello(f.addr("l"));
    let _ = hello(f.addr("l"));
    let (code, page) = get(f.addr("admin"), "/");
    assert_eq!(code, 200);
    assert!(page.starts_with("<!doctype html>"), "{page}");
    for needle in [
        "<title>fulcrum status</title>",
        &format!("<td>{}</td>", a.addr),
        &format!("<td>{dead}</td>"),
        "Pool p",
        "<td>l</td>",
        "http-equiv=\"refresh\"",
    ] {
        assert!(page.contains(needle), "{needle} missing:\n{page}");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page loads nothing from outside"
    );
}

/// Renders the page in headless Chromium: the DOM it builds lists the backends,
/// and a screenshot is taken (kept in the scratch folder for a person to look at).
#[test]
fn html_page_renders_in_headless_chromium() {
    if !have("chromium") {
        return;
    }
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        config(&[quoted(a.addr), quoted(b.addr)], "least-conn", "")
    );
    let f = Fulcrum::run(&text);
    let url = format!("http://{}/", f.addr("admin"));
    let chromium = |args: &[&str]| {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
            ])
            .args(args)
            .arg(&url)
            .output()
            .expect("run chromium")
    };
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for backend in [a.addr, b.addr] {
        assert!(
            dom.contains(&backend.to_string()),
            "{backend} not rendered:\n{dom}"
        );
    }
    let shot = scratch("status.png");
    let out = chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,800",
    ]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn status_names_the_default_pool_and_metrics_have_help_in_a_stable_order() {
    let web = common::http::HttpBackend::start("web");
    let (a, b, c) = (
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    );
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"web\"\n\n\
         [[listener]]\nname = \"t\"\nbind = \"127.0.0.1:0\"\npool = \"tcp\"\n\n\
         [[listener]]\nname = \"u\"\nprotocol = \"udp\"\nbind = \"127.0.0.1:0\"\npool = \"tcp\"\n\n\
         [[pool]]\nname = \"web\"\nbackends = [\"{}\"]\n\n\
         [[pool]]\nname = \"tcp\"\nbackends = [\"{}\", \"{}\", \"{}\"]\n",
        web.addr, a.addr, b.addr, c.addr
    );
    let f = Fulcrum::run(&text);
    common::http::get(f.addr("h"), "/", &[]);
    for _ in 0..3 {
        drop(hello(f.addr("t")));
    }
    let (code, body) = get(f.addr("admin"), "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let h = status["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .find(|l| l["name"] == "h")
        .expect("listener h");
    assert_eq!(h["pool"], "web", "{body}");

    // Every family has HELP and TYPE; two scrapes list the same series in the
    // same order (values aside).
    let shape = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| match l.starts_with('#') {
                true => l.to_owned(),
                false => l
                    .rsplit_once(' ')
                    .map_or(l, |(series, _)| series)
                    .to_owned(),
            })
            .collect()
    };
    let (_, first) = get(f.addr("admin"), "/metrics");
    let mut previous = shape(&first);
    for _ in 0..5 {
        let (_, again) = get(f.addr("admin"), "/metrics");
        let now = shape(&again);
        assert_eq!(
            now, previous,
            "the order of /metrics changed between scrapes"
        );
        previous = now;
    }
    let families: Vec<&str> = first
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(families.len() > 10, "{first}");
    for family in &families {
        assert!(
            first.contains(&format!("# HELP {family} ")),
            "{family} has no HELP line"
        );
    }
    for line in first
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(f)))
            .unwrap_or(name);
        assert!(families.contains(&family), "{name} has no TYPE line");
    }
    // Backends in pool order, as the config lists them.
    let order: Vec<usize> = [a.addr, b.addr, c.addr]
        .iter()
        .map(|addr| {
            first
                .find(&format!(
                    "fulcrum_backend_up{{pool=\"tcp\",backend=\"{addr}\"}}"
                ))
                .expect("backend series")
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{first}");
}
