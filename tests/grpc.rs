//! gRPC through fulcrum with real peers: grpcio servers as backends (h2c and TLS)
//! and a grpcio client through h2c and https listeners (tests/grpc/peer.py). Every
//! kind of call, per-request balancing over one client connection, a backend dying
//! mid-stream, GOAWAY from backends, and fulcrum's own failures as gRPC statuses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::tls::{Leaf, Pki};
use common::{dead_addr, Fulcrum};
use serde_json::Value;

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/peer.py")
}

/// Whether python3 with grpcio is here; skips (or fails under
/// FULCRUM_REQUIRE_TOOLS) otherwise.
fn have_grpcio() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import grpc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var_os("FULCRUM_REQUIRE_TOOLS").is_some() {
            panic!("python3 with grpcio is required (FULCRUM_REQUIRE_TOOLS is set): pip install grpcio");
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {}: python3 with grpcio is not installed (pip install grpcio)",
            std::thread::current().name().unwrap_or("a test")
        );
    }
    found
}

/// A grpcio server process, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(name: &str, tls: Option<&Leaf>, extra: &[&str]) -> Server {
        let mut command = Command::new("python3");
        command
            .arg(peer_script())
            .args(["server", name])
            .args(extra);
        if let Some(leaf) = tls {
            command.arg("--tls").arg(&leaf.cert).arg(&leaf.key);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn grpc server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("grpc server said {line:?}"))
            .trim();
        Server {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client scenario through `target`; its JSON result.
fn client(target: std::net::SocketAddr, scenario: &str, ca: Option<&Path>) -> Value {
    let mut command = Command::new("python3");
    command
        .arg(peer_script())
        .args(["client", &target.to_string(), scenario]);
    if let Some(ca) = ca {
        command.arg("--tls").arg(ca).arg("site.test");
    }
    let out = command.output().expect("run grpc client");
    assert!(
        out.status.success(),
        "client {scenario}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {:?}", String::from_utf8_lossy(&out.stdout));
    })
}

fn backends(servers: &[&Server]) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{}\"", s.addr)).collect();
    list.join(", ")
}

#[test]
fn every_kind_of_call_passes_h2c_and_https_listeners_to_h2c_and_tls_backends() {
    if !have_grpcio() {
        return;
    }
    let pki = Pki::new("grpc-kinds");
    let site = pki.issue("site", &["site.test"]);
    let backend_cert = pki.issue("backend", &["backend.test"]);
    let plain = Server::start("plain", None, &[]);
    let tls = Server::start("tls", Some(&backend_cert), &[]);
    let https = format!(
        "tls = [{{ cert = \"{}\", key = \"{}\" }}]",
        site.cert.display(),
        site.key.display()
    );
    let mut config = String::new();
    for (name, protocol, pool, extra) in [
        ("c2c", "http", "plain", ""),
        ("c2t", "http", "tls", ""),
        ("t2c", "https", "plain", https.as_str()),
        ("t2t", "https", "tls", https.as_str()),
    ] {
        config += &format!(
            "[[listener]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nbind = \"127.0.0.1:0\"\npool = \"{pool}\"\n{extra}\n\n"
        );
    }
    config += &format!(
        "[[pool]]\nname = \"plain\"\nhttp_version = \"2\"\nbackends = [{}]\n\n\
         [[pool]]\nname = \"tls\"\nhttp_version = \"auto\"\nbackends = [{}]\n\
         tls = {{ ca = \"{}\", sni = \"backend.test\" }}\n",
        backends(&[&plain]),
        backends(&[&tls]),
        pki.ca_pem.display()
    );
    let f = Fulcrum::run(&config);
    for (listener, ca) in [
        ("c2c", None),
        ("c2t", None),
        ("t2c", Some(pki.ca_pem.as_path())),
        ("t2t", Some(pki.ca_pem.as_path())),
    ] {
        let got = client(f.addr(listener), "suite", ca);
        let expect = serde_json::json!({
            "unary": "ok:hello",
            "big": "ok:True",
            "server_stream": "ok:102400",
            "client_stream": "ok:100000",
            "bidi": "ok:50000",
            "error": "INVALID_ARGUMENT:refused on purpose:why",
            "deadline": "DEADLINE_EXCEEDED",
        });
        assert_eq!(got, expect, "through {listener}");
    }
    // fulcrum ended the deadline call itself (grpc-timeout), with status 4.
    let log = f.log();
    assert!(
        log.lines()
            .any(|l| l.contains("/Slow") && l.contains("grpc_status=4")),
        "{log}"
    );
    assert!(log
        .lines()
        .any(|l| l.contains("/Fail") && l.contains("grpc_status=3")));
}

