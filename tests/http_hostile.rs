//! L7 under hostile and unusual clients: one authority per request, honest errors
//! (a client's fault is a 4xx, never a 502 against a backend), HTTP/2 head limits,
//! TLS clients without a common ALPN protocol, and slow uploads that stall no one.
//! Raw-socket clients; backends that record exactly what they received.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::{exchange, Recorder};
use common::tls::{handshake, Pki};
use common::{Fulcrum, PATIENCE};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// An http listener `web` routing `public.test` to `public` and `admin.test` to
/// `admin`, with `extra` listener keys.
fn two_hosts(public: &Recorder, admin: &Recorder, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\n{extra}\n\n\
         [[listener.route]]\nhost = \"public.test\"\npool = \"public\"\n\n\
         [[listener.route]]\nhost = \"admin.test\"\npool = \"admin\"\n\n\
         [[pool]]\nname = \"public\"\nbackends = [\"{}\"]\n\n\
         [[pool]]\nname = \"admin\"\nbackends = [\"{}\"]\n",
        public.addr, admin.addr
    )
}

#[test]
fn the_target_authority_is_what_is_routed_and_forwarded() {
    let (public, admin) = (Recorder::start(), Recorder::start());
    let f = Fulcrum::run(&two_hosts(&public, &admin, ""));
    let (status, _) = exchange(
        f.addr("web"),
        b"GET http://public.test/x HTTP/1.1\r\nHost: admin.test\r\n\r\n",
    );
    assert_eq!(status, Some(200));
    let got = public.taken();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].all("host"),
        ["public.test"],
        "{:?}",
        String::from_utf8_lossy(&got[0].raw)
    );
    assert!(admin.taken().is_empty());
}

#[test]
fn a_host_with_a_trailing_dot_is_routed_as_that_host() {
    // `admin.test.` is `admin.test` to DNS and to backends' virtual hosts.
    let (public, admin) = (Recorder::start(), Recorder::start());
    let f = Fulcrum::run(&two_hosts(&public, &admin, "pool = \"public\""));
    for host in ["admin.test.", "ADMIN.test.:80"] {
        let ask = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(exchange(f.addr("web"), ask.as_bytes()).0, Some(200));
        assert_eq!(admin.taken().len(), 1, "{host}");
        assert!(public.taken().is_empty(), "{host}");
    }
}

#[test]
fn a_path_is_routed_and_forwarded_as_a_backend_reads_it() {
    // `/admin/` has a pool of its own: a path that a backend reads as /admin/x
    // (RFC 3986 percent-encoding and dot-segment normalization, slashes merged)
    // goes there, as that, unless `normalize_path = false`.
    let (public, admin) = (Recorder::start(), Recorder::start());
    for engine in ["fulcrum", "hyper"] {
        for normalize in [true, false] {
            let f = Fulcrum::run(&format!(
                "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"public\"\n\
                 http1_engine = \"{engine}\"\nnormalize_path = {normalize}\n\n\
                 [[listener.route]]\npath_prefix = \"/admin/\"\npool = \"admin\"\n\n\
                 [[pool]]\nname = \"public\"\nbackends = [\"{}\"]\n\n\
                 [[pool]]\nname = \"admin\"\nbackends = [\"{}\"]\n",
                public.addr, admin.addr
            ));
            for sent in [
                "/%61dmin/x?q=%2e",
                "/public/../admin/x?q=%2e",
                "/%2E%2E/admin/./x?q=%2e",
                "//admin//x?q=%2e",
            ] {
                let ask = format!("GET {sent} HTTP/1.1\r\nHost: a\r\n\r\n");
                assert_eq!(exchange(f.addr("web"), ask.as_bytes()).0, Some(200));
                let (to, other, line) = match normalize {
                    true => (&admin, &public, "GET /admin/x?q=%2e HTTP/1.1".to_owned()),
                    false => (&public, &admin, format!("GET {sent} HTTP/1.1")),
                };
                let got = to.taken();
                assert!(other.taken().is_empty(), "{engine} {normalize} {sent}");
                assert_eq!(got.len(), 1, "{engine} {normalize} {sent}");
                assert_eq!(got[0].request_line, line, "{engine} {normalize}");
            }
        }
    }
}

