//! `fulcrum ctl`: the admin API for people. Finds the admin address (and token)
//! in `--admin` or the config, sends one request, prints a table or one line,
//! and exits 0 (done), 1 (fulcrum refused it), 2 (bad usage or config) or 3
//! (the admin listener cannot be reached).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::cli::DEFAULT_CONFIG;
use crate::config::{self, AdminBind, Token};

const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;

/// How long one request may take, connecting included (an upgrade waits for
/// the new process to start serving).
const TIMEOUT: Duration = Duration::from_secs(90);

/// Where the admin listener is and how to write to it.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The admin listener: IP:PORT or unix:/PATH [default: the config's [admin] bind].
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,

    /// Config file to take the admin address and token from (when --admin is not given).
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,

    /// File holding the bearer token [default: the config's [admin] token_file].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    #[command(flatten)]
    pub to: AdminArgs,

    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Every pool's backends: state, health, weight, connections and overrides.
    Backends,
    /// No new connections or requests to a backend; live ones finish.
    Drain { pool: String, addr: String },
    /// Back in service (ends drain or maint).
    Ready { pool: String, addr: String },
    /// Drained, and its health checks paused.
    Maint { pool: String, addr: String },
    /// Sets a backend's weight (1 to 1000).
    Weight {
        pool: String,
        addr: String,
        weight: u32,
    },
    /// Adds a backend (IP:PORT) to a pool.
    Add {
        pool: String,
        addr: String,
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Removes a backend from a pool; its live connections drain.
    Remove { pool: String, addr: String },
    /// Drops a backend's runtime overrides: back to what the config says.
    Clear { pool: String, addr: String },
}

