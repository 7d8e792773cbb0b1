//! The command line: `run`, `check` and the flag-only `tcp`, `udp` and `http` modes, with global options
//! accepted before or after the subcommand.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fulcrum_l4::pool::Policy;
use fulcrum_l4::tcp::DEFAULT_RETRIES;
use fulcrum_l4::{Algorithm, HashKey};
use fulcrum_l7::tls::CertFiles;
use fulcrum_l7::upstream::HttpVersion;

use crate::config::{
    self, BackendEntry, Config, HttpOptions, ListenerConfig, PoolConfig, Protocol, TcpOptions,
    UdpOptions, MAX_WEIGHT,
};

pub const DEFAULT_CONFIG: &str = "/etc/fulcrum/fulcrum.toml";

/// fulcrum: a Layer 4 TCP/UDP load balancer.
#[derive(Debug, Parser)]
#[command(name = "fulcrum", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log level (RUST_LOG, when set, overrides it).
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Info, value_name = "LEVEL")]
    pub log_level: LogLevel,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Worker threads, each with its own event loop and SO_REUSEPORT listeners
    /// [default: number of cores].
    #[arg(long, global = true, value_name = "N", value_parser = parse_workers)]
    pub workers: Option<NonZeroU32>,
}

/// The least severe log lines written. Anything else is refused (exit 2) with the
/// list of these, rather than read as a filter that turns logging off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run from a config file; SIGHUP reloads it, SIGTERM/SIGINT drain and exit.
    Run {
        /// Config file (TOML).
        #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file and print a summary; exit 2 if it is invalid.
    Check {
        /// Config file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Balance TCP without a config file.
    #[command(
        after_help = "Example:\n  fulcrum tcp --listen 0.0.0.0:8080 --backend 10.0.0.1:80 --backend 10.0.0.2:80,weight=3"
    )]
    Tcp(TcpArgs),
    /// Balance UDP without a config file (one flow per client address).
    #[command(
        after_help = "Example (DNS):\n  fulcrum udp --listen 0.0.0.0:53 --backend 10.0.0.1:53 --backend 10.0.0.2:53 --responses 1"
    )]
    Udp(UdpArgs),
    /// Balance HTTP/1.1 and HTTP/2 (Layer 7) without a config file; HTTPS with
    /// --tls-cert and --tls-key.
    #[command(
        after_help = "Example:\n  fulcrum http --listen 0.0.0.0:8080 --backend 10.0.0.1:80 --backend 10.0.0.2:80 --sticky-cookie FULCRUM"
    )]
    Http(HttpArgs),
    /// Change a running fulcrum through its admin API: drain, ready, maint,
    /// weight, add and remove backends, or list them.
    #[command(
        after_help = "Examples:\n  fulcrum ctl backends\n  fulcrum ctl drain web 10.0.0.1:80\n  fulcrum ctl --admin unix:/run/fulcrum/admin.sock weight web 10.0.0.1:80 5\n\nExit codes: 0 done, 1 refused by fulcrum, 2 bad usage or config, 3 admin listener unreachable."
    )]
    Ctl(crate::ctl::CtlArgs),
    /// Replace the running binary without refusing a connection: starts the
    /// binary at the running executable's path with the same arguments, hands it
    /// every listening socket and each backend's state, and drains the old
    /// process (SIGUSR2 does the same). Exits 1 with the reason when the new
    /// process will not take over (the old one keeps serving).
    Upgrade(crate::ctl::AdminArgs),
}

/// The pool half of the flag-only modes.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// A backend, IP:PORT or HOST:PORT with an optional weight (ADDR,weight=N);
    /// repeat for more. Host names are resolved at start and every 30s.
    #[arg(long = "backend", value_name = "ADDR[,weight=N]", required = true)]
    pub backends: Vec<BackendArg>,

    /// How to pick a backend: round-robin, least-conn, random, p2c, ewma or hash.
    #[arg(long, default_value = "round-robin", value_parser = parse_algorithm)]
    pub algorithm: Algorithm,

    /// What `--algorithm hash` hashes: source-ip or source-addr.
    #[arg(long, value_name = "KEY", value_parser = parse_hash_key)]
    pub hash_key: Option<HashKey>,

    /// How long live connections or flows may finish after SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,

    /// No access log line per connection or flow.
    #[arg(long)]
    pub no_access_log: bool,

    /// Serve the status page (/), /metrics and /status on this address, e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
}

