//! Test harness: runs the real `fulcrum` binary on 127.0.0.1:0 and waits for its
//! "listening" log lines, plus small blocking backends on real sockets.
#![allow(dead_code)]

pub mod dns;
pub mod http;
pub mod raw;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Generous bound for anything that should happen "at once"; only reached on failure.
pub const PATIENCE: Duration = Duration::from_secs(20);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A unique scratch file path for this test process.
pub fn scratch(name: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("fulcrum-test-{}-{n}-{name}", std::process::id()))
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fulcrum")
}

/// A running fulcrum process; killed on drop if still running.
pub struct Fulcrum {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    listeners: Vec<(String, SocketAddr)>,
    config: Option<PathBuf>,
}

impl Fulcrum {
    /// Runs `fulcrum run` on `config` (TOML text) with one worker.
    pub fn run(config: &str) -> Fulcrum {
        Self::run_with(config, &["--workers", "1"])
    }

    pub fn run_with(config: &str, extra: &[&str]) -> Fulcrum {
        Self::run_env(config, extra, &[])
    }

    /// Runs `fulcrum run` on `config` with extra arguments and environment.
    pub fn run_env(config: &str, extra: &[&str], env: &[(&str, &str)]) -> Fulcrum {
        let path = scratch("config.toml");
        std::fs::write(&path, config).expect("write config");
        let mut args = vec!["run", "-c", path.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        let listeners =
            config.matches("[[listener]]").count() + usize::from(config.contains("[admin]"));
        let mut f = Self::spawn_env(&args, listeners, env);
        f.config = Some(path);
        f
    }

    /// Runs fulcrum with `args` and waits until `listeners` listeners are bound.
    pub fn spawn(args: &[&str], listeners: usize) -> Fulcrum {
        Self::spawn_env(args, listeners, &[])
    }

    fn spawn_env(args: &[&str], listeners: usize, env: &[(&str, &str)]) -> Fulcrum {
        let mut command = Command::new(bin());
        command.args(args).envs(env.iter().copied());
        Self::spawn_command(command, listeners)
    }

    /// Runs `command` (fulcrum itself, or something that execs it) and waits until
    /// `listeners` listeners are bound.
    pub fn spawn_command(mut command: Command, listeners: usize) -> Fulcrum {
        let mut child = command
            .args(["--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fulcrum");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let sink = Arc::clone(&logs);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("logs").push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut f = Fulcrum {
            child,
            logs,
            lines,
            listeners: Vec::new(),
            config: None,
        };
        let mut wanted = listeners;
        while f.listeners.len() < wanted {
            let line = f.next_line("listening");
            let name = field(&line, "listener").expect("listener field");
            let addr = field(&line, "addr").expect("addr field");
            if addr.starts_with("unix:") {
                // A unix socket has no address to connect to by TCP.
                wanted -= 1;
                continue;
            }
            let addr = addr.parse().expect("addr field");
            f.listeners.push((name, addr));
        }
        f
    }

    /// The address a listener bound.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {listener}: {:?}", self.listeners))
    }

    /// Waits for the next log line containing `needle`; panics with the log if none
    /// comes.
    pub fn next_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?}; log:\n{}", self.log()),
            }
        }
    }

    /// A log line containing `needle`, whether it came already or comes within
    /// PATIENCE (unlike `next_line`, lines read past earlier count too).
    pub fn saw(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = self
                .logs
                .lock()
                .expect("logs")
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.lines.recv_timeout(left).is_err() {
                panic!("no log line with {needle:?}; log:\n{}", self.log());
            }
        }
    }

    pub fn log(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// Rewrites the config file, sends SIGHUP and waits for the outcome line
    /// ("reloaded" or "reload failed"), which it returns.
    pub fn reload(&mut self, config: &str) -> String {
        let path = self.config.clone().expect("started from a config file");
        std::fs::write(&path, config).expect("rewrite config");
        self.signal(rustix::process::Signal::HUP);
        loop {
            let line = self.next_line("reload");
            if line.contains("reloaded") || line.contains("reload failed") {
                return line;
            }
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.config.clone().expect("started from a config file")
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "fulcrum did not exit; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fulcrum {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.config {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `key=value` from a tracing text line.
fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_owned())
}

/// A backend on 127.0.0.1:0 that runs `serve` for each connection on its own thread.
pub struct Backend {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
}

impl Backend {
    pub fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let serve = Arc::new(serve);
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                count.fetch_add(1, Ordering::SeqCst);
                let serve = Arc::clone(&serve);
                thread::spawn(move || serve(stream));
            }
        });
        Backend { addr, accepted }
    }

    /// Echoes every byte back, then half-closes when the client does.
    pub fn echo() -> Backend {
        Backend::start(|mut s| {
            let mut buf = vec![0; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = s.shutdown(Shutdown::Write);
        })
    }

    /// Says `name` on connect, then holds the connection until the client closes.
    pub fn named(name: &'static str) -> Backend {
        Backend::start(move |mut s| {
            if s.write_all(name.as_bytes()).is_err() {
                return;
            }
            let mut sink = [0; 1024];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        })
    }
}

/// `fulcrum check` on config `text`, written to a scratch file named `name`: the
/// exit code and what it printed on stderr.
pub fn check(text: &str, name: &str) -> (Option<i32>, String) {
    let path = scratch(name);
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run fulcrum check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The admin listener's `/status`, parsed.
pub fn status_json(admin: SocketAddr) -> serde_json::Value {
    let mut s = connect(admin);
    s.write_all(b"GET /status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("ask /status");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read /status");
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).expect("/status is JSON")
}

/// An address on which nothing listens (connects are refused).
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Connects from `source` (any 127.x.y.z works on Linux loopback).
pub fn connect_from(source: std::net::Ipv4Addr, proxy: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .expect("bind source address");
    socket.connect(&proxy.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to fulcrum");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// Connects and reads the backend's name (one byte per name here).
pub fn hello(addr: SocketAddr) -> (TcpStream, char) {
    let mut s = connect(addr);
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("read backend name");
    (s, b[0] as char)
}

/// Deterministic bytes for payload checks (xorshift64).
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// A pool config with the given backends and algorithm behind one listener `l`.
pub fn config(backends: &[String], algorithm: &str, extra_listener: &str) -> String {
    format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\npool = \"p\"\n{extra_listener}\n\n[[pool]]\nname = \"p\"\nalgorithm = \"{algorithm}\"\nbackends = [{}]\n",
        backends.join(", ")
    )
}

pub fn quoted(addr: SocketAddr) -> String {
    format!("\"{addr}\"")
}

/// Whether the external tool `name` is on PATH. When it is not, the caller skips,
/// except under FULCRUM_REQUIRE_TOOLS=1 (CI), where a missing tool fails the test.
pub fn have(name: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found && std::env::var_os("FULCRUM_REQUIRE_TOOLS").is_some() {
        panic!("{name} is required (FULCRUM_REQUIRE_TOOLS is set) but not installed");
    }
    if !found {
        // Straight to the process's stderr, not through eprintln!: the test
        // harness captures that for passing tests, and a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {}: {name} is not installed (FULCRUM_REQUIRE_TOOLS=1 makes this a failure)",
            thread::current().name().unwrap_or("a test")
        );
    }
    found
}