#[test]
fn a_target_that_is_not_ascii_is_refused_and_a_fragment_dropped_on_both_paths() {
    // RFC 9112 §3.2: raw UTF-8 or other 8-bit bytes in a request target are a
    // 400, never passed on for a backend to decode its own way.
    let (public, admin) = (Recorder::start(), Recorder::start());
    for engine in ["fulcrum", "hyper"] {
        let extra = format!("pool = \"public\"\nhttp1_engine = \"{engine}\"");
        let f = Fulcrum::run(&two_hosts(&public, &admin, &extra));
        for target in [
            &b"/caf\xc3\xa9"[..],
            b"/a\xff",
            b"http://public.test/\xc3\xa9",
        ] {
            let mut ask = b"GET ".to_vec();
            ask.extend_from_slice(target);
            ask.extend_from_slice(b" HTTP/1.1\r\nHost: public.test\r\n\r\n");
            let shown = String::from_utf8_lossy(target);
            assert_eq!(
                exchange(f.addr("web"), &ask).0,
                Some(400),
                "{engine} {shown}"
            );
        }
        // A fragment is the client's own (RFC 9112 §3.2: not in a target): routed
        // and forwarded without it on either path.
        let ask = b"GET /x?q#/../admin HTTP/1.1\r\nHost: public.test\r\n\r\n";
        assert_eq!(exchange(f.addr("web"), ask).0, Some(200), "{engine}");
        let got = public.taken();
        assert_eq!(got.len(), 1, "{engine}");
        assert_eq!(got[0].request_line, "GET /x?q HTTP/1.1", "{engine}");
        // Percent-encoded, the same path is served.
        let ask = b"GET /caf%C3%A9 HTTP/1.1\r\nHost: public.test\r\n\r\n";
        assert_eq!(exchange(f.addr("web"), ask).0, Some(200), "{engine}");
        let got = public.taken();
        assert_eq!(got.len(), 1, "{engine}");
        assert_eq!(got[0].request_line, "GET /caf%C3%A9 HTTP/1.1", "{engine}");
        assert!(admin.taken().is_empty());
    }
}

#[test]
fn duplicate_or_missing_host_is_refused_and_http_1_0_gets_one() {
    let (public, admin) = (Recorder::start(), Recorder::start());
    let f = Fulcrum::run(&two_hosts(&public, &admin, "pool = \"admin\""));
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: public.test\r\nHost: admin.test\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(exchange(f.addr("web"), bytes).0, Some(400));
    }
    assert!(public.taken().is_empty() && admin.taken().is_empty());
    // HTTP/1.0 without Host goes to the default pool as a valid HTTP/1.1 request.
    assert_eq!(
        exchange(f.addr("web"), b"GET /old HTTP/1.0\r\n\r\n").0,
        Some(200)
    );
    let got = admin.taken();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].request_line, "GET /old HTTP/1.1");
    assert_eq!(got[0].all("host"), [admin.addr.to_string()]);
}

/// One HTTP/2 (prior knowledge) request with these extra headers; the status.
fn h2_get(addr: SocketAddr, uri: &str, headers: &[(String, String)]) -> Result<u16, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await
        .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = http::Request::get(uri);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let res = sender
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let _ = res.into_body().collect().await;
        Ok(status)
    })
}

#[test]
fn http2_authority_is_routed_and_forwarded_and_head_limits_hold() {
    let (public, admin) = (Recorder::start(), Recorder::start());
    let f = Fulcrum::run(&two_hosts(&public, &admin, ""));
    let host = vec![("host".to_owned(), "admin.test".to_owned())];
    assert_eq!(
        h2_get(f.addr("web"), "http://public.test/x", &host),
        Ok(200)
    );
    let got = public.taken();
    assert_eq!(got.len(), 1, "routed by :authority");
    assert_eq!(got[0].all("host"), ["public.test"]);
    assert!(admin.taken().is_empty());
    // 101 fields: more than HTTP/1 allows, refused the same way.
    let many: Vec<(String, String)> = (0..101)
        .map(|i| (format!("x-h{i}"), "v".to_owned()))
        .collect();
    assert_eq!(h2_get(f.addr("web"), "http://public.test/", &many), Ok(431));
    // A 70 KB field: past the 64 KiB head limit.
    let big = vec![("x-big".to_owned(), "v".repeat(70 * 1024))];
    match h2_get(f.addr("web"), "http://public.test/", &big) {
        Ok(status) => assert_eq!(status, 431),
        // hyper's client may refuse to send past the limit fulcrum announced.
        Err(e) => assert!(!e.is_empty()),
    }
    assert!(public.taken().is_empty());
}

