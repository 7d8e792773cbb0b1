//! A request-smuggling matrix through the http listener: each malformed or ambiguous
//! request is either refused with a 4xx/501 (and nothing reaches the backend), or
//! reaches the backend as exactly one request in one unambiguous form, asserted from
//! the bytes the backend received.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::raw::{exchange, Received, Recorder};
use common::Fulcrum;

/// Name, request bytes, and what must happen: `Some(status)` when fulcrum must
/// refuse with exactly that status; `None` when either outcome is acceptable as
/// long as it is one of the two.
type Case = (&'static str, &'static [u8], Option<u16>);

const CASES: &[Case] = &[
    // RFC 9112 §6.3: Transfer-Encoding wins and an intermediary removes the
    // Content-Length before forwarding; refusing would do too.
    ("CL.TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", None),
    ("TE.CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", None),
    ("TE space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", Some(400)),
    ("TE xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", None),
    ("TE chunked, identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", None),
    ("TE tab", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n", None),
    ("TE twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None),
    ("TE upper case", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    ("TE obs-fold", b"POST / HTTP/1.1\r\nHost: a\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None),
    ("TE leading space first line", b"POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: a\r\n\r\n0\r\n\r\n", None),
    ("TE vertical tab", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", None),
    ("TE gzip, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", Some(501)),
    ("TE chunked then gzip header", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n", None),
    ("TE identity, chunked with CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", Some(501)),
    ("HTTP/1.0 with TE", b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None),
    ("CL twice, different", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", Some(400)),
    ("CL twice, same", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", None),
    ("CL plus sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", Some(400)),
    ("CL negative", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", Some(400)),
    ("CL list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", Some(400)),
    ("CL space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello", Some(400)),
    ("CL hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", Some(400)),
    ("CL huge", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", Some(400)),
    ("CL leading zeros", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\nhello", None),
    ("NUL in a header value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", Some(400)),
    ("bare CR in a header value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", Some(400)),
    ("NUL in the target", b"GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: a\n\n", None),
    ("space in a header name", b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", Some(400)),
    ("two spaces in the request line", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
    ("unknown version", b"GET / HTTP/1.7\r\nHost: a\r\n\r\n", None),
    ("chunk extension", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n", None),
    ("oversized chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n", Some(400)),
    ("chunk size 2^64+5", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n", Some(400)),
    ("non-hex chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", Some(400)),
    ("chunk size with a space before", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", Some(400)),
    ("chunk data without its CRLF", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n", Some(400)),
    ("absolute form against Host", b"GET http://public.test/x HTTP/1.1\r\nHost: admin.test\r\n\r\n", None),
    ("two Host headers", b"GET / HTTP/1.1\r\nHost: public.test\r\nHost: admin.test\r\n\r\n", Some(400)),
    ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", None),
    ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n", Some(400)),
    ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: user@admin.test\r\n\r\n", Some(400)),
    ("empty Host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", Some(400)),
    ("Host with a path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Some(400)),
    ("CONNECT", b"CONNECT admin.test:443 HTTP/1.1\r\nHost: admin.test:443\r\n\r\n", Some(405)),
];

/// Refusals fulcrum itself sends for a client's request.
const REFUSALS: &[u16] = &[400, 405, 411, 413, 414, 431, 501, 505];

/// What makes a request the backend got unambiguous: one Host, one framing, and
/// no bytes beyond the one message.
fn unambiguous(r: &Received) -> Result<(), String> {
    let hosts = r.all("host");
    if hosts.len() != 1 {
        return Err(format!("{} Host headers", hosts.len()));
    }
    let (cl, te) = (r.all("content-length"), r.all("transfer-encoding"));
    if !cl.is_empty() && !te.is_empty() {
        return Err("both Content-Length and Transfer-Encoding".into());
    }
    if cl.len() > 1 || te.len() > 1 {
        return Err("framing header repeated".into());
    }
    if te
        .first()
        .is_some_and(|t| !t.eq_ignore_ascii_case("chunked"))
    {
        return Err(format!("Transfer-Encoding {te:?}"));
    }
    if r.headers
        .iter()
        .any(|(n, v)| n.is_empty() || n.starts_with([' ', '\t']) || v.contains(['\0', '\r']))
    {
        return Err("a folded or broken header line".into());
    }
    if !r.request_line.ends_with(" HTTP/1.1") {
        return Err(format!("request line {:?}", r.request_line));
    }
    Ok(())
}

#[test]
fn every_ambiguous_request_is_refused_or_forwarded_in_one_form() {
    assert!(CASES.len() >= 40);
    // Both HTTP/1 paths: fulcrum's own and hyper's.
    let failures: Vec<String> = ["fulcrum", "hyper"]
        .into_iter()
        .flat_map(|engine| {
            matrix(engine)
                .into_iter()
                .map(move |e| format!("http1_engine = {engine}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The cases through a listener on `engine`; what went wrong in each.
fn matrix(engine: &str) -> Vec<String> {
    let backend = Recorder::start();
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\naccess_log = false\nhttp1_engine = \"{engine}\"\n\n[[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n",
        backend.addr
    ));
    let mut failures = Vec::new();
    for (name, bytes, want) in CASES {
        let (status, text) = exchange(f.addr("web"), bytes);
        let got = backend.taken();
        let outcome = match (status, want) {
            (Some(s), Some(w)) if s != *w => Err(format!("status {s}, want {w}")),
            (Some(s), _) if REFUSALS.contains(&s) => match got.len() {
                0 => Ok(()),
                n => Err(format!(
                    "refused with {s}, but {n} request(s) reached the backend"
                )),
            },
            (_, Some(w)) => Err(format!("want a {w} refusal, got {status:?}")),
            (Some(200), None) => match got.as_slice() {
                [one] => unambiguous(one).map_err(|e| {
                    format!(
                        "forwarded ambiguously: {e}: {:?}",
                        String::from_utf8_lossy(&one.raw)
                    )
                }),
                more => Err(format!("{} requests reached the backend", more.len())),
            },
            // A connection closed without an answer is a refusal too, if nothing
            // got through.
            (None, None) if got.is_empty() => Ok(()),
            _ => Err(format!("status {status:?} with {} forwarded", got.len())),
        };
        if let Err(e) = outcome {
            failures.push(format!(
                "{name}: {e}\n  client got: {:?}",
                text.lines().next().unwrap_or("")
            ));
        }
    }
    failures
}
