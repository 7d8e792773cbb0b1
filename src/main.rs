//! The `fulcrum` binary: parses the command line, sets up logging, and maps every
//! outcome to an exit code (0 ok, 1 runtime failure, 2 bad config or usage; `ctl`
//! and `upgrade` also 1 when fulcrum refused, 3 when its admin listener is
//! unreachable).

mod admin;
mod cli;
mod config;
mod ctl;
mod dns;
mod logging;
mod memory;
mod server;
mod systemd;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

const EXIT_FAILURE: u8 = 1;
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread starts: it edits the environment.
    let activated = systemd::Activated::from_env();
    // Started by `fulcrum upgrade`: the old process waits on this channel.
    let upgrade = server::Upgrade::from_env();
    if let Err(e) = logging::init(&cli) {
        eprintln!("fulcrum: {e}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let workers = cli
        .workers
        .map(|n| n.get() as usize)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let (config, path) = match &cli.command {
        Command::Ctl(args) => return ctl::run(args),
        Command::Upgrade(to) => return ctl::upgrade(to),
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
                if let Some(upgrade) = &upgrade {
                    upgrade.refuse(&format!("the new process's config check failed: {e}"));
                }
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
    match server::run(&config, workers, path, activated, upgrade) {
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