#[test]
fn calls_on_one_client_connection_are_balanced_per_request() {
    if !have_grpcio() {
        return;
    }
    let servers = [
        Server::start("a", None, &[]),
        Server::start("b", None, &[]),
        Server::start("c", None, &[]),
    ];
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"g\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"g\"\n\n\
         [[pool]]\nname = \"g\"\nhttp_version = \"2\"\nbackends = [{}]\n",
        backends(&servers.iter().collect::<Vec<_>>())
    ));
    let got = client(f.addr("g"), "balance:3000", None);
    let counts = got["counts"].as_object().unwrap();
    assert_eq!(counts.len(), 3, "{got}");
    for name in ["ok:a", "ok:b", "ok:c"] {
        let n = counts[name].as_u64().unwrap();
        assert!((980..=1020).contains(&n), "{name}: {n} of 3000: {got}");
    }
}

#[test]
fn a_backend_dying_mid_stream_fails_that_call_and_the_next_go_elsewhere() {
    if !have_grpcio() {
        return;
    }
    let servers = [Server::start("a", None, &[]), Server::start("b", None, &[])];
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"g\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"g\"\n\n\
         [[pool]]\nname = \"g\"\nhttp_version = \"2\"\nbackends = [{}]\n",
        backends(&servers.iter().collect::<Vec<_>>())
    ));
    let got = client(f.addr("g"), "die", None);
    let died = got["died"].as_str().unwrap();
    assert!(["INTERNAL", "UNAVAILABLE"].contains(&died), "{got}");
    let after: Vec<&str> = got["after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Whichever backend died, every later call is answered by the other one.
    assert_eq!(after.len(), 6);
    assert!(after.iter().all(|r| r == &after[0]), "{got}");
    assert!(after[0].starts_with("ok:"), "{got}");
}

