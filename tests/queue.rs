//! `max_connections` per backend with the pool's queue (`max_queue`,
//! `queue_timeout`): work past the limit waits, in arrival order, for the first
//! backend that frees up; a full queue or a long wait is refused (503 with
//! Retry-After at L7, a close at L4).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Backend, Fulcrum};

/// How long a readiness wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct State {
    /// Request (or connection) ids in the order they reached the backend.
    order: Vec<String>,
    in_flight: usize,
    most_in_flight: usize,
    /// Requests allowed to finish so far, oldest first.
    released: usize,
}

/// A backend that holds every request until the test releases it, oldest first.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<State>, Condvar)>);

impl Gate {
    /// Records `id`, waits for its turn to finish.
    fn hold(&self, id: String) {
        let (lock, changed) = &*self.0;
        let mut s = lock.lock().unwrap();
        let place = s.order.len();
        s.order.push(id);
        s.in_flight += 1;
        s.most_in_flight = s.most_in_flight.max(s.in_flight);
        changed.notify_all();
        while s.released <= place {
            s = changed.wait(s).unwrap();
        }
        s.in_flight -= 1;
        changed.notify_all();
    }

    fn release(&self, n: usize) {
        let (lock, changed) = &*self.0;
        lock.lock().unwrap().released += n;
        changed.notify_all();
    }

    /// Waits until `n` requests reached the backend.
    fn wait_seen(&self, n: usize) {
        let (lock, changed) = &*self.0;
        let deadline = Instant::now() + PATIENCE;
        let mut s = lock.lock().unwrap();
        while s.order.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "backend saw {:?}, expected {n}", s.order);
            s = changed.wait_timeout(s, left).unwrap().0;
        }
    }

    fn snapshot(&self) -> (Vec<String>, usize) {
        let s = self.0 .0.lock().unwrap();
        (s.order.clone(), s.most_in_flight)
    }

    /// An HTTP/1.1 backend: the path is the id; answers `x-id` and closes.
    fn http(&self) -> Backend {
        let gate = self.clone();
        Backend::start(move |s: TcpStream| {
            let mut reader = BufReader::new(s);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                return;
            }
            let id = line
                .split(' ')
                .nth(1)
                .unwrap_or("?")
                .trim_start_matches('/');
            let id = id.to_owned();
            loop {
                let mut header = String::new();
                match reader.read_line(&mut header) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if header == "\r\n" => break,
                    Ok(_) => {}
                }
            }
            gate.hold(id.clone());
            let reply = format!(
                "HTTP/1.1 200 OK\r\nx-id: {id}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = reader.get_mut().write_all(reply.as_bytes());
        })
    }

    /// A TCP backend: the first line is the id; answers `bye ID` and closes.
    fn tcp(&self) -> Backend {
        let gate = self.clone();
        Backend::start(move |s: TcpStream| {
            let mut reader = BufReader::new(s);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                return;
            }
            let id = line.trim().to_owned();
            gate.hold(id.clone());
            let _ = reader.get_mut().write_all(format!("bye {id}\n").as_bytes());
        })
    }
}

/// `GET /ID` on its own connection; the status, the `x-id` answered and the
/// Retry-After header, once the response is in.
fn request(addr: SocketAddr, id: usize) -> JoinHandle<(u16, String, Option<String>)> {
    thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "GET /{id} HTTP/1.1\r\nHost: q\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        let status = reply
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let header = |name: &str| {
            reply.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        (
            status,
            header("x-id").unwrap_or_default(),
            header("retry-after"),
        )
    })
}

