//! TLS termination end to end: certificates made at test time, the real binary
//! with `protocol = "https"`, and rustls and curl as clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::http::HttpBackend;
use common::tls::{handshake, Leaf, Pki};
use common::Fulcrum;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn https_config(certs: &[&Leaf], extra: &str, backend: &HttpBackend) -> String {
    let tls: Vec<String> = certs
        .iter()
        .map(|l| format!("{{ cert = {:?}, key = {:?} }}", l.cert, l.key))
        .collect();
    format!(
        "[[listener]]\nname = \"web\"\nprotocol = \"https\"\nbind = \"127.0.0.1:0\"\npool = \"web\"\ntls = [{}]\n{extra}\n\n[[pool]]\nname = \"web\"\nbackends = [\"{}\"]\n",
        tls.join(", "),
        backend.addr
    )
}

#[test]
fn sni_picks_the_certificate() {
    let pki = Pki::new("sni");
    let default = pki.issue("default", &["default.test", "127.0.0.1"]);
    let a = pki.issue("a", &["a.test"]);
    let b = pki.issue("b", &["*.b.test"]);
    let web = HttpBackend::start("web");
    let f = Fulcrum::run(&https_config(&[&default, &a, &b], "", &web));
    let addr = f.addr("web");
    let ca = &pki.ca_pem;
    let h1: &[&[u8]] = &[b"http/1.1"];
    assert_eq!(handshake(addr, ca, Some("a.test"), h1).cert, a.der);
    assert_eq!(handshake(addr, ca, Some("A.TEST"), h1).cert, a.der);
    assert_eq!(handshake(addr, ca, Some("x.b.test"), h1).cert, b.der);
    // No SNI: the first certificate.
    let seen = handshake(addr, ca, None, h1);
    assert_eq!(seen.cert, default.der);
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(seen.answer.starts_with("HTTP/1.1 200"), "{}", seen.answer);
    assert!(seen.answer.contains("backend=web"), "{}", seen.answer);
    assert!(
        seen.answer.contains("h:x-forwarded-proto=https"),
        "{}",
        seen.answer
    );
    // ALPN: h2 when offered.
    let h2: &[&[u8]] = &[b"h2", b"http/1.1"];
    assert_eq!(
        handshake(addr, ca, Some("a.test"), h2).alpn.as_deref(),
        Some(&b"h2"[..])
    );
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn curl_verifies_each_name_and_speaks_h2() {
    if !common::have("curl") {
        return;
    }
    let pki = Pki::new("curl");
    let a = pki.issue("a", &["a.test"]);
    let b = pki.issue("b", &["*.b.test"]);
    let web = HttpBackend::start("web");
    let f = Fulcrum::run(&https_config(&[&a, &b], "", &web));
    let port = f.addr("web").port();
    let ca = pki.ca_pem.to_str().unwrap();
    for name in ["a.test", "www.b.test"] {
        let resolve = format!("{name}:{port}:127.0.0.1");
        let url = format!("https://{name}:{port}/curl");
        // curl checks the certificate against the name: the right one was sent.
        let h2 = curl(&[
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            "--http2",
            "-w",
            "\nversion=%{http_version}",
            &url,
        ]);
        assert!(
            h2.contains("backend=web") && h2.contains("path=/curl"),
            "{h2}"
        );
        assert!(h2.contains("version=2"), "{h2}");
        let h1 = curl(&[
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            "--http1.1",
            "-w",
            "\nversion=%{http_version}",
            &url,
        ]);
        assert!(h1.contains("version=1.1"), "{h1}");
    }
}

#[test]
fn sec1_and_rsa_keys_load() {
    if !common::have("openssl") {
        return;
    }
    let pki = Pki::new("keys");
    let ec = pki.issue("ec", &["ec.test"]);
    let sec1 = pki.dir.join("ec-sec1.key");
    let ok = Command::new("openssl")
        .args(["ec", "-in"])
        .arg(&ec.key)
        .arg("-out")
        .arg(&sec1)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(std::fs::read_to_string(&sec1)
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    // An RSA certificate from the test CA, its key then turned into PKCS#1.
    let (rsa_cert, rsa_key) = (pki.dir.join("rsa.pem"), pki.dir.join("rsa.key"));
    let (csr, ext) = (pki.dir.join("rsa.csr"), pki.dir.join("rsa.ext"));
    std::fs::write(&ext, "subjectAltName=DNS:rsa.test\n").unwrap();
    let openssl = |args: &[&std::ffi::OsStr]| {
        let ok = Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "openssl {args:?}");
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    openssl(&[
        os("req"),
        os("-new"),
        os("-newkey"),
        os("rsa:2048"),
        os("-nodes"),
        os("-subj"),
        os("/CN=rsa.test"),
        os("-keyout"),
        rsa_key.as_os_str(),
        os("-out"),
        csr.as_os_str(),
    ]);
    let ca_key = pki.dir.join("ca.key");
    openssl(&[
        os("x509"),
        os("-req"),
        os("-in"),
        csr.as_os_str(),
        os("-CA"),
        pki.ca_pem.as_os_str(),
        os("-CAkey"),
        ca_key.as_os_str(),
        os("-CAcreateserial"),
        os("-days"),
        os("1"),
        os("-extfile"),
        ext.as_os_str(),
        os("-out"),
        rsa_cert.as_os_str(),
    ]);
    let pkcs1 = pki.dir.join("rsa-pkcs1.key");
    let ok = Command::new("openssl")
        .args(["rsa", "-traditional", "-in"])
        .arg(&rsa_key)
        .arg("-out")
        .arg(&pkcs1)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(std::fs::read_to_string(&pkcs1)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    let ec_sec1 = Leaf {
        cert: ec.cert.clone(),
        key: sec1,
        der: ec.der.clone(),
    };
    let rsa = Leaf {
        cert: rsa_cert.clone(),
        key: pkcs1,
        der: ec.der.clone(),
    };
    let web = HttpBackend::start("web");
    let f = Fulcrum::run(&https_config(&[&ec_sec1, &rsa], "", &web));
    let h1: &[&[u8]] = &[b"http/1.1"];
    assert_eq!(
        handshake(f.addr("web"), &pki.ca_pem, Some("ec.test"), h1).cert,
        ec.der
    );
    let seen = handshake(f.addr("web"), &pki.ca_pem, Some("rsa.test"), h1);
    assert!(seen.answer.contains("backend=web"), "{}", seen.answer);
}

fn check(config: &str) -> (i32, String) {
    let path = common::scratch("check.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(common::bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_certificates_are_config_errors_naming_the_file() {
    let pki = Pki::new("bad");
    let a = pki.issue("a", &["a.test"]);
    let b = pki.issue("b", &["b.test"]);
    let web = HttpBackend::start("web");
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let empty = pki.dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = pki.dir.join("missing.key");
    let cases = [
        (
            Leaf {
                cert: a.cert.clone(),
                key: missing.clone(),
                der: a.der.clone(),
            },
            missing.clone(),
        ),
        (
            Leaf {
                cert: a.cert.clone(),
                key: b.key.clone(),
                der: a.der.clone(),
            },
            b.key.clone(),
        ),
        (
            Leaf {
                cert: garbage.clone(),
                key: a.key.clone(),
                der: a.der.clone(),
            },
            garbage.clone(),
        ),
        (
            Leaf {
                cert: empty.clone(),
                key: a.key.clone(),
                der: a.der.clone(),
            },
            empty.clone(),
        ),
        (
            Leaf {
                cert: a.cert.clone(),
                key: a.cert.clone(),
                der: a.der.clone(),
            },
            a.cert.clone(),
        ),
    ];
    for (leaf, named) in cases {
        let (code, err) = check(&https_config(&[&leaf], "", &web));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(":6:7: "), "no line:col: {err}");
        assert!(
            err.contains(named.to_str().unwrap()),
            "{err} does not name {named:?}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, err) = check(&https_config(
        &[&a],
        &format!("client_ca = {:?}", missing),
        &web,
    ));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(":7:13: ") && err.contains("missing.key"),
        "{err}"
    );
}

/// A TLS client that reads a response in steps.
struct Download {
    rt: tokio::runtime::Runtime,
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    got: Vec<u8>,
}

impl Download {
    fn start(addr: std::net::SocketAddr, ca: &Path, name: &str, path: &str) -> Download {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = common::tls::client_config(ca);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let stream = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            tls
        });
        Download {
            rt,
            stream,
            got: Vec::new(),
        }
    }

    fn read(&mut self, at_least: usize) {
        let Download { rt, stream, got } = self;
        rt.block_on(async {
            let mut buf = vec![0u8; 64 * 1024];
            while got.len() < at_least {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        });
    }
}

#[test]
fn reload_swaps_the_certificate_while_a_download_continues() {
    let pki = Pki::new("reload");
    let old = pki.issue("site", &["site.test"]);
    let web = HttpBackend::start("web");
    let mut f = Fulcrum::run(&https_config(&[&old], "", &web));
    let addr = f.addr("web");
    let size = 16 * 1024 * 1024;
    let mut download = Download::start(addr, &pki.ca_pem, "site.test", &format!("/bytes/{size}"));
    download.read(1024 * 1024);
    // New certificate and key in the same files, then SIGHUP.
    let new = pki.issue("site", &["site.test"]);
    assert_ne!(new.der, old.der);
    let said = f.reload(&https_config(&[&new], "", &web));
    assert!(said.contains("reloaded"), "{said}");
    let h1: &[&[u8]] = &[b"http/1.1"];
    assert_eq!(
        handshake(addr, &pki.ca_pem, Some("site.test"), h1).cert,
        new.der
    );
    // The download on the old certificate finishes intact.
    download.read(usize::MAX);
    let text = String::from_utf8_lossy(&download.got[..200]).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let head_end = download
        .got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    let body = &download.got[head_end..];
    assert_eq!(body.len(), size);
    assert!(
        body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
        "body corrupted"
    );
}

#[test]
fn flag_only_https() {
    let pki = Pki::new("flags");
    let a = pki.issue("a", &["a.test", "127.0.0.1"]);
    let web = HttpBackend::start("web");
    let backend = web.addr.to_string();
    let f = Fulcrum::spawn(
        &[
            "http",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &backend,
            "--workers",
            "1",
            "--tls-cert",
            a.cert.to_str().unwrap(),
            "--tls-key",
            a.key.to_str().unwrap(),
        ],
        1,
    );
    let seen = handshake(f.addr("http"), &pki.ca_pem, None, &[b"http/1.1"]);
    assert_eq!(seen.cert, a.der);
    assert!(seen.answer.contains("backend=web"), "{}", seen.answer);
}

/// An https backend (a fulcrum listener named `up`) presenting `leaf`, in front
/// of the HTTP backend `web`.
fn tls_backend(leaf: &Leaf, web: &HttpBackend) -> Fulcrum {
    Fulcrum::run(&format!(
        "[[listener]]\nname = \"up\"\nprotocol = \"https\"\nbind = \"127.0.0.1:0\"\npool = \"web\"\ntls = [{{ cert = {:?}, key = {:?} }}]\n\n[[pool]]\nname = \"web\"\nbackends = [\"{}\"]\n",
        leaf.cert, leaf.key, web.addr
    ))
}

/// A plain http front whose pool reaches `backend` over TLS with `tls`.
fn tls_front(backend: std::net::SocketAddr, tls: &str) -> Fulcrum {
    Fulcrum::run(&format!(
        "[[listener]]\nname = \"front\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"up\"\nconnect_timeout = \"2s\"\n\n[[pool]]\nname = \"up\"\nbackends = [\"{backend}\"]\ntls = {tls}\n"
    ))
}

#[test]
fn upstream_tls_verifies_the_backend() {
    let pki = Pki::new("upstream");
    let good = pki.issue("up", &["up.test"]);
    let expired = pki.issue_expired("old", &["up.test"]);
    let web = HttpBackend::start("U");
    let ca = format!("{:?}", pki.ca_pem);
    let fine = tls_backend(&good, &web);
    let stale = tls_backend(&expired, &web);
    let get = |front: &Fulcrum| common::http::get(front.addr("front"), "/up", &[]);

    let f = tls_front(
        fine.addr("up"),
        &format!("{{ ca = {ca}, sni = \"up.test\" }}"),
    );
    let r = get(&f);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), Some("U"));
    // The second request reuses the pooled TLS connection.
    assert_eq!(get(&f).backend(), Some("U"));

    // A certificate for another name, an expired one, or an unknown CA: refused.
    for (backend, tls) in [
        (
            fine.addr("up"),
            format!("{{ ca = {ca}, sni = \"other.test\" }}"),
        ),
        (
            stale.addr("up"),
            format!("{{ ca = {ca}, sni = \"up.test\" }}"),
        ),
        (fine.addr("up"), "{ sni = \"up.test\" }".to_owned()),
    ] {
        let mut f = tls_front(backend, &tls);
        let r = get(&f);
        assert_eq!(r.status, 503, "{tls}: {}", r.body);
        f.saw("TLS handshake failed");
    }
    // verify = false accepts even the expired one.
    let f = tls_front(stale.addr("up"), "{ verify = false }");
    assert_eq!(get(&f).backend(), Some("U"));
}