impl PoolArgs {
    /// The config for one listener `name` in front of this pool (also `name`).
    fn to_config(
        &self,
        name: &str,
        bind: SocketAddr,
        protocol: Protocol,
    ) -> Result<Config, String> {
        let algorithm = match (self.algorithm, self.hash_key) {
            (Algorithm::Hash(_), Some(key)) => Algorithm::Hash(key),
            (_, Some(_)) => return Err("--hash-key only applies to --algorithm hash".to_owned()),
            (algorithm, None) => algorithm,
        };
        Ok(Config {
            drain_timeout: self.drain_timeout,
            admin: self.admin.map(config::AdminConfig::from),
            resolver: None,
            listeners: vec![ListenerConfig {
                name: name.to_owned(),
                bind,
                pool: Some(name.to_owned()),
                protocol,
                access_log: !self.no_access_log,
                proxy_protocol: None,
                accept_proxy_protocol: false,
                access: Default::default(),
                rate_limit: None,
            }],
            pools: vec![PoolConfig {
                name: name.to_owned(),
                algorithm,
                backends: self
                    .backends
                    .iter()
                    .filter_map(|b| match &b.0 {
                        BackendEntry::Static(spec) => Some(*spec),
                        BackendEntry::Dns(_) => None,
                    })
                    .collect(),
                policy: Policy::default(),
                health: None,
                sticky_cookie: None,
                request_key: None,
                http_version: HttpVersion::default(),
                tls: None,
                dns: self
                    .backends
                    .iter()
                    .filter_map(|b| match &b.0 {
                        BackendEntry::Dns(dns) => Some(dns.clone()),
                        BackendEntry::Static(_) => None,
                    })
                    .collect(),
            }],
        })
    }
}

#[derive(Debug, Args)]
pub struct TcpArgs {
    /// Address to accept clients on, e.g. 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub pool: PoolArgs,

    /// Give up connecting to one backend after this long, e.g. 500ms or 3s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "3s")]
    pub connect_timeout: Duration,

    /// Close a connection when no byte moved either way for this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub idle_timeout: Duration,

    /// Further backends to try when a connect fails.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RETRIES)]
    pub retries: u32,

    /// Most connections at once; accepting pauses at the limit (0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_connections: u32,

    /// Most live connections from one client IP; more are closed at once (0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_connections_per_client: u32,
}

impl TcpArgs {
    /// The config this command line stands for: one listener `tcp`, one pool `tcp`.
    pub fn to_config(&self) -> Result<Config, String> {
        let options = TcpOptions {
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            retries: self.retries,
            max_connections: Some(self.max_connections as usize).filter(|&m| m > 0),
            max_connections_per_client: self.max_connections_per_client,
            sni_routes: None,
        };
        self.pool
            .to_config("tcp", self.listen, Protocol::Tcp(options))
    }
}

#[derive(Debug, Args)]
pub struct UdpArgs {
    /// Address to take datagrams on, e.g. 0.0.0.0:53.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub pool: PoolArgs,

    /// End a flow when no datagram moved either way for this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub flow_idle_timeout: Duration,

    /// End a flow once each of its datagrams got this many replies (0 = never; 1 suits DNS).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub responses: u32,

    /// Most live flows per worker [default: 70% of the open-file limit].
    #[arg(long, value_name = "N")]
    pub max_flows: Option<usize>,
}

