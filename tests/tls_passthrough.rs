//! TLS passthrough end to end: `protocol = "tls"` listeners routing by SNI to
//! backends that terminate TLS themselves (fulcrum https listeners here), and
//! refusing what is not a ClientHello.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::http::HttpBackend;
use common::tls::{handshake, Leaf, Pki};
use common::Fulcrum;

/// Two https listeners in one process, standing in for backends that terminate
/// TLS themselves: `a` serves a.test with backend "A", `b` serves *.b.test with "B".
fn tls_backends(pki: &Pki, a: &HttpBackend, b: &HttpBackend) -> (Fulcrum, Leaf, Leaf) {
    let ca = pki.issue("a", &["a.test"]);
    let cb = pki.issue("b", &["*.b.test"]);
    let config = format!(
        "[[listener]]\nname = \"a\"\nprotocol = \"https\"\nbind = \"127.0.0.1:0\"\npool = \"a\"\ntls = [{{ cert = {:?}, key = {:?} }}]\n\n\
         [[listener]]\nname = \"b\"\nprotocol = \"https\"\nbind = \"127.0.0.1:0\"\npool = \"b\"\ntls = [{{ cert = {:?}, key = {:?} }}]\n\n\
         [[pool]]\nname = \"a\"\nbackends = [\"{}\"]\n\n[[pool]]\nname = \"b\"\nbackends = [\"{}\"]\n",
        ca.cert, ca.key, cb.cert, cb.key, a.addr, b.addr
    );
    (Fulcrum::run(&config), ca, cb)
}

fn passthrough(backends: &Fulcrum, extra_routes: &str, default: Option<&str>) -> Fulcrum {
    let pool = default.map_or(String::new(), |p| format!("pool = \"{p}\"\n"));
    Fulcrum::run(&format!(
        "[[listener]]\nname = \"tls\"\nprotocol = \"tls\"\nbind = \"127.0.0.1:0\"\n{pool}\n\
         [[listener.route]]\nsni = \"a.test\"\npool = \"a\"\n\n\
         [[listener.route]]\nsni = \"*.b.test\"\npool = \"b\"\n{extra_routes}\n\
         [[pool]]\nname = \"a\"\nbackends = [\"{}\"]\n\n[[pool]]\nname = \"b\"\nbackends = [\"{}\"]\n",
        backends.addr("a"),
        backends.addr("b")
    ))
}

#[test]
fn passthrough_routes_by_sni_to_backends_that_terminate_tls() {
    let pki = Pki::new("pass");
    let (web_a, web_b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let (backends, ca, cb) = tls_backends(&pki, &web_a, &web_b);
    let f = passthrough(&backends, "", None);
    let addr = f.addr("tls");
    let h1: &[&[u8]] = &[b"http/1.1"];
    let seen = handshake(addr, &pki.ca_pem, Some("a.test"), h1);
    assert_eq!(seen.cert, ca.der, "a.test got another certificate");
    assert!(seen.answer.contains("backend=A"), "{}", seen.answer);
    let seen = handshake(addr, &pki.ca_pem, Some("www.b.test"), h1);
    assert_eq!(seen.cert, cb.der);
    assert!(seen.answer.contains("backend=B"), "{}", seen.answer);
    // ALPN is the backend's business: h2 passes through.
    let h2: &[&[u8]] = &[b"h2"];
    assert_eq!(
        handshake(addr, &pki.ca_pem, Some("a.test"), h2)
            .alpn
            .as_deref(),
        Some(&b"h2"[..])
    );
}

/// Sends `bytes` (then half-closes when asked) and returns what came back before
/// fulcrum closed the connection.
fn refused(addr: std::net::SocketAddr, bytes: &[u8], shut: bool) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = common::connect(addr);
    s.write_all(bytes).unwrap();
    if shut {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    back
}

#[test]
fn garbage_truncated_and_unrouted_hellos_are_closed() {
    let pki = Pki::new("garbage");
    let (web_a, web_b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let (backends, _, _) = tls_backends(&pki, &web_a, &web_b);
    let mut f = passthrough(&backends, "", None);
    let addr = f.addr("tls");
    // Plain HTTP, a handshake record that is not a ClientHello, a truncated hello.
    assert!(refused(addr, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", false).is_empty());
    assert!(refused(addr, &[22, 3, 1, 0, 4, 2, 0, 0, 0], false).is_empty());
    assert!(refused(addr, &[22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3], true).is_empty());
    f.saw("not a TLS ClientHello");
    // A name no route has, and no default pool.
    let h1: &[&[u8]] = &[b"http/1.1"];
    let unrouted = std::panic::catch_unwind(|| handshake(addr, &pki.ca_pem, Some("c.test"), h1));
    assert!(unrouted.is_err(), "an unrouted name was served");
    f.saw("no route for this server name");
    // Nothing else was disturbed.
    assert!(handshake(addr, &pki.ca_pem, Some("a.test"), h1)
        .answer
        .contains("backend=A"));
    assert_eq!(web_a.hits() + web_b.hits(), 1);
}

#[test]
fn passthrough_default_pool() {
    let pki = Pki::new("default");
    let (web_a, web_b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let (backends, ca, _) = tls_backends(&pki, &web_a, &web_b);
    // Unknown names and hellos without SNI go to the default pool (a).
    let f = passthrough(&backends, "", Some("a"));
    let h1: &[&[u8]] = &[b"http/1.1"];
    let seen = handshake(f.addr("tls"), &pki.ca_pem, Some("a.test"), h1);
    assert_eq!(seen.cert, ca.der);
    let out =
        std::panic::catch_unwind(|| handshake(f.addr("tls"), &pki.ca_pem, Some("other.test"), h1));
    // The a.test certificate does not cover other.test: the client refuses it, but
    // it was the default backend that answered.
    assert!(out.is_err());
}

#[test]
fn hash_on_sni_keeps_a_name_on_one_backend() {
    let pki = Pki::new("hash");
    let cert = pki.issue("any", &["*.hash.test"]);
    let (web_a, web_b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let listener = |name: &str| {
        format!(
            "[[listener]]\nname = \"{name}\"\nprotocol = \"https\"\nbind = \"127.0.0.1:0\"\npool = \"{name}\"\ntls = [{{ cert = {:?}, key = {:?} }}]\n",
            cert.cert, cert.key
        )
    };
    let backends = Fulcrum::run(&format!(
        "{}\n{}\n[[pool]]\nname = \"a\"\nbackends = [\"{}\"]\n\n[[pool]]\nname = \"b\"\nbackends = [\"{}\"]\n",
        listener("a"),
        listener("b"),
        web_a.addr,
        web_b.addr
    ));
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"tls\"\nprotocol = \"tls\"\nbind = \"127.0.0.1:0\"\npool = \"both\"\n\n\
         [[pool]]\nname = \"both\"\nalgorithm = \"hash\"\nhash_key = \"sni\"\nbackends = [\"{}\", \"{}\"]\n",
        backends.addr("a"),
        backends.addr("b")
    ));
    let h1: &[&[u8]] = &[b"http/1.1"];
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        let name = format!("n{i}.hash.test");
        let first = handshake(f.addr("tls"), &pki.ca_pem, Some(&name), h1).answer;
        let backend = if first.contains("backend=A") {
            "A"
        } else {
            "B"
        };
        for _ in 0..2 {
            let again = handshake(f.addr("tls"), &pki.ca_pem, Some(&name), h1).answer;
            assert!(
                again.contains(&format!("backend={backend}")),
                "{name} moved"
            );
        }
        seen.insert(backend);
    }
    assert_eq!(seen.len(), 2, "20 names all went to {seen:?}");
}
