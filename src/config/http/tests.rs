//! HTTP listener config: routes, splits, header rules and their errors.

use super::super::tests::{assert_err, err};
use super::super::{parse, Protocol};
use fulcrum_l7::route::{HostMatch, PathMatch, Target};

const HTTP: &str = r#"
[[listener]]
name = "web"
protocol = "http"
bind = "127.0.0.1:8080"
pool = "web"
header_read_timeout = "5s"
request_timeout = "30s"
trust_forwarded = true

[[listener.route]]
host = "*.example.com"
path_prefix = "/api/"
method = "GET"
headers = { "x-canary" = "1", "x-debug" = true }
split = [{ pool = "web", weight = 90 }, { pool = "canary", weight = 10 }]

[listener.headers]
request_add = { "x-via" = "fulcrum" }
request_remove = ["x-debug"]
response_remove = ["server"]

[[pool]]
name = "web"
backends = ["127.0.0.1:9001"]
sticky_cookie = "FULCRUM"

[[pool]]
name = "canary"
algorithm = "hash"
hash_key = "header:x-user"
backends = ["127.0.0.1:9002"]
"#;

#[test]
fn http_listener_validates() {
    let c = parse(HTTP, "f.toml").unwrap();
    let Protocol::Http(h) = &c.listeners[0].protocol else {
        panic!("http listener expected");
    };
    assert_eq!(h.header_read_timeout.as_secs(), 5);
    assert_eq!(h.request_timeout.as_secs(), 30);
    assert!(h.trust_forwarded);
    let r = &h.routes[0];
    assert_eq!(r.when.host, Some(HostMatch::Suffix(".example.com".into())));
    assert_eq!(r.when.path, Some(PathMatch::Prefix("/api/".into())));
    assert_eq!(r.when.method, Some(http::Method::GET));
    assert_eq!(r.when.headers.len(), 2);
    assert!(r.when.headers.iter().any(|m| m.value.is_none()));
    assert_eq!(
        r.target,
        Target::Split(vec![("web".into(), 90), ("canary".into(), 10)])
    );
    assert_eq!(h.rewrite.request_add.len(), 1);
    assert_eq!(h.rewrite.response_remove.len(), 1);
    assert_eq!(c.pools[0].sticky_cookie.as_deref(), Some("FULCRUM"));
    assert!(c.pools[1].request_key.is_some());
    let summary = c.summary();
    assert!(
        summary.contains("route host *.example.com, path_prefix /api/"),
        "{summary}"
    );
    assert!(summary.contains("split web 90 / canary 10"), "{summary}");
    assert!(summary.contains("hash(header:x-user)"), "{summary}");
}

#[test]
fn routes_only_listener_needs_no_pool() {
    let text = HTTP.replace("pool = \"web\"\nheader_read_timeout", "header_read_timeout");
    let c = parse(&text, "f.toml").unwrap();
    assert_eq!(c.listeners[0].pool, None);
    let none = text.replace("[[listener.route]]", "[[xlistener.route]]");
    assert!(err(&none).contains("unknown key") || err(&none).contains("needs a `pool`"));
}

#[test]
fn route_errors_point_at_the_key() {
    let cases = [
        (
            "pool = \"web\", weight = 90",
            "pool = \"nope\", weight = 90",
            "16:19",
            "unknown pool `nope`",
        ),
        (
            "weight = 10 }",
            "weight = 0 }",
            "16:69",
            "split weight must be 1..=10000",
        ),
        (
            "method = \"GET\"",
            "method = \"get\"",
            "14:10",
            "written in capitals",
        ),
        (
            "host = \"*.example.com\"",
            "host = \"a.*.com\"",
            "12:8",
            "invalid host name pattern",
        ),
        (
            "path_prefix = \"/api/\"",
            "path_prefix = \"api\"",
            "13:15",
            "must start with /",
        ),
        (
            "\"x-debug\" = true",
            "\"x-debug\" = false",
            "15:11",
            "`true` for \"present\"",
        ),
        (
            "\"x-canary\" = \"1\"",
            "\"bad header\" = \"1\"",
            "15:11",
            "invalid header name",
        ),
        (
            "split = [",
            "pool = \"web\"\nsplit = [",
            "16:8",
            "`pool` or `split`, not both",
        ),
        (
            "\"x-via\" = \"fulcrum\"",
            "\"x-via\" = \"a\\nb\"",
            "19:15",
            "invalid header value \"a\\nb\"",
        ),
        (
            "sticky_cookie = \"FULCRUM\"",
            "sticky_cookie = \"a b\"",
            "26:17",
            "invalid `sticky_cookie`",
        ),
        ("header:x-user", "cookie:", "31:12", "invalid cookie name"),
    ];
    for (from, to, position, needle) in cases {
        assert!(HTTP.contains(from), "{from}");
        assert_err(&HTTP.replacen(from, to, 1), position, needle);
    }
}

#[test]
fn http_keys_on_other_listeners_are_refused() {
    let tcp = HTTP.replace("protocol = \"http\"", "protocol = \"tcp\"");
    assert_err(
        &tcp,
        "7:23",
        "`header_read_timeout` only applies to http and https listeners, and this one is tcp",
    );
    let tcp = r#"
[[listener]]
name = "t"
bind = "127.0.0.1:1"
pool = "p"

[[pool]]
name = "p"
backends = ["127.0.0.1:2"]
sticky_cookie = "S"
"#;
    assert_err(tcp, "5:8", "only http listeners can use");
    let idle = HTTP.replace("trust_forwarded = true", "idle_timeout = \"1m\"");
    assert_err(
        &idle,
        "9:16",
        "`idle_timeout` only applies to tcp and tls listeners, and this one is http",
    );
}

#[test]
fn proxy_protocol_keys() {
    let tcp = |extra: &str| {
        format!("[[listener]]\nname = \"t\"\nbind = \"127.0.0.1:1\"\npool = \"p\"\n{extra}\n\n[[pool]]\nname = \"p\"\nbackends = [\"127.0.0.1:2\"]\n")
    };
    let c = parse(
        &tcp("proxy_protocol = \"v2\"\naccept_proxy_protocol = true"),
        "f.toml",
    )
    .unwrap();
    assert_eq!(
        c.listeners[0].proxy_protocol,
        Some(fulcrum_l4::proxy_protocol::Version::V2)
    );
    assert!(c.listeners[0].accept_proxy_protocol);
    assert_err(
        &tcp("proxy_protocol = \"v3\""),
        "5:18",
        "unknown PROXY protocol version `v3`",
    );
    assert_err(
        &tcp("protocol = \"udp\"\nproxy_protocol = \"v1\""),
        "6:18",
        "UDP flows carry PROXY protocol v2 only",
    );
    assert_err(
        &tcp("protocol = \"udp\"\naccept_proxy_protocol = true"),
        "6:25",
        "`accept_proxy_protocol` applies to tcp, tls, http and https listeners",
    );
    assert_err(
        &tcp("protocol = \"http\"\nproxy_protocol = \"v2\""),
        "6:18",
        "`proxy_protocol` applies to tcp, tls and udp listeners",
    );
}
