//! `compress`: the coding chosen by Accept-Encoding q-values; small, already
//! encoded, partial, HEAD and unlisted responses sent as they are; decoded
//! output identical to the backend's for bodies from 0 B to 10 MB.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use tokio::io::AsyncReadExt;

/// Text that compresses the way pages do: words, repeated with variation.
fn text(n: usize) -> Vec<u8> {
    let words = [
        "load ",
        "balancer ",
        "fulcrum ",
        "request ",
        "backend ",
        "pool ",
    ];
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0usize;
    while out.len() < n {
        out.extend_from_slice(words[(i * 7 + i / 13) % words.len()].as_bytes());
        out.extend_from_slice(i.to_string().as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

/// A backend answering `/text/N` (text/plain, N bytes), `/png/N`, `/gz/N`
/// (already gzip-encoded, says so) and `/range/N` (206).
fn backend() -> Backend {
    Backend::start(|stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            return;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
        }
        let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
        let mut parts = path.trim_start_matches('/').split('/');
        let kind = parts.next().unwrap_or("");
        let n: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let body = text(n);
        let (status, extra) = match kind {
            "png" => ("200 OK", "content-type: image/png\r\n".to_owned()),
            "gz" => (
                "200 OK",
                "content-type: text/plain\r\ncontent-encoding: gzip\r\n".to_owned(),
            ),
            "range" => (
                "206 Partial Content",
                format!(
                    "content-type: text/plain\r\ncontent-range: bytes 0-{}/99999999\r\n",
                    n.max(1) - 1
                ),
            ),
            _ => (
                "200 OK",
                "content-type: text/plain; charset=utf-8\r\netag: \"v1\"\r\n".to_owned(),
            ),
        };
        let mut s = stream;
        let head = format!(
            "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes());
        if !request_line.starts_with("HEAD") {
            let _ = s.write_all(&body);
        }
    })
}

/// One request; the head (lower-case) and the body as received.
fn fetch(proxy: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let accept = accept.map_or(String::new(), |a| format!("accept-encoding: {a}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: a\r\n{accept}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..split]).to_ascii_lowercase();
    let mut body = all[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (head, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap().trim(), 16).unwrap();
        data = &data[end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut out = Vec::new();
        let input = tokio::io::BufReader::new(data);
        match coding {
            "gzip" => async_compression::tokio::bufread::GzipDecoder::new(input)
                .read_to_end(&mut out)
                .await
                .unwrap(),
            "br" => async_compression::tokio::bufread::BrotliDecoder::new(input)
                .read_to_end(&mut out)
                .await
                .unwrap(),
            "zstd" => async_compression::tokio::bufread::ZstdDecoder::new(input)
                .read_to_end(&mut out)
                .await
                .unwrap(),
            other => panic!("coding {other}"),
        };
        out
    })
}

fn listener(backend: SocketAddr) -> String {
    format!(
        "[[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"w\"\n\
         compress = [\"zstd\", \"br\", \"gzip\"]\n\n[[pool]]\nname = \"w\"\nbackends = [{}]\n",
        quoted(backend)
    )
}

#[test]
fn the_client_s_q_values_choose_the_coding() {
    let b = backend();
    let f = Fulcrum::run(&listener(b.addr));
    for (accept, want) in [
        ("gzip", Some("gzip")),
        ("gzip;q=0.5, br;q=0.8", Some("br")),
        ("gzip, br, zstd", Some("zstd")),
        ("br;q=0, gzip;q=0.2", Some("gzip")),
        ("*;q=0.1", Some("zstd")),
        ("identity", None),
        ("deflate", None),
    ] {
        let (head, body) = fetch(f.addr("h"), "GET", "/text/5000", Some(accept));
        assert_eq!(header(&head, "content-encoding"), want, "{accept}: {head}");
        let plain = match want {
            Some(coding) => {
                assert!(
                    header(&head, "vary").is_some_and(|v| v.contains("accept-encoding")),
                    "{head}"
                );
                assert_eq!(header(&head, "etag"), Some("w/\"v1\""), "{head}");
                assert!(header(&head, "content-length").is_none(), "{head}");
                decode(coding, &body)
            }
            None => body,
        };
        assert_eq!(plain, text(5000), "{accept}");
    }
}

#[test]
fn small_encoded_partial_head_and_unlisted_responses_pass_as_they_are() {
    let b = backend();
    let f = Fulcrum::run(&listener(b.addr));
    let all = Some("gzip, br, zstd");
    for path in ["/text/1023", "/png/50000", "/range/50000"] {
        let (head, body) = fetch(f.addr("h"), "GET", path, all);
        assert_eq!(header(&head, "content-encoding"), None, "{path}: {head}");
        assert_eq!(
            body,
            text(path.rsplit('/').next().unwrap().parse().unwrap()),
            "{path}"
        );
    }
    let (head, body) = fetch(f.addr("h"), "GET", "/gz/3000", all);
    assert_eq!(header(&head, "content-encoding"), Some("gzip"), "{head}");
    assert_eq!(body, text(3000), "an encoded body is passed on untouched");
    let (head, body) = fetch(f.addr("h"), "HEAD", "/text/5000", all);
    assert_eq!(header(&head, "content-encoding"), None, "{head}");
    assert!(body.is_empty());
}

#[test]
fn decoded_bodies_from_0_bytes_to_10_megabytes_are_the_backend_s() {
    let b = backend();
    let text_config = listener(b.addr).replace(
        "compress = [\"zstd\", \"br\", \"gzip\"]",
        "compress = [\"zstd\", \"br\", \"gzip\"]\ncompress_min_size = \"0\"",
    );
    let f = Fulcrum::run(&text_config);
    for n in [0usize, 1, 1023, 1024, 65_536, 1 << 20, 10_000_000] {
        for coding in ["gzip", "br", "zstd"] {
            let (head, body) = fetch(f.addr("h"), "GET", &format!("/text/{n}"), Some(coding));
            assert_eq!(
                header(&head, "content-encoding"),
                Some(coding),
                "{n} {coding}: {head}"
            );
            assert_eq!(decode(coding, &body), text(n), "{n} bytes over {coding}");
            if n >= 65_536 {
                assert!(
                    body.len() * 2 < n,
                    "{coding} of {n} bytes gave {}",
                    body.len()
                );
            }
        }
    }
}

#[test]
fn bad_compress_settings_are_config_errors() {
    for (extra, needle) in [
        ("compress = [\"lzma\"]", "unknown coding `lzma`"),
        ("compress = []", "lists no coding"),
        ("compress_types = [\"text/\"]", "needs `compress`"),
        (
            "compress = [\"gzip\"]\ncompress_types = [\"html\"]",
            "a media type",
        ),
    ] {
        let (code, err) = check(
            &format!(
                "[[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"w\"\n{extra}\n\n\
                 [[pool]]\nname = \"w\"\nbackends = [{}]\n",
                quoted(dead_addr())
            ),
            "compress.toml",
        );
        assert_eq!(code, Some(2), "{extra}: {err}");
        assert!(
            err.contains(needle) && err.contains("compress.toml:"),
            "{extra}: {err}"
        );
    }
}
