//! `error_pages`: the operator's bodies for fulcrum's own answers, read and
//! checked at config time, served by both HTTP/1 paths.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use common::raw::exchange;
use common::*;

#[test]
fn fulcrums_own_answers_carry_the_operators_pages() {
    let dir = scratch("pages");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("404.html"), "<h1>Nothing here</h1>\n").unwrap();
    std::fs::write(dir.join("502.html"), "<h1>Upstream trouble (502)</h1>\n").unwrap();
    std::fs::write(dir.join("503.json"), "{\"error\":\"busy\"}\n").unwrap();
    for engine in ["fulcrum", "hyper"] {
        let config = dir.join("fulcrum.toml");
        std::fs::write(
            &config,
            format!(
                "[[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\n\
                 http1_engine = \"{engine}\"\n\
                 error_pages = {{ 404 = \"404.html\", 502 = \"502.html\", 503 = \"503.json\" }}\n\n\
                 [[listener.route]]\npath_prefix = \"/app/\"\npool = \"dead\"\n\n\
                 [[pool]]\nname = \"dead\"\nbackends = [{}]\n",
                quoted(dead_addr())
            ),
        )
        .unwrap();
        let f = Fulcrum::spawn(
            &["run", "-c", config.to_str().unwrap(), "--workers", "1"],
            1,
        );
        let (status, reply) = exchange(f.addr("h"), b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(status, Some(404), "{engine}: {reply}");
        assert!(
            reply
                .to_ascii_lowercase()
                .contains("content-type: text/html; charset=utf-8"),
            "{engine}: {reply}"
        );
        assert!(
            reply.ends_with("<h1>Nothing here</h1>\n"),
            "{engine}: {reply}"
        );
        let (status, reply) = exchange(f.addr("h"), b"GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n");
        match status {
            Some(502) => assert!(
                reply.ends_with("<h1>Upstream trouble (502)</h1>\n"),
                "{engine}: {reply}"
            ),
            Some(503) => {
                assert!(
                    reply
                        .to_ascii_lowercase()
                        .contains("content-type: application/json"),
                    "{reply}"
                );
                assert!(
                    reply.ends_with("{\"error\":\"busy\"}\n"),
                    "{engine}: {reply}"
                );
            }
            other => panic!("{engine}: {other:?} {reply}"),
        }
    }
}

#[test]
fn error_pages_are_checked_when_the_config_is_loaded() {
    let dir = scratch("bad-pages");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ok.html"), "ok").unwrap();
    for (pages, needle) in [
        ("{ 503 = \"missing.html\" }", "cannot read error page"),
        ("{ 200 = \"ok.html\" }", "not a status from 400 to 599"),
    ] {
        let config = dir.join("fulcrum.toml");
        std::fs::write(
            &config,
            format!(
                "[[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\
                 error_pages = {pages}\n\n[[pool]]\nname = \"p\"\nbackends = [{}]\n",
                quoted(dead_addr())
            ),
        )
        .unwrap();
        let out = std::process::Command::new(bin())
            .args(["check", "-c", config.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{pages}: {err}");
        assert!(
            err.contains(needle) && err.contains("fulcrum.toml:6:"),
            "{pages}: {err}"
        );
    }
}