#[test]
fn client_certificates_both_ways() {
    let pki = Pki::new("mtls");
    let server = pki.issue("server", &["up.test"]);
    let client = pki.issue("client", &["client.test"]);
    let web = HttpBackend::start("M");
    // The backend asks for a client certificate from the test CA.
    let backend = Fulcrum::run(&format!(
        "[[listener]]\nname = \"up\"\nprotocol = \"https\"\nbind = \"127.0.0.1:0\"\npool = \"web\"\ntls = [{{ cert = {:?}, key = {:?} }}]\nclient_ca = {:?}\n\n[[pool]]\nname = \"web\"\nbackends = [\"{}\"]\n",
        server.cert, server.key, pki.ca_pem, web.addr
    ));
    let ca = format!("{:?}", pki.ca_pem);
    let with = tls_front(
        backend.addr("up"),
        &format!(
            "{{ ca = {ca}, sni = \"up.test\", cert = {:?}, key = {:?} }}",
            client.cert, client.key
        ),
    );
    let r = common::http::get(with.addr("front"), "/m", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), Some("M"));
    let without = tls_front(
        backend.addr("up"),
        &format!("{{ ca = {ca}, sni = \"up.test\" }}"),
    );
    let r = common::http::get(without.addr("front"), "/m", &[]);
    assert_ne!(r.status, 200, "served without a client certificate");
    assert_eq!(web.hits(), 1);
}

#[test]
fn http_health_checks_speak_the_pools_tls() {
    let pki = Pki::new("health-tls");
    let leaf = pki.issue("up", &["up.test"]);
    let web = HttpBackend::start("U");
    let up = tls_backend(&leaf, &web);
    // A status no backend answers: the check fails, and its reason shows it read
    // the backend's HTTP answer through TLS (a plaintext probe would read none).
    let mut f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"front\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"up\"\n\n\
         [[pool]]\nname = \"up\"\nbackends = [\"{}\"]\ntls = {{ ca = {:?}, sni = \"up.test\" }}\n\n\
         [pool.health]\nkind = \"http\"\npath = \"/healthz\"\nexpect_status = \"500\"\ninterval = \"100ms\"\nfall = 1\n",
        up.addr("up"),
        pki.ca_pem
    ));
    let line = f.saw("backend down");
    assert!(
        line.contains("HTTP status 200 outside the expected range"),
        "{line}"
    );
}
