//! HTTP/2 pools against backends built on the `h2` crate, which can do what
//! hyper's server will not: refuse streams unprocessed (RST_STREAM with
//! REFUSED_STREAM) and count the connections and streams they were sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::Fulcrum;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// What an h2 backend was sent.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    streams: AtomicUsize,
}

/// An h2c backend on 127.0.0.1:0 in a thread of its own: refuses every stream
/// with REFUSED_STREAM when `refuse`, else answers 200 with the request's body.
fn h2_backend(refuse: bool) -> (SocketAddr, Arc<Seen>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counts = Arc::clone(&seen);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let counts = Arc::clone(&counts);
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        counts.streams.fetch_add(1, Ordering::SeqCst);
                        if refuse {
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                            continue;
                        }
                        tokio::spawn(async move {
                            let mut body = req.into_body();
                            let mut got = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                got.extend_from_slice(&chunk);
                            }
                            let head = Response::builder().status(200).body(()).unwrap();
                            if let Ok(mut send) = respond.send_response(head, false) {
                                let _ = send.send_data(Bytes::from(got), true);
                            }
                        });
                    }
                });
            }
        });
    });
    (addr, seen)
}

/// Sends `count` POSTs with `body` to `addr` over HTTP/1.1, `at_once` of them in
/// flight at a time (each on a connection of its own), and returns each
/// answer's status and body.
fn post_many(
    addr: SocketAddr,
    count: usize,
    at_once: usize,
    body: &'static str,
) -> Vec<(u16, Bytes)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut answers = Vec::new();
        for _ in 0..count.div_ceil(at_once) {
            let mut batch = tokio::task::JoinSet::new();
            for _ in 0..at_once.min(count - answers.len()) {
                batch.spawn(async move {
                    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                            .await
                            .unwrap();
                    tokio::spawn(conn);
                    let req = Request::post("http://h2.test/submit")
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap();
                    let response = sender.send_request(req).await.unwrap();
                    let status = response.status().as_u16();
                    let got = response.into_body().collect().await.unwrap().to_bytes();
                    (status, got)
                });
            }
            while let Some(answer) = batch.join_next().await {
                answers.push(answer.unwrap());
            }
        }
        answers
    })
}

fn h2_pool(backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"h2\"\n\n\
         [[pool]]\nname = \"h2\"\nhttp_version = \"2\"\nbackends = [{}]\n",
        list.join(", ")
    )
}

/// RFC 9113 §8.7: a request on a stream reset with REFUSED_STREAM was not
/// processed and may be sent again, whatever its method and without `retry_on`.
#[test]
fn a_stream_the_backend_refuses_is_sent_to_another_backend() {
    let (refusing, refused) = h2_backend(true);
    let (serving, served) = h2_backend(false);
    let f = Fulcrum::run(&h2_pool(&[refusing, serving]));
    let answers = post_many(f.addr("web"), 12, 1, "order #1");
    for (status, body) in &answers {
        assert_eq!((*status, body.as_ref()), (200, b"order #1".as_ref()));
    }
    assert!(
        refused.streams.load(Ordering::SeqCst) >= 3,
        "the refusing backend was tried"
    );
    assert_eq!(served.streams.load(Ordering::SeqCst), 12);
}

/// A burst of requests on a worker with no connection to the backend yet waits
/// for the one being opened instead of each opening its own.
#[test]
fn a_burst_on_a_cold_worker_shares_one_connection() {
    let (backend, seen) = h2_backend(false);
    let f = Fulcrum::run(&h2_pool(&[backend]));
    let answers = post_many(f.addr("web"), 40, 40, "burst");
    assert!(answers
        .iter()
        .all(|(status, body)| *status == 200 && body.as_ref() == b"burst"));
    assert_eq!(seen.streams.load(Ordering::SeqCst), 40);
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "one worker, one backend"
    );
}
