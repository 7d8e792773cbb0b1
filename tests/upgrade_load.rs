//! Upgrades under load: ten binary upgrades during 20 s of wrk (L4 keep-alive,
//! L4 `Connection: close`, L7 keep-alive) and a stream of DNS queries to a real
//! DNS server (dnsmasq) behind a udp listener lose nothing: no connection error,
//! no non-2xx answer, no unanswered query; each upgrade starts a new pid, and an
//! ejected backend stays ejected.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::dns::{dns_answer, dns_query, dnsmasq};
use common::http::HttpBackend;
use common::*;

const UPGRADES: usize = 10;
const SECONDS: u64 = 20;

/// Kills a process this test did not start itself (an upgrade's successor).
struct Kill(u32);

impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0 as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Sends DNS queries for `fulcrum.test` one after another from one socket until
/// `stop`; returns (sent, unanswered). A query is unanswered after 2 s without
/// its answer (its id and the A record dnsmasq holds).
fn queries(proxy: SocketAddr, stop: Arc<AtomicBool>) -> (u64, u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let (mut sent, mut lost) = (0u64, 0u64);
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let id = (sent % 65_536) as u16;
        let query = dns_query(id, "fulcrum.test");
        socket.send_to(&query, proxy).unwrap();
        sent += 1;
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, _)) if dns_answer(&buf[..n], query.len()) == (id, Some([192, 0, 2, 53])) => {
                    break
                }
                // A late answer to an earlier query: keep waiting for this one.
                Ok(_) => continue,
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    (sent, lost)
}

/// Runs wrk for SECONDS; returns its report.
fn wrk(url: String, extra: &'static [&'static str]) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let out = Command::new("wrk")
            .args(["-t1", "-c8", &format!("-d{SECONDS}s"), "--timeout", "5s"])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    })
}

fn assert_clean(name: &str, report: &str) {
    let summary = report
        .lines()
        .find(|l| l.contains("requests in"))
        .unwrap_or("");
    eprintln!("{name}: {}", summary.trim());
    assert!(report.contains("requests in"), "{name}: {report}");
    assert!(!report.contains("Socket errors"), "{name}: {report}");
    assert!(!report.contains("Non-2xx"), "{name}: {report}");
}

#[test]
fn ten_upgrades_under_load_lose_nothing() {
    if !have("wrk") {
        return;
    }
    let Some((_dnsmasq, dns)) = dnsmasq("fulcrum.test", "192.0.2.53") else {
        return;
    };
    let web = HttpBackend::start("web");
    let dead = dead_addr();
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"l4\"\nbind = \"127.0.0.1:0\"\npool = \"web\"\naccess_log = false\n\n\
         [[listener]]\nname = \"l7\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"web\"\naccess_log = false\n\n\
         [[listener]]\nname = \"dns\"\nprotocol = \"udp\"\nbind = \"127.0.0.1:0\"\npool = \"dns\"\nresponses = 1\naccess_log = false\n\n\
         [[pool]]\nname = \"web\"\neject_after = 1\neject_time = \"5m\"\nbackends = [{}, {}]\n\n\
         [[pool]]\nname = \"dns\"\nbackends = [{}]\n",
        quoted(web.addr),
        quoted(dead),
        quoted(dns)
    );
    let mut f = Fulcrum::run_env(&text, &["--workers", "2"], &[("RUST_LOG", "info")]);
    let (l4, l7, udp, admin) = (f.addr("l4"), f.addr("l7"), f.addr("dns"), f.addr("admin"));
    // The dead backend is ejected before the load starts (round robin reaches it).
    for _ in 0..2 {
        let reply = common::http::get(l7, "/", &[]);
        assert_eq!(reply.status, 200);
    }
    f.saw("backend ejected");

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let dns_load: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || queries(udp, stop))
        })
        .collect();
    let started = Instant::now();
    let loads = [
        ("L4 keep-alive", wrk(format!("http://{l4}/"), &[])),
        (
            "L4 close",
            wrk(format!("http://{l4}/"), &["-H", "Connection: close"]),
        ),
        ("L7 keep-alive", wrk(format!("http://{l7}/"), &[])),
    ];
    let mut pids = vec![f.pid()];
    let mut successors = Vec::new();
    let spacing = Duration::from_millis(SECONDS * 1000 / (UPGRADES as u64 + 1));
    for n in 1..=UPGRADES {
        let due = started + spacing * n as u32;
        thread::sleep(due.saturating_duration_since(Instant::now()));
        let out = Command::new(bin())
            .args(["upgrade", "--admin", &admin.to_string()])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "upgrade {n}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid: u32 = said
            .split("pid ")
            .nth(1)
            .and_then(|p| p.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {said}"));
        assert!(!pids.contains(&pid), "upgrade {n} kept pid {pid}");
        pids.push(pid);
        successors.push(Kill(pid));
        let state = status_json(admin);
        let web_pool = state["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "web")
            .unwrap();
        let dead_state = web_pool["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["addr"] == dead.to_string())
            .unwrap()
            .clone();
        assert_eq!(dead_state["ejected"], true, "upgrade {n}: {dead_state}");
    }
    for (name, load) in loads {
        assert_clean(name, &load.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for load in dns_load {
        let (sent, lost) = load.join().unwrap();
        answered.fetch_add(sent - lost, Ordering::Relaxed);
        assert!(sent > 100, "only {sent} queries sent");
        eprintln!("dns: {sent} queries, {lost} unanswered");
        assert_eq!(lost, 0, "{lost} of {sent} queries unanswered");
    }
    assert!(f.wait().success());
    // Only the newest process is left.
    for old in &pids[1..pids.len() - 1] {
        let gone = (0..200).any(|_| {
            let alive = std::path::Path::new(&format!("/proc/{old}/stat")).exists()
                && !std::fs::read_to_string(format!("/proc/{old}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ");
            if alive {
                thread::sleep(Duration::from_millis(50));
            }
            !alive
        });
        assert!(gone, "process {old} is still running");
    }
}
