//! A real DNS server (dnsmasq) for tests that put DNS traffic through fulcrum,
//! and the few bytes of RFC 1035 they need to ask it and read its answers.

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::scratch;

pub struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts dnsmasq answering `name` with `ip` on a free port, and waits until it
/// answers; `None` when dnsmasq is not installed (CI sets FULCRUM_REQUIRE_TOOLS=1 so
/// that this fails instead).
pub fn dnsmasq(name: &str, ip: &str) -> Option<(Dnsmasq, SocketAddr)> {
    // dnsmasq binds TCP and UDP on its port: a port free for UDP can still be taken
    // for TCP, so a start that fails is retried on another port.
    for _ in 0..20 {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("port")
            .port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--address=/{name}/{ip}"))
            .arg(format!("--pid-file={}", scratch("dnsmasq.pid").display()))
            .arg("--user=root")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut dns = match child {
            Ok(child) => Dnsmasq(child),
            Err(e) if std::env::var_os("FULCRUM_REQUIRE_TOOLS").is_some() => panic!("dnsmasq: {e}"),
            Err(e) => {
                // Past the harness's capture, so the skip shows (see common::have).
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: dnsmasq not available ({e}); apt-get install dnsmasq-base"
                );
                return None;
            }
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if answers(&mut dns, addr, name) {
            return Some((dns, addr));
        }
    }
    panic!("dnsmasq did not start on any of 20 ports");
}

/// Whether dnsmasq answers directly (it may still be starting, or have exited).
fn answers(dns: &mut Dnsmasq, addr: SocketAddr, name: &str) -> bool {
    let c = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let query = dns_query(0, name);
    let mut buf = [0u8; 512];
    for _ in 0..50 {
        if matches!(dns.0.try_wait(), Ok(Some(_))) {
            return false;
        }
        let _ = c.send_to(&query, addr);
        if c.recv_from(&mut buf).is_ok() {
            return true;
        }
    }
    false
}

/// A DNS query for `name`, type A, with id `id` (RFC 1035 section 4.1).
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; 1 question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    q
}

/// The id and the first A record of a DNS response (answers with compressed names).
pub fn dns_answer(response: &[u8], question_len: usize) -> (u16, Option<[u8; 4]>) {
    let id = u16::from_be_bytes([response[0], response[1]]);
    let answers = u16::from_be_bytes([response[6], response[7]]);
    if answers == 0 {
        return (id, None);
    }
    // Skip the echoed question; the answer starts with a 2-byte name pointer.
    let rdata = question_len + 2 + 2 + 2 + 4 + 2;
    let ip = response
        .get(rdata..rdata + 4)
        .map(|b| [b[0], b[1], b[2], b[3]]);
    (id, ip)
}
