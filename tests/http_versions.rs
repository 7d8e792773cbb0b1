//! Any client HTTP version to any backend HTTP version: an HTTP/1.1 client to an
//! HTTP/2 (h2c) pool and an HTTP/2 client to an HTTP/1.1 pool, with bodies of
//! 0 B, 1 MiB and 100 MiB echoed back intact and trailers carried both ways. The
//! backend is a hyper server that speaks both and says which it was spoken to in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::{Fulcrum, Pattern};
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Serves on 127.0.0.1:0 in a thread of its own: every request's body (and
/// trailers) comes back as the response body, with `x-spoken` naming the HTTP
/// version the request arrived in and the request's `trailer` declaration copied.
fn start_echo() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let spoken = format!("{:?}", req.version());
                        let declared = req.headers().get(http::header::TRAILER).cloned();
                        let mut response = Response::new(req.into_body());
                        let headers = response.headers_mut();
                        headers.insert("x-spoken", HeaderValue::from_str(&spoken).unwrap());
                        if let Some(declared) = declared {
                            headers.insert(http::header::TRAILER, declared);
                        }
                        Ok::<_, Infallible>(response)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
    });
    addr
}

/// `len` bytes of a fixed pattern in 64 KiB frames, then trailers if any.
struct Generated {
    left: usize,
    pattern: Pattern,
    trailers: Option<HeaderMap>,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        let n = self.left.min(64 * 1024);
        let mut chunk = vec![0; n];
        self.pattern.fill(&mut chunk);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

/// FNV-1a over a stream of chunks.
#[derive(Default, PartialEq, Debug, Clone, Copy)]
struct Digest {
    len: usize,
    hash: u64,
}

impl Digest {
    fn add(&mut self, bytes: &[u8]) {
        if self.len == 0 {
            self.hash = 0xcbf2_9ce4_8422_2325;
        }
        for &b in bytes {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.len += bytes.len();
    }
}

fn expected(len: usize) -> Digest {
    let mut body = Generated {
        left: len,
        pattern: Pattern::new(7),
        trailers: None,
    };
    let mut digest = Digest::default();
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
        digest.add(frame.data_ref().unwrap());
    }
    digest
}

/// What came back: the backend's version, the body's digest, the trailers.
struct Echoed {
    spoken: String,
    digest: Digest,
    trailers: Option<HeaderMap>,
}

/// POSTs `len` bytes (with an `x-sum` trailer when `trailers`) to `addr` in
/// `version` (HTTP/2 by prior knowledge).
fn post(addr: SocketAddr, version: Version, len: usize, trailers: bool) -> Echoed {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut trailer_map = HeaderMap::new();
        trailer_map.insert("x-sum", HeaderValue::from_static("42"));
        let body = Generated {
            left: len,
            pattern: Pattern::new(7),
            trailers: trailers.then_some(trailer_map),
        };
        let mut req = Request::post(format!("http://echo.test/{len}"));
        if trailers {
            // HTTP/1.1 carries trailer fields it was told of (RFC 9110 §6.6.2).
            req = req.header("trailer", "x-sum").header("te", "trailers");
        }
        let req = req.body(body).unwrap();
        let response = if version == Version::HTTP_2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        };
        assert_eq!(response.status(), 200);
        let spoken = response.headers()["x-spoken"].to_str().unwrap().to_owned();
        let mut body = response.into_body();
        let mut digest = Digest::default();
        let mut trailers = None;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            match frame.unwrap().into_data() {
                Ok(data) => digest.add(&data),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        Echoed {
            spoken,
            digest,
            trailers,
        }
    })
}

#[test]
fn http1_clients_reach_http2_backends_and_http2_clients_reach_http1_backends() {
    let echo = start_echo();
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"to_h2\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"h2\"\n\n\
         [[listener]]\nname = \"to_h1\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"h1\"\n\n\
         [[pool]]\nname = \"h2\"\nhttp_version = \"2\"\nbackends = [\"{echo}\"]\n\n\
         [[pool]]\nname = \"h1\"\nbackends = [\"{echo}\"]\n"
    ));
    for (listener, client, backend) in [
        ("to_h2", Version::HTTP_11, "HTTP/2.0"),
        ("to_h1", Version::HTTP_2, "HTTP/1.1"),
    ] {
        for len in [0, 1 << 20, 100 << 20] {
            let got = post(f.addr(listener), client, len, false);
            assert_eq!(got.spoken, backend, "{listener}");
            assert_eq!(got.digest, expected(len), "{listener}, {len} bytes");
        }
        // Trailers both ways: the client's reach the backend, which echoes them.
        let got = post(f.addr(listener), client, 1 << 20, true);
        assert_eq!(got.digest, expected(1 << 20), "{listener} with trailers");
        let trailers = got
            .trailers
            .unwrap_or_else(|| panic!("{listener}: no trailers"));
        assert_eq!(trailers["x-sum"], "42", "{listener}");
    }
}
