//! L7 end to end: the real binary with `protocol = "http"` in front of real hyper
//! backends, driven by a hyper client (and raw sockets for malformed input).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::http::{get, HttpBackend, HttpClient};
use common::{connect, dead_addr, Backend, Fulcrum};

/// A config with one http listener `web` (extra keys in `listener`), routes, and
/// pools given as `(name, backends, extra keys)`.
fn http_config(listener: &str, routes: &str, pools: &[(&str, Vec<String>, &str)]) -> String {
    let mut c = format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\n{listener}\n{routes}\n"
    );
    for (name, backends, extra) in pools {
        let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
        c.push_str(&format!(
            "\n[[pool]]\nname = \"{name}\"\nbackends = [{}]\n{extra}\n",
            list.join(", ")
        ));
    }
    c
}

fn pool(name: &'static str, b: &HttpBackend) -> (&'static str, Vec<String>, &'static str) {
    (name, vec![b.addr.to_string()], "")
}

#[test]
fn routes_by_host_path_header_and_method() {
    let (api, files, canary, writes, web) = (
        HttpBackend::start("api"),
        HttpBackend::start("files"),
        HttpBackend::start("canary"),
        HttpBackend::start("writes"),
        HttpBackend::start("web"),
    );
    let routes = r#"
[[listener.route]]
host = "api.example.com"
pool = "api"

[[listener.route]]
path_prefix = "/static/"
pool = "files"

[[listener.route]]
headers = { "x-canary" = "1" }
pool = "canary"

[[listener.route]]
method = "POST"
pool = "writes"

[[listener.route]]
host = "*.example.com"
path = "/static/logo.png"
pool = "api"
"#;
    let config = http_config(
        "pool = \"web\"",
        routes,
        &[
            pool("api", &api),
            pool("files", &files),
            pool("canary", &canary),
            pool("writes", &writes),
            pool("web", &web),
        ],
    );
    let f = Fulcrum::run(&config);
    let mut c = HttpClient::connect(f.addr("web"));
    let host = |h| [("host", h)];
    assert_eq!(
        c.get("/", &host("api.example.com:80")).backend(),
        Some("api")
    );
    assert_eq!(c.get("/static/a.css", &[]).backend(), Some("files"));
    assert_eq!(c.get("/", &[("x-canary", "1")]).backend(), Some("canary"));
    assert_eq!(c.get("/", &[("x-canary", "0")]).backend(), Some("web"));
    assert_eq!(
        c.send("POST", "/form", &[], "a=1").backend(),
        Some("writes")
    );
    assert_eq!(c.get("/other", &[]).backend(), Some("web"));
    // Most specific wins: a host match beats the path-prefix route, and the exact
    // path under a wildcard host beats both the prefix route and the header route.
    assert_eq!(
        c.get("/static/a.css", &host("api.example.com")).backend(),
        Some("api")
    );
    assert_eq!(
        c.get(
            "/static/logo.png",
            &[("host", "cdn.example.com"), ("x-canary", "1")]
        )
        .backend(),
        Some("api")
    );
    assert_eq!(
        c.get(
            "/static/x.png",
            &[("host", "cdn.example.com"), ("x-canary", "1")]
        )
        .backend(),
        Some("files")
    );
    // The request reaches the backend in origin form with its body.
    let r = c.send("POST", "/form?x=1", &[], "a=1");
    assert_eq!(r.line("path"), Some("/form?x=1"));
    assert_eq!(r.line("body"), Some("a=1"));
}

#[test]
fn no_route_and_no_default_pool_is_404() {
    let api = HttpBackend::start("api");
    let routes = "[[listener.route]]\npath_prefix = \"/api/\"\npool = \"api\"\n";
    let f = Fulcrum::run(&http_config("", routes, &[pool("api", &api)]));
    let mut c = HttpClient::connect(f.addr("web"));
    assert_eq!(c.get("/api/x", &[]).status, 200);
    let r = c.get("/elsewhere", &[]);
    assert_eq!(r.status, 404);
    assert!(r.body.contains("no route"), "{}", r.body);
    // The connection stays usable after a 404.
    assert_eq!(c.get("/api/y", &[]).backend(), Some("api"));
}

#[test]
fn split_ninety_ten_within_two_percent() {
    let (blue, green) = (HttpBackend::start("blue"), HttpBackend::start("green"));
    let routes = r#"
[[listener.route]]
path_prefix = "/"
split = [{ pool = "blue", weight = 90 }, { pool = "green", weight = 10 }]
"#;
    let config = http_config(
        "access_log = false",
        routes,
        &[pool("blue", &blue), pool("green", &green)],
    );
    let f = Fulcrum::run(&config);
    let mut c = HttpClient::connect(f.addr("web"));
    let n = 10_000;
    for _ in 0..n {
        assert_eq!(c.get("/", &[]).status, 200);
    }
    let share = green.hits() as f64 / n as f64;
    assert_eq!(blue.hits() + green.hits(), n);
    assert!((share - 0.10).abs() <= 0.02, "green share {share}");
}

