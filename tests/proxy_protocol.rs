//! PROXY protocol end to end: fulcrum sending v1/v2 to a real NGINX that reads it
//! (`listen ... proxy_protocol`), accepting v2 from a real HAProxy in front, the
//! header on a UDP flow's first datagram, and LOCAL headers on health checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::http::HttpBackend;
use common::{connect_from, quoted, scratch, Backend, Fulcrum, PATIENCE};
use fulcrum_l4::proxy_protocol::{parse, Parsed};

/// A process killed when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// NGINX answering every request with the client address the PROXY header gave.
fn nginx_reading_proxy() -> Option<(Killed, SocketAddr)> {
    if !common::have("nginx") {
        return None;
    }
    let dir = scratch("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n    listen 127.0.0.1:{port} proxy_protocol;\n    location / {{ return 200 \"client=$proxy_protocol_addr:$proxy_protocol_port\\n\"; }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off; master_process off;"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    wait_port(port);
    Some((child, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// A GET through `proxy` from source address `from`; the answer and the port used.
fn get_from(from: Ipv4Addr, proxy: SocketAddr) -> (String, u16) {
    let mut s = connect_from(from, proxy);
    let port = s.local_addr().unwrap().port();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    (answer, port)
}

#[test]
fn v1_and_v2_reach_a_real_nginx() {
    let Some((_nginx, addr)) = nginx_reading_proxy() else {
        return;
    };
    for version in ["v1", "v2"] {
        let f = Fulcrum::run(&common::config(
            &[quoted(addr)],
            "round-robin",
            &format!("proxy_protocol = \"{version}\""),
        ));
        let client = Ipv4Addr::new(127, 0, 0, 9);
        let (answer, port) = get_from(client, f.addr("l"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{version}: {answer}");
        assert!(
            answer.contains(&format!("client=127.0.0.9:{port}")),
            "{version}: {answer}"
        );
    }
}

#[test]
fn accepted_from_a_real_haproxy_in_front() {
    if !common::have("haproxy") {
        return;
    }
    let web = HttpBackend::start("web");
    let echo = Backend::echo();
    // fulcrum: a tcp and an http listener, both expecting PROXY headers.
    let mut f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"tcp\"\nbind = \"127.0.0.1:0\"\npool = \"echo\"\naccept_proxy_protocol = true\n\n\
         [[listener]]\nname = \"http\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"web\"\naccept_proxy_protocol = true\n\n\
         [[pool]]\nname = \"echo\"\nbackends = [\"{}\"]\n\n[[pool]]\nname = \"web\"\nbackends = [\"{}\"]\n",
        echo.addr, web.addr
    ));
    let (tcp_front, http_front) = (free_port(), free_port());
    let dir = scratch("haproxy");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = format!(
        "global\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 3s\n  timeout client 30s\n  timeout server 30s\n\
         frontend tcp\n  bind 127.0.0.1:{tcp_front}\n  default_backend tcp\n\
         frontend http\n  bind 127.0.0.1:{http_front}\n  default_backend http\n\
         backend tcp\n  server f {} send-proxy-v2\n\
         backend http\n  server f {} send-proxy-v2\n",
        f.addr("tcp"),
        f.addr("http")
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let _haproxy = Killed(
        Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(tcp_front);
    wait_port(http_front);
    let client = Ipv4Addr::new(127, 0, 0, 7);
    // HTTP: the backend sees the real client in X-Forwarded-For.
    let (answer, _) = get_from(client, SocketAddr::from(([127, 0, 0, 1], http_front)));
    assert!(answer.contains("h:x-forwarded-for=127.0.0.7"), "{answer}");
    // TCP: bytes pass untouched and the access log names the real client.
    let mut s = connect_from(client, SocketAddr::from(([127, 0, 0, 1], tcp_front)));
    let port = s.local_addr().unwrap().port();
    s.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    drop(s);
    let line = f.saw(&format!("client=127.0.0.7:{port}"));
    assert!(line.contains("tcp connection ended"), "{line}");
}

#[test]
fn bad_headers_are_refused_and_others_served() {
    let echo = Backend::echo();
    let mut f = Fulcrum::run(&common::config(
        &[quoted(echo.addr)],
        "round-robin",
        "accept_proxy_protocol = true",
    ));
    let mut s = common::connect(f.addr("l"));
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    f.saw("bad PROXY header");
    let mut s = common::connect(f.addr("l"));
    s.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 5555 80\r\nhi")
        .unwrap();
    let mut back = [0u8; 2];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hi");
}

#[test]
fn udp_flow_first_datagram_carries_v2() {
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    backend.set_read_timeout(Some(PATIENCE)).unwrap();
    let config = format!(
        "[[listener]]\nname = \"u\"\nprotocol = \"udp\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\nproxy_protocol = \"v2\"\n\n[[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n",
        backend.local_addr().unwrap()
    );
    let f = Fulcrum::run(&config);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"first", f.addr("u")).unwrap();
    client.send_to(b"second", f.addr("u")).unwrap();
    let mut buf = [0u8; 2048];
    let n = backend.recv(&mut buf).unwrap();
    let Ok(Parsed::Header {
        len,
        client: Some(real),
    }) = parse(&buf[..n])
    else {
        panic!("no PROXY v2 header: {:?}", &buf[..n]);
    };
    assert_eq!(real, client.local_addr().unwrap());
    assert_eq!(&buf[len..n], b"first");
    let n = backend.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"second");
}

#[test]
fn health_checks_send_local() {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let backend = Backend::start(move |mut s| {
        // The LOCAL header (16 bytes) and "ping".
        let mut buf = [0u8; 20];
        let got = s
            .read_exact(&mut buf)
            .map(|()| buf.to_vec())
            .unwrap_or_default();
        let _ = tx.lock().unwrap().send(got);
    });
    let config = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\nproxy_protocol = \"v2\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [\"{}\"]\n\n[pool.health]\nkind = \"tcp\"\nsend = \"ping\"\ninterval = \"100ms\"\n",
        backend.addr
    );
    let _f = Fulcrum::run(&config);
    let first = rx.recv_timeout(PATIENCE).unwrap();
    match parse(&first) {
        Ok(Parsed::Header { len, client: None }) => assert_eq!(&first[len..], b"ping"),
        other => panic!("health check sent {first:?}: {other:?}"),
    }
}