#[test]
fn a_malformed_client_body_is_a_400_and_never_the_backends_fault() {
    let backend = Recorder::start();
    let mut f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\neject_after = 1\nbackends = [\"{}\"]\n[admin]\nbind = \"127.0.0.1:0\"\n",
        backend.addr
    ));
    for size in ["ffffffffffffffffff", "10000000000000005", "zz"] {
        let req = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n");
        let (status, text) = exchange(f.addr("web"), req.as_bytes());
        assert_eq!(status, Some(400), "chunk size {size}: {text}");
    }
    // A client that goes away mid-upload: logged as 499, its own doing.
    let mut c = TcpStream::connect(f.addr("web")).unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\npartial")
        .unwrap();
    // The head reached the backend once fulcrum forwarded it.
    let deadline = Instant::now() + PATIENCE;
    while backend.incomplete.lock().unwrap().eq(&0) && Instant::now() < deadline {
        drop(c.try_clone().map(|s| s.shutdown(std::net::Shutdown::Both)));
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = f.next_line("http request");
    assert!(
        line.contains("status=400") || line.contains("status=499"),
        "{line}"
    );
    let aborted = f.saw("status=499");
    assert!(aborted.contains("http request"), "{aborted}");
    // The backend is still healthy: nothing was counted against it.
    assert_eq!(
        exchange(f.addr("web"), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").0,
        Some(200)
    );
    assert!(!f.log().contains("ejected"), "{}", f.log());
    assert!(
        !f.log().contains("WARN"),
        "a client's fault logged as a warning:\n{}",
        f.log()
    );
}

/// An https listener `web` with a certificate for `site.test` from a new test CA,
/// in front of a recording backend.
fn https_listener(name: &str) -> (Pki, Fulcrum, Recorder) {
    let web = Recorder::start();
    let pki = Pki::new(name);
    let leaf = pki.issue("site", &["site.test"]);
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"https\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\
         tls = [{{ cert = \"{}\", key = \"{}\" }}]\n\n[[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n",
        leaf.cert.display(),
        leaf.key.display(),
        web.addr
    ));
    (pki, f, web)
}

#[test]
fn tls_clients_without_a_common_alpn_protocol_are_served_http_1() {
    let (pki, f, _web) = https_listener("alpn");
    for offer in [&[&b"http/1.0"[..]][..], &[b"spdy/3", b"foo"]] {
        let seen = handshake(f.addr("web"), &pki.ca_pem, Some("site.test"), offer);
        assert!(
            seen.answer.starts_with("HTTP/1.1 200"),
            "{offer:?}: {:?}",
            seen.answer
        );
    }
    // After ALPN chose h2, HTTP/1.1 bytes are an HTTP/2 connection error, not a 400.
    let seen = handshake(f.addr("web"), &pki.ca_pem, Some("site.test"), &[b"h2"]);
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut config = common::tls::client_config(&pki.ca_pem);
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(f.addr("web")).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("site.test").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut reply)).await;
        reply
    });
    assert!(
        !reply.starts_with(b"HTTP/1.1"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    // What came back is HTTP/2 frames (the server's SETTINGS, and a GOAWAY if
    // the server sends one) and then the end of the connection: h2spec 3.5/2
    // accepts a GOAWAY or a close.
    let (types, at) = common::raw::h2_frame_types(&reply);
    assert_eq!(at, reply.len(), "not HTTP/2 frames: {reply:?}");
    assert!(
        types.first() == Some(&4) && types.iter().all(|t| [4, 7].contains(t)),
        "{types:?}"
    );
}

#[test]
fn a_request_is_answered_at_once_while_500_slow_uploads_hold_connections() {
    // A backend with 32 workers: were the slow uploads passed on as they arrive,
    // they would take every worker and the probe would wait behind them.
    let backend = Recorder::limited(32);
    let f = Fulcrum::run_with(
        &format!(
            "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\naccess_log = false\n\n\
             [[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n",
            backend.addr
        ),
        &["--workers", "2"],
    );
    // 500 clients send a head announcing a 4 KB body (slowhttptest -B's default),
    // and one byte of it.
    let slow: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(f.addr("web")).unwrap();
            s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4096\r\n\r\nx")
                .unwrap();
            s
        })
        .collect();
    for _ in 0..5 {
        let started = Instant::now();
        let (status, _) = exchange(f.addr("web"), b"GET /probe HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(status, Some(200));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "an unrelated request took {took:?}"
        );
    }
    // The slow clients are still waiting (nothing answered them).
    let mut one = [0u8; 1];
    let mut first = &slow[0];
    first
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    assert!(first.read(&mut one).is_err());
}