#[test]
fn sticky_cookie_pins_and_fails_over() {
    let (a, mut b) = (HttpBackend::start("a"), HttpBackend::start("b"));
    let config = http_config(
        "pool = \"p\"",
        "",
        &[(
            "p",
            vec![a.addr.to_string(), b.addr.to_string()],
            "sticky_cookie = \"FULCRUM\"",
        )],
    );
    let f = Fulcrum::run(&config);
    let mut c = HttpClient::connect(f.addr("web"));
    // Find the cookie for b, then every request carrying it goes to b.
    let (cookie, first) = loop {
        let r = c.get("/", &[]);
        let set = r.headers["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            set.starts_with("FULCRUM=") && set.contains("HttpOnly"),
            "{set}"
        );
        if r.backend() == Some("b") {
            break (set.split(';').next().unwrap().to_owned(), r);
        }
    };
    assert!(first.body.contains("backend=b"));
    for _ in 0..20 {
        let r = c.get("/", &[("cookie", &format!("x=1; {cookie}"))]);
        assert_eq!(r.backend(), Some("b"));
        assert!(
            !r.headers.contains_key("set-cookie"),
            "pinned: no new cookie"
        );
    }
    // b goes away: the pinned client is served by a and re-pinned there.
    b.stop();
    let r = c.get("/", &[("cookie", &cookie)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), Some("a"));
    let set = r.headers["set-cookie"].to_str().unwrap();
    assert!(!set.starts_with(&cookie), "re-pinned to a: {set}");
}

#[test]
fn forwarded_headers_replace_or_append() {
    let web = HttpBackend::start("web");
    let plain = Fulcrum::run(&http_config("pool = \"web\"", "", &[pool("web", &web)]));
    let r = get(
        plain.addr("web"),
        "/",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("host", "shop.example:8080"),
        ],
    );
    assert_eq!(
        r.seen("x-forwarded-for"),
        Some("127.0.0.1"),
        "forged chain replaced"
    );
    assert_eq!(r.seen("x-forwarded-proto"), Some("http"));
    assert_eq!(r.seen("x-forwarded-host"), Some("shop.example:8080"));
    assert_eq!(
        r.seen("forwarded"),
        Some("for=127.0.0.1;proto=http;host=shop.example:8080")
    );
    drop(plain);
    let trusting = Fulcrum::run(&http_config(
        "pool = \"web\"\ntrust_forwarded = true",
        "",
        &[pool("web", &web)],
    ));
    let r = get(
        trusting.addr("web"),
        "/",
        &[("x-forwarded-for", "10.1.1.1")],
    );
    assert_eq!(r.seen("x-forwarded-for"), Some("10.1.1.1, 127.0.0.1"));
}

#[test]
fn headers_added_and_removed_both_ways() {
    let web = HttpBackend::start("web");
    let listener = r#"pool = "web"
[listener.headers]
request_add = { "x-via" = "fulcrum" }
request_remove = ["x-debug"]
response_add = { "x-served-by" = "fulcrum" }
response_remove = ["x-secret"]
"#;
    let f = Fulcrum::run(&http_config(listener, "", &[pool("web", &web)]));
    let r = get(
        f.addr("web"),
        "/",
        &[
            ("x-debug", "1"),
            ("x-via", "client"),
            ("keep-alive", "timeout=5"),
        ],
    );
    assert_eq!(r.seen("x-via"), Some("fulcrum"));
    assert_eq!(r.seen("x-debug"), None);
    assert_eq!(r.seen("keep-alive"), None, "hop-by-hop header forwarded");
    assert_eq!(r.headers["x-served-by"], "fulcrum");
    assert_eq!(r.headers["x-backend"], "web");
    assert!(!r.headers.contains_key("x-secret"));
}

#[test]
fn upgraded_connection_is_a_tunnel() {
    let web = HttpBackend::start("web");
    let f = Fulcrum::run(&http_config("pool = \"web\"", "", &[pool("web", &web)]));
    let mut c = HttpClient::connect(f.addr("web"));
    let (status, echoed) = c.upgrade_echo("/ws", b"hello through the tunnel");
    assert_eq!(status, 101);
    assert_eq!(echoed, b"hello through the tunnel");
}

