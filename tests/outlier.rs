//! Passive outlier detection at L7: `eject_after_5xx` takes out a backend that
//! answers 5xx in a row and brings it back after `eject_time`, and
//! `max_ejection_percent` keeps part of the pool in service whatever fails.
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
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{}]\n{pool_extra}\n",
        list.join(", ")
    )
}

/// Who answered each of `n` GETs, and with what status.
fn answers(f: &Fulcrum, n: usize) -> Vec<(u16, String)> {
    (0..n)
        .map(|_| {
            let r = common::http::get(f.addr("web"), "/", &[]);
            let name = r
                .headers
                .get("x-name")
                .map_or("-", |v| v.to_str().unwrap())
                .to_owned();
            (r.status, name)
        })
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
