//! Redirects (`https_redirect`, a route's `redirect`) and path and host rewrites
//! (`strip_prefix`, `replace_prefix`, `set_host`), on both HTTP/1 paths and
//! HTTP/2, as the client and the backend see them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use common::http::{HttpBackend, HttpClient};
use common::raw::exchange;
use common::*;

const ENGINES: [&str; 2] = ["fulcrum", "hyper"];

fn header<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    reply.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn https_redirect_sends_every_request_to_the_same_url_over_https() {
    for engine in ENGINES {
        let text = format!(
            "[[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\n\
             http1_engine = \"{engine}\"\nhttps_redirect = true\n"
        );
        let f = Fulcrum::run(&text);
        let (status, reply) = exchange(
            f.addr("h"),
            b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
        );
        assert_eq!(status, Some(308), "{engine}: {reply}");
        assert_eq!(
            header(&reply, "location"),
            Some("https://example.com/a/b?x=1"),
            "{engine}: {reply}"
        );
        // A POST keeps its method on 308; the keep-alive connection goes on.
        let (status, reply) = exchange(
            f.addr("h"),
            b"POST /form HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\nHost: shop.example\r\n\r\n",
        );
        assert_eq!(status, Some(308), "{engine}: {reply}");
        assert_eq!(
            reply.matches("HTTP/1.1 308").count(),
            2,
            "{engine}: {reply}"
        );
        assert!(
            reply.contains("location: https://shop.example/next")
                || reply.contains("Location: https://shop.example/next"),
            "{engine}: {reply}"
        );
        // No Host to build the Location from: 400, not a redirect to nowhere.
        let (status, _) = exchange(f.addr("h"), b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(status, Some(400), "{engine}");
    }
}

#[test]
fn redirect_routes_answer_and_rewrite_routes_forward_what_the_backend_should_see() {
    let web = HttpBackend::start("web");
    for engine in ENGINES {
        let text = format!(
            "[[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"w\"\n\
             http1_engine = \"{engine}\"\n\n\
             [[listener.route]]\npath_prefix = \"/old/\"\n\
             redirect = {{ host = \"new.example\", path = \"/new{{path}}\", code = 301 }}\n\n\
             [[listener.route]]\npath_prefix = \"/api\"\nstrip_prefix = \"/api\"\npool = \"w\"\n\n\
             [[listener.route]]\npath_prefix = \"/v1/\"\nreplace_prefix = {{ from = \"/v1/\", to = \"/internal/\" }}\n\
             set_host = \"internal.example\"\npool = \"w\"\n\n\
             [[pool]]\nname = \"w\"\nbackends = [{}]\n",
            quoted(web.addr)
        );
        let mut f = Fulcrum::run(&text);
        let hits = web.hits();
        let (status, reply) = exchange(
            f.addr("h"),
            b"GET /old/page?q=1 HTTP/1.1\r\nHost: site.example\r\n\r\n",
        );
        assert_eq!(status, Some(301), "{engine}: {reply}");
        assert_eq!(
            header(&reply, "location"),
            Some("http://new.example/new/old/page?q=1")
        );
        assert_eq!(web.hits(), hits, "{engine}: a redirect reached the backend");

        let mut client = HttpClient::connect(f.addr("h"));
        let reply = client.get("/api/users?id=7", &[("host", "site.example")]);
        assert_eq!(reply.line("path"), Some("/users?id=7"), "{engine}");
        assert_eq!(reply.seen("host"), Some("site.example"), "{engine}");
        let reply = client.get("/api", &[("host", "site.example")]);
        assert_eq!(reply.line("path"), Some("/"), "{engine}");
        let reply = client.get("/v1/a/b?x", &[("host", "site.example")]);
        assert_eq!(reply.line("path"), Some("/internal/a/b?x"), "{engine}");
        assert_eq!(reply.seen("host"), Some("internal.example"), "{engine}");
        // The forwarding fields still name the host the client asked for.
        assert!(
            reply
                .seen("forwarded")
                .is_some_and(|v| v.contains("host=site.example")),
            "{engine}: {:?}",
            reply.seen("forwarded")
        );
        // The access log keeps the path the client sent.
        let line = f.saw("path=/v1/a/b");
        assert!(line.contains("status=200"), "{line}");
    }
}

#[test]
fn redirects_and_rewrites_over_http2_too() {
    if !have("curl") {
        return;
    }
    let web = HttpBackend::start("web");
    let text = format!(
        "[[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"w\"\n\n\
         [[listener.route]]\npath_prefix = \"/old/\"\nredirect = {{ scheme = \"https\", code = 308 }}\n\n\
         [[listener.route]]\npath_prefix = \"/api\"\nstrip_prefix = \"/api\"\npool = \"w\"\n\n\
         [[pool]]\nname = \"w\"\nbackends = [{}]\n",
        quoted(web.addr)
    );
    let f = Fulcrum::run(&text);
    let curl = |path: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-i",
                "--http2-prior-knowledge",
                "-H",
                "Host: h2.example",
            ])
            .arg(format!("http://{}{path}", f.addr("h")))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let reply = curl("/old/x?y=2");
    assert!(reply.starts_with("HTTP/2 308"), "{reply}");
    assert_eq!(
        header(&reply, "location"),
        Some("https://h2.example/old/x?y=2")
    );
    let reply = curl("/api/things");
    assert!(reply.contains("path=/things"), "{reply}");
}

#[test]
fn bad_redirects_and_rewrites_are_config_errors() {
    let base =
        "[[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"w\"\n\n\
                [[listener.route]]\npath_prefix = \"/x\"\n";
    let pool = format!(
        "\n[[pool]]\nname = \"w\"\nbackends = [{}]\n",
        quoted(dead_addr())
    );
    for (route, needle) in [
        (
            "redirect = { code = 301 }",
            "needs a `scheme`, a `host` or a `path`",
        ),
        (
            "redirect = { host = \"a.example\", code = 200 }",
            "301, 302, 303, 307 or 308",
        ),
        ("redirect = { scheme = \"ftp\" }", "http or https"),
        ("redirect = { path = \"relative\" }", "starts with /"),
        (
            "pool = \"w\"\nredirect = { host = \"a.example\" }",
            "not both",
        ),
        (
            "redirect = { host = \"a.example\" }\nstrip_prefix = \"/x\"",
            "forwards nothing",
        ),
        (
            "pool = \"w\"\nstrip_prefix = \"/x\"\nreplace_prefix = { from = \"/x\", to = \"/\" }",
            "not both",
        ),
        ("pool = \"w\"\nstrip_prefix = \"x\"", "starts with /"),
        ("pool = \"w\"\nset_host = \"bad host\"", "`set_host`"),
    ] {
        let (code, err) = check(&format!("{base}{route}\n{pool}"), "redirect.toml");
        assert_eq!(code, Some(2), "{route}: {err}");
        assert!(err.contains(needle), "{route}: {err}");
        assert!(err.contains("redirect.toml:"), "{route}: {err}");
    }
    let (code, err) = check(
        &config(
            &[quoted(dead_addr())],
            "round-robin",
            "https_redirect = true",
        ),
        "tcp-redirect.toml",
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("https_redirect"), "{err}");
}