#[test]
fn malformed_request_gets_400_and_others_are_served() {
    let web = HttpBackend::start("web");
    let f = Fulcrum::run(&http_config("pool = \"web\"", "", &[pool("web", &web)]));
    let mut s = connect(f.addr("web"));
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(get(f.addr("web"), "/", &[]).status, 200);
    assert_eq!(web.hits(), 1, "the malformed request reached the backend");
}

#[test]
fn content_length_with_chunked_cannot_smuggle_a_request() {
    // RFC 9112 §6.1: Transfer-Encoding overrides Content-Length; the message may be
    // a smuggling attempt, so the connection closes after the response.
    let web = HttpBackend::start("web");
    let f = Fulcrum::run(&http_config("pool = \"web\"", "", &[pool("web", &web)]));
    let mut s = connect(f.addr("web"));
    s.write_all(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(!answer.contains("/smuggled"), "{answer}");
    assert!(!answer.contains("h:content-length"), "{answer}");
    // hyper's path forwards it chunked (Content-Length removed); fulcrum's own path
    // refuses it with 400, as §6.3 also allows ("ought to be handled as an error").
    match answer.starts_with("HTTP/1.1 400") {
        true => assert_eq!(web.hits(), 0),
        false => assert_eq!(web.hits(), 1),
    }
}

#[test]
fn dead_backends_give_503_and_a_failing_one_502() {
    let config = http_config(
        "pool = \"dead\"\nconnect_timeout = \"1s\"",
        "[[listener.route]]\npath_prefix = \"/broken\"\npool = \"broken\"\n",
        &[
            (
                "dead",
                vec![dead_addr().to_string(), dead_addr().to_string()],
                "",
            ),
            ("broken", vec![broken_backend()], ""),
        ],
    );
    let f = Fulcrum::run(&config);
    let mut c = HttpClient::connect(f.addr("web"));
    let r = c.get("/", &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    let r = c.get("/broken", &[]);
    assert_eq!(r.status, 502, "{}", r.body);
}

/// A backend that reads the request and closes without answering.
fn broken_backend() -> String {
    let b = Backend::start(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
    });
    b.addr.to_string()
}

#[test]
fn slow_backend_gives_504() {
    let slow = Backend::start(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        // Hold the request unanswered until fulcrum gives up and closes.
        let _ = s.read(&mut buf);
    });
    let config = http_config(
        "pool = \"slow\"\nrequest_timeout = \"300ms\"",
        "",
        &[("slow", vec![slow.addr.to_string()], "")],
    );
    let f = Fulcrum::run(&config);
    let started = Instant::now();
    let r = get(f.addr("web"), "/", &[]);
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn slowloris_is_cut_while_others_are_served() {
    let web = HttpBackend::start("web");
    let config = http_config(
        "pool = \"web\"\nheader_read_timeout = \"500ms\"",
        "",
        &[pool("web", &web)],
    );
    let f = Fulcrum::run(&config);
    let mut slow = connect(f.addr("web"));
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n")
        .unwrap();
    let started = Instant::now();
    // Others are served while the slow client dribbles.
    for _ in 0..5 {
        assert_eq!(get(f.addr("web"), "/", &[]).status, 200);
    }
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "cut after {waited:?}");
    assert!(waited < Duration::from_secs(10), "not cut: {waited:?}");
    assert_eq!(web.hits(), 5);
}

#[test]
fn access_log_line_per_request() {
    let web = HttpBackend::start("web");
    let mut f = Fulcrum::run(&http_config("pool = \"web\"", "", &[pool("web", &web)]));
    get(f.addr("web"), "/logged?q=1", &[]);
    let line = f.saw("http request");
    for field in [
        "listener=web",
        "method=GET",
        "path=/logged",
        "status=200",
        "backend=127.0.0.1:",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}

#[test]
fn h2c_prior_knowledge_with_curl() {
    if !common::have("curl") {
        return;
    }
    let web = HttpBackend::start("web");
    let f = Fulcrum::run(&http_config("pool = \"web\"", "", &[pool("web", &web)]));
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "\nversion=%{http_version}\n",
        ])
        .arg(format!("http://{}/h2", f.addr("web")))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("backend=web"), "{text}");
    assert!(text.contains("path=/h2"), "{text}");
    assert!(text.contains("version=2"), "{text}");
}