impl UdpArgs {
    /// The config this command line stands for: one listener `udp`, one pool `udp`.
    pub fn to_config(&self) -> Result<Config, String> {
        let options = UdpOptions {
            flow_idle_timeout: self.flow_idle_timeout,
            responses: self.responses,
            max_flows: self.max_flows.filter(|&m| m > 0),
        };
        self.pool
            .to_config("udp", self.listen, Protocol::Udp(options))
    }
}

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Address to accept clients on, e.g. 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub pool: PoolArgs,

    /// Give up connecting to one backend after this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "3s")]
    pub connect_timeout: Duration,

    /// Further backends to try when a connect fails.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RETRIES)]
    pub retries: u32,

    /// Close a client that has not sent a request's headers within this long
    /// (also closes keep-alive connections idle that long).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,

    /// Close an HTTP/2 client connection that has had no stream open this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "3m")]
    pub http2_idle_timeout: Duration,

    /// Answer 504 when the backend's response headers take longer than this.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub request_timeout: Duration,

    /// Answer 408 and close when a request body sends nothing for this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub body_read_timeout: Duration,

    /// Close a client that takes none of its answer for this long (it stopped reading).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub send_timeout: Duration,

    /// Request body bytes read before a backend is chosen (e.g. 64KiB; 0 = none).
    #[arg(long, value_name = "SIZE", value_parser = config::size::parse, default_value = "64KiB")]
    pub request_buffer: usize,

    /// Largest request body; 413 beyond ("0": no limit).
    #[arg(long, value_name = "SIZE", value_parser = config::size::parse, default_value = "0")]
    pub max_request_body: usize,

    /// Close a keep-alive connection to a backend once it is idle this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub upstream_idle_timeout: Duration,

    /// Pin each client to a backend with this cookie.
    #[arg(long, value_name = "NAME")]
    pub sticky_cookie: Option<String>,

    /// Speak HTTP/2 to the backends (h2c prior knowledge), balancing each request:
    /// what gRPC backends need.
    #[arg(long)]
    pub backend_http2: bool,

    /// Keep the client's X-Forwarded-For chain (only behind a proxy you trust).
    #[arg(long)]
    pub trust_forwarded: bool,

    /// Terminate TLS with this certificate (PEM, chain included); with --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl HttpArgs {
    /// The config this command line stands for: one listener `http`, one pool `http`.
    pub fn to_config(&self) -> Result<Config, String> {
        let tls_files: Vec<CertFiles> = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => vec![CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            }],
            _ => Vec::new(),
        };
        let tls = match tls_files.is_empty() {
            true => None,
            false => {
                Some(fulcrum_l7::tls::server_config(&tls_files, None).map_err(|e| e.to_string())?)
            }
        };
        // fulcrum's own HTTP/1 path where it serves: plain HTTP to HTTP/1.1 backends.
        let own = tls_files.is_empty() && !self.backend_http2 && !crate::config::hyper_is_default();
        let http1_engine = match own {
            true => fulcrum_l7::Http1Engine::Fulcrum,
            false => fulcrum_l7::Http1Engine::Hyper,
        };
        let options = HttpOptions {
            tls,
            tls_files,
            client_ca: None,
            connect_timeout: self.connect_timeout,
            retries: self.retries,
            header_read_timeout: nonzero(self.header_read_timeout, "--header-read-timeout")?,
            http2_idle_timeout: nonzero(self.http2_idle_timeout, "--http2-idle-timeout")?,
            request_timeout: nonzero(self.request_timeout, "--request-timeout")?,
            upstream_idle_timeout: nonzero(self.upstream_idle_timeout, "--upstream-idle-timeout")?,
            body_read_timeout: nonzero(self.body_read_timeout, "--body-read-timeout")?,
            send_timeout: nonzero(self.send_timeout, "--send-timeout")?,
            request_buffer: self.request_buffer,
            max_request_body: self.max_request_body,
            retry_on: Default::default(),
            try_timeout: None,
            routes: Vec::new(),
            rewrite: Default::default(),
            trust_forwarded: self.trust_forwarded,
            normalize_path: true,
            http1_engine,
            https_redirect: false,
            error_pages: Default::default(),
            compress: None,
        };
        let mut config =
            self.pool
                .to_config("http", self.listen, Protocol::Http(Box::new(options)))?;
        if let Some(name) = &self.sticky_cookie {
            if !fulcrum_l7::sticky::is_cookie_name(name) {
                return Err(format!("invalid --sticky-cookie name `{name}`"));
            }
            for pool in &mut config.pools {
                pool.sticky_cookie = Some(name.clone());
            }
        }
        if self.backend_http2 {
            for pool in &mut config.pools {
                pool.http_version = HttpVersion::Http2;
            }
        }
        Ok(config)
    }
}

fn nonzero(d: Duration, flag: &str) -> Result<Duration, String> {
    if d.is_zero() {
        return Err(format!("{flag} must be greater than zero"));
    }
    Ok(d)
}

/// `--backend IP:PORT[,weight=N]` or `HOST:PORT[,weight=N]` (resolved, and
/// re-resolved, as in a config file).
#[derive(Debug, Clone)]
pub struct BackendArg(pub BackendEntry);

