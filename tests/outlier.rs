//! Failing backends at L7: passive outlier detection (`eject_after_5xx` takes
//! out a backend that answers 5xx in a row and brings it back after
//! `eject_time`; `max_ejection_percent` keeps part of the pool in service
//! whatever fails) and retries (`retry_on`, `try_timeout`, the retry budget).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Backend, Fulcrum};

/// An HTTP/1.1 keep-alive backend answering every request with `status` and
/// `x-name: NAME`.
fn answering(name: &'static str, status: u16) -> Backend {
    Backend::start(move |mut s: TcpStream| {
        let mut buf = Vec::new();
        let mut chunk = [0; 4096];
        loop {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            buf.drain(..end);
            let reply =
                format!("HTTP/1.1 {status} X\r\nx-name: {name}\r\ncontent-length: 0\r\n\r\n");
            if s.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    })
}

fn config(backends: &[&Backend], pool_extra: &str) -> String {
    listener_config(backends, "", pool_extra)
}

fn listener_config(backends: &[&Backend], listener_extra: &str, pool_extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n{listener_extra}\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{}]\n{pool_extra}\n",
        list.join(", ")
    )
}

/// A reply's status, and who sent it (`-`: fulcrum itself).
fn named(r: common::http::Reply) -> (u16, String) {
    let name = r.headers.get("x-name").map_or("-", |v| v.to_str().unwrap());
    (r.status, name.to_owned())
}

/// Who answered each of `n` GETs, and with what status.
fn answers(f: &Fulcrum, n: usize) -> Vec<(u16, String)> {
    (0..n)
        .map(|_| named(common::http::get(f.addr("web"), "/", &[])))
        .collect()
}

#[test]
fn a_backend_answering_5xx_is_ejected_and_comes_back_after_eject_time() {
    let (good, bad) = (answering("good", 200), answering("bad", 500));
    let mut f = Fulcrum::run(&config(
        &[&good, &bad],
        "eject_after_5xx = 3\neject_time = \"1s\"",
    ));
    // Round robin: the bad backend answers every other request until its third
    // 500 in a row ejects it.
    let first = answers(&f, 6);
    assert_eq!(
        first.iter().filter(|(s, _)| *s == 500).count(),
        3,
        "{first:?}"
    );
    f.saw("backend ejected after 5xx responses in a row");
    let during = answers(&f, 10);
    assert!(
        during.iter().all(|(s, n)| *s == 200 && n == "good"),
        "{during:?}"
    );
    f.saw("backend back from ejection");
    let after = answers(&f, 4);
    assert!(after.iter().any(|(_, n)| n == "bad"), "{after:?}");
}

#[test]
fn max_ejection_percent_keeps_half_the_pool_in_service() {
    let all: Vec<Backend> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|n| answering(n, 503))
        .collect();
    let mut f = Fulcrum::run(&config(
        &all.iter().collect::<Vec<_>>(),
        "eject_after_5xx = 1\neject_time = \"1m\"\nmax_ejection_percent = 50",
    ));
    let _ = answers(&f, 8);
    f.saw("max_ejection_percent of the pool is out already");
    let ejected = f.log().matches("backend ejected after 5xx").count();
    assert_eq!(ejected, 2, "{}", f.log());
    // The two left in service still get every request.
    let later = answers(&f, 20);
    let mut names: Vec<&str> = later.iter().map(|(_, n)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 2, "{later:?}");
    assert!(later.iter().all(|(s, _)| *s == 503), "{later:?}");
}

/// A backend that reads a request and never answers.
fn hanging() -> Backend {
    Backend::start(|mut s: TcpStream| {
        let mut sink = [0; 4096];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    })
}

fn post(f: &Fulcrum) -> (u16, String) {
    named(common::http::HttpClient::connect(f.addr("web")).send("POST", "/", &[], "data"))
}

fn retries(f: &Fulcrum) -> u64 {
    let metrics = common::http::get(f.addr("admin"), "/metrics", &[]).body;
    metrics
        .lines()
        .find(|l| l.starts_with("fulcrum_listener_retries_total{listener=\"web\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"))
}

#[test]
fn retry_on_503_moves_a_get_and_never_replays_a_post() {
    let (bad, good) = (answering("bad", 503), answering("good", 200));
    let f = Fulcrum::run(&listener_config(&[&bad, &good], "retry_on = [\"503\"]", ""));
    // Round robin: every GET that meets `bad` first goes on to `good`.
    let got = answers(&f, 10);
    assert!(got.iter().all(|(s, n)| *s == 200 && n == "good"), "{got:?}");
    assert_eq!(retries(&f), 5);
    // A POST reached `bad`: its 503 is the answer, never sent again.
    let posts: Vec<(u16, String)> = (0..4).map(|_| post(&f)).collect();
    assert!(posts.contains(&(503, "bad".to_owned())), "{posts:?}");
    assert_eq!(retries(&f), 5);
}

#[test]
fn the_retry_budget_holds_with_one_backend_of_three_failing_every_request() {
    let all = [
        answering("a", 200),
        answering("b", 200),
        answering("bad", 503),
    ];
    let f = Fulcrum::run(&listener_config(
        &all.iter().collect::<Vec<_>>(),
        "retry_on = [\"503\"]",
        "eject_after = 0",
    ));
    let started = std::time::Instant::now();
    let mut client = common::http::HttpClient::connect(f.addr("web"));
    let n = 10_000u64;
    let mut failed = 0u64;
    for _ in 0..n {
        if client.get("/", &[]).status != 200 {
            failed += 1;
        }
    }
    let secs = started.elapsed().as_secs() + 1;
    let retried = retries(&f);
    // A third meet `bad` first; a fifth of all requests, plus 3 a second and
    // the 10 saved up, may be retried: the rest get bad's 503.
    let cap = n / 5 + 3 * secs + 10;
    assert!(
        retried <= cap,
        "{retried} retries over {n} requests in {secs}s (cap {cap})"
    );
    assert!(
        retried >= n / 5 - 10,
        "{retried} retries: the budget was not used"
    );
    let met = failed + retried;
    assert!(
        (n / 3 - 1..=n / 3 + 1).contains(&met),
        "{met}: every 503 met was retried or answered"
    );
}

#[test]
fn each_try_obeys_try_timeout() {
    let (stuck, good) = (hanging(), answering("good", 200));
    // Without a retry for it, the hung try ends in 504 at try_timeout, well
    // before request_timeout.
    let f = Fulcrum::run(&listener_config(
        &[&stuck, &good],
        "try_timeout = \"300ms\"\nrequest_timeout = \"60s\"",
        "",
    ));
    let got = answers(&f, 2);
    assert!(got.contains(&(504, "-".to_owned())), "{got:?}");
    // With retry_on 504 the next backend answers instead.
    let f = Fulcrum::run(&listener_config(
        &[&stuck, &good],
        "try_timeout = \"300ms\"\nretry_on = [\"504\"]",
        "",
    ));
    let got = answers(&f, 4);
    assert!(got.iter().all(|(s, n)| *s == 200 && n == "good"), "{got:?}");
}
