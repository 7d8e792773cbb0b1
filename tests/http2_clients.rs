//! HTTP/2 clients that hold fulcrum's resources: one that opens no stream within
//! `header_read_timeout`, or none for `http2_idle_timeout` after its last, is
//! sent a GOAWAY and closed, while a stream longer than either is not cut; a
//! client is told how many streams it may open, which bounds what one that reads
//! nothing can pin (the bench measures how much); and its streams together read
//! ahead at most four `request_buffer`s of upload.
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

/// The lines of the next request head, up to its empty line; `None` once the
/// connection ends.
fn head_lines(reader: &mut BufReader<std::net::TcpStream>) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(lines);
        }
        lines.push(line);
    }
}

/// Answers every request with a chunked body of `chunks` pieces, one every
/// 300 ms: a response that outlasts the listener's 1 s timeout.
fn trickling(chunks: usize) -> Backend {
    Backend::start(move |stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        // Each request's head (GETs, no body).
        while head_lines(&mut reader).is_some() {
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An h2c (prior knowledge) client connection to `addr`, driven by a task of its
/// own (whose handle ends when the connection does).
async fn h2_connect<B>(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    (sender, tokio::spawn(conn))
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
    runtime().block_on(async {
        let (mut sender, mut driven) = h2_connect(f.addr("web")).await;
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
    let (types, end) = runtime().block_on(async {
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

/// A request body sent as the test hands it pieces; it ends when the sender drops.
struct Upload(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

impl Body for Upload {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|piece| piece.map(|data| Ok(hyper::body::Frame::data(data))))
    }
}

/// Reads requests with a Content-Length body, counting each head as it comes
/// (in `heads`), and answers each 200 once its body is all there.
fn counting_heads(heads: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Backend {
    let heads = std::sync::Arc::clone(heads);
    Backend::start(move |stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        while let Some(lines) = head_lines(&mut reader) {
            let length = lines
                .iter()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            heads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if writer.write_all(ok).is_err() {
                return;
            }
        }
    })
}

#[test]
fn an_http2_clients_streams_together_read_ahead_at_most_four_request_buffers() {
    // 8 uploads at once, each stopping at 12 KiB of 16: one connection's streams
    // may hold 4 x request_buffer (64 KiB) read ahead; the others stream to the
    // backend as their bytes come. Without the bound all 8 were held (100
    // streams that each stop short of request_buffer held 7.5 MB a connection).
    let heads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let backend = counting_heads(&heads);
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\
         request_buffer = \"16KiB\"\n\n[[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n",
        backend.addr
    ));
    runtime().block_on(async {
        let (sender, _driven) = h2_connect(f.addr("web")).await;
        let mut uploads = Vec::new();
        let mut answers = Vec::new();
        for i in 0..8 {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let req = http::Request::post(format!("http://site.test/up/{i}"))
                .header("content-length", "16384")
                .body(Upload(rx))
                .unwrap();
            let mut sender = sender.clone();
            answers.push(tokio::spawn(async move { sender.send_request(req).await }));
            tx.send(Bytes::from(vec![b'a'; 12 * 1024])).unwrap();
            uploads.push(tx);
        }
        // Bodies unfinished: only the streams past the bound reach the backend.
        let until = std::time::Instant::now() + PATIENCE;
        while heads.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < until,
                "no upload reached the backend while all 8 were unfinished: each held read ahead"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let early = heads.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            early <= 4,
            "{early} of 8 streamed at once: read-ahead was not used"
        );
        // Then every body ends, and each one arrives whole either way.
        for tx in uploads {
            tx.send(Bytes::from(vec![b'b'; 4 * 1024])).unwrap();
        }
        for answer in answers {
            let response = answer.await.unwrap().unwrap();
            assert_eq!(response.status(), 200);
        }
    });
    assert_eq!(heads.load(std::sync::atomic::Ordering::SeqCst), 8);
}
