//! Binary upgrades: `fulcrum upgrade` starts the binary anew, hands it the
//! listening sockets, backend state and runtime overrides, and the old process
//! drains and exits; a new process whose config fails leaves the old one serving.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;

use common::http::HttpBackend;
use common::*;

/// The process an upgrade started (not our child): killed when the test ends.
struct Successor(u32);

impl Successor {
    /// Reads its pid from the log line it writes once it serves.
    fn from_log(f: &mut Fulcrum) -> Successor {
        let line = f.next_line("upgrade: serving");
        let pid = line
            .split("pid=")
            .nth(1)
            .and_then(|p| p.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line}"));
        Successor(pid)
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0 as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// `fulcrum ARGS...`: exit code, stdout, stderr.
fn fulcrum(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run fulcrum");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn backend(status: &serde_json::Value, addr: SocketAddr) -> &serde_json::Value {
    status["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["addr"] == addr.to_string())
        .unwrap()
}

#[test]
fn an_upgrade_hands_over_sockets_state_and_overrides_and_the_old_process_exits() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let dead = dead_addr();
    let web = HttpBackend::start("web");
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\nretries = 2\n\n\
         [[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"w\"\n\n\
         [[pool]]\nname = \"p\"\neject_after = 1\neject_time = \"5m\"\nbackends = [{}, {}, {}]\n\n\
         [[pool]]\nname = \"w\"\nbackends = [{}]\n",
        quoted(a.addr),
        quoted(b.addr),
        quoted(dead),
        quoted(web.addr)
    );
    let mut f = Fulcrum::run_with(&text, &["--workers", "2"]);
    let (proxy, admin, http) = (f.addr("l"), f.addr("admin"), f.addr("h"));
    // Round robin reaches the dead backend within three connections: it is
    // ejected (and the connection retried on another).
    for _ in 0..3 {
        let (_s, name) = hello(proxy);
        assert!(name == 'a' || name == 'b');
    }
    f.saw("backend ejected");
    let (code, out, err) = fulcrum(&[
        "ctl",
        "--admin",
        &admin.to_string(),
        "drain",
        "p",
        &a.addr.to_string(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let before = status_json(admin);
    assert_eq!(backend(&before, dead)["ejected"], true);

    let (code, out, err) = fulcrum(&["upgrade", "--admin", &admin.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("serves now"), "{out}");
    let successor = Successor::from_log(&mut f);
    assert_ne!(successor.0, f.pid());
    assert!(
        out.contains(&format!("pid {} serves now", successor.0)),
        "{out}"
    );
    // The old process drains (nothing is open) and exits.
    assert!(f.wait().success());

    // The same addresses serve, from the new process, with the old one's state.
    let after = status_json(admin);
    assert_eq!(backend(&after, dead)["ejected"], true, "{after}");
    assert_eq!(backend(&after, a.addr)["state"], "drain");
    assert_eq!(backend(&after, a.addr)["override"], "state=drain");
    assert_eq!(
        backend(&after, b.addr)["connections"],
        backend(&before, b.addr)["connections"]
    );
    for _ in 0..4 {
        assert_eq!(hello(proxy).1, 'b');
    }
    let reply = common::http::get(http, "/", &[]);
    assert_eq!(reply.backend(), Some("web"));

    // And the new process can be upgraded in turn.
    let (code, out, err) = fulcrum(&["upgrade", "--admin", &admin.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    let third = Successor::from_log(&mut f);
    assert_ne!(third.0, successor.0);
    assert_eq!(hello(proxy).1, 'b');
}

#[test]
fn an_upgrade_whose_config_fails_leaves_the_old_process_serving() {
    let a = Backend::named("a");
    let text = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n{}",
        config(&[quoted(a.addr)], "round-robin", "")
    );
    let mut f = Fulcrum::run(&text);
    let (proxy, admin) = (f.addr("l"), f.addr("admin"));
    std::fs::write(f.config_path(), text.replace("round-robin", "round-robbin")).unwrap();

    let (code, out, err) = fulcrum(&["upgrade", "--admin", &admin.to_string()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("config check failed"), "{err}");
    assert!(
        err.contains("config.toml:") && err.contains("round-robbin"),
        "{err}"
    );
    f.saw("upgrade failed; this process keeps serving");
    // Still the same process, still serving.
    assert_eq!(hello(proxy).1, 'a');
    assert_eq!(status_json(admin)["pools"][0]["name"], "p");
    // SIGUSR2 with the config fixed upgrades.
    std::fs::write(f.config_path(), &text).unwrap();
    f.signal(rustix::process::Signal::USR2);
    let successor = Successor::from_log(&mut f);
    assert_ne!(successor.0, f.pid());
    assert!(f.wait().success());
    assert_eq!(hello(proxy).1, 'a');
}

#[test]
fn upgrade_says_when_there_is_nothing_to_upgrade() {
    let (code, _, err) = fulcrum(&["upgrade", "--admin", &dead_addr().to_string()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
}

fn round_trip(s: &mut std::net::TcpStream, bytes: &[u8]) {
    s.write_all(bytes).expect("write");
    let mut back = vec![0; bytes.len()];
    s.read_exact(&mut back).expect("read back");
    assert_eq!(back, bytes);
}

#[test]
fn idle_connections_move_to_the_new_process_and_the_old_one_exits_at_once() {
    const N: usize = 200;
    let echo = Backend::echo();
    let web = HttpBackend::start("web");
    let text = format!(
        "drain_timeout = \"60s\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n\
         [[listener]]\nname = \"h\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"w\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{}]\n\n\
         [[pool]]\nname = \"w\"\nbackends = [{}]\n",
        quoted(echo.addr),
        quoted(web.addr)
    );
    let mut f = Fulcrum::run_with(&text, &["--workers", "2"]);
    let (proxy, admin, http) = (f.addr("l"), f.addr("admin"), f.addr("h"));
    let mut tcp: Vec<_> = (0..N)
        .map(|i| {
            let mut s = connect(proxy);
            round_trip(&mut s, format!("hello {i}").as_bytes());
            s
        })
        .collect();
    let mut clients: Vec<_> = (0..N)
        .map(|_| {
            let mut c = common::http::HttpClient::connect(http);
            assert_eq!(c.get("/", &[]).backend(), Some("web"));
            c
        })
        .collect();
    assert_eq!(echo.accepted.load(std::sync::atomic::Ordering::SeqCst), N);

    let (code, out, err) = fulcrum(&["upgrade", "--admin", &admin.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    let started = std::time::Instant::now();
    let successor = Successor::from_log(&mut f);
    // Every connection was idle: all move, and the old process has nothing left
    // to drain (its drain_timeout is 60 s).
    assert!(f.wait().success());
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(2),
        "the old process took {took:?} to exit"
    );
    let line = f.saw("connections taken over from the old process");
    assert!(line.contains(&format!("connections={}", 2 * N)), "{line}");

    // Each still works both ways, served by the new process, on the same sockets.
    for (i, s) in tcp.iter_mut().enumerate() {
        round_trip(s, format!("still here {i}").as_bytes());
    }
    for c in &mut clients {
        assert_eq!(c.get("/again", &[]).backend(), Some("web"));
    }
    // No new backend connection was needed for the relays.
    assert_eq!(echo.accepted.load(std::sync::atomic::Ordering::SeqCst), N);
    drop(successor);
}