/// A sample of `/metrics`, 0 when absent.
fn metric(f: &Fulcrum, series: &str) -> u64 {
    let text = common::http::get(f.addr("admin"), "/metrics", &[]).body;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the pool's queue holds `n`.
fn wait_queued(f: &Fulcrum, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    while metric(f, "fulcrum_pool_queue_depth{pool=\"p\"}") != n {
        assert!(Instant::now() < deadline, "the queue never held {n}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn config(listener: &str, backends: &[&Backend], pool_extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"front\"\n{listener}\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{}]\n{pool_extra}\n",
        list.join(", ")
    )
}

#[test]
fn requests_past_max_connections_queue_and_are_served_in_arrival_order() {
    let gate = Gate::default();
    let backend = gate.http();
    let limits = "max_connections = 2\nmax_queue = 10\nqueue_timeout = \"60s\"";
    let text = config("protocol = \"http\"", &[&backend], limits);
    let mut f = Fulcrum::run(&text);
    let addr = f.addr("front");
    let mut clients = Vec::new();
    for id in 1..=12 {
        clients.push(request(addr, id));
        match id {
            1 | 2 => gate.wait_seen(id),
            _ => wait_queued(&f, id as u64 - 2),
        }
    }
    // The 13th finds both slots taken and 10 waiting: refused at once.
    let (status, _, retry_after) = request(addr, 13).join().unwrap();
    assert_eq!(status, 503);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(
        metric(&f, "fulcrum_pool_queue_overflows_total{pool=\"p\"}"),
        1
    );
    // A reload keeps the queue and what waits in it.
    assert!(f.reload(&text.replace("60s", "50s")).contains("reloaded"));
    assert_eq!(metric(&f, "fulcrum_pool_queue_depth{pool=\"p\"}"), 10);
    for served in 1..=10 {
        gate.release(1);
        gate.wait_seen(served + 2);
    }
    gate.release(2);
    for (id, client) in (1..=12).zip(clients) {
        let (status, answered, _) = client.join().unwrap();
        assert_eq!((status, answered), (200, id.to_string()));
    }
    let (order, most) = gate.snapshot();
    let expected: Vec<String> = (1..=12).map(|i| i.to_string()).collect();
    assert_eq!(order, expected, "served out of arrival order");
    assert_eq!(most, 2, "more than max_connections at the backend at once");
    assert_eq!(metric(&f, "fulcrum_pool_queued_total{pool=\"p\"}"), 10);
    assert_eq!(metric(&f, "fulcrum_pool_queue_depth{pool=\"p\"}"), 0);
    let status = common::http::get(f.addr("admin"), "/status", &[]).body;
    assert!(status.contains("\"max_connections\":2"), "{status}");
    assert!(status.contains("\"queued\":10"), "{status}");
}

#[test]
fn a_request_that_waits_past_queue_timeout_gets_503_with_retry_after() {
    let gate = Gate::default();
    let backend = gate.http();
    let f = Fulcrum::run(&config(
        "protocol = \"http\"",
        &[&backend],
        "max_connections = 1\nmax_queue = 10\nqueue_timeout = \"1500ms\"",
    ));
    let addr = f.addr("front");
    let held = request(addr, 1);
    gate.wait_seen(1);
    let started = Instant::now();
    let (status, _, retry_after) = request(addr, 2).join().unwrap();
    let waited = started.elapsed();
    assert_eq!(status, 503);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(
        waited >= Duration::from_millis(1500),
        "refused after {waited:?}"
    );
    assert_eq!(
        metric(&f, "fulcrum_pool_queue_timeouts_total{pool=\"p\"}"),
        1
    );
    gate.release(1);
    assert_eq!(held.join().unwrap().0, 200);
    // The backend never saw the one that timed out.
    assert_eq!(gate.snapshot().0, ["1"]);
}

#[test]
fn a_queued_request_goes_to_the_backend_that_frees_up_first() {
    let (gate_a, gate_b) = (Gate::default(), Gate::default());
    let (a, b) = (gate_a.http(), gate_b.http());
    let f = Fulcrum::run(&config(
        "protocol = \"http\"",
        &[&a, &b],
        "max_connections = 1\nqueue_timeout = \"60s\"",
    ));
    let addr = f.addr("front");
    // Round robin: one on each backend, then a third waits.
    let first = request(addr, 1);
    gate_a.wait_seen(1);
    let second = request(addr, 2);
    gate_b.wait_seen(1);
    let third = request(addr, 3);
    wait_queued(&f, 1);
    // B frees up first: the queued request goes there, though A is "next".
    gate_b.release(1);
    gate_b.wait_seen(2);
    gate_b.release(1);
    assert_eq!(third.join().unwrap().0, 200);
    assert_eq!(second.join().unwrap().0, 200);
    gate_a.release(1);
    assert_eq!(first.join().unwrap().0, 200);
    assert_eq!(gate_a.snapshot().0, ["1"]);
    assert_eq!(gate_b.snapshot().0, ["2", "3"]);
}

#[test]
fn a_backend_a_reload_adds_takes_work_while_others_wait() {
    let (gate_a, gate_b) = (Gate::default(), Gate::default());
    let (a, b) = (gate_a.http(), gate_b.http());
    let limits = "max_connections = 1\nqueue_timeout = \"60s\"";
    let mut f = Fulcrum::run(&config("protocol = \"http\"", &[&a], limits));
    let addr = f.addr("front");
    let first = request(addr, 1);
    gate_a.wait_seen(1);
    let second = request(addr, 2);
    wait_queued(&f, 1);
    let grown = config("protocol = \"http\"", &[&a, &b], limits);
    assert!(f.reload(&grown).contains("reloaded"));
    // B has room: the next request goes there, not behind the one waiting for A
    // (which was queued before B existed, and waits for A's slot).
    let third = request(addr, 3);
    gate_b.wait_seen(1);
    assert_eq!(metric(&f, "fulcrum_pool_queue_depth{pool=\"p\"}"), 1);
    gate_a.release(2);
    gate_b.release(1);
    for client in [first, second, third] {
        assert_eq!(client.join().unwrap().0, 200);
    }
    assert_eq!(gate_a.snapshot().0, ["1", "2"]);
    assert_eq!(gate_b.snapshot().0, ["3"]);
}

/// Connects, sends `ID\n`, and returns what came back before the close.
fn tcp_client(addr: SocketAddr, id: usize) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        // The id may never be read (a refused connection is closed unread).
        let _ = writeln!(s, "{id}");
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply
    })
}

#[test]
fn tcp_connections_past_max_connections_queue_in_order_and_overflow_is_closed() {
    let gate = Gate::default();
    let backend = gate.tcp();
    let f = Fulcrum::run(&config(
        "protocol = \"tcp\"",
        &[&backend],
        "max_connections = 2\nmax_queue = 10\nqueue_timeout = \"60s\"",
    ));
    let addr = f.addr("front");
    let mut clients = Vec::new();
    for id in 1..=12 {
        clients.push(tcp_client(addr, id));
        match id {
            1 | 2 => gate.wait_seen(id),
            _ => wait_queued(&f, id as u64 - 2),
        }
    }
    // The 13th is closed without reaching the backend.
    assert_eq!(tcp_client(addr, 13).join().unwrap(), "");
    for served in 1..=10 {
        gate.release(1);
        gate.wait_seen(served + 2);
    }
    gate.release(2);
    for (id, client) in (1..=12).zip(clients) {
        assert_eq!(client.join().unwrap(), format!("bye {id}\n"));
    }
    let (order, most) = gate.snapshot();
    let expected: Vec<String> = (1..=12).map(|i| i.to_string()).collect();
    assert_eq!(order, expected);
    assert_eq!(most, 2);
    assert_eq!(
        metric(&f, "fulcrum_pool_queue_overflows_total{pool=\"p\"}"),
        1
    );
}