#[test]
fn goaway_from_backends_loses_no_call() {
    if !have_grpcio() {
        return;
    }
    // gRPC's MAX_CONNECTION_AGE: every backend connection gets a GOAWAY after
    // 300 ms, its calls in flight finishing, while 2000 calls run 8 at a time.
    let servers = [
        Server::start("a", None, &["--max-age-ms", "300"]),
        Server::start("b", None, &["--max-age-ms", "300"]),
    ];
    let f = Fulcrum::run(&format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"g\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"g\"\n\n\
         [[pool]]\nname = \"g\"\nhttp_version = \"2\"\nbackends = [{}]\n",
        backends(&servers.iter().collect::<Vec<_>>())
    ));
    let got = client(f.addr("g"), "many:2000", None);
    assert_eq!(got["calls"], 2000, "{got}");
    assert_eq!(got["failed"], serde_json::json!([]), "{got}");
    // The GOAWAYs happened: each backend was connected to again and again.
    let metrics = common::http::get(f.addr("admin"), "/metrics", &[]).body;
    let reconnects: Vec<u64> = metrics
        .lines()
        .filter(|l| l.starts_with("fulcrum_backend_connections_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(reconnects.len(), 2, "{metrics}");
    assert!(reconnects.iter().all(|&n| n >= 3), "{metrics}");
}

#[test]
fn fulcrums_own_failures_are_grpc_statuses() {
    if !have_grpcio() {
        return;
    }
    let server = Server::start("a", None, &[]);
    let f = Fulcrum::run(&format!(
        "[[listener]]\nname = \"down\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"down\"\n\n\
         [[listener]]\nname = \"h1\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"h1\"\n\n\
         [[pool]]\nname = \"down\"\nhttp_version = \"2\"\nbackends = [\"{}\"]\n\n\
         [[pool]]\nname = \"h1\"\nbackends = [\"{}\"]\n",
        dead_addr(),
        server.addr
    ));
    // No backend can take it: UNAVAILABLE, not an HTML-ish 503.
    let got = client(f.addr("down"), "balance:1", None);
    assert_eq!(got["counts"], serde_json::json!({"UNAVAILABLE": 1}));
    // A pool that speaks HTTP/1.1 cannot carry gRPC: UNAVAILABLE and a log line
    // that says what to change.
    let got = client(f.addr("h1"), "balance:1", None);
    assert_eq!(got["counts"], serde_json::json!({"UNAVAILABLE": 1}));
    assert!(f.log().contains("set http_version = \"2\""), "{}", f.log());
}

/// The admin's `fulcrum_backend_healthy` of `backend`, waiting until it is `want`.
fn wait_healthy(f: &Fulcrum, backend: &str, want: u8) {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let metrics = common::http::get(f.addr("admin"), "/metrics", &[]).body;
        let line = format!("fulcrum_backend_healthy{{pool=\"g\",backend=\"{backend}\"}} {want}");
        if metrics.lines().any(|l| l == line) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{backend} never {want}: {metrics}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn grpc_health_checks_over_tls_take_a_not_serving_backend_out_and_back() {
    if !have_grpcio() {
        return;
    }
    let pki = Pki::new("grpc-health");
    let leaf = pki.issue("backend", &["backend.test"]);
    let servers = [
        Server::start("a", Some(&leaf), &[]),
        Server::start("b", Some(&leaf), &[]),
    ];
    let config = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"g\"\nprotocol = \"http\"\nbind = \"127.0.0.1:0\"\npool = \"g\"\n\n\
         [[pool]]\nname = \"g\"\nhttp_version = \"2\"\nbackends = [{}]\n\
         tls = {{ ca = \"{}\", sni = \"backend.test\" }}\n\n\
         [pool.health]\nkind = \"grpc\"\ninterval = \"100ms\"\nrise = 1\nfall = 1\n",
        backends(&servers.iter().collect::<Vec<_>>()),
        pki.ca_pem.display()
    );
    let path = common::scratch("grpc-health.toml");
    std::fs::write(&path, &config).unwrap();
    let out = Command::new(common::bin())
        .args(["check", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("grpc health over TLS (h2)"), "{summary}");
    let f = Fulcrum::run(&config);
    wait_healthy(&f, &servers[0].addr, 1);
    // Straight to backend a: it says NOT_SERVING from now on.
    let set_health = |status: u8| {
        let scenario = format!("sethealth:{status}");
        let mut command = Command::new("python3");
        command
            .arg(peer_script())
            .args(["client", &servers[0].addr, &scenario]);
        command.args(["--tls", pki.ca_pem.to_str().unwrap(), "backend.test"]);
        assert!(command.output().unwrap().status.success());
    };
    set_health(2);
    wait_healthy(&f, &servers[0].addr, 0);
    let got = client(f.addr("g"), "balance:20", None);
    assert_eq!(got["counts"], serde_json::json!({"ok:b": 20}), "{got}");
    // And SERVING again: back in.
    set_health(1);
    wait_healthy(&f, &servers[0].addr, 1);
    let got = client(f.addr("g"), "balance:20", None);
    assert_eq!(
        got["counts"],
        serde_json::json!({"ok:a": 10, "ok:b": 10}),
        "{got}"
    );
}