impl FromStr for BackendArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let addr = parts.next().unwrap_or_default();
        let mut weight = NonZeroU32::MIN;
        for part in parts {
            let value = part
                .strip_prefix("weight=")
                .ok_or_else(|| format!("unknown backend option `{part}` (expected weight=N)"))?;
            weight = value
                .parse::<NonZeroU32>()
                .ok()
                .filter(|w| w.get() <= MAX_WEIGHT)
                .ok_or_else(|| format!("weight must be 1..={MAX_WEIGHT}, got `{value}`"))?;
        }
        config::backend_entry(addr, weight, None).map(BackendArg)
    }
}

/// `--listen IP:PORT`, with a message that says what to write.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        let hint = if s.starts_with(':') {
            format!("; to listen on every address write 0.0.0.0{s} (or [::]{s})")
        } else if !s.contains(':') {
            format!("; add a port, e.g. {s}:8080")
        } else {
            String::new()
        };
        format!("`{s}` is not IP:PORT (e.g. 0.0.0.0:8080, 127.0.0.1:8080 or [::1]:8080){hint}")
    })
}

/// `--workers N`, N ≥ 1.
fn parse_workers(s: &str) -> Result<NonZeroU32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("must be at least 1 (the number of worker threads)".to_owned()),
        Ok(n) => NonZeroU32::new(n).ok_or_else(|| "must be at least 1".to_owned()),
        Err(_) => Err(format!(
            "`{s}` is not a number of worker threads (1 or more)"
        )),
    }
}

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    s.parse()
        .map_err(|e: fulcrum_l4::balance::UnknownAlgorithm| e.to_string())
}

fn parse_hash_key(s: &str) -> Result<HashKey, String> {
    match s.parse()? {
        // The flag-only modes have no tls (passthrough) listener.
        HashKey::Sni => Err("`sni` needs a tls listener, from a config file".to_owned()),
        key => Ok(key),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::duration::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_DRAIN_TIMEOUT;
    use clap::CommandFactory;
    use fulcrum_l4::tcp::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT};

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flag_defaults_match_the_config_defaults() {
        let cli = Cli::try_parse_from([
            "fulcrum",
            "tcp",
            "--listen",
            "127.0.0.1:1",
            "--backend",
            "127.0.0.1:2",
        ]);
        let Ok(Cli {
            command: Command::Tcp(args),
            ..
        }) = cli
        else {
            panic!("tcp args did not parse: {cli:?}");
        };
        assert_eq!(args.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(args.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(args.pool.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        assert_eq!(args.retries, DEFAULT_RETRIES);
    }

    #[test]
    fn backend_flag_takes_a_weight() {
        let b: Result<BackendArg, _> = "127.0.0.1:80,weight=5".parse();
        assert!(matches!(b, Ok(BackendArg(BackendEntry::Static(s))) if s.weight.get() == 5));
        assert!("127.0.0.1:80,weight=0".parse::<BackendArg>().is_err());
        assert!("127.0.0.1:80,wait=2".parse::<BackendArg>().is_err());
        assert!("localhost".parse::<BackendArg>().is_err());
        // Host names, as in a config file.
        let b: Result<BackendArg, _> = "App.Internal:8080,weight=2".parse();
        assert!(
            matches!(&b, Ok(BackendArg(BackendEntry::Dns(d))) if d.host == "app.internal" && d.port == 8080 && d.weight.get() == 2),
            "{b:?}"
        );
    }

    #[test]
    fn bad_listen_and_workers_say_what_to_write() {
        let e = parse_listen(":18090").expect_err("no address");
        assert!(e.contains("0.0.0.0:18090"), "{e}");
        let e = parse_listen("127.0.0.1").expect_err("no port");
        assert!(e.contains("127.0.0.1:8080"), "{e}");
        assert!(parse_listen("[::1]:80").is_ok());
        let e = parse_workers("0").expect_err("zero");
        assert!(e.contains("at least 1"), "{e}");
        assert!(parse_workers("x").is_err());
        assert_eq!(parse_workers("4").map(NonZeroU32::get), Ok(4));
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        for argv in [
            &["fulcrum", "--workers", "3", "check", "-c", "x.toml"][..],
            &["fulcrum", "check", "-c", "x.toml", "--workers", "3"][..],
        ] {
            let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string());
            assert_eq!(cli.map(|c| c.workers.map(NonZeroU32::get)), Ok(Some(3)));
        }
    }
}
