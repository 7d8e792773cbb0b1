//! The same pipelined requests to fulcrum's HTTP/1 framing and to hyper's server:
//! wherever both accept a message whole, they must agree on where it ends (its
//! method, target and decoded body length, and so on for every later message).
//! Where one refuses what the other accepts, fulcrum is stricter on purpose (see
//! the README's Fuzzing section); that is not a failure.
#![no_main]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use fulcrum_l7::h1::{Framer, Kind};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Seen = Vec<(String, String, u64)>;

fn ours(stream: &[u8]) -> Seen {
    // Every message that ended before an error is compared all the same.
    let mut done = Vec::new();
    let _ = Framer::new(Kind::Request).push(stream, &mut done);
    done.into_iter().map(describe).collect()
}

fn describe(f: fulcrum_l7::h1::Framed) -> (String, String, u64) {
    let text = |r: std::ops::Range<usize>| String::from_utf8_lossy(&f.head[r]).into_owned();
    (
        text(f.message.method.clone()),
        text(f.message.target.clone()),
        f.body_len,
    )
}

fn hypers(stream: &[u8]) -> Seen {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        return Vec::new();
    };
    let record = Arc::clone(&seen);
    runtime.block_on(async move {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let service = service_fn(move |req: Request<Incoming>| {
            let record = Arc::clone(&record);
            async move {
                let method = req.method().to_string();
                let target = req.uri().to_string();
                if let Ok(body) = req.into_body().collect().await {
                    let len = body.to_bytes().len() as u64;
                    record
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((method, target, len));
                }
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        });
        let conn = http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let feed = async {
            let _ = client.write_all(stream).await;
            let _ = client.shutdown().await;
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::join!(conn, feed)
        })
        .await;
    });
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    seen
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = (ours(data), hypers(data));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        // hyper shows the target as it parsed it (`http://a` becomes `http://a/`):
        // compare methods and body lengths, which fix where each message ends.
        assert_eq!(
            (&x.0, x.2),
            (&y.0, y.2),
            "message {i}: fulcrum {a:?} hyper {b:?}"
        );
    }
});
