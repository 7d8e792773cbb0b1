//! Runtime control through the admin API and `fulcrum ctl`: drain, maint, weight,
//! add and remove take effect at once, survive a reload, need the token off
//! loopback, and `fulcrum ctl` prints tables and exits with clear codes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step should fail loudly

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use common::http::{HttpBackend, HttpClient};
use common::*;

/// `fulcrum ctl --admin ADDR ARGS...`: exit code, stdout, stderr.
fn ctl(admin: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(["ctl", "--admin", admin])
        .args(args)
        .output()
        .expect("run fulcrum ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ctl` that must succeed; returns stdout.
fn ok(admin: SocketAddr, args: &[&str]) -> String {
    let (code, out, err) = ctl(&admin.to_string(), args);
    assert_eq!(code, 0, "ctl {args:?}: {out}{err}");
    out
}

/// One raw request to the admin listener: status and body.
fn admin_request(admin: SocketAddr, request: &str) -> (u16, String) {
    let mut s = connect(admin);
    s.write_all(request.as_bytes()).expect("request");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("reply");
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    (status, reply)
}

/// A backend that says its one-letter name on connect, then echoes.
fn named_echo(name: &'static str) -> Backend {
    Backend::start(move |mut s| {
        if s.write_all(name.as_bytes()).is_err() {
            return;
        }
        let mut buf = [0; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
}

/// The names of the backends `n` new connections reach, each closed after.
fn picks(proxy: SocketAddr, n: usize) -> String {
    (0..n).map(|_| hello(proxy).1).collect()
}

fn with_admin(body: &str) -> String {
    format!("[admin]\nbind = \"127.0.0.1:0\"\n\n{body}")
}

fn echo_round_trip(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes)
        .expect("write through the live connection");
    let mut back = vec![0; bytes.len()];
    s.read_exact(&mut back).expect("read back");
    assert_eq!(back, bytes);
}

#[test]
fn drain_moves_new_connections_off_a_backend_while_its_live_one_finishes() {
    let (a, b) = (named_echo("a"), named_echo("b"));
    let text = with_admin(&config(
        &[quoted(a.addr), quoted(b.addr)],
        "round-robin",
        "",
    ));
    let mut f = Fulcrum::run(&text);
    let (proxy, admin) = (f.addr("l"), f.addr("admin"));
    let (mut live, first) = hello(proxy);
    let drained = if first == 'a' { a.addr } else { b.addr };
    let other = if first == 'a' { 'b' } else { 'a' };

    let said = ok(admin, &["drain", "p", &drained.to_string()]);
    assert!(said.contains("state drain"), "{said}");
    f.saw("runtime change");
    assert_eq!(picks(proxy, 6), other.to_string().repeat(6));
    // The live connection to the drained backend goes on, both ways.
    echo_round_trip(&mut live, b"still here");
    let table = ok(admin, &["backends"]);
    let row = table
        .lines()
        .find(|l| l.contains(&drained.to_string()))
        .unwrap();
    assert!(
        row.contains("drain") && row.contains("state=drain"),
        "{table}"
    );

    ok(admin, &["ready", "p", &drained.to_string()]);
    let back = picks(proxy, 4);
    assert!(back.contains(first), "ready again, yet {back}");
    echo_round_trip(&mut live, b"and still");
}

#[test]
fn drain_moves_the_next_request_of_a_keep_alive_client() {
    let (a, b) = (HttpBackend::start("a"), HttpBackend::start("b"));
    let text = with_admin(&format!(
        "[[listener]]\nname = \"l\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{}, {}]\n",
        quoted(a.addr),
        quoted(b.addr)
    ));
    let f = Fulcrum::run(&text);
    let mut client = HttpClient::connect(f.addr("l"));
    let seen: Vec<String> = (0..4)
        .map(|_| client.get("/", &[]).backend().unwrap().to_owned())
        .collect();
    assert!(seen.iter().any(|s| s == "a") && seen.iter().any(|s| s == "b"));
    ok(f.addr("admin"), &["drain", "p", &a.addr.to_string()]);
    for _ in 0..6 {
        assert_eq!(client.get("/", &[]).backend(), Some("b"));
    }
    ok(f.addr("admin"), &["maint", "p", &b.addr.to_string()]);
    // Neither is in service: the client is told so, never sent to a drained one.
    let reply = client.get("/", &[]);
    assert_eq!(reply.status, 503, "{reply:?}");
}

#[test]
fn maint_pauses_health_checks_until_ready() {
    let (a, b) = (HttpBackend::start("a"), HttpBackend::start("b"));
    let text = with_admin(&format!(
        "[[listener]]\nname = \"l\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n\n\
         [[pool]]\nname = \"p\"\nbackends = [{}, {}]\n\
         [pool.health]\nkind = \"http\"\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"1s\"\n",
        quoted(a.addr),
        quoted(b.addr)
    ));
    let f = Fulcrum::run(&text);
    let admin = f.addr("admin");
    let wait_for = |backend: &HttpBackend, above: usize| {
        let deadline = std::time::Instant::now() + PATIENCE;
        while backend.hits() <= above {
            assert!(
                std::time::Instant::now() < deadline,
                "no checks reach {}",
                backend.name
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait_for(&a, 1);
    ok(admin, &["maint", "p", &a.addr.to_string()]);
    // A check already on its way may still land: let b see three more first.
    wait_for(&b, b.hits() + 3);
    let paused = a.hits();
    wait_for(&b, b.hits() + 5);
    assert_eq!(a.hits(), paused, "checks reached a backend in maintenance");
    let table = ok(admin, &["backends"]);
    assert!(table.contains("maint"), "{table}");

    ok(admin, &["ready", "p", &a.addr.to_string()]);
    wait_for(&a, paused);
}

#[test]
fn weight_changes_the_round_robin_split_exactly() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let text = with_admin(&config(
        &[quoted(a.addr), quoted(b.addr)],
        "round-robin",
        "",
    ));
    let f = Fulcrum::run(&text);
    let (proxy, admin) = (f.addr("l"), f.addr("admin"));
    assert_eq!(picks(proxy, 4), "abab");
    let said = ok(admin, &["weight", "p", &b.addr.to_string(), "3"]);
    assert!(said.contains("weight 3"), "{said}");
    // Smooth weighted round robin (as nginx) over weights 1 and 3, from a fresh
    // snapshot: b a b b, and again.
    assert_eq!(picks(proxy, 8), "babbbabb");
    let table = ok(admin, &["backends"]);
    let row = table
        .lines()
        .find(|l| l.contains(&b.addr.to_string()))
        .unwrap();
    assert!(row.contains("weight=3"), "{table}");
}

#[test]
fn backends_are_added_and_removed_at_runtime() {
    let (a, b) = (named_echo("a"), named_echo("b"));
    let text = with_admin(&config(&[quoted(a.addr)], "round-robin", ""));
    let f = Fulcrum::run(&text);
    let (proxy, admin) = (f.addr("l"), f.addr("admin"));
    assert_eq!(picks(proxy, 3), "aaa");
    let said = ok(admin, &["add", "p", &b.addr.to_string()]);
    assert!(said.contains("added"), "{said}");
    assert_eq!(picks(proxy, 4), "abab");
    let (mut live, name) = hello(proxy);
    assert_eq!(name, 'a');

    // Adding it twice is a conflict; removing the last backend is refused.
    let (code, _, err) = ctl(&admin.to_string(), &["add", "p", &b.addr.to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("409") && err.contains("already has"), "{err}");

    ok(admin, &["remove", "p", &a.addr.to_string()]);
    assert_eq!(picks(proxy, 4), "bbbb");
    // Its live connection drains rather than being cut.
    echo_round_trip(&mut live, b"draining, not cut");
    let table = ok(admin, &["backends"]);
    let row = table
        .lines()
        .find(|l| l.contains(&a.addr.to_string()))
        .unwrap();
    assert!(row.contains("removed"), "{table}");
    let (code, _, err) = ctl(&admin.to_string(), &["remove", "p", &b.addr.to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("last backend"), "{err}");

    // Clearing the removal brings the config's backend back.
    ok(admin, &["clear", "p", &a.addr.to_string()]);
    assert!(picks(proxy, 4).contains('a'));
}

#[test]
fn overrides_survive_a_reload() {
    let (a, b, c) = (
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    );
    let text = with_admin(&config(
        &[quoted(a.addr), quoted(b.addr)],
        "round-robin",
        "",
    ));
    let mut f = Fulcrum::run(&text);
    let (proxy, admin) = (f.addr("l"), f.addr("admin"));
    ok(admin, &["drain", "p", &a.addr.to_string()]);
    ok(admin, &["add", "p", &c.addr.to_string(), "--weight", "2"]);
    let split = |seen: String| {
        (
            seen.matches('a').count(),
            seen.matches('b').count(),
            seen.matches('c').count(),
        )
    };
    assert_eq!(split(picks(proxy, 6)), (0, 2, 4));

    // The same config again, with a change elsewhere: every override stays.
    let line = f.reload(&text.replace("\"round-robin\"", "\"round-robin\"\nslow_start = \"0s\""));
    assert!(line.contains("reloaded"), "{line}");
    assert_eq!(split(picks(proxy, 6)), (0, 2, 4));
    let status = admin_request(
        admin,
        "GET /status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .1;
    let json: serde_json::Value =
        serde_json::from_str(status.split_once("\r\n\r\n").unwrap().1).unwrap();
    let backends = json["pools"][0]["backends"].as_array().unwrap();
    let of = |addr: SocketAddr| {
        backends
            .iter()
            .find(|b| b["addr"] == addr.to_string())
            .unwrap()
    };
    assert_eq!(of(a.addr)["state"], "drain");
    assert_eq!(of(a.addr)["override"], "state=drain");
    assert_eq!(of(c.addr)["override"], "added weight=2");
    assert_eq!(of(c.addr)["weight"], 2);
    assert_eq!(of(b.addr)["override"], serde_json::Value::Null);
    // The status page says so too.
    let page = admin_request(
        admin,
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .1;
    assert!(
        page.contains("draining") && page.contains("runtime: state=drain"),
        "{page}"
    );
}

#[test]
fn writes_off_loopback_need_the_token() {
    let a = Backend::named("a");
    let token = scratch("admin.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    let body = config(&[quoted(a.addr)], "round-robin", "");
    let text = format!(
        "[admin]\nbind = \"0.0.0.0:0\"\ntoken_file = \"{}\"\n\n{body}",
        token.display()
    );
    let f = Fulcrum::run(&text);
    let admin = SocketAddr::from(([127, 0, 0, 1], f.addr("admin").port()));
    let put = |auth: &str| {
        admin_request(
            admin,
            &format!(
                "PUT /api/pools/p/backends/{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{auth}\
                 Content-Length: 17\r\n\r\n{{\"state\":\"drain\"}}",
                a.addr
            ),
        )
    };
    let (status, reply) = put("");
    assert_eq!(status, 401, "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{reply}"
    );
    assert_eq!(
        put("Authorization: Bearer wrong-token-wrong-token\r\n").0,
        401
    );
    // Reads stay open.
    let read = admin_request(
        admin,
        "GET /status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(read.0, 200);
    assert!(read.1.contains("\"state\":\"ready\""), "{}", read.1);
    let (status, reply) = put("Authorization: Bearer 0123456789abcdef0123456789abcdef\r\n");
    assert_eq!(status, 200, "{reply}");
    // fulcrum ctl reads the token from a file.
    let (code, _, err) = ctl(&admin.to_string(), &["ready", "p", &a.addr.to_string()]);
    assert_eq!(code, 1, "no token: {err}");
    assert!(err.contains("401"), "{err}");
    let (code, out, err) = ctl(
        &admin.to_string(),
        &[
            "--token-file",
            token.to_str().unwrap(),
            "ready",
            "p",
            &a.addr.to_string(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    drop(f);

    // Off loopback with no token file: writes are refused outright.
    let f = Fulcrum::run(&format!("[admin]\nbind = \"0.0.0.0:0\"\n\n{body}"));
    let admin = SocketAddr::from(([127, 0, 0, 1], f.addr("admin").port()));
    let (code, _, err) = ctl(&admin.to_string(), &["drain", "p", &a.addr.to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("403") && err.contains("token_file"), "{err}");
}

#[test]
fn ctl_says_what_is_wrong_and_exits_with_its_code() {
    let a = Backend::named("a");
    let text = with_admin(&config(&[quoted(a.addr)], "round-robin", ""));
    let f = Fulcrum::run(&text);
    let admin = f.addr("admin").to_string();

    let out = ok(f.addr("admin"), &["backends"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "POOL",
            "BACKEND",
            "STATE",
            "HEALTH",
            "WEIGHT",
            "ACTIVE",
            "CONNECTIONS",
            "OVERRIDE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        ["p", &a.addr.to_string(), "ready", "up", "1", "0", "0", "-"]
    );

    let (code, _, err) = ctl(&admin, &["drain", "nope", &a.addr.to_string()]);
    assert_eq!(
        (code, err.contains("404") && err.contains("no pool `nope`")),
        (1, true),
        "{err}"
    );
    let (code, _, err) = ctl(&admin, &["drain", "p", "127.0.0.1:1"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no backend 127.0.0.1:1"), "{err}");
    let (code, _, err) = ctl(&admin, &["weight", "p", &a.addr.to_string(), "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("1 to 1000"), "{err}");
    let (code, _, err) = ctl(&admin, &["drain", "p", "not-an-address"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not IP:PORT"), "{err}");
    let (code, _, err) = ctl(&admin, &["clear", "p", &a.addr.to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("no runtime override"), "{err}");
    // Usage errors are 2, an unreachable admin listener 3.
    assert_eq!(ctl(&admin, &["frobnicate"]).0, 2);
    assert_eq!(ctl("localhost", &["backends"]).0, 2);
    let (code, _, err) = ctl(&dead_addr().to_string(), &["backends"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    // A config without [admin] says how to point ctl somewhere.
    let bare = scratch("bare.toml");
    std::fs::write(&bare, config(&[quoted(a.addr)], "round-robin", "")).unwrap();
    let out = Command::new(bin())
        .args(["ctl", "-c", bare.to_str().unwrap(), "backends"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [admin] section"));
    // Unknown API paths and methods are told what exists.
    let (status, reply) = admin_request(
        f.addr("admin"),
        "POST /api/nothing HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 404, "{reply}");
    let (status, _) = admin_request(
        f.addr("admin"),
        &format!(
            "GET /api/pools/p/backends/{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            a.addr
        ),
    );
    assert_eq!(status, 405);
}

#[test]
fn a_unix_socket_admin_takes_writes_from_ctl_and_its_config() {
    let (a, b) = (Backend::named("a"), Backend::named("b"));
    let socket = scratch("admin.sock");
    let text = format!(
        "[admin]\nbind = \"unix:{}\"\n\n{}",
        socket.display(),
        config(&[quoted(a.addr), quoted(b.addr)], "round-robin", "")
    );
    let f = Fulcrum::run(&text);
    let proxy = f.addr("l");
    let (code, out, err) = ctl(
        &format!("unix:{}", socket.display()),
        &["drain", "p", &a.addr.to_string()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(picks(proxy, 4), "bbbb");
    // Without --admin, ctl finds the socket in the config.
    let out = Command::new(bin())
        .args(["ctl", "-c", f.config_path().to_str().unwrap(), "ready", "p"])
        .arg(a.addr.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(picks(proxy, 4).contains('a'));
}