#[test]
fn a_body_that_stops_arriving_gets_408() {
    let backend = Recorder::start();
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\nbody_read_timeout = \"500ms\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n",
        backend.addr
    ));
    // Within the read-ahead, and past it (streamed to the backend).
    for len in [100, 1_000_000] {
        let head = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend(std::iter::repeat_n(b'x', (70 * 1024).min(len - 1)));
        let (status, text) = exchange(f.addr("web"), &bytes);
        assert_eq!(status, Some(408), "{len}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
    }
    assert!(backend.taken().is_empty());
}

#[test]
fn chunked_trailers_are_carried_both_ways() {
    // A backend that answers chunked, with a trailer it declares.
    let backend = common::Backend::start(|mut s| {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(5).any(|w| w == b"0\r\n\r\n") && !got.ends_with(b"\r\n\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            // The request's own trailer section ends with an empty line.
            if find(&got, b"x-checksum: abc\r\n\r\n").is_some() {
                break;
            }
        }
        let request = String::from_utf8_lossy(&got).to_ascii_lowercase();
        let saw = if request.contains("\r\n0\r\nx-checksum: abc\r\n\r\n") {
            "yes"
        } else {
            "no"
        };
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-status\r\n\r\n3\r\n{saw}\r\n0\r\nx-status: done\r\n\r\n"
        );
        let _ = s.read(&mut buf);
    });
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n",
        backend.addr
    ));
    let mut c = TcpStream::connect(f.addr("web")).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.write_all(
        b"POST / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nTrailer: x-checksum\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while find(&got, b"x-status: done\r\n\r\n").is_none() {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(
        text.contains("\r\nyes\r\n"),
        "the request's trailer did not reach the backend: {text}"
    );
    assert!(
        text.contains("0\r\nx-status: done\r\n\r\n"),
        "the response's trailer was lost: {text}"
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn tls_prefers_the_servers_cipher_order() {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
    let (pki, f, _web) = https_listener("ciphers");
    // The client prefers ChaCha20; the server lists AES-GCM first.
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
        ],
        ..default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_file_iter(&pki.ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let suite = rt.block_on(async {
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(f.addr("web")).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("site.test").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite())
    });
    assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
}

#[test]
fn a_body_over_max_request_body_gets_413_and_the_backend_sees_none_of_it() {
    let (public, admin) = (Recorder::start(), Recorder::start());
    let f = Fulcrum::run(&two_hosts(&public, &admin, "max_request_body = \"10KiB\""));
    // A declared length past the limit: refused before a byte of it is read.
    let (status, text) = exchange(
        f.addr("web"),
        b"POST /up HTTP/1.1\r\nHost: public.test\r\nContent-Length: 10485760\r\n\r\n",
    );
    assert_eq!(status, Some(413), "{text}");
    assert!(text.contains("at most 10240 bytes"), "{text}");
    // Chunked, so only counting tells: past 10 KiB, 413.
    let mut chunked =
        b"POST /up HTTP/1.1\r\nHost: public.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"1000\r\n");
        chunked.extend_from_slice(&[b'x'; 0x1000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = exchange(f.addr("web"), &chunked);
    assert_eq!(status, Some(413), "{text}");
    // Within the limit, as before.
    let (status, _) = exchange(
        f.addr("web"),
        b"POST /up HTTP/1.1\r\nHost: public.test\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(status, Some(200));
    let got = public.taken();
    assert_eq!(got.len(), 1, "only the small one reached the backend");
    assert_eq!(got[0].body, b"hello");
}

#[test]
fn a_client_stalling_inside_the_http2_preface_is_closed_after_header_read_timeout() {
    let backend = Recorder::start();
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\nheader_read_timeout = \"300ms\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n",
        backend.addr
    ));
    // A prefix of the preface, then nothing: neither HTTP/1 nor HTTP/2 yet.
    let mut c = TcpStream::connect(f.addr("web")).unwrap();
    c.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    // Closed: an end of stream, or a reset for the bytes it never read.
    match c.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("not closed within {PATIENCE:?}: {e}"),
    }
    assert!(backend.taken().is_empty());
    // The listener still serves.
    let (status, _) = exchange(f.addr("web"), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status, Some(200));
}