/// `fulcrum upgrade`: asks the running fulcrum to start its binary anew and hand
/// over; waits until the new process serves (or says why it will not).
pub fn upgrade(to: &AdminArgs) -> ExitCode {
    let (at, token) = match target(to) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("fulcrum upgrade: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match send(&at, token.as_ref(), "POST", "/api/upgrade", "") {
        Ok((status, reply)) => {
            let json: Option<Value> = serde_json::from_str(&reply).ok();
            let field = |key: &str| {
                json.as_ref()
                    .and_then(|j| j.get(key))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            if (200..300).contains(&status) {
                println!("upgraded: {}", field("ok").unwrap_or_default());
                ExitCode::SUCCESS
            } else {
                let why = field("error").unwrap_or_else(|| reply.trim().to_owned());
                eprintln!("fulcrum upgrade: {status}: {why}");
                ExitCode::from(EXIT_REFUSED)
            }
        }
        Err(e) => {
            eprintln!("fulcrum upgrade: cannot reach the admin listener at {at}: {e}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

pub fn run(args: &CtlArgs) -> ExitCode {
    let (at, token) = match target(&args.to) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("fulcrum ctl: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let path =
        |pool: &str, addr: &str| format!("/api/pools/{}/backends/{}", encode(pool), encode(addr));
    let (method, uri, body) = match &args.action {
        Action::Backends => ("GET", "/status".to_owned(), String::new()),
        Action::Drain { pool, addr } => ("PUT", path(pool, addr), r#"{"state":"drain"}"#.into()),
        Action::Ready { pool, addr } => ("PUT", path(pool, addr), r#"{"state":"ready"}"#.into()),
        Action::Maint { pool, addr } => ("PUT", path(pool, addr), r#"{"state":"maint"}"#.into()),
        Action::Weight { pool, addr, weight } => (
            "PUT",
            path(pool, addr),
            serde_json::json!({ "weight": weight }).to_string(),
        ),
        Action::Add { pool, addr, weight } => (
            "POST",
            format!("/api/pools/{}/backends", encode(pool)),
            serde_json::json!({ "addr": addr, "weight": weight }).to_string(),
        ),
        Action::Remove { pool, addr } => ("DELETE", path(pool, addr), String::new()),
        Action::Clear { pool, addr } => (
            "DELETE",
            format!("{}/override", path(pool, addr)),
            String::new(),
        ),
    };
    let (status, reply) = match send(&at, token.as_ref(), method, &uri, &body) {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("fulcrum ctl: cannot reach the admin listener at {at}: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let json: Option<Value> = serde_json::from_str(&reply).ok();
    if !(200..300).contains(&status) {
        let reason = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
            .map_or_else(|| reply.trim().to_owned(), str::to_owned);
        eprintln!("fulcrum ctl: {status}: {reason}");
        return ExitCode::from(EXIT_REFUSED);
    }
    match (&args.action, json) {
        (Action::Backends, Some(status)) => print!("{}", table(&status)),
        (Action::Backends, None) => {
            eprintln!("fulcrum ctl: /status did not answer JSON");
            return ExitCode::from(EXIT_REFUSED);
        }
        (action, json) => {
            let said = json
                .as_ref()
                .and_then(|j| j.get("ok"))
                .and_then(Value::as_str)
                .unwrap_or("done");
            let (pool, addr) = action.names();
            println!("{pool} {addr}: {said}");
        }
    }
    ExitCode::SUCCESS
}

impl Action {
    fn names(&self) -> (&str, &str) {
        match self {
            Action::Backends => ("", ""),
            Action::Drain { pool, addr }
            | Action::Ready { pool, addr }
            | Action::Maint { pool, addr }
            | Action::Weight { pool, addr, .. }
            | Action::Add { pool, addr, .. }
            | Action::Remove { pool, addr }
            | Action::Clear { pool, addr } => (pool, addr),
        }
    }
}

/// The admin address and token: from the flags, else from the config.
fn target(args: &AdminArgs) -> Result<(AdminBind, Option<Token>), String> {
    let token = match &args.token_file {
        Some(file) => Some(Token::read(file)?),
        None => None,
    };
    if let Some(admin) = &args.admin {
        return Ok((AdminBind::parse(admin)?, token));
    }
    let config = config::load(&args.config).map_err(|e| e.to_string())?;
    let Some(admin) = config.admin else {
        return Err(format!(
            "{} has no [admin] section: give --admin ADDR",
            args.config.display()
        ));
    };
    Ok((admin.bind, token.or(admin.token)))
}

/// One request over a fresh connection; returns the status and the body.
fn send(
    at: &AdminBind,
    token: Option<&Token>,
    method: &str,
    uri: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut request = format!(
        "{method} {uri} HTTP/1.1\r\nHost: fulcrum\r\nConnection: close\r\nUser-Agent: fulcrum-ctl\r\n"
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {}\r\n", token.as_str()));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let mut answer = Vec::new();
    match at {
        AdminBind::Tcp(addr) => {
            let mut stream = std::net::TcpStream::connect_timeout(addr, TIMEOUT)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            stream.write_all(request.as_bytes())?;
            stream.read_to_end(&mut answer)?;
        }
        AdminBind::Unix(path) => {
            let mut stream = std::os::unix::net::UnixStream::connect(path)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            stream.write_all(request.as_bytes())?;
            stream.read_to_end(&mut answer)?;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

/// Percent-encodes what a path segment cannot hold as is (`[::1]:80`).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The backends table `fulcrum ctl backends` prints, from `/status`.
fn table(status: &Value) -> String {
    let mut rows = vec![[
        "POOL",
        "BACKEND",
        "STATE",
        "HEALTH",
        "WEIGHT",
        "ACTIVE",
        "CONNECTIONS",
        "OVERRIDE",
    ]
    .map(str::to_owned)];
    let empty = Vec::new();
    let pools = status
        .get("pools")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for pool in pools {
        let name = text(pool.get("name"));
        for b in pool
            .get("backends")
            .and_then(Value::as_array)
            .unwrap_or(&empty)
        {
            let flag = |key: &str| b.get(key).and_then(Value::as_bool).unwrap_or(false);
            let health = if flag("ejected") {
                "ejected"
            } else if flag("healthy") {
                "up"
            } else {
                "down"
            };
            rows.push([
                name.clone(),
                text(b.get("addr")),
                text(b.get("state")),
                health.to_owned(),
                text(b.get("weight")),
                text(b.get("active")),
                text(b.get("connections")),
                match b.get("override").and_then(Value::as_str) {
                    Some(what) => what.to_owned(),
                    None => "-".to_owned(),
                },
            ]);
        }
        for addr in pool
            .get("removed")
            .and_then(Value::as_array)
            .unwrap_or(&empty)
        {
            let dash = || "-".to_owned();
            rows.push([
                name.clone(),
                text(Some(addr)),
                "removed".to_owned(),
                dash(),
                dash(),
                dash(),
                dash(),
                "removed".to_owned(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}
