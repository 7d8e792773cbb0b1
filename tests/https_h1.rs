//! HTTPS on fulcrum's own HTTP/1 path: a TLS client that pipelines requests (read
//! by rustls with the records before them), keeps its connection alive across a
//! large download and an upload, and upgrades it to a byte relay; and the same
//! through hyper's path, which must agree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::http::HttpBackend;
use common::tls::{client_config, Pki};
use common::Fulcrum;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Reads one response (Content-Length framed, as the test backend answers):
/// its head and its body.
async fn response(tls: &mut (impl AsyncRead + Unpin), pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tls.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before a whole head: {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
    let length = common::raw::content_length(&head);
    while pending.len() < head_end + length {
        let n = tls.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed inside a body");
        pending.extend_from_slice(&chunk[..n]);
    }
    let body = pending[head_end..head_end + length].to_vec();
    pending.drain(..head_end + length);
    (head, body)
}

/// An https listener on `engine`'s path before a test backend, a client that
/// trusts it and offers HTTP/1.1, and a runtime to run the client on.
struct Site {
    _pki: Pki,
    web: HttpBackend,
    f: Fulcrum,
    connector: tokio_rustls::TlsConnector,
    rt: tokio::runtime::Runtime,
}

impl Site {
    async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.f.addr("web"))
            .await
            .unwrap();
        let name = ServerName::try_from("site.test").unwrap();
        self.connector.connect(name, tcp).await.unwrap()
    }
}

/// A `Site` whose listener also has the lines `extra`.
fn start(name: &str, engine: &str, extra: &str) -> Site {
    let pki = Pki::new(&format!("{name}-{engine}"));
    let leaf = pki.issue("site", &["site.test"]);
    let web = HttpBackend::start("web");
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"https\"\nbind = \"127.0.0.1:0\"\npool = \"web\"\n\
         http1_engine = \"{engine}\"\n{extra}tls = [{{ cert = {:?}, key = {:?} }}]\n\n\
         [[pool]]\nname = \"web\"\nbackends = [\"{}\"]\n",
        leaf.cert, leaf.key, web.addr
    ));
    let mut config = client_config(&pki.ca_pem);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Site {
        _pki: pki,
        web,
        f,
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    }
}

fn exercise(engine: &str) {
    let site = start("https-h1", engine, "");
    site.rt.block_on(async {
        let mut tls = site.connect().await;
        let mut pending = Vec::new();
        // A POST exactly as long as one TLS record's plaintext (and fulcrum's
        // read buffer), then a GET in the same write: fulcrum's first read ends
        // with the POST, and the GET is already inside rustls when it next waits.
        let head = "POST /exact HTTP/1.1\r\nHost: site.test\r\nContent-Length: ";
        let fill = 16384 - head.len() - "16000\r\n\r\n".len();
        let mut pipelined = format!("{head}{fill}\r\n\r\n{}", "e".repeat(fill));
        pipelined.push_str("GET /bytes/3000000 HTTP/1.1\r\nHost: site.test\r\n\r\n");
        tls.write_all(pipelined.as_bytes()).await.unwrap();
        let (head, _) = response(&mut tls, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{engine}: {head}");
        let (_, big) = response(&mut tls, &mut pending).await;
        assert_eq!(big.len(), 3_000_000, "{engine}");
        assert!(
            big.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
            "{engine}: bytes intact"
        );
        // 150 requests in one write, more than fulcrum reads at once.
        let mut pipelined = String::new();
        for i in 0..150 {
            let pad = "p".repeat(150);
            pipelined.push_str(&format!(
                "GET /a?{i} HTTP/1.1\r\nHost: site.test\r\nX-Pad: {pad}\r\n\r\n"
            ));
        }
        tls.write_all(pipelined.as_bytes()).await.unwrap();
        for i in 0..150 {
            let (head, body) = response(&mut tls, &mut pending).await;
            let body = String::from_utf8(body).unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{engine}: {head}");
            assert!(body.contains(&format!("path=/a?{i}\n")), "{engine}: {body}");
            assert!(
                body.contains("h:x-forwarded-proto=https\n"),
                "{engine}: {body}"
            );
        }
        // An upload of 2 MiB on the same connection.
        let upload = vec![b'u'; 2 << 20];
        let head = format!(
            "POST /up HTTP/1.1\r\nHost: site.test\r\nContent-Length: {}\r\n\r\n",
            upload.len()
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(&upload).await.unwrap();
        let (head, body) = response(&mut tls, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{engine}: {head}");
        let body = String::from_utf8(body).unwrap();
        assert!(
            body.contains(&format!("body={}\n", "u".repeat(2 << 20))),
            "{engine}: upload intact"
        );
        // Then an upgrade to a byte relay, over the same TLS session.
        tls.write_all(
            b"GET /ws HTTP/1.1\r\nHost: site.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
        let (head, _) = response(&mut tls, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{engine}: {head}");
        tls.write_all(b"ping over tls").await.unwrap();
        let mut echoed = vec![0u8; 13];
        tls.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"ping over tls", "{engine}");
    });
    assert_eq!(site.web.hits(), 154, "{engine}");
}

#[test]
fn https_keeps_alive_pipelines_uploads_and_upgrades_on_the_own_path() {
    exercise("fulcrum");
}

#[test]
fn https_on_hyper_s_path_does_the_same() {
    exercise("hyper");
}

#[test]
fn check_says_the_own_path_serves_https() {
    let pki = Pki::new("https-h1-check");
    let leaf = pki.issue("site", &["site.test"]);
    let text = format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"https\"\nbind = \"127.0.0.1:0\"\npool = \"web\"\n\
         tls = [{{ cert = {:?}, key = {:?} }}]\n\n\
         [[pool]]\nname = \"web\"\nbackends = [\"127.0.0.1:9\"]\n",
        leaf.cert, leaf.key
    );
    let path = common::scratch("https-h1-check.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("HTTP/1 by fulcrum"), "{said}");
}

/// A keep-alive client left idle past `header_read_timeout` on `engine`'s path:
/// what its next read sees once fulcrum closes the connection.
fn idle_close(engine: &str) -> std::io::Result<usize> {
    let site = start("https-idle", engine, "header_read_timeout = \"1s\"\n");
    site.rt.block_on(async {
        let mut tls = site.connect().await;
        tls.write_all(b"GET /a HTTP/1.1\r\nHost: site.test\r\n\r\n")
            .await
            .unwrap();
        let mut pending = Vec::new();
        let (head, _) = response(&mut tls, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{engine}: {head}");
        // Nothing more is sent: fulcrum closes after its idle timeout (bounded
        // here so that a connection it never closes fails the test).
        let mut more = [0u8; 64];
        tokio::time::timeout(std::time::Duration::from_secs(30), tls.read(&mut more))
            .await
            .expect("the idle connection was never closed")
    })
}

#[test]
fn an_idle_https_client_is_closed_with_close_notify() {
    // rustls reads a close after close_notify as the end (0 bytes); a bare FIN
    // as a truncation (UnexpectedEof).
    match idle_close("fulcrum") {
        Ok(0) => {}
        other => panic!("own path: {other:?}"),
    }
}
