//! HTTP test peers on real sockets: a hyper backend that answers with what it saw
//! (its name, the method, path and headers) and echoes upgraded connections, and a
//! keep-alive hyper client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP/1.1 backend on 127.0.0.1:0, served by its own thread until the test ends.
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub name: &'static str,
    /// Requests served so far.
    pub hits: Arc<AtomicUsize>,
    stop: Option<(tokio::sync::oneshot::Sender<()>, thread::JoinHandle<()>)>,
}

impl HttpBackend {
    /// Answers every request `200` with `backend=NAME`, then `method`, `path`,
    /// `body` and one `h:name=value` line per request header.
    pub fn start(name: &'static str) -> HttpBackend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let mut stopped = std::pin::pin!(stopped);
                loop {
                    let accepted = tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((stream, _)) = accepted else {
                        continue;
                    };
                    let counter = Arc::clone(&counter);
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            counter.fetch_add(1, Ordering::Relaxed);
                            answer(name, req)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    });
                }
            });
        });
        HttpBackend {
            addr,
            name,
            hits,
            stop: Some((stop, thread)),
        }
    }

    /// Closes the listener and every connection (its event loop ends).
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.stop.take() {
            let _ = stop.send(());
            thread.join().unwrap();
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

async fn answer(
    name: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.headers().contains_key(http::header::UPGRADE) {
        // Switch protocols, then echo every byte back (a stand-in for WebSocket).
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    if let Some(n) = req.uri().path().strip_prefix("/bytes/") {
        // A large body in a pattern that shows any lost or reordered byte.
        let n: usize = n.parse().unwrap_or(0);
        let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        return Ok(Response::new(Full::new(Bytes::from(body))));
    }
    let mut text = format!(
        "backend={name}\nmethod={}\npath={}\n",
        req.method(),
        req.uri()
    );
    for (k, v) in req.headers() {
        text.push_str(&format!("h:{k}={}\n", v.to_str().unwrap_or("?")));
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    text.push_str(&format!(
        "body={}\n",
        String::from_utf8_lossy(&body.unwrap_or_default())
    ));
    Ok(Response::builder()
        .header("x-backend", name)
        .header("x-secret", "internal")
        .body(Full::new(Bytes::from(text)))
        .unwrap())
}

/// A backend's answer as the client got it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The backend that answered (`backend=` line), if one did.
    pub fn backend(&self) -> Option<&str> {
        self.line("backend")
    }

    /// The value of a `key=value` line of the body.
    pub fn line(&self, key: &str) -> Option<&str> {
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    /// The value the backend saw for request header `name`.
    pub fn seen(&self, name: &str) -> Option<&str> {
        self.line(&format!("h:{name}"))
    }
}

/// A keep-alive HTTP/1.1 client on one connection.
pub struct HttpClient {
    rt: tokio::runtime::Runtime,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl HttpClient {
    pub fn connect(addr: SocketAddr) -> HttpClient {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sender = rt.block_on(async {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn.with_upgrades());
            sender
        });
        HttpClient { rt, sender }
    }

    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", path, headers, "")
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", "test.local");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        self.rt.block_on(async {
            self.sender.ready().await.unwrap();
            let res = self.sender.send_request(req).await.unwrap();
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            Reply {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        })
    }

    /// Sends an Upgrade request; on 101, writes `message` on the upgraded
    /// connection and returns what comes back.
    pub fn upgrade_echo(&mut self, path: &str, message: &[u8]) -> (u16, Vec<u8>) {
        let req = Request::builder()
            .uri(path)
            .header("host", "test.local")
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.rt.block_on(async {
            self.sender.ready().await.unwrap();
            let res = self.sender.send_request(req).await.unwrap();
            let status = res.status().as_u16();
            if status != 101 {
                return (status, Vec::new());
            }
            let mut io = TokioIo::new(hyper::upgrade::on(res).await.unwrap());
            io.write_all(message).await.unwrap();
            let mut back = vec![0u8; message.len()];
            io.read_exact(&mut back).await.unwrap();
            (status, back)
        })
    }
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    HttpClient::connect(addr).get(path, headers)
}
