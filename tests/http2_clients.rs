//! HTTP/2 clients that hold fulcrum's resources: one that opens no stream within
//! `header_read_timeout`, or none for `http2_idle_timeout` after its last, is
//! sent a GOAWAY and closed, while a stream longer than either is not cut; and a client is told how many streams it may open, which
//! bounds what one that reads nothing can pin (the bench measures how much).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use common::{Backend, Fulcrum, PATIENCE};
use http_body_util::Empty;
use hyper::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// An http listener `web` (header_read_timeout 1s, http2_idle_timeout 2s) in
/// front of `backend`.
fn config(backend: &Backend) -> String {
    format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\
         header_read_timeout = \"1s\"\nhttp2_idle_timeout = \"2s\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n",
        backend.addr
    )
}

/// Answers every request with a chunked body of `chunks` pieces, one every
/// 300 ms: a response that outlasts the listener's 1 s timeout.
fn trickling(chunks: usize) -> Backend {
    Backend::start(move |stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let mut line = String::new();
            // The request's head (GETs, no body): up to its empty line.
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    break;
                }
            }
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            if writer.write_all(head.as_bytes()).is_err() {
                return;
            }
            for _ in 0..chunks {
                std::thread::sleep(Duration::from_millis(300));
                if writer.write_all(b"5\r\nchunk\r\n").is_err() {
                    return;
                }
            }
            if writer.write_all(b"0\r\n\r\n").is_err() {
                return;
            }
        }
    })
}

/// The SETTINGS frame a server sends first: its (identifier, value) pairs.
fn first_settings(bytes: &[u8]) -> Vec<(u16, u32)> {
    assert!(
        bytes.len() >= 9 && bytes[3] == 4,
        "no SETTINGS first: {bytes:?}"
    );
    let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
    bytes[9..9 + len]
        .chunks(6)
        .map(|s| {
            let id = u16::from_be_bytes([s[0], s[1]]);
            (id, u32::from_be_bytes([s[2], s[3], s[4], s[5]]))
        })
        .collect()
}

#[test]
fn an_http2_client_that_opens_no_stream_gets_a_goaway_and_is_closed() {
    let backend = trickling(0);
    let f = Fulcrum::run(&config(&backend));
    let mut client = std::net::TcpStream::connect(f.addr("web")).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    // The preface and an empty SETTINGS frame (RFC 9113 §3.4), then nothing.
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let mut got = Vec::new();
    let ended = client.read_to_end(&mut got);
    assert!(ended.is_ok(), "still open after {PATIENCE:?}: {ended:?}");
    let (types, _) = common::raw::h2_frame_types(&got);
    assert_eq!(types.first(), Some(&4), "{types:?}");
    assert!(types.contains(&7), "closed without a GOAWAY: {types:?}");
    // SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §6.5.2): without a bound, one
    // client that read nothing held ~470 KB per stream it opened.
    let settings = first_settings(&got);
    assert!(settings.contains(&(3, 100)), "{settings:?}");
}

#[test]
fn an_http2_client_idle_after_its_requests_is_closed_but_a_long_stream_is_not_cut() {
    let backend = trickling(6);
    let f = Fulcrum::run(&config(&backend));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(f.addr("web")).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        let mut driven = tokio::spawn(conn);
        // A response of ~1.8 s, all of it, on a listener whose timeout is 1 s.
        let req = http::Request::get("http://site.test/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut got = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            if let Ok(data) = frame.unwrap().into_data() {
                got.extend_from_slice(&data);
            }
        }
        assert_eq!(got, b"chunk".repeat(6));
        assert!(
            !driven.is_finished(),
            "the connection ended during the stream"
        );
        // A connection that made requests has http2_idle_timeout (2 s), not
        // header_read_timeout (1 s, which would close it within 1.25 s).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!driven.is_finished(), "closed before http2_idle_timeout");
        // Then nothing more: the connection is ended by fulcrum, cleanly.
        let ended = tokio::time::timeout(PATIENCE, &mut driven).await;
        let ended = ended.expect("an idle HTTP/2 connection was never closed");
        assert!(ended.unwrap().is_ok(), "not a clean end");
    });
}

#[test]
fn an_idle_http2_client_over_tls_gets_a_goaway_and_close_notify() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = trickling(0);
    let pki = common::tls::Pki::new("h2-idle-tls");
    let leaf = pki.issue("site", &["site.test"]);
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"https\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\
         header_read_timeout = \"1s\"\ntls = [{{ cert = {:?}, key = {:?} }}]\n\n\
         [[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n",
        leaf.cert, leaf.key, backend.addr
    ));
    let mut config = common::tls::client_config(&pki.ca_pem);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (types, end) = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(f.addr("web")).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("site.test").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        // A well-behaved client: it acknowledges SETTINGS and answers PINGs (the
        // one a graceful close sends), and sends no request.
        let (mut pending, mut types) = (Vec::new(), Vec::new());
        let mut buf = [0u8; 4096];
        let end = loop {
            let read = tokio::time::timeout(PATIENCE, tls.read(&mut buf)).await;
            match read.expect("the idle connection was never closed") {
                Ok(0) => break Ok(0),
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
            while pending.len() >= 9 {
                let len = usize::from(pending[0]) << 16
                    | usize::from(pending[1]) << 8
                    | usize::from(pending[2]);
                if pending.len() < 9 + len {
                    break;
                }
                let frame: Vec<u8> = pending.drain(..9 + len).collect();
                let (kind, flags) = (frame[3], frame[4]);
                types.push(kind);
                if kind == 4 && flags & 1 == 0 {
                    tls.write_all(b"\0\0\0\x04\x01\0\0\0\0").await.unwrap();
                }
                if kind == 6 && flags & 1 == 0 {
                    let mut pong = b"\0\0\x08\x06\x01\0\0\0\0".to_vec();
                    pong.extend_from_slice(&frame[9..17]);
                    tls.write_all(&pong).await.unwrap();
                }
            }
        };
        (types, end)
    });
    assert!(types.contains(&7), "closed without a GOAWAY: {types:?}");
    // rustls reads a close after close_notify as the end (0 bytes); a bare FIN
    // as a truncation (UnexpectedEof).
    assert!(matches!(end, Ok(0)), "{end:?}");
}
