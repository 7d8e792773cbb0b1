//! The `fulcrum` binary: parses the command line, sets up logging, and maps every
//! outcome to an exit code (0 ok, 1 runtime failure, 2 bad config or usage).

mod admin;
mod cli;
mod config;
mod dns;
mod server;
mod systemd;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, LogFormat};

const EXIT_FAILURE: u8 = 1;
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread starts (the log writer is one): it edits the environment.
    let activated = systemd::Activated::from_env();
    // Held to the end of main: dropping it flushes the last log lines.
    let _log = match init_logging(&cli) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("fulcrum: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let workers = cli
        .workers
        .map(|n| n.get() as usize)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let (config, path) = match &cli.command {
        Command::Check { config: path } => {
            return match config::load(path) {
                Ok(config) => {
                    println!("{}: OK", path.display());
                    print!("{}", config.summary());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_BAD_CONFIG)
                }
            };
        }
        Command::Run { config: path } => match config::load(path) {
            Ok(config) => (config, Some(path.as_path())),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        },
        Command::Tcp(args) => match args.to_config() {
            Ok(config) => (config, None),
            Err(e) => return flag_error("tcp", &e),
        },
        Command::Udp(args) => match args.to_config() {
            Ok(config) => (config, None),
            Err(e) => return flag_error("udp", &e),
        },
        Command::Http(args) => match args.to_config() {
            Ok(config) => (config, None),
            Err(e) => return flag_error("http", &e),
        },
    };
    match server::run(&config, workers, path, activated) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn flag_error(mode: &str, e: &str) -> ExitCode {
    eprintln!("fulcrum {mode}: {e}");
    ExitCode::from(EXIT_BAD_CONFIG)
}

/// Logs go to stderr through a writer thread that batches lines: under load many
/// access log lines share one write(2), and the event loops never block on the log
/// (if the writer falls 128k lines behind, lines are dropped rather than waited for).
fn init_logging(cli: &Cli) -> anyhow::Result<tracing_appender::non_blocking::WorkerGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(&cli.log_level)
            .map_err(|e| anyhow::anyhow!("invalid --log-level `{}`: {e}", cli.log_level))?,
    };
    // The writer thread flushes whenever it has drained what was queued.
    let stderr = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking(stderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    Ok(guard)
}
