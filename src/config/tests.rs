//! Config validation: each bad case names the right line and column.

use super::*;

const GOOD: &str = r#"
drain_timeout = "10s"

[[listener]]
name = "web"
bind = "127.0.0.1:8080"
pool = "web"
connect_timeout = "250ms"
idle_timeout = "5m"
retries = 1
max_connections = 100

[[pool]]
name = "web"
algorithm = "least-conn"
backends = ["127.0.0.1:9001", { addr = "[::1]:9002", weight = 3 }]
"#;

pub(super) fn err(text: &str) -> String {
    match parse(text, "f.toml") {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn assert_err(text: &str, position: &str, needle: &str) {
    let e = err(text);
    assert!(
        e.starts_with(&format!("f.toml:{position}: ")),
        "wrong position: {e}"
    );
    assert!(e.contains(needle), "{e:?} lacks {needle:?}");
}

#[test]
fn good_config_validates() -> Result<(), ConfigError> {
    let c = parse(GOOD, "f.toml")?;
    assert_eq!(c.drain_timeout, Duration::from_secs(10));
    let l = &c.listeners[0];
    assert_eq!(l.name, "web");
    assert_eq!(l.bind, SocketAddr::from(([127, 0, 0, 1], 8080)));
    let Protocol::Tcp(t) = &l.protocol else {
        panic!("tcp listener expected: {l:?}");
    };
    assert_eq!(t.connect_timeout, Duration::from_millis(250));
    assert_eq!(t.idle_timeout, Duration::from_secs(300));
    assert_eq!(t.retries, 1);
    assert_eq!(t.max_connections, Some(100));
    let p = &c.pools[0];
    assert_eq!(p.algorithm, Algorithm::LeastConn);
    assert_eq!(p.backends.len(), 2);
    assert_eq!(p.backends[1].weight.get(), 3);
    assert!(p.backends[1].addr.is_ipv6());
    Ok(())
}

#[test]
fn defaults_apply() -> Result<(), ConfigError> {
    let c = parse(
        "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\npool = \"p\"\n[[pool]]\nname = \"p\"\nbackends = [\"127.0.0.1:2\"]\n",
        "f.toml",
    )?;
    assert_eq!(c.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    let Protocol::Tcp(t) = &c.listeners[0].protocol else {
        panic!("tcp listener expected");
    };
    assert_eq!(t.retries, fulcrum_l4::tcp::DEFAULT_RETRIES);
    assert_eq!(t.max_connections, None);
    assert_eq!(c.pools[0].algorithm, Algorithm::RoundRobin);
    Ok(())
}

#[test]
fn unknown_key() {
    assert_err(
        &GOOD.replace("retries = 1", "retrys = 1"),
        "10:1",
        "unknown key `retrys`: did you mean `retries`?",
    );
}

#[test]
fn wrong_type() {
    assert_err(
        &GOOD.replace("retries = 1", "retries = \"one\""),
        "10:11",
        "invalid type",
    );
}

#[test]
fn unknown_pool() {
    assert_err(
        &GOOD.replace("pool = \"web\"", "pool = \"api\""),
        "7:8",
        "unknown pool `api`",
    );
}

#[test]
fn duplicate_listener_name() {
    let text = format!(
        "{GOOD}\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8081\"\npool = \"web\"\n"
    );
    assert_err(&text, "19:8", "duplicate listener name `web`");
}

#[test]
fn duplicate_bind() {
    let text =
        format!("{GOOD}\n[[listener]]\nname = \"b\"\nbind = \"127.0.0.1:8080\"\npool = \"web\"\n");
    assert_err(&text, "20:8", "already used by listener `web`");
}

#[test]
fn empty_pool() {
    let text = GOOD.replace(
        r#"backends = ["127.0.0.1:9001", { addr = "[::1]:9002", weight = 3 }]"#,
        "backends = []",
    );
    assert_err(&text, "16:12", "pool `web` has no backends");
}

#[test]
fn bad_backend_address() {
    assert_err(
        &GOOD.replace("127.0.0.1:9001", "127.0.0.1"),
        "16:13",
        "invalid backend address `127.0.0.1`",
    );
}

#[test]
fn bad_bind_address() {
    assert_err(
        &GOOD.replace("127.0.0.1:8080", "localhost:http"),
        "6:8",
        "invalid `bind` address",
    );
}

#[test]
fn bad_duration() {
    assert_err(
        &GOOD.replace("\"250ms\"", "\"3 seconds\""),
        "8:19",
        "invalid duration",
    );
    assert_err(
        &GOOD.replace("\"250ms\"", "\"0s\""),
        "8:19",
        "greater than zero",
    );
}

#[test]
fn bad_weight() {
    assert_err(
        &GOOD.replace("weight = 3", "weight = 0"),
        "16:31",
        "weight must be 1..=1000",
    );
}

#[test]
fn unknown_algorithm() {
    assert_err(
        &GOOD.replace("least-conn", "fastest"),
        "15:13",
        "unknown algorithm `fastest`",
    );
}

#[test]
fn hash_key() -> Result<(), ConfigError> {
    let c = parse(
        &GOOD.replace("\"least-conn\"", "\"hash\"\nhash_key = \"source-addr\""),
        "f.toml",
    )?;
    assert_eq!(
        c.pools[0].algorithm,
        Algorithm::Hash(fulcrum_l4::HashKey::SourceAddr)
    );
    let c = parse(&GOOD.replace("\"least-conn\"", "\"hash\""), "f.toml")?;
    assert_eq!(
        c.pools[0].algorithm,
        Algorithm::Hash(fulcrum_l4::HashKey::SourceIp)
    );
    assert_err(
        &GOOD.replace("\"least-conn\"", "\"p2c\"\nhash_key = \"source-ip\""),
        "16:12",
        "only applies to algorithm = \"hash\"",
    );
    assert_err(
        &GOOD.replace("\"least-conn\"", "\"hash\"\nhash_key = \"dest\""),
        "16:12",
        "unknown hash key `dest`",
    );
    Ok(())
}

const UDP: &str = r#"
[[listener]]
name = "dns"
protocol = "udp"
bind = "127.0.0.1:8080"
pool = "web"
flow_idle_timeout = "10s"
responses = 1
max_flows = 5000

[[listener]]
name = "web"
bind = "127.0.0.1:8080"
pool = "web"

[[pool]]
name = "web"
backends = ["127.0.0.1:53"]
"#;

#[test]
fn udp_listener_and_tcp_listener_share_a_port() -> Result<(), ConfigError> {
    let c = parse(UDP, "f.toml")?;
    let Protocol::Udp(u) = &c.listeners[0].protocol else {
        panic!("udp listener expected");
    };
    assert_eq!(u.flow_idle_timeout, Duration::from_secs(10));
    assert_eq!(u.responses, 1);
    assert_eq!(u.max_flows, Some(5000));
    assert!(matches!(c.listeners[1].protocol, Protocol::Tcp(_)));
    Ok(())
}

#[test]
fn udp_defaults() -> Result<(), ConfigError> {
    let c = parse(
        &UDP.replace(
            "flow_idle_timeout = \"10s\"\nresponses = 1\nmax_flows = 5000\n",
            "",
        ),
        "f.toml",
    )?;
    let Protocol::Udp(u) = &c.listeners[0].protocol else {
        panic!("udp listener expected");
    };
    assert_eq!(
        u.flow_idle_timeout,
        fulcrum_l4::udp::DEFAULT_FLOW_IDLE_TIMEOUT
    );
    assert_eq!((u.responses, u.max_flows), (0, None));
    Ok(())
}

#[test]
fn keys_of_the_other_protocol_are_refused() {
    assert_err(
        &UDP.replace("responses = 1", "retries = 1"),
        "8:11",
        "`retries` only applies to tcp, tls, http and https listeners, and this one is udp",
    );
    assert_err(
        &UDP.replace(
            "pool = \"web\"\n\n[[pool]]",
            "pool = \"web\"\nresponses = 1\n\n[[pool]]",
        ),
        "15:13",
        "`responses` only applies to udp listeners, and this one is tcp",
    );
}

#[test]
fn duplicate_backend() {
    assert_err(
        &GOOD.replace("[::1]:9002", "127.0.0.1:9001"),
        "16:31",
        "listed twice",
    );
}

#[test]
fn no_listeners() {
    assert_err(
        "[[pool]]\nname = \"p\"\nbackends = [\"127.0.0.1:2\"]\n",
        "1:1",
        "no [[listener]]",
    );
}

#[test]
fn toml_syntax_error() {
    assert_err(&GOOD.replace("retries = 1", "retries = "), "10:11", "");
}

#[test]
fn unknown_values_are_refused_not_ignored() {
    for (from, to, needle) in [
        (
            "[::1]:9002\", weight = 3 }",
            "db internal:5432\", resolve = \"30s\" }",
            "invalid backend address",
        ),
        (
            "retries = 1",
            "protocol = \"quic\"",
            "unknown protocol `quic`",
        ),
        (
            "retries = 1",
            "protocol = \"sctp\"",
            "unknown protocol `sctp`",
        ),
        ("retries = 1", "responses = 1", "only applies to udp"),
        (
            "algorithm = \"least-conn\"",
            "algorithm = \"hash\"\nhash_key = \"header:x-user\"",
            "only http listeners can use",
        ),
    ] {
        let e = err(&GOOD.replace(from, to));
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        assert!(e.starts_with("f.toml:"), "{e}");
    }
    let c = parse(
        &format!("{GOOD}[admin]\nbind = \"127.0.0.1:9090\"\n"),
        "f.toml",
    );
    assert_eq!(
        c.map(|c| c.admin),
        Ok(Some(SocketAddr::from(([127, 0, 0, 1], 9090)).into()))
    );
    let e = err(&format!("{GOOD}[admin]\nbind = \"localhost\"\n"));
    assert!(e.starts_with("f.toml:18:8: invalid admin address"), "{e}");
    let c = parse(
        &format!("{GOOD}[admin]\nbind = \"unix:/run/fulcrum/admin.sock\"\n"),
        "f.toml",
    );
    assert_eq!(
        c.map(|c| c.admin.map(|a| a.bind)),
        Ok(Some(AdminBind::Unix("/run/fulcrum/admin.sock".into())))
    );
    let e = err(&format!(
        "{GOOD}[admin]\nbind = \"0.0.0.0:9090\"\ntoken_file = \"/nonexistent/admin.token\"\n"
    ));
    assert!(
        e.starts_with("f.toml:19:14: cannot read the token file /nonexistent/admin.token"),
        "{e}"
    );
}

#[test]
fn every_design_key_parses() {
    // DESIGN.md's full example: every key must be known to the parser (later
    // features may then be refused, but never as "unknown field").
    let text = r#"
[admin]
bind = "127.0.0.1:9090"
[[listener]]
name = "web"
protocol = "tcp"
bind = "0.0.0.0:8080"
pool = "web"
connect_timeout = "3s"
idle_timeout = "5m"
retries = 2
max_connections = 10000
max_connections_per_client = 0
proxy_protocol = "v2"
accept_proxy_protocol = false
flow_idle_timeout = "30s"
responses = 0
tls = [{ cert = "c.pem", key = "c.key" }]
[[listener.route]]
host = "api.example.com"
path_prefix = "/v1/"
method = "GET"
headers = { "x-canary" = "1" }
pool = "api"
sni = "a.example.com"
split = [{ pool = "blue", weight = 90 }]
[listener.headers]
request_add = { "x-via" = "fulcrum" }
request_remove = ["x-debug"]
response_add = {}
[[pool]]
name = "web"
algorithm = "round-robin"
hash_key = "source-ip"
sticky_cookie = "FULCRUM"
slow_start = "10s"
backends = ["127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 3 }, { addr = "db.internal:5432", resolve = "30s" }]
[pool.health]
kind = "tcp"
interval = "2s"
timeout = "1s"
rise = 2
fall = 3
path = "/healthz"
expect_status = "200-399"
send = "ping"
expect = "pong"
"#;
    let e = err(text);
    assert!(
        !e.contains("unknown field") && !e.contains("unknown key"),
        "{e}"
    );
}

#[test]
fn no_prefix_of_a_config_panics() {
    // Every truncation of a valid file is either valid or a positioned error.
    for end in (0..=GOOD.len()).filter(|&i| GOOD.is_char_boundary(i)) {
        if let Err(e) = parse(&GOOD[..end], "f.toml") {
            assert!(e.position.is_some(), "{e}");
        }
    }
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("é\nx", 3), (2, 1));
    assert_eq!(line_col("éx", 2), (1, 2));
    assert_eq!(line_col("ab", 99), (1, 3));
}

fn with_health(health: &str) -> String {
    format!(
        "{GOOD}fail_open = false\neject_after = 2\neject_time = \"5s\"\n[pool.health]\n{health}"
    )
}

#[test]
fn health_checks_and_failure_policy() -> Result<(), ConfigError> {
    let c = parse(&with_health("kind = \"http\"\npath = \"/healthz\"\nexpect_status = \"200-299\"\ninterval = \"500ms\"\nrise = 1\n"), "f.toml")?;
    let p = &c.pools[0];
    assert!(!p.policy.fail_open);
    assert_eq!(
        (p.policy.eject_after, p.policy.eject_time),
        (2, Duration::from_secs(5))
    );
    let check = p
        .health
        .as_ref()
        .map(|h| (h.probe.clone(), h.interval, h.rise, h.fall));
    let want = Probe::Http {
        path: "/healthz".to_owned(),
        host: None,
        status: 200..=299,
    };
    assert_eq!(
        check,
        Some((
            want,
            Duration::from_millis(500),
            1,
            fulcrum_l4::health::DEFAULT_FALL
        ))
    );
    let c = parse(
        &with_health("kind = \"udp\"\nsend = \"ping\"\nexpect = \"pong\"\n"),
        "f.toml",
    )?;
    let probe = c.pools[0].health.as_ref().map(|h| h.probe.clone());
    assert_eq!(
        probe,
        Some(Probe::Udp {
            send: b"ping".to_vec(),
            expect: Some(b"pong".to_vec())
        })
    );
    let c = parse(&with_health(""), "f.toml")?;
    let probe = c.pools[0].health.as_ref().map(|h| h.probe.clone());
    assert_eq!(
        probe,
        Some(Probe::Tcp {
            send: None,
            expect: None
        })
    );
    Ok(())
}

#[test]
fn bad_health_checks() {
    for (health, needle) in [
        ("kind = \"icmp\"\n", "unknown health check kind `icmp`"),
        ("kind = \"udp\"\n", "udp health checks need `send`"),
        (
            "kind = \"tcp\"\npath = \"/\"\n",
            "`path` only applies to kind = \"http\"",
        ),
        (
            "kind = \"http\"\nexpect_status = \"2xx\"\n",
            "invalid `expect_status` `2xx`",
        ),
        (
            "kind = \"http\"\nexpect_status = \"399-200\"\n",
            "invalid `expect_status`",
        ),
        ("kind = \"http\"\npath = \"health\"\n", "must start with /"),
        ("kind = \"http\"\nsend = \"x\"\n", "http checks use `path`"),
        ("rise = 0\n", "`rise` must be at least 1"),
        ("interval = \"0s\"\n", "greater than zero"),
    ] {
        let e = err(&with_health(health));
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        assert!(e.starts_with("f.toml:2"), "points into [pool.health]: {e}");
    }
}

const GRPC: &str = r#"[[listener]]
name = "api"
protocol = "http"
bind = "127.0.0.1:8080"

[[listener.route]]
headers = { "content-type" = "application/grpc" }
pool = "grpc"

[[pool]]
name = "grpc"
http_version = "2"
backends = ["127.0.0.1:50051"]
"#;

#[test]
fn http_version_is_checked_and_grpc_routes_need_http2() -> Result<(), ConfigError> {
    let c = parse(GRPC, "f.toml")?;
    assert_eq!(c.pools[0].http_version, HttpVersion::Http2);
    assert_err(
        &GRPC.replace("\"2\"", "\"h2\""),
        "12:16",
        "unknown http_version `h2` (expected \"1.1\", \"2\" or \"auto\")",
    );
    assert_err(
        &GRPC.replace("http_version = \"2\"", "http_version = \"1.1\""),
        "8:8",
        "pool `grpc` speaks HTTP/1.1 to its backends: add http_version = \"2\"",
    );
    // `auto` speaks HTTP/1.1 in the clear.
    assert_err(&GRPC.replace("\"2\"", "\"auto\""), "8:8", "speaks HTTP/1.1");
    Ok(())
}

#[test]
fn grpc_health_checks_take_a_service_and_nothing_of_http() {
    let with = |health: &str| format!("{GRPC}\n[pool.health]\n{health}\n");
    assert!(parse(&with("kind = \"grpc\"\nservice = \"my.Svc\""), "f.toml").is_ok());
    assert_err(
        &with("kind = \"http\"\nservice = \"my.Svc\""),
        "17:11",
        "`service` only applies to kind = \"grpc\" checks",
    );
    assert_err(
        &with("kind = \"grpc\"\npath = \"/x\""),
        "17:8",
        "`path` only applies to kind = \"http\" checks",
    );
}

#[test]
fn queue_limits() -> Result<(), ConfigError> {
    let limited = GOOD.replace(
        "algorithm = \"least-conn\"",
        "algorithm = \"least-conn\"\nmax_connections = 4\nmax_queue = 20\nqueue_timeout = \"2s\"",
    );
    let config = parse(&limited, "f.toml")?;
    let policy = &config.pools[0].policy;
    assert_eq!(
        (
            policy.max_connections,
            policy.max_queue,
            policy.queue_timeout
        ),
        (4, 20, Duration::from_secs(2))
    );
    assert!(config
        .summary()
        .contains("at most 4 connections (L7: requests) per backend, then up to 20 wait 2s"));
    assert_err(
        &GOOD.replace("algorithm = \"least-conn\"", "max_queue = 5"),
        "15:13",
        "add `max_connections = N` to pool `web`",
    );
    assert_err(
        &limited.replace("\"2s\"", "\"0s\""),
        "18:17",
        "greater than zero",
    );
    Ok(())
}