/// The HTTP/2 preface in pieces (one byte per write) is still seen as one, and a
/// request that only starts like it is HTTP/1's to answer.
#[test]
fn h2c_preface_in_pieces_and_lookalikes() {
    let web = HttpBackend::start("web");
    let f = Fulcrum::run(&http_config("pool = \"web\"", "", &[pool("web", &web)]));
    let mut c = connect(f.addr("web"));
    c.set_nodelay(true).unwrap();
    for byte in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
        c.write_all(&[*byte]).unwrap();
    }
    // An empty SETTINGS frame (RFC 9113 §6.5): length 0, type 4, no flags, stream 0.
    c.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let mut frame = [0u8; 9];
    c.read_exact(&mut frame).unwrap();
    assert_eq!(
        frame[3], 4,
        "the server's first frame is its SETTINGS: {frame:?}"
    );

    let mut c = connect(f.addr("web"));
    c.write_all(b"PRI * HTTP/1.1\r\nHost: web\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
}

#[test]
fn flag_only_http_mode() {
    let web = HttpBackend::start("web");
    let backend = web.addr.to_string();
    let f = Fulcrum::spawn(
        &[
            "http",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &backend,
            "--workers",
            "1",
        ],
        1,
    );
    let r = get(f.addr("http"), "/flag", &[]);
    assert_eq!(r.backend(), Some("web"));
}

#[test]
fn hash_key_header_keeps_a_user_on_one_backend() {
    let backends: Vec<HttpBackend> = ["a", "b", "c"]
        .into_iter()
        .map(HttpBackend::start)
        .collect();
    let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let config = http_config(
        "pool = \"p\"",
        "",
        &[(
            "p",
            addrs,
            "algorithm = \"hash\"\nhash_key = \"header:x-user\"",
        )],
    );
    let f = Fulcrum::run(&config);
    let mut c = HttpClient::connect(f.addr("web"));
    let mut seen = std::collections::HashSet::new();
    for user in 0..30 {
        let id = format!("user-{user}");
        let first = c.get("/", &[("x-user", &id)]).backend().unwrap().to_owned();
        for _ in 0..3 {
            assert_eq!(
                c.get("/", &[("x-user", &id)]).backend(),
                Some(first.as_str())
            );
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3, "30 users all landed on {seen:?}");
}

#[test]
fn reload_changes_routes_for_open_connections() {
    let (old, new) = (HttpBackend::start("old"), HttpBackend::start("new"));
    let before = http_config(
        "pool = \"old\"",
        "",
        &[pool("old", &old), pool("new", &new)],
    );
    let mut f = Fulcrum::run(&before);
    let mut c = HttpClient::connect(f.addr("web"));
    assert_eq!(c.get("/x", &[]).backend(), Some("old"));
    let routes = "[[listener.route]]\npath_prefix = \"/x\"\npool = \"new\"\n";
    let after = http_config(
        "pool = \"old\"",
        routes,
        &[pool("old", &old), pool("new", &new)],
    );
    let said = f.reload(&after);
    assert!(said.contains("reloaded"), "{said}");
    // The same keep-alive connection follows the new routes.
    assert_eq!(c.get("/x", &[]).backend(), Some("new"));
    assert_eq!(c.get("/y", &[]).backend(), Some("old"));
}

#[test]
fn oversized_heads_get_431() {
    let web = HttpBackend::start("web");
    let f = Fulcrum::run(&http_config("pool = \"web\"", "", &[pool("web", &web)]));
    let too_many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let too_big = format!("x-big: {}\r\n", "a".repeat(17 * 1024));
    for extra in [too_many, too_big] {
        let mut s = connect(f.addr("web"));
        let _ = s.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes());
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }
    assert_eq!(web.hits(), 0);
    // Under the 16 KiB limit, a large head is served.
    let big_but_fine = format!("x-big: {}", "a".repeat(12 * 1024));
    let reply = get(f.addr("web"), "/", &[("x-big", &big_but_fine[7..])]);
    assert_eq!(reply.status, 200);
}

#[test]
fn sigterm_closes_idle_keep_alive_connections() {
    // The drain and header-read timeouts are far beyond the test's patience: the
    // exit must come from the idle connection being closed at shutdown, not from
    // either timeout.
    let web = HttpBackend::start("web");
    let config = format!(
        "drain_timeout = \"5m\"\n{}",
        http_config(
            "pool = \"web\"\nheader_read_timeout = \"5m\"",
            "",
            &[pool("web", &web)]
        )
    );
    let mut f = Fulcrum::run(&config);
    let mut idle = connect(f.addr("web"));
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(idle.read(&mut byte).unwrap(), 1, "closed mid-response");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; length];
    idle.read_exact(&mut body).unwrap();

    f.signal(rustix::process::Signal::TERM);
    f.next_line("shutting down");
    // The keep-alive connection, idle between requests, is closed...
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // ...and with nothing else live, fulcrum drains and exits at once.
    let status = f.wait();
    assert!(status.success(), "{status:?}; log:\n{}", f.log());
    assert!(f.log().contains("drained"), "{}", f.log());
}
